//! HTTP API: model registration (folders, versions, dedup, aliases,
//! immutability, archive/restore) and datasets, on SQLite and PostgreSQL.

mod common;

use test_support::store_test;

use std::io::Read;
use std::path::Path;

use common::TestDb;
use common::http::{TestHub, assert_error, copy_dir, tiny_model};
use hub::Tier;
use hub::artifacts::sha256_file;
use serde_json::{Value, json};

/// Sum of the element counts in a safetensors file's header.
fn safetensors_params(path: &Path) -> i64 {
    let mut f = std::fs::File::open(path).unwrap();
    let mut len = [0u8; 8];
    f.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u64::from_le_bytes(len) as usize];
    f.read_exact(&mut buf).unwrap();
    let h: Value = serde_json::from_slice(&buf).unwrap();
    h.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, t)| {
            t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .product::<i64>()
        })
        .sum()
}

async fn register_versions_dedup_aliases(db: TestDb) {
    let Some(fixture) = tiny_model("register_versions_dedup_aliases") else {
        return;
    };
    let t = TestHub::new(db);
    copy_dir(&fixture, &t.import_root.join("llama"));

    let (s, b) = t
        .call(
            "POST",
            "/api/models",
            Some(json!({"name": "llama", "description": "tiny"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = t
        .call("POST", "/api/models", Some(json!({"name": "llama"})))
        .await;
    assert_error(s, &b, 409, "model_already_exists");

    // version 1
    let (s, v1) = t
        .call(
            "POST",
            "/api/models/llama/versions",
            Some(json!({"path": "llama"})),
        )
        .await;
    assert_eq!(s, 201, "{v1}");
    assert_eq!(v1["number"], 1);
    assert_eq!(v1["status"], "ready");
    assert_eq!(v1["architecture"], "llama");
    assert_eq!(v1["dtype"], "float32");
    assert_eq!(v1["format"], "mlx");
    assert_eq!(
        v1["parameter_count"].as_i64().unwrap(),
        safetensors_params(&fixture.join("model.safetensors")),
        "parameter count from config.json matches the weights"
    );
    let files = v1["files"].as_array().unwrap();
    let names: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"config.json") && names.contains(&"model.safetensors"),
        "{names:?}"
    );
    let mut total = 0;
    for f in files {
        let (sha, size) = sha256_file(&fixture.join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(f["sha256"], sha.as_str());
        assert_eq!(f["size_bytes"].as_u64().unwrap(), size);
        total += size;
        assert!(t.hub.artifacts.blob_path(Tier::Active, &sha).is_file());
    }
    assert_eq!(v1["size_bytes"].as_u64().unwrap(), total);
    let blobs = t.blobs(Tier::Active);

    // version 2 of the same content: numbered, deduplicated, with an alias
    let (s, v2) = t
        .call(
            "POST",
            "/api/models/llama/versions",
            Some(json!({"path": t.import_root.join("llama"), "alias": "staging"})),
        )
        .await;
    assert_eq!(s, 201, "{v2}");
    assert_eq!(v2["number"], 2);
    assert_eq!(v2["aliases"], json!(["staging"]));
    assert_eq!(
        t.blobs(Tier::Active),
        blobs,
        "identical files are stored once"
    );

    let (s, l) = t.call("GET", "/api/models/llama/versions", None).await;
    assert_eq!(s, 200);
    assert_eq!(l["data"].as_array().unwrap().len(), 2);
    let (_, v) = t
        .call("GET", "/api/models/llama/versions/latest", None)
        .await;
    assert_eq!(v["number"], 2);
    let (_, v) = t.call("GET", "/api/models/llama/versions/v1", None).await;
    assert_eq!(v["number"], 1);
    assert_eq!(
        v["lineage"]["source"].as_str().unwrap(),
        t.import_root
            .join("llama")
            .canonicalize()
            .unwrap()
            .display()
            .to_string()
    );

    // aliases
    let (s, a) = t
        .call(
            "PUT",
            "/api/models/llama/aliases/production",
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["version_number"], 1);
    let (_, v) = t
        .call("GET", "/api/models/llama/versions/production", None)
        .await;
    assert_eq!(v["number"], 1);
    let (s, a) = t
        .call(
            "PUT",
            "/api/models/llama/aliases/production",
            Some(json!({"version": "staging"})),
        )
        .await;
    assert_eq!((s.as_u16(), a["version_number"].as_i64()), (200, Some(2)));
    let (s, b) = t
        .call(
            "PUT",
            "/api/models/llama/aliases/Bad%20Alias",
            Some(json!({"version": 1})),
        )
        .await;
    assert_error(s, &b, 422, "invalid_input");
    let (s, _) = t
        .call("DELETE", "/api/models/llama/aliases/production", None)
        .await;
    assert_eq!(s, 204);
    let (s, b) = t
        .call("GET", "/api/models/llama/versions/production", None)
        .await;
    assert_error(s, &b, 404, "version_not_found");
    let (s, b) = t
        .call("DELETE", "/api/models/llama/aliases/production", None)
        .await;
    assert_error(s, &b, 404, "alias_not_found");

    // immutability: content fields of a ready version cannot change
    let (s, b) = t
        .call(
            "PATCH",
            "/api/models/llama/versions/1",
            Some(json!({"architecture": "qwen2"})),
        )
        .await;
    assert_error(s, &b, 409, "version_immutable");
    let (s, v) = t
        .call(
            "PATCH",
            "/api/models/llama/versions/1",
            Some(json!({"description": "first"})),
        )
        .await;
    assert_eq!(
        (s.as_u16(), v["description"].as_str()),
        (200, Some("first"))
    );
    let (_, v) = t.call("GET", "/api/models/llama/versions/1", None).await;
    assert_eq!(v["architecture"], "llama");

    // archive: blobs stay active while version 2 uses them
    let (s, v) = t
        .call("POST", "/api/models/llama/versions/1/archive", None)
        .await;
    assert_eq!(
        (s.as_u16(), v["status"].as_str()),
        (200, Some("archived")),
        "{v}"
    );
    assert_eq!(t.blobs(Tier::Active), blobs);
    let (s, v) = t
        .call("POST", "/api/models/llama/versions/2/archive", None)
        .await;
    assert_eq!(
        (s.as_u16(), v["aliases"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
    assert!(t.blobs(Tier::Active).is_empty());
    assert_eq!(t.blobs(Tier::Archive), blobs);
    let (s, b) = t
        .call("POST", "/api/models/llama/versions/2/archive", None)
        .await;
    assert_error(s, &b, 409, "illegal_transition");
    let (s, v) = t
        .call("POST", "/api/models/llama/versions/2/restore", None)
        .await;
    assert_eq!(
        (s.as_u16(), v["status"].as_str()),
        (200, Some("ready")),
        "{v}"
    );
    assert_eq!(t.blobs(Tier::Active), blobs);
    let (s, b) = t
        .call("POST", "/api/models/llama/versions/2/restore", None)
        .await;
    assert_error(s, &b, 409, "illegal_transition");

    // link: files left in place, hashes recorded, nothing copied
    let before = t.blobs(Tier::Active).len() + t.blobs(Tier::Archive).len();
    let (s, v3) = t
        .call(
            "POST",
            "/api/models/llama/versions",
            Some(json!({"path": "llama", "link": true})),
        )
        .await;
    assert_eq!(s, 201, "{v3}");
    assert!(v3["artifact_uri"].as_str().unwrap().starts_with("file://"));
    assert_eq!(v3["files"], v1["files"]);
    assert_eq!(
        t.blobs(Tier::Active).len() + t.blobs(Tier::Archive).len(),
        before
    );

    // model show / update / delete
    let (s, m) = t.call("GET", "/api/models/llama", None).await;
    assert_eq!(s, 200);
    assert_eq!(m["versions"].as_array().unwrap().len(), 3);
    let (s, m) = t
        .call(
            "PATCH",
            "/api/models/llama",
            Some(json!({"tags": ["b", "a"]})),
        )
        .await;
    assert_eq!((s.as_u16(), m["tags"].clone()), (200, json!(["a", "b"])));
    let (s, b) = t.call("DELETE", "/api/models/llama", None).await;
    assert_error(s, &b, 409, "model_has_versions");

    // names with '/' travel percent-encoded
    let (s, _) = t
        .call("POST", "/api/models", Some(json!({"name": "org/tiny"})))
        .await;
    assert_eq!(s, 201);
    let (s, m) = t.call("GET", "/api/models/org%2Ftiny", None).await;
    assert_eq!((s.as_u16(), m["name"].as_str()), (200, Some("org/tiny")));
    let (s, _) = t.call("DELETE", "/api/models/org%2Ftiny", None).await;
    assert_eq!(s, 204);
    let (s, l) = t.call("GET", "/api/models?name_contains=LLA", None).await;
    assert_eq!((s.as_u16(), l["data"].as_array().unwrap().len()), (200, 1));
    assert!(t.temp_files().is_empty(), "{:?}", t.temp_files());
}
store_test!(register_versions_dedup_aliases);

async fn bad_folders_leave_nothing(db: TestDb) {
    let t = TestHub::new(db);
    let (s, _) = t
        .call("POST", "/api/models", Some(json!({"name": "m"})))
        .await;
    assert_eq!(s, 201);
    let root = &t.import_root;

    // no config.json
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("empty/model.safetensors"), b"x").unwrap();
    // unsupported model_type
    std::fs::create_dir_all(root.join("gpt2")).unwrap();
    std::fs::write(root.join("gpt2/config.json"), br#"{"model_type": "gpt2"}"#).unwrap();
    std::fs::write(root.join("gpt2/model.safetensors"), b"x").unwrap();
    // invalid config (missing key)
    std::fs::create_dir_all(root.join("nokey")).unwrap();
    std::fs::write(
        root.join("nokey/config.json"),
        br#"{"model_type": "llama"}"#,
    )
    .unwrap();
    // valid config but no weights
    std::fs::create_dir_all(root.join("noweights")).unwrap();
    std::fs::write(
        root.join("noweights/config.json"),
        br#"{"model_type":"llama","hidden_size":8,"num_hidden_layers":1,"intermediate_size":16,"num_attention_heads":2,"rms_norm_eps":1e-5,"vocab_size":10}"#,
    )
    .unwrap();
    // a folder outside the root, reached by .., absolute path and symlink
    let outside = t.data_dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::copy(
        root.join("noweights/config.json"),
        outside.join("config.json"),
    )
    .unwrap();
    std::fs::write(outside.join("model.safetensors"), b"x").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&outside, root.join("link-out")).unwrap();
    // a folder inside whose weights link outside
    std::fs::create_dir_all(root.join("sneaky")).unwrap();
    std::fs::copy(
        root.join("noweights/config.json"),
        root.join("sneaky/config.json"),
    )
    .unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        outside.join("model.safetensors"),
        root.join("sneaky/model.safetensors"),
    )
    .unwrap();

    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"path": "empty"}), 422, "missing_model_config"),
        (json!({"path": "gpt2"}), 422, "unsupported_model_type"),
        (json!({"path": "nokey"}), 422, "invalid_model_config"),
        (json!({"path": "noweights"}), 422, "invalid_model_folder"),
        (json!({"path": "missing"}), 422, "invalid_input"),
        (json!({"path": "../outside"}), 422, "path_escapes_root"),
        (json!({"path": outside}), 422, "path_escapes_root"),
        (json!({"path": "link-out"}), 422, "path_escapes_root"),
        (json!({"path": "sneaky"}), 422, "path_escapes_root"),
        (json!({"path": "%2e%2e/outside"}), 422, "invalid_input"),
        (
            json!({"path": "gpt2", "alias": "Not Valid"}),
            422,
            "invalid_input",
        ),
        (json!({"path": 3}), 422, "invalid_body"),
        (json!({"path": "gpt2", "extra": 1}), 422, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let (s, b) = t
            .call("POST", "/api/models/m/versions", Some(body.clone()))
            .await;
        assert_error(s, &b, status, code);
        if code == "unsupported_model_type" {
            assert!(
                b["error"]["message"].as_str().unwrap().contains("gpt2"),
                "{b}"
            );
        }
        let (_, l) = t.call("GET", "/api/models/m/versions", None).await;
        assert_eq!(l["data"], json!([]), "no version row after {body}");
    }
    let (s, b) = t
        .call(
            "POST",
            "/api/models/nope/versions",
            Some(json!({"path": "gpt2"})),
        )
        .await;
    assert_error(s, &b, 404, "model_not_found");
    assert!(t.blobs(Tier::Active).is_empty());
    assert!(t.temp_files().is_empty(), "{:?}", t.temp_files());
    assert!(
        t.db.store
            .unreferenced_artifacts()
            .await
            .unwrap()
            .is_empty()
    );
}
store_test!(bad_folders_leave_nothing);

fn write(dir: &Path, name: &str, lines: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(dir.join(name), s).unwrap();
}

async fn datasets_are_validated(db: TestDb) {
    let t = TestHub::new(db);
    let root = t.import_root.clone();
    let ok = root.join("qa");
    write(
        &ok,
        "train.jsonl",
        &[
            r#"{"prompt": "2+2?", "completion": "4"}"#,
            r#"{"prompt": "capital of France?", "completion": "Paris"}"#,
            r#"{"prompt": "3+3?", "completion": "6", "extra": true}"#,
        ],
    );
    write(
        &ok,
        "valid.jsonl",
        &[r#"{"prompt": "1+1?", "completion": "2"}"#],
    );
    let (s, d) = t
        .call(
            "POST",
            "/api/datasets",
            Some(json!({"name": "qa", "path": "qa"})),
        )
        .await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["format"], "completions");
    assert_eq!(d["splits"], json!({"train": 3, "valid": 1}));
    assert_eq!(d["version"], 1);
    let hash = d["content_hash"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 64);
    let stored = Path::new(d["location"].as_str().unwrap());
    assert_eq!(
        std::fs::read(stored.join("train.jsonl")).unwrap(),
        std::fs::read(ok.join("train.jsonl")).unwrap()
    );
    // same content again: the same version, 200
    let (s, d2) = t
        .call(
            "POST",
            "/api/datasets",
            Some(json!({"name": "qa", "path": "qa"})),
        )
        .await;
    assert_eq!((s.as_u16(), d2["id"].clone()), (200, d["id"].clone()));

    // chat and text formats are detected
    write(
        &root.join("chat"),
        "train.jsonl",
        &[
            r#"{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#,
        ],
    );
    let (s, d) = t
        .call(
            "POST",
            "/api/datasets",
            Some(json!({"name": "chat", "path": "chat"})),
        )
        .await;
    assert_eq!(
        (s.as_u16(), d["format"].as_str()),
        (201, Some("chat")),
        "{d}"
    );
    write(
        &root.join("text"),
        "train.jsonl",
        &[r#"{"text": "a fortune"}"#],
    );
    let (s, d) = t
        .call(
            "POST",
            "/api/datasets",
            Some(json!({"name": "text", "path": "text"})),
        )
        .await;
    assert_eq!(
        (s.as_u16(), d["format"].as_str()),
        (201, Some("text")),
        "{d}"
    );

    let datasets_dir = t.hub.datasets_dir();
    let count = || std::fs::read_dir(&datasets_dir).unwrap().count();
    let before = count();
    // bad line 3 in train.jsonl
    write(
        &root.join("bad"),
        "train.jsonl",
        &[
            r#"{"prompt": "a", "completion": "b"}"#,
            r#"{"prompt": "c", "completion": "d"}"#,
            r#"{"prompt": "e"}"#,
        ],
    );
    let (s, b) = t
        .call(
            "POST",
            "/api/datasets",
            Some(json!({"name": "bad", "path": "bad"})),
        )
        .await;
    assert_error(s, &b, 422, "invalid_dataset_line");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("train.jsonl line 3") && msg.contains("completion"),
        "{msg}"
    );
    // more bad inputs: each names file and line
    let bad_cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "valid.jsonl",
            vec!["{not json"],
            "valid.jsonl line 1: invalid JSON",
        ),
        (
            "valid.jsonl",
            vec![r#"{"text": "wrong format"}"#],
            "valid.jsonl line 1: missing key \"prompt\"",
        ),
        (
            "valid.jsonl",
            vec![
                r#"{"prompt": "a", "completion": "b"}"#,
                "",
                r#"{"prompt": "a", "completion": "b"}"#,
            ],
            "valid.jsonl line 2: empty line",
        ),
        (
            "test.jsonl",
            vec!["[1, 2]"],
            "test.jsonl line 1: expected a JSON object",
        ),
    ];
    for (file, lines, want) in bad_cases {
        let dir = root.join(format!("bad-{}", file.replace('.', "-")));
        let _ = std::fs::remove_dir_all(&dir);
        write(
            &dir,
            "train.jsonl",
            &[r#"{"prompt": "a", "completion": "b"}"#],
        );
        write(&dir, file, &lines);
        let (s, b) = t
            .call(
                "POST",
                "/api/datasets",
                Some(json!({"name": "bad", "path": dir})),
            )
            .await;
        assert_error(s, &b, 422, "invalid_dataset_line");
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{msg} should contain {want}");
    }
    write(
        &root.join("chatbad"),
        "train.jsonl",
        &[r#"{"messages": [{"role": "user", "content": 5}]}"#],
    );
    let (s, b) = t
        .call(
            "POST",
            "/api/datasets",
            Some(json!({"name": "bad", "path": "chatbad"})),
        )
        .await;
    assert_error(s, &b, 422, "invalid_dataset_line");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[0].content"),
        "{b}"
    );
    std::fs::write(root.join("chatbad/train.jsonl"), b"{\"text\": \"\xff\"}\n").unwrap();
    let (s, b) = t
        .call(
            "POST",
            "/api/datasets",
            Some(json!({"name": "bad", "path": "chatbad"})),
        )
        .await;
    assert_error(s, &b, 422, "invalid_dataset_line");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("UTF-8"),
        "{b}"
    );
    std::fs::create_dir_all(root.join("notrain")).unwrap();
    let (s, b) = t
        .call(
            "POST",
            "/api/datasets",
            Some(json!({"name": "bad", "path": "notrain"})),
        )
        .await;
    assert_error(s, &b, 422, "invalid_dataset");
    let (s, b) = t
        .call(
            "POST",
            "/api/datasets",
            Some(json!({"name": "bad", "path": "../"})),
        )
        .await;
    assert_error(s, &b, 422, "path_escapes_root");
    let (s, b) = t
        .call(
            "POST",
            "/api/datasets",
            Some(json!({"name": "../evil", "path": "qa"})),
        )
        .await;
    assert_error(s, &b, 422, "invalid_input");
    // nothing written for any of them
    assert_eq!(count(), before);
    assert!(t.temp_files().is_empty(), "{:?}", t.temp_files());
    let (s, b) = t.call("GET", "/api/datasets/bad", None).await;
    assert_error(s, &b, 404, "dataset_not_found");

    let (s, l) = t.call("GET", "/api/datasets", None).await;
    assert_eq!((s.as_u16(), l["data"].as_array().unwrap().len()), (200, 3));
    let (s, d) = t.call("GET", "/api/datasets/qa", None).await;
    assert_eq!(
        (s.as_u16(), d["content_hash"].as_str()),
        (200, Some(hash.as_str()))
    );
    assert_eq!(d["versions"], json!([1]));
}
store_test!(datasets_are_validated);

