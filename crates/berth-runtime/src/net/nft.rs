//! The host's nftables rules for instances' direct egress, and IPv4
//! forwarding: installed once when a server starts, the same for every
//! server on the machine.

/// The host's nftables rules for direct egress, one table replaced whole
/// (several servers on one machine install the same one): what comes from
/// an instance's link (`bth*`) is masqueraded on its way out, may not reach
/// the host itself (input) or another instance, nor a private, link-local
/// (cloud metadata) or reserved address unless its app allows that range
/// (`allowed`: instance address . range) — refused at once, so a client
/// fails fast instead of waiting out a connect timeout — and only answers
/// come back in. The ranges are [`berth_proto::PRIVATE_RANGES`].
pub const RULESET: &str = r#"table inet berth
delete table inet berth
table inet berth {
    set allowed {
        type ipv4_addr . ipv4_addr
        flags interval
    }
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "bth*" ct state established,related accept
        iifname "bth*" reject with icmpx admin-prohibited
    }
    chain forward {
        type filter hook forward priority filter; policy accept;
        iifname "bth*" oifname "bth*" reject with icmpx admin-prohibited
        iifname "bth*" ip daddr { 127.0.0.0/8, 10.233.0.0/16, 169.254.0.0/16, 224.0.0.0/4 } reject with icmpx admin-prohibited
        iifname "bth*" ip saddr . ip daddr @allowed accept
        iifname "bth*" ip daddr { 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 169.254.0.0/16, 172.16.0.0/12, 192.0.0.0/24, 192.168.0.0/16, 198.18.0.0/15, 224.0.0.0/4, 240.0.0.0/4 } reject with icmpx admin-prohibited
        iifname "bth*" meta nfproto ipv6 reject with icmpx admin-prohibited
        iifname "bth*" accept
        oifname "bth*" ct state established,related accept
        oifname "bth*" drop
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr 10.233.0.0/16 oifname != "bth*" masquerade
    }
}
"#;

/// Installed when berth turns IPv4 forwarding on (it was off): the host
/// forwards nothing but its instances' traffic, as before.
const FORWARD_GUARD: &str = r#"table inet berth_forward_guard
delete table inet berth_forward_guard
table inet berth_forward_guard {
    chain forward {
        type filter hook forward priority filter; policy accept;
        iifname != "bth*" oifname != "bth*" drop
    }
}
"#;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Runs `nft -f -` with `rules`.
fn nft(rules: &str) -> Result<(), String> {
    use std::io::Write;
    // Root's PATH has /usr/sbin; a service manager's may not.
    let program = if std::path::Path::new("/usr/sbin/nft").exists() {
        "/usr/sbin/nft"
    } else {
        "nft"
    };
    let mut child = std::process::Command::new(program)
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run nft: {err} (install nftables)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(|err| format!("cannot write to nft: {err}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|err| format!("nft: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused berth's rules: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Lets the instance at `address` reach `ranges` (its app's `[egress]
/// allow`) until the returned guard is dropped.
pub(super) fn allow(
    address: std::net::Ipv4Addr,
    ranges: &[berth_proto::Ipv4Cidr],
) -> Result<Option<Allowance>, String> {
    if ranges.is_empty() {
        return Ok(None);
    }
    let elements = elements(address, ranges);
    nft(&format!(
        "add element inet berth allowed {{ {elements} }}\n"
    ))?;
    Ok(Some(Allowance { elements }))
}

fn elements(address: std::net::Ipv4Addr, ranges: &[berth_proto::Ipv4Cidr]) -> String {
    ranges
        .iter()
        .map(|range| format!("{address} . {range}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Ranges an instance may reach, taken back when dropped.
pub struct Allowance {
    elements: String,
}

impl Drop for Allowance {
    fn drop(&mut self) {
        let rules = format!(
            "delete element inet berth allowed {{ {} }}\n",
            self.elements
        );
        if let Err(err) = nft(&rules) {
            tracing::warn!("cannot take back an instance's egress allowance: {err}");
        }
    }
}

/// Sets up direct egress on this host: the rules, and IPv4 forwarding.
pub(super) fn install_direct_egress() -> Result<(), String> {
    let (network, prefix) = super::uplink::NETWORK;
    let mask = u32::MAX << (32 - prefix);
    if let Some(clash) = super::netns::host_addresses()
        .into_iter()
        .find(|ip| match ip {
            std::net::IpAddr::V4(v4) => {
                u32::from(*v4) & mask == u32::from(network) && !is_instance_gateway(*v4)
            }
            std::net::IpAddr::V6(_) => false,
        })
    {
        return Err(format!(
            "this host already uses {clash}, inside the instances' network {network}/{prefix}"
        ));
    }
    nft(RULESET)?;
    let forwarding = std::fs::read_to_string(IP_FORWARD).unwrap_or_default();
    if forwarding.trim() != "1" {
        nft(FORWARD_GUARD)?;
        std::fs::write(IP_FORWARD, "1")
            .map_err(|err| format!("cannot turn on IPv4 forwarding: {err}"))?;
    }
    Ok(())
}

/// Whether `ip` is the host side of an instance link (another berth
/// server's, on this machine).
fn is_instance_gateway(ip: std::net::Ipv4Addr) -> bool {
    u32::from(ip) % 4 == 1
}
