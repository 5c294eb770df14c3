//! Store behaviour, each test run on SQLite and on PostgreSQL.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use errors::ErrorCode;
use serde_json::json;
use store::Clock;
use store::Entity;
use store::{
    JobKind, JobState, LeaseInfo, MetricPoint, ModelFilter, ModelUpdate, NewDataset, NewJob,
    NewModel, NewRun, NewVersion, ReapOutcome, RunStatus, Store, StoreError, VersionFile,
    VersionStatus, VersionUpdate,
};
use test_support::db::{T0, TestDb};
use test_support::store_test;

const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

async fn model(store: &Store, name: &str) -> i64 {
    store
        .create_model(&NewModel {
            name: name.into(),
            description: "test model".into(),
            tags: vec!["llama".into()],
        })
        .await
        .unwrap()
        .id
}

fn new_version() -> NewVersion {
    NewVersion {
        format: "mlx".into(),
        architecture: Some("llama".into()),
        parameter_count: Some(135_000_000),
        dtype: Some("bfloat16".into()),
        quantization: Some(json!({"group_size": 64, "bits": 4})),
        ..NewVersion::default()
    }
}

/// A ready version with one file.
async fn ready_version(store: &Store, model_id: i64) -> i64 {
    let v = store
        .create_version(model_id, &new_version())
        .await
        .unwrap();
    store
        .add_version_files(
            v.id,
            &[VersionFile {
                path: "model.safetensors".into(),
                size_bytes: 10,
                sha256: SHA_A.into(),
            }],
        )
        .await
        .unwrap();
    store.mark_version_ready(v.id).await.unwrap();
    v.id
}

fn db_error_text(e: &sqlx::Error) -> String {
    e.to_string().to_lowercase()
}

// ---------------------------------------------------------------- migrations

async fn migrations_are_idempotent(db: TestDb) {
    db.store.migrate().await.unwrap();
    db.store.migrate().await.unwrap();
    let other = db.second_store().await;
    other.migrate().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(n as usize, Store::migration_versions().len());
    // the schema is usable after re-running
    model(&other, "after-remigrate").await;
    if db.kind == "sqlite" {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
        assert_eq!(mode.to_lowercase(), "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
        assert_eq!(fk, 1);
    }
}
store_test!(migrations_are_idempotent);

// ---------------------------------------------------------------- models

async fn model_crud_and_errors(db: TestDb) {
    let s = &db.store;
    let id = model(s, "smollm2-135m").await;
    let m = s.get_model(id).await.unwrap();
    assert_eq!(m.name, "smollm2-135m");
    assert_eq!(m.tags, vec!["llama".to_string()]);
    assert_eq!(m.created_at_ms, T0);

    let dup = s
        .create_model(&NewModel {
            name: "smollm2-135m".into(),
            ..NewModel::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            dup,
            StoreError::Conflict {
                entity: Entity::Model,
                ..
            }
        ),
        "{dup:?}"
    );

    for bad in ["", " x", "../etc", "a//b", "-x", "a b", "x/"] {
        let e = s
            .create_model(&NewModel {
                name: bad.into(),
                ..NewModel::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(e, StoreError::InvalidInput { field: "name", .. }),
            "{bad:?}: {e:?}"
        );
    }

    model(s, "org/Qwen-0.5B").await;
    let other = s
        .create_model(&NewModel {
            name: "phi".into(),
            tags: vec!["small".into(), "small".into()],
            ..NewModel::default()
        })
        .await
        .unwrap();
    assert_eq!(other.tags, vec!["small".to_string()]);

    let all = s.list_models(&ModelFilter::default()).await.unwrap();
    let names: Vec<_> = all.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["org/Qwen-0.5B", "phi", "smollm2-135m"]);
    let qwen = s
        .list_models(&ModelFilter {
            name_contains: Some("QWEN".into()),
            ..ModelFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(qwen.len(), 1);
    let tagged = s
        .list_models(&ModelFilter {
            tag: Some("llama".into()),
            ..ModelFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(tagged.len(), 2);
    let page = s
        .list_models(&ModelFilter {
            limit: 1,
            offset: 1,
            ..ModelFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page[0].name, "phi");

    db.clock.advance(5);
    let upd = s
        .update_model(
            id,
            &ModelUpdate {
                description: Some("new".into()),
                tags: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(upd.description, "new");
    assert_eq!(upd.tags, vec!["llama".to_string()]);
    assert_eq!(upd.updated_at_ms, T0 + 5);

    assert!(s.get_model(999_999).await.unwrap_err().is_not_found());
    assert!(
        s.get_model_by_name("nope")
            .await
            .unwrap_err()
            .is_not_found()
    );

    // a model with versions cannot be deleted; one without can
    s.create_version(id, &new_version()).await.unwrap();
    let e = s.delete_model(id).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e:?}");
    s.delete_model(other.id).await.unwrap();
    assert!(s.delete_model(other.id).await.unwrap_err().is_not_found());
}
store_test!(model_crud_and_errors);

// ---------------------------------------------------------------- versions

async fn version_numbers_are_atomic_under_concurrency(db: TestDb) {
    let id = model(&db.store, "concurrent").await;
    // 8 concurrent inserters, half of them through a second pool
    let other = db.second_store().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 {
            db.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            s.create_version(id, &new_version()).await.unwrap().number
        }));
    }
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap());
    }
    numbers.sort();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
    // numbering is per model
    let id2 = model(&db.store, "other").await;
    assert_eq!(
        db.store
            .create_version(id2, &new_version())
            .await
            .unwrap()
            .number,
        1
    );
    assert_eq!(
        db.store
            .create_version(id, &new_version())
            .await
            .unwrap()
            .number,
        9
    );

    // same for dataset versions per name
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 {
            db.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            s.create_dataset(&NewDataset {
                name: "fortunes".into(),
                format: "text".into(),
                content_hash: SHA_A.into(),
                location: "datasets/fortunes".into(),
                ..NewDataset::default()
            })
            .await
            .unwrap()
            .version
        }));
    }
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap());
    }
    numbers.sort();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
}
store_test!(version_numbers_are_atomic_under_concurrency);

