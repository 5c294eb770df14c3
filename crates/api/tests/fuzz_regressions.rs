//! The hub's fuzz entry points (see `fuzz/`, `scripts/fuzz.sh`) on their
//! committed seed corpora and on the inputs that once broke them: each ends
//! in a value or a clean error, never a panic.

use api::ApiError;
use api::http::{OpenAiEndpoint, decode_openai_request};

#[path = "../../../fuzz/seeds.rs"]
mod seeds;
use seeds::corpus;

fn openai(body: &[u8]) -> Result<(), ApiError> {
    let (&which, body) = body.split_first().unwrap();
    let e = if which & 1 == 0 {
        OpenAiEndpoint::Chat
    } else {
        OpenAiEndpoint::Completions
    };
    decode_openai_request(e, body)
}

#[test]
fn seed_corpora_run_clean() {
    for (p, b) in corpus("safetensors_header") {
        let r = hub::registry::check_safetensors_bytes(&b);
        eprintln!("{}: {r:?}", p.display());
    }
    assert_eq!(
        hub::registry::check_safetensors_bytes(
            &std::fs::read(seeds::corpus_dir().join("safetensors_header/valid")).unwrap()
        ),
        Ok(())
    );
    for (p, b) in corpus("jsonl_dataset") {
        let r = hub::dataset_import::validate_split_bytes("train.jsonl", &b, None);
        eprintln!(
            "{}: {:?}",
            p.display(),
            r.as_ref().map_err(|e| e.to_string())
        );
        if let Err(e) = r {
            assert_eq!(e.status(), 422, "{e}");
        }
    }
    for (p, b) in corpus("openai_request") {
        let r = openai(&b);
        eprintln!(
            "{}: {:?}",
            p.display(),
            r.as_ref().map_err(|e| e.to_string())
        );
        if let Err(e) = r {
            assert!((400..500).contains(&e.status()), "{e}");
        }
    }
}

/// A `logit_bias` finite as f64 but not as the sampler's f32 was accepted.
#[test]
fn logit_bias_must_be_finite_as_f32() {
    let e = openai(
        b"\x00{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\
          \"logit_bias\":{\"1\":1e300}}",
    )
    .unwrap_err();
    assert_eq!((e.status(), e.code()), (422, "invalid_input"), "{e}");
    assert!(e.to_string().contains("logit_bias"), "{e}");
    assert!(
        openai(
            b"\x00{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\
              \"logit_bias\":{\"1\":-100}}"
        )
        .is_ok()
    );
}
