//! Hosts of a test's own: network namespaces joined to this one by a veth
//! pair on a /30, so a test can play "a VM", "the internet" or "a home
//! network" without any traffic leaving the machine. Needs root.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// A network namespace with an address, reachable from the test's own
/// namespace at [`Host::address`] through [`Host::gateway`].
pub struct Host {
    /// The namespace's name (`ip netns exec NAME …`).
    pub name: String,
    link: String,
    /// The namespace's address.
    pub address: Ipv4Addr,
    /// The address of this side of the link.
    pub gateway: Ipv4Addr,
    /// The namespace the link's other end is in (`None`: the test's).
    outer: Option<String>,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {} failed", args.join(" "));
}

impl Host {
    /// A new namespace; `tag` (0..50) tells a test's hosts apart.
    pub fn new(role: &str, tag: u32) -> Host {
        let pid = std::process::id();
        let name = format!("berth-{role}-{pid}-{tag}");
        let link = format!("bh{}{tag}", pid % 100_000);
        let subnet = (pid * 7 + tag) % 16_000;
        let (third, fourth) = (subnet / 62, (subnet % 62) * 4);
        let gateway = Ipv4Addr::new(10, 236, third as u8, fourth as u8 + 1);
        let address = Ipv4Addr::new(10, 236, third as u8, fourth as u8 + 2);
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        ip(&["addr", "add", &format!("{gateway}/30"), "dev", &link]);
        ip(&["link", "set", &link, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{address}/30"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Host {
            name,
            link,
            address,
            gateway,
            outer: None,
        }
    }

    /// A namespace whose only link goes to `outer`'s namespace (a home
    /// network behind a router): reachable from there at
    /// [`Host::address`], where it reaches `outer` at [`Host::gateway`].
    pub fn behind(outer: &Host, role: &str, tag: u32) -> Host {
        let pid = std::process::id();
        let name = format!("berth-{role}-{pid}-{tag}");
        let link = format!("bh{}{tag}", pid % 100_000);
        let subnet = (pid * 7 + tag) % 16_000;
        let (third, fourth) = (subnet / 62, (subnet % 62) * 4);
        let gateway = Ipv4Addr::new(10, 237, third as u8, fourth as u8 + 1);
        let address = Ipv4Addr::new(10, 237, third as u8, fourth as u8 + 2);
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        ip(&[
            "link",
            "add",
            &link,
            "netns",
            &outer.name,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &name,
        ]);
        ip(&[
            "-n",
            &outer.name,
            "addr",
            "add",
            &format!("{gateway}/30"),
            "dev",
            &link,
        ]);
        ip(&["-n", &outer.name, "link", "set", &link, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{address}/30"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Host {
            name,
            link,
            address,
            gateway,
            outer: Some(outer.name.clone()),
        }
    }

    /// `program` to run inside the namespace.
    pub fn command(&self, program: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // (Deleting the namespace deletes a link to another namespace.)
        if self.outer.is_none() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.link])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
