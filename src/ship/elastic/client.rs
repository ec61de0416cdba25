//! The HTTP side of an Elasticsearch output: nodes, credentials, and one `_bulk` request.

use super::ElasticError;
use crate::config::{Compression, ElasticsearchConfig};
use crate::ship::retry::{Transient, Verdict};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue,
    USER_AGENT,
};
use std::io::Write;
use std::time::Duration;

/// How a request ended, short of per-item results.
pub enum Answer {
    /// 200: the body holds one result per item.
    Bulk(bytes::Bytes),
    /// No usable answer.
    Failed(Verdict),
}

/// Sends `_bulk` requests to one cluster, moving to the next node when one fails.
pub struct BulkClient {
    /// The `_bulk` URL of each node.
    nodes: Vec<reqwest::Url>,
    current: usize,
    http: reqwest::Client,
    headers: HeaderMap,
    gzip: bool,
}

impl BulkClient {
    pub fn new(index: usize, config: &ElasticsearchConfig) -> Result<BulkClient, ElasticError> {
        let first = config.url.as_slice().first().cloned().unwrap_or_default();
        let fail = |message: String| ElasticError {
            index,
            url: first.clone(),
            message,
        };
        let mut nodes = Vec::new();
        for url in config.url.as_slice() {
            let mut parsed =
                reqwest::Url::parse(url).map_err(|e| fail(format!("invalid url {url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(fail(format!("{url:?} must be an http:// or https:// URL")));
            }
            // Nodes are given as the cluster's base URL (maybe behind a path prefix).
            if !parsed.path().ends_with("/_bulk") {
                let path = format!("{}/_bulk", parsed.path().trim_end_matches('/'));
                parsed.set_path(&path);
            }
            if let Some(pipeline) = &config.pipeline {
                parsed.query_pairs_mut().append_pair("pipeline", pipeline);
            }
            nodes.push(parsed);
        }
        let mut headers = HeaderMap::new();
        let user_agent = concat!("logferry/", env!("CARGO_PKG_VERSION"));
        headers.insert(USER_AGENT, HeaderValue::from_static(user_agent));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| fail(format!("headers: {name:?}: {e}")))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| fail(format!("headers: {name}: {e}")))?;
            headers.insert(name, value);
        }
        let read_secret = |key: &str, path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| fail(format!("{key}: cannot read {}: {e}", path.display())))
        };
        let authorization = if let Some(auth) = &config.basic_auth {
            let password = match (&auth.password, &auth.password_file) {
                (Some(p), _) => p.0.clone(),
                (None, Some(file)) => read_secret("basic_auth.password_file", file)?,
                (None, None) => String::new(),
            };
            use base64::Engine as _;
            let pair = format!("{}:{password}", auth.username);
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        } else if let Some(key) = &config.api_key {
            Some(format!("ApiKey {}", key.0))
        } else if let Some(file) = &config.api_key_file {
            Some(format!("ApiKey {}", read_secret("api_key_file", file)?))
        } else if let Some(token) = &config.bearer_token {
            Some(format!("Bearer {}", token.0))
        } else if let Some(file) = &config.bearer_token_file {
            Some(format!(
                "Bearer {}",
                read_secret("bearer_token_file", file)?
            ))
        } else {
            None
        };
        if let Some(value) = authorization {
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| fail("credentials hold characters a header cannot carry".into()))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let roots =
            crate::ship::tls::Roots::for_urls(config.url.as_slice().iter().map(String::as_str));
        let tls = crate::ship::tls::client_config(config.tls_config.as_ref(), roots)
            .map_err(|e| fail(e.to_string()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(config.timeout.0)
            .connect_timeout(config.timeout.0.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(1)
            .no_proxy()
            .build()
            .map_err(|e| fail(format!("cannot build HTTP client: {e}")))?;
        Ok(BulkClient {
            nodes,
            current: 0,
            http,
            headers,
            gzip: config.compression == Compression::Gzip,
        })
    }

    /// The node requests go to now.
    pub fn node(&self) -> &reqwest::Url {
        &self.nodes[self.current % self.nodes.len()]
    }

    /// The next request goes to the next node (after a node failed to answer well).
    pub fn next_node(&mut self) {
        self.current = (self.current + 1) % self.nodes.len();
    }

    /// Compresses an NDJSON body as configured; returns the bytes and their encoding.
    pub fn encode(&self, ndjson: bytes::Bytes) -> (bytes::Bytes, Option<&'static str>) {
        if !self.gzip {
            return (ndjson, None);
        }
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(ndjson.len() / 6),
            flate2::Compression::fast(),
        );
        // Writing into memory cannot fail.
        let _ = gz.write_all(&ndjson);
        (gz.finish().unwrap_or_default().into(), Some("gzip"))
    }

    /// Posts one body to the current node.
    pub async fn send(&self, body: bytes::Bytes, encoding: Option<&'static str>) -> Answer {
        let mut request = self
            .http
            .post(self.node().clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/x-ndjson")
            .body(body);
        if let Some(encoding) = encoding {
            request = request.header(CONTENT_ENCODING, encoding);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Answer::Failed(Verdict::Retry(Transient::from_reqwest(&e))),
        };
        let status = response.status().as_u16();
        match response.bytes().await {
            Ok(body) if status == 200 => Answer::Bulk(body),
            Ok(body) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(1024)]);
                let text = text.trim().to_string();
                match Transient::classify(status, text) {
                    // Another 2xx carries no per-item results: not an answer to trust.
                    Ok(()) => Answer::Failed(Verdict::Retry(Transient::Status {
                        code: status,
                        body: "no bulk result in the answer".into(),
                    })),
                    Err(verdict) => Answer::Failed(verdict),
                }
            }
            Err(e) => Answer::Failed(Verdict::Retry(Transient::from_reqwest(&e))),
        }
    }
}