async fn database_rejects_orphans(db: TestDb) {
    let pool = db.store.pool();
    // a version without its model, by raw SQL: the database itself refuses
    let e = sqlx::query(
        "INSERT INTO model_versions (model_id, number, status, format, created_at_ms, updated_at_ms) \
         VALUES (424242, 1, 'registering', 'mlx', 0, 0)",
    )
    .execute(pool)
    .await
    .unwrap_err();
    let sqlx::Error::Database(dbe) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        dbe.kind(),
        sqlx::error::ErrorKind::ForeignKeyViolation,
        "{e}"
    );
    // the same on a fresh raw connection
    let mut raw = db.raw().await;
    let e = sqlx::query(
        "INSERT INTO model_versions (model_id, number, status, format, created_at_ms, updated_at_ms) \
         VALUES (424242, 1, 'registering', 'mlx', 0, 0)",
    )
    .execute(&mut raw)
    .await
    .unwrap_err();
    assert!(db_error_text(&e).contains("foreign key"), "{e}");

    // files without a version, metrics without a run
    let e = sqlx::query(
        "INSERT INTO version_files (version_id, path, size_bytes, sha256) VALUES (77, 'a', 1, $1)",
    )
    .bind(SHA_A)
    .execute(pool)
    .await
    .unwrap_err();
    assert!(db_error_text(&e).contains("foreign key"), "{e}");
    let e = sqlx::query(
        "INSERT INTO metrics (run_id, key, step, value, timestamp_ms) VALUES (77, 'loss', 1, 1.0, 0)",
    )
    .execute(pool)
    .await
    .unwrap_err();
    assert!(db_error_text(&e).contains("foreign key"), "{e}");

    // an alias pointing at a version of another model
    let a = model(&db.store, "a").await;
    let b = model(&db.store, "b").await;
    let vb = ready_version(&db.store, b).await;
    let e = sqlx::query(
        "INSERT INTO version_aliases (model_id, alias, version_id, updated_at_ms) VALUES ($1, 'prod', $2, 0)",
    )
    .bind(a)
    .bind(vb)
    .execute(pool)
    .await
    .unwrap_err();
    assert!(db_error_text(&e).contains("foreign key"), "{e}");
    // check constraints: an unknown status
    let e = sqlx::query(
        "INSERT INTO model_versions (model_id, number, status, format, created_at_ms, updated_at_ms) \
         VALUES ($1, 99, 'bogus', 'mlx', 0, 0)",
    )
    .bind(a)
    .execute(pool)
    .await
    .unwrap_err();
    assert!(db_error_text(&e).contains("check"), "{e}");

    // through the API: a job naming a missing base version
    let mut job = NewJob::new(JobKind::Train, json!({}));
    job.base_version_id = Some(999_999);
    let e = db.store.enqueue(&job).await.unwrap_err();
    assert!(matches!(e, StoreError::InvalidInput { .. }), "{e:?}");
    let e = db
        .store
        .create_version(999_999, &new_version())
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}
store_test!(database_rejects_orphans);

