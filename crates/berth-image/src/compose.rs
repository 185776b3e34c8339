//! Making images: a layer written from host files, and an image of
//! layers (on a base image from the registry, or on nothing) with its
//! config, stored in the registry under a tag.

use std::io::Write;
use std::path::Path;

use berth_registry::{Digest, MANIFEST_MEDIA_TYPES, Registry, RepoName};
use serde_json::{Value, json};

use crate::config::Platform;
use crate::store::ImageStore;
use crate::{ImageError, Result, io_error};

/// A tar layer being written, gzip-compressed, to a temporary file; its
/// uncompressed bytes are hashed as they go (the config's `diff_id`).
pub struct LayerWriter {
    builder: tar::Builder<flate2::write::GzEncoder<HashingWriter<std::fs::File>>>,
    file: tempfile::NamedTempFile,
    dirs: std::collections::BTreeSet<String>,
}

/// A finished layer.
pub struct WrittenLayer {
    file: tempfile::NamedTempFile,
    /// The sha256 of the compressed bytes (its blob digest).
    pub digest: Digest,
    /// The sha256 of the uncompressed tar (its `diff_id`).
    pub diff_id: Digest,
    /// Compressed size.
    pub size: u64,
}

/// Counts and hashes what passes through to the inner writer.
struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn sha256_hex(hasher: sha2::Sha256) -> String {
    use sha2::Digest as _;
    hex::encode(hasher.finalize())
}

impl LayerWriter {
    /// A new layer in `dir` (the registry's uploads live beside it).
    pub fn new(dir: &Path) -> Result<LayerWriter> {
        let file = tempfile::NamedTempFile::new_in(dir).map_err(io_error(format!(
            "cannot write a layer in {}",
            dir.display()
        )))?;
        let handle = file
            .reopen()
            .map_err(io_error("cannot open the layer being written"))?;
        let compressed = HashingWriter {
            inner: handle,
            hasher: Default::default(),
        };
        let encoder = flate2::write::GzEncoder::new(compressed, flate2::Compression::fast());
        Ok(LayerWriter {
            builder: tar::Builder::new(encoder),
            file,
            dirs: Default::default(),
        })
    }

    /// The folders of `inside` (an absolute path in the image), made once.
    fn parents(&mut self, inside: &str) -> Result<()> {
        let mut at = String::new();
        let parts: Vec<&str> = inside.trim_matches('/').split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            at = if at.is_empty() {
                (*part).to_string()
            } else {
                format!("{at}/{part}")
            };
            if self.dirs.insert(at.clone()) {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                header.set_mtime(0);
                self.builder
                    .append_data(&mut header, format!("{at}/"), std::io::empty())
                    .map_err(io_error("cannot write a layer"))?;
            }
        }
        Ok(())
    }

    /// Adds the host file `source` at `inside` with `mode`.
    pub fn add_file(&mut self, source: &Path, inside: &str, mode: u32) -> Result<()> {
        self.parents(inside)?;
        let mut file = std::fs::File::open(source)
            .map_err(io_error(format!("cannot read {}", source.display())))?;
        let size = file
            .metadata()
            .map_err(io_error(format!("cannot read {}", source.display())))?
            .len();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(mode & 0o777);
        header.set_size(size);
        header.set_mtime(0);
        self.builder
            .append_data(&mut header, inside.trim_start_matches('/'), &mut file)
            .map_err(io_error("cannot write a layer"))
    }

    /// Adds the folder `source` (files and folders, symlinks as links)
    /// under `inside`; files are made readable by all (0644, or 0755 when
    /// executable), as an image's files must be for any user that runs it.
    pub fn add_tree(&mut self, source: &Path, inside: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut entries: Vec<_> = std::fs::read_dir(source)
            .map_err(io_error(format!("cannot read {}", source.display())))?
            .flatten()
            .collect();
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let target = format!("{}/{name}", inside.trim_end_matches('/'));
            let meta = std::fs::symlink_metadata(entry.path())
                .map_err(io_error(format!("cannot read {}", entry.path().display())))?;
            if meta.is_dir() {
                self.parents(&format!("{target}/x"))?;
                self.add_tree(&entry.path(), &target)?;
            } else if meta.file_type().is_symlink() {
                self.parents(&target)?;
                let link = std::fs::read_link(entry.path())
                    .map_err(io_error(format!("cannot read {}", entry.path().display())))?;
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                header.set_mtime(0);
                self.builder
                    .append_link(&mut header, target.trim_start_matches('/'), &link)
                    .map_err(io_error("cannot write a layer"))?;
            } else if meta.is_file() {
                // Readable by whichever user runs the image, executable by
                // all when by any (a slug's files are its own user's only).
                let mode = meta.permissions().mode();
                let shared = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                self.add_file(&entry.path(), &target, shared)?;
            }
        }
        Ok(())
    }

    /// Ends the layer.
    pub fn finish(self) -> Result<WrittenLayer> {
        let encoder = self
            .builder
            .into_inner()
            .map_err(io_error("cannot end a layer"))?;
        let compressed = encoder.finish().map_err(io_error("cannot end a layer"))?;
        let digest = Digest::parse(&format!("sha256:{}", sha256_hex(compressed.hasher)))?;
        // The uncompressed tar's digest: read back through a decoder.
        let file = self.file;
        let reader = file.reopen().map_err(io_error("cannot read the layer"))?;
        let mut decoder = flate2::read::GzDecoder::new(reader);
        let mut hasher = HashingWriter {
            inner: std::io::sink(),
            hasher: Default::default(),
        };
        std::io::copy(&mut decoder, &mut hasher).map_err(io_error("cannot read the layer"))?;
        let diff_id = Digest::parse(&format!("sha256:{}", sha256_hex(hasher.hasher)))?;
        let size = file
            .as_file()
            .metadata()
            .map_err(io_error("cannot read the layer"))?
            .len();
        Ok(WrittenLayer {
            file,
            digest,
            diff_id,
            size,
        })
    }
}

