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
        secrets: BTreeMap::new(),
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
        events
            .iter()
            .any(|event| event.kind == EventKind::DeployFailed
                && event.message.contains("v1 keeps serving"))
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

fn sealed(text: &str) -> SealedSecret {
    SealedSecret {
        sealed: format!("v1:{text}"),
        digest: format!("d-{text}"),
    }
}

#[test]
fn secrets_follow_the_release_that_goes_live() {
    let (_dir, store) = open();
    store.create_app("shop").unwrap();
    store
        .set_secrets(
            "shop",
            &BTreeMap::from([("A".to_string(), sealed("one"))]),
            "secrets set A",
        )
        .unwrap();
    assert_eq!(store.secret_list("shop").unwrap()[0].digest, "d-one");
    let mut release = new_release("deploy", &[]);
    release.secrets = BTreeMap::from([
        ("A".to_string(), sealed("one")),
        ("B".to_string(), sealed("two")),
    ]);
    let v1 = store.begin_release("shop", release).unwrap();
    // Not live yet: the list is still the app's current set.
    assert_eq!(store.secret_list("shop").unwrap().len(), 1);
    store.finish_release("shop", v1.version).unwrap();
    let listed = store.secret_list("shop").unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|row| row.name.as_str())
            .collect::<Vec<_>>(),
        ["A", "B"]
    );
    let reread = store.release("shop", v1.version).unwrap();
    assert_eq!(reread.secrets.get("B"), Some(&sealed("two")));
    // A release without B removes it when it goes live.
    let mut release = new_release("secrets unset B", &[]);
    release.secrets = BTreeMap::from([("A".to_string(), sealed("one"))]);
    let v2 = store.begin_release("shop", release).unwrap();
    store.finish_release("shop", v2.version).unwrap();
    assert_eq!(store.secrets("shop").unwrap().len(), 1);
}

#[test]
fn resources_are_recorded_and_forgotten_with_their_app() {
    let (_dir, store) = open();
    store.create_app("shop").unwrap();
    let row = ResourceRow {
        app: "shop".into(),
        kind: ResourceKind::Redis,
        name: "shop".into(),
        sealed_password: "v1:xx".into(),
        port: Some(7001),
        created_at: now_rfc3339(),
    };
    store.put_resource(&row, "redis attached").unwrap();
    store
        .set_resource_port("shop", &ResourceKind::Redis, 7002)
        .unwrap();
    let stored = store
        .resource("shop", &ResourceKind::Redis)
        .unwrap()
        .unwrap();
    assert_eq!(stored.port, Some(7002));
    assert_eq!(store.all_resources().unwrap().len(), 1);
    assert!(
        store
            .resource("shop", &ResourceKind::Postgres)
            .unwrap()
            .is_none()
    );
    store.destroy_app("shop").unwrap();
    assert!(store.all_resources().unwrap().is_empty());
}

#[test]
fn a_store_from_before_secrets_opens_with_empty_release_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for migration in &crate::migrations::MIGRATIONS[..2] {
            conn.execute_batch(migration).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO apps (name, created_at) VALUES ('old', 'x');
             INSERT INTO releases (app, version, status, cause, slug, spec_json, processes_json, env_json, created_at)
             VALUES ('old', 1, 'active', 'deploy', 's', '{}', '{}', '{}', 'x');
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let release = store.release("old", 1).unwrap();
    assert!(release.secrets.is_empty());
}

#[test]
fn the_autoscaler_count_wins_until_a_deploy_or_a_manual_scale() {
    let (_dir, store) = open();
    store.create_app("web").unwrap();
    let v1 = store
        .begin_release("web", new_release("deploy", &[]))
        .unwrap();
    store.finish_release("web", v1.version).unwrap();
    store
        .set_scaled(
            "web",
            "web",
            Some(0),
            "idle for 5m",
            Some(EventKind::ScaleToZero),
        )
        .unwrap();
    assert_eq!(store.counts("web").unwrap()["web"], 0);
    let scaling = store.scaling("web").unwrap();
    assert_eq!(scaling["web"].manual, 1);
    assert_eq!(scaling["web"].effective(), 0);
    assert_eq!(scaling["web"].reason.as_deref(), Some("idle for 5m"));
    // A new release is proven at the manual count.
    store
        .begin_release("web", new_release("deploy", &[]))
        .unwrap();
    assert_eq!(store.counts("web").unwrap()["web"], 1);
    store
        .set_scaled("web", "web", Some(4), "load", Some(EventKind::ScaleOut))
        .unwrap();
    store
        .set_counts("web", &BTreeMap::from([("web".to_string(), 2)]))
        .unwrap();
    assert_eq!(store.counts("web").unwrap()["web"], 2);
    store.set_scale_bounds("web", "web", Some(1), None).unwrap();
    store.set_scale_bounds("web", "web", None, Some(5)).unwrap();
    let scaling = store.scaling("web").unwrap();
    assert_eq!((scaling["web"].min, scaling["web"].max), (Some(1), Some(5)));
    assert!(
        store
            .set_scale_bounds("web", "nope", Some(1), None)
            .is_err()
    );
}

