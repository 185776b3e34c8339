//! Layers made here with the tar crate, hostile ones among them.

use std::io::Write;
use std::path::Path;

use super::*;

enum Entry<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Char(&'a str),
}

/// A tar stream of `entries`, names written as given (`..` included).
fn layer(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let (name, kind, data, mode, link): (&str, tar::EntryType, &[u8], u32, Option<&str>) =
            match entry {
                Entry::File(name, data, mode) => (name, tar::EntryType::Regular, data, *mode, None),
                Entry::Dir(name) => (name, tar::EntryType::Directory, b"", 0o755, None),
                Entry::Symlink(name, to) => (name, tar::EntryType::Symlink, b"", 0o777, Some(to)),
                Entry::HardLink(name, to) => (name, tar::EntryType::Link, b"", 0o644, Some(to)),
                Entry::Char(name) => (name, tar::EntryType::Char, b"", 0o666, None),
            };
        let raw = &mut header.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn apply(root: &Path, bytes: &[u8]) -> Result<LayerStats> {
    let mut stats = LayerStats::default();
    unpack_layer(bytes, root, UnpackLimits::default(), &mut stats).map(|()| stats)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn layers_replace_remove_and_make_directories_opaque() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    apply(
        &root,
        &layer(&[
            Entry::Dir("app"),
            Entry::File("app/old.txt", b"old", 0o644),
            Entry::File("app/keep.txt", b"keep", 0o644),
            Entry::Dir("cache"),
            Entry::File("cache/a", b"a", 0o644),
            Entry::File("bin/tool", b"tool", 0o4755),
        ]),
    )
    .unwrap();
    // The second layer as gzip, the third as zstd.
    apply(
        &root,
        &gzip(&layer(&[
            Entry::File("app/keep.txt", b"newer", 0o600),
            Entry::File("app/.wh.old.txt", b"", 0o644),
            Entry::File("cache/b", b"b", 0o644),
            Entry::File("cache/.wh..wh..opq", b"", 0o644),
            Entry::HardLink("bin/same", "bin/tool"),
            Entry::Char("dev-null"),
        ])),
    )
    .unwrap();
    let zstd_layer =
        zstd::encode_all(&layer(&[Entry::File("z.txt", b"zstd", 0o644)])[..], 1).unwrap();
    apply(&root, &zstd_layer).unwrap();
    assert_eq!(std::fs::read(root.join("app/keep.txt")).unwrap(), b"newer");
    assert!(!root.join("app/old.txt").exists());
    // The opaque marker hid the lower layer's file, not this layer's own.
    assert!(!root.join("cache/a").exists());
    assert_eq!(std::fs::read(root.join("cache/b")).unwrap(), b"b");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tool = std::fs::metadata(root.join("bin/tool")).unwrap();
    assert_eq!(
        tool.permissions().mode() & 0o7777,
        0o755,
        "setuid is dropped"
    );
    assert_eq!(
        std::fs::metadata(root.join("bin/same")).unwrap().ino(),
        tool.ino()
    );
    assert!(!root.join("dev-null").exists(), "no device nodes");
    assert_eq!(std::fs::read(root.join("z.txt")).unwrap(), b"zstd");
}

#[test]
fn nothing_climbs_out_of_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    for hostile in [
        layer(&[Entry::File("../outside/x", b"x", 0o644)]),
        layer(&[Entry::File("a/../../outside/x", b"x", 0o644)]),
        layer(&[Entry::HardLink("stolen", "../outside/secret")]),
        layer(&[Entry::File("outside/.wh..", b"", 0o644)]),
    ] {
        let refused = apply(&root, &hostile).unwrap_err();
        assert!(matches!(refused, ImageError::Escapes(_)), "{refused}");
    }
    // Symlinks on the way resolve inside the root, absolute or climbing:
    // what the layer writes lands in the root's own folders.
    let absolute = outside.display().to_string();
    apply(
        &root,
        &layer(&[
            Entry::Symlink("to-outside", &absolute),
            Entry::Symlink("up", "../../../.."),
            Entry::File("to-outside/planted", b"p", 0o644),
            Entry::File("up/etc/planted", b"p", 0o644),
        ]),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing outside"
    );
    assert!(
        root.join(absolute.trim_start_matches('/'))
            .join("planted")
            .is_file()
    );
    assert!(root.join("etc/planted").is_file());
    // A symlink left in the root is only a link: a later file replaces it.
    apply(
        &root,
        &layer(&[Entry::File("to-outside", b"file now", 0o644)]),
    )
    .unwrap();
    assert_eq!(std::fs::read(root.join("to-outside")).unwrap(), b"file now");
}