async fn aliases_are_unique_and_move(db: TestDb) {
    let s = &db.store;
    let m = model(s, "aliased").await;
    let v1 = ready_version(s, m).await;
    let v2 = ready_version(s, m).await;

    let a = s.set_alias(m, "production", v1).await.unwrap();
    assert_eq!((a.version_id, a.version_number), (v1, 1));
    assert_eq!(s.resolve_version(m, "production").await.unwrap().id, v1);
    assert_eq!(s.get_version(v1).await.unwrap().aliases, vec!["production"]);

    // setting it again moves it: still one alias of that name
    let a = s.set_alias(m, "production", v2).await.unwrap();
    assert_eq!(a.version_number, 2);
    let aliases = s.list_aliases(m).await.unwrap();
    assert_eq!(aliases.len(), 1);
    assert_eq!(s.resolve_version(m, "production").await.unwrap().id, v2);
    assert!(s.get_version(v1).await.unwrap().aliases.is_empty());
    s.set_alias(m, "staging", v2).await.unwrap();
    let listed = s.list_versions(m, None).await.unwrap();
    assert_eq!(listed[1].aliases, vec!["production", "staging"]);

    // raw duplicate: the primary key refuses it
    let e = sqlx::query(
        "INSERT INTO version_aliases (model_id, alias, version_id, updated_at_ms) VALUES ($1, 'production', $2, 0)",
    )
    .bind(m)
    .bind(v1)
    .execute(s.pool())
    .await
    .unwrap_err();
    let sqlx::Error::Database(dbe) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(dbe.kind(), sqlx::error::ErrorKind::UniqueViolation);

    // the same alias name on another model is independent
    let other = model(s, "other").await;
    let ov = ready_version(s, other).await;
    s.set_alias(other, "production", ov).await.unwrap();
    assert_eq!(s.resolve_version(m, "production").await.unwrap().id, v2);

    // refused: another model's version, a version not ready, bad names
    let e = s.set_alias(m, "x", ov).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::InvalidInput {
                field: "version_id",
                ..
            }
        ),
        "{e:?}"
    );
    let reg = s.create_version(m, &new_version()).await.unwrap();
    let e = s.set_alias(m, "x", reg.id).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e:?}");
    for bad in ["latest", "3", "Prod", "", "a b"] {
        let e = s.set_alias(m, bad, v1).await.unwrap_err();
        assert!(
            matches!(e, StoreError::InvalidInput { field: "alias", .. }),
            "{bad}: {e:?}"
        );
    }

    // resolution by number, v-number, latest
    assert_eq!(s.resolve_version(m, "1").await.unwrap().id, v1);
    assert_eq!(s.resolve_version(m, "v2").await.unwrap().id, v2);
    assert_eq!(s.resolve_version(m, "latest").await.unwrap().id, v2);
    assert!(
        s.resolve_version(m, "nope")
            .await
            .unwrap_err()
            .is_not_found()
    );

    // archiving removes the version's aliases
    s.archive_version(v2).await.unwrap();
    assert!(s.list_aliases(m).await.unwrap().is_empty());
    assert_eq!(s.resolve_version(m, "latest").await.unwrap().id, v1);

    s.set_alias(m, "production", v1).await.unwrap();
    s.remove_alias(m, "production").await.unwrap();
    assert!(
        s.remove_alias(m, "production")
            .await
            .unwrap_err()
            .is_not_found()
    );
}
store_test!(aliases_are_unique_and_move);

