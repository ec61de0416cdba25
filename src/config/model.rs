//! The configuration's types, shaped as Promtail's YAML.

use crate::units::{ByteSize, GoDuration};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A value that means nothing for logferry (gRPC settings, say): accepted and ignored.
pub type Ignored = Option<serde_yaml_ng::Value>;

/// A key Promtail has and logferry does not run yet: present at all, it is an error, so a
/// config never silently loses what it asked for.
#[derive(Debug, Clone, Copy)]
pub enum Unsupported {}

impl PartialEq for Unsupported {
    fn eq(&self, _: &Self) -> bool {
        match *self {}
    }
}

impl<'de> Deserialize<'de> for Unsupported {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(de::Error::custom("not supported yet"))
    }
}

impl Serialize for Unsupported {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        match *self {}
    }
}

/// A list that logferry does not run yet; only an empty one is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct UnsupportedUnlessEmpty;

impl<'de> Deserialize<'de> for UnsupportedUnlessEmpty {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Option::<Vec<serde_yaml_ng::Value>>::deserialize(deserializer)?;
        match value {
            None => Ok(UnsupportedUnlessEmpty),
            Some(v) if v.is_empty() => Ok(UnsupportedUnlessEmpty),
            Some(_) => Err(de::Error::custom("not supported yet")),
        }
    }
}

/// A password or token: kept in memory, printed as `<secret>` everywhere.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<secret>")
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub positions: PositionsConfig,
    pub clients: Vec<ClientConfig>,
    /// Elasticsearch `_bulk` outputs (a logferry extension; Promtail has no such key).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub elasticsearch: Vec<ElasticsearchConfig>,
    /// Promtail's older single-client spelling; merged into `clients` at load.
    #[serde(skip_serializing)]
    pub client: Option<ClientConfig>,
    pub scrape_configs: Vec<ScrapeConfig>,
    pub target_config: TargetConfig,
    pub limits_config: LimitsConfig,
    pub global: GlobalConfig,
    #[serde(skip_serializing)]
    pub options: Ignored,
    #[serde(skip_serializing)]
    pub tracing: TracingConfig,
    #[serde(skip_serializing)]
    pub wal: WalConfig,
}

