//! Meta labels of a file from where it lives, for `relabel_configs`: no Docker socket and no
//! Kubernetes API needed.
//!
//! - `/var/lib/docker/containers/<id>/<id>-json.log`: read `config.v2.json` beside it and offer
//!   `__meta_docker_container_id`, `__meta_docker_container_name` (without the leading `/`),
//!   `__meta_docker_container_image`, and `__meta_docker_container_label_<name>` for each
//!   container label (Compose, Swarm and stack labels among them), the name sanitized as
//!   Prometheus does (anything but `[a-zA-Z0-9_]` becomes `_`).
//! - `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log`: `__meta_kubernetes_namespace`,
//!   `__meta_kubernetes_pod_name`, `__meta_kubernetes_pod_uid`,
//!   `__meta_kubernetes_pod_container_name`.
//!
//! A damaged or missing `config.v2.json` leaves the Docker labels out (logged once per file);
//! it never stops tailing. The file is read again when it changes (a container renamed, say).

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The part of Docker's `config.v2.json` that labels come from.
#[derive(Debug, Deserialize)]
struct ContainerConfig {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Config", default)]
    config: Option<InnerConfig>,
}

#[derive(Debug, Default, Deserialize)]
struct InnerConfig {
    #[serde(rename = "Image", default)]
    image: String,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

/// Anything but `[a-zA-Z0-9_]` becomes `_`, as Prometheus sanitizes label names.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The Kubernetes meta labels of a CRI log path, if it is one.
pub fn kubernetes_labels(path: &Path) -> Option<BTreeMap<String, String>> {
    let parts: Vec<&str> = path.iter().filter_map(|p| p.to_str()).collect();
    let pods = parts.iter().rposition(|p| *p == "pods")?;
    let (pod_dir, container, file) = (
        parts.get(pods + 1)?,
        parts.get(pods + 2)?,
        parts.get(pods + 3)?,
    );
    if pods + 4 != parts.len() || !file.ends_with(".log") {
        return None;
    }
    // <namespace>_<pod>_<uid>: names cannot hold `_`, the uid is last.
    let mut fields = pod_dir.splitn(3, '_');
    let (namespace, pod, uid) = (fields.next()?, fields.next()?, fields.next()?);
    if namespace.is_empty() || pod.is_empty() || uid.is_empty() {
        return None;
    }
    Some(BTreeMap::from([
        (
            "__meta_kubernetes_namespace".to_string(),
            namespace.to_string(),
        ),
        ("__meta_kubernetes_pod_name".to_string(), pod.to_string()),
        ("__meta_kubernetes_pod_uid".to_string(), uid.to_string()),
        (
            "__meta_kubernetes_pod_container_name".to_string(),
            container.to_string(),
        ),
    ]))
}

/// The `config.v2.json` beside a Docker json-file log, if the path is one.
fn docker_config_path(path: &Path) -> Option<PathBuf> {
    let file = path.file_name()?.to_str()?;
    let dir = path.parent()?;
    let id = dir.file_name()?.to_str()?;
    if file != format!("{id}-json.log") && !file.starts_with(&format!("{id}-json.log.")) {
        return None;
    }
    Some(dir.join("config.v2.json"))
}

fn docker_labels_from(text: &str) -> Result<BTreeMap<String, String>, String> {
    let c: ContainerConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    out.insert("__meta_docker_container_id".to_string(), c.id);
    out.insert(
        "__meta_docker_container_name".to_string(),
        c.name.trim_start_matches('/').to_string(),
    );
    let inner = c.config.unwrap_or_default();
    out.insert("__meta_docker_container_image".to_string(), inner.image);
    for (name, value) in inner.labels.unwrap_or_default() {
        out.insert(
            format!("__meta_docker_container_label_{}", sanitize(&name)),
            value,
        );
    }
    Ok(out)
}

#[derive(Debug)]
struct Cached {
    modified: Option<SystemTime>,
    len: u64,
    labels: BTreeMap<String, String>,
}

/// Reads and remembers container metadata, reading a `config.v2.json` again only when it
/// changed.
#[derive(Debug, Default)]
pub struct MetaCache {
    docker: HashMap<PathBuf, Cached>,
}

impl MetaCache {
    pub fn new() -> MetaCache {
        MetaCache::default()
    }

    /// Every meta label known for `path` (none for an ordinary file).
    pub fn labels(&mut self, path: &Path) -> BTreeMap<String, String> {
        if let Some(k8s) = kubernetes_labels(path) {
            return k8s;
        }
        let Some(config) = docker_config_path(path) else {
            return BTreeMap::new();
        };
        let meta = std::fs::metadata(&config).ok();
        let (modified, len) = (
            meta.as_ref().and_then(|m| m.modified().ok()),
            meta.as_ref().map_or(0, |m| m.len()),
        );
        if let Some(c) = self.docker.get(&config)
            && c.modified == modified
            && c.len == len
        {
            return c.labels.clone();
        }
        let labels = match std::fs::read_to_string(&config)
            .map_err(|e| e.to_string())
            .and_then(|t| docker_labels_from(&t))
        {
            Ok(labels) => labels,
            Err(error) => {
                tracing::warn!(path = %config.display(), %error, "no container metadata for this log (its labels are left out)");
                BTreeMap::new()
            }
        };
        self.docker.insert(
            config,
            Cached {
                modified,
                len,
                labels: labels.clone(),
            },
        );
        labels
    }

