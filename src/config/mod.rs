//! The configuration file: Promtail's YAML, read unchanged.
//!
//! Every key Promtail documents for the sections logferry runs is known here. Keys Promtail has
//! that logferry does not run yet fail with "not supported yet", keys that mean nothing for
//! logferry (gRPC settings, for one) are accepted and ignored, and anything else is an unknown
//! key. Errors name the file, line, column and key path.

mod globs;
mod model;
mod yaml11;

pub use crate::expand::expand_env;
pub use crate::units::{ByteSize, GoDuration};
pub use globs::{check_glob, expand_braces};
pub use model::*;

use std::path::{Path, PathBuf};

/// A configuration that could not be loaded, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read config: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not fit: `file:line:column: key.path: problem`.
    #[error("{file}:{line}:{column}: {key}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    /// The YAML fits but a value is wrong in context (e.g. two jobs with one name).
    #[error("{file}: {key}: {message}")]
    Semantic {
        file: String,
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads and checks a config file, expanding `${VAR}` references first when `expand_env`.
    pub fn load(path: &Path, expand_env: bool) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let text = if expand_env {
            crate::expand::expand_env(&text, |name| std::env::var(name).ok())
        } else {
            text
        };
        Config::parse(&text, &file)
    }

    /// Parses and checks config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        // An empty file is an empty mapping, as for Promtail.
        let text = if text.trim().is_empty() { "{}" } else { text };
        // Stage options see YAML 1.1 booleans as Promtail's parser reads them.
        let rewritten = yaml11::booleans_in_stages(text);
        let text = rewritten.as_str();
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = err.path().to_string();
            let inner = err.into_inner();
            let (line, column) = inner
                .location()
                .map(|l| {
                    // A bad glob is reported at its labels map; point at the label itself.
                    let hint = [PATH_EXCLUDE_LABEL, PATH_LABEL]
                        .into_iter()
                        .find(|k| inner.to_string().contains(&format!("in {k} ")));
                    refine_location(text, l.line(), l.column(), hint.unwrap_or(&key))
                })
                .unwrap_or((0, 0));
            let message = inner.to_string();
            let mut message = match message.rfind(" at line ") {
                Some(pos) => message[..pos].to_string(),
                None => message,
            };
            // The YAML library prefixes its own (shorter) path; ours is given separately.
            if let Some((prefix, rest)) = message.split_once(": ")
                && !prefix.contains(' ')
                && key.starts_with(prefix)
            {
                message = rest.to_string();
            }
            ConfigError::Invalid {
                file: origin.to_string(),
                line,
                column,
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message,
            }
        })?;
        if let Some(client) = config.client.take() {
            config.clients.insert(0, client);
        }
        config.check(origin)?;
        Ok(config)
    }

    fn check(&self, origin: &str) -> Result<(), ConfigError> {
        let semantic = |key: String, message: String| ConfigError::Semantic {
            file: origin.to_string(),
            key,
            message,
        };
        let mut names = std::collections::HashSet::new();
        for (i, job) in self.scrape_configs.iter().enumerate() {
            if job.job_name.is_empty() {
                return Err(semantic(
                    format!("scrape_configs[{i}].job_name"),
                    "must not be empty".into(),
                ));
            }
            if !names.insert(job.job_name.as_str()) {
                return Err(semantic(
                    format!("scrape_configs[{i}].job_name"),
                    format!(
                        "found multiple scrape configs with job name {:?}",
                        job.job_name
                    ),
                ));
            }
        }
        for (i, job) in self.scrape_configs.iter().enumerate() {
            if let Some(syslog) = &job.syslog {
                syslog.check().map_err(|(key, message)| {
                    semantic(format!("scrape_configs[{i}].syslog.{key}"), message)
                })?;
            }
        }
        if self.positions.filename.as_os_str().is_empty() {
            return Err(semantic(
                "positions.filename".into(),
                "must not be empty".into(),
            ));
        }
        for (i, client) in self.clients.iter().enumerate() {
            match reqwest::Url::parse(&client.url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
                }
                Ok(_) => {
                    return Err(semantic(
                        format!("clients[{i}].url"),
                        format!(
                            "{:?} must be an http:// or https:// URL with a host",
                            client.url
                        ),
                    ));
                }
                Err(e) => {
                    return Err(semantic(
                        format!("clients[{i}].url"),
                        format!("{:?}: {e}", client.url),
                    ));
                }
            }
            let compression = match (client.encoding, client.compression) {
                (Encoding::Protobuf, None | Some(Compression::Snappy)) => Ok(()),
                (Encoding::Protobuf, Some(_)) => {
                    Err("encoding protobuf is always snappy-compressed (Loki accepts nothing else)")
                }
                (Encoding::Json, None | Some(Compression::Gzip) | Some(Compression::None)) => {
                    Ok(())
                }
                (Encoding::Json, Some(Compression::Snappy)) => {
                    Err("encoding json takes compression gzip or none")
                }
            };
            compression.map_err(|m| semantic(format!("clients[{i}].compression"), m.into()))?;
            for name in client.external_labels.keys() {
                if !crate::labels::is_valid_name(name) {
                    return Err(semantic(
                        format!("clients[{i}].external_labels"),
                        format!("invalid label name {name:?}"),
                    ));
                }
            }
        }
        for (i, es) in self.elasticsearch.iter().enumerate() {
            check_elasticsearch(es)
                .map_err(|(key, message)| semantic(format!("elasticsearch[{i}].{key}"), message))?;
        }
        Ok(())
    }

    /// The configuration used when no `-config.file` is given: tail `/var/log/*log`, keep
    /// positions in `state_dir`, print entries to standard output.
    pub fn builtin_default(state_dir: &Path) -> Config {
        let mut config = Config::parse(BUILTIN_DEFAULT, "(built-in default config)")
            .unwrap_or_else(|err| unreachable!("the built-in config is valid: {err}"));
        config.positions.filename = state_dir.join("positions.yaml");
        config
    }

    /// The effective configuration as YAML, secrets replaced by `<secret>`.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self)
            .unwrap_or_else(|err| format!("# cannot print config: {err}\n"))
    }
}