#[test]
fn broken_layers_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = &layer(&[Entry::File("big", &[7u8; 4096], 0o644)])[..1000];
    assert!(matches!(
        apply(dir.path(), truncated),
        Err(ImageError::Malformed(_))
    ));
    // A layer that ends right after its last file's bytes (no padding,
    // no end blocks), as umoci writes them, is whole.
    let unpadded = &layer(&[Entry::File("small", b"abc", 0o644)])[..515];
    apply(dir.path(), unpadded).unwrap();
    assert_eq!(std::fs::read(dir.path().join("small")).unwrap(), b"abc");
    let mut stats = LayerStats::default();
    let limits = UnpackLimits {
        max_bytes: 10,
        max_entries: 100,
    };
    let too_big = layer(&[Entry::File("big", &[7u8; 11], 0o644)]);
    let refused = unpack_layer(&too_big[..], dir.path(), limits, &mut stats).unwrap_err();
    assert!(matches!(refused, ImageError::TooLarge(_)), "{refused}");
}

#[test]
fn configs_indexes_and_platforms() {
    let config = ImageConfig::parse(
        br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/hello"],"Cmd":["--port","8080"],"Env":["PATH=/usr/bin","A=b=c"],"WorkingDir":"/srv","User":"1000","ExposedPorts":{"8080/tcp":{},"53/udp":{},"443/tcp":{}}}}"#,
    )
    .unwrap();
    assert_eq!(config.argv(), ["/hello", "--port", "8080"]);
    assert_eq!(config.env[1], ("A".into(), "b=c".into()));
    assert_eq!(
        (config.working_dir.as_str(), config.exposed_ports.clone()),
        ("/srv", vec![443, 8080])
    );
    let amd64 = Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
    };
    let arm64 = Platform {
        os: "linux".into(),
        architecture: "arm64".into(),
    };
    assert!(config.check_platform(&amd64).is_ok());
    let refused = config.check_platform(&arm64).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "the image is for linux/amd64; this machine runs linux/arm64"
    );
    let index = br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:aa","platform":{"os":"linux","architecture":"arm64"}},{"digest":"sha256:bb","platform":{"os":"linux","architecture":"amd64"}}]}"#;
    assert_eq!(config::pick_from_index(index, &amd64).unwrap(), "sha256:bb");
    let s390 = Platform {
        os: "linux".into(),
        architecture: "s390x".into(),
    };
    let none = config::pick_from_index(index, &s390).unwrap_err();
    assert!(
        none.to_string().contains("linux/arm64, linux/amd64"),
        "{none}"
    );
}

/// Pushes an image of `layers` for `architecture` to `repo` as `tag`.
fn push(
    registry: &berth_registry::Registry,
    repo: &berth_registry::RepoName,
    layers: &[Vec<u8>],
    architecture: &str,
    tag: &str,
) {
    use berth_registry::Digest;
    use std::io::Read;
    // Each layer's diff_id: the digest of its uncompressed tar.
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|layer| {
            let mut plain = Vec::new();
            if layer.starts_with(&[0x1f, 0x8b]) {
                flate2::read::GzDecoder::new(&layer[..])
                    .read_to_end(&mut plain)
                    .unwrap();
            } else {
                plain = layer.clone();
            }
            format!("\"{}\"", Digest::of(&plain))
        })
        .collect();
    let config = format!(
        r#"{{"architecture":"{architecture}","os":"linux","config":{{"Cmd":["/bin/app"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let config_digest = Digest::of(config.as_bytes());
    registry
        .put_blob(repo, &config_digest, config.as_bytes())
        .unwrap();
    let mut descriptors = Vec::new();
    for layer in layers {
        let digest = Digest::of(layer);
        registry.put_blob(repo, &digest, layer).unwrap();
        descriptors.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{digest}","size":{}}}"#,
            layer.len()
        ));
    }
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        descriptors.join(",")
    );
    registry
        .put_manifest(
            repo,
            tag,
            berth_registry::MANIFEST_MEDIA_TYPES[0],
            manifest.as_bytes(),
        )
        .unwrap();
}

