//! Volumes under redeploys: examples/notes keeps SQLite on a volume in
//! exclusive mode and commits its last batch at SIGTERM; not one
//! acknowledged write may be lost however often it is redeployed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_testkit::{TestServer, example, http_request};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_across_twenty_redeploys_under_load() {
    setup();
    let server = TestServer::start().await;
    let app = example("notes");
    server.ok_in(app.path(), &["up"]).await;

    // Four writers post notes as fast as they are answered.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (stop, acknowledged, router) = (stop.clone(), acknowledged.clone(), server.router);
        writers.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                sent += 1;
                let body = format!("note {writer}-{sent}");
                match http_request(router, "notes.localhost", "POST", "/notes", &body).await {
                    Ok(answer) if answer.status == 200 => {
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                    }
                    // Refused during the stop-first gap: not acknowledged.
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    for round in 1..=20 {
        let out = server
            .ok(&["env", "set", "--app", "notes", &format!("ROUND={round}")])
            .await;
        assert!(
            out.stderr
                .contains("the old instances stop before the new ones start"),
            "{}",
            out.stderr
        );
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.load(Ordering::SeqCst);
    assert!(
        acknowledged > 200,
        "too little load to tell: {acknowledged}"
    );

    // The running instance commits its pending batch within 200 ms.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stored: u64 = server
            .get("notes", "/count")
            .await
            .body
            .trim()
            .parse()
            .unwrap();
        if stored == acknowledged {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{acknowledged} writes acknowledged, {stored} stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The plain example as app `sized`, with volume `small` at /small of
/// `size` (none when empty) and a job that writes into it.
fn sized_app(dir: &std::path::Path, size: &str) {
    let size = if size.is_empty() {
        String::new()
    } else {
        format!("size = \"{size}\"\n")
    };
    std::fs::write(
        dir.join("berth.toml"),
        format!(
            "app = \"sized\"\n\n[[mounts]]\nsource = \"small\"\ndestination = \"/small\"\n{size}\n\
             [[jobs]]\nname = \"fill\"\ncommand = \"dd if=/dev/zero of=/small/fill bs=1M count=64\"\nmax_retries = 0\n\n\
             [[jobs]]\nname = \"mark\"\ncommand = \"echo kept > /small/marker\"\nmax_retries = 0\n"
        ),
    )
    .unwrap();
}

/// Whether this process may resize a mounted ext4 file system.
fn has_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let effective = status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))?;
            u64::from_str_radix(effective.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

fn mounted(path: &std::path::Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(&path.display().to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_volume_with_a_size_fills_up_at_its_size_grows_and_never_shrinks() {
    setup();
    let mut server = TestServer::start().await;
    let app = example("plain");
    // A volume without a size, holding a file.
    sized_app(app.path(), "");
    server.ok_in(app.path(), &["up"]).await;
    server
        .ok(&["jobs", "run", "mark", "--wait", "--app", "sized"])
        .await;
    let volume = server.data_dir().join("volumes/sized/small");
    assert_eq!(
        std::fs::read_to_string(volume.join("marker")).unwrap(),
        "kept\n"
    );

    // Given a size, it becomes a file system of that size; its file is
    // copied in, and the old folder is kept (the release running until the
    // cutover still writes there), not deleted.
    sized_app(app.path(), "24mb");
    let deployed = server.ok_in(app.path(), &["up"]).await;
    assert!(
        deployed.stderr.contains(
            "volume small now has 24 MB of its own; its files were copied in, and the old folder is kept as"
        ),
        "{}",
        deployed.stderr
    );
    assert!(mounted(&volume));
    assert_eq!(
        std::fs::read_to_string(volume.join("marker")).unwrap(),
        "kept\n"
    );
    let old_folder = std::fs::read_dir(volume.parent().unwrap())
        .unwrap()
        .flatten()
        .find(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with(".small.unsized-")
        })
        .expect("the old folder kept");
    assert_eq!(
        std::fs::read_to_string(old_folder.path().join("marker")).unwrap(),
        "kept\n"
    );
    assert!(!volume.parent().unwrap().join(".small.img.partial").exists());

    // Writing 64 MB fills it at 24 MB: the write fails, the host's disk is
    // not touched.
    let filled = server
        .fails(&["jobs", "run", "fill", "--wait", "--app", "sized"])
        .await;
    assert!(filled.stderr.contains("failed"), "{}", filled.stderr);
    let written = std::fs::metadata(volume.join("fill")).unwrap().len();
    assert!(
        written < 24 * 1024 * 1024,
        "{written} bytes in a 24 MB volume"
    );
    let listed = server
        .ok(&["volumes", "list", "--app", "sized", "--json"])
        .await
        .json();
    assert_eq!(listed[0]["limit_bytes"], 24 * 1024 * 1024);

    // A bigger size grows it in place, files kept — where the kernel lets
    // berth resize a mounted file system (root with CAP_SYS_RESOURCE);
    // elsewhere the deploy is refused with that reason and nothing changes.
    sized_app(app.path(), "32mb");
    if has_sys_resource() {
        let grown = server.ok_in(app.path(), &["up"]).await;
        assert!(
            grown.stderr.contains("volume small grew to 32 MB"),
            "{}",
            grown.stderr
        );
        assert_eq!(
            std::fs::read_to_string(volume.join("marker")).unwrap(),
            "kept\n"
        );
        std::fs::remove_file(volume.join("fill")).unwrap();
        server
            .fails(&["jobs", "run", "fill", "--wait", "--app", "sized"])
            .await;
        let written = std::fs::metadata(volume.join("fill")).unwrap().len();
        assert!(
            written > 24 * 1024 * 1024 && written < 32 * 1024 * 1024,
            "{written} bytes in a 32 MB volume"
        );
    } else {
        let refused = server.fails_in(app.path(), &["up"]).await;
        assert!(
            refused.stderr.contains("cannot grow while mounted")
                && refused.stderr.contains("CAP_SYS_RESOURCE")
                && refused.stderr.contains("it keeps 24 MB"),
            "{}",
            refused.stderr
        );
        let image = server.data_dir().join("volumes/sized/.small.img");
        assert_eq!(std::fs::metadata(image).unwrap().len(), 24 * 1024 * 1024);
        assert_eq!(
            std::fs::read_to_string(volume.join("marker")).unwrap(),
            "kept\n"
        );
        assert_eq!(server.get("sized", "/").await.status, 200);
    }

    // As after a reboot: the server goes down hard and the file system is
    // unmounted. The standby the new server makes at once predates the
    // mount its first instance makes; the instance still sees the volume,
    // not the empty folder underneath.
    server.kill9().await;
    assert!(
        std::process::Command::new("umount")
            .arg(&volume)
            .status()
            .unwrap()
            .success()
    );
    assert!(!mounted(&volume));
    server.restart().await;
    // (Answered once the server has its apps back and the instance is up:
    // 404 and 503 until then.)
    let mut read = server.get("sized", "/read?path=/small/marker").await;
    for _ in 0..300 {
        if read.status != 404 && read.status != 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        read = server.get("sized", "/read?path=/small/marker").await;
    }
    assert_eq!((read.status, read.body.as_str()), (200, "kept\n"));
    assert!(mounted(&volume));

    // A smaller one is refused with the reason; the app keeps serving.
    sized_app(app.path(), "16mb");
    let refused = server.fails_in(app.path(), &["up"]).await;
    assert!(
        refused.stderr.contains("cannot shrink to 16 MB"),
        "{}",
        refused.stderr
    );
    assert_eq!(server.get("sized", "/").await.status, 200);

    // Destroying the app unmounts and removes it.
    server.ok(&["apps", "destroy", "sized", "--yes"]).await;
    assert!(!mounted(&volume));
    assert!(!volume.exists());
    assert!(!server.data_dir().join("volumes/sized/.small.img").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn an_app_writing_into_its_slug_is_refused_and_told_where_to_write() {
    setup();
    let server = TestServer::start().await;
    let app = example("plain");
    // Data kept in ./data, as a pastebin did: refused at once, not lost later.
    std::fs::write(
        app.path().join("berth.toml"),
        "app = \"slug-writer\"\n\n[processes]\nweb = \"mkdir -p ./data; echo note > ./data/1.txt; exec plain\"\n",
    )
    .unwrap();
    server.ok_in(app.path(), &["up"]).await;
    assert_eq!(server.get("slug-writer", "/").await.status, 200);
    let read = server.get("slug-writer", "/read?path=data/1.txt").await;
    assert_eq!(read.status, 403, "{}", read.body);
    let events = server.ok(&["events", "--app", "slug-writer"]).await;
    assert!(
        events
            .stdout
            .contains("tried to write where nothing is kept")
            && events.stdout.contains("[[mounts]]"),
        "{}",
        events.stdout
    );
}
