//! Shipping to Elasticsearch, end to end: lines written to files reach a faithful `_bulk`
//! receiver on 127.0.0.1 through the real binary, with documents refused one by one,
//! outages, crashes, and a Loki client beside it.

mod common;

use common::*;
use elastic_receiver::{Behavior, Failure, Receiver};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A config reading `dir/*.log` into the given outputs (`elasticsearch:` entries and Loki
/// `clients:` entries, each YAML indented for a list item), HTTP on `http_port` (0: off).
fn config(dir: &Path, elastic: &[String], loki: &[String], http_port: u16) -> PathBuf {
    let mut extra = format!("server:\n  http_listen_port: {http_port}\n");
    if !elastic.is_empty() {
        extra.push_str("elasticsearch:\n");
        for e in elastic {
            extra.push_str(&format!("  - {e}\n"));
        }
    }
    if !loki.is_empty() {
        extra.push_str("clients:\n");
        for c in loki {
            extra.push_str(&format!("  - {c}\n"));
        }
    }
    Config::new(dir, dir.join("*.log")).extra(&extra).write(dir)
}

/// One `elasticsearch:` entry with quick batches and retries, plus `more` keys.
fn output(url: &str, more: &str) -> String {
    let mut s = format!("url: {url}\n    backoff_config: {{min_period: 20ms, max_period: 200ms}}");
    if !more.contains("batch_wait") {
        s.push_str("\n    batch_wait: 100ms");
    }
    for line in more.lines() {
        s.push_str(&format!("\n    {line}"));
    }
    s
}

fn messages_of(es: &Receiver, file: &Path) -> Vec<String> {
    let name = file.display().to_string();
    es.documents()
        .iter()
        .filter(|d| d.text("log.file.path") == Some(name.as_str()))
        .map(|d| d.message().to_string())
        .collect()
}

fn file_len(file: &Path) -> u64 {
    std::fs::metadata(file).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn every_line_arrives_once_with_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let es = Receiver::start();
    let a = dir.path().join("a.log");
    let b = dir.path().join("b.log");
    append(&a, numbered("a", 0, 500));
    append(&b, "with \"quotes\", a \\ and a tab\there\n");
    let cfg = config(dir.path(), &[output(&es.url(), "")], &[], 0);
    let mut agent = Agent::start(&cfg);
    append(&a, numbered("a", 500, 500));
    assert!(
        es.wait_for_documents(1001, SOON),
        "got {}",
        es.document_count()
    );
    let positions = dir.path().join("positions.yaml");
    assert!(
        wait_until(SOON, || position_of(&positions, &a) == Some(file_len(&a))),
        "the position did not reach the end of what was indexed"
    );
    agent.stop();
    assert_eq!(messages_of(&es, &a), numbered_lines("a", 0, 1000));
    assert_eq!(
        messages_of(&es, &b),
        vec!["with \"quotes\", a \\ and a tab\there".to_string()]
    );
    let docs = es.documents();
    let doc = docs
        .iter()
        .find(|d| d.message() == "a999")
        .expect("a999 indexed");
    assert_eq!(doc.op, "index");
    assert!(doc.index.starts_with("logferry-20"), "{}", doc.index);
    assert_eq!(doc.text("labels.job"), Some("test"));
    assert_eq!(doc.text("labels.filename"), Some(&*a.display().to_string()));
    assert!(doc.text("host.name").is_some_and(|h| !h.is_empty()));
    let offset = doc.field("log.offset").and_then(|v| v.as_u64());
    assert_eq!(offset, Some(file_len(&a)), "the last line ends the file");
    let ts = doc.field("@timestamp").cloned().unwrap_or_default();
    assert!(elastic_receiver::is_date(&ts), "{ts}");
    assert!(
        ts.as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 30),
        "RFC 3339 with nanoseconds in UTC: {ts}"
    );
    let requests = es.requests();
    assert!(requests.iter().all(|r| r.status == Some(200)));
    assert!(requests.iter().all(|r| r.failed_items.is_empty()));
    assert!(requests.iter().all(
        |r| r.content_type.as_deref() == Some("application/x-ndjson")
            && r.content_encoding.as_deref() == Some("gzip")
            && r.target == "/_bulk"
    ));
}

#[test]
fn data_streams_pipelines_api_keys_and_plain_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let es = Receiver::builder()
        .require_api_key("a2V5OnNlY3JldA==")
        .pipeline("parse-nginx")
        .start();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "a2V5OnNlY3JldA==\n").unwrap();
    let file = dir.path().join("x.log");
    append(&file, numbered("x", 0, 50));
    let more = format!(
        "data_stream: {{dataset: app, namespace: test}}\npipeline: parse-nginx\ncompression: none\napi_key_file: {}\nheaders: {{X-Opaque-Id: logferry-test}}",
        key_file.display()
    );
    let cfg = config(dir.path(), &[output(&es.url(), &more)], &[], 0);
    let mut agent = Agent::start(&cfg);
    assert!(
        es.wait_for_documents(50, SOON),
        "got {}",
        es.document_count()
    );
    agent.stop();
    assert_eq!(messages_of(&es, &file), numbered_lines("x", 0, 50));
    let docs = es.documents();
    assert!(
        docs.iter()
            .all(|d| d.op == "create" && d.index == "logs-app-test")
    );
    assert_eq!(docs[0].text("data_stream.dataset"), Some("app"));
    let requests = es.requests();
    assert!(requests.iter().all(|r| r.content_encoding.is_none()
        && r.authorization.as_deref() == Some("ApiKey a2V5OnNlY3JldA==")
        && r.target == "/_bulk?pipeline=parse-nginx"));
}