/// `server:` — the HTTP listener (metrics, readiness) and logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub http_listen_address: String,
    /// 0 disables the HTTP server.
    pub http_listen_port: u16,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    /// Promtail's switch to turn its HTTP server off.
    pub disable: bool,
    pub enable_runtime_reload: bool,
    pub graceful_shutdown_timeout: Option<GoDuration>,
    #[serde(skip_serializing)]
    pub http_tls_config: Option<Unsupported>,
    #[serde(skip_serializing)]
    pub http_path_prefix: Option<Unsupported>,
    #[serde(skip_serializing)]
    pub http_listen_network: Ignored,
    #[serde(skip_serializing)]
    pub http_listen_conn_limit: Ignored,
    #[serde(skip_serializing)]
    pub grpc_listen_network: Ignored,
    #[serde(skip_serializing)]
    pub grpc_listen_address: Ignored,
    #[serde(skip_serializing)]
    pub grpc_listen_port: Ignored,
    #[serde(skip_serializing)]
    pub grpc_listen_conn_limit: Ignored,
    #[serde(skip_serializing)]
    pub grpc_tls_config: Ignored,
    #[serde(skip_serializing)]
    pub tls_cipher_suites: Ignored,
    #[serde(skip_serializing)]
    pub tls_min_version: Ignored,
    #[serde(skip_serializing)]
    pub register_instrumentation: Ignored,
    #[serde(skip_serializing)]
    pub http_server_read_timeout: Ignored,
    #[serde(skip_serializing)]
    pub http_server_write_timeout: Ignored,
    #[serde(skip_serializing)]
    pub http_server_idle_timeout: Ignored,
    #[serde(skip_serializing)]
    pub grpc_server_max_recv_msg_size: Ignored,
    #[serde(skip_serializing)]
    pub grpc_server_max_send_msg_size: Ignored,
    #[serde(skip_serializing)]
    pub grpc_server_max_concurrent_streams: Ignored,
    #[serde(skip_serializing)]
    pub grpc_server_max_connection_idle: Ignored,
    #[serde(skip_serializing)]
    pub grpc_server_max_connection_age: Ignored,
    #[serde(skip_serializing)]
    pub grpc_server_max_connection_age_grace: Ignored,
    #[serde(skip_serializing)]
    pub grpc_server_keepalive_time: Ignored,
    #[serde(skip_serializing)]
    pub grpc_server_keepalive_timeout: Ignored,
    #[serde(skip_serializing)]
    pub grpc_server_min_time_between_pings: Ignored,
    #[serde(skip_serializing)]
    pub grpc_server_ping_without_stream_allowed: Ignored,
    #[serde(skip_serializing)]
    pub log_source_ips_enabled: Ignored,
    #[serde(skip_serializing)]
    pub log_source_ips_header: Ignored,
    #[serde(skip_serializing)]
    pub log_source_ips_regex: Ignored,
    #[serde(skip_serializing)]
    pub log_request_at_info_level_enabled: Ignored,
    #[serde(skip_serializing)]
    pub profiling_enabled: Ignored,
    #[serde(skip_serializing)]
    pub health_check_target: Ignored,
    #[serde(skip_serializing)]
    pub external_url: Ignored,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_listen_address: "127.0.0.1".into(),
            http_listen_port: 9080,
            log_level: None,
            log_format: None,
            disable: false,
            enable_runtime_reload: false,
            graceful_shutdown_timeout: None,
            http_tls_config: None,
            http_path_prefix: None,
            http_listen_network: None,
            http_listen_conn_limit: None,
            grpc_listen_network: None,
            grpc_listen_address: None,
            grpc_listen_port: None,
            grpc_listen_conn_limit: None,
            grpc_tls_config: None,
            tls_cipher_suites: None,
            tls_min_version: None,
            register_instrumentation: None,
            http_server_read_timeout: None,
            http_server_write_timeout: None,
            http_server_idle_timeout: None,
            grpc_server_max_recv_msg_size: None,
            grpc_server_max_send_msg_size: None,
            grpc_server_max_concurrent_streams: None,
            grpc_server_max_connection_idle: None,
            grpc_server_max_connection_age: None,
            grpc_server_max_connection_age_grace: None,
            grpc_server_keepalive_time: None,
            grpc_server_keepalive_timeout: None,
            grpc_server_min_time_between_pings: None,
            grpc_server_ping_without_stream_allowed: None,
            log_source_ips_enabled: None,
            log_source_ips_header: None,
            log_source_ips_regex: None,
            log_request_at_info_level_enabled: None,
            profiling_enabled: None,
            health_check_target: None,
            external_url: None,
        }
    }
}

/// `positions:` — where read progress is remembered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PositionsConfig {
    pub filename: PathBuf,
    pub sync_period: GoDuration,
    pub ignore_invalid_yaml: bool,
}

impl Default for PositionsConfig {
    fn default() -> Self {
        PositionsConfig {
            filename: PathBuf::from("/var/log/positions.yaml"),
            sync_period: GoDuration::from_secs(10),
            ignore_invalid_yaml: false,
        }
    }
}

/// One entry of `clients:` — a Loki push endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default = "ClientConfig::default_batchwait")]
    pub batchwait: GoDuration,
    #[serde(default = "ClientConfig::default_batchsize")]
    pub batchsize: ByteSize,
    #[serde(default = "ClientConfig::default_timeout")]
    pub timeout: GoDuration,
    #[serde(default)]
    pub backoff_config: BackoffConfig,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<TlsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub drop_rate_limited_batches: bool,
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    #[serde(default, skip_serializing)]
    pub authorization: Option<Unsupported>,
    #[serde(default, skip_serializing)]
    pub oauth2: Option<Unsupported>,
    #[serde(default, skip_serializing)]
    pub follow_redirects: Ignored,
    #[serde(default, skip_serializing)]
    pub enable_http2: Ignored,
    #[serde(default, skip_serializing)]
    pub stream_lag_labels: Ignored,
}

