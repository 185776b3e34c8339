//! The tunnel, with three parts of a small internet made of network
//! namespaces: "internet" holds `berth relay` and an ACME CA (pebble),
//! "home" holds a berth server behind a router that lets nothing in, and
//! the test's own namespace is the client. The client reaches the home
//! app through the relay over HTTPS with a certificate only home holds.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_testkit::netns::Host;
use berth_testkit::{Cli, PebblePlan, berth_binary, example, http_get, https_get};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// `berth ARGS` inside `host`'s namespace, for the server of `data`.
fn berth_in(host: &Host, data: &Path, args: &[&str]) -> Cli {
    let mut command = host.command(&berth_binary().display().to_string());
    command
        .args(args)
        .env("BERTH_DATA", data)
        .env_remove("BERTH_SERVER")
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_CONTEXT");
    Cli::from_command(command)
}

/// Starts `berth relay` in `internet`, its log in `dir`.
fn start_relay(internet: &Host, dir: &Path) -> tokio::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("relay.log"))
        .unwrap();
    internet
        .command(&berth_binary().display().to_string())
        .args(["relay", "--dir"])
        .arg(dir)
        .args([
            "--http",
            "0.0.0.0:80",
            "--https",
            "0.0.0.0:443",
            "--tunnel",
            "0.0.0.0:7835",
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Starts a berth server in `home`, tunnelled to the relay.
fn start_home_server(
    home: &Host,
    data: &Path,
    token: &str,
    acme: &[&str],
) -> tokio::process::Child {
    let log = std::fs::File::create(data.join("server.log")).unwrap();
    let relay = format!("{}:7835", home.gateway);
    let cache = berth_testkit::shared_build_cache().display().to_string();
    home.command(&berth_binary().display().to_string())
        .args(["server", "--api", "127.0.0.1:0", "--router", "127.0.0.1:0"])
        .args([
            "--https",
            "127.0.0.1:0",
            "--domain",
            "apps.example.org",
            "--build-cache",
            &cache,
        ])
        .args(["--tunnel", &relay, "--tunnel-token", token])
        .args(acme)
        .env("BERTH_DATA", data)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The tunnel's state as `berth server status --json` gives it.
async fn tunnel_state(home: &Host, data: &Path) -> serde_json::Value {
    let status = berth_in(home, data, &["server", "status", "--json"])
        .run()
        .await;
    serde_json::from_str::<serde_json::Value>(&status.stdout)
        .map(|status| status["tunnel"].clone())
        .unwrap_or_default()
}

async fn wait_for_tunnel(home: &Host, data: &Path, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tunnel = tunnel_state(home, data).await;
        if tunnel["state"] == state {
            return tunnel;
        }
        assert!(
            Instant::now() < deadline,
            "the tunnel never became {state}: {tunnel}\n{}",
            std::fs::read_to_string(data.join("server.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The 32-byte private scalar of the P-256 key in the PEM file `path`.
fn private_scalar(path: &Path) -> Vec<u8> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let key = PrivateKeyDer::from_pem_file(path).expect("the certificate's key");
    let der = key.secret_der();
    let at = der
        .windows(5)
        .position(|window| window == [0x02, 0x01, 0x01, 0x04, 0x20])
        .expect("an EC private key");
    der[at + 5..at + 37].to_vec()
}

/// Whether the writable memory of process `pid` holds `needle`.
fn memory_holds(pid: u32, needle: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut memory = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(permissions)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !permissions.starts_with("rw") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (start, end) = (
            u64::from_str_radix(start, 16).unwrap(),
            u64::from_str_radix(end, 16).unwrap(),
        );
        let mut region = vec![0u8; (end - start) as usize];
        if memory.seek(SeekFrom::Start(start)).is_err() || memory.read_exact(&mut region).is_err() {
            continue;
        }
        if region.windows(needle.len()).any(|window| window == needle) {
            return true;
        }
    }
    false
}

async fn https_through(
    relay: SocketAddr,
    name: &str,
    path: &str,
    root: &str,
) -> Option<(u16, String)> {
    let answer = https_get(relay, name, path, root).await.ok()?;
    Some((answer.status, answer.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_home_server_behind_a_router_serves_the_internet_through_the_relay() {
    setup();
    let internet = Host::new("inet");
    let home = Host::behind(&internet, "home");
    // The home network's router: nothing from the internet connects in.
    for rule in [
        "add table inet homefw",
        "add chain inet homefw input { type filter hook input priority 0; policy accept; }",
        "add rule inet homefw input iifname eth0 ct state new drop",
    ] {
        let status = std::process::Command::new("ip")
            .args(["netns", "exec", &home.name, "nft"])
            .args(rule.split(' '))
            .status()
            .unwrap();
        assert!(status.success(), "the home firewall: {rule}");
    }

    // Tokens, made on the relay's host; bad ones are refused.
    let relay_dir = tempfile::tempdir().unwrap();
    let token_cmd = |args: &[&str]| {
        let mut all = vec![
            "relay",
            "--dir",
            relay_dir.path().to_str().unwrap(),
            "token",
        ];
        all.extend(args);
        berth_testkit::berth_at_home(relay_dir.path(), &all).run()
    };
    let token = token_cmd(&[
        "add",
        "home",
        "--domain",
        "shop.example.org",
        "--domain",
        "*.apps.example.org",
    ])
    .await
    .success()
    .stdout
    .trim()
    .to_string();
    let taken = token_cmd(&["add", "thief", "--domain", "shop.example.org"])
        .await
        .failure();
    assert!(
        taken.stderr.contains("already served by the token `home`"),
        "{}",
        taken.stderr
    );
    let bad = token_cmd(&["add", "x", "--domain", "not a domain"])
        .await
        .failure();
    assert!(
        bad.stderr.contains("not a domain berth can serve"),
        "{}",
        bad.stderr
    );
    let listed = token_cmd(&["list"]).await.success().stdout;
    assert!(
        listed.contains("home") && listed.contains("*.apps.example.org"),
        "{listed}"
    );
    assert!(
        !listed.contains(token.split('.').next().unwrap()),
        "a secret was listed"
    );

    // The relay as a service: the unit systemd would run (none runs here,
    // so installing says so and changes nothing).
    let relay_args = |action: &str| {
        vec![
            "relay".to_string(),
            "--dir".into(),
            relay_dir.path().display().to_string(),
            "--http".into(),
            "0.0.0.0:8080".into(),
            action.to_string(),
        ]
    };
    let mut print = relay_args("install");
    print.push("--print".into());
    let print: Vec<&str> = print.iter().map(String::as_str).collect();
    let unit = berth_testkit::berth_at_home(relay_dir.path(), &print)
        .run()
        .await
        .success()
        .stdout;
    assert!(
        unit.contains(&format!(
            " relay --dir {} --http 0.0.0.0:8080 --https 0.0.0.0:443 --tunnel 0.0.0.0:7835\n",
            relay_dir.path().display()
        )) && unit.contains("Restart=always"),
        "{unit}"
    );
    let unit_file = relay_dir.path().join("berth-relay.service");
    std::fs::write(&unit_file, &unit).unwrap();
    crate::support::verify_unit(&unit_file);
    if !std::path::Path::new("/run/systemd/system").exists() {
        let install = relay_args("install");
        let install: Vec<&str> = install.iter().map(String::as_str).collect();
        let refused = berth_testkit::berth_at_home(relay_dir.path(), &install)
            .run()
            .await
            .failure();
        assert!(
            refused.stderr.contains("nothing was installed"),
            "{}",
            refused.stderr
        );
        assert!(!std::path::Path::new("/etc/systemd/system/berth-relay.service").exists());
    }

    let mut relay = start_relay(&internet, relay_dir.path());
    let relay_https = SocketAddr::from((internet.address, 443));
    let relay_http = SocketAddr::from((internet.address, 80));
    let plan =
        PebblePlan::in_namespace(&internet.name, home.gateway.into(), internet.address.into());
    let directory = plan.directory.clone();
    let ca_file = plan.listener_root.display().to_string();
    let pebble = plan.start(80, 443).await;
    let ca_root = pebble.issuing_root().await;

    let data = tempfile::tempdir().unwrap();
    let acme = [
        "--acme-directory",
        directory.as_str(),
        "--acme-ca-root",
        ca_file.as_str(),
    ];
    let _server = start_home_server(&home, data.path(), &token, &acme);
    let tunnel = wait_for_tunnel(&home, data.path(), "connected").await;
    assert_eq!(
        tunnel["domains"],
        serde_json::json!(["shop.example.org", "*.apps.example.org"])
    );

    let app = example("plain");
    std::fs::write(app.path().join("berth.toml"), "app = \"shop\"\n").unwrap();
    berth_in(&home, data.path(), &["up"])
        .current_dir(app.path())
        .run()
        .await
        .success();
    berth_in(
        &home,
        data.path(),
        &["domains", "add", "shop.example.org", "--app", "shop"],
    )
    .run()
    .await
    .success();

    // The certificate comes from the CA through the relay (HTTP-01 on its
    // port 80); the client's HTTPS reaches home undecrypted and the app
    // sees the client's own address.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        if let Some(answer) =
            https_through(relay_https, "shop.example.org", "/forwarded-for", &ca_root).await
        {
            break answer;
        }
        if Instant::now() >= deadline {
            let check = berth_in(
                &home,
                data.path(),
                &["domains", "check", "shop.example.org"],
            )
            .run()
            .await;
            panic!(
                "no HTTPS through the relay:\n{}{}\n{}\n{}\n{}",
                check.stdout,
                check.stderr,
                std::fs::read_to_string(data.path().join("server.log")).unwrap_or_default(),
                std::fs::read_to_string(relay_dir.path().join("relay.log")).unwrap_or_default(),
                pebble.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no HTTPS through the relay:\n{}\n{}",
            std::fs::read_to_string(data.path().join("server.log")).unwrap_or_default(),
            std::fs::read_to_string(relay_dir.path().join("relay.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        (status, body.trim()),
        (200, internet.gateway.to_string().as_str())
    );
    // Plain HTTP by Host, for an app name under the token's wildcard.
    let plain = http_get(relay_http, "shop.apps.example.org", "/")
        .await
        .unwrap();
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert!(plain.body.contains("plain says hi"), "{}", plain.body);
    // A name home serves but its token does not name is not routed there.
    let unclaimed = http_get(relay_http, "shop.localhost", "/").await.unwrap();
    assert_eq!(unclaimed.status, 404, "{}", unclaimed.body);
    assert!(
        unclaimed.body.contains("serves no shop.localhost"),
        "{}",
        unclaimed.body
    );
    // Once at home, a connection may ask only for the token's names: a
    // second request on it for another host is refused.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(relay_http).await.unwrap();
        stream
            .write_all(
                b"GET / HTTP/1.1\r\nHost: shop.apps.example.org\r\n\r\n\
                  GET /forwarded-for HTTP/1.1\r\nHost: shop.localhost\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let mut answers = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answers))
            .await
            .expect("both answers within 10 s")
            .unwrap();
        assert!(
            answers.starts_with("HTTP/1.1 200") && answers.contains("HTTP/1.1 421"),
            "{answers}"
        );
    }
    let status = berth_in(&home, data.path(), &["status", "--app", "shop"])
        .run()
        .await
        .success()
        .stdout;
    assert!(status.contains("Tunnel:  connected to"), "{status}");

    // The key stays at home: the relay's memory never held it.
    let scalar = private_scalar(&data.path().join("tls/certs/shop.example.org.key"));
    let relay_pid = relay.id().unwrap();
    assert!(
        !memory_holds(relay_pid, &scalar),
        "the relay holds the home's private key"
    );

    // The relay restarts: the tunnel is back within 5 s.
    relay.kill().await.unwrap();
    let _ = relay.wait().await;
    let mut relay = start_relay(&internet, relay_dir.path());
    let restarted = Instant::now();
    let back = loop {
        if let Some((200, _)) = https_through(relay_https, "shop.example.org", "/", &ca_root).await
        {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "the tunnel was not back within 5 s:\n{}",
            std::fs::read_to_string(data.path().join("server.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("tunnel back {back:?} after the relay restarted");

    // A wrong token is refused, and says so.
    let wrong = format!("{}.{}", "0".repeat(64), token.split('.').nth(1).unwrap());
    let other_data = tempfile::tempdir().unwrap();
    let _other = start_home_server(&home, other_data.path(), &wrong, &[]);
    let refused = wait_for_tunnel(&home, other_data.path(), "retrying").await;
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("refused the token"),
        "{refused}"
    );
    // A token the relay's CA did not make pins another relay: no secret is sent.
    let impostor = format!("{}.{}", token.split('.').next().unwrap(), "ab".repeat(32));
    let third_data = tempfile::tempdir().unwrap();
    let _third = start_home_server(&home, third_data.path(), &impostor, &[]);
    let mismatch = wait_for_tunnel(&home, third_data.path(), "retrying").await;
    assert!(
        mismatch["error"]
            .as_str()
            .unwrap_or_default()
            .contains("UnknownIssuer"),
        "{mismatch}"
    );
    relay.kill().await.unwrap();
    drop(pebble);
}
