//! A server whose data dir is a disk of its own, for tests of what
//! berth does as its disk fills.

use crate::TestServer;

impl TestServer {
    /// Starts a server whose data dir is a file system of its own of
    /// `mib` MiB (ext4 on a loop device, as root), so what the test and
    /// the server measure of its free space is theirs alone. Unmounted
    /// when the server is dropped.
    pub async fn start_on_disk_of(mib: u64, extra_args: &[&str]) -> TestServer {
        let data = tempfile::Builder::new()
            .prefix("berth-test-data-")
            .tempdir()
            .expect("temp dir");
        let image = data.path().with_extension("img");
        let file = std::fs::File::create(&image).expect("a disk image");
        file.set_len(mib * 1024 * 1024)
            .expect("a sparse disk image");
        drop(file);
        for (program, args) in [
            ("mkfs.ext4", vec!["-q", "-F", "-m", "0"]),
            ("mount", vec!["-o", "loop"]),
        ] {
            let mut command = std::process::Command::new(program);
            command.args(args).arg(&image);
            if program == "mount" {
                command.arg(data.path());
            }
            let status = command.status().expect(program);
            assert!(status.success(), "{program} {}", image.display());
        }
        // The loop device holds the file while mounted.
        let _ = std::fs::remove_file(&image);
        Self::start_in(data, extra_args, &[]).await
    }
}