/// Unmounts and removes every image of `store` when dropped, so a test
/// leaves no overlay mounted in its temporary folder.
struct Unmounted<'a>(&'a ImageStore);

impl Drop for Unmounted<'_> {
    fn drop(&mut self) {
        let _ = self.0.remove_unused(
            &std::collections::HashSet::new(),
            std::time::SystemTime::now() + std::time::Duration::from_secs(7200),
            std::time::Duration::ZERO,
        );
    }
}

#[test]
#[ignore = "needs root"]
fn the_store_makes_a_root_once_and_refuses_other_platforms() {
    let dir = tempfile::tempdir().unwrap();
    let registry = berth_registry::Registry::open(&dir.path().join("registry")).unwrap();
    let repo = berth_registry::RepoName::parse("shop").unwrap();
    let host = Platform::host();
    push(
        &registry,
        &repo,
        &[gzip(&layer(&[Entry::File("bin/app", b"app", 0o755)]))],
        &host.architecture,
        "v1",
    );
    let store = ImageStore::new(&dir.path().join("images"), UnpackLimits::default());
    let _unmounted = Unmounted(&store);
    let prepared = store.prepare(&registry, &repo, "v1", &host).unwrap();
    assert_eq!(
        std::fs::read(prepared.root.join("bin/app")).unwrap(),
        b"app"
    );
    for mount_point in ["proc", "dev", "tmp", "etc"] {
        assert!(prepared.root.join(mount_point).is_dir(), "{mount_point}");
    }
    assert_eq!(prepared.config.cmd, ["/bin/app"]);
    // The root is read-only: no instance writes into the image.
    assert!(std::fs::write(prepared.root.join("marker"), b"").is_err());
    // Again: the same root.
    let layer_dir = || {
        std::fs::read_dir(dir.path().join("images/layers"))
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name())
            .collect::<Vec<_>>()
    };
    let before = layer_dir();
    assert_eq!(before.len(), 1);
    let again = store
        .prepare(&registry, &repo, prepared.manifest.as_str(), &host)
        .unwrap();
    assert_eq!(std::fs::read(again.root.join("bin/app")).unwrap(), b"app");
    // Another architecture, and a layer that escapes: clear errors, and
    // nothing half-made is left.
    push(
        &registry,
        &repo,
        &[gzip(&layer(&[Entry::File("x", b"x", 0o644)]))],
        "riscv64",
        "other",
    );
    let refused = store.prepare(&registry, &repo, "other", &host).unwrap_err();
    assert!(matches!(refused, ImageError::Platform { .. }), "{refused}");
    push(
        &registry,
        &repo,
        &[layer(&[Entry::File("../../x", b"x", 0o644)])],
        &host.architecture,
        "hostile",
    );
    let refused = store
        .prepare(&registry, &repo, "hostile", &host)
        .unwrap_err();
    assert!(matches!(refused, ImageError::Escapes(_)), "{refused}");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|name| name != "layers")
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(layer_dir(), before, "nothing half-unpacked is left");
    assert!(!dir.path().join("x").exists());
    let missing = store.prepare(&registry, &repo, "v9", &host).unwrap_err();
    assert!(
        missing.to_string().contains("manifest unknown"),
        "{missing}"
    );
}

