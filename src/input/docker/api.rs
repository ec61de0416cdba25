//! The few Docker Engine API calls discovery and reading need, over the Unix socket or TCP.
//!
//! Written over `reqwest` (already the project's HTTP client, with rustls) rather than with
//! `bollard`: five GET requests and two streamed bodies do not need a client of the whole
//! API, whose generated models would add a large crate to build and to the static binary;
//! and the HTTP client keys of the config (`tls_config`, `basic_auth`, `authorization`,
//! `proxy_url`, `follow_redirects`) map one to one onto reqwest's builder.
//!
//! Paths carry no API version: the daemon then answers in its own version, and the fields
//! read here are the same in every version since 1.24.

use super::meta::{ContainerSummary, Network};
use super::position::Position;
use crate::config::DockerSdConfig;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use std::time::Duration;

/// The longest wait for an answer that is not streamed. A daemon that is shutting down
/// accepts connections and never answers; after this long it counts as away, and the
/// listing is tried again.
const MAX_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The config cannot make a client; `key` is the config key at fault.
    #[error("{key}: {message}")]
    Config { key: &'static str, message: String },
    #[error("cannot reach the Docker daemon at {host}: {message}")]
    Unreachable { host: String, message: String },
    #[error("Docker daemon at {host} answered {status} to {what}: {message}")]
    Status {
        host: String,
        what: &'static str,
        status: u16,
        message: String,
    },
    #[error("Docker daemon at {host}: unexpected answer to {what}: {message}")]
    Decode {
        host: String,
        what: &'static str,
        message: String,
    },
}

/// A client of one Docker daemon.
#[derive(Clone)]
pub struct Api {
    config: DockerSdConfig,
    http: reqwest::Client,
    /// `http://docker` for a Unix socket, else the daemon's URL without a trailing `/`.
    base: String,
    /// The `host` of the config, for messages.
    host: String,
    authorization: Option<HeaderValue>,
    /// For requests that are not streamed: the refresh interval, at most [`MAX_WAIT`].
    timeout: Duration,
}

/// What reading a container's log needs to know from `GET /containers/{id}/json`.
#[derive(Debug, Clone)]
pub struct Inspected {
    pub tty: bool,
}

impl Api {
    pub fn new(config: &DockerSdConfig) -> Result<Api, ApiError> {
        Api::build(config, true)
    }

    /// A client for one long response read on a runtime of its own: it keeps no idle
    /// connection, which would belong to that runtime.
    pub fn for_one_stream(&self) -> Result<Api, ApiError> {
        Api::build(&self.config, false)
    }