#[test]
fn partly_refused_requests_are_retried_item_by_item() {
    let dir = tempfile::tempdir().unwrap();
    let es = Receiver::start();
    es.fail_documents("x7", Failure::TooManyRequests, 2);
    es.fail_documents("x13", Failure::Unavailable, 1);
    let file = dir.path().join("x.log");
    append(&file, numbered("x", 0, 30));
    let cfg = config(
        dir.path(),
        &[output(&es.url(), "batch_wait: 300ms")],
        &[],
        0,
    );
    let mut agent = Agent::start(&cfg);
    assert!(
        es.wait_for_documents(30, SOON),
        "got {}",
        es.document_count()
    );
    let positions = dir.path().join("positions.yaml");
    assert!(wait_until(SOON, || position_of(&positions, &file)
        == Some(file_len(&file))));
    agent.stop();
    let mut got = messages_of(&es, &file);
    assert!(duplicates(&got).is_empty(), "a document was indexed twice");
    got.sort_by_key(|m| m[1..].parse::<usize>().unwrap_or(0));
    assert_eq!(got, numbered_lines("x", 0, 30));
    let requests = es.requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    assert_eq!(requests[0].items, 30);
    assert_eq!(requests[0].failed_items, vec![429, 503]);
    assert_eq!(requests[1].items, 2, "only the refused documents go again");
    assert_eq!(requests[1].failed_items, vec![429]);
    assert_eq!(requests[2].items, 1);
    assert!(requests[2].failed_items.is_empty());
}

#[test]
fn documents_refused_for_good_are_dropped_counted_and_tailing_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let es = Receiver::start();
    es.fail_documents("bad", Failure::MapperParsing, 0);
    es.fail_documents("gone", Failure::IndexNotFound, 0);
    let file = dir.path().join("x.log");
    append(&file, numbered("good", 0, 20));
    append(&file, numbered("bad", 0, 5));
    append(&file, numbered("gone", 0, 3));
    append(&file, numbered("good", 20, 20));
    let cfg = config(dir.path(), &[output(&es.url(), "")], &[], http);
    let mut agent = Agent::start(&cfg);
    assert!(es.wait_for_documents(40, SOON));
    let positions = dir.path().join("positions.yaml");
    assert!(
        wait_until(SOON, || position_of(&positions, &file)
            == Some(file_len(&file))),
        "refused documents hold the file back"
    );
    agent.wait_for_stderr("mapper_parsing_exception", SOON);
    let text = metrics(http);
    let dropped = |reason: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("logferry_dropped_entries_total{")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(dropped("mapper_parsing_exception"), Some(5.0), "{text}");
    assert_eq!(dropped("index_not_found_exception"), Some(3.0), "{text}");
    // More lines still flow.
    append(&file, numbered("later", 0, 5));
    assert!(es.wait_for_documents(45, SOON));
    agent.stop();
    assert_eq!(
        es.stats().item_failures.values().sum::<u64>(),
        8,
        "refused once, never again"
    );
    let got = messages_of(&es, &file);
    assert!(
        got.iter()
            .all(|m| m.starts_with("good") || m.starts_with("later"))
    );
    assert_eq!(got.len(), 45);
}

#[test]
fn max_retries_gives_up_on_a_document_that_keeps_failing() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let es = Receiver::start();
    es.fail_documents("x3", Failure::TooManyRequests, 0);
    let file = dir.path().join("x.log");
    append(&file, numbered("x", 0, 10));
    let cfg = config(
        dir.path(),
        &[output(&es.url(), "max_retries: 3")],
        &[],
        http,
    );
    let mut agent = Agent::start(&cfg);
    assert!(
        wait_until(SOON, || metrics(http).contains("reason=\"max_retries\"")),
        "not counted"
    );
    assert!(es.wait_for_documents(9, SOON));
    let positions = dir.path().join("positions.yaml");
    assert!(wait_until(SOON, || position_of(&positions, &file)
        == Some(file_len(&file))));
    agent.stop();
    assert_eq!(
        es.stats().item_failures.get(&429),
        Some(&3),
        "three tries, then dropped"
    );
    assert!(!es.messages().contains(&"x3".to_string()));
}

