//! Pipeline stages and relabeling on real files, end to end through the binary to a Loki
//! receiver: labels and metadata from containers, lines held by stages and what that means for
//! positions, drops, tenants and structured metadata.

mod common;

use common::*;
use loki_receiver::Receiver;
use std::path::Path;
use std::time::Duration;

/// A config with one job `app` reading `glob`, the given relabel rules and stages (YAML lists,
/// indented for a scrape config), shipping to `url`.
fn config(
    dir: &Path,
    glob: &str,
    relabel: &str,
    stages: &str,
    url: &str,
    http: u16,
) -> std::path::PathBuf {
    let text = format!(
        "server: {{http_listen_port: {http}}}\npositions: {{filename: '{}', sync_period: 100ms}}\ntarget_config: {{sync_period: 1s}}\nclients:\n  - url: {url}\n    batchwait: 50ms\nscrape_configs:\n  - job_name: app\n    static_configs:\n      - labels: {{job: app, __path__: '{glob}'}}\n    relabel_configs:\n{relabel}\n    pipeline_stages:\n{stages}\n",
        dir.join("positions.yaml").display()
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn docker_logs_get_container_labels_and_split_lines_are_joined() {
    let dir = tempfile::tempdir().unwrap();
    let id = "3f4e1a9c2b7d";
    let cdir = dir.path().join("containers").join(id);
    std::fs::create_dir_all(&cdir).unwrap();
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/docker/compose/config.v2.json"),
    )
    .unwrap();
    std::fs::write(cdir.join("config.v2.json"), fixture).unwrap();
    let log = cdir.join(format!("{id}-json.log"));
    // A 40,000-byte line, split by Docker into 16 KiB pieces, and a short one.
    let long = "y".repeat(40_000);
    let mut text = String::new();
    for (i, piece) in long.as_bytes().chunks(16 * 1024).enumerate() {
        let last = (i + 1) * 16 * 1024 >= long.len();
        let body = std::str::from_utf8(piece).unwrap();
        text.push_str(&format!(
            "{{\"log\":\"{body}{}\",\"stream\":\"stdout\",\"time\":\"2026-11-21T06:00:0{i}.000000001Z\"}}\n",
            if last { "\\n" } else { "" }
        ));
    }
    text.push_str(
        "{\"log\":\"oops\\n\",\"stream\":\"stderr\",\"time\":\"2026-11-21T06:00:09.5Z\"}\n",
    );
    append(&log, &text);
    let loki = Receiver::start();
    let relabel = "      - source_labels: [__meta_docker_container_name]\n        target_label: container\n      - source_labels: [__meta_docker_container_label_com_docker_compose_service]\n        target_label: compose_service";
    let glob = format!("{}/containers/*/*-json.log", dir.path().display());
    let cfg = config(
        dir.path(),
        &glob,
        relabel,
        "      - docker: {}",
        &loki.url(),
        0,
    );
    let mut agent = Agent::start(&cfg);
    assert!(
        loki.wait_for_entries(2, SOON),
        "stderr:\n{}",
        agent.tail_of_stderr()
    );
    agent.stop();
    let entries = loki.entries();
    assert_eq!(
        entries.len(),
        2,
        "{:?}",
        entries.iter().map(|e| e.line.len()).collect::<Vec<_>>()
    );
    let joined = entries
        .iter()
        .find(|e| e.label("stream") == Some("stdout"))
        .unwrap();
    assert_eq!(
        joined.line.trim_end(),
        long,
        "Docker's 16 KiB pieces are one line again"
    );
    assert_eq!(joined.label("container"), Some("shop-web-1"));
    assert_eq!(joined.label("compose_service"), Some("web"));
    let oops = entries
        .iter()
        .find(|e| e.label("stream") == Some("stderr"))
        .unwrap();
    assert_eq!(
        oops.timestamp_ns, 1_795_240_809_500_000_000,
        "the timestamp comes from Docker's time"
    );
    assert!(
        entries
            .iter()
            .all(|e| e.labels.keys().all(|k| !k.starts_with("__")))
    );
}

#[test]
fn a_held_multiline_block_holds_the_position_back() {
    let dir = tempfile::tempdir().unwrap();
    let loki = Receiver::start();
    let file = dir.path().join("app.log");
    let positions = dir.path().join("positions.yaml");
    let stages = "      - multiline:\n          firstline: '^START'\n          max_wait_time: 3s";
    let cfg = config(
        dir.path(),
        &format!("{}/*.log", dir.path().display()),
        "",
        stages,
        &loki.url(),
        0,
    );
    let first = "START one\n  detail\n";
    append(&file, first);
    let mut agent = Agent::start(&cfg);
    append(&file, "START two\n  more\n");
    // "START one" is out (the next block started); "START two" is held.
    assert!(loki.wait_for_entries(1, SOON));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(loki.entry_count(), 1);
    assert!(wait_until(SOON, || position_of(&positions, &file)
        == Some(first.len() as u64)));
    // A crash now must not lose the held block: it is read again at the next start.
    agent.kill9();
    let mut agent = Agent::start(&cfg);
    assert!(loki.wait_for_entries(2, SOON), "the held block was lost");
    agent.stop();
    let lines: Vec<String> = loki.entries().into_iter().map(|e| e.line).collect();
    assert_eq!(lines, vec!["START one\n  detail", "START two\n  more"]);
    assert_eq!(
        position_of(&positions, &file),
        Some(std::fs::metadata(&file).unwrap().len())
    );
}

#[test]
fn drops_tenants_and_structured_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let loki = Receiver::start();
    let file = dir.path().join("app.log");
    let stages = "      - logfmt:\n          mapping: {level: , team: , trace: }\n      - drop:\n          source: level\n          value: debug\n      - tenant:\n          source: team\n      - structured_metadata:\n          trace_id: trace\n      - labels:\n          level:";
    let cfg = config(
        dir.path(),
        &format!("{}/*.log", dir.path().display()),
        "",
        stages,
        &loki.url(),
        http,
    );
    append(
        &file,
        "level=info team=a trace=t1 msg=one\nlevel=debug team=a msg=noise\nlevel=error team=b trace=t2 msg=two\n",
    );
    let mut agent = Agent::start(&cfg);
    assert!(
        loki.wait_for_entries(2, SOON),
        "stderr:\n{}",
        agent.tail_of_stderr()
    );
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(wait_until(SOON, || position_of(
        &dir.path().join("positions.yaml"),
        &file
    ) == Some(size)));
    let text = metrics(http);
    agent.stop();
    let entries = loki.entries();
    assert_eq!(entries.len(), 2, "the debug line is dropped");
    let one = entries
        .iter()
        .find(|e| e.line.ends_with("msg=one"))
        .unwrap();
    assert_eq!(one.tenant.as_deref(), Some("a"));
    assert_eq!(one.label("level"), Some("info"));
    assert_eq!(one.metadata("trace_id"), Some("t1"));
    let two = entries
        .iter()
        .find(|e| e.line.ends_with("msg=two"))
        .unwrap();
    assert_eq!(two.tenant.as_deref(), Some("b"));
    assert!(
        text.contains("logferry_dropped_entries_total{host=\"\",reason=\"drop_stage\"} 1"),
        "{text}"
    );
}