/// An I/O error in the middle of copying (a file that cannot be read) leaves
/// the version `failed` with the reason, and removes the blobs it had stored.
#[cfg(target_os = "linux")]
async fn failed_registration_leaves_no_files(db: TestDb) {
    let Some(fixture) = tiny_model("failed_registration_leaves_no_files") else {
        return;
    };
    let t = TestHub::new(db);
    let dir = t.import_root.join("broken");
    copy_dir(&fixture, &dir);
    // a "regular file" whose read fails with EIO, sorted after the others
    std::os::unix::fs::symlink("/proc/self/mem", dir.join("zz-unreadable.bin")).unwrap();
    let (s, _) = t
        .call("POST", "/api/models", Some(json!({"name": "m"})))
        .await;
    assert_eq!(s, 201);
    let req = hub::registry::RegisterFolder {
        path: dir.clone(),
        ..Default::default()
    };
    let err = t
        .hub
        .register_model_folder("m", &req, Path::new("/"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 500, "{err}");
    let (_, l) = t.call("GET", "/api/models/m/versions", None).await;
    let versions = l["data"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["status"], "failed");
    assert!(
        versions[0]["status_message"]
            .as_str()
            .unwrap()
            .contains("mem"),
        "{l}"
    );
    let (s, b) = t.call("GET", "/api/models/m/versions/1", None).await;
    assert_eq!((s.as_u16(), b["files"].clone()), (200, json!([])));
    assert!(
        t.blobs(Tier::Active).is_empty(),
        "{:?}",
        t.blobs(Tier::Active)
    );
    assert!(
        t.db.store
            .unreferenced_artifacts()
            .await
            .unwrap()
            .is_empty()
    );
    assert!(t.temp_files().is_empty(), "{:?}", t.temp_files());
    // `latest` never resolves to a failed version
    let (s, b) = t.call("GET", "/api/models/m/versions/latest", None).await;
    assert_error(s, &b, 404, "version_not_found");
}
#[cfg(target_os = "linux")]
store_test!(failed_registration_leaves_no_files);
