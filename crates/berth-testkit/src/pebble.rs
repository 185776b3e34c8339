//! Debian's `pebble` (a test ACME CA) and `pebble-challtestsrv` (its DNS,
//! answering every name with 127.0.0.1), on loopback ports, for tests of
//! berth's ACME client. Prepared first (berth must be told the directory
//! before it starts), started once berth's router ports are known (pebble
//! validates HTTP-01 and TLS-ALPN-01 there).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A CA about to start: its ports and its own listener's certificate.
pub struct PebblePlan {
    dir: tempfile::TempDir,
    listen: u16,
    management: u16,
    dns: u16,
    challtest_management: u16,
    /// The ACME directory URL.
    pub directory: String,
    /// The root that signed pebble's own HTTPS certificate (a file).
    pub listener_root: std::path::PathBuf,
    listener_root_pem: String,
    /// How long the certificates it issues last (pebble's default: 5 years).
    pub validity: Option<std::time::Duration>,
    /// The network namespace it runs in (`None`: the test's own).
    netns: Option<String>,
    /// Where it listens: loopback, or every address in its namespace.
    bind: std::net::IpAddr,
    /// Where the test reaches its listeners.
    reach: std::net::IpAddr,
}

/// A running pebble with its DNS.
pub struct Pebble {
    plan: PebblePlan,
    children: Vec<Child>,
}

impl PebblePlan {
    /// Picks ports and makes pebble's HTTPS certificate.
    pub fn new() -> PebblePlan {
        PebblePlan::with_names(&["localhost".to_string()])
    }

    /// A CA in the network namespace `netns` (see [`crate::netns::Host`]):
    /// its ACME directory at `https://DIRECTORY_HOST:PORT/dir`, what the
    /// test reaches at `reach`; its DNS answers every name with the
    /// namespace's own 127.0.0.1.
    pub fn in_namespace(
        netns: &str,
        directory_host: std::net::IpAddr,
        reach: std::net::IpAddr,
    ) -> PebblePlan {
        let mut plan = PebblePlan::with_names(&[
            "localhost".to_string(),
            directory_host.to_string(),
            reach.to_string(),
        ]);
        plan.netns = Some(netns.to_string());
        plan.bind = std::net::Ipv4Addr::UNSPECIFIED.into();
        plan.reach = reach;
        plan.directory = format!("https://{directory_host}:{}/dir", plan.listen);
        plan
    }

    fn with_names(names: &[String]) -> PebblePlan {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = berth_tls::LocalCa::open_or_create(&dir.path().join("ca")).expect("a test CA");
        let (chain, key) = ca.issue_pem_for(names, 30).expect("pebble's certificate");
        std::fs::write(dir.path().join("cert.pem"), chain).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        let [listen, management, dns, challtest_management] = crate::free_ports();
        PebblePlan {
            listen,
            management,
            dns,
            challtest_management,
            directory: format!("https://localhost:{listen}/dir"),
            listener_root: dir.path().join("ca/ca.pem"),
            listener_root_pem: ca.root_pem().to_string(),
            validity: None,
            netns: None,
            bind: std::net::Ipv4Addr::LOCALHOST.into(),
            reach: std::net::Ipv4Addr::LOCALHOST.into(),
            dir,
        }
    }

    /// Starts pebble, validating HTTP-01 at `http_port` and TLS-ALPN-01 at
    /// `tls_port` of the address a name resolves to.
    pub async fn start(mut self, http_port: u16, tls_port: u16) -> Pebble {
        // The management ports only the test uses are picked now, not when
        // the plan was made: a test that starts pebble late (a CA that is
        // down at first) leaves no time for another process to take them.
        [self.management, self.challtest_management] = crate::free_ports();
        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": SocketAddr::new(self.bind, self.listen).to_string(),
                "managementListenAddress": SocketAddr::new(self.bind, self.management).to_string(),
                "certificate": self.dir.path().join("cert.pem"),
                "privateKey": self.dir.path().join("key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        if let Some(validity) = self.validity {
            config["pebble"]["certificateValidityPeriod"] = validity.as_secs().into();
        }
        let config_path = self.dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = |name: &str| {
            std::fs::File::create(self.dir.path().join(name))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null())
        };
        let command = |program: &str| match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, program]);
                command
            }
            None => Command::new(program),
        };
        let challtest = command("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{}", self.dns)])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args([
                "-management",
                &SocketAddr::new(self.bind, self.challtest_management).to_string(),
            ])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("pebble-challtestsrv (Debian's pebble package; .ci/run installs it)");
        let pebble = command("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns)])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble (Debian's pebble package; .ci/run installs it)");
        let running = Pebble {
            plan: self,
            children: vec![challtest, pebble],
        };
        running.wait_for(running.plan.listen).await;
        running.wait_for(running.plan.management).await;
        running.wait_for(running.plan.challtest_management).await;
        running
    }
}

impl Default for PebblePlan {
    fn default() -> Self {
        PebblePlan::new()
    }
}

impl Pebble {
    async fn wait_for(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect((self.plan.reach, port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "pebble did not start:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What pebble and its DNS wrote.
    pub fn log(&self) -> String {
        ["pebble.log", "pebble.err", "challtestsrv.err"]
            .iter()
            .map(|name| {
                std::fs::read_to_string(self.plan.dir.path().join(name)).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The root of the certificates pebble issues (PEM), for a client to trust.
    pub async fn issuing_root(&self) -> String {
        let management = SocketAddr::new(self.plan.reach, self.plan.management);
        let answer = crate::https_get(
            management,
            "localhost",
            "/roots/0",
            &self.plan.listener_root_pem,
        )
        .await
        .expect("pebble's roots");
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body
    }

    /// Revokes the certificate `leaf` (DER) for the ACME account whose
    /// credentials (instant-acme's JSON, as berth keeps them) are
    /// `account_json`: what a CA does when it must replace certificates early.
    pub async fn revoke(&self, account_json: &str, leaf: &[u8]) {
        let credentials: instant_acme::AccountCredentials =
            serde_json::from_str(account_json).expect("account credentials");
        let account = instant_acme::Account::builder_with_root(&self.plan.listener_root)
            .expect("an ACME client")
            .from_credentials(credentials)
            .await
            .expect("the account");
        let certificate = rustls::pki_types::CertificateDer::from(leaf.to_vec());
        account
            .revoke(&instant_acme::RevocationRequest {
                certificate: &certificate,
                reason: None,
            })
            .await
            .expect("revoked");
    }

    /// Makes `name` resolve to `address` in pebble's DNS (instead of 127.0.0.1).
    pub async fn resolve(&self, name: &str, address: &str) {
        let body =
            serde_json::json!({ "host": format!("{name}."), "addresses": [address] }).to_string();
        let answer = crate::http_request(
            SocketAddr::new(self.plan.reach, self.plan.challtest_management),
            "localhost",
            "POST",
            "/add-a",
            &body,
        )
        .await
        .expect("challtestsrv's management");
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
