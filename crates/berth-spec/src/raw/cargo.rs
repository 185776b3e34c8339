//! Reading the package name and binaries from Cargo.toml.

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct RawCargoManifest {
    package: Option<RawCargoPackage>,
    #[serde(default)]
    bin: Vec<RawCargoBin>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawCargoPackage {
    name: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawCargoBin {
    name: Option<String>,
}

pub(crate) fn parse_cargo_manifest(file: &str, text: &str) -> Result<CargoPackage, SpecError> {
    let manifest: RawCargoManifest =
        toml::from_str(text).map_err(|err| toml_error(file, text, &err))?;
    let package = manifest.package.ok_or_else(|| {
        SpecError::single(
            file,
            None,
            "has no [package]; run berth in the folder of the package to deploy".into(),
        )
    })?;
    Ok(CargoPackage {
        name: package.name,
        declared_bins: manifest
            .bin
            .into_iter()
            .filter_map(|bin| bin.name)
            .collect(),
    })
}