    /// Whether the metadata of `path` may have changed since it was last read.
    pub fn changed(&self, path: &Path) -> bool {
        let Some(config) = docker_config_path(path) else {
            return false;
        };
        let meta = std::fs::metadata(&config).ok();
        match self.docker.get(&config) {
            Some(c) => {
                c.modified != meta.as_ref().and_then(|m| m.modified().ok())
                    || c.len != meta.map_or(0, |m| m.len())
            }
            None => true,
        }
    }

    /// Forgets containers whose directory is gone.
    pub fn prune(&mut self) {
        self.docker
            .retain(|config, _| config.parent().is_some_and(|d| d.exists()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(kind: &str) -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/docker")
                .join(kind)
                .join("config.v2.json"),
        )
        .unwrap()
    }

    #[test]
    fn compose_container_labels() {
        let l = docker_labels_from(&fixture("compose")).unwrap();
        assert_eq!(l["__meta_docker_container_name"], "shop-web-1");
        assert_eq!(l["__meta_docker_container_image"], "nginx:1.27-alpine");
        assert_eq!(
            l["__meta_docker_container_label_com_docker_compose_service"],
            "web"
        );
        assert_eq!(
            l["__meta_docker_container_label_com_docker_compose_project"],
            "shop"
        );
        assert!(l["__meta_docker_container_id"].starts_with("3f4e1a"));
    }

    #[test]
    fn swarm_task_labels() {
        let l = docker_labels_from(&fixture("swarm")).unwrap();
        assert_eq!(
            l["__meta_docker_container_label_com_docker_swarm_service_name"],
            "monitoring_grafana"
        );
        assert_eq!(
            l["__meta_docker_container_label_com_docker_stack_namespace"],
            "monitoring"
        );
        assert!(
            l["__meta_docker_container_label_com_docker_swarm_task_name"]
                .starts_with("monitoring_grafana.1.")
        );
        assert!(l["__meta_docker_container_name"].starts_with("monitoring_grafana.1."));
    }

    #[test]
    fn a_plain_container_has_no_label_labels() {
        let l = docker_labels_from(&fixture("plain")).unwrap();
        assert_eq!(l["__meta_docker_container_name"], "redis");
        assert!(
            !l.keys()
                .any(|k| k.starts_with("__meta_docker_container_label_"))
        );
    }

    #[test]
    fn the_cache_reads_config_beside_the_log_and_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let id = "3f4e1a9c2b7d";
        let cdir = dir.path().join("containers").join(id);
        std::fs::create_dir_all(&cdir).unwrap();
        let log = cdir.join(format!("{id}-json.log"));
        std::fs::write(&log, "").unwrap();
        let mut cache = MetaCache::new();
        assert!(
            cache.labels(&log).is_empty(),
            "missing config.v2.json: no labels, no panic"
        );
        std::fs::write(cdir.join("config.v2.json"), "{not json").unwrap();
        assert!(cache.changed(&log));
        assert!(
            cache.labels(&log).is_empty(),
            "damaged config.v2.json: no labels"
        );
        std::fs::write(
            cdir.join("config.v2.json"),
            r#"{"ID":"3f4e1a9c2b7d","Name":"/renamed","Config":{"Image":"x"}}"#,
        )
        .unwrap();
        assert!(cache.changed(&log));
        assert_eq!(
            cache.labels(&log)["__meta_docker_container_name"],
            "renamed"
        );
        assert!(!cache.changed(&log));
        assert!(cache.labels(&cdir.join("other.log")).is_empty());
    }

    #[test]
    fn cri_paths() {
        let l = kubernetes_labels(Path::new("/var/log/pods/kube-system_coredns-5d78c9869d-x7x2q_0b9f4c2e-1d3a-4b7e-9a51-6f0e2c8d1a77/coredns/0.log")).unwrap();
        assert_eq!(l["__meta_kubernetes_namespace"], "kube-system");
        assert_eq!(l["__meta_kubernetes_pod_name"], "coredns-5d78c9869d-x7x2q");
        assert_eq!(
            l["__meta_kubernetes_pod_uid"],
            "0b9f4c2e-1d3a-4b7e-9a51-6f0e2c8d1a77"
        );
        assert_eq!(l["__meta_kubernetes_pod_container_name"], "coredns");
        assert!(kubernetes_labels(Path::new("/var/log/pods/x/y.log")).is_none());
        assert!(kubernetes_labels(Path::new("/var/log/syslog")).is_none());
    }

    #[test]
    fn sanitized_names() {
        assert_eq!(
            sanitize("com.docker.compose.service"),
            "com_docker_compose_service"
        );
        assert_eq!(
            sanitize("org.opencontainers.image.version"),
            "org_opencontainers_image_version"
        );
    }
}
