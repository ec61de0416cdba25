//! Discovery labels of a container, as Prometheus' Docker discovery makes them.
//!
//! Prometheus makes one target per network of a container and per TCP port it exposes;
//! Promtail keeps one reader per container, with the labels of the first target it was given.
//! That first target depends on Go's map order (random); logferry takes the networks in name
//! order and the ports in Docker's order, so the labels stay the same from one start to the
//! next. A container attached to no network (sharing another container's namespace) is read
//! too, with the container labels alone; Prometheus makes no target for it and Promtail does
//! not read it.

use crate::discover::meta::sanitize;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// One entry of `GET /containers/json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    pub id: String,
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub labels: Option<HashMap<String, String>>,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub host_config: HostConfig,
    #[serde(default)]
    pub network_settings: NetworkSettings,
}

impl ContainerSummary {
    /// The name Docker lists first, with its leading `/` as Prometheus labels it.
    pub fn name(&self) -> Option<&str> {
        self.names.first().map(String::as_str)
    }

    pub fn running(&self) -> bool {
        self.state == "running"
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Port {
    #[serde(default, rename = "IP")]
    pub ip: String,
    #[serde(default)]
    pub private_port: u16,
    #[serde(default)]
    pub public_port: u16,
    #[serde(default, rename = "Type")]
    pub kind: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    #[serde(default)]
    pub network_mode: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSettings {
    #[serde(default)]
    pub networks: Option<BTreeMap<String, Endpoint>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Endpoint {
    #[serde(default, rename = "NetworkID")]
    pub network_id: String,
    #[serde(default, rename = "IPAddress")]
    pub ip_address: String,
}

/// One entry of `GET /networks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Network {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub ingress: bool,
    #[serde(default)]
    pub labels: Option<HashMap<String, String>>,
}

/// What the labels need besides the container: the `port` and `host_networking_host` of the
/// config, the daemon's networks.
pub struct Context<'a> {
    pub port: u16,
    pub host_networking_host: &'a str,
    pub networks: &'a [Network],
}

/// The discovered `__meta_docker_*` labels and `__address__` of a container.
pub fn labels(c: &ContainerSummary, cx: &Context) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert("__meta_docker_container_id".into(), c.id.clone());
    out.insert(
        "__meta_docker_container_name".into(),
        c.name().unwrap_or_default().to_string(),
    );
    out.insert(
        "__meta_docker_container_network_mode".into(),
        c.host_config.network_mode.clone(),
    );
    for (key, value) in c.labels.iter().flatten() {
        out.insert(
            format!("__meta_docker_container_label_{}", sanitize(key)),
            value.clone(),
        );
    }
    let Some((_, endpoint)) = c.network_settings.networks.iter().flatten().next() else {
        return out;
    };
    out.insert(
        "__meta_docker_network_ip".into(),
        endpoint.ip_address.clone(),
    );
    if let Some(n) = cx.networks.iter().find(|n| n.id == endpoint.network_id) {
        out.insert("__meta_docker_network_id".into(), n.id.clone());
        out.insert("__meta_docker_network_name".into(), n.name.clone());
        out.insert("__meta_docker_network_scope".into(), n.scope.clone());
        out.insert(
            "__meta_docker_network_internal".into(),
            n.internal.to_string(),
        );
        out.insert(
            "__meta_docker_network_ingress".into(),
            n.ingress.to_string(),
        );
        for (key, value) in n.labels.iter().flatten() {
            out.insert(
                format!("__meta_docker_network_label_{}", sanitize(key)),
                value.clone(),
            );
        }
    }
    let address = match c.ports.iter().find(|p| p.kind == "tcp") {
        Some(p) => {
            out.insert(
                "__meta_docker_port_private".into(),
                p.private_port.to_string(),
            );
            if p.public_port > 0 {
                out.insert(
                    "__meta_docker_port_public".into(),
                    p.public_port.to_string(),
                );
                out.insert("__meta_docker_port_public_ip".into(), p.ip.clone());
            }
            join_host_port(&endpoint.ip_address, p.private_port)
        }
        None if c.host_config.network_mode == "host" => cx.host_networking_host.to_string(),
        None => join_host_port(&endpoint.ip_address, cx.port),
    };
    out.insert("__address__".into(), address);
    out
}

/// The discovered labels a job's relabeling can read: all of them when a rule matches label
/// names by regex, else those its rules name. Every `__` label is dropped after relabeling,
/// so the others would only cost a copy per line.
pub struct Wanted(Option<std::collections::HashSet<String>>);

impl Wanted {
    pub fn from_rules(rules: &[crate::relabel::RelabelConfig]) -> Wanted {
        use crate::relabel::Action;
        let by_regex = rules.iter().any(|r| {
            matches!(
                r.action,
                Action::LabelMap | Action::LabelDrop | Action::LabelKeep
            )
        });
        if by_regex {
            return Wanted(None);
        }
        Wanted(Some(
            rules
                .iter()
                .flat_map(|r| r.source_labels.iter().chain([&r.target_label]))
                .cloned()
                .collect(),
        ))
    }

