//! End to end, as root: each app's instances run as its own user, in their
//! own mount and IPC namespaces with a private /tmp, inside a cgroup with
//! their `[[vm]]` memory limit. Skipped (with a note) when not root.

use std::time::Duration;

use crate::support::{deploy_plain, wait_metered_egress};
use berth_testkit::{TestServer, example};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

async fn slug_of(server: &TestServer, app: &str) -> std::path::PathBuf {
    let (_, releases) = server.api_get(&format!("/v1/apps/{app}/releases")).await;
    let slug = releases[0]["slug"].as_str().unwrap().to_string();
    server.data_dir().join("slugs").join(slug)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn apps_run_as_their_own_users_and_cannot_read_each_others_files() {
    setup();
    assert!(berth_runtime::can_isolate(), "isolation needs root");
    let server = TestServer::start().await;
    deploy_plain(&server, "alpha", "[[vm]]\nmemory = \"64mb\"\n").await;
    deploy_plain(
        &server,
        "beta",
        "[[mounts]]\nsource = \"data\"\ndestination = \"/srv/berth-test-beta\"\n",
    )
    .await;

    // Each instance has a pid namespace: the app is pid 2 under a small init.
    let stat = server.get("alpha", "/read?path=/proc/self/stat").await.body;
    assert!(stat.starts_with("2 ("), "{stat}");
    let init = server.get("alpha", "/read?path=/proc/1/stat").await;
    assert_eq!(init.status, 200, "{}", init.body);
    let beta_pid = server.status("beta").await["instances"][0]["pid"]
        .as_u64()
        .unwrap();
    let hidden = server
        .get("alpha", &format!("/read?path=/proc/{beta_pid}/stat"))
        .await;
    assert_eq!(
        hidden.status, 403,
        "beta's process is not in alpha's /proc: {}",
        hidden.body
    );
    let alpha_uid: u32 = server.get("alpha", "/whoami").await.body.parse().unwrap();
    let beta_uid: u32 = server.get("beta", "/whoami").await.body.parse().unwrap();
    assert!(alpha_uid >= 200_000 && beta_uid >= 200_000);
    // A second server on this machine never gives its app the same id,
    // and a destroyed app's id is not handed out again.
    let second = TestServer::start().await;
    deploy_plain(&second, "alpha", "").await;
    let other_alpha: u32 = second.get("alpha", "/whoami").await.body.parse().unwrap();
    assert!(
        other_alpha != alpha_uid && other_alpha != beta_uid,
        "two servers gave out {other_alpha}"
    );
    second.ok(&["apps", "destroy", "alpha", "--yes"]).await;
    deploy_plain(&second, "gamma", "").await;
    let gamma: u32 = second.get("gamma", "/whoami").await.body.parse().unwrap();
    assert!(
        gamma > other_alpha,
        "{gamma} after {other_alpha} was destroyed"
    );
    drop(second);
    assert_ne!(alpha_uid, beta_uid);

    // Beta reads its own slug; alpha cannot, even a world-readable file in it.
    let beta_slug = slug_of(&server, "beta").await;
    let own = server.get("beta", "/read?path=Cargo.toml").await;
    assert_eq!(own.status, 200, "{}", own.body);
    let cargo_toml = beta_slug.join("Cargo.toml");
    let denied = server
        .get("alpha", &format!("/read?path={}", cargo_toml.display()))
        .await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    // Under a test's data dir in /tmp, alpha's private /tmp hides the path
    // outright; elsewhere (/var/lib/berth) the modes below refuse it.
    assert!(
        denied.body.contains("Permission denied") || denied.body.contains("No such file"),
        "{}",
        denied.body
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&beta_slug).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (beta_uid, 0o700));
    let meta = std::fs::metadata(server.data_dir().join("volumes/beta/data")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (beta_uid, 0o700));
    // Its parent stays berth's, so beta cannot swap the volume for a link.
    let meta = std::fs::metadata(server.data_dir().join("volumes/beta")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o711));
    // Nothing in the data dir is readable by an app: the store, the logs.
    for file in ["berth.db", "logs.db", "secrets.key", "token"] {
        let meta = std::fs::metadata(server.data_dir().join(file)).unwrap();
        assert_eq!(meta.mode() & 0o077, 0, "{file} is open to others");
    }

    // Nor beta's volume, nor another user's environment.
    let note = server.data_dir().join("volumes/beta/data/note.txt");
    std::fs::write(&note, "beta's note").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&note, std::fs::Permissions::from_mode(0o644)).unwrap();
    let denied = server
        .get("alpha", &format!("/read?path={}", note.display()))
        .await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    let beta_read = server
        .get("beta", "/read?path=/srv/berth-test-beta/note.txt")
        .await;
    assert_eq!(beta_read.body, "beta's note");
    // Beta's processes are not even in alpha's /proc (checked above); the
    // one process of another user alpha can see, its namespace's init (root),
    // keeps its environment closed.
    let denied = server.get("alpha", "/read?path=/proc/1/environ").await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    let own = server.get("alpha", "/read?path=/proc/self/environ").await;
    assert!(own.body.contains("BERTH_APP=alpha"), "{}", own.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn an_instance_past_its_memory_is_killed_restarted_and_the_event_says_out_of_memory() {
    setup();
    assert!(
        berth_runtime::can_isolate(),
        "memory limits need root and cgroups"
    );
    let server = TestServer::start().await;
    deploy_plain(&server, "hungry", "[[vm]]\nmemory = \"64mb\"\n").await;
    assert_eq!(
        server.get("hungry", "/alloc?mb=16").await.body,
        "allocated 16 MiB"
    );
    let first = server.status("hungry").await["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let killed = server.get("hungry", "/alloc?mb=200").await;
    assert_ne!(killed.status, 200, "{}", killed.body);
    let status = server
        .wait_for_status("hungry", Duration::from_secs(20), |status| {
            status["instances"]
                .as_array()
                .unwrap()
                .iter()
                .any(|instance| instance["id"] != first.as_str() && instance["state"] == "running")
        })
        .await;
    assert_eq!(status["processes"][0]["running"], 1);
    let events = server.ok(&["events", "--app", "hungry"]).await.stdout;
    assert!(
        events.contains("out of memory: killed by the kernel over its 64 MiB limit"),
        "{events}"
    );
    assert_eq!(server.get("hungry", "/").await.status, 200);
}

/// The listening ports in /proc/net/tcp text (local address column, state 0A).
fn listening_ports(proc_net_tcp: &str) -> Vec<u16> {
    proc_net_tcp
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(3) == Some(&"0A"))
                .then(|| fields.get(1)?.rsplit_once(':'))
                .flatten()
                .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn fixed_port_apps_run_several_instances_each_in_its_own_network_namespace() {
    setup();
    assert!(berth_runtime::can_isolate(), "network namespaces need root");
    let server = TestServer::start().await;
    // Something on the host's loopback that no instance may see.
    let host_only = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host_only.local_addr().unwrap().port();

    // examples/todo on a fixed port, with its database and Redis: three
    // instances on the same port, each reaching the services through berth's
    // bridges.
    let todo = example("todo");
    let spec = std::fs::read_to_string(todo.path().join("berth.toml"))
        .unwrap()
        .replace("[http_service]", "[http_service]\ninternal_port = 3919");
    std::fs::write(todo.path().join("berth.toml"), spec).unwrap();
    let out = server.ok_in(todo.path(), &["up"]).await.stderr;
    assert!(out.contains("migrated: table todos is ready"), "{out}");
    server.ok(&["scale", "web=3", "--app", "todo"]).await;
    let status = server
        .wait_for_status("todo", Duration::from_secs(30), |status| {
            status["instances"]
                .as_array()
                .is_some_and(|all| all.iter().filter(|i| i["healthy"] == true).count() == 3)
        })
        .await;
    let ports: Vec<u64> = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|instance| instance["port"].as_u64())
        .collect();
    assert_eq!(ports, [3919, 3919, 3919], "{status}");
    let mut seen = std::collections::HashSet::new();
    for n in 0..30 {
        let added = server
            .request("todo", "POST", "/todos", &format!("item {n}"))
            .await;
        assert_eq!(added.status, 201, "{}", added.body);
        assert_eq!(
            server.request("todo", "POST", "/count", "").await.status,
            200
        );
        seen.insert(server.get("todo", "/env/BERTH_INSTANCE").await.body);
    }
    assert_eq!(
        seen.len(),
        3,
        "requests reach all three instances: {seen:?}"
    );
    let listed = server.get("todo", "/todos").await.body;
    assert_eq!(listed.lines().count(), 30, "{listed}");

    // Inside an instance's namespace: its own port and berth's bridges, not
    // the host's other listeners.
    deploy_plain(
        &server,
        "plainfixed",
        "[http_service]\ninternal_port = 3919\n",
    )
    .await;
    let tcp = server
        .get("plainfixed", "/read?path=/proc/net/tcp")
        .await
        .body;
    let inside = listening_ports(&tcp);
    assert!(inside.contains(&3919), "{inside:?}");
    assert!(!inside.contains(&host_port), "{inside:?}");
    let api_port: u16 = server.api_url.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(
        !inside.contains(&api_port),
        "berth's API is not bridged in (only a Shuttle project's is): {inside:?}"
    );
    // A redeploy of a fixed-port app starts the new instance beside the old.
    server.ok_in(todo.path(), &["deploy"]).await;
    assert_eq!(server.get("todo", "/todos").await.body.lines().count(), 30);
    drop(host_only);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn an_instance_in_its_namespace_reaches_the_outside_through_the_egress_proxy() {
    setup();
    assert!(berth_runtime::can_isolate(), "network namespaces need root");
    // "Outside" is a host of the test's own, in a namespace linked to
    // this one: the proxy opens it from the host, as it would the world.
    let outside = OutsideHost::start(2);
    let server =
        TestServer::start_with_env(&["--meter-interval", "2s"], &[("BERTH_EGRESS", "proxy")]).await;
    deploy_plain(&server, "egress", "[http_service]\ninternal_port = 3920\n").await;
    // What the instance sends out through the proxy is its metered egress:
    // a request with a 6000-byte path (the outside answers 404), and
    // neither the proxy's answer nor the router's traffic.
    let padded = format!("/{}", "p".repeat(6000));
    let missing = server
        .get(
            "egress",
            &format!("/fetch?addr={}:8000&path={padded}", outside.address),
        )
        .await
        .body;
    assert!(missing.starts_with("HTTP/1.0 404"), "{missing}");
    let egress = wait_metered_egress(&server, "egress", 6000).await;
    assert!(egress < 8000, "metered {egress} bytes of egress");
    let fetched = server
        .get(
            "egress",
            &format!("/fetch?addr={}:8000&path=/hello.txt", outside.address),
        )
        .await
        .body;
    assert!(fetched.starts_with("HTTP/1.0 200"), "{fetched}");
    // The proxy turned the absolute-form request into an origin-form one
    // (the outside server finds no file named by a whole URL).
    assert!(fetched.contains("hello from outside"), "{fetched}");
    // The LAN and the cloud's metadata service are closed too.
    // (The proxy refuses before it connects: no metadata host is needed.)
    let lan = OutsideHost::on(Where::Lan, 3);
    for closed in [format!("{}:8000", lan.address), "169.254.169.254:80".into()] {
        let refused = server
            .get("egress", &format!("/fetch?addr={closed}&path=/hello.txt"))
            .await
            .body;
        assert!(refused.starts_with("HTTP/1.1 403"), "{closed}: {refused}");
    }
    // The host itself stays closed to the instance, through the proxy too.
    let host_port: u16 = server.api_url.rsplit_once(':').unwrap().1.parse().unwrap();
    let refused = server
        .get(
            "egress",
            &format!("/fetch?addr=127.0.0.1:{host_port}&path=/v1/health"),
        )
        .await
        .body;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
}

/// A host of the test's own outside this machine's instances: a network
/// namespace with a veth link to the host serving `hello.txt` over HTTP on
/// port 8000. On "the internet" it has a public address (`198.51.100.N+2`,
/// from the documentation range, the host side `N+1`); on "the LAN" a
/// private one (`10.234.N.2`), which instances may reach only when their
/// app allows it. Removed on drop. Tests running side by side give
/// different `tag`s.
struct OutsideHost {
    _host: berth_testkit::netns::Host,
    server: std::process::Child,
    address: std::net::Ipv4Addr,
    gateway: std::net::Ipv4Addr,
    _files: tempfile::TempDir,
}

#[derive(Clone, Copy)]
enum Where {
    Internet,
    Lan,
    /// Where clouds answer with a machine's credentials, 169.254.169.254
    /// (here a namespace of the test's, so nothing leaves this machine).
    Metadata,
}

impl OutsideHost {
    fn start(tag: u32) -> OutsideHost {
        OutsideHost::on(Where::Internet, tag)
    }

    fn on(place: Where, tag: u32) -> OutsideHost {
        let n = std::process::id() + 97 * tag;
        let (gateway, address) = match place {
            Where::Internet => {
                let base = (n % 64) * 4;
                (
                    format!("198.51.100.{}", base + 1),
                    format!("198.51.100.{}", base + 2),
                )
            }
            Where::Lan => (
                format!("10.234.{}.1", n % 250),
                format!("10.234.{}.2", n % 250),
            ),
            Where::Metadata => ("169.254.169.253".into(), "169.254.169.254".into()),
        };
        let gateway: std::net::Ipv4Addr = gateway.parse().unwrap();
        let address: std::net::Ipv4Addr = address.parse().unwrap();
        let host = berth_testkit::netns::Host::with_addresses("outside", None, gateway, address);
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("hello.txt"), "hello from outside\n").unwrap();
        let server = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &host.name,
                "python3",
                "-m",
                "http.server",
                "8000",
            ])
            .args(["--bind", &address.to_string(), "--directory"])
            .arg(files.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let outside = OutsideHost {
            _host: host,
            server,
            address,
            gateway,
            _files: files,
        };
        let addr = std::net::SocketAddr::from((outside.address, 8000));
        let listening = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(25));
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(listening, "the outside host never listened on {addr}");
        outside
    }
}

