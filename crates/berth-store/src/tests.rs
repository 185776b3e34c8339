use super::*;

fn new_release(cause: &str, env: &[(&str, &str)]) -> NewRelease {
    NewRelease {
        cause: cause.into(),
        slug: "abc".into(),
        spec_json: "{}".into(),
        processes: BTreeMap::from([("web".to_string(), "hello".to_string())]),
        env: env
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
    }
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("berth.db")).unwrap();
    (dir, store)
}

#[test]
fn app_names_are_unique() {
    let (_dir, store) = open();
    store.create_app("hello").unwrap();
    assert!(matches!(
        store.create_app("hello"),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(store.app("nope"), Err(StoreError::NotFound(_))));
}

#[test]
fn a_finished_release_supersedes_the_one_before() {
    let (_dir, store) = open();
    store.create_app("hello").unwrap();
    let v1 = store
        .begin_release("hello", new_release("deploy", &[]))
        .unwrap();
    assert_eq!(v1.version, 1);
    store.finish_release("hello", 1).unwrap();
    let v2 = store
        .begin_release("hello", new_release("deploy", &[("A", "1")]))
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(store.app("hello").unwrap().target_release, Some(2));
    store.finish_release("hello", 2).unwrap();
    let statuses: Vec<_> = store
        .releases("hello")
        .unwrap()
        .into_iter()
        .map(|release| (release.version, release.status))
        .collect();
    assert_eq!(
        statuses,
        vec![(2, "active".into()), (1, "superseded".into())]
    );
    assert_eq!(store.env("hello").unwrap()["A"], "1");
}

#[test]
fn a_failed_release_points_the_app_back_at_the_active_one() {
    let (_dir, store) = open();
    store.create_app("hello").unwrap();
    store
        .begin_release("hello", new_release("deploy", &[]))
        .unwrap();
    store.finish_release("hello", 1).unwrap();
    store
        .begin_release("hello", new_release("deploy", &[]))
        .unwrap();
    let previous = store.fail_release("hello", 2, "crashed").unwrap();
    assert_eq!(previous, Some(1));
    assert_eq!(store.app("hello").unwrap().target_release, Some(1));
    let events = store.events("hello", 0, 100).unwrap();
    assert!(
        events.iter().any(
            |event| event.kind == "deploy.failed" && event.message.contains("v1 keeps serving")
        )
    );
}

#[test]
fn scaling_an_unknown_group_is_refused_and_names_the_known_ones() {
    let (_dir, store) = open();
    store.create_app("hello").unwrap();
    store
        .begin_release("hello", new_release("deploy", &[]))
        .unwrap();
    let err = store
        .set_counts("hello", &BTreeMap::from([("wrker".to_string(), 2)]))
        .unwrap_err();
    assert!(err.to_string().contains("it has: web"), "{err}");
    store
        .set_counts("hello", &BTreeMap::from([("web".to_string(), 3)]))
        .unwrap();
    assert_eq!(store.counts("hello").unwrap()["web"], 3);
}

#[test]
fn everything_written_is_there_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    {
        let store = Store::open(&path).unwrap();
        store.create_app("hello").unwrap();
        store
            .begin_release("hello", new_release("deploy", &[("K", "V")]))
            .unwrap();
        store.journal_instance("web-1", "hello", 42).unwrap();
    }
    let store = Store::open(&path).unwrap();
    let desired = store.desired().unwrap();
    assert_eq!(desired.len(), 1);
    assert_eq!(desired[0].release.as_ref().unwrap().env["K"], "V");
    assert_eq!(desired[0].counts["web"], 1);
    assert_eq!(store.journaled_instances().unwrap()[0].pid, 42);
}

#[test]
fn destroying_an_app_removes_its_releases() {
    let (_dir, store) = open();
    store.create_app("hello").unwrap();
    store
        .begin_release("hello", new_release("deploy", &[]))
        .unwrap();
    store.destroy_app("hello").unwrap();
    assert!(store.desired().unwrap().is_empty());
    assert!(matches!(
        store.releases("hello"),
        Err(StoreError::NotFound(_))
    ));
    assert!(store.destroy_app("hello").is_err());
}
