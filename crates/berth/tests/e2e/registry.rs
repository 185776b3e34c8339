//! The built-in OCI registry, end to end with the tools people push with:
//! an image made on this machine with `umoci` is pushed by `skopeo` (the
//! bearer-token dance, with the API token as the password) and pulled back
//! byte-identical; chunked uploads, mounts, referrers and bad input over
//! plain HTTP; `berth registry list` and `gc`.

use std::path::Path;
use std::process::Command;

use crate::support::run_tool;
use berth_testkit::TestServer;

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// An OCI image layout at `dir` holding `layout:v1`: one layer with
/// `/hello.txt` and 3 MiB of random bytes, made by umoci.
fn make_image(dir: &Path) -> std::path::PathBuf {
    let layout = dir.join("layout");
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("hello.txt"), "hello from an image\n").unwrap();
    // Bytes that do not compress (a xorshift stream), so the layer is big.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(files.join("noise.bin"), noise).unwrap();
    let image = format!("{}:v1", layout.display());
    run_tool(
        "umoci",
        &["init", "--layout", &layout.display().to_string()],
    );
    run_tool("umoci", &["new", "--image", &image]);
    for name in ["hello.txt", "noise.bin"] {
        let source = files.join(name).display().to_string();
        run_tool(
            "umoci",
            &["insert", "--image", &image, &source, &format!("/{name}")],
        );
    }
    layout
}

/// Every blob of an OCI layout, by name, with its bytes.
fn blobs(layout: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = layout.join("blobs/sha256");
    let mut found: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect();
    found.sort();
    found
}

/// The manifest digest `index.json` of a layout names.
fn manifest_digest(layout: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_and_pulls_back_the_same_image() {
    setup();
    let server = TestServer::start_with(&["--registry-grace", "0s"]).await;
    let host = server.api_url.trim_start_matches("http://").to_string();
    let work = tempfile::tempdir().unwrap();
    let layout = make_image(work.path());
    let creds = format!("anyone:{}", server.token);
    let pushed_to = format!("docker://{host}/team/hello:v1");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--dest-creds",
            &creds,
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", layout.display()),
            &pushed_to,
        ],
    );
    let pulled = work.path().join("pulled");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--src-creds",
            &creds,
            "--src-tls-verify=false",
            &pushed_to,
            &format!("oci:{}:v1", pulled.display()),
        ],
    );
    assert_eq!(manifest_digest(&pulled), manifest_digest(&layout));
    // Every blob pulled is byte for byte one pushed (umoci's layout also
    // keeps the blobs of the image's earlier states, which were not).
    let (before, after) = (blobs(&layout), blobs(&pulled));
    assert_eq!(after.len(), 4, "a manifest, a config and two layers");
    for blob in &after {
        assert!(before.contains(blob), "pulled blob {} differs", blob.0);
    }
    let tags = run_tool(
        "skopeo",
        &[
            "list-tags",
            "--creds",
            &creds,
            "--tls-verify=false",
            &format!("docker://{host}/team/hello"),
        ],
    );
    assert!(tags.contains("\"v1\""), "{tags}");
    // A wrong password is refused.
    let refused = Command::new("skopeo")
        .args([
            "inspect",
            "--creds",
            "anyone:wrong",
            "--tls-verify=false",
            &pushed_to,
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());

    let listing = server.ok(&["registry", "list", "--json"]).await.json();
    assert_eq!(listing["repositories"][0]["name"], "team/hello");
    assert_eq!(listing["repositories"][0]["tags"][0]["tag"], "v1");
    assert!(
        listing["disk_bytes"].as_u64().unwrap() > 3 * 1024 * 1024,
        "{listing}"
    );
    let text = server.ok(&["registry", "list"]).await.stdout;
    assert!(text.contains("team/hello") && text.contains("v1"), "{text}");

    // Tagged, it survives a collection; untagged (deleted by skopeo, which
    // deletes the manifest by digest), its blobs go.
    let kept = server.ok(&["registry", "gc", "--json"]).await.json();
    assert_eq!(kept["blobs_removed"], 0, "{kept}");
    run_tool(
        "skopeo",
        &[
            "delete",
            "--creds",
            &creds,
            "--tls-verify=false",
            &pushed_to,
        ],
    );
    let collected = server.ok(&["registry", "gc", "--json"]).await.json();
    assert!(
        collected["blobs_removed"].as_u64().unwrap() >= 3,
        "{collected}"
    );
    assert!(
        collected["disk_bytes"].as_u64().unwrap() < 1024,
        "{collected}"
    );
    let listing = server.ok(&["registry", "list", "--json"]).await.json();
    assert_eq!(listing["repositories"], serde_json::json!([]), "{listing}");
}

