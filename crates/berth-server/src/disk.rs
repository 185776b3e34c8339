//! Berth's store, logs and slugs share a disk with builds and apps: the
//! room berth keeps free there, and the refusal when it is short.

/// The room berth keeps free on its data dir's disk.
#[derive(Debug, Clone)]
pub struct DiskReserve {
    /// The data dir.
    pub path: std::path::PathBuf,
    /// Bytes that must stay free.
    pub bytes: u64,
}

impl DiskReserve {
    /// Refuses, with the figures and what to do, when less than the
    /// reserve is free.
    pub fn check(&self) -> Result<(), String> {
        let free = berth_runtime::free_disk_bytes(&self.path).map_err(|err| {
            format!(
                "cannot read the free space of {}: {err}",
                self.path.display()
            )
        })?;
        if free >= self.bytes {
            return Ok(());
        }
        Err(format!(
            "the disk that holds {} has {} MiB free, less than the {} MiB berth keeps for its store and logs; \
             nothing new is written until there is room (destroy apps or volumes, or start the server with a smaller --disk-reserve-mib)",
            self.path.display(),
            free / (1024 * 1024),
            self.bytes / (1024 * 1024)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_with_the_figures() {
        let dir = tempfile::tempdir().unwrap();
        let ample = DiskReserve {
            path: dir.path().to_path_buf(),
            bytes: 0,
        };
        assert!(ample.check().is_ok());
        let impossible = DiskReserve {
            path: dir.path().to_path_buf(),
            bytes: u64::MAX,
        };
        let refusal = impossible.check().unwrap_err();
        assert!(
            refusal.contains("MiB free") && refusal.contains("--disk-reserve-mib"),
            "{refusal}"
        );
    }
}