/// What an image made here runs with, over its base's.
#[derive(Debug, Clone, Default)]
pub struct ImageSettings {
    /// `Entrypoint`, when set.
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`, when set.
    pub cmd: Option<Vec<String>>,
    /// Env added (replacing the base's of the same names).
    pub env: Vec<(String, String)>,
    /// `WorkingDir`, when set.
    pub working_dir: Option<String>,
    /// Ports exposed (TCP).
    pub exposed_ports: Vec<u16>,
}

/// Stores an image of `base` (a repository and reference in `registry`,
/// or none) plus `layers` with `settings` as `repo:tag`; its manifest
/// digest.
pub fn publish(
    registry: &Registry,
    repo: &RepoName,
    tag: &str,
    base: Option<(&RepoName, &str)>,
    layers: Vec<WrittenLayer>,
    settings: &ImageSettings,
) -> Result<Digest> {
    let platform = Platform::host();
    let (mut config, mut descriptors) = match base {
        Some((base_repo, reference)) => {
            let (_, manifest) = ImageStore::resolve(registry, base_repo, reference, &platform)?;
            let manifest: Value = serde_json::from_slice(&manifest)
                .map_err(|err| ImageError::Invalid(format!("base manifest: {err}")))?;
            let config_digest =
                Digest::parse(manifest["config"]["digest"].as_str().unwrap_or_default())?;
            let config: Value = serde_json::from_slice(&crate::config::read_config(
                registry,
                base_repo,
                &config_digest,
            )?)
            .map_err(|err| ImageError::Invalid(format!("base config: {err}")))?;
            let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
            for layer in &layers {
                let digest = Digest::parse(layer["digest"].as_str().unwrap_or_default())?;
                if !registry.mount(repo, base_repo, &digest)? {
                    return Err(ImageError::Invalid(format!(
                        "base layer {digest} is missing"
                    )));
                }
            }
            (config, layers)
        }
        None => (
            json!({
                "architecture": platform.architecture,
                "os": platform.os,
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": []},
            }),
            Vec::new(),
        ),
    };
    for layer in layers {
        let file = layer
            .file
            .reopen()
            .map_err(io_error("cannot read a layer"))?;
        registry.put_blob_from(repo, &layer.digest, file)?;
        descriptors.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer.digest.as_str(),
            "size": layer.size,
        }));
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .ok_or_else(|| ImageError::Invalid("base config without rootfs.diff_ids".into()))?
            .push(json!(layer.diff_id.as_str()));
    }
    let run = config["config"].as_object_mut();
    let run = match run {
        Some(run) => run,
        None => {
            config["config"] = json!({});
            config["config"].as_object_mut().expect("an object")
        }
    };
    if let Some(entrypoint) = &settings.entrypoint {
        run.insert("Entrypoint".into(), json!(entrypoint));
        // A new entrypoint drops the base's Cmd, as docker does (a base's
        // `bash` must not become the app's argument).
        if settings.cmd.is_none() {
            run.remove("Cmd");
        }
    }
    if let Some(cmd) = &settings.cmd {
        run.insert("Cmd".into(), json!(cmd));
    }
    if let Some(dir) = &settings.working_dir {
        run.insert("WorkingDir".into(), json!(dir));
    }
    let mut env: Vec<String> = run
        .get("Env")
        .and_then(Value::as_array)
        .map(|env| {
            env.iter()
                .filter_map(|pair| pair.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for (key, value) in &settings.env {
        env.retain(|pair| pair.split('=').next() != Some(key.as_str()));
        env.push(format!("{key}={value}"));
    }
    run.insert("Env".into(), json!(env));
    if !settings.exposed_ports.is_empty() {
        let ports: serde_json::Map<String, Value> = settings
            .exposed_ports
            .iter()
            .map(|port| (format!("{port}/tcp"), json!({})))
            .collect();
        run.insert("ExposedPorts".into(), Value::Object(ports));
    }
    let config_bytes = serde_json::to_vec(&config).expect("a config serializes");
    let config_digest = Digest::of(&config_bytes);
    registry.put_blob(repo, &config_digest, &config_bytes)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPES[0],
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.as_str(),
            "size": config_bytes.len(),
        },
        "layers": descriptors,
    });
    let bytes = serde_json::to_vec(&manifest).expect("a manifest serializes");
    Ok(registry
        .put_manifest(repo, tag, MANIFEST_MEDIA_TYPES[0], &bytes)?
        .digest)
}
