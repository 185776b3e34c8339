//! The storage's rules on a registry in a temporary directory.

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, SystemTime};

use super::*;

fn registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    (dir, registry)
}

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

/// Appends `bytes` to upload `id`, as a PATCH does.
fn append(registry: &Registry, repo: &RepoName, id: &str, bytes: &[u8]) {
    let (data, _) = registry.upload(repo, id).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(data)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

/// Pushes a config and one layer, then a manifest of them tagged `tag`.
fn push_image(registry: &Registry, repo: &RepoName, layer: &[u8], tag: &str) -> Digest {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","tag":"{tag}"}}"#);
    let (config_digest, layer_digest) = (Digest::of(config.as_bytes()), Digest::of(layer));
    registry
        .put_blob(repo, &config_digest, config.as_bytes())
        .unwrap();
    registry.put_blob(repo, &layer_digest, layer).unwrap();
    let manifest = manifest_of(&config_digest, config.len(), &layer_digest, layer.len());
    registry
        .put_manifest(repo, tag, MANIFEST_MEDIA_TYPES[0], manifest.as_bytes())
        .unwrap()
        .digest
}

fn manifest_of(config: &Digest, config_size: usize, layer: &Digest, layer_size: usize) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":{layer_size}}}]}}"#
    )
}

#[test]
fn a_chunked_upload_checks_its_ranges_and_its_digest() {
    let (_dir, registry) = registry();
    let shop = repo("team/shop");
    let id = registry.start_upload(&shop).unwrap();
    assert_eq!(registry.check_chunk(&shop, &id, Some(0)).unwrap(), 0);
    // One request at a time holds the upload; another repository none.
    let claim = registry.claim_upload(&shop, &id).unwrap();
    let busy = registry.claim_upload(&shop, &id).unwrap_err();
    assert_eq!((busy.status(), busy.code()), (400, "BLOB_UPLOAD_INVALID"));
    assert!(registry.claim_upload(&repo("other"), &id).is_err());
    drop(claim);
    let _claim = registry.claim_upload(&shop, &id).unwrap();
    append(&registry, &shop, &id, b"hello ");
    // A chunk that does not continue the upload is refused with where it is.
    let refused = registry.check_chunk(&shop, &id, Some(3)).unwrap_err();
    assert_eq!(
        (refused.status(), refused.code()),
        (416, "BLOB_UPLOAD_INVALID")
    );
    assert_eq!(registry.check_chunk(&shop, &id, Some(6)).unwrap(), 6);
    append(&registry, &shop, &id, b"world");
    // Another repository cannot touch the upload.
    assert!(registry.upload(&repo("other"), &id).is_err());
    let digest = Digest::of(b"hello world");
    assert_eq!(registry.finish_upload(&shop, &id, &digest).unwrap(), 11);
    let (path, size) = registry.blob(&shop, &digest).unwrap();
    assert_eq!(
        (std::fs::read(path).unwrap(), size),
        (b"hello world".to_vec(), 11)
    );
    // Only repositories that hold it see it, until it is mounted.
    assert_eq!(
        registry.blob(&repo("other"), &digest).unwrap_err().code(),
        "BLOB_UNKNOWN"
    );
    assert!(registry.mount(&repo("other"), &shop, &digest).unwrap());
    assert!(
        !registry
            .mount(&repo("third"), &repo("nobody"), &digest)
            .unwrap()
    );
    assert!(registry.blob(&repo("other"), &digest).is_ok());
    // The upload is gone once complete.
    assert_eq!(
        registry.upload(&shop, &id).unwrap_err().code(),
        "BLOB_UPLOAD_UNKNOWN"
    );
}