/// An outside host (see [`OutsideHost`]) for a test of direct egress,
/// which needs root and nftables.
fn outside_for_direct_egress(tag: u32) -> OutsideHost {
    outside_for_direct_egress_on(Where::Internet, tag)
}

fn outside_for_direct_egress_on(place: Where, tag: u32) -> OutsideHost {
    assert!(berth_runtime::can_isolate(), "network namespaces need root");
    assert!(
        std::path::Path::new("/usr/sbin/nft").exists(),
        "direct egress needs nftables (.ci/run installs it)"
    );
    OutsideHost::on(place, tag)
}

impl Drop for OutsideHost {
    fn drop(&mut self) {
        // (Then `_host` goes, and its namespace with it.)
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn every_instance_has_its_own_network_and_reaches_the_outside_directly_but_not_the_host() {
    setup();
    let outside = outside_for_direct_egress(0);
    // Listeners on the host that no instance may reach: on its loopback,
    // and on every address (the test itself reaches it through the
    // outside host's link, so the refusal below is not a dead address).
    let host_loopback = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let loopback_port = host_loopback.local_addr().unwrap().port();
    let host_any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let any_port = host_any.local_addr().unwrap().port();
    // Each connection that gets through is answered (and so fails the
    // test at once rather than hang it).
    let answering = host_any.try_clone().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in answering.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.read(&mut [0u8; 1024]);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nhost");
        }
    });
    assert!(
        std::net::TcpStream::connect((outside.gateway, any_port)).is_ok(),
        "the host listens on {}:{any_port}",
        outside.gateway
    );

    let server = TestServer::start_with(&["--meter-interval", "2s"]).await;
    // An app on $PORT (no internal_port), with its PostgreSQL.
    deploy_plain(&server, "direct", "[resources]\npostgres = true\n").await;
    // What it sends out of its namespace is its metered egress: a request
    // with a 6000-byte path to the outside (which answers 404).
    let padded = format!("/{}", "p".repeat(6000));
    let missing = server
        .get(
            "direct",
            &format!(
                "/fetch?addr={}:8000&path={padded}&direct=1",
                outside.address
            ),
        )
        .await;
    assert!(missing.body.starts_with("HTTP/1.0 404"), "{}", missing.body);
    // The request and its packets' headers; not twice over.
    let egress = wait_metered_egress(&server, "direct", 6000).await;
    assert!(egress < 12_000, "metered {egress} bytes of egress");

    // The outside, with a client that knows nothing of proxies.
    let fetched = server
        .get(
            "direct",
            &format!(
                "/fetch?addr={}:8000&path=/hello.txt&direct=1",
                outside.address
            ),
        )
        .await;
    assert_eq!(fetched.status, 200, "{}", fetched.body);
    assert!(fetched.body.starts_with("HTTP/1.0 200"), "{}", fetched.body);
    assert!(
        fetched.body.contains("hello from outside"),
        "{}",
        fetched.body
    );
    // No proxy is set up in this mode: the instance is on a network.
    let env = server
        .get("direct", "/read?path=/proc/self/environ")
        .await
        .body;
    assert!(!env.contains("http_proxy="), "{env}");

    // The host: refused at once on its addresses, and its loopback is not
    // the instance's.
    let refused = server
        .get(
            "direct",
            &format!("/fetch?addr={}:{any_port}&path=/&direct=1", outside.gateway),
        )
        .await;
    assert_eq!(refused.status, 502, "{}", refused.body);
    let route = server
        .get("direct", "/read?path=/proc/net/route")
        .await
        .body;
    let gateway_hex = route
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&"00000000")).then(|| fields[2].to_string())
        })
        .unwrap_or_else(|| panic!("no default route inside: {route}"));
    let own_gateway =
        std::net::Ipv4Addr::from(u32::from_be(u32::from_str_radix(&gateway_hex, 16).unwrap()));
    assert_eq!(own_gateway.octets()[..2], [10, 233], "{route}");
    let refused = server
        .get(
            "direct",
            &format!("/fetch?addr={own_gateway}:{any_port}&path=/&direct=1"),
        )
        .await;
    assert_eq!(refused.status, 502, "{}", refused.body);
    let tcp = server.get("direct", "/read?path=/proc/net/tcp").await.body;
    let inside = listening_ports(&tcp);
    assert!(!inside.contains(&loopback_port), "{inside:?}");
    assert!(!inside.contains(&any_port), "{inside:?}");
    // Nor is berth's API bridged in: only a Shuttle project talks to berth.
    let api_port: u16 = server.api_url.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(!inside.contains(&api_port), "{inside:?}");
    let refused = server
        .get(
            "direct",
            &format!("/fetch?addr=127.0.0.1:{loopback_port}&path=/&direct=1"),
        )
        .await;
    assert_eq!(refused.status, 502, "{}", refused.body);
    // Its database, bridged in at the address its env names.
    let pg_port: u16 = env
        .split('\0')
        .find_map(|var| var.strip_prefix("DATABASE_URL="))
        .and_then(|url| url.rsplit_once('@'))
        .and_then(|(_, at)| at.split('/').next()?.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no DATABASE_URL port in {env}"));
    assert!(
        inside.contains(&pg_port),
        "PostgreSQL is bridged in: {inside:?}"
    );

    // The LAN and the cloud's metadata service are closed by default...
    let lan = outside_for_direct_egress_on(Where::Lan, 4);
    let metadata = outside_for_direct_egress_on(Where::Metadata, 6);
    for closed in [lan.address, metadata.address].map(|address| format!("{address}:8000")) {
        let refused = server
            .get(
                "direct",
                &format!("/fetch?addr={closed}&path=/hello.txt&direct=1"),
            )
            .await;
        assert_eq!(refused.status, 502, "{closed}: {}", refused.body);
    }
    // ...and a range the app allows opens, and only that one.
    deploy_plain(
        &server,
        "direct",
        "[resources]\npostgres = true\n[egress]\nallow = [\"10.234.0.0/16\"]\n",
    )
    .await;
    // The old release's instance may answer a request or two while the
    // route table moves to the new one (under load, a pass later).
    let path = format!("/fetch?addr={}:8000&path=/hello.txt&direct=1", lan.address);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let fetched = loop {
        let fetched = server.get("direct", &path).await;
        if fetched.status == 200 || std::time::Instant::now() > deadline {
            break fetched;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(fetched.status, 200, "{}", fetched.body);
    assert!(
        fetched.body.contains("hello from outside"),
        "{}",
        fetched.body
    );
    let refused = server
        .get(
            "direct",
            &format!("/fetch?addr={}:8000&path=/&direct=1", metadata.address),
        )
        .await;
    assert_eq!(refused.status, 502, "{}", refused.body);
    drop(host_loopback);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_command_cannot_run_fails_and_the_old_one_keeps_serving() {
    setup();
    // As root this goes through the spawner; the exec's failure must come
    // back as the deploy's, not as a silent crash loop.
    let server = TestServer::start().await;
    let dir = deploy_plain(&server, "badcmd", "").await;
    assert_eq!(server.get("badcmd", "/").await.status, 200);
    std::fs::write(
        dir.path().join("berth.toml"),
        "app = \"badcmd\"\n[processes]\nweb = \"no-such-program --port 1\"\n",
    )
    .unwrap();
    let out = server.fails_in(dir.path(), &["deploy"]).await;
    assert!(
        out.stderr.contains("no-such-program"),
        "the deploy names the command: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("No such file or directory"),
        "and why it could not start: {}",
        out.stderr
    );
    let answer = server.get("badcmd", "/").await;
    assert_eq!(answer.status, 200, "v1 still serves: {}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn instances_still_start_when_the_spawner_is_gone() {
    setup();
    assert!(
        berth_runtime::can_isolate(),
        "the spawner runs as root only"
    );
    let server = TestServer::start().await;
    deploy_plain(&server, "nospawner", "").await;
    // The server's spawner: its child named berth-spawner.
    let children = std::fs::read_to_string(format!(
        "/proc/{pid}/task/{pid}/children",
        pid = server.pid()
    ))
    .unwrap();
    let spawner: Vec<u32> = children
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/comm"))
                .is_ok_and(|name| name.trim() == "berth-spawner")
        })
        .collect();
    assert_eq!(spawner.len(), 1, "one spawner among {children}");
    // It made a standby, which outlives it.
    let (standby, _) = wait_for_standby(&server, None).await;
    let killed = std::process::Command::new("kill")
        .args(["-9", &spawner[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // New instances still start, sandboxed: the first from the standby the
    // spawner made before it died, the next forked from the server.
    server.ok(&["scale", "web=3", "--app", "nospawner"]).await;
    server
        .wait_for_status("nospawner", Duration::from_secs(30), |status| {
            status["instances"]
                .as_array()
                .is_some_and(|all| all.iter().filter(|i| i["healthy"] == true).count() == 3)
        })
        .await;
    let status = server.status("nospawner").await;
    assert!(
        status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|instance| instance["pid"].as_u64() == Some(u64::from(standby))),
        "the standby became one: {status:#}"
    );
    // The start that found it dead forked instead: no start failed.
    let events = server.ok(&["events", "--app", "nospawner"]).await.stdout;
    assert!(!events.contains("cannot start"), "{events}");
    for _ in 0..4 {
        let whoami = server.get("nospawner", "/whoami").await;
        assert_eq!(whoami.status, 200);
        assert_ne!(whoami.body.trim(), "0", "still the app's own user");
    }
}

/// The parent of process `pid`, from /proc.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces, so from the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The single child of process `pid`.
fn only_child_of(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    let mut children = children
        .split_whitespace()
        .filter_map(|child| child.parse().ok());
    let child = children.next()?;
    children.next().is_none().then_some(child)
}

/// The server's standby, if it has one: the pid of its waiting process
/// (the server's child) and of its pid 2 (named berth-standby).
fn standby_of(server: u32) -> Option<(u32, u32)> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|name| name.trim() == "berth-standby")
        })
        .find_map(|standby| {
            let wait = parent_of(parent_of(standby)?)?;
            (parent_of(wait)? == server).then_some((wait, standby))
        })
}