/// Checks one `elasticsearch:` entry; the error names the key under it.
fn check_elasticsearch(es: &ElasticsearchConfig) -> Result<(), (&'static str, String)> {
    if es.url.as_slice().is_empty() {
        return Err(("url", "needs at least one URL".into()));
    }
    for url in es.url.as_slice() {
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            Ok(_) => {
                return Err((
                    "url",
                    format!("{url:?} must be an http:// or https:// URL with a host"),
                ));
            }
            Err(e) => return Err(("url", format!("{url:?}: {e}"))),
        }
    }
    if es.index.is_some() && es.data_stream.is_some() {
        return Err((
            "data_stream",
            "index and data_stream exclude each other".into(),
        ));
    }
    if let Some(index) = &es.index {
        check_index_pattern(index).map_err(|m| ("index", m))?;
    }
    if let Some(ds) = &es.data_stream {
        for (key, part) in [
            ("data_stream.type", &ds.kind),
            ("data_stream.dataset", &ds.dataset),
            ("data_stream.namespace", &ds.namespace),
        ] {
            if part.is_empty() || part.contains(['-', '%']) {
                return Err((key, format!("{part:?}: must be non-empty, without - or %")));
            }
        }
        check_index_pattern(&ds.name()).map_err(|m| ("data_stream", m))?;
    }
    if es.compression == Compression::Snappy {
        return Err(("compression", "takes gzip or none".into()));
    }
    let credentials = [
        es.basic_auth.is_some(),
        es.api_key.is_some(),
        es.api_key_file.is_some(),
        es.bearer_token.is_some(),
        es.bearer_token_file.is_some(),
    ];
    if credentials.iter().filter(|c| **c).count() > 1 {
        return Err((
            "api_key",
            "set at most one of basic_auth, api_key, api_key_file, bearer_token, bearer_token_file"
                .into(),
        ));
    }
    if es.batch_size.0 == 0 {
        return Err(("batch_size", "must be above 0".into()));
    }
    Ok(())
}