impl ClientConfig {
    fn default_batchwait() -> GoDuration {
        GoDuration::from_secs(1)
    }
    fn default_batchsize() -> ByteSize {
        ByteSize(1 << 20)
    }
    fn default_timeout() -> GoDuration {
        GoDuration::from_secs(10)
    }
}

/// One entry of `elasticsearch:` — an Elasticsearch cluster fed through its `_bulk` API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// One node, or several tried in turn.
    pub url: Urls,
    /// The index written to, with `%Y`, `%y`, `%m`, `%d`, `%H` taken from the entry's
    /// timestamp (UTC); `logferry-%Y.%m.%d` when neither this nor `data_stream` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// Writes to the data stream `<type>-<dataset>-<namespace>` instead of an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_stream: Option<DataStreamConfig>,
    /// The ingest pipeline every document goes through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// An API key as Elasticsearch hands it out (the base64 `encoded` form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<TlsConfig>,
    /// `gzip` (the default) or `none`.
    #[serde(default = "ElasticsearchConfig::default_compression")]
    pub compression: Compression,
    /// Bytes of NDJSON in one request, at most (a single larger document goes alone).
    #[serde(default = "ElasticsearchConfig::default_batch_size")]
    pub batch_size: ByteSize,
    #[serde(default = "ElasticsearchConfig::default_batch_wait")]
    pub batch_wait: GoDuration,
    #[serde(default = "ElasticsearchConfig::default_timeout")]
    pub timeout: GoDuration,
    #[serde(default)]
    pub backoff_config: BackoffConfig,
    /// Tries of a document (or request) that keeps failing with 429 or 5xx before it is
    /// dropped; 0 retries until delivered. Overrides `backoff_config.max_retries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl ElasticsearchConfig {
    fn default_compression() -> Compression {
        Compression::Gzip
    }
    fn default_batch_size() -> ByteSize {
        ByteSize(2 << 20)
    }
    fn default_batch_wait() -> GoDuration {
        GoDuration::from_secs(1)
    }
    fn default_timeout() -> GoDuration {
        GoDuration::from_secs(30)
    }

    /// The index name pattern in force.
    pub fn index_pattern(&self) -> &str {
        self.index.as_deref().unwrap_or("logferry-%Y.%m.%d")
    }

    /// How many tries before giving up (0: never).
    pub fn effective_max_retries(&self) -> u32 {
        self.max_retries.unwrap_or(self.backoff_config.max_retries)
    }
}

/// `url:` of an Elasticsearch output: one URL or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "a URL or a list of URLs")]
pub enum Urls {
    One(String),
    Many(Vec<String>),
}

impl Urls {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Urls::One(u) => std::slice::from_ref(u),
            Urls::Many(v) => v,
        }
    }
}

/// `data_stream:` of an Elasticsearch output; the name is `<type>-<dataset>-<namespace>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataStreamConfig {
    #[serde(rename = "type")]
    pub kind: String,
    pub dataset: String,
    pub namespace: String,
}

impl Default for DataStreamConfig {
    fn default() -> Self {
        DataStreamConfig {
            kind: "logs".into(),
            dataset: "generic".into(),
            namespace: "default".into(),
        }
    }
}

impl DataStreamConfig {
    pub fn name(&self) -> String {
        format!("{}-{}-{}", self.kind, self.dataset, self.namespace)
    }
}

/// `backoff_config:` of a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    pub min_period: GoDuration,
    pub max_period: GoDuration,
    /// 0 (the default) retries until delivered; N gives up after N tries, as Promtail does.
    pub max_retries: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            min_period: GoDuration::from_millis(500),
            max_period: GoDuration::from_secs(300),
            max_retries: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    #[serde(skip_serializing)]
    pub min_version: Ignored,
}