#[test]
fn content_that_does_not_match_its_digest_stores_nothing() {
    let (dir, registry) = registry();
    let shop = repo("shop");
    let id = registry.start_upload(&shop).unwrap();
    append(&registry, &shop, &id, b"tampered");
    let claimed = Digest::of(b"original");
    let refused = registry.finish_upload(&shop, &id, &claimed).unwrap_err();
    assert_eq!(refused.code(), "DIGEST_INVALID");
    assert!(registry.blob(&shop, &claimed).is_err());
    assert!(registry.blob(&shop, &Digest::of(b"tampered")).is_err());
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("uploads"))
            .unwrap()
            .count(),
        0
    );
    // Ids are checked before they become paths.
    assert!(registry.upload(&shop, "../../etc").is_err());
}

#[test]
fn manifests_need_their_blobs_and_their_digest() {
    let (_dir, registry) = registry();
    let shop = repo("shop");
    let config = Digest::of(b"{}");
    let layer = Digest::of(b"layer");
    let manifest = manifest_of(&config, 2, &layer, 5);
    let media = MANIFEST_MEDIA_TYPES[0];
    let missing = registry
        .put_manifest(&shop, "v1", media, manifest.as_bytes())
        .unwrap_err();
    assert_eq!(missing.code(), "MANIFEST_BLOB_UNKNOWN");
    registry.put_blob(&shop, &config, b"{}").unwrap();
    registry.put_blob(&shop, &layer, b"layer").unwrap();
    let wrong = Digest::of(b"something else");
    let refused = registry
        .put_manifest(&shop, wrong.as_str(), media, manifest.as_bytes())
        .unwrap_err();
    assert_eq!(refused.code(), "DIGEST_INVALID");
    let stored = registry
        .put_manifest(&shop, "v1", media, manifest.as_bytes())
        .unwrap();
    assert_eq!(stored.digest, Digest::of(manifest.as_bytes()));
    let by_digest = registry.manifest(&shop, stored.digest.as_str()).unwrap();
    assert_eq!(by_digest.bytes, manifest.as_bytes());
    assert_eq!(by_digest.media_type, media);
    // Bad manifests: not JSON, another media type than declared, a
    // media type that is not a manifest.
    for (body, media) in [
        ("not json", media),
        (manifest.as_str(), MANIFEST_MEDIA_TYPES[1]),
        (manifest.as_str(), "text/plain"),
    ] {
        let refused = registry
            .put_manifest(&shop, "bad", media, body.as_bytes())
            .unwrap_err();
        assert_eq!(refused.code(), "MANIFEST_INVALID", "{body} as {media}");
    }
    assert_eq!(
        registry.manifest(&shop, "nope").unwrap_err().code(),
        "MANIFEST_UNKNOWN"
    );
    // An index needs its manifests in the repository.
    let index = |child: &Digest| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"{media}","digest":"{child}","size":1}}]}}"#
        )
    };
    let unknown = registry
        .put_manifest(
            &shop,
            "all",
            MANIFEST_MEDIA_TYPES[1],
            index(&wrong).as_bytes(),
        )
        .unwrap_err();
    assert_eq!(unknown.code(), "MANIFEST_BLOB_UNKNOWN");
    registry
        .put_manifest(
            &shop,
            "all",
            MANIFEST_MEDIA_TYPES[1],
            index(&stored.digest).as_bytes(),
        )
        .unwrap();
    assert_eq!(registry.tags(&shop).unwrap(), ["all", "v1"]);
}

