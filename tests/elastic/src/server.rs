//! The HTTP side: connections, the checks of a bulk request, and the answer.

use crate::bulk::{self, Action};
use crate::{Behavior, Document, RequestInfo, Shared};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Elasticsearch's default `http.max_content_length`.
const MAX_BODY: usize = 100 << 20;

pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, shared.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn answer(status: u16, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Elasticsearch's error object for a failed request.
fn error_body(status: u16, kind: &str, reason: &str) -> Value {
    json!({
        "error": {
            "root_cause": [{"type": kind, "reason": reason}],
            "type": kind,
            "reason": reason,
        },
        "status": status,
    })
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived_at = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| path.clone());
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if method == "GET" && path == "/" {
        return Ok(answer(
            200,
            &json!({"name": "receiver", "cluster_name": "test", "version": {"number": "8.15.0"}, "tagline": "You Know, for Search"}),
        ));
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let default_index = match segments.as_slice() {
        ["_bulk"] => None,
        [index, "_bulk"] => Some(index.to_string()),
        _ => {
            let reason = format!("no handler found for uri [{path}] and method [{method}]");
            return Ok(answer(400, &json!({"error": reason, "status": 400})));
        }
    };
    if !matches!(method.as_str(), "POST" | "PUT") {
        let reason = format!(
            "Incorrect HTTP method for uri [{path}] and method [{method}], allowed: [POST, PUT]"
        );
        return Ok(answer(405, &json!({"error": reason, "status": 405})));
    }
    let content_type = header(&req, "content-type");
    let content_encoding = header(&req, "content-encoding");
    let authorization = header(&req, "authorization");
    let mut info = RequestInfo {
        index: 0,
        method,
        target,
        content_type: content_type.clone(),
        content_encoding: content_encoding.clone(),
        authorization: authorization.clone(),
        body_len: 0,
        items: 0,
        failed_items: Vec::new(),
        status: None,
        response: String::new(),
        arrived_at,
    };
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let body = error_body(
                413,
                "content_too_long_exception",
                "request body is too large",
            );
            return Ok(finish(&shared, info, 413, body, Vec::new()));
        }
    };
    info.body_len = body.len();
    if let Some(key) = &shared.settings.api_key
        && authorization.as_deref() != Some(&format!("ApiKey {key}"))
    {
        let reason = match &authorization {
            None => format!("missing authentication credentials for REST request [{path}]"),
            Some(_) => "unable to authenticate with provided credentials and anonymous access is not allowed for this request".to_string(),
        };
        let body = error_body(401, "security_exception", &reason);
        return Ok(finish(&shared, info, 401, body, Vec::new()));
    }
    let media = content_type.as_deref().map(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    if !matches!(
        media.as_deref(),
        Some("application/x-ndjson" | "application/json")
    ) {
        let reason = format!(
            "Content-Type header [{}] is not supported",
            content_type.unwrap_or_default()
        );
        return Ok(finish(
            &shared,
            info,
            406,
            json!({"error": reason, "status": 406}),
            Vec::new(),
        ));
    }
    let behavior = {
        let mut b = shared.behavior();
        match &mut *b {
            Behavior::FailNext(n, code) if *n > 0 => {
                *n -= 1;
                let code = *code;
                if *n == 0 {
                    *b = Behavior::Accept;
                }
                Behavior::Status(code)
            }
            other => other.clone(),
        }
    };
    match behavior {
        Behavior::Status(code) => {
            let kind = match code {
                429 => "circuit_breaking_exception",
                503 => "cluster_block_exception",
                401 => "security_exception",
                _ => "exception",
            };
            let body = error_body(code, kind, "failure injected by the test receiver");
            return Ok(finish(&shared, info, code, body, Vec::new()));
        }
        Behavior::Delay(d) => tokio::time::sleep(d).await,
        Behavior::Accept | Behavior::FailNext(..) => {}
    }
    let decoded = match content_encoding
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("identity") => Ok(body.to_vec()),
        Some("gzip") => inflate(flate2::read::GzDecoder::new(&body[..])),
        Some("deflate") => inflate(flate2::read::ZlibDecoder::new(&body[..])),
        Some(other) => Err(format!("unsupported content encoding [{other}]")),
    };
    let decoded = match decoded {
        Ok(d) => d,
        Err(reason) => {
            let body = error_body(400, "illegal_argument_exception", &reason);
            return Ok(finish(&shared, info, 400, body, Vec::new()));
        }
    };
    let pipeline = query
        .iter()
        .find(|(k, _)| k == "pipeline")
        .map(|(_, v)| v.clone());
    let actions = match bulk::parse(&decoded, default_index.as_deref()) {
        Ok(a) => a,
        Err((status, kind, reason)) => {
            let body = error_body(status, kind, &reason);
            return Ok(finish(&shared, info, status, body, Vec::new()));
        }
    };
    info.items = actions.len();
    let (items, indexed) = judge(&shared, actions, pipeline.as_deref(), info.index);
    let errors = items.iter().any(|i| i.1.is_some());
    info.failed_items = items.iter().filter_map(|i| i.1).collect();
    let took = arrived_at.elapsed().as_millis() as u64;
    let body = json!({
        "took": took,
        "errors": errors,
        "items": items.into_iter().map(|i| i.0).collect::<Vec<_>>(),
    });
    Ok(finish(&shared, info, 200, body, indexed))
}

fn inflate(mut reader: impl Read) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot decompress the request body: {e}"))?;
    Ok(out)
}