/// How a client encodes push requests (a logferry extension; Promtail always sends protobuf).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Protobuf,
    Json,
}

/// How a client compresses push requests (a logferry extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Snappy,
    Gzip,
    None,
}

/// One entry of `scrape_configs:` — a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: String,
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    /// Built (and so checked) once, when the config is resolved into what runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipeline_stages: Vec<serde_yaml_ng::Value>,
    #[serde(default, skip_serializing)]
    pub relabel_configs: Vec<crate::relabel::RelabelConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog: Option<SyslogConfig>,
    #[serde(default, skip_serializing)]
    pub gcplog: Option<Unsupported>,
    #[serde(default, skip_serializing)]
    pub loki_push_api: Option<Unsupported>,
    #[serde(default, skip_serializing)]
    pub windows_events: Option<Unsupported>,
    #[serde(default, skip_serializing)]
    pub kafka: Option<Unsupported>,
    #[serde(default, skip_serializing)]
    pub gelf: Option<Unsupported>,
    #[serde(default, skip_serializing)]
    pub cloudflare: Option<Unsupported>,
    #[serde(default, skip_serializing)]
    pub heroku_drain: Option<Unsupported>,
    #[serde(default, skip_serializing)]
    pub azure_event_hubs: Option<Unsupported>,
    #[serde(default, skip_serializing)]
    pub file_sd_configs: Option<Unsupported>,
    #[serde(default, skip_serializing)]
    pub consul_sd_configs: Option<Unsupported>,
    #[serde(default, skip_serializing)]
    pub consulagent_sd_configs: Option<Unsupported>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docker_sd_configs: Vec<DockerSdConfig>,
    #[serde(default, skip_serializing)]
    pub kubernetes_sd_configs: Option<Unsupported>,
    #[serde(default, skip_serializing)]
    pub decompression: Option<Unsupported>,
    #[serde(default, skip_serializing)]
    pub encoding: Option<Unsupported>,
}

/// `syslog:` of a scrape config — a listener for syslog messages (RFC 5424 and RFC 3164).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port` to listen on; required, as in Promtail.
    pub listen_address: String,
    #[serde(default)]
    pub listen_protocol: SyslogProtocol,
    /// A TCP connection that sends nothing for this long is closed.
    #[serde(default = "SyslogConfig::default_idle_timeout")]
    pub idle_timeout: GoDuration,
    /// Adds `__syslog_message_sd_<id>_<name>` labels from the structured data.
    #[serde(default)]
    pub label_structured_data: bool,
    /// Labels added to every message (before relabeling).
    #[serde(default)]
    pub labels: TargetLabels,
    /// Keep the timestamp the sender wrote instead of the time of receipt.
    #[serde(default)]
    pub use_incoming_timestamp: bool,
    /// Ship the whole message (header and structured data) instead of its MSG part.
    #[serde(default)]
    pub use_rfc5424_message: bool,
    /// Longest message accepted, in bytes; longer ones are counted and skipped.
    #[serde(default = "SyslogConfig::default_max_message_length")]
    pub max_message_length: usize,
    /// TCP with TLS: `cert_file` and `key_file`; with `ca_file`, clients must present a
    /// certificate signed by it (`client_auth: optional` lets clients without one in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<SyslogTlsConfig>,
    /// Promtail 2.9's choice of format; both formats are recognised by their first bytes,
    /// so either value is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog_format: Option<SyslogFormat>,
}

impl SyslogConfig {
    fn default_idle_timeout() -> GoDuration {
        GoDuration::from_secs(120)
    }
    fn default_max_message_length() -> usize {
        8192
    }
}

/// `listen_protocol:` of a syslog listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogProtocol {
    #[default]
    Tcp,
    Udp,
}

/// `syslog_format:` (Promtail 2.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFormat {
    Rfc5424,
    Rfc3164,
}