async fn ready_versions_are_immutable(db: TestDb) {
    let s = &db.store;
    let m = model(s, "frozen").await;
    let mut nv = new_version();
    nv.lineage.seed = Some(7);
    nv.lineage.hub_commit = Some("abc123".into());
    let v = s.create_version(m, &nv).await.unwrap();
    assert_eq!(v.status, VersionStatus::Registering);
    assert_eq!(v.lineage.seed, Some(7));

    // a version with no files cannot become ready
    let e = s.mark_version_ready(v.id).await.unwrap_err();
    assert!(
        matches!(e, StoreError::InvalidInput { field: "files", .. }),
        "{e:?}"
    );

    // while registering, content may change
    s.update_version(
        v.id,
        &VersionUpdate {
            artifact_uri: Some("cas://".into()),
            ..VersionUpdate::default()
        },
    )
    .await
    .unwrap();
    let files = vec![
        VersionFile {
            path: "config.json".into(),
            size_bytes: 100,
            sha256: SHA_A.into(),
        },
        VersionFile {
            path: "weights/model.safetensors".into(),
            size_bytes: 5000,
            sha256: SHA_B.into(),
        },
    ];
    s.add_version_files(v.id, &files).await.unwrap();
    let e = s.add_version_files(v.id, &files[..1]).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e:?}");
    for bad in ["../x", "/abs", "a/./b", "a//b", ""] {
        let e = s
            .add_version_files(
                v.id,
                &[VersionFile {
                    path: bad.into(),
                    size_bytes: 1,
                    sha256: SHA_A.into(),
                }],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, StoreError::InvalidInput { field: "path", .. }),
            "{bad}: {e:?}"
        );
    }

    db.clock.advance(1000);
    let ready = s.mark_version_ready(v.id).await.unwrap();
    assert_eq!(ready.status, VersionStatus::Ready);
    assert_eq!(ready.size_bytes, 5100);
    assert_eq!(ready.ready_at_ms, Some(T0 + 1000));
    assert_eq!(s.version_files(v.id).await.unwrap(), files);

    // through the API
    let e = s
        .update_version(
            v.id,
            &VersionUpdate {
                dtype: Some("float32".into()),
                ..VersionUpdate::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Immutable { .. }), "{e:?}");
    let e = s.add_version_files(v.id, &files[..1]).await.unwrap_err();
    assert!(matches!(e, StoreError::Immutable { .. }), "{e:?}");
    let e = s.mark_version_ready(v.id).await.unwrap_err();
    assert!(matches!(e, StoreError::IllegalTransition { .. }), "{e:?}");
    let e = s.mark_version_failed(v.id, "x").await.unwrap_err();
    assert!(matches!(e, StoreError::IllegalTransition { .. }), "{e:?}");
    // tags and description stay editable
    let t = s
        .update_version(
            v.id,
            &VersionUpdate {
                tags: Some(vec!["blessed".into()]),
                ..VersionUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(t.tags, vec!["blessed"]);

    // by raw SQL: the database itself refuses
    let pool = s.pool();
    for sql in [
        "UPDATE model_versions SET format = 'gguf' WHERE id = $1",
        "UPDATE model_versions SET lineage = '{}' WHERE id = $1",
        "UPDATE model_versions SET size_bytes = 1 WHERE id = $1",
        "UPDATE model_versions SET status = 'registering' WHERE id = $1",
        "UPDATE version_files SET sha256 = 'cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc' WHERE version_id = $1",
        "DELETE FROM version_files WHERE version_id = $1",
    ] {
        let e = sqlx::query(sql).bind(v.id).execute(pool).await;
        assert!(e.is_err(), "{sql} was accepted");
    }
    let e = sqlx::query(
        "INSERT INTO version_files (version_id, path, size_bytes, sha256) VALUES ($1, 'extra', 1, $2)",
    )
    .bind(v.id)
    .bind(SHA_A)
    .execute(pool)
    .await
    .unwrap_err();
    assert!(db_error_text(&e).contains("immutable"), "{e}");
    assert_eq!(s.version_files(v.id).await.unwrap().len(), 2);

    // archive and restore keep the content
    let a = s.archive_version(v.id).await.unwrap();
    assert_eq!(a.status, VersionStatus::Archived);
    let e = s.archive_version(v.id).await.unwrap_err();
    assert!(matches!(e, StoreError::IllegalTransition { .. }), "{e:?}");
    let r = s.restore_version(v.id).await.unwrap();
    assert_eq!(r.status, VersionStatus::Ready);
    assert_eq!(r.size_bytes, 5100);

    // a failed version can only be archived, never restored to ready
    let f = s.create_version(m, &new_version()).await.unwrap();
    let f = s
        .mark_version_failed(f.id, "NaN loss at step 12")
        .await
        .unwrap();
    assert_eq!(f.status_message.as_deref(), Some("NaN loss at step 12"));
    s.archive_version(f.id).await.unwrap();
    let e = s.restore_version(f.id).await.unwrap_err();
    assert!(matches!(e, StoreError::IllegalTransition { .. }), "{e:?}");

    let ready_only = s
        .list_versions(m, Some(VersionStatus::Ready))
        .await
        .unwrap();
    assert_eq!(ready_only.len(), 1);
    assert!(
        s.list_versions(999_999, None)
            .await
            .unwrap_err()
            .is_not_found()
    );
}
store_test!(ready_versions_are_immutable);

// ---------------------------------------------------------------- datasets

async fn datasets_are_versioned(db: TestDb) {
    let s = &db.store;
    let mut nd = NewDataset {
        name: "chat".into(),
        format: "chat".into(),
        splits: BTreeMap::from([("train".into(), 100), ("valid".into(), 10)]),
        content_hash: SHA_A.into(),
        location: "datasets/chat/1".into(),
        size_bytes: 1234,
        description: String::new(),
    };
    let d1 = s.create_dataset(&nd).await.unwrap();
    nd.content_hash = SHA_B.into();
    let d2 = s.create_dataset(&nd).await.unwrap();
    assert_eq!((d1.version, d2.version), (1, 2));
    assert_eq!(d1.splits["train"], 100);
    assert_eq!(s.get_dataset_by_name("chat", None).await.unwrap().id, d2.id);
    assert_eq!(
        s.get_dataset_by_name("chat", Some(1)).await.unwrap().id,
        d1.id
    );
    assert!(
        s.get_dataset_by_name("chat", Some(3))
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(s.list_datasets(Some("chat")).await.unwrap().len(), 2);
    assert_eq!(s.get_dataset(d1.id).await.unwrap(), d1);
    nd.content_hash = "not-a-hash".into();
    let e = s.create_dataset(&nd).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::InvalidInput {
                field: "content_hash",
                ..
            }
        ),
        "{e:?}"
    );
}
store_test!(datasets_are_versioned);