#[test]
fn relabel_rules_choose_files_and_kubernetes_paths_give_pod_labels() {
    let dir = tempfile::tempdir().unwrap();
    let loki = Receiver::start();
    let pods = dir.path().join("pods");
    let web = pods.join("shop_web-7d9f8-abcde_0b9f4c2e-1d3a-4b7e-9a51-6f0e2c8d1a77/nginx");
    let own = pods.join("monitoring_logferry-x1_5a7c9e1b-3d5f-4a7c-9e1b-3d5f7a9c1e3b/logferry");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::create_dir_all(&own).unwrap();
    append(
        &web.join("0.log"),
        "2026-11-21T06:00:00.000000001Z stdout F GET / 200\n",
    );
    append(
        &own.join("0.log"),
        "2026-11-21T06:00:00.000000001Z stderr F level=info msg=mine\n",
    );
    let relabel = "      - source_labels: [__meta_kubernetes_namespace]\n        target_label: namespace\n      - source_labels: [__meta_kubernetes_pod_name]\n        target_label: pod\n      - source_labels: [__meta_kubernetes_pod_container_name]\n        target_label: container\n      - source_labels: [__meta_kubernetes_pod_container_name]\n        regex: logferry\n        action: drop";
    let glob = format!("{}/*/*/*.log", pods.display());
    let cfg = config(
        dir.path(),
        &glob,
        relabel,
        "      - cri: {}",
        &loki.url(),
        0,
    );
    let mut agent = Agent::start(&cfg);
    assert!(loki.wait_for_entries(1, SOON));
    std::thread::sleep(Duration::from_millis(500));
    agent.stop();
    let entries = loki.entries();
    assert_eq!(entries.len(), 1, "the dropped container's log is not read");
    let e = &entries[0];
    assert_eq!(e.line, "GET / 200");
    assert_eq!(
        (e.label("namespace"), e.label("pod"), e.label("container")),
        (Some("shop"), Some("web-7d9f8-abcde"), Some("nginx"))
    );
    assert_eq!(e.label("stream"), Some("stdout"));
}