/// `tls_config:` of a syslog listener: the server side of TLS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogTlsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Clients must present a certificate signed by one of these.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// With `ca_file`: `required` (the default, as in Promtail) or `optional` (a client
    /// without a certificate is let in; one with a bad certificate is not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuth>,
    /// Client-side settings of the shared TLS block; meaningless for a listener.
    #[serde(skip_serializing)]
    pub server_name: Ignored,
    #[serde(skip_serializing)]
    pub insecure_skip_verify: Ignored,
    #[serde(skip_serializing)]
    pub min_version: Ignored,
}

/// Whether a TLS listener requires client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    Required,
    Optional,
}

/// One entry of `docker_sd_configs:` — a Docker Engine whose containers' logs are read
/// through its API (Prometheus' keys and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSdConfig {
    /// `unix:///var/run/docker.sock`, `tcp://host:2375`, `http://…` or `https://…`.
    pub host: String,
    /// The port of `__address__` for containers that publish no TCP port.
    #[serde(default = "DockerSdConfig::default_port")]
    pub port: u16,
    /// `__address__` of containers in the host's network namespace.
    #[serde(default = "DockerSdConfig::default_host_networking_host")]
    pub host_networking_host: String,
    /// Docker's container list filters, ANDed by name, ORed by value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<DockerFilter>,
    #[serde(default = "DockerSdConfig::default_refresh_interval")]
    pub refresh_interval: GoDuration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<TlsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    #[serde(default = "DockerSdConfig::default_follow_redirects")]
    pub follow_redirects: bool,
    #[serde(default, skip_serializing)]
    pub oauth2: Option<Unsupported>,
    /// HTTP/2 is never used to a Docker Engine (it speaks HTTP/1.1); accepted and ignored.
    #[serde(default, skip_serializing)]
    pub enable_http2: Ignored,
}

impl DockerSdConfig {
    fn default_port() -> u16 {
        80
    }
    fn default_host_networking_host() -> String {
        "localhost".into()
    }
    fn default_refresh_interval() -> GoDuration {
        GoDuration::from_secs(60)
    }
    fn default_follow_redirects() -> bool {
        true
    }
}

/// One entry of `filters:` of `docker_sd_configs`, e.g. `{name: label, values: [logs=on]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerFilter {
    pub name: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// `authorization:` of an HTTP client: a header `Authorization: <type> <credentials>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// `Bearer` when not given.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing)]
    pub credentials: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
}

/// `journal:` — read the systemd journal's files (Promtail's keys and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// With no saved cursor (or one older than this), reading starts this long before now.
    #[serde(default = "JournalConfig::default_max_age")]
    pub max_age: GoDuration,
    /// The line is a JSON object of all the entry's fields instead of its `MESSAGE`.
    #[serde(default)]
    pub json: bool,
    /// A journal directory; None reads the system's (`/var/log/journal`, `/run/log/journal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub labels: TargetLabels,
    #[serde(default, skip_serializing_if = "JournalMatches::is_empty")]
    pub matches: JournalMatches,
}

impl JournalConfig {
    fn default_max_age() -> GoDuration {
        GoDuration::from_secs(7 * 3600)
    }
}

/// `matches:` — space-separated `FIELD=value` terms, all of which an entry must have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalMatches(pub Vec<(String, String)>);

impl JournalMatches {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Promtail's syntax: terms split on spaces, each `FIELD=value`; a journal field name is
    /// upper-case letters, digits and `_`, not starting with a digit.
    pub fn parse(text: &str) -> Result<JournalMatches, String> {
        let mut terms = Vec::new();
        for term in text.split_whitespace() {
            let Some((field, value)) = term.split_once('=') else {
                return Err(format!("{term:?} is not FIELD=value"));
            };
            let valid = !field.is_empty()
                && !field.starts_with(|c: char| c.is_ascii_digit())
                && field
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                return Err(format!(
                    "{field:?} in {term:?} is not a journal field name (A-Z, 0-9, _)"
                ));
            }
            terms.push((field.to_string(), value.to_string()));
        }
        Ok(JournalMatches(terms))
    }
}

