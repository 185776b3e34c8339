//! Hosts of a test's own: network namespaces joined to another namespace
//! (the test's, or another host's) by a veth pair on a /30, so a test can
//! play "a VM", "the internet" or "a home network" without any traffic
//! leaving the machine. Needs root.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// A network namespace with an address, reachable from the namespace its
/// link goes to at [`Host::address`], and reaching it at [`Host::gateway`].
pub struct Host {
    /// The namespace's name (`ip netns exec NAME …`).
    pub name: String,
    link: String,
    /// The namespace's address.
    pub address: Ipv4Addr,
    /// The address of the other side of the link.
    pub gateway: Ipv4Addr,
    /// The namespace the link's other end is in (`None`: the test's).
    outer: Option<String>,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {} failed", args.join(" "));
}

/// A number no other host of this process has: tests run side by side in
/// one process.
fn next_index() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A /30 of `10.SECOND.0.0/16` for host `index`: (gateway, address).
fn subnet(second: u8, index: u32) -> (Ipv4Addr, Ipv4Addr) {
    let subnet = (std::process::id() * 7 + index) % 16_000;
    let (third, fourth) = ((subnet / 62) as u8, (subnet % 62) as u8 * 4);
    (
        Ipv4Addr::new(10, second, third, fourth + 1),
        Ipv4Addr::new(10, second, third, fourth + 2),
    )
}

impl Host {
    /// A new namespace linked to the test's.
    pub fn new(role: &str) -> Host {
        let index = next_index();
        let (gateway, address) = subnet(236, index);
        Host::with_addresses(role, None, gateway, address)
    }

    /// A namespace whose only link goes to `outer`'s namespace (a home
    /// network behind a router): reachable from there at
    /// [`Host::address`], where it reaches `outer` at [`Host::gateway`].
    pub fn behind(outer: &Host, role: &str) -> Host {
        let index = next_index();
        let (gateway, address) = subnet(237, index);
        Host::with_addresses(role, Some(outer), gateway, address)
    }

    /// A namespace linked to `outer`'s (or the test's) with these
    /// addresses on a /30.
    pub fn with_addresses(
        role: &str,
        outer: Option<&Host>,
        gateway: Ipv4Addr,
        address: Ipv4Addr,
    ) -> Host {
        let pid = std::process::id();
        let index = next_index();
        let name = format!("berth-{role}-{pid}-{index}");
        let link = format!("bh{}x{index}", pid % 100_000);
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        // The near end: in the test's namespace, or `outer`'s.
        let near: Vec<&str> = match outer {
            Some(outer) => vec!["-n", &outer.name],
            None => Vec::new(),
        };
        let mut add = near.clone();
        add.extend(["link", "add", &link, "type", "veth"]);
        add.extend(["peer", "name", "eth0", "netns", &name]);
        ip(&add);
        let gateway_net = format!("{gateway}/30");
        let mut addr = near.clone();
        addr.extend(["addr", "add", &gateway_net, "dev", &link]);
        ip(&addr);
        let mut up = near;
        up.extend(["link", "set", &link, "up"]);
        ip(&up);
        let address_net = format!("{address}/30");
        ip(&["-n", &name, "addr", "add", &address_net, "dev", "eth0"]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Host {
            name,
            link,
            address,
            gateway,
            outer: outer.map(|outer| outer.name.clone()),
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