#[test]
fn each_app_gets_its_own_stable_user_id() {
    let (_dir, store) = open();
    store.create_app("alpha").unwrap();
    store.create_app("beta").unwrap();
    let next = std::cell::Cell::new(300_000);
    let allocate = || {
        next.set(next.get() + 1);
        Ok(next.get())
    };
    let alpha = store.app_uid("alpha", allocate).unwrap();
    let beta = store.app_uid("beta", allocate).unwrap();
    assert_eq!((alpha, beta), (300_001, 300_002));
    assert_eq!(store.app_uid("alpha", allocate).unwrap(), alpha, "kept");
    assert_eq!(next.get(), 300_002, "asked only for new apps");
    assert_eq!(store.uid_of("beta").unwrap(), Some(beta));
    assert!(store.app_uid("ghost", allocate).is_err());
}

#[test]
fn the_slugs_in_use_are_the_target_deploys_under_way_and_the_rollback_depth() {
    let (_dir, store) = open();
    store.create_app("shop").unwrap();
    let with_slug = |slug: &str| NewRelease {
        slug: slug.into(),
        ..new_release("test", &[])
    };
    for (slug, ok) in [
        ("v1", true),
        ("v2", true),
        ("v3-failed", false),
        ("v4", true),
    ] {
        let release = store.begin_release("shop", with_slug(slug)).unwrap();
        if ok {
            store.finish_release("shop", release.version).unwrap();
        } else {
            store
                .fail_release("shop", release.version, "crashed")
                .unwrap();
        }
    }
    store.create_app("other").unwrap();
    store
        .begin_release("other", with_slug("o1-deploying"))
        .unwrap();

    let keep = |depth| {
        let mut slugs: Vec<String> = store.slugs_in_use(depth).unwrap().into_iter().collect();
        slugs.sort();
        slugs
    };
    assert_eq!(keep(1), ["o1-deploying", "v4"]);
    assert_eq!(keep(2), ["o1-deploying", "v2", "v4"]);
    assert!(
        !keep(10).contains(&"v3-failed".to_string()),
        "a failed deploy's slug goes"
    );
    store.destroy_app("shop").unwrap();
    assert_eq!(keep(10), ["o1-deploying"], "a destroyed app's slugs go");
}

#[test]
fn a_domain_has_one_app_and_a_deploy_replaces_the_spec_ones() {
    let (_dir, store) = open();
    store.create_app("shop").unwrap();
    store.create_app("blog").unwrap();
    store.add_domain("shop", "www.example.org", false).unwrap();
    let taken = store
        .add_domain("blog", "www.example.org", false)
        .unwrap_err();
    assert!(
        taken.to_string().contains("belongs to app `shop`"),
        "{taken}"
    );
    store
        .set_spec_domains("blog", &["blog.example.org".into(), "b.example.org".into()])
        .unwrap();
    store
        .set_spec_domains("blog", &["blog.example.org".into()])
        .unwrap();
    let all: Vec<(String, String, bool)> = store
        .domains(None)
        .unwrap()
        .into_iter()
        .map(|row| (row.name, row.app, row.from_spec))
        .collect();
    assert_eq!(
        all,
        [
            ("blog.example.org".into(), "blog".into(), true),
            ("www.example.org".into(), "shop".into(), false),
        ]
    );
    // Adding it again only changes where its certificate comes from.
    let again = store.add_domain("shop", "www.example.org", true).unwrap();
    assert!(again.tls_internal && !again.from_spec);
    // All or nothing: a taken name leaves the spec domains as they were.
    assert!(
        store
            .set_spec_domains(
                "blog",
                &["new.example.org".into(), "www.example.org".into()]
            )
            .is_err()
    );
    assert_eq!(store.domains(Some("blog")).unwrap().len(), 1);
    store.destroy_app("shop").unwrap();
    assert!(store.domains(Some("shop")).unwrap().is_empty());
}