#[test]
#[ignore = "needs root"]
fn images_made_here_run_on_their_base() {
    let dir = tempfile::tempdir().unwrap();
    let registry = berth_registry::Registry::open(&dir.path().join("registry")).unwrap();
    let host = Platform::host();
    // A base with a file and env, as if pulled.
    let base = berth_registry::RepoName::parse("debian").unwrap();
    push(
        &registry,
        &base,
        &[gzip(&layer(&[Entry::File("etc/os", b"base", 0o644)]))],
        &host.architecture,
        "slim",
    );
    // The app's layer, written from host files.
    let files = dir.path().join("files");
    std::fs::create_dir_all(files.join("static")).unwrap();
    std::fs::write(files.join("static/index.html"), "<h1>hi</h1>").unwrap();
    std::os::unix::fs::symlink("index.html", files.join("static/home.html")).unwrap();
    std::fs::write(files.join("app"), "binary").unwrap();
    let mut writer = LayerWriter::new(dir.path()).unwrap();
    writer
        .add_file(&files.join("app"), "/usr/local/bin/app", 0o755)
        .unwrap();
    writer
        .add_tree(&files.join("static"), "/srv/static")
        .unwrap();
    let written = writer.finish().unwrap();
    let shop = berth_registry::RepoName::parse("shop").unwrap();
    let settings = ImageSettings {
        entrypoint: Some(vec!["/usr/local/bin/app".into()]),
        env: vec![("PORT".into(), "8080".into())],
        working_dir: Some("/srv".into()),
        exposed_ports: vec![8080],
        ..ImageSettings::default()
    };
    let digest = publish(
        &registry,
        &shop,
        "v1",
        Some((&base, "slim")),
        vec![written],
        &settings,
    )
    .unwrap();
    let store = ImageStore::new(&dir.path().join("images"), UnpackLimits::default());
    let _unmounted = Unmounted(&store);
    let prepared = store.prepare(&registry, &shop, "v1", &host).unwrap();
    assert_eq!(prepared.manifest, digest);
    assert_eq!(
        std::fs::read(prepared.root.join("etc/os")).unwrap(),
        b"base"
    );
    assert_eq!(
        std::fs::read(prepared.root.join("usr/local/bin/app")).unwrap(),
        b"binary"
    );
    assert_eq!(
        std::fs::read(prepared.root.join("srv/static/home.html")).unwrap(),
        b"<h1>hi</h1>"
    );
    assert_eq!(
        prepared.config.argv(),
        ["/usr/local/bin/app"],
        "a new entrypoint drops the base's cmd"
    );
    assert!(is_dir_in_root(&prepared.root, "/srv/static"));
    assert!(!is_dir_in_root(&prepared.root, "/usr/local/bin/app"));
    assert_eq!(
        (
            prepared.config.working_dir.as_str(),
            prepared.config.exposed_ports.clone()
        ),
        ("/srv", vec![8080])
    );
    assert!(
        prepared
            .config
            .env
            .contains(&("PORT".into(), "8080".into()))
    );
    // The base's layer was mounted, not copied: one blob, two repositories.
    let base_layer = registry.manifest(&base, "slim").unwrap();
    assert!(registry.manifest(&shop, "v1").unwrap().bytes.len() > base_layer.bytes.len());
}