/// A client of the registry's HTTP API with the API token as a bearer.
struct Http {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Http {
    fn new(server: &TestServer) -> Http {
        Http {
            client: reqwest::Client::new(),
            base: server.api_url.clone(),
            token: server.token.clone(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        self.client.request(method, url).bearer_auth(&self.token)
    }

    async fn error_code(answer: reqwest::Response) -> (u16, String) {
        let status = answer.status().as_u16();
        let body: serde_json::Value = answer.json().await.unwrap();
        (
            status,
            body["errors"][0]["code"].as_str().unwrap().to_string(),
        )
    }
}

fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_uploads_mounts_referrers_and_bad_input() {
    setup();
    let server = TestServer::start_with(&["--registry-grace", "0s"]).await;
    let http = Http::new(&server);
    use reqwest::Method;
    // Without credentials: the challenge docker and skopeo follow.
    let anonymous = reqwest::get(format!("{}/v2/", http.base)).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let challenge = anonymous.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with("Bearer realm=\"http://") && challenge.contains("/v2/token"),
        "{challenge}"
    );
    let token: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v2/token?service=berth", http.base))
        .basic_auth("me", Some(&server.token))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let registry_token = token["token"].as_str().unwrap();
    let base = reqwest::Client::new()
        .get(format!("{}/v2/", http.base))
        .bearer_auth(registry_token)
        .send()
        .await
        .unwrap();
    assert_eq!(base.status(), 200);

    // A chunked upload: two PATCHes, the second out of order first.
    let layer = b"first chunk|second chunk".to_vec();
    let layer_digest = digest_of(&layer);
    let started = http
        .request(Method::POST, "/v2/shop/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"].to_str().unwrap().to_string();
    let out_of_order = http
        .request(Method::PATCH, &location)
        .header("Content-Range", "12-23")
        .body(layer[12..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(out_of_order.status(), 416);
    let first = http
        .request(Method::PATCH, &location)
        .header("Content-Range", "0-11")
        .body(layer[..12].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    assert_eq!(first.headers()["range"], "0-11");
    // The digest is checked when the upload completes: a wrong one stores nothing.
    let wrong = http
        .request(
            Method::PUT,
            &format!("{location}?digest={}", digest_of(b"other")),
        )
        .body(layer[12..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        Http::error_code(wrong).await,
        (400, "DIGEST_INVALID".into())
    );
    let missing = http
        .request(Method::HEAD, &format!("/v2/shop/blobs/{layer_digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Again, right: POST, PATCH, PUT with the last chunk.
    let started = http
        .request(Method::POST, "/v2/shop/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let location = started.headers()["location"].to_str().unwrap().to_string();
    http.request(Method::PATCH, &location)
        .header("Content-Range", "0-11")
        .body(layer[..12].to_vec())
        .send()
        .await
        .unwrap();
    let done = http
        .request(Method::PUT, &format!("{location}?digest={layer_digest}"))
        .header("Content-Range", "12-23")
        .body(layer[12..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 201);
    assert_eq!(
        done.headers()["docker-content-digest"].to_str().unwrap(),
        layer_digest
    );
    let fetched = http
        .request(Method::GET, &format!("/v2/shop/blobs/{layer_digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.bytes().await.unwrap().to_vec(), layer);

    // A monolithic config upload, a manifest, and a mount into another repository.
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = digest_of(&config);
    let put = http
        .request(
            Method::POST,
            &format!("/v2/shop/blobs/uploads/?digest={config_digest}"),
        )
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let mounted = http
        .request(
            Method::POST,
            &format!("/v2/other/blobs/uploads/?mount={layer_digest}&from=shop"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(mounted.status(), 201);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    })
    .to_string();
    let manifest_digest = digest_of(manifest.as_bytes());
    let media = "application/vnd.oci.image.manifest.v1+json";
    // A manifest pushed under a digest it does not have.
    let mismatched = http
        .request(
            Method::PUT,
            &format!("/v2/shop/manifests/{}", digest_of(b"x")),
        )
        .header("Content-Type", media)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        Http::error_code(mismatched).await,
        (400, "DIGEST_INVALID".into())
    );
    // In `other`, which has the layer but not the config.
    let incomplete = http
        .request(Method::PUT, "/v2/other/manifests/v1")
        .header("Content-Type", media)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        Http::error_code(incomplete).await,
        (400, "MANIFEST_BLOB_UNKNOWN".into())
    );
    let stored = http
        .request(Method::PUT, "/v2/shop/manifests/v1")
        .header("Content-Type", media)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 201);
    assert_eq!(
        stored.headers()["docker-content-digest"].to_str().unwrap(),
        manifest_digest
    );

    // A signature that refers to it.
    let empty_digest = digest_of(b"{}");
    http.request(
        Method::POST,
        &format!("/v2/shop/blobs/uploads/?digest={empty_digest}"),
    )
    .body("{}")
    .send()
    .await
    .unwrap();
    let signature = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2},
        "layers": [],
        "subject": {"mediaType": media, "digest": manifest_digest, "size": manifest.len()},
    })
    .to_string();
    let signed = http
        .request(
            Method::PUT,
            &format!("/v2/shop/manifests/{}", digest_of(signature.as_bytes())),
        )
        .header("Content-Type", media)
        .body(signature)
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 201);
    assert_eq!(
        signed.headers()["oci-subject"].to_str().unwrap(),
        manifest_digest
    );
    let referrers: serde_json::Value = http
        .request(
            Method::GET,
            &format!("/v2/shop/referrers/{manifest_digest}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        referrers["manifests"][0]["artifactType"],
        "application/vnd.example.signature"
    );
    let catalog: serde_json::Value = http
        .request(Method::GET, "/v2/_catalog?n=1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!(["other"]));

    // Bad input: a name that is not one, a tag that does not exist, an
    // unknown upload, a digest of another algorithm.
    let bad_name = http
        .request(Method::GET, "/v2/Shop/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(
        Http::error_code(bad_name).await,
        (400, "NAME_INVALID".into())
    );
    let no_tag = http
        .request(Method::GET, "/v2/shop/manifests/v9")
        .send()
        .await
        .unwrap();
    assert_eq!(
        Http::error_code(no_tag).await,
        (404, "MANIFEST_UNKNOWN".into())
    );
    let no_upload = http
        .request(
            Method::GET,
            &format!("/v2/shop/blobs/uploads/{}", "0".repeat(32)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        Http::error_code(no_upload).await,
        (404, "BLOB_UPLOAD_UNKNOWN".into())
    );
    let md5 = http
        .request(Method::GET, "/v2/shop/blobs/md5:abc")
        .send()
        .await
        .unwrap();
    assert_eq!(Http::error_code(md5).await.1, "UNSUPPORTED");

    // An upload that stops half way is never a blob, and the collector
    // removes it; the tagged image and its referrer stay.
    let started = http
        .request(Method::POST, "/v2/shop/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let location = started.headers()["location"].to_str().unwrap().to_string();
    http.request(Method::PATCH, &location)
        .body("half of a layer")
        .send()
        .await
        .unwrap();
    let collected = server.ok(&["registry", "gc", "--json"]).await.json();
    assert_eq!(collected["uploads_removed"], 1, "{collected}");
    assert_eq!(collected["blobs_removed"], 0, "{collected}");
    let gone = http.request(Method::GET, &location).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    let still = http
        .request(Method::GET, "/v2/shop/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_still_arriving_holds_its_upload_until_it_ends() {
    setup();
    let server = TestServer::start().await;
    let http = Http::new(&server);
    use reqwest::Method;
    let layer = b"the first half|and the second".to_vec();
    let layer_digest = digest_of(&layer);
    // A PATCH whose body comes in two parts, the second held back. A probe
    // that took the upload just as it arrived would refuse it instead:
    // then the whole is tried again on a new upload.
    let mut held = None;
    for _ in 0..5 {
        let started = http
            .request(Method::POST, "/v2/shop/blobs/uploads/")
            .send()
            .await
            .unwrap();
        let location = started.headers()["location"].to_str().unwrap().to_string();
        let (parts, received) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
        let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(
            received,
            |mut received| async move { received.recv().await.map(|part| (part, received)) },
        ));
        parts.send(Ok(layer[..15].to_vec())).await.unwrap();
        let slow = tokio::spawn(
            http.request(Method::PATCH, &location)
                .header("Content-Range", format!("0-{}", layer.len() - 1))
                .body(body)
                .send(),
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        // Once the slow chunk holds the upload, another chunk is refused…
        let probe = http
            .request(Method::PATCH, &location)
            .header("Content-Range", "0-0")
            .body(Vec::new())
            .send()
            .await
            .unwrap();
        if probe.status() == 400 {
            assert_eq!(
                Http::error_code(probe).await,
                (400, "BLOB_UPLOAD_INVALID".into())
            );
            held = Some((location, parts, slow));
            break;
        }
        drop(parts);
        let _ = slow.await;
    }
    let (location, parts, slow) = held.expect("the slow chunk never held its upload");
    // …and so is completing it: the digest could not be checked against
    // bytes still being written.
    let early = http
        .request(Method::PUT, &format!("{location}?digest={layer_digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        Http::error_code(early).await,
        (400, "BLOB_UPLOAD_INVALID".into())
    );
    let missing = http
        .request(Method::HEAD, &format!("/v2/shop/blobs/{layer_digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // The chunk ends; then the upload completes whole.
    parts.send(Ok(layer[15..].to_vec())).await.unwrap();
    drop(parts);
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status(), 202);
    assert_eq!(slow.headers()["range"], format!("0-{}", layer.len() - 1));
    let done = http
        .request(Method::PUT, &format!("{location}?digest={layer_digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 201);
    let fetched = http
        .request(Method::GET, &format!("/v2/shop/blobs/{layer_digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.bytes().await.unwrap().to_vec(), layer);
}
