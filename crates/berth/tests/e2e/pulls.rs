//! Images pulled from another registry: a second berth server on
//! loopback plays it (a real OCI registry with the bearer-token dance);
//! `berth registry login` checks the credentials and keeps them sealed,
//! `berth deploy --image HOST/NAME:TAG` copies the image in and runs it.

use crate::images::{make_images, marker};
use crate::support::skopeo_push;
use berth_testkit::TestServer;

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn an_image_is_pulled_from_a_registry_signed_in_to() {
    setup();
    assert!(
        berth_runtime::can_isolate(),
        "images run in a root of their own: root"
    );
    let (server, elsewhere) = tokio::join!(TestServer::start(), TestServer::start());
    let other = elsewhere.api_url.trim_start_matches("http://").to_string();
    let work = tempfile::tempdir().unwrap();
    let layout = make_images(work.path());
    skopeo_push(
        &elsewhere,
        &format!("{}:v1", layout.display()),
        "team/plain:v1",
    );

    // A wrong password is refused at login, and nothing is kept.
    let login = |password: &str| {
        let args = [
            "registry",
            "login",
            &other,
            "-u",
            "ci",
            "--password-stdin",
            "--plain-http",
        ]
        .map(str::to_string);
        let password = format!("{password}\n");
        let server = &server;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            server
                .berth(&args)
                .run_with_input(password.as_bytes())
                .await
        }
    };
    let refused = login("not-the-token").await.failure();
    assert!(
        refused.stderr.contains("refused the credentials of ci"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        server.ok(&["registry", "logins", "--json"]).await.json(),
        serde_json::json!([])
    );
    // A password on the command line is not taken.
    let no_stdin = server
        .fails(&["registry", "login", &other, "-u", "ci"])
        .await;
    assert!(
        no_stdin.stderr.contains("--password-stdin"),
        "{}",
        no_stdin.stderr
    );

    login(&elsewhere.token).await.success();
    let logins = server.ok(&["registry", "logins", "--json"]).await;
    assert_eq!(logins.json()[0]["host"], other.as_str());
    assert!(!logins.stdout.contains(&elsewhere.token));
    // Sealed at rest.
    let kept = std::fs::read_to_string(server.data_dir().join("registry-logins.json")).unwrap();
    let stored: serde_json::Value = serde_json::from_str(&kept).unwrap();
    let sealed = stored[other.as_str()]["password"]
        .as_str()
        .unwrap_or_default();
    assert!(
        sealed.starts_with("v1:") && !kept.contains(&elsewhere.token),
        "{kept}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(server.data_dir().join("registry-logins.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let empty = tempfile::tempdir().unwrap();
    let reference = format!("{other}/team/plain:v1");
    let deployed = server
        .ok_in(
            empty.path(),
            &["deploy", "--image", &reference, "--app", "pulled"],
        )
        .await;
    let local = format!("{}/team/plain", other.replace(':', "_"));
    assert!(
        deployed.stderr.contains(&format!(
            "pulling {reference} into berth's registry as {local}"
        )),
        "{}",
        deployed.stderr
    );
    assert_eq!(server.get("pulled", "/").await.status, 200);
    assert_eq!(marker(&server, "pulled").await, "one");
    let listing = server.ok(&["registry", "list", "--json"]).await.json();
    let repo = listing["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|repo| repo["name"] == local.as_str())
        .unwrap_or_else(|| panic!("{listing}"))
        .clone();
    assert_eq!(repo["tags"][0]["tag"], "v1");

    // A tag the other registry does not have: its answer, the app serves on.
    let missing = server
        .fails_in(
            empty.path(),
            &[
                "deploy",
                "--image",
                &format!("{other}/team/plain:v9"),
                "--app",
                "pulled",
            ],
        )
        .await;
    assert!(
        missing
            .stderr
            .contains("team/plain:v9: the registry answered 404"),
        "{}",
        missing.stderr
    );
    assert_eq!(server.get("pulled", "/").await.status, 200);

    // Signed out: the host is read as berth's own address again.
    server.ok(&["registry", "logout", &other]).await;
    let own = server
        .fails_in(
            empty.path(),
            &["deploy", "--image", &reference, "--app", "pulled"],
        )
        .await;
    assert!(
        own.stderr.contains("manifest unknown in berth's registry"),
        "{}",
        own.stderr
    );
}
