//! The Blueprint as written: serde shapes of `render.yaml`.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawBlueprint {
    #[serde(default)]
    pub(super) services: Vec<RawService>,
    #[serde(default)]
    pub(super) databases: Vec<RawDatabase>,
    #[serde(default)]
    pub(super) env_var_groups: Vec<RawEnvGroup>,
    pub(super) previews: Option<serde_norway::Value>,
    pub(super) preview_environment: Option<serde_norway::Value>,
    pub(super) projects: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawService {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) name: String,
    pub(super) runtime: Option<String>,
    pub(super) env: Option<String>,
    pub(super) plan: Option<String>,
    pub(super) build_command: Option<String>,
    pub(super) start_command: Option<String>,
    pub(super) pre_deploy_command: Option<String>,
    pub(super) health_check_path: Option<String>,
    pub(super) num_instances: Option<u32>,
    pub(super) scaling: Option<RawScaling>,
    pub(super) disk: Option<RawDisk>,
    #[serde(default)]
    pub(super) env_vars: Vec<RawEnvVar>,
    pub(super) schedule: Option<String>,
    pub(super) dockerfile_path: Option<String>,
    pub(super) docker_context: Option<String>,
    pub(super) docker_command: Option<String>,
    pub(super) image: Option<RawImage>,
    pub(super) max_shutdown_delay_seconds: Option<u64>,
    // Accepted; one machine has no use for them.
    pub(super) region: Option<serde_norway::Value>,
    pub(super) repo: Option<serde_norway::Value>,
    pub(super) branch: Option<serde_norway::Value>,
    pub(super) auto_deploy: Option<serde_norway::Value>,
    pub(super) auto_deploy_trigger: Option<serde_norway::Value>,
    pub(super) root_dir: Option<String>,
    pub(super) domains: Option<serde_norway::Value>,
    pub(super) build_filter: Option<serde_norway::Value>,
    pub(super) pull_request_previews_enabled: Option<serde_norway::Value>,
    pub(super) previews: Option<serde_norway::Value>,
    pub(super) ip_allow_list: Option<serde_norway::Value>,
    pub(super) maxmemory_policy: Option<serde_norway::Value>,
    pub(super) registry_credential: Option<serde_norway::Value>,
    pub(super) static_publish_path: Option<String>,
    pub(super) headers: Option<serde_norway::Value>,
    pub(super) routes: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawScaling {
    pub(super) min_instances: Option<u32>,
    pub(super) max_instances: Option<u32>,
    pub(super) target_memory_percent: Option<u32>,
    #[serde(rename = "targetCPUPercent")]
    pub(super) target_cpu_percent: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawDisk {
    pub(super) name: String,
    pub(super) mount_path: String,
    #[serde(rename = "sizeGB")]
    pub(super) size_gb: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawImage {
    pub(super) url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawEnvVar {
    pub(super) key: Option<String>,
    pub(super) value: Option<serde_norway::Value>,
    pub(super) generate_value: Option<bool>,
    pub(super) from_database: Option<RawFromDatabase>,
    pub(super) from_service: Option<RawFromService>,
    pub(super) sync: Option<bool>,
    pub(super) from_group: Option<String>,
    pub(super) preview_value: Option<serde_norway::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct RawFromDatabase {
    pub(super) name: String,
    pub(super) property: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawFromService {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) name: String,
    pub(super) property: Option<String>,
    pub(super) env_var_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawDatabase {
    pub(super) name: String,
    pub(super) database_name: Option<String>,
    pub(super) user: Option<String>,
    pub(super) plan: Option<String>,
    pub(super) postgres_major_version: Option<serde_norway::Value>,
    pub(super) region: Option<serde_norway::Value>,
    pub(super) ip_allow_list: Option<serde_norway::Value>,
    pub(super) read_replicas: Option<serde_norway::Value>,
    pub(super) disk_size_gb: Option<serde_norway::Value>,
    pub(super) high_availability: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawEnvGroup {
    pub(super) name: String,
    #[serde(default)]
    pub(super) env_vars: Vec<RawEnvVar>,
}