// ---------------------------------------------------------------- jobs

const LEASE: Duration = Duration::from_secs(30);

async fn job_state_machine(db: TestDb) {
    let s = &db.store;
    assert!(s.claim("w1", LEASE).await.unwrap().is_none());

    let j = s
        .enqueue(&NewJob::new(JobKind::Train, json!({"iters": 10})))
        .await
        .unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Queued, 0));

    // only the lease holder writes; nobody holds a queued job
    let e = s.complete(j.id, "w1", None).await.unwrap_err();
    assert!(matches!(e, StoreError::LeaseNotHeld { .. }), "{e:?}");

    let c = s.claim("w1", LEASE).await.unwrap().unwrap();
    assert_eq!(c.id, j.id);
    assert_eq!(c.state, JobState::Running);
    assert_eq!(c.attempts, 1);
    assert_eq!(c.lease_owner.as_deref(), Some("w1"));
    assert_eq!(c.lease_expires_at_ms, Some(T0 + 30_000));
    assert_eq!(c.started_at_ms, Some(T0));
    assert!(s.claim("w2", LEASE).await.unwrap().is_none());

    let e = s.complete(j.id, "w2", None).await.unwrap_err();
    assert!(matches!(e, StoreError::LeaseNotHeld { .. }), "{e:?}");
    let e = s.renew_lease(j.id, "w2", LEASE).await.unwrap_err();
    assert!(matches!(e, StoreError::LeaseNotHeld { .. }), "{e:?}");
    s.set_progress(j.id, "w1", 0.5).await.unwrap();
    let e = s.set_progress(j.id, "w1", 1.5).await.unwrap_err();
    assert!(matches!(e, StoreError::InvalidInput { .. }), "{e:?}");

    db.clock.advance(10);
    let done = s.complete(j.id, "w1", None).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.progress, 1.0);
    assert_eq!(done.finished_at_ms, Some(T0 + 10));
    assert!(done.lease_owner.is_none());

    // nothing leaves a terminal state
    for e in [
        s.complete(j.id, "w1", None).await.unwrap_err(),
        s.fail(j.id, "w1", "x").await.unwrap_err(),
        s.cancel(j.id, "w1").await.unwrap_err(),
        s.request_cancel(j.id).await.unwrap_err(),
    ] {
        assert!(
            matches!(&e, StoreError::IllegalTransition { from, .. } if from == "succeeded"),
            "{e:?}"
        );
    }

    // failure by the worker is final
    let j2 = s
        .enqueue(&NewJob::new(JobKind::Train, json!({})))
        .await
        .unwrap();
    s.claim("w1", LEASE).await.unwrap().unwrap();
    let f = s.fail(j2.id, "w1", "loss is NaN at step 3").await.unwrap();
    assert_eq!(f.state, JobState::Failed);
    assert_eq!(f.error.as_deref(), Some("loss is NaN at step 3"));

    // cancel a queued job: immediate; idempotent
    let j3 = s
        .enqueue(&NewJob::new(JobKind::Evaluate, json!({})))
        .await
        .unwrap();
    let c3 = s.request_cancel(j3.id).await.unwrap();
    assert_eq!(c3.state, JobState::Cancelled);
    assert_eq!(
        s.request_cancel(j3.id).await.unwrap().state,
        JobState::Cancelled
    );
    assert!(s.claim("w1", LEASE).await.unwrap().is_none());

    // cancel a running job: a flag the worker sees at renewal, then it acks
    let j4 = s
        .enqueue(&NewJob::new(JobKind::Train, json!({})))
        .await
        .unwrap();
    s.claim("w1", LEASE).await.unwrap().unwrap();
    let info = s.renew_lease(j4.id, "w1", LEASE).await.unwrap();
    assert!(!info.cancel_requested);
    let r = s.request_cancel(j4.id).await.unwrap();
    assert_eq!(r.state, JobState::Running);
    assert!(r.cancel_requested);
    let info: LeaseInfo = s.renew_lease(j4.id, "w1", LEASE).await.unwrap();
    assert!(info.cancel_requested);
    assert_eq!(
        s.cancel(j4.id, "w1").await.unwrap().state,
        JobState::Cancelled
    );

    // release gives the job back without counting the attempt
    let j5 = s
        .enqueue(&NewJob::new(JobKind::Train, json!({})))
        .await
        .unwrap();
    s.claim("w1", LEASE).await.unwrap().unwrap();
    let back = s.release(j5.id, "w1").await.unwrap();
    assert_eq!((back.state, back.attempts), (JobState::Queued, 0));

    // priority first, then age
    let low = s
        .enqueue(&NewJob::new(JobKind::Train, json!({})))
        .await
        .unwrap();
    let mut hi = NewJob::new(JobKind::Train, json!({}));
    hi.priority = 5;
    let hi = s.enqueue(&hi).await.unwrap();
    assert_eq!(s.claim("w1", LEASE).await.unwrap().unwrap().id, hi.id);
    assert_eq!(s.claim("w1", LEASE).await.unwrap().unwrap().id, j5.id);
    assert_eq!(s.claim("w1", LEASE).await.unwrap().unwrap().id, low.id);

    let counts = s.count_jobs_by_state().await.unwrap();
    assert_eq!(counts[&JobState::Running], 3);
    assert_eq!(counts[&JobState::Succeeded], 1);
    assert_eq!(counts[&JobState::Failed], 1);
    assert_eq!(counts[&JobState::Cancelled], 2);
    assert_eq!(counts[&JobState::Queued], 0);

    let e = s.get_job(999_999).await.unwrap_err();
    assert!(e.is_not_found());
    let e = s.complete(999_999, "w1", None).await.unwrap_err();
    assert!(e.is_not_found());

    // raw SQL: a running job without a lease is refused by the database
    let e = sqlx::query("UPDATE training_jobs SET lease_owner = NULL WHERE id = $1")
        .bind(low.id)
        .execute(s.pool())
        .await;
    assert!(e.is_err());
    let e = sqlx::query("UPDATE training_jobs SET state = 'paused' WHERE id = $1")
        .bind(low.id)
        .execute(s.pool())
        .await;
    assert!(e.is_err());
}
store_test!(job_state_machine);