/// Checks an Elasticsearch index name pattern: the date placeholders it knows, and the
/// characters Elasticsearch refuses in index names.
fn check_index_pattern(pattern: &str) -> Result<(), String> {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('Y' | 'y' | 'm' | 'd' | 'H' | '%') => {}
                Some(other) => {
                    return Err(format!(
                        "{pattern:?}: unknown placeholder %{other} (known: %Y %y %m %d %H %%)"
                    ));
                }
                None => return Err(format!("{pattern:?}: ends with a lone %")),
            }
        } else if c.is_uppercase() || "\\/*?\"<>| ,#:".contains(c) {
            return Err(format!(
                "{pattern:?}: index names are lowercase, without spaces or any of \\/*?\"<>|,#:"
            ));
        }
    }
    if pattern.is_empty() || pattern.starts_with(['-', '_', '+']) || pattern == "." {
        return Err(format!(
            "{pattern:?}: an index name may not be empty or start with -, _ or +"
        ));
    }
    Ok(())
}

impl SyslogConfig {
    /// What serde cannot check: the address resolves, TLS has what it needs and runs on TCP.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if let Err(e) = self.socket_addr() {
            return Err(("listen_address", e));
        }
        if self.max_message_length == 0 {
            return Err(("max_message_length", "must be more than 0".into()));
        }
        if let Some(tls) = &self.tls_config {
            if self.listen_protocol == SyslogProtocol::Udp {
                return Err(("tls_config", "TLS needs listen_protocol: tcp".into()));
            }
            if tls.cert_file.is_none() || tls.key_file.is_none() {
                return Err((
                    "tls_config",
                    "a listener needs both cert_file and key_file".into(),
                ));
            }
            if tls.client_auth.is_some() && tls.ca_file.is_none() {
                return Err((
                    "tls_config.client_auth",
                    "client certificates are checked against ca_file, which is missing".into(),
                ));
            }
        }
        Ok(())
    }

    /// The address to bind: `host:port`, `[v6]:port`, or `:port` for every IPv4 address.
    pub fn socket_addr(&self) -> Result<std::net::SocketAddr, String> {
        use std::net::ToSocketAddrs;
        let text = self.listen_address.trim();
        let text = match text.strip_prefix(':') {
            Some(port) => format!("0.0.0.0:{port}"),
            None => text.to_string(),
        };
        match text.to_socket_addrs() {
            Ok(mut addrs) => addrs
                .next()
                .ok_or_else(|| format!("{:?} resolves to no address", self.listen_address)),
            Err(e) => Err(format!("{:?} is not host:port: {e}", self.listen_address)),
        }
    }
}

/// The YAML library reports some errors at the start of the enclosing mapping; point at the
/// offending key itself when it can be found from there on.
fn refine_location(text: &str, line: usize, column: usize, key: &str) -> (usize, usize) {
    let last = key.rsplit('.').next().unwrap_or(key);
    let last = last.split('[').next().unwrap_or(last);
    if last.is_empty() {
        return (line, column);
    }
    let wanted = format!("{last}:");
    for (i, text_line) in text.lines().enumerate().skip(line.saturating_sub(1)) {
        let trimmed = text_line.trim_start();
        let body = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        if body.starts_with(&wanted) {
            return (i + 1, text_line.len() - body.len() + 1);
        }
    }
    (line, column)
}

/// The built-in default configuration (see [`Config::builtin_default`]).
pub const BUILTIN_DEFAULT: &str = include_str!("../../config/default.yaml");

/// Where logferry keeps state when the config does not say: systemd's `$STATE_DIRECTORY`, then
/// `/var/lib/logferry` when it can be written, then the user's state directory, then `/tmp`.
pub fn default_state_dir() -> PathBuf {
    let writable = |dir: &Path| std::fs::create_dir_all(dir).is_ok() && is_writable_dir(dir);
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").map(PathBuf::from)
        && writable(&dir)
    {
        return dir;
    }
    let system = PathBuf::from("/var/lib/logferry");
    if writable(&system) {
        return system;
    }
    let user = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|d| d.join("logferry"));
    if let Some(dir) = user
        && writable(&dir)
    {
        return dir;
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("logferry-{uid}"))
}

fn is_writable_dir(dir: &Path) -> bool {
    let probe = dir.join(format!(".logferry-probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

#[cfg(test)]
mod tests;
