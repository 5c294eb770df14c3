//! Evaluation jobs through the API and the worker: a version (and an adapter
//! version on top of its base) on a prompt/completion split → test loss,
//! perplexity and exact match, recorded as a run linked to the version. The
//! base model's loss must equal the training job's validation loss before its
//! first step (LoRA starts as the identity) on the same split.

mod common;

use test_support::store_test;

use common::TestDb;
use common::http::{TestHub, copy_dir, tiny_model};
use hub::jobs::JobRunner;
use hub::registry::RegisterFolder;
use hub::store::{JobState, RunStatus};
use serde_json::{Value, json};

fn rows(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s += &json!({"prompt": format!("What is {i} plus one?"), "completion": format!("{}", i + 1)})
            .to_string();
        s.push('\n');
    }
    s
}

async fn metric(th: &TestHub, run_id: i64, key: &str) -> Option<f64> {
    th.db
        .store
        .metric_history(run_id, key, None)
        .await
        .unwrap()
        .first()
        .map(|m| m.value)
}

async fn run_job(th: &TestHub, body: Value) -> hub::jobs::JobOutcome {
    let (s, j) = th.call("POST", "/api/jobs", Some(body)).await;
    assert_eq!(s, 201, "{j}");
    let out = JobRunner::for_hub(&th.hub, "w")
        .run_once()
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(out.job_id, j["id"].as_i64().unwrap());
    assert_eq!(out.state, JobState::Succeeded, "{out:?}");
    out
}

async fn evaluation(db: TestDb) {
    let Some(model) = tiny_model("evaluation") else {
        return;
    };
    let th = TestHub::new(db);
    let root = th.import_root.clone();
    copy_dir(&model, &root.join("tiny"));
    th.hub
        .register_model_folder_creating(
            "tiny",
            &RegisterFolder {
                path: "tiny".into(),
                ..RegisterFolder::default()
            },
            &root,
        )
        .await
        .unwrap();
    let data = root.join("qa");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("train.jsonl"), rows(8)).unwrap();
    std::fs::write(data.join("valid.jsonl"), rows(5)).unwrap();
    let (s, b) = th
        .call(
            "POST",
            "/api/datasets",
            Some(json!({"name": "qa", "path": "qa"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");

    // A short LoRA job whose validation covers the whole valid split.
    let train = run_job(
        &th,
        json!({"base_model": "tiny", "dataset": "qa", "config": {
            "num_layers": -1, "batch_size": 2, "iters": 4, "steps_per_report": 2,
            "steps_per_eval": 100, "val_batches": -1, "max_seq_length": 64,
            "learning_rate": 1e-2, "seed": 1}}),
    )
    .await;
    let val0 = th
        .db
        .store
        .metric_history(train.run_id.unwrap(), "val_loss", Some(0..=0))
        .await
        .unwrap()[0]
        .value;

    // The base version on the valid split.
    let eval = |version: &str, model: &str| {
        json!({"kind": "evaluate", "base_model": model, "base_version": version,
               "dataset": "qa", "eval": {"split": "valid", "batch_size": 2,
               "max_seq_length": 64, "max_new_tokens": 8}})
    };
    let base_eval = run_job(&th, eval("1", "tiny")).await;
    let run = th
        .db
        .store
        .get_run(base_eval.run_id.unwrap())
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Finished);
    let base_version = th
        .db
        .store
        .get_version(run.model_version_id.unwrap())
        .await
        .unwrap();
    assert_eq!(base_version.number, 1);
    let loss = metric(&th, run.id, "test_loss").await.unwrap();
    assert!(
        (loss - val0).abs() < 1e-4,
        "eval loss {loss} vs training's val_loss@0 {val0}"
    );
    let ppl = metric(&th, run.id, "test_ppl").await.unwrap();
    assert!((ppl - loss.exp()).abs() < 1e-6 * ppl);
    let em = metric(&th, run.id, "exact_match").await.unwrap();
    assert!((0.0..=1.0).contains(&em));
    assert_eq!(metric(&th, run.id, "exact_match_examples").await, Some(5.0));

    // The adapter version (its base loaded underneath), shown with the version.
    let adapter_eval = run_job(&th, eval("1", "tiny-lora")).await;
    let aloss = metric(&th, adapter_eval.run_id.unwrap(), "test_loss")
        .await
        .unwrap();
    assert!(
        aloss.is_finite() && (aloss - loss).abs() > 1e-4,
        "{aloss} vs {loss}"
    );
    let (s, v) = th
        .call("GET", "/api/models/tiny-lora/versions/1", None)
        .await;
    assert_eq!(s, 200, "{v}");
    let evals = v["evaluations"].as_array().expect("evaluations");
    assert_eq!(evals.len(), 1, "{v}");
    assert_eq!(evals[0]["run"]["id"], adapter_eval.run_id.unwrap());
    assert!(evals[0]["metrics"]["test_loss"].as_f64().is_some(), "{v}");

    // A split the dataset lacks: 422 naming it.
    let (s, b) = th
        .call(
            "POST",
            "/api/jobs",
            Some(json!({"kind": "evaluate", "base_model": "tiny",
            "dataset": "qa", "eval": {"split": "test"}})),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("eval.split"),
        "{b}"
    );
}
store_test!(evaluation);