async fn concurrent_claimers_never_share_a_job(db: TestDb) {
    const JOBS: usize = 40;
    for i in 0..JOBS {
        db.store
            .enqueue(&NewJob::new(JobKind::Train, json!({ "i": i })))
            .await
            .unwrap();
    }
    let other = db.second_store().await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let s = if w % 2 == 0 {
            db.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            let worker = format!("worker-{w}");
            let mut mine = Vec::new();
            while let Some(job) = s.claim(&worker, LEASE).await.unwrap() {
                assert_eq!(job.lease_owner.as_deref(), Some(worker.as_str()));
                mine.push(job.id);
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), JOBS, "every job claimed exactly once");
    assert_eq!(unique.len(), JOBS, "no job claimed twice");
    let counts = db.store.count_jobs_by_state().await.unwrap();
    assert_eq!(counts[&JobState::Running], JOBS as i64);
}
store_test!(concurrent_claimers_never_share_a_job);

async fn lapsed_leases_requeue_then_fail(db: TestDb) {
    let s = &db.store;
    let mut nj = NewJob::new(JobKind::Train, json!({}));
    nj.max_attempts = 2;
    let j = s.enqueue(&nj).await.unwrap();

    // attempt 1: the worker renews once, then dies
    s.claim("w1", LEASE).await.unwrap().unwrap();
    db.clock.advance(20_000);
    let info = s.renew_lease(j.id, "w1", LEASE).await.unwrap();
    assert_eq!(info.expires_at_ms, T0 + 50_000);
    db.clock.set(T0 + 50_000);
    assert!(
        s.reap_expired_leases().await.unwrap().is_empty(),
        "not yet lapsed"
    );
    db.clock.advance(1);
    let reaped = s.reap_expired_leases().await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].outcome, ReapOutcome::Requeued);
    let back = s.get_job(j.id).await.unwrap();
    assert_eq!((back.state, back.attempts), (JobState::Queued, 1));
    assert!(back.lease_owner.is_none());
    assert!(back.error.as_deref().unwrap().contains("w1"));
    assert!(s.reap_expired_leases().await.unwrap().is_empty());

    // the dead worker can no longer write the result
    let e = s.complete(j.id, "w1", None).await.unwrap_err();
    assert!(matches!(e, StoreError::LeaseNotHeld { .. }), "{e:?}");

    // attempt 2 (the last): lapses too → failed
    let c = s.claim("w2", LEASE).await.unwrap().unwrap();
    assert_eq!(c.attempts, 2);
    let e = s.complete(j.id, "w1", None).await.unwrap_err();
    assert!(matches!(e, StoreError::LeaseNotHeld { .. }), "{e:?}");
    db.clock.advance(30_001);
    let reaped = s.reap_expired_leases().await.unwrap();
    assert_eq!(reaped[0].outcome, ReapOutcome::Failed);
    let failed = s.get_job(j.id).await.unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert!(failed.error.as_deref().unwrap().contains("last attempt"));
    assert_eq!(failed.finished_at_ms, Some(db.clock.now_ms()));
    let e = s.renew_lease(j.id, "w2", LEASE).await.unwrap_err();
    assert!(matches!(e, StoreError::IllegalTransition { .. }), "{e:?}");

    // a lapsed job with a pending cancel is cancelled, not retried
    let k = s
        .enqueue(&NewJob::new(JobKind::Train, json!({})))
        .await
        .unwrap();
    s.claim("w3", LEASE).await.unwrap().unwrap();
    s.request_cancel(k.id).await.unwrap();
    db.clock.advance(31_000);
    let reaped = s.reap_expired_leases().await.unwrap();
    assert_eq!(reaped[0].outcome, ReapOutcome::Cancelled);
    assert_eq!(s.get_job(k.id).await.unwrap().state, JobState::Cancelled);

    // a live job is left alone while others lapse
    let live = s
        .enqueue(&NewJob::new(JobKind::Train, json!({})))
        .await
        .unwrap();
    let dead = s
        .enqueue(&NewJob::new(JobKind::Train, json!({})))
        .await
        .unwrap();
    s.claim("live", LEASE).await.unwrap().unwrap();
    s.claim("dead", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    db.clock.advance(10_000);
    let reaped = s.reap_expired_leases().await.unwrap();
    assert_eq!(
        reaped.iter().map(|r| r.job_id).collect::<Vec<_>>(),
        vec![dead.id]
    );
    assert_eq!(s.get_job(live.id).await.unwrap().state, JobState::Running);
}
store_test!(lapsed_leases_requeue_then_fail);