#[test]
fn tags_referrers_catalog_and_deletes() {
    let (_dir, registry) = registry();
    let shop = repo("team/shop");
    let image = push_image(&registry, &shop, b"layer one", "v1");
    registry
        .put_manifest(
            &shop,
            "latest",
            MANIFEST_MEDIA_TYPES[0],
            &registry.manifest(&shop, "v1").unwrap().bytes,
        )
        .unwrap();
    push_image(&registry, &repo("team"), b"other", "v1");
    assert_eq!(
        registry
            .catalog()
            .iter()
            .map(RepoName::as_str)
            .collect::<Vec<_>>(),
        ["team", "team/shop"]
    );
    // A signature whose subject is the image.
    let empty = Digest::of(b"{}");
    registry.put_blob(&shop, &empty, b"{}").unwrap();
    let signature = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{image}","size":1}},"annotations":{{"by":"test"}}}}"#
    );
    let signed = registry
        .put_manifest(
            &shop,
            &Digest::of(signature.as_bytes()).to_string(),
            MANIFEST_MEDIA_TYPES[0],
            signature.as_bytes(),
        )
        .unwrap();
    assert_eq!(signed.subject.as_ref(), Some(&image));
    let referrers = registry.referrers(&shop, &image, None);
    assert_eq!(referrers.len(), 1);
    assert_eq!(referrers[0]["artifactType"], "application/vnd.example.sig");
    assert_eq!(referrers[0]["annotations"]["by"], "test");
    assert!(
        registry
            .referrers(&shop, &image, Some("application/other"))
            .is_empty()
    );
    // Deleting a tag keeps the manifest; deleting the digest takes every
    // tag naming it.
    registry.delete_manifest(&shop, "latest").unwrap();
    assert_eq!(registry.tags(&shop).unwrap(), ["v1"]);
    assert!(registry.manifest(&shop, image.as_str()).is_ok());
    registry.delete_manifest(&shop, image.as_str()).unwrap();
    assert!(registry.tags(&shop).unwrap().is_empty());
    assert_eq!(
        registry.manifest(&shop, image.as_str()).unwrap_err().code(),
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(
        registry.tags(&repo("nobody")).unwrap_err().code(),
        "NAME_UNKNOWN"
    );
}

#[test]
fn collection_keeps_what_is_tagged_pinned_or_recent() {
    let (dir, registry) = registry();
    let shop = repo("shop");
    let tagged = push_image(&registry, &shop, b"shared layer", "v1");
    let pinned = push_image(&registry, &shop, b"pinned layer", "v2");
    let dropped = push_image(&registry, &shop, b"dropped layer", "v3");
    // v2 and v3 lose their tags; v2 is a release's image.
    registry.delete_manifest(&shop, "v2").unwrap();
    registry.delete_manifest(&shop, "v3").unwrap();
    // An upload that stopped half way.
    let stopped = registry.start_upload(&shop).unwrap();
    append(&registry, &shop, &stopped, b"half");
    let pins = HashSet::from([pinned.clone()]);
    // Within the recent window, nothing goes.
    let report = registry
        .collect_garbage(&pins, SystemTime::now(), Duration::from_secs(86_400))
        .unwrap();
    assert_eq!(
        (
            report.manifests_removed,
            report.blobs_removed,
            report.uploads_removed
        ),
        (0, 0, 0)
    );
    // Two days later: v3, its layer and config, and the upload go.
    let later = SystemTime::now() + Duration::from_secs(2 * 86_400);
    let report = registry
        .collect_garbage(&pins, later, Duration::from_secs(86_400))
        .unwrap();
    assert_eq!(report.manifests_removed, 1);
    // The manifest, its config (distinct per tag) and its layer.
    assert_eq!(report.blobs_removed, 3);
    assert_eq!(report.uploads_removed, 1);
    assert!(report.bytes_freed > 0);
    assert!(registry.manifest(&shop, tagged.as_str()).is_ok());
    assert!(registry.manifest(&shop, pinned.as_str()).is_ok());
    assert!(registry.manifest(&shop, dropped.as_str()).is_err());
    assert!(registry.blob(&shop, &Digest::of(b"dropped layer")).is_err());
    assert!(registry.blob(&shop, &Digest::of(b"pinned layer")).is_ok());
    // Unpinned, the last untagged image goes too, and a repository left
    // with nothing is removed.
    registry.delete_manifest(&shop, "v1").unwrap();
    let report = registry
        .collect_garbage(&HashSet::new(), later, Duration::from_secs(86_400))
        .unwrap();
    assert_eq!(report.manifests_removed, 2);
    assert!(registry.catalog().is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(registry.disk_bytes(), 0);
}

#[test]
fn collection_keeps_blobs_shared_with_a_kept_image_and_an_index_children() {
    let (_dir, registry) = registry();
    let (shop, mirror) = (repo("shop"), repo("mirror"));
    // The same image in two repositories; only the mirror keeps its tag.
    let image = push_image(&registry, &shop, b"shared layer", "v1");
    assert_eq!(push_image(&registry, &mirror, b"shared layer", "v1"), image);
    registry.delete_manifest(&shop, "v1").unwrap();
    // An index, tagged, holding an untagged manifest.
    let child = push_image(&registry, &shop, b"child layer", "child");
    registry.delete_manifest(&shop, "child").unwrap();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{child}","size":1}}]}}"#
    );
    registry
        .put_manifest(&shop, "all", MANIFEST_MEDIA_TYPES[1], index.as_bytes())
        .unwrap();
    let later = SystemTime::now() + Duration::from_secs(2 * 86_400);
    let report = registry
        .collect_garbage(&HashSet::new(), later, Duration::from_secs(86_400))
        .unwrap();
    assert_eq!(
        report.manifests_removed, 1,
        "shop's untagged copy of the image"
    );
    assert!(registry.blob(&mirror, &Digest::of(b"shared layer")).is_ok());
    assert!(registry.blob(&shop, &Digest::of(b"shared layer")).is_err());
    assert!(registry.manifest(&shop, child.as_str()).is_ok());
    assert!(registry.blob(&shop, &Digest::of(b"child layer")).is_ok());
}

