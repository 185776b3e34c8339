//! Bytes an instance sent out of its network namespace: the transmit
//! counters of the namespace's interfaces other than loopback (its veth
//! link, with direct egress), read from `/proc/PID/net/dev` of a process
//! inside it. The router, berth's databases and DNS are reached over
//! loopback inside the namespace, so neither answers to requests nor those
//! count: what is counted is what the app sent out of the host's reach.
//! With proxy egress the namespace has only loopback, and this is 0: the
//! proxy counts what it sends for the instance instead.

use std::path::Path;

/// Bytes sent by the namespace `pid` (or its first descendant in a
/// namespace of its own) is in; `None` without one (no isolation).
pub(crate) fn sent_bytes(pid: u32) -> Option<u64> {
    let own = std::fs::read_link("/proc/self/ns/net").ok()?;
    let mut candidates = vec![pid];
    // The pid berth reports is the sandbox's waiter, in the host's
    // namespace, and its child the sandbox's init, still there too: the
    // app joins its namespace below them. Look up to three levels down.
    for _ in 0..4 {
        let mut next = Vec::new();
        for candidate in candidates {
            // A process that exits while it is looked at is skipped, not
            // taken for the lack of a namespace.
            let Ok(namespace) = std::fs::read_link(format!("/proc/{candidate}/ns/net")) else {
                continue;
            };
            if namespace != own {
                if let Ok(text) = std::fs::read_to_string(format!("/proc/{candidate}/net/dev")) {
                    return Some(transmitted(&text));
                }
                continue;
            }
            next.extend(children(candidate));
        }
        candidates = next;
    }
    None
}

/// The children of `pid` (from every one of its threads).
fn children(pid: u32) -> Vec<u32> {
    let tasks = Path::new("/proc").join(pid.to_string()).join("task");
    let Ok(entries) = std::fs::read_dir(tasks) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The transmitted bytes of every interface but loopback in a
/// `/proc/net/dev` table.
fn transmitted(table: &str) -> u64 {
    table
        .lines()
        .skip(2)
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.trim() != "lo")
        .filter_map(|(_, counters)| counters.split_whitespace().nth(8)?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn transmit_bytes_of_every_interface_but_loopback() {
        let table = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  500000      10    0    0    0     0          0         0   500000      10    0    0    0     0       0          0
  eth0:    1500      12    0    0    0     0          0         0     4321      20    0    0    0     0       0          0
  eth1:       0       0    0    0    0     0          0         0       79       1    0    0    0     0       0          0
";
        assert_eq!(super::transmitted(table), 4400);
    }

    #[test]
    fn a_process_in_the_hosts_namespace_has_no_egress_of_its_own() {
        assert_eq!(super::sent_bytes(std::process::id()), None);
    }
}