// ---------------------------------------------------------------- runs, metrics

async fn metrics_batch_insert_and_query(db: TestDb) {
    let s = &db.store;
    let j = s
        .enqueue(&NewJob::new(JobKind::Train, json!({})))
        .await
        .unwrap();
    let run = s
        .create_run(&NewRun {
            job_id: Some(j.id),
            name: "lora".into(),
            params: json!({"lr": 1e-5, "rank": 8}),
            ..NewRun::default()
        })
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.params["rank"], 8);

    // one batch bigger than one INSERT statement
    let mut batch = Vec::new();
    for step in 0..1000 {
        batch.push(MetricPoint {
            key: "train_loss".into(),
            step,
            value: 10.0 / (step as f64 + 1.0),
            timestamp_ms: None,
        });
        if step % 10 == 0 {
            batch.push(MetricPoint {
                key: "val_loss".into(),
                step,
                value: 2.5,
                timestamp_ms: Some(T0 + step),
            });
        }
    }
    s.log_metrics(run.id, &batch).await.unwrap();
    let all = s.metric_history(run.id, "train_loss", None).await.unwrap();
    assert_eq!(all.len(), 1000);
    assert_eq!(all[0].value, 10.0);
    assert_eq!(all[999].step, 999);
    assert_eq!(all[0].timestamp_ms, T0);
    let window = s
        .metric_history(run.id, "val_loss", Some(100..=200))
        .await
        .unwrap();
    assert_eq!(
        window.iter().map(|m| m.step).collect::<Vec<_>>(),
        (100..=200).step_by(10).collect::<Vec<_>>()
    );
    assert_eq!(window[0].timestamp_ms, T0 + 100);
    assert_eq!(
        s.metric_keys(run.id).await.unwrap(),
        vec!["train_loss", "val_loss"]
    );

    // re-logging a step replaces it (retries are harmless); duplicates in a batch: last wins
    s.log_metrics(
        run.id,
        &[
            MetricPoint {
                key: "train_loss".into(),
                step: 5,
                value: 1.0,
                timestamp_ms: None,
            },
            MetricPoint {
                key: "train_loss".into(),
                step: 5,
                value: 0.5,
                timestamp_ms: None,
            },
        ],
    )
    .await
    .unwrap();
    let five = s
        .metric_history(run.id, "train_loss", Some(5..=5))
        .await
        .unwrap();
    assert_eq!(five.len(), 1);
    assert_eq!(five[0].value, 0.5);
    let latest = s.latest_metrics(run.id).await.unwrap();
    assert_eq!(latest.len(), 2);
    assert_eq!(latest[0].step, 999);

    let e = s
        .log_metrics(
            run.id,
            &[MetricPoint {
                key: "train_loss".into(),
                step: 1,
                value: f64::NAN,
                timestamp_ms: None,
            }],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::InvalidInput { field: "value", .. }),
        "{e:?}"
    );
    let e = s.log_metrics(999_999, &batch[..3]).await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");

    let ended = s.end_run(run.id, RunStatus::Finished).await.unwrap();
    assert_eq!(ended.status, RunStatus::Finished);
    let e = s.end_run(run.id, RunStatus::Failed).await.unwrap_err();
    assert!(matches!(e, StoreError::IllegalTransition { .. }), "{e:?}");
    assert_eq!(s.list_runs_of_job(j.id).await.unwrap().len(), 1);
}
store_test!(metrics_batch_insert_and_query);