#[test]
fn collection_stops_at_what_it_cannot_read() {
    let (dir, registry) = registry();
    let shop = repo("shop");
    let image = push_image(&registry, &shop, b"layer", "v1");
    // The tagged manifest's bytes are damaged: nothing may be removed
    // on the strength of what cannot be read.
    std::fs::write(dir.path().join("blobs/sha256").join(image.hex()), b"{").unwrap();
    let later = SystemTime::now() + Duration::from_secs(2 * 86_400);
    assert!(
        registry
            .collect_garbage(&HashSet::new(), later, Duration::from_secs(86_400))
            .is_err()
    );
    assert!(registry.blob(&shop, &Digest::of(b"layer")).is_ok());
}

#[test]
fn an_image_goes_out_as_an_oci_layout_and_comes_back_the_same() {
    let (_dir, registry) = registry();
    let (_other_dir, other) = self::registry();
    let base = repo("debian");
    let digest = push_image(&registry, &base, b"layer bytes", "bookworm-slim");
    let layout = tempfile::tempdir().unwrap();
    let exported = registry
        .export_layout(&base, "bookworm-slim", layout.path(), "base")
        .unwrap();
    assert_eq!(exported, digest);
    let index = std::fs::read_to_string(layout.path().join("index.json")).unwrap();
    assert!(index.contains(r#""org.opencontainers.image.ref.name":"base""#));
    assert!(layout.path().join("oci-layout").exists());

    let shop = repo("shop");
    let imported = other
        .import_layout(layout.path(), "base", &shop, "built")
        .unwrap();
    assert_eq!(imported, digest);
    let stored = other.manifest(&shop, "built").unwrap();
    assert_eq!(stored.digest, digest);
    let (layer, size) = other.blob(&shop, &Digest::of(b"layer bytes")).unwrap();
    assert_eq!(size, 11);
    assert_eq!(std::fs::read(layer).unwrap(), b"layer bytes");

    // A layout whose layer is not what its digest says stores no image.
    let layer_file = layout
        .path()
        .join("blobs/sha256")
        .join(Digest::of(b"layer bytes").hex());
    std::fs::remove_file(&layer_file).unwrap();
    std::fs::write(&layer_file, b"other bytes").unwrap();
    let cafe = repo("cafe");
    let refused = other
        .import_layout(layout.path(), "base", &cafe, "built")
        .unwrap_err();
    assert!(
        matches!(refused, RegistryError::DigestInvalid(_)),
        "{refused}"
    );
    assert!(other.manifest(&cafe, "built").is_err());
}