async fn wait_for_standby(server: &TestServer, not: Option<u32>) -> (u32, u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = standby_of(server.pid()).filter(|found| Some(found.0) != not) {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server keeps no standby"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_cold_start_takes_the_standby_which_is_sandboxed_like_any_instance() {
    setup();
    assert!(
        berth_runtime::can_isolate(),
        "the standby is the spawner's, which runs as root only"
    );
    let server = TestServer::start().await;
    deploy_plain(
        &server,
        "standby",
        "[http_service]\nauto_stop_machines = true\nmin_machines_running = 0\n\
         idle_timeout = \"1s\"\n[[vm]]\nmemory = \"64mb\"\n\
         [[mounts]]\nsource = \"data\"\ndestination = \"/srv/berth-test-standby\"\n",
    )
    .await;
    server
        .wait_for_status("standby", Duration::from_secs(20), |status| {
            status["instances"].as_array().is_some_and(Vec::is_empty)
        })
        .await;
    let (wait, standby) = wait_for_standby(&server, None).await;
    // What only this instance should see: a file in its volume; what it
    // must not: a file in the host's /tmp.
    let volume = server.data_dir().join("volumes/standby/data");
    std::fs::write(volume.join("note.txt"), "in the volume").unwrap();
    let host_tmp = tempfile::NamedTempFile::new_in("/tmp").unwrap();

    // The request that wakes the app is served by the standby turned instance.
    let whoami = server.get("standby", "/whoami").await;
    assert_eq!(whoami.status, 200, "{}", whoami.body);
    let uid: u32 = whoami.body.trim().parse().unwrap();
    assert!(uid >= 200_000, "the app's own user, not {uid}");
    let status = server.status("standby").await;
    let instance = &status["instances"][0];
    assert_eq!(
        instance["pid"].as_u64(),
        Some(u64::from(wait)),
        "the standby became the instance: {status:#}"
    );
    assert_eq!(only_child_of(parent_of(standby).unwrap()), Some(standby));
    let stat = server
        .get("standby", "/read?path=/proc/self/stat")
        .await
        .body;
    assert!(
        stat.starts_with("2 ("),
        "pid 2 of its own namespace: {stat}"
    );
    let note = server
        .get("standby", "/read?path=/srv/berth-test-standby/note.txt")
        .await;
    assert_eq!(
        (note.status, note.body.as_str()),
        (200, "in the volume"),
        "its volume is mounted"
    );
    let hidden = server
        .get(
            "standby",
            &format!("/read?path={}", host_tmp.path().display()),
        )
        .await;
    assert_eq!(hidden.status, 403, "its /tmp is its own: {}", hidden.body);
    // From the host: its cgroup (with the 64 MiB limit) and a network
    // namespace of its own.
    let id = instance["id"].as_str().unwrap();
    let cgroups = std::fs::read_to_string(format!("/proc/{standby}/cgroup")).unwrap();
    let memory = cgroups
        .lines()
        .find(|line| line.contains("memory"))
        .unwrap_or_else(|| panic!("no memory cgroup: {cgroups}"));
    assert!(memory.contains(id), "in its instance's cgroup: {memory}");
    // With its 64 MiB: the standby's cgroup took this app's limits.
    let path = memory.splitn(3, ':').nth(2).unwrap();
    let limit = ["memory/", ""]
        .iter()
        .zip(["memory.limit_in_bytes", "memory.max"])
        .find_map(|(hierarchy, file)| {
            std::fs::read_to_string(format!("/sys/fs/cgroup/{hierarchy}{path}/{file}")).ok()
        })
        .unwrap_or_default();
    assert_eq!(limit.trim(), (64 * 1024 * 1024).to_string(), "{memory}");
    let net = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(net(standby), net(std::process::id()), "its own network");

    // Another standby is made for the next cold start.
    let (next, _) = wait_for_standby(&server, Some(wait)).await;
    assert_ne!(next, wait);
}

/// A DNS server of the test's own on the host's loopback: it answers `name`
/// (A) with `address`, other names with NXDOMAIN, and counts the queries.
struct DnsServer {
    queries: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl DnsServer {
    fn start(at: std::net::SocketAddr, name: &str, address: std::net::Ipv4Addr) -> DnsServer {
        use std::sync::atomic::Ordering;
        let socket = std::net::UdpSocket::bind(at).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let queries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (counted, stopped, name) = (queries.clone(), stop.clone(), name.to_string());
        std::thread::spawn(move || {
            let mut query = [0u8; 512];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((length, client)) = socket.recv_from(&mut query) else {
                    continue;
                };
                counted.fetch_add(1, Ordering::Relaxed);
                if let Some(answer) = dns_answer(&query[..length], &name, address) {
                    let _ = socket.send_to(&answer, client);
                }
            }
        });
        DnsServer { queries, stop }
    }

    fn queries(&self) -> usize {
        self.queries.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The answer to one DNS query: `address` for an A query of `name`, no
/// record for its other types, NXDOMAIN for other names.
fn dns_answer(query: &[u8], name: &str, address: std::net::Ipv4Addr) -> Option<Vec<u8>> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let length = *query.get(at)? as usize;
        at += 1;
        if length == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + length)?).to_lowercase());
        at += length;
    }
    let question_end = at + 4;
    let kind = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let known = labels.join(".") == name;
    let answers = u16::from(known && kind == 1);
    let mut answer = query.get(..2)?.to_vec();
    answer.extend(if known { [0x81, 0x80] } else { [0x81, 0x83] });
    answer.extend([0, 1]);
    answer.extend(answers.to_be_bytes());
    answer.extend([0, 0, 0, 0]);
    answer.extend(query.get(12..question_end)?);
    if answers == 1 {
        // A pointer to the question's name, A, IN, a minute, four bytes.
        answer.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        answer.extend(address.octets());
    }
    Some(answer)
}

