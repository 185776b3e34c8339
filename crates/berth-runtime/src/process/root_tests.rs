//! Instances with a root file system of their own (an image's).

use super::tests::{SANDBOXED, collected, nobody, spec};
use super::*;

/// A root file system of the host's `dash` (as `/bin/sh`) and the
/// libraries `ldd` names, with a marker file: an image's, in miniature.
fn tiny_root(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let root = dir.join("rootfs");
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        let to = root.join(to.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap();
    };
    let shell = std::fs::canonicalize("/bin/sh").unwrap();
    copy(&shell, std::path::Path::new("/bin/sh"));
    let ldd = std::process::Command::new("ldd")
        .arg(&shell)
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let library = line
            .split_whitespace()
            .find(|word| word.starts_with('/'))
            .map(std::path::PathBuf::from);
        if let Some(library) = library {
            copy(&std::fs::canonicalize(&library).unwrap(), &library);
        }
    }
    std::fs::write(root.join("marker"), "from the image\n").unwrap();
    // Writable by anyone, were the root not read-only.
    std::fs::set_permissions(root.join("marker"), std::fs::Permissions::from_mode(0o666)).unwrap();
    for dir in ["proc", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    // Readable by the app's user, as an unpacked image is.
    for entry in [root.clone(), root.join("bin"), root.join("etc")] {
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let status = std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    root
}

#[tokio::test]
#[ignore = "needs root"]
async fn an_instance_with_a_root_of_its_own_sees_only_it_and_its_mounts() {
    assert!(crate::can_isolate(), "sandboxes need root");
    let _one_at_a_time = SANDBOXED.lock().await;
    crate::private_umask();
    let dir = tempfile::tempdir().unwrap();
    let root = tiny_root(dir.path());
    let volume = dir.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::set_permissions(&volume, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let driver = ProcessDriver::detect();
    let (lines, sink) = collected();
    let mut contained = spec(
        "echo /*; read line < /marker; echo $line; echo kept > /data/out; \
         [ -e /work ] || [ -e /root ] && echo host-visible || echo host-hidden; \
         echo $PWD; [ -e /proc/1/status ] && echo own-proc; \
         { echo nope > /marker; } 2>/dev/null || echo root-read-only",
    );
    contained.workdir = "/srv/app".into();
    contained.binds = vec![crate::BindMount {
        source: volume.clone(),
        destination: "/data".into(),
        writable: true,
    }];
    contained.sandbox = Some(crate::Sandbox {
        root: Some(root.clone()),
        ..nobody(64, 64)
    });
    let instance = driver.start(&contained, sink).unwrap();
    assert_eq!(
        instance.exited().await,
        ExitCause::Code(0),
        "{:?}",
        lines.lock().unwrap()
    );
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines[0].contains("/marker") && lines[0].contains("/data"),
        "{lines:?}"
    );
    for host_only in ["/home", "/root", "/var", "/work", "/.berth-host"] {
        assert!(
            !lines[0].split(' ').any(|entry| entry == host_only),
            "{lines:?}"
        );
    }
    assert_eq!(
        lines[1..],
        [
            "from the image",
            "host-hidden",
            "/srv/app",
            "own-proc",
            "root-read-only"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(volume.join("out")).unwrap(),
        "kept\n"
    );
    // The image's root is unchanged: the mount points (`/srv/app`,
    // `/data`) were made in the instance's own layer, not in it.
    assert_eq!(
        std::fs::read_to_string(root.join("marker")).unwrap(),
        "from the image\n"
    );
    assert!(!root.join("srv").exists() && !root.join("data").exists());
    // A working directory that climbs is refused before anything starts.
    let mut climbing = contained.clone();
    climbing.workdir = "/../../etc/berth-test-escape".into();
    let (_, sink) = collected();
    assert!(driver.start(&climbing, sink).is_err());
    assert!(!std::path::Path::new("/etc/berth-test-escape").exists());
}

#[test]
fn a_sandbox_with_its_own_root_crosses_to_the_spawner_whole() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(&root).unwrap();
    let volume = dir.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    let binds = [crate::BindMount {
        source: volume,
        destination: "/data".into(),
        writable: true,
    }];
    let sandbox = crate::Sandbox {
        root: Some(root),
        ..nobody(64, 64)
    };
    let prepared =
        isolation::PreparedSandbox::prepare(std::path::Path::new("/app"), &binds, Some(&sandbox))
            .unwrap();
    let mut message = Vec::new();
    prepared.encode(&mut message);
    let decoded =
        isolation::PreparedSandbox::decode(&mut crate::spawner::Reader::new(&message), None)
            .unwrap();
    assert_eq!(
        format!("{:?}", decoded.root_view()),
        format!("{:?}", prepared.root_view())
    );
}

#[test]
fn programs_are_found_in_the_image_through_its_own_symlinks() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("usr/bin/busybox"), "").unwrap();
    std::fs::set_permissions(
        root.join("usr/bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    // Debian's merged /bin, and busybox's absolute links: inside the root.
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::os::unix::fs::symlink("/bin/busybox", root.join("usr/bin/sh")).unwrap();
    // A link to the host's own program is not the image's.
    std::os::unix::fs::symlink("/proc/self/exe", root.join("usr/bin/host")).unwrap();
    let found = |program: &str| {
        crate::spawner::resolve_in_root(
            root,
            program,
            "/usr/local/bin:/bin",
            std::path::Path::new("/"),
        )
    };
    assert_eq!(found("sh"), std::path::Path::new("/bin/sh"));
    assert_eq!(found("busybox"), std::path::Path::new("/bin/busybox"));
    assert_eq!(found("host"), std::path::Path::new("host"));
    assert_eq!(found("missing"), std::path::Path::new("missing"));
}

#[tokio::test]
#[ignore = "needs root"]
async fn nested_volumes_and_a_dangling_link_where_a_file_is_mounted() {
    assert!(crate::can_isolate(), "sandboxes need root");
    let _one_at_a_time = SANDBOXED.lock().await;
    crate::private_umask();
    let dir = tempfile::tempdir().unwrap();
    let root = tiny_root(dir.path());
    // The image's /etc/hosts points nowhere.
    std::os::unix::fs::symlink("/nowhere/hosts", root.join("etc/hosts")).unwrap();
    let (outer, inner) = (dir.path().join("outer"), dir.path().join("inner"));
    for volume in [&outer, &inner] {
        std::fs::create_dir_all(volume).unwrap();
        std::fs::set_permissions(volume, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
    }
    std::fs::write(dir.path().join("hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::set_permissions(
        dir.path().join("hosts"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let driver = ProcessDriver::detect();
    let (lines, sink) = collected();
    let mut nested = spec("read line < /etc/hosts; echo $line; echo $PWD; echo in > /data/sub/x");
    nested.workdir = "/data/sub/work".into();
    nested.binds = vec![
        crate::BindMount {
            source: outer.clone(),
            destination: "/data".into(),
            writable: true,
        },
        crate::BindMount {
            source: inner.clone(),
            destination: "/data/sub".into(),
            writable: true,
        },
        crate::BindMount {
            source: dir.path().join("hosts"),
            destination: "/etc/hosts".into(),
            writable: false,
        },
    ];
    nested.sandbox = Some(crate::Sandbox {
        root: Some(root.clone()),
        ..nobody(64, 64)
    });
    let instance = driver.start(&nested, sink).unwrap();
    assert_eq!(
        instance.exited().await,
        ExitCause::Code(0),
        "{:?}",
        lines.lock().unwrap()
    );
    assert_eq!(
        *lines.lock().unwrap(),
        ["127.0.0.1 localhost", "/data/sub/work"]
    );
    // The inner volume is mounted inside the outer one, where its mount
    // point was made; its writes land in it.
    assert_eq!(std::fs::read_to_string(inner.join("x")).unwrap(), "in\n");
    assert!(outer.join("sub").is_dir() && inner.join("work").is_dir());
}
