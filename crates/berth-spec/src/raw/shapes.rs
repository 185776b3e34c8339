//! The raw shapes of berth.toml / fly.toml as serde reads them, lenient
//! in what they accept, and the problem list validation fills.

use super::*;

/// A value fly accepts as a number or a string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum NumberOrText {
    Integer(i64),
    Float(f64),
    Text(String),
}

/// fly's `auto_stop_machines`: a boolean, or "off" / "stop" / "suspend".
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum BoolOrText {
    Bool(bool),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawConcurrency {
    #[serde(rename = "type")]
    pub(super) kind: Option<Spanned<String>>,
    pub(super) soft_limit: Option<Spanned<NumberOrText>>,
    pub(super) hard_limit: Option<Spanned<NumberOrText>>,
}

/// The scaling keys of `[http_service]` or one `[[services]]` entry.
#[derive(Default)]
pub(super) struct ScalingKeys {
    pub(super) auto_stop: Option<Spanned<BoolOrText>>,
    pub(super) auto_start: Option<Spanned<BoolOrText>>,
    pub(super) min: Option<Spanned<NumberOrText>>,
    pub(super) max: Option<Spanned<NumberOrText>>,
    pub(super) concurrency: Option<RawConcurrency>,
    pub(super) idle_timeout: Option<Spanned<NumberOrText>>,
    pub(super) scale_in_delay: Option<Spanned<NumberOrText>>,
    pub(super) container_concurrency: Option<Spanned<NumberOrText>>,
}

impl ScalingKeys {
    /// These keys, with those not given taken from `other`.
    pub(super) fn or(self, other: ScalingKeys) -> ScalingKeys {
        ScalingKeys {
            auto_stop: self.auto_stop.or(other.auto_stop),
            auto_start: self.auto_start.or(other.auto_start),
            min: self.min.or(other.min),
            max: self.max.or(other.max),
            concurrency: self.concurrency.or(other.concurrency),
            idle_timeout: self.idle_timeout.or(other.idle_timeout),
            scale_in_delay: self.scale_in_delay.or(other.scale_in_delay),
            container_concurrency: self.container_concurrency.or(other.container_concurrency),
        }
    }
}

/// An env value: fly accepts strings, numbers and booleans.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    pub(super) fn into_string(self) -> String {
        match self {
            Scalar::Text(text) => text,
            Scalar::Integer(number) => number.to_string(),
            Scalar::Float(number) => number.to_string(),
            Scalar::Bool(value) => value.to_string(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawSpec {
    pub(super) app: Option<Spanned<String>>,
    pub(super) kill_timeout: Option<Spanned<NumberOrText>>,
    pub(super) kill_signal: Option<Spanned<String>>,
    pub(super) build: Option<RawBuild>,
    pub(super) deploy: Option<RawDeploy>,
    pub(super) env: BTreeMap<String, Spanned<Scalar>>,
    pub(super) processes: RawProcesses,
    pub(super) http_service: Option<RawHttpService>,
    pub(super) services: Option<OneOrMany<RawService>>,
    pub(super) checks: BTreeMap<String, RawCheck>,
    // Accepted for fly.toml compatibility; berth does not act on these on one machine.
    pub(super) primary_region: Option<toml::Value>,
    pub(super) swap_size_mb: Option<toml::Value>,
    pub(super) console_command: Option<Spanned<String>>,
    pub(super) experimental: Option<RawExperimental>,
    pub(super) metrics: Option<toml::Value>,
    pub(super) statics: Option<OneOrMany<RawStatic>>,
    pub(super) restart: Option<toml::Value>,
    pub(super) files: Option<toml::Value>,
    pub(super) vm: Option<OneOrMany<RawVm>>,
    pub(super) mounts: Option<OneOrMany<RawMount>>,
    /// flyctl also reads the singular `[mount]`.
    pub(super) mount: Option<OneOrMany<RawMount>>,
    pub(super) jobs: Vec<RawJob>,
    pub(super) resources: Option<RawResources>,
    pub(super) egress: Option<RawEgress>,
    pub(super) internal: Option<RawInternal>,
    pub(super) edge: Option<RawEdge>,
    pub(super) budget: Option<RawBudget>,
    pub(super) logs: Option<RawLogs>,
}

/// fly accepts `[mounts]` (one table) and `[[mounts]]` (several).
/// Deserialized by hand: serde's untagged enums buffer the input and lose
/// the spans that errors point at.
#[derive(Debug)]
pub(super) enum OneOrMany<T> {
    Many(Vec<T>),
    One(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table or an array of tables")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(OneOrMany::Many)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(OneOrMany::One)
            }
        }
        deserializer.deserialize_any(Visit(std::marker::PhantomData))
    }
}

impl<T> OneOrMany<T> {
    pub(super) fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::Many(items) => items,
            OneOrMany::One(item) => vec![item],
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawMount {
    pub(super) source: Option<Spanned<String>>,
    pub(super) destination: Option<Spanned<String>>,
    pub(super) processes: Option<Vec<Spanned<String>>>,
    /// berth's own: instances may use it at once.
    pub(super) shared: Option<bool>,
    /// berth's own size, and fly's.
    pub(super) size: Option<Spanned<NumberOrText>>,
    pub(super) initial_size: Option<Spanned<NumberOrText>>,
    // fly's growth and snapshot keys: one machine's disk has no such knobs.
    pub(super) auto_extend_size_threshold: Option<toml::Value>,
    pub(super) auto_extend_size_increment: Option<toml::Value>,
    pub(super) auto_extend_size_limit: Option<toml::Value>,
    pub(super) snapshot_retention: Option<toml::Value>,
    pub(super) scheduled_snapshots: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawStatic {
    pub(super) guest_path: Option<Spanned<String>>,
    pub(super) url_prefix: Option<Spanned<String>>,
    pub(super) tigris_bucket: Option<toml::Value>,
    pub(super) index_document: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawVm {
    pub(super) size: Option<Spanned<String>>,
    pub(super) memory: Option<Spanned<NumberOrText>>,
    pub(super) memory_mb: Option<Spanned<NumberOrText>>,
    pub(super) cpus: Option<Spanned<NumberOrText>>,
    pub(super) cpu_kind: Option<Spanned<String>>,
    pub(super) processes: Option<Vec<Spanned<String>>>,
    /// berth's own: processes and threads an instance may have.
    pub(super) pids: Option<Spanned<NumberOrText>>,
    pub(super) gpus: Option<toml::Value>,
    pub(super) gpu_kind: Option<toml::Value>,
    pub(super) kernel_args: Option<toml::Value>,
    pub(super) host_dedication_id: Option<toml::Value>,
    pub(super) persist_rootfs: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawEgress {
    pub(super) allow: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawInternal {
    pub(super) allow: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawResources {
    pub(super) postgres: Option<Spanned<bool>>,
    pub(super) redis: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawBuild {
    pub(super) builder: Option<Spanned<String>>,
    pub(super) bin: Option<String>,
    pub(super) package: Option<String>,
    pub(super) command: Option<String>,
    pub(super) hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) features: Vec<String>,
    pub(super) image: Option<String>,
    pub(super) dockerfile: Option<String>,
    pub(super) buildpacks: Option<toml::Value>,
    /// fly's Docker build arguments: the build's env here.
    pub(super) args: BTreeMap<String, Spanned<Scalar>>,
    /// berth's own: the build's env.
    pub(super) env: BTreeMap<String, Spanned<Scalar>>,
    /// Secrets of the app the build sees (never stored in the slug).
    pub(super) secrets: Vec<Spanned<String>>,
    /// The build gets the app's DATABASE_URL.
    pub(super) database: Option<bool>,
    /// Debian packages installed into the build's own root.
    pub(super) packages: Vec<Spanned<String>>,
    #[serde(rename = "build-target")]
    pub(super) build_target: Option<toml::Value>,
    pub(super) ignorefile: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawDeploy {
    pub(super) release_command: Option<String>,
    pub(super) post_deploy_command: Option<String>,
    pub(super) strategy: Option<Spanned<String>>,
    pub(super) wait_timeout: Option<Spanned<NumberOrText>>,
    pub(super) release_command_timeout: Option<Spanned<NumberOrText>>,
    pub(super) max_unavailable: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawJob {
    pub(super) name: Option<Spanned<String>>,
    pub(super) command: Option<Spanned<String>>,
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) time_zone: Option<Spanned<String>>,
    pub(super) tasks: Option<Spanned<i64>>,
    pub(super) parallelism: Option<Spanned<i64>>,
    pub(super) max_retries: Option<Spanned<i64>>,
    pub(super) timeout: Option<Spanned<NumberOrText>>,
    pub(super) env: BTreeMap<String, Spanned<Scalar>>,
    pub(super) overlap: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawHttpService {
    pub(super) internal_port: Option<Spanned<NumberOrText>>,
    pub(super) force_https: Option<bool>,
    pub(super) hsts: Option<bool>,
    pub(super) tls: Option<Spanned<String>>,
    pub(super) domains: Vec<Spanned<String>>,
    pub(super) processes: Option<Vec<Spanned<String>>>,
    pub(super) checks: Option<OneOrMany<RawHttpCheck>>,
    pub(super) auto_stop_machines: Option<Spanned<BoolOrText>>,
    pub(super) auto_start_machines: Option<Spanned<BoolOrText>>,
    pub(super) min_machines_running: Option<Spanned<NumberOrText>>,
    pub(super) max_machines_running: Option<Spanned<NumberOrText>>,
    pub(super) concurrency: Option<RawConcurrency>,
    pub(super) idle_timeout: Option<Spanned<NumberOrText>>,
    pub(super) scale_in_delay: Option<Spanned<NumberOrText>>,
    // Cloud Run's words.
    pub(super) min_instances: Option<Spanned<NumberOrText>>,
    pub(super) max_instances: Option<Spanned<NumberOrText>>,
    pub(super) container_concurrency: Option<Spanned<NumberOrText>>,
    pub(super) http_options: Option<toml::Value>,
    pub(super) tls_options: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawService {
    pub(super) internal_port: Option<Spanned<NumberOrText>>,
    pub(super) protocol: Option<String>,
    pub(super) processes: Option<Vec<Spanned<String>>>,
    pub(super) http_checks: Option<OneOrMany<RawHttpCheck>>,
    pub(super) tcp_checks: Option<OneOrMany<RawHttpCheck>>,
    pub(super) ports: Option<OneOrMany<RawServicePort>>,
    pub(super) concurrency: Option<RawConcurrency>,
    pub(super) auto_stop_machines: Option<Spanned<BoolOrText>>,
    pub(super) auto_start_machines: Option<Spanned<BoolOrText>>,
    pub(super) min_machines_running: Option<Spanned<NumberOrText>>,
    pub(super) script_checks: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawHttpCheck {
    pub(super) path: Option<String>,
    pub(super) interval: Option<Spanned<NumberOrText>>,
    pub(super) timeout: Option<Spanned<NumberOrText>>,
    pub(super) grace_period: Option<Spanned<NumberOrText>>,
    pub(super) method: Option<Spanned<String>>,
    pub(super) protocol: Option<String>,
    pub(super) tls_skip_verify: Option<bool>,
    pub(super) tls_server_name: Option<String>,
    pub(super) headers: Option<Spanned<toml::Value>>,
    #[serde(rename = "type")]
    pub(super) kind: Option<Spanned<String>>,
    pub(super) port: Option<Spanned<NumberOrText>>,
    pub(super) processes: Option<Vec<Spanned<String>>>,
    pub(super) restart_limit: Option<toml::Value>,
}

pub(super) type RawCheck = RawHttpCheck;

/// One `[[services.ports]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawServicePort {
    pub(super) port: Option<Spanned<NumberOrText>>,
    pub(super) start_port: Option<Spanned<NumberOrText>>,
    pub(super) end_port: Option<Spanned<NumberOrText>>,
    pub(super) handlers: Vec<String>,
    pub(super) force_https: Option<bool>,
    pub(super) tls_options: Option<toml::Value>,
    pub(super) http_options: Option<toml::Value>,
    pub(super) proxy_proto_options: Option<toml::Value>,
}

/// `[experimental]`: `cmd` and `entrypoint` change what runs.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawExperimental {
    pub(super) cmd: Option<Spanned<StringOrList>>,
    pub(super) entrypoint: Option<Spanned<StringOrList>>,
    pub(super) exec: Option<Spanned<StringOrList>>,
    pub(super) auto_rollback: Option<bool>,
    pub(super) kill_timeout: Option<Spanned<NumberOrText>>,
    pub(super) private_network: Option<toml::Value>,
    pub(super) enable_consul: Option<toml::Value>,
    pub(super) enable_etcd: Option<toml::Value>,
    pub(super) allowed_public_ports: Option<toml::Value>,
    pub(super) metrics_port: Option<toml::Value>,
    pub(super) metrics_path: Option<toml::Value>,
    pub(super) machine_config: Option<toml::Value>,
    pub(super) lazy_load_images: Option<toml::Value>,
    pub(super) attached: Option<toml::Value>,
}

/// A command: a string (a command line) or a list of arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum StringOrList {
    One(String),
    Many(Vec<String>),
}

/// `[processes]`: group → command. flyctl also reads an array: empty
/// (`processes = []`, which older flyctl wrote) means no groups, and
/// `[[processes]]` tables give `name` and `command`.
#[derive(Debug, Default)]
pub(super) struct RawProcesses(pub(super) BTreeMap<String, Spanned<String>>);

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawProcessEntry {
    name: Option<String>,
    command: Option<Spanned<String>>,
}

/// One element of a `processes` array: a table, or anything else (dropped,
/// as flyctl does).
struct ProcessElement(Option<RawProcessEntry>);

impl<'de> Deserialize<'de> for ProcessElement {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ProcessElement;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table with `name` and `command`")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                RawProcessEntry::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|entry| ProcessElement(Some(entry)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(ProcessElement(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(ProcessElement(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(ProcessElement(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(ProcessElement(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(ProcessElement(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(ProcessElement(None))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

impl<'de> Deserialize<'de> for RawProcesses {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RawProcesses;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table of process group = \"command\"")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut groups = BTreeMap::new();
                while let Some(ProcessElement(entry)) = seq.next_element()? {
                    if let Some(RawProcessEntry {
                        name: Some(name),
                        command,
                    }) = entry
                    {
                        // No command: the default, as `app = ""` is.
                        let command = command.unwrap_or_else(|| Spanned::new(0..0, String::new()));
                        groups.insert(name, command);
                    }
                }
                Ok(RawProcesses(groups))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                BTreeMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawProcesses)
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// Collects problems with their locations while validating.
pub(super) struct Problems<'a> {
    pub(super) text: &'a str,
    pub(super) found: Vec<SpecProblem>,
}

impl Problems<'_> {
    pub(super) fn at<T>(&mut self, spanned: &Spanned<T>, message: String) {
        self.found.push(SpecProblem {
            location: Some(Location::of_offset(self.text, spanned.span().start)),
            message,
        });
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawEdge {
    pub(super) allow: Vec<Spanned<String>>,
    pub(super) deny: Vec<Spanned<String>>,
    pub(super) max_body: Option<Spanned<NumberOrText>>,
    pub(super) max_header: Option<Spanned<NumberOrText>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) request_timeout: Option<Spanned<String>>,
    pub(super) rate_limits: Vec<RawRateLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRateLimit {
    pub(super) requests: Option<Spanned<i64>>,
    pub(super) per: Option<Spanned<String>>,
    pub(super) burst: Option<Spanned<i64>>,
    pub(super) path: Option<Spanned<String>>,
}

/// `[logs]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLogs {
    pub(super) retain: Option<Spanned<String>>,
    pub(super) max_size: Option<Spanned<NumberOrText>>,
    pub(super) access: Option<bool>,
}

/// `[budget]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawBudget {
    pub(super) monthly_usd: Option<Spanned<NumberOrText>>,
    pub(super) requests: Option<Spanned<NumberOrText>>,
    pub(super) egress_gb: Option<Spanned<NumberOrText>>,
    pub(super) instance_hours: Option<Spanned<NumberOrText>>,
    pub(super) alert_at: Option<Spanned<Vec<i64>>>,
    pub(super) on_exceed: Option<Spanned<String>>,
    pub(super) price_as: Option<Spanned<String>>,
    pub(super) throttle_rps: Option<Spanned<i64>>,
    pub(super) processes: std::collections::BTreeMap<String, Spanned<String>>,
}