async fn artifact_records_count_references(db: TestDb) {
    let s = &db.store;
    let r = s.record_artifact(SHA_A, 10).await.unwrap();
    assert_eq!((r.references, r.tier), (0, store::Tier::Active));
    // idempotent; a different size for the same hash is a conflict
    s.record_artifact(SHA_A, 10).await.unwrap();
    let e = s.record_artifact(SHA_A, 11).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e:?}");
    s.record_artifact(SHA_B, 20).await.unwrap();

    let m = model(s, "refs").await;
    ready_version(s, m).await; // refers to SHA_A
    ready_version(s, m).await;
    assert_eq!(s.get_artifact(SHA_A).await.unwrap().references, 2);
    let unref = s.unreferenced_artifacts().await.unwrap();
    assert_eq!(
        unref.iter().map(|a| a.sha256.as_str()).collect::<Vec<_>>(),
        vec![SHA_B]
    );
    let e = s.delete_artifact_record(SHA_A).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e:?}");
    s.delete_artifact_record(SHA_B).await.unwrap();
    assert!(s.get_artifact(SHA_B).await.unwrap_err().is_not_found());
    let a = s
        .set_artifact_tier(SHA_A, store::Tier::Archive)
        .await
        .unwrap();
    assert_eq!(a.tier, store::Tier::Archive);
}
store_test!(artifact_records_count_references);

async fn publishing_a_version_needs_the_lease(db: TestDb) {
    let s = &db.store;
    let m = model(s, "trained").await;
    let base = ready_version(s, m).await;
    let mut nj = NewJob::new(JobKind::Train, json!({"fine_tune_type": "lora"}));
    nj.base_version_id = Some(base);
    let j = s.enqueue(&nj).await.unwrap();
    s.claim("w1", LEASE).await.unwrap().unwrap();

    let mut nv = new_version();
    nv.format = "adapter".into();
    nv.lineage.base_version_id = Some(base);
    nv.lineage.job_id = Some(j.id);
    let v = s.create_version(m, &nv).await.unwrap();
    assert_eq!(v.lineage.base_version_id, Some(base));

    // no files yet: refused, and the job is left running
    let e = s.complete_with_version(j.id, "w1", v.id).await.unwrap_err();
    assert!(
        matches!(e, StoreError::InvalidInput { field: "files", .. }),
        "{e:?}"
    );
    assert_eq!(s.get_job(j.id).await.unwrap().state, JobState::Running);

    s.add_version_files(
        v.id,
        &[VersionFile {
            path: "adapters.safetensors".into(),
            size_bytes: 42,
            sha256: SHA_B.into(),
        }],
    )
    .await
    .unwrap();

    // another worker cannot publish it
    let e = s.complete_with_version(j.id, "w2", v.id).await.unwrap_err();
    assert!(matches!(e, StoreError::LeaseNotHeld { .. }), "{e:?}");
    assert_eq!(
        s.get_version(v.id).await.unwrap().status,
        VersionStatus::Registering
    );

    // nor can w1 once its lease lapsed and was reaped
    db.clock.advance(LEASE.as_millis() as i64 + 1);
    s.reap_expired_leases().await.unwrap();
    let e = s.complete_with_version(j.id, "w1", v.id).await.unwrap_err();
    assert!(matches!(e, StoreError::LeaseNotHeld { .. }), "{e:?}");
    assert_eq!(
        s.get_version(v.id).await.unwrap().status,
        VersionStatus::Registering
    );

    // the next holder publishes job and version together
    s.claim("w2", LEASE).await.unwrap().unwrap();
    let done = s.complete_with_version(j.id, "w2", v.id).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result_version_id, Some(v.id));
    assert!(done.error.is_none());
    let v = s.get_version(v.id).await.unwrap();
    assert_eq!((v.status, v.size_bytes), (VersionStatus::Ready, 42));
}
store_test!(publishing_a_version_needs_the_lease);

#[test]
fn errors_map_to_stable_codes_and_statuses() {
    let cases: Vec<(StoreError, &str, u16)> = vec![
        (
            StoreError::NotFound {
                entity: Entity::Model,
                key: "x".into(),
            },
            "model_not_found",
            404,
        ),
        (
            StoreError::conflict(Entity::Model, "x", "taken"),
            "conflict",
            409,
        ),
        (
            StoreError::InvalidInput {
                field: "name",
                message: "empty".into(),
            },
            "invalid_input",
            422,
        ),
        (
            StoreError::LeaseNotHeld {
                job_id: 1,
                worker_id: "w".into(),
            },
            "lease_not_held",
            409,
        ),
        (
            StoreError::Database(sqlx::Error::PoolTimedOut),
            "database_unavailable",
            503,
        ),
    ];
    for (e, code, status) in cases {
        let c = e.error_code();
        assert_eq!((c.as_str(), c.status()), (code, status), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_migrations_on_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = store::sqlite_url(&dir.path().join("fresh.db"));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let s = Store::connect(&url).await.unwrap();
            s.migrate().await.unwrap();
            s
        }));
    }
    for t in tasks {
        let s = t.await.unwrap();
        s.list_models(&ModelFilter::default()).await.unwrap();
    }
}