impl<'de> Deserialize<'de> for JournalMatches {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?.unwrap_or_default();
        JournalMatches::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for JournalMatches {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let terms: Vec<String> = self.0.iter().map(|(f, v)| format!("{f}={v}")).collect();
        serializer.serialize_str(&terms.join(" "))
    }
}

/// One entry of `static_configs:` — labels for a set of files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: TargetLabels,
}

/// A target's labels, with `__path__` and `__path_exclude__` checked as globs when read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TargetLabels(pub BTreeMap<String, String>);

/// The label holding a target's file glob.
pub const PATH_LABEL: &str = "__path__";
/// The label holding the glob of files a target leaves out.
pub const PATH_EXCLUDE_LABEL: &str = "__path_exclude__";

impl<'de> Deserialize<'de> for TargetLabels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map =
            Option::<BTreeMap<String, String>>::deserialize(deserializer)?.unwrap_or_default();
        for (name, value) in &map {
            if !crate::labels::is_valid_name(name) {
                return Err(de::Error::custom(format!("invalid label name {name:?}")));
            }
            if name == PATH_LABEL || name == PATH_EXCLUDE_LABEL {
                crate::config::check_glob(value).map_err(|err| {
                    de::Error::custom(format!("invalid glob in {name} {value:?}: {err}"))
                })?;
            }
        }
        Ok(TargetLabels(map))
    }
}

/// `target_config:` — how often discovery re-reads the globs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetConfig {
    pub sync_period: GoDuration,
    #[serde(skip_serializing)]
    pub stdin: Ignored,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            sync_period: GoDuration::from_secs(10),
            stdin: None,
        }
    }
}

/// `limits_config:`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Longest line kept whole, in bytes; 0 means the built-in ceiling.
    pub max_line_size: ByteSize,
    /// Truncate longer lines instead of dropping them.
    pub max_line_size_truncate: bool,
    #[serde(skip_serializing_if = "is_default")]
    pub readline_rate_enabled: bool,
    #[serde(skip_serializing)]
    pub readline_rate: Option<Unsupported>,
    #[serde(skip_serializing)]
    pub readline_burst: Option<Unsupported>,
    #[serde(skip_serializing)]
    pub readline_rate_drop: Option<Unsupported>,
    #[serde(skip_serializing)]
    pub max_streams: Option<Unsupported>,
}

/// `global:`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalConfig {
    pub file_watch_config: FileWatchConfig,
}

/// `global.file_watch_config:` — how often files are polled. logferry is woken by inotify and
/// polls only when inotify is unavailable, at `min_poll_frequency`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileWatchConfig {
    pub min_poll_frequency: GoDuration,
    pub max_poll_frequency: GoDuration,
}

impl Default for FileWatchConfig {
    fn default() -> Self {
        FileWatchConfig {
            min_poll_frequency: GoDuration::from_millis(250),
            max_poll_frequency: GoDuration::from_millis(250),
        }
    }
}

/// `tracing:` — only `enabled: false` is accepted.
#[derive(Debug, Clone, Default)]
pub struct TracingConfig;

impl<'de> Deserialize<'de> for TracingConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            enabled: bool,
        }
        let raw = Raw::deserialize(deserializer)?;
        if raw.enabled {
            return Err(de::Error::custom(
                "not supported yet: tracing.enabled: true",
            ));
        }
        Ok(TracingConfig)
    }
}

/// `wal:` — only a disabled WAL is accepted: logferry's positions already never move past
/// undelivered lines, so the files themselves are the write-ahead log.
#[derive(Debug, Clone, Default)]
pub struct WalConfig;

impl<'de> Deserialize<'de> for WalConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = serde_yaml_ng::Mapping::deserialize(deserializer)?;
        if raw.get("enabled").and_then(|v| v.as_bool()) == Some(true) {
            return Err(de::Error::custom("not supported yet: wal.enabled: true"));
        }
        Ok(WalConfig)
    }
}
