//! Dataset upload (streamed past the JSON body limit, size cap, errors naming
//! the line) and preview rows.

mod common;

use test_support::store_test;

use axum::body::Body;
use axum::http::Request;
use common::TestDb;
use common::http::{TestHub, assert_error};
use serde_json::json;

fn upload(name: &str, body: String) -> Request<Body> {
    Request::post(format!("/api/datasets/{name}/upload?description=up"))
        .header("content-type", "application/x-ndjson")
        .body(Body::from(body))
        .unwrap()
}

async fn upload_and_preview(db: TestDb) {
    let t = TestHub::new(db);
    // 2,000 rows: more than the 64 KiB JSON body limit of the test hub.
    let rows: String = (0..2000)
        .map(|i| json!({"prompt": format!("q{i} padding padding padding"), "completion": format!("a{i}")}).to_string() + "\n")
        .collect();
    assert!(rows.len() > 64 * 1024);
    let (s, d) = t.send(upload("qa", rows.clone())).await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["splits"]["train"], 2000);
    assert_eq!(d["format"], "completions");
    assert_eq!(d["description"], "up");
    // same content again: the same version, 200
    let (s, d2) = t.send(upload("qa", rows)).await;
    assert_eq!((s.as_u16(), &d2["version"]), (200, &d["version"]));

    let (s, p) = t
        .call("GET", "/api/datasets/qa/preview?limit=2&offset=10", None)
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["rows_in_split"], 2000);
    assert_eq!(p["data"][0]["line"], 11);
    assert_eq!(p["data"][0]["row"]["completion"], "a10");
    assert_eq!(p["data"].as_array().unwrap().len(), 2);
    let (s, b) = t
        .call("GET", "/api/datasets/qa/preview?split=test", None)
        .await;
    assert_error(s, &b, 422, "invalid_input");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no test split")
    );
    let (s, b) = t.call("GET", "/api/datasets/nope/preview", None).await;
    assert_error(s, &b, 404, "dataset_not_found");

    // a bad row: 422 naming its line; nothing registered
    let bad = "{\"text\": \"ok\"}\n{\"text\": 5}\n".to_string();
    let (s, b) = t.send(upload("bad", bad)).await;
    assert_error(s, &b, 422, "invalid_dataset_line");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("line 2"),
        "{b}"
    );
    let (s, _) = t.call("GET", "/api/datasets/bad", None).await;
    assert_eq!(s, 404);
    let (s, b) = t.send(upload("..", "{\"text\": \"x\"}\n".into())).await;
    assert_eq!(s.as_u16(), 422, "{b}");
    assert!(t.temp_files().is_empty(), "{:?}", t.temp_files());
}
store_test!(upload_and_preview);

#[tokio::test]
async fn upload_size_cap() {
    let t = TestHub::new(common::sqlite().await);
    let mut config = (*t.hub.config).clone();
    config.max_upload_bytes = 100_000;
    let app = api::router::router(hub::Hub::with_store(config, t.db.store.clone()).unwrap());
    let rows: String = (0..8000)
        .map(|i| json!({"text": format!("row {i}")}).to_string() + "\n")
        .collect();
    let resp = tower::ServiceExt::oneshot(app, upload("big", rows))
        .await
        .unwrap();
    let s = resp.status();
    let b: serde_json::Value = serde_json::from_slice(
        &axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_error(s, &b, 413, "payload_too_large");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("100000 bytes")
    );
    assert!(t.temp_files().is_empty(), "{:?}", t.temp_files());
}

async fn version_tags(db: TestDb) {
    let t = TestHub::new(db);
    common::seed_ready_version(&t.db.store, "m").await;
    let (st, b) = t
        .call(
            "PUT",
            "/api/models/m/versions/1/tags",
            Some(json!({"tags": ["prod", "eval", "prod"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["tags"], json!(["eval", "prod"]));
    let (_, b) = t
        .call("GET", "/api/models/m/versions/latest/tags", None)
        .await;
    assert_eq!(b["tags"], json!(["eval", "prod"]));
    let (st, b) = t
        .call(
            "PUT",
            "/api/models/m/versions/1/tags",
            Some(json!({"tags": [" bad"]})),
        )
        .await;
    assert_error(st, &b, 422, "invalid_input");
    let (st, b) = t
        .call(
            "PUT",
            "/api/models/m/versions/9/tags",
            Some(json!({"tags": []})),
        )
        .await;
    assert_error(st, &b, 404, "version_not_found");
}
store_test!(version_tags);

/// Every dataset endpoint taking a path or a name refuses what would escape:
/// `../`, absolute paths, symlinks out of the import root, URL-encoded dots.
async fn dataset_path_traversal(db: TestDb) {
    let t = TestHub::new(db);
    let root = t.import_root.clone();
    let outside = root.parent().unwrap().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("train.jsonl"), "{\"text\": \"secret\"}\n").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link-out")).unwrap();
    std::fs::create_dir_all(root.join("inner")).unwrap();
    std::os::unix::fs::symlink(
        outside.join("train.jsonl"),
        root.join("inner").join("train.jsonl"),
    )
    .unwrap();
    let cases = [
        (
            json!({"name": "d", "path": "../outside"}),
            "path_escapes_root",
        ),
        (json!({"name": "d", "path": outside}), "path_escapes_root"),
        (
            json!({"name": "d", "path": "link-out"}),
            "path_escapes_root",
        ),
        (json!({"name": "d", "path": "inner"}), "path_escapes_root"),
        (
            json!({"name": "d", "path": "%2e%2e/outside"}),
            "invalid_input",
        ),
    ];
    for (body, code) in cases {
        let (s, b) = t.call("POST", "/api/datasets", Some(body.clone())).await;
        assert_eq!(s.as_u16(), 422, "{body} → {b}");
        assert!(
            b["error"]["code"] == code || b["error"]["code"] == "invalid_dataset",
            "{body} → {b}"
        );
        assert!(!b.to_string().contains("secret"), "{b}");
    }
    // names in URLs: encoded slashes and dots are names, refused as such
    for uri in [
        "/api/datasets/..%2F..%2Fetc/upload",
        "/api/datasets/%2e%2e/upload",
    ] {
        let (s, b) = t
            .send(
                Request::post(uri)
                    .body(Body::from("{\"text\": \"x\"}\n"))
                    .unwrap(),
            )
            .await;
        assert_eq!(s.as_u16(), 422, "{uri} → {b}");
    }
    for uri in [
        "/api/datasets/..%2F..%2Fetc/preview",
        "/api/datasets/%2e%2e/preview?split=..%2F..%2Fetc%2Fpasswd",
    ] {
        let (s, b) = t.call("GET", uri, None).await;
        assert!(matches!(s.as_u16(), 404 | 422), "{uri} → {s} {b}");
    }
    let (s, _) = t.call("GET", "/api/datasets", None).await;
    assert_eq!(s, 200);
    assert!(t.db.store.list_datasets(None).await.unwrap().is_empty());
    assert!(t.temp_files().is_empty(), "{:?}", t.temp_files());
}
store_test!(dataset_path_traversal);