/// Stages that copy lines into chunks of their own (here `multiline`) must still let batches
/// fill: with `batchwait` far away, every line arrives because batches are sent full, not
/// because the wait ran out.
#[test]
fn batches_fill_behind_a_multiline_stage() {
    let dir = tempfile::tempdir().unwrap();
    let loki = Receiver::start();
    let file = dir.path().join("app.log");
    let mut text = String::new();
    let mut blocks = 0;
    while text.len() < 6 << 20 {
        text.push_str(&format!(
            "2024-03-21 10:00:00,{:03} INFO  [main] com.example.App - order {blocks} placed\n",
            blocks % 1000
        ));
        if blocks % 5 == 4 {
            text.push_str("java.lang.IllegalStateException: already shipped\n");
            for frame in ["a.B.c(B.java:118)", "d.E.f(E.java:57)", "g.H.i(H.java:580)"] {
                text.push_str(&format!("\tat {frame}\n"));
            }
        }
        blocks += 1;
    }
    // The last block is released by the next first line.
    text.push_str("2024-03-21 10:00:01,000 INFO  [main] com.example.App - the end\n");
    std::fs::write(&file, &text).unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server: {{http_listen_port: 0}}\npositions: {{filename: '{}'}}\nclients:\n  - url: {}\n    batchwait: 10m\nscrape_configs:\n  - job_name: app\n    static_configs:\n      - labels: {{job: app, __path__: '{}'}}\n    pipeline_stages:\n      - multiline:\n          firstline: '^\\d{{4}}-\\d{{2}}-\\d{{2}} '\n          max_wait_time: 10m\n",
            dir.path().join("positions.yaml").display(),
            loki.url(),
            file.display()
        ),
    )
    .unwrap();
    let mut agent = Agent::start(&cfg);
    // Five batches of (just under) 1 MiB; the rest waits for more lines, or for the end.
    assert!(
        wait_until(SOON, || loki.stats().line_bytes >= 9 << 19),
        "{} bytes of lines arrived: batches did not fill",
        loki.stats().line_bytes
    );
    agent.stop();
    let entries = loki.entries();
    assert_eq!(
        entries[4].line,
        "2024-03-21 10:00:00,004 INFO  [main] com.example.App - order 4 placed\njava.lang.IllegalStateException: already shipped\n\tat a.B.c(B.java:118)\n\tat d.E.f(E.java:57)\n\tat g.H.i(H.java:580)"
    );
}