#[test]
#[ignore = "needs root"]
fn layers_are_unpacked_once_and_stacked_with_their_whiteouts() {
    let dir = tempfile::tempdir().unwrap();
    let registry = berth_registry::Registry::open(&dir.path().join("registry")).unwrap();
    let repo = berth_registry::RepoName::parse("shop").unwrap();
    let host = Platform::host();
    let base = gzip(&layer(&[
        Entry::File("etc/os", b"base", 0o644),
        Entry::File("app/old.txt", b"old", 0o644),
        Entry::File("cache/a", b"a", 0o644),
        Entry::File("bin/tool", b"tool", 0o755),
    ]));
    let change = gzip(&layer(&[
        Entry::File("app/.wh.old.txt", b"", 0o644),
        Entry::File("cache/.wh..wh..opq", b"", 0o644),
        Entry::File("cache/b", b"b", 0o644),
        Entry::HardLink("bin/same", "bin/tool"),
    ]));
    push(
        &registry,
        &repo,
        std::slice::from_ref(&base),
        &host.architecture,
        "v1",
    );
    push(&registry, &repo, &[base, change], &host.architecture, "v2");
    let store = ImageStore::new(&dir.path().join("images"), UnpackLimits::default());
    let _unmounted = Unmounted(&store);
    let v1 = store.prepare(&registry, &repo, "v1", &host).unwrap();
    let v2 = store.prepare(&registry, &repo, "v2", &host).unwrap();
    // The base layer is on disk once, for both images.
    let layers = std::fs::read_dir(dir.path().join("images/layers"))
        .unwrap()
        .count();
    assert_eq!(layers, 2);
    assert_eq!(std::fs::read(v1.root.join("app/old.txt")).unwrap(), b"old");
    assert!(!v2.root.join("app/old.txt").exists(), "a whiteout hides it");
    assert!(
        !v2.root.join("cache/a").exists(),
        "an opaque folder hides it"
    );
    assert_eq!(std::fs::read(v2.root.join("cache/b")).unwrap(), b"b");
    assert_eq!(std::fs::read(v2.root.join("bin/same")).unwrap(), b"tool");
    assert_eq!(std::fs::read(v2.root.join("etc/os")).unwrap(), b"base");
    // The same layer twice (an empty layer repeated, as BuildKit writes):
    // each place in the stack is its own folder, and the root mounts.
    let empty = gzip(&layer(&[]));
    push(
        &registry,
        &repo,
        &[empty.clone(), empty],
        &host.architecture,
        "twice",
    );
    let twice = store.prepare(&registry, &repo, "twice", &host).unwrap();
    assert!(twice.root.join("proc").is_dir());
    // A layer whose hard link names a lower layer's file is its own for
    // each stack below it: another image cannot change what it holds.
    let linking = gzip(&layer(&[Entry::HardLink("copy", "original")]));
    for (tag, content) in [("mine", &b"mine"[..]), ("theirs", &b"theirs"[..])] {
        let original = gzip(&layer(&[Entry::File("original", content, 0o644)]));
        push(
            &registry,
            &repo,
            &[original, linking.clone()],
            &host.architecture,
            tag,
        );
    }
    let theirs = store.prepare(&registry, &repo, "theirs", &host).unwrap();
    let mine = store.prepare(&registry, &repo, "mine", &host).unwrap();
    assert_eq!(std::fs::read(mine.root.join("copy")).unwrap(), b"mine");
    assert_eq!(std::fs::read(theirs.root.join("copy")).unwrap(), b"theirs");
    // v1 no longer wanted: its root goes, the shared layer stays for v2.
    let keep = std::collections::HashSet::from([v2.manifest.clone()]);
    store
        .remove_unused(
            &keep,
            std::time::SystemTime::now(),
            std::time::Duration::ZERO,
        )
        .unwrap();
    assert!(!v1.root.exists());
    let layers = std::fs::read_dir(dir.path().join("images/layers"))
        .unwrap()
        .count();
    assert_eq!(layers, 2, "v2's two layers, and no other");
    assert_eq!(std::fs::read(v2.root.join("etc/os")).unwrap(), b"base");
    // Unmounted (a reboot): stacked again when asked for.
    overlay::unmount(&v2.root).unwrap();
    assert!(!v2.root.join("etc/os").exists());
    assert_eq!(store.mounted_root(&v2.manifest).unwrap(), v2.root);
    assert_eq!(std::fs::read(v2.root.join("cache/b")).unwrap(), b"b");
}

#[test]
fn a_layer_alone_links_to_the_layers_below_and_stays_in_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("lower");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(lower.join("bin")).unwrap();
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(lower.join("bin/tool"), "tool").unwrap();
    let mut stats = LayerStats::default();
    let unpack = |bytes: &[u8], stats: &mut LayerStats| {
        unpack_layer_alone(
            bytes,
            &tree,
            std::slice::from_ref(&lower),
            UnpackLimits::default(),
            stats,
        )
    };
    unpack(
        &layer(&[Entry::HardLink("bin/same", "bin/tool")]),
        &mut stats,
    )
    .unwrap();
    assert_eq!(std::fs::read(tree.join("bin/same")).unwrap(), b"tool");
    let refused = unpack(&layer(&[Entry::File("../x", b"x", 0o644)]), &mut stats).unwrap_err();
    assert!(matches!(refused, ImageError::Escapes(_)), "{refused}");
    assert!(!dir.path().join("x").exists());
    let missing = unpack(&layer(&[Entry::HardLink("a", "nowhere")]), &mut stats).unwrap_err();
    assert!(
        missing.to_string().contains("which the layers do not have"),
        "{missing}"
    );
}