    fn build(config: &DockerSdConfig, pool: bool) -> Result<Api, ApiError> {
        let fail = |key: &'static str, message: String| ApiError::Config { key, message };
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("logferry/", env!("CARGO_PKG_VERSION")))
            .http1_only();
        if !pool {
            http = http.pool_max_idle_per_host(0);
        }
        let host = config.host.trim_end_matches('/');
        let base = if let Some(path) = host.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(fail("host", format!("{:?} names no socket", config.host)));
            }
            http = http.unix_socket(std::path::Path::new(path));
            "http://docker".to_string()
        } else {
            let url = if let Some(rest) = host.strip_prefix("tcp://") {
                format!("http://{rest}")
            } else if host.starts_with("http://") || host.starts_with("https://") {
                host.to_string()
            } else {
                return Err(fail(
                    "host",
                    format!(
                        "{:?} is not unix:///path, tcp://host:port, http:// or https://",
                        config.host
                    ),
                ));
            };
            match reqwest::Url::parse(&url) {
                Ok(u) if u.host_str().is_some() => {}
                Ok(_) => return Err(fail("host", format!("{:?} has no host", config.host))),
                Err(e) => return Err(fail("host", format!("{:?}: {e}", config.host))),
            }
            let tls = crate::ship::tls::client_config(
                config.tls_config.as_ref(),
                crate::ship::tls::Roots::Now,
            )
            .map_err(|e| fail("tls_config", e.to_string()))?;
            http = http.use_preconfigured_tls(tls);
            http = match &config.proxy_url {
                Some(proxy) => http.proxy(
                    reqwest::Proxy::all(proxy).map_err(|e| fail("proxy_url", e.to_string()))?,
                ),
                None => http.no_proxy(),
            };
            url
        };
        http = http.redirect(if config.follow_redirects {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        });
        let authorization = authorization(config)?;
        let http = http
            .build()
            .map_err(|e| fail("host", format!("cannot build an HTTP client: {e}")))?;
        Ok(Api {
            config: config.clone(),
            http,
            base,
            host: config.host.clone(),
            authorization,
            timeout: config
                .refresh_interval
                .0
                .clamp(Duration::from_secs(1), MAX_WAIT),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.get(format!("{}{path}", self.base));
        match &self.authorization {
            Some(value) => request.header(AUTHORIZATION, value.clone()),
            None => request,
        }
    }

    async fn send(
        &self,
        what: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ApiError> {
        let response = request.send().await.map_err(|e| ApiError::Unreachable {
            host: self.host.clone(),
            message: error_chain(&e),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
            .unwrap_or(body);
        Err(ApiError::Status {
            host: self.host.clone(),
            what,
            status: status.as_u16(),
            message,
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let response = self.send(what, request.timeout(self.timeout)).await?;
        let bytes = response.bytes().await.map_err(|e| ApiError::Unreachable {
            host: self.host.clone(),
            message: error_chain(&e),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
            host: self.host.clone(),
            what,
            message: e.to_string(),
        })
    }

    /// Every container (running or not) that passes `filters` (Docker's JSON form).
    pub async fn containers(&self, filters: &str) -> Result<Vec<ContainerSummary>, ApiError> {
        let request = self
            .get("/containers/json")
            .query(&[("all", "1"), ("filters", filters)]);
        self.json("the container list", request).await
    }

    pub async fn networks(&self) -> Result<Vec<Network>, ApiError> {
        self.json("the network list", self.get("/networks")).await
    }

    pub async fn inspect(&self, id: &str) -> Result<Inspected, ApiError> {
        let value: serde_json::Value = self
            .json(
                "a container inspection",
                self.get(&format!("/containers/{id}/json")),
            )
            .await?;
        let tty = value
            .pointer("/Config/Tty")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        Ok(Inspected { tty })
    }

    /// The container's log from `since` on (all of it without), followed while it runs.
    pub async fn logs(
        &self,
        id: &str,
        since: Option<Position>,
    ) -> Result<reqwest::Response, ApiError> {
        let since = since.map(Position::since).unwrap_or_else(|| "0".into());
        let request = self.get(&format!("/containers/{id}/logs")).query(&[
            ("follow", "1"),
            ("stdout", "1"),
            ("stderr", "1"),
            ("timestamps", "1"),
            ("since", since.as_str()),
        ]);
        self.send("a logs request", request).await
    }

    /// The daemon's container events that change what is read, as a stream of JSON objects.
    pub async fn events(&self) -> Result<reqwest::Response, ApiError> {
        let filters =
            r#"{"type":["container"],"event":["create","start","die","destroy","rename"]}"#;
        let request = self.get("/events").query(&[("filters", filters)]);
        self.send("the event stream", request).await
    }
}

/// The `Authorization` header the config asks for, if any.
fn authorization(config: &DockerSdConfig) -> Result<Option<HeaderValue>, ApiError> {
    let fail = |key: &'static str, message: String| ApiError::Config { key, message };
    let read = |key: &'static str, path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|e| fail(key, format!("cannot read {}: {e}", path.display())))
    };
    let value = if let Some(auth) = &config.basic_auth {
        use base64::Engine;
        let password = match (&auth.password, &auth.password_file) {
            (Some(p), _) => p.0.clone(),
            (None, Some(file)) => read("basic_auth", file)?,
            (None, None) => String::new(),
        };
        let pair = format!("{}:{password}", auth.username);
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
    } else if let Some(auth) = &config.authorization {
        let kind = auth.kind.as_deref().unwrap_or("Bearer");
        let credentials = match (&auth.credentials, &auth.credentials_file) {
            (Some(c), _) => c.0.clone(),
            (None, Some(file)) => read("authorization", file)?,
            (None, None) => String::new(),
        };
        Some(format!("{kind} {credentials}"))
    } else if let Some(token) = &config.bearer_token {
        Some(format!("Bearer {}", token.0))
    } else if let Some(file) = &config.bearer_token_file {
        Some(format!("Bearer {}", read("bearer_token_file", file)?))
    } else {
        None
    };
    value
        .map(|v| {
            let mut header = HeaderValue::from_str(&v)
                .map_err(|e| fail("authorization", format!("not a valid header value: {e}")))?;
            header.set_sensitive(true);
            Ok(header)
        })
        .transpose()
}

/// An error with its causes: reqwest's own message alone rarely says what failed.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Docker's JSON form of list filters: `{"name": ["value", …]}`.
pub fn filters_json(filters: &[crate::config::DockerFilter]) -> String {
    let mut map: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for f in filters {
        map.entry(f.name.as_str())
            .or_default()
            .extend(f.values.iter().map(String::as_str));
    }
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DockerFilter;

    fn config(yaml: &str) -> DockerSdConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn hosts_of_every_kind_make_a_client_and_others_are_refused() {
        for host in [
            "unix:///var/run/docker.sock",
            "tcp://127.0.0.1:2375",
            "http://127.0.0.1:2375/",
            "https://127.0.0.1:2376",
        ] {
            let api = Api::new(&config(&format!("host: {host}"))).unwrap();
            assert!(!api.base.ends_with('/'), "{host}");
        }
        for host in ["/var/run/docker.sock", "unix://", "ftp://x", "tcp://"] {
            let err = Api::new(&config(&format!("host: '{host}'"))).err().unwrap();
            assert!(err.to_string().starts_with("host: "), "{host}: {err}");
        }
    }

    #[test]
    fn credentials_become_one_authorization_header() {
        let api = Api::new(&config(
            "host: https://127.0.0.1:2376\nbasic_auth: {username: u, password: p}\n",
        ))
        .unwrap();
        assert_eq!(api.authorization.unwrap(), "Basic dTpw");
        let api = Api::new(&config(
            "host: tcp://127.0.0.1:2375\nauthorization: {type: Token, credentials: abc}\n",
        ))
        .unwrap();
        assert_eq!(api.authorization.unwrap(), "Token abc");
    }

    #[test]
    fn filters_are_grouped_by_name() {
        let filters = vec![
            DockerFilter {
                name: "label".into(),
                values: vec!["logs=on".into()],
            },
            DockerFilter {
                name: "name".into(),
                values: vec!["web".into()],
            },
            DockerFilter {
                name: "label".into(),
                values: vec!["tier=front".into()],
            },
        ];
        assert_eq!(
            filters_json(&filters),
            r#"{"label":["logs=on","tier=front"],"name":["web"]}"#
        );
        assert_eq!(filters_json(&[]), "{}");
    }
}
