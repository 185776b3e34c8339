//! End to end: other platforms' files deployed unchanged. Each fixture under
//! tests/fixtures is written from its format's reference and deployed on
//! a copy of an example app, with real cargo, PostgreSQL and Redis.

use berth_testkit::{TestServer, example};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

fn fixture(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    std::fs::read_to_string(root.join(path)).expect("fixture")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_blueprint_deploys_as_apps_sharing_a_database() {
    setup();
    let server = TestServer::start().await;
    let project = example("todo");
    std::fs::remove_file(project.path().join("berth.toml")).unwrap();
    std::fs::write(
        project.path().join("render.yaml"),
        fixture("render/render.yaml"),
    )
    .unwrap();

    // The cron job uses todo-web's database: alone, it is refused.
    let alone = server
        .fails_in(project.path(), &["deploy", "--app", "todo-migrate"])
        .await;
    assert!(
        alone
            .stderr
            .contains("uses the database of app `todo-web`, but `todo-web` does not exist yet"),
        "{}",
        alone.stderr
    );
    // `sync: false` secrets must be set once; without a terminal the deploy says how.
    let unset = server.fails_in(project.path(), &["up"]).await;
    assert!(
        unset.stderr.contains(
            "API_TOKEN must be set once (the spec marks it `sync: false`): berth secrets set --app todo-web API_TOKEN=…"
        ),
        "{}",
        unset.stderr
    );
    server
        .ok(&["secrets", "set", "--app", "todo-web", "API_TOKEN=tok-123"])
        .await;

    let out = server.ok_in(project.path(), &["up"]).await.stderr;
    assert!(out.contains("using render.yaml"), "{out}");
    assert!(
        out.contains("made PostgreSQL database app_todo_web"),
        "{out}"
    );
    assert!(out.contains("generated secret(s) SESSION_SECRET"), "{out}");
    assert!(out.contains("migrated: table todos is ready"), "{out}");
    assert!(out.contains("uses the database of app todo-web"), "{out}");

    let added = server
        .request("todo-web", "POST", "/todos", "from render")
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
    let count = server.request("todo-web", "POST", "/count", "").await;
    assert_eq!(count.status, 200, "{}", count.body);
    let env = |key: &'static str| {
        let server = &server;
        async move { server.get("todo-web", &format!("/env/{key}")).await.body }
    };
    assert_eq!(env("GREETING").await, "hello from an env group");
    assert_eq!(env("API_TOKEN").await, "tok-123");
    let session = env("SESSION_SECRET").await;
    assert_eq!(session.len(), 32, "{session}");
    let database_url = env("DATABASE_URL").await;
    assert!(
        database_url.ends_with(&format!(
            ":{}/app_todo_web?sslmode=prefer",
            env("DB_PORT").await
        )),
        "{database_url}"
    );

    // The cron job's app runs no instance and migrates the shared database by hand.
    let status = server.status("todo-migrate").await;
    assert!(
        status["instances"].as_array().is_none_or(Vec::is_empty),
        "{status}"
    );
    let run = server
        .ok(&[
            "jobs",
            "run",
            "todo-migrate",
            "--wait",
            "--app",
            "todo-migrate",
            "--json",
        ])
        .await;
    assert_eq!(run.json()["status"], "succeeded", "{}", run.stdout);

    // A redeploy keeps the generated secret and the data.
    server
        .ok_in(project.path(), &["deploy", "--app", "todo-web"])
        .await;
    assert_eq!(env("SESSION_SECRET").await, session);
    let listed = server.get("todo-web", "/todos").await;
    assert!(listed.body.contains("from render"), "{}", listed.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_json_beside_a_procfile_deploys_with_its_scripts_cron_and_addons() {
    setup();
    let server = TestServer::start().await;
    let project = example("plain");
    for file in ["app.json", "Procfile"] {
        std::fs::write(
            project.path().join(file),
            fixture(&format!("app-json/{file}")),
        )
        .unwrap();
    }
    let out = server.ok_in(project.path(), &["up"]).await.stderr;
    assert!(out.contains("using Procfile and app.json"), "{out}");
    assert!(out.contains("predeploy from app.json"), "{out}");
    assert!(out.contains("postdeploy from app.json"), "{out}");
    assert!(
        out.contains("made PostgreSQL database app_plain_shop"),
        "{out}"
    );
    assert!(out.contains("generated secret(s) SECRET_KEY_BASE"), "{out}");
    assert!(out.contains("add-on `papertrail`"), "{out}");

    let environ = server
        .get("plain-shop", "/read?path=/proc/self/environ")
        .await
        .body;
    assert!(environ.contains("GREETING=hi from app.json"), "{environ}");
    assert!(environ.contains("DATABASE_URL=postgres://"), "{environ}");
    let jobs = server
        .ok(&["jobs", "list", "--app", "plain-shop"])
        .await
        .stdout;
    assert!(
        jobs.contains("cron-1") && jobs.contains("*/5 * * * *"),
        "{jobs}"
    );

    // A failing post-deploy command is reported; the release stays live.
    let app_json = fixture("app-json/app.json").replace(
        "echo postdeploy from app.json",
        "sh -c 'echo postdeploy breaks; exit 3'",
    );
    std::fs::write(project.path().join("app.json"), app_json).unwrap();
    let failed = server.fails_in(project.path(), &["deploy"]).await.stderr;
    assert!(
        failed.contains("is live, but the postdeploy command"),
        "{failed}"
    );
    assert_eq!(server.get("plain-shop", "/whoami").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fly_toml_with_every_section_deploys_and_its_statics_are_served_by_the_router() {
    setup();
    let server = TestServer::start().await;
    let project = example("plain");
    std::fs::write(project.path().join("fly.toml"), fixture("fly/fly.toml")).unwrap();
    std::fs::create_dir_all(project.path().join("public")).unwrap();
    std::fs::write(
        project.path().join("public/hello.txt"),
        fixture("fly/public/hello.txt"),
    )
    .unwrap();

    let out = server.ok_in(project.path(), &["up"]).await.stderr;
    assert!(out.contains("release | release from fly.toml"), "{out}");
    assert!(
        out.contains("`primary_region` has no meaning on one machine"),
        "{out}"
    );

    // The app listens on internal_port (3917), not a port berth picked.
    let status = server.status("fly-plain").await;
    assert_eq!(status["instances"][0]["port"], 3917, "{status}");
    let environ = server
        .get("fly-plain", "/read?path=/proc/self/environ")
        .await
        .body;
    for expected in [
        "GREETING=hi from fly.toml",
        "WORKERS=2",
        "DEBUG=false",
        "BERTH_VOLUME_DATA=",
    ] {
        assert!(environ.contains(expected), "{expected} in {environ}");
    }

    let client = reqwest::Client::new();
    let get = |path: &'static str| {
        client
            .get(format!("http://{}{path}", server.router))
            .header("host", "fly-plain.localhost")
            .send()
    };
    let file = get("/static/hello.txt").await.unwrap();
    assert_eq!(file.status().as_u16(), 200);
    assert!(file.headers().contains_key("x-berth-static"));
    assert_eq!(file.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(file.text().await.unwrap(), "static hello from fly\n");
    // A name that is not a file there goes to the app; so does everything else.
    let missing = get("/static/missing.txt").await.unwrap();
    assert!(!missing.headers().contains_key("x-berth-static"));
    let escape = get("/static/../fly.toml").await.unwrap();
    assert!(!escape.headers().contains_key("x-berth-static"));
    let app = get("/whoami").await.unwrap();
    assert_eq!(app.status().as_u16(), 200);
}
