//! Which TCP ports a process tree listens on, read from `/proc`: for a
//! health check that finds nothing on `$PORT`, so berth can say where the
//! app listens instead.

use std::collections::BTreeSet;

/// The TCP ports (IPv4 and IPv6) that `pid` or any process below it
/// listens on, in its own network namespace. Empty when nothing listens,
/// or `/proc` cannot be read.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let tree = process_tree(pid);
    let inodes: BTreeSet<u64> = tree.iter().flat_map(|pid| socket_inodes(*pid)).collect();
    let mut ports = BTreeSet::new();
    // Each process's own table: the app may be in a network namespace the
    // process berth started (its waiter, on the host side) is not.
    for member in &tree {
        for table in ["tcp", "tcp6"] {
            let Ok(text) = std::fs::read_to_string(format!("/proc/{member}/net/{table}")) else {
                continue;
            };
            ports.extend(listening_in(&text, &inodes));
        }
    }
    ports.into_iter().collect()
}

/// `pid` and its descendants.
fn process_tree(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // The command name may hold spaces and parentheses: the fields
            // after its closing parenthesis are state, then the parent.
            let parent = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
            Some((child, parent))
        })
        .collect();
    let mut tree = vec![pid];
    let mut index = 0;
    while index < tree.len() {
        let parent = tree[index];
        tree.extend(
            parents
                .iter()
                .filter(|(_, of)| *of == parent)
                .map(|(child, _)| *child),
        );
        index += 1;
    }
    tree
}

/// The inodes of the sockets `pid` holds open.
fn socket_inodes(pid: u32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The local ports of the listening sockets in a `/proc/net/tcp` table
/// whose inode is one of `inodes`.
fn listening_in(table: &str, inodes: &BTreeSet<u64>) -> Vec<u16> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            if *state != LISTEN || !inodes.contains(&inode.parse().ok()?) {
                return None;
            }
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_of_this_process_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connected = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let found = listening_ports(std::process::id());
        assert!(found.contains(&port), "{port} not in {found:?}");
        // A connected socket is not a listening one.
        let local = connected.local_addr().unwrap().port();
        assert!(!found.contains(&local));
    }

    #[test]
    fn only_listening_sockets_with_known_inodes_count() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1\n\
            1: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 222 1\n\
            2: 0100007F:A000 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 111 1\n";
        let ours: BTreeSet<u64> = [111].into();
        assert_eq!(listening_in(table, &ours), [8080]);
    }
}