#[test]
fn an_outage_and_failing_requests_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let file = dir.path().join("x.log");
    append(&file, numbered("x", 0, 200));
    let cfg = config(dir.path(), &[output(&url, "")], &[], 0);
    let mut agent = Agent::start(&cfg);
    let positions = dir.path().join("positions.yaml");
    std::thread::sleep(Duration::from_millis(800)); // retries and position syncs
    assert_eq!(
        position_of(&positions, &file).unwrap_or(0),
        0,
        "moved while down"
    );
    let es = Receiver::builder()
        .port(port)
        .behavior(Behavior::FailNext(2, 503))
        .start();
    append(&file, numbered("x", 200, 100));
    assert!(
        es.wait_for_documents(300, SOON),
        "got {}",
        es.document_count()
    );
    assert!(wait_until(SOON, || position_of(&positions, &file)
        == Some(file_len(&file))));
    // Down again: the next lines wait, then come.
    drop(es);
    append(&file, numbered("x", 300, 50));
    std::thread::sleep(Duration::from_millis(300));
    let es = Receiver::builder()
        .port(port)
        .behavior(Behavior::FailNext(1, 429))
        .start();
    assert!(
        es.wait_for_documents(50, SOON),
        "got {}",
        es.document_count()
    );
    agent.stop();
    assert_eq!(messages_of(&es, &file), numbered_lines("x", 300, 50));
    assert_eq!(es.stats().responses.get(&429), Some(&1));
}

#[test]
fn kill_9_while_sending_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let es = Receiver::builder()
        .behavior(Behavior::Delay(Duration::from_millis(30)))
        .start();
    let file = dir.path().join("x.log");
    let cfg = config(dir.path(), &[output(&es.url(), "batch_size: 4096")], &[], 0);
    append(&file, numbered("x", 0, 3000));
    let mut agent = Agent::start(&cfg);
    assert!(wait_until(SOON, || es.document_count() >= 500));
    agent.kill9();
    let before_restart = es.document_count();
    append(&file, numbered("x", 3000, 1000));
    es.set_behavior(Behavior::Accept);
    let mut agent = Agent::start(&cfg);
    let all = numbered_lines("x", 0, 4000);
    assert!(
        wait_until(LONG, || {
            let got: std::collections::HashSet<String> =
                messages_of(&es, &file).into_iter().collect();
            all.iter().all(|l| got.contains(l))
        }),
        "lines lost after kill -9"
    );
    agent.stop();
    let dups = duplicates(&messages_of(&es, &file));
    assert!(
        dups.len() <= before_restart,
        "{} duplicates, more than the {before_restart} indexed before the kill",
        dups.len()
    );
}

#[test]
fn positions_wait_for_both_loki_and_elasticsearch() {
    for elastic_down in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let late_url = format!("http://127.0.0.1:{port}");
        let loki = loki_receiver::Receiver::start();
        let es = (!elastic_down).then(Receiver::start);
        let (es_url, loki_url) = match &es {
            Some(es) => (es.url(), format!("{late_url}/loki/api/v1/push")),
            None => (late_url.clone(), loki.url()),
        };
        let file = dir.path().join("x.log");
        append(&file, numbered("x", 0, 100));
        let cfg = config(
            dir.path(),
            &[output(&es_url, "")],
            &[format!(
                "url: {loki_url}\n    batchwait: 100ms\n    backoff_config: {{min_period: 20ms, max_period: 200ms}}"
            )],
            0,
        );
        let mut agent = Agent::start(&cfg);
        match &es {
            Some(es) => assert!(es.wait_for_documents(100, SOON)),
            None => assert!(loki.wait_for_entries(100, SOON)),
        }
        let positions = dir.path().join("positions.yaml");
        std::thread::sleep(Duration::from_millis(800)); // several position syncs
        assert_eq!(
            position_of(&positions, &file).unwrap_or(0),
            0,
            "elasticsearch down: {elastic_down}: the position moved past what one output lacks"
        );
        if elastic_down {
            let es = Receiver::builder().port(port).start();
            assert!(es.wait_for_documents(100, SOON));
            assert_eq!(es.messages(), numbered_lines("x", 0, 100));
        } else {
            let late = loki_receiver::Receiver::builder().port(port).start();
            assert!(late.wait_for_entries(100, SOON));
        }
        assert!(wait_until(SOON, || position_of(&positions, &file)
            == Some(file_len(&file))));
        agent.stop();
        if let Some(es) = es {
            assert_eq!(es.document_count(), 100, "indexed twice");
        } else {
            assert_eq!(loki.entry_count(), 100, "pushed twice");
        }
    }
}

#[test]
fn config_check_names_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &["url: http://127.0.0.1:9200\n    index: Logs-%Y".into()],
        &[],
        0,
    );
    let out = std::process::Command::new(BIN)
        .arg("-check-syntax")
        .arg(format!("-config.file={}", cfg.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("config.yaml") && text.contains("elasticsearch[0].index"),
        "{text}"
    );
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/elasticsearch.yaml");
    let out = std::process::Command::new(BIN)
        .arg("-check-syntax")
        .arg(format!("-config.file={example}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
