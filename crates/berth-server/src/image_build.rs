//! `berth image build`: the app's running release as an OCI image in
//! berth's registry, to run here or push to any other platform. The image
//! holds the slug at `/app` (its binaries in `/app/.berth/bin`) and the shared
//! libraries those binaries need, read from their ELF headers (never by
//! running them): it needs no base image.

use std::collections::BTreeSet;
use std::path::Path;

use berth_build::SLUG_BIN_DIR;
use berth_image::{ImageSettings, LayerWriter, publish, shared_libraries};
use berth_registry::{Digest, Registry, RepoName};
use berth_spec::AppSpec;

use crate::launch::PinnedImage;

/// Where the slug goes in the image.
const APP_DIR: &str = "/app";

/// Where Debian keeps the CA certificates (and where TLS libraries look).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The port an image made here listens on unless the spec fixes one.
const DEFAULT_PORT: u16 = 8080;

/// The image of the release in `slug_dir` of `app` (`command` its web
/// process), stored as `app:tag`; its digest.
pub(crate) fn build_image(
    registry: &Registry,
    app: &str,
    tag: &str,
    slug_dir: &Path,
    spec: &AppSpec,
    command: &str,
) -> Result<Digest, String> {
    let repo = RepoName::parse(app).map_err(|err| err.to_string())?;
    if let Some(pinned) = PinnedImage::of_slug(slug_dir)? {
        // An image release is its image: tagged again, not rebuilt.
        let source = RepoName::parse(&pinned.repository).map_err(|err| err.to_string())?;
        let manifest = registry
            .manifest(&source, &pinned.manifest)
            .map_err(|err| format!("the release's image {}: {err}", pinned.reference))?;
        let digest = Digest::parse(&pinned.manifest).map_err(|err| err.to_string())?;
        if source != repo {
            copy_image(registry, &source, &repo, &manifest.bytes)?;
        }
        registry
            .put_manifest(&repo, tag, &manifest.media_type, &manifest.bytes)
            .map_err(|err| err.to_string())?;
        return Ok(digest);
    }
    let mut writer = LayerWriter::new(registry.root()).map_err(|err| err.to_string())?;
    writer
        .add_tree(slug_dir, APP_DIR)
        .map_err(|err| err.to_string())?;
    let mut libraries = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(slug_dir.join(SLUG_BIN_DIR)) {
        for entry in entries.flatten() {
            match shared_libraries(&entry.path()) {
                Ok(needed) => libraries.extend(needed),
                // Scripts need nothing more.
                Err(err) if berth_image::is_not_elf(&err) => {}
                Err(err) => return Err(err.to_string()),
            }
        }
    }
    // The host's CA certificates, for the app's TLS clients.
    let certificates = Path::new(CA_BUNDLE);
    if certificates.is_file() {
        writer
            .add_file(certificates, CA_BUNDLE, 0o644)
            .map_err(|err| err.to_string())?;
    }
    for library in &libraries {
        let inside = library.to_string_lossy();
        writer
            .add_file(library, &inside, 0o755)
            .map_err(|err| err.to_string())?;
    }
    let layer = writer.finish().map_err(|err| err.to_string())?;
    let cmd = argv(command, slug_dir);
    if cmd.first().map(String::as_str) == Some("/bin/sh") {
        return Err(format!(
            "the web command `{command}` needs a shell, which an image made by berth does not carry: give it a plain command (a program and its arguments)"
        ));
    }
    let port = spec.http.internal_port.unwrap_or(DEFAULT_PORT);
    let settings = ImageSettings {
        cmd: Some(cmd),
        env: vec![
            (
                "PATH".into(),
                format!("{APP_DIR}/{SLUG_BIN_DIR}:/usr/local/bin:/usr/bin:/bin"),
            ),
            ("PORT".into(), port.to_string()),
        ],
        working_dir: Some(APP_DIR.into()),
        exposed_ports: vec![port],
        ..ImageSettings::default()
    };
    publish(registry, &repo, tag, None, vec![layer], &settings).map_err(|err| err.to_string())
}

/// The image's `Cmd` for `command`: its words, the program found in the
/// slug's binaries; anything with shell syntax under `/bin/sh -c`.
fn argv(command: &str, slug_dir: &Path) -> Vec<String> {
    let plain = command
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || "_./:=,@%+-".contains(c));
    let mut words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
    if !plain || words.is_empty() || words[0].contains('=') {
        return vec!["/bin/sh".into(), "-c".into(), command.into()];
    }
    if !words[0].contains('/') && slug_dir.join(SLUG_BIN_DIR).join(&words[0]).is_file() {
        words[0] = format!("{APP_DIR}/{SLUG_BIN_DIR}/{}", words[0]);
    }
    words
}

/// Makes `bytes` (a manifest of `from`) and what it names available in `to`.
fn copy_image(
    registry: &Registry,
    from: &RepoName,
    to: &RepoName,
    bytes: &[u8],
) -> Result<(), String> {
    let manifest: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|err| err.to_string())?;
    let descriptors = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().into_iter().flatten());
    for descriptor in descriptors {
        let digest = Digest::parse(descriptor["digest"].as_str().unwrap_or_default())
            .map_err(|err| err.to_string())?;
        if !registry
            .mount(to, from, &digest)
            .map_err(|err| err.to_string())?
        {
            return Err(format!(
                "the image's blob {digest} is gone from the registry"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn commands_become_an_argv_with_the_slugs_binaries() {
        let slug = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(slug.path().join(".berth/bin")).unwrap();
        std::fs::write(slug.path().join(".berth/bin/shop"), "").unwrap();
        assert_eq!(
            super::argv("shop serve --port=80", slug.path()),
            ["/app/.berth/bin/shop", "serve", "--port=80"]
        );
        assert_eq!(super::argv("/usr/bin/env", slug.path()), ["/usr/bin/env"]);
        assert_eq!(
            super::argv("a && b", slug.path()),
            ["/bin/sh", "-c", "a && b"]
        );
    }
}