/// Records the request (and what it indexed) and builds the response.
fn finish(
    shared: &Shared,
    mut info: RequestInfo,
    status: u16,
    body: Value,
    mut indexed: Vec<Document>,
) -> Response<Full<Bytes>> {
    let response = answer(status, &body);
    let mut store = shared.lock();
    let index = store.stats.requests as usize;
    store.stats.requests += 1;
    store.stats.body_bytes += info.body_len as u64;
    *store.stats.responses.entry(status).or_default() += 1;
    for failed in &info.failed_items {
        *store.stats.item_failures.entry(*failed).or_default() += 1;
    }
    store.stats.documents += indexed.len() as u64;
    store.stats.message_bytes += indexed
        .iter()
        .map(|d| d.message().len() as u64)
        .sum::<u64>();
    if !shared.settings.count_only {
        info.index = index;
        info.status = Some(status);
        info.response = body.to_string();
        for d in &mut indexed {
            d.request = index;
        }
        store.requests.push(info);
        store.documents.append(&mut indexed);
    }
    drop(store);
    shared.changed.notify_all();
    response
}

/// One item's answer, and the status when it failed.
type ItemAnswer = (Value, Option<u16>);

/// Judges every item; returns the answers and the documents indexed.
fn judge(
    shared: &Shared,
    actions: Vec<Action>,
    pipeline: Option<&str>,
    request: usize,
) -> (Vec<ItemAnswer>, Vec<Document>) {
    let mut answers = Vec::with_capacity(actions.len());
    let mut indexed = Vec::new();
    let mut store = shared.lock();
    for action in actions {
        let index = action.index.clone().unwrap_or_default();
        let seq = store.next_seq;
        store.next_seq += 1;
        let id = action.id.clone().unwrap_or_else(|| format!("{seq:020x}"));
        let data_stream = shared
            .settings
            .data_stream_prefixes
            .iter()
            .any(|p| index.starts_with(p.as_str()) && index.matches('-').count() >= 2);
        let fail = |status: u16, kind: &str, reason: String| -> ItemAnswer {
            (
                json!({action.op.clone(): {
                    "_index": index, "_id": id, "status": status,
                    "error": {"type": kind, "reason": reason, "index": index},
                }}),
                Some(status),
            )
        };
        if let Some(why) = bulk::invalid_index_name(&index) {
            answers.push(fail(
                400,
                "invalid_index_name_exception",
                format!("Invalid index name [{index}], {why}"),
            ));
            continue;
        }
        if action.op == "delete" || action.op == "update" {
            answers.push(fail(
                404,
                "document_missing_exception",
                format!("[{id}]: document missing"),
            ));
            continue;
        }
        let source = match bulk::parse_source(action.source.as_deref().unwrap_or_default()) {
            Ok(s) => s,
            Err(reason) => {
                answers.push(fail(400, "mapper_parsing_exception", reason));
                continue;
            }
        };
        if let Some(p) = action.pipeline.as_deref().or(pipeline)
            && p != "_none"
            && !shared.settings.pipelines.contains(p)
        {
            answers.push(fail(
                400,
                "illegal_argument_exception",
                format!("pipeline with id [{p}] does not exist"),
            ));
            continue;
        }
        if data_stream {
            if action.op != "create" {
                answers.push(fail(
                    400,
                    "illegal_argument_exception",
                    "only write ops with an op_type of create are allowed in data streams".into(),
                ));
                continue;
            }
            match source.get("@timestamp") {
                None => {
                    answers.push(fail(
                        400,
                        "mapper_parsing_exception",
                        "data stream timestamp field [@timestamp] is missing".into(),
                    ));
                    continue;
                }
                Some(ts) if !bulk::is_date(ts) => {
                    answers.push(fail(
                        400,
                        "mapper_parsing_exception",
                        format!("failed to parse field [@timestamp] of type [date] in document with id '{id}'"),
                    ));
                    continue;
                }
                Some(_) => {}
            }
        }
        let message = source
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut injected = None;
        for (n, rule) in store.rules.iter().enumerate() {
            if message.contains(rule.contains.as_str()) {
                injected = Some((n, rule.failure, rule.times));
                break;
            }
        }
        if let Some((n, failure, times)) = injected {
            let count = store.failed.entry((n, message.clone())).or_default();
            if times == 0 || *count < times {
                *count += 1;
                let (kind, reason) = failure.error(&index);
                answers.push(fail(failure.status(), kind, reason));
                continue;
            }
        }
        let concrete = if data_stream {
            let day = chrono_free_day(&source);
            format!(".ds-{index}-{day}-000001")
        } else {
            index.clone()
        };
        answers.push((
            json!({action.op.clone(): {
                "_index": concrete, "_id": id, "_version": 1, "result": "created",
                "_shards": {"total": 2, "successful": 1, "failed": 0},
                "_seq_no": seq, "_primary_term": 1, "status": 201,
            }}),
            None,
        ));
        indexed.push(Document {
            index,
            op: action.op,
            id,
            source,
            request,
        });
    }
    (answers, indexed)
}

/// `yyyy.MM.dd` of a document's `@timestamp` text, for a backing index name.
fn chrono_free_day(source: &serde_json::Map<String, Value>) -> String {
    source
        .get("@timestamp")
        .and_then(Value::as_str)
        .and_then(|s| s.get(..10))
        .map(|d| d.replace('-', "."))
        .unwrap_or_else(|| "1970.01.01".into())
}
