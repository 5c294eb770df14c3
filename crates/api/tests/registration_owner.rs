//! Start-up recovery of registrations by their owner process (see
//! `hub::owner`): a version left `registering` by a dead process of this host
//! is failed at once, with no stale window; one whose owner still holds its
//! lock is never touched; one whose owner can't be checked (another host, or
//! none recorded) waits for the stale window as before.

mod common;

use test_support::store_test;

use std::time::Duration;

use common::TestDb;
use common::http::TestHub;
use hub::owner::{OwnerState, ProcessOwner, owner_state};
use hub::store::{NewModel, NewVersion, VersionStatus};

const STALE: Duration = Duration::from_secs(3600);

async fn owner_recovery(db: TestDb) {
    let th = TestHub::new(db);
    let s = &th.db.store;
    let data = &th.data_dir;
    let m = s
        .create_model(&NewModel {
            name: "owned".into(),
            description: String::new(),
            tags: Vec::new(),
        })
        .await
        .unwrap();
    let new = || NewVersion {
        format: "mlx".into(),
        ..NewVersion::default()
    };
    // a process that registered and died: its lock file stays, unlocked
    let dead = ProcessOwner::acquire(data).unwrap();
    let dead_id = dead.id().to_string();
    drop(dead);
    // a process that lives (say, a CLI registration next to the server)
    let live = ProcessOwner::acquire(data).unwrap();
    assert_eq!(owner_state(data, &dead_id), OwnerState::Dead);
    assert_eq!(owner_state(data, live.id()), OwnerState::Alive);
    assert_eq!(owner_state(data, th.hub.owner.id()), OwnerState::Alive);
    let gone_id = format!("{}-gone", dead_id.rsplit_once('-').unwrap().0);
    assert_eq!(
        owner_state(data, &gone_id),
        OwnerState::Dead,
        "no lock file"
    );
    let remote = "another-host/0123456789abcdef/42-0123456789abcdef";
    assert_eq!(owner_state(data, remote), OwnerState::Unknown);
    // a dead process of this host with its own data directory (a worker in
    // another network namespace, say): its lock files aren't ours to judge
    let elsewhere = tempfile::tempdir().unwrap();
    let other = ProcessOwner::acquire(elsewhere.path()).unwrap();
    let other_id = other.id().to_string();
    drop(other);
    assert_eq!(owner_state(data, &other_id), OwnerState::Unknown);
    assert_eq!(owner_state(elsewhere.path(), &other_id), OwnerState::Dead);
    // the directory id survives the clean-up of dead lock files
    let again = ProcessOwner::acquire(data).unwrap();
    assert_eq!(owner_state(data, live.id()), OwnerState::Alive);
    drop(again);

    let by_dead = s
        .create_version_owned(m.id, &new(), Some(&dead_id))
        .await
        .unwrap();
    let by_gone = s
        .create_version_owned(m.id, &new(), Some(&gone_id))
        .await
        .unwrap();
    let by_live = s
        .create_version_owned(m.id, &new(), Some(live.id()))
        .await
        .unwrap();
    let by_remote = s
        .create_version_owned(m.id, &new(), Some(remote))
        .await
        .unwrap();
    let unowned = s.create_version(m.id, &new()).await.unwrap();
    assert_eq!(
        s.registration_owner(by_live.id).await.unwrap().as_deref(),
        Some(live.id())
    );
    assert_eq!(s.registration_owner(unowned.id).await.unwrap(), None);

    // right after the crash: only the dead owners' versions, at once
    let r = th.hub.recover_stale_registrations(STALE).await.unwrap();
    assert_eq!(r.failed_versions, vec![by_dead.id, by_gone.id]);
    let status = |id| async move { s.get_version(id).await.unwrap().status };
    for id in [by_live.id, by_remote.id, unowned.id] {
        assert_eq!(status(id).await, VersionStatus::Registering);
    }
    // past the stale window: the unknown ones too, never the live owner's
    th.db.clock.advance(2 * 3600 * 1000);
    let r = th.hub.recover_stale_registrations(STALE).await.unwrap();
    assert_eq!(r.failed_versions, vec![by_remote.id, unowned.id]);
    assert_eq!(status(by_live.id).await, VersionStatus::Registering);
    // once its owner dies, it goes too
    drop(live);
    let r = th.hub.recover_stale_registrations(STALE).await.unwrap();
    assert_eq!(r.failed_versions, vec![by_live.id]);
}
store_test!(owner_recovery);

/// The hub registering a folder records itself as the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_records_its_owner() {
    let Some(model) = common::http::tiny_model("registration_owner") else {
        return;
    };
    let th = TestHub::new(common::sqlite().await);
    common::http::copy_dir(&model, &th.import_root.join("tiny"));
    let v = th
        .hub
        .register_model_folder_creating(
            "tiny",
            &hub::registry::RegisterFolder {
                path: "tiny".into(),
                ..Default::default()
            },
            &th.import_root,
        )
        .await
        .unwrap();
    assert_eq!(v.status, VersionStatus::Ready);
    assert_eq!(
        th.db
            .store
            .registration_owner(v.id)
            .await
            .unwrap()
            .as_deref(),
        Some(th.hub.owner.id())
    );
}