    pub fn wants(&self, name: &str) -> bool {
        self.0.as_ref().is_none_or(|names| names.contains(name))
    }

    /// The labels of `all` relabeling can read.
    pub fn keep(&self, all: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        all.iter()
            .filter(|(name, _)| self.wants(name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// `host:port`, with an IPv6 host in brackets.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(json: &str) -> ContainerSummary {
        serde_json::from_str(json).unwrap()
    }

    const NETWORKS: &str = r#"[{"Name":"web_default","Id":"n1","Scope":"local","Internal":false,
        "Ingress":false,"Labels":{"com.docker.compose.network":"default"}},
        {"Name":"host","Id":"n2","Scope":"local"}]"#;

    #[test]
    fn a_compose_container_gets_prometheus_labels() {
        let networks: Vec<Network> = serde_json::from_str(NETWORKS).unwrap();
        let c = listed(
            r#"{"Id":"abc","Names":["/web-app-1"],"State":"running",
            "Labels":{"com.docker.compose.service":"app","com.docker.compose.project":"web"},
            "Ports":[{"PrivatePort":53,"Type":"udp"},{"IP":"0.0.0.0","PrivatePort":8080,"PublicPort":80,"Type":"tcp"}],
            "HostConfig":{"NetworkMode":"web_default"},
            "NetworkSettings":{"Networks":{"web_default":{"NetworkID":"n1","IPAddress":"172.18.0.2"}}}}"#,
        );
        let cx = Context {
            port: 80,
            host_networking_host: "localhost",
            networks: &networks,
        };
        let l = labels(&c, &cx);
        let get = |k: &str| l.get(k).map(String::as_str);
        assert_eq!(get("__meta_docker_container_name"), Some("/web-app-1"));
        assert_eq!(
            get("__meta_docker_container_label_com_docker_compose_service"),
            Some("app")
        );
        assert_eq!(get("__meta_docker_network_name"), Some("web_default"));
        assert_eq!(
            get("__meta_docker_network_label_com_docker_compose_network"),
            Some("default")
        );
        assert_eq!(get("__meta_docker_network_internal"), Some("false"));
        assert_eq!(get("__meta_docker_port_private"), Some("8080"));
        assert_eq!(get("__meta_docker_port_public"), Some("80"));
        assert_eq!(get("__meta_docker_port_public_ip"), Some("0.0.0.0"));
        assert_eq!(get("__address__"), Some("172.18.0.2:8080"));
    }

    #[test]
    fn only_labels_relabeling_reads_are_kept() {
        let rules = |yaml: &str| -> Vec<crate::relabel::RelabelConfig> {
            serde_yaml_ng::from_str(yaml).unwrap()
        };
        let all: BTreeMap<String, String> = [
            ("__meta_docker_container_name", "/web"),
            ("__meta_docker_container_id", "abc"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let named = Wanted::from_rules(&rules(
            "- {source_labels: [__meta_docker_container_name], target_label: container}",
        ));
        assert_eq!(
            named.keep(&all).keys().collect::<Vec<_>>(),
            ["__meta_docker_container_name"]
        );
        let mapped =
            Wanted::from_rules(&rules("- {action: labelmap, regex: '__meta_docker_(.+)'}"));
        assert_eq!(mapped.keep(&all), all);
    }

    #[test]
    fn addresses_without_a_tcp_port() {
        let networks: Vec<Network> = serde_json::from_str(NETWORKS).unwrap();
        let cx = Context {
            port: 9100,
            host_networking_host: "node1",
            networks: &networks,
        };
        let host = listed(
            r#"{"Id":"h","Names":["/exporter"],"HostConfig":{"NetworkMode":"host"},
            "NetworkSettings":{"Networks":{"host":{"NetworkID":"n2","IPAddress":""}}}}"#,
        );
        assert_eq!(labels(&host, &cx)["__address__"], "node1");
        let v6 = listed(
            r#"{"Id":"v","Names":["/v6"],"HostConfig":{"NetworkMode":"web_default"},
            "NetworkSettings":{"Networks":{"web_default":{"NetworkID":"n1","IPAddress":"fd00::2"}}}}"#,
        );
        assert_eq!(labels(&v6, &cx)["__address__"], "[fd00::2]:9100");
        let shared = listed(
            r#"{"Id":"s","Names":["/sidecar"],"HostConfig":{"NetworkMode":"container:h"},
            "NetworkSettings":{"Networks":{}}}"#,
        );
        let l = labels(&shared, &cx);
        assert_eq!(l["__meta_docker_container_network_mode"], "container:h");
        assert!(!l.contains_key("__address__"));
    }
}
