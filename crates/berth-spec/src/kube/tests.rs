use super::*;

const SHOP: &str = r#"
app = "shop"
kill_timeout = 12
[build]
bin = "shop"
features = ["metrics"]
[deploy]
release_command = "shop migrate"
[env]
MODE = "production"
[processes]
web = "shop serve --port 8080"
worker = "shop work"
[http_service]
min_machines_running = 1
max_machines_running = 4
  [[http_service.checks]]
  path = "/healthz"
  interval = "15s"
  timeout = "3s"
[[vm]]
memory = 512
cpus = 1
[resources]
postgres = true
redis = true
[[mounts]]
source = "data"
destination = "/data"
processes = ["web"]
[[jobs]]
name = "nightly"
command = "shop nightly"
schedule = "0 3 * * *"
tasks = 2
max_retries = 1
timeout = "30m"
[jobs.env]
LEVEL = "deep"
[[jobs]]
name = "reindex"
command = "shop reindex 'all items'"
"#;

fn shop() -> AppSpec {
    crate::parse_spec("berth.toml", SHOP).unwrap().spec
}

#[test]
fn kubernetes_manifests_read_back_as_the_same_model() {
    let spec = shop();
    let yaml = to_manifests(Manifests::Kubernetes, &spec, "shop", "shop");
    for kind in [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
        "CronJob",
        "Job",
    ] {
        assert!(
            yaml.contains(&format!("kind: {kind}\n")),
            "{kind} missing:\n{yaml}"
        );
    }
    assert!(yaml.contains("name: shop-worker"), "{yaml}");
    let (app, again) = parse_manifests("k8s.yaml", &yaml, Some("shop")).unwrap();
    assert_eq!(app, "shop");
    assert_eq!(again, spec, "{yaml}");
}

#[test]
fn cloud_run_services_and_jobs_read_back_as_the_same_model() {
    let mut spec = shop();
    spec.processes.remove("worker");
    spec.kill_timeout = AppSpec::default().kill_timeout;
    spec.mounts[0].processes = None;
    spec.http.scaling.min = 0;
    spec.http.scaling.auto_stop = true;
    spec.http.scaling.hard_limit = Some(50);
    spec.http.scaling.soft_limit = Some(40);
    let yaml = to_manifests(Manifests::CloudRun, &spec, "shop", "shop");
    assert!(yaml.contains("serving.knative.dev/v1"), "{yaml}");
    assert!(
        yaml.contains("autoscaling.knative.dev/minScale: '0'"),
        "{yaml}"
    );
    assert!(yaml.contains("containerConcurrency: 50"), "{yaml}");
    let (_, again) = parse_manifests("service.yaml", &yaml, Some("shop")).unwrap();
    assert_eq!(again, spec, "{yaml}");

    // A worker cannot be a Cloud Run service: it is named, not lost silently.
    let yaml = to_manifests(Manifests::CloudRun, &shop(), "shop", "shop");
    assert!(
        yaml.contains("# Not exported: process group `worker`"),
        "{yaml}"
    );
}

#[test]
fn the_default_web_process_stays_the_default() {
    let spec = crate::parse_spec("berth.toml", "app = \"hello\"\n")
        .unwrap()
        .spec;
    for kind in [Manifests::Kubernetes, Manifests::CloudRun] {
        let yaml = to_manifests(kind, &spec, "hello", "hello");
        let (_, again) = parse_manifests("m.yaml", &yaml, Some("hello")).unwrap();
        assert_eq!(again, spec, "{yaml}");
    }
    let err = parse_manifests("m.yaml", "kind: ConfigMap\n---\nkind: [", None).unwrap_err();
    assert!(err.to_string().starts_with("m.yaml:4:1:"), "{err}");
}