/// A server whose instances get `nameserver` (with a short timeout) as
/// their resolver (`BERTH_RESOLV_CONF`), and `app` (the plain example)
/// deployed on it. The folder holds the resolv.conf given.
async fn server_with_resolver(nameserver: &str, app: &str) -> (TestServer, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let resolv_conf = files.path().join("resolv.conf");
    std::fs::write(
        &resolv_conf,
        format!("nameserver {nameserver}\noptions timeout:2 attempts:2\n"),
    )
    .unwrap();
    let server =
        TestServer::start_with_env(&[], &[("BERTH_RESOLV_CONF", resolv_conf.to_str().unwrap())])
            .await;
    deploy_plain(&server, app, "").await;
    (server, files)
}

/// `app` reaches the outside host by the name the test's resolver gives.
async fn fetches_outside_by_name(server: &TestServer, app: &str) {
    let fetched = server
        .get(
            app,
            "/fetch?addr=outside.berth.test:8000&path=/hello.txt&direct=1",
        )
        .await;
    assert_eq!(fetched.status, 200, "{}", fetched.body);
    assert!(
        fetched.body.contains("hello from outside"),
        "{}",
        fetched.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn an_instance_resolves_names_through_a_resolver_on_the_hosts_loopback() {
    setup();
    let outside = outside_for_direct_egress(1);
    // A resolver on the host's loopback, as systemd-resolved's 127.0.0.53
    // is, which an instance's own loopback does not have.
    let resolver: std::net::SocketAddr = "127.0.0.153:53".parse().unwrap();
    let dns = DnsServer::start(resolver, "outside.berth.test", outside.address);
    let (server, _files) = server_with_resolver("127.0.0.153", "resolving").await;
    let seen = server
        .get("resolving", "/read?path=/etc/resolv.conf")
        .await
        .body;
    assert!(seen.contains("nameserver 127.0.0.153"), "{seen}");
    fetches_outside_by_name(&server, "resolving").await;
    assert!(dns.queries() > 0, "the query reached the host's resolver");
    // A name the resolver does not know fails at once, as it would anywhere.
    let unknown = server
        .get(
            "resolving",
            "/fetch?addr=nowhere.berth.test:8000&path=/&direct=1",
        )
        .await;
    assert_eq!(unknown.status, 502, "{}", unknown.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn an_instance_resolves_names_through_a_resolver_on_a_private_address() {
    setup();
    // A cloud VPC's resolver (10.0.0.2) or a home router's: on a private
    // address, which instances may not reach themselves.
    let outside = outside_for_direct_egress(3);
    let lan = outside_for_direct_egress_on(Where::Lan, 4);
    let resolver = std::net::SocketAddr::from((lan.gateway, 53));
    let dns = DnsServer::start(resolver, "outside.berth.test", outside.address);
    let (server, _files) = server_with_resolver(&lan.gateway.to_string(), "resolving-lan").await;
    let seen = server
        .get("resolving-lan", "/read?path=/etc/resolv.conf")
        .await
        .body;
    assert!(seen.contains("nameserver 127.0.53.1"), "{seen}");
    assert!(seen.contains("options timeout:2"), "{seen}");
    fetches_outside_by_name(&server, "resolving-lan").await;
    assert!(dns.queries() > 0, "the query reached the private resolver");
    // The resolver's address itself stays out of reach, as the LAN is.
    let direct = server
        .get(
            "resolving-lan",
            &format!("/fetch?addr={}:53&path=/&direct=1", lan.gateway),
        )
        .await;
    assert_eq!(direct.status, 502, "{}", direct.body);
}

#[test]
#[ignore = "needs root"]
fn a_missing_resolv_conf_is_a_clear_error_at_start() {
    assert!(
        berth_runtime::can_isolate(),
        "resolvers are read for network namespaces, as root"
    );
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["server", "--api", "127.0.0.1:0", "--router", "127.0.0.1:0"])
        .env("BERTH_DATA", data.path())
        .env("BERTH_RESOLV_CONF", "/nonexistent/resolv.conf")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "the server must not start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("BERTH_RESOLV_CONF=/nonexistent/resolv.conf")
            && stderr.contains("No such file"),
        "{stderr}"
    );
}
