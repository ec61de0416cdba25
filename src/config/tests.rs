use super::*;

fn err(yaml: &str) -> String {
    Config::parse(yaml, "cfg.yaml").unwrap_err().to_string()
}

#[test]
fn promtail_debian_default_config_loads_unchanged() {
    let yaml = "server:\n  http_listen_port: 9080\n  grpc_listen_port: 0\n\npositions:\n  filename: /tmp/positions.yaml\n\nclients:\n  - url: http://localhost:3100/loki/api/v1/push\n\nscrape_configs:\n- job_name: system\n  static_configs:\n  - targets:\n      - localhost\n    labels:\n      job: varlogs\n      __path__: /var/log/*log\n";
    let config = Config::parse(yaml, "promtail.yaml").unwrap();
    assert_eq!(config.server.http_listen_port, 9080);
    assert_eq!(config.clients[0].batchwait, GoDuration::from_secs(1));
    assert_eq!(config.clients[0].batchsize, ByteSize(1 << 20));
    assert_eq!(config.positions.sync_period, GoDuration::from_secs(10));
    assert_eq!(
        config.scrape_configs[0].static_configs[0].labels.0["__path__"],
        "/var/log/*log"
    );
}

#[test]
fn the_issue_example_loads() {
    let yaml = r#"
server: {http_listen_address: 127.0.0.1, http_listen_port: 9080, grpc_listen_port: 0}
positions: {filename: /var/lib/logferry/positions.yaml, sync_period: 10s, ignore_invalid_yaml: false}
clients: [{url: http://localhost:3100/loki/api/v1/push}]
target_config: {sync_period: 10s}
limits_config: {max_line_size: 0, max_line_size_truncate: false}
scrape_configs:
  - job_name: system
    static_configs:
      - targets: [localhost]
        labels: {job: varlogs, host: data-01, __path__: /var/log/*log, __path_exclude__: /var/log/*.gz}
"#;
    Config::parse(yaml, "x").unwrap();
}

#[test]
fn unknown_keys_name_file_line_and_key() {
    let e = err("server:\n  http_listen_port: 1\n  colour: blue\n");
    assert!(
        e.starts_with("cfg.yaml:3:3: server.colour: unknown field `colour`"),
        "{e}"
    );
}

#[test]
fn unsupported_keys_say_so() {
    let e = err("scrape_configs:\n- job_name: j\n  gcplog:\n    project_id: p\n");
    assert!(
        e.starts_with("cfg.yaml:3:3: scrape_configs[0].gcplog: not supported yet"),
        "{e}"
    );
    let e = err("wal:\n  enabled: true\n");
    assert!(e.contains("not supported yet"), "{e}");
    // Disabled or empty forms of unsupported features are harmless.
    Config::parse(
        "wal:\n  enabled: false\nscrape_configs:\n- job_name: j\n  pipeline_stages: []\n",
        "x",
    )
    .unwrap();
}

#[test]
fn bad_durations_and_globs_are_located() {
    let e = err("positions:\n  sync_period: soon\n");
    assert!(
        e.starts_with("cfg.yaml:2:")
            && e.contains("positions.sync_period")
            && e.contains("invalid duration"),
        "{e}"
    );
    let e = err(
        "scrape_configs:\n- job_name: j\n  static_configs:\n  - labels:\n      __path__: /var/log/[z\n",
    );
    assert!(e.contains("invalid glob in __path__"), "{e}");
}

#[test]
fn duplicate_job_names_are_rejected() {
    let e = err("scrape_configs:\n- job_name: j\n- job_name: j\n");
    assert!(e.contains("multiple scrape configs"), "{e}");
}

#[test]
fn meaningless_keys_are_accepted() {
    Config::parse(
        "server:\n  grpc_listen_port: 0\n  register_instrumentation: false\n  http_server_read_timeout: 30s\noptions:\n  stream_lag_labels: ''\ntracing:\n  enabled: false\n",
        "x",
    )
    .unwrap();
}

#[test]
fn sizes_accept_units() {
    let c = Config::parse(
        "limits_config:\n  max_line_size: 256KB\n  max_line_size_truncate: true\n",
        "x",
    )
    .unwrap();
    assert_eq!(c.limits_config.max_line_size, ByteSize(256 * 1024));
}

#[test]
fn secrets_are_not_printed() {
    let c = Config::parse(
        "clients:\n- url: http://l/\n  basic_auth: {username: u, password: hunter2}\n  bearer_token: tok123\n",
        "x",
    )
    .unwrap();
    let printed = c.to_yaml();
    assert!(
        !printed.contains("hunter2") && !printed.contains("tok123"),
        "{printed}"
    );
    assert!(printed.contains("<secret>"));
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn single_client_spelling_is_merged() {
    let c = Config::parse(
        "client:\n  url: http://a/\nclients:\n- url: http://b/\n",
        "x",
    )
    .unwrap();
    assert_eq!(
        c.clients.iter().map(|c| c.url.as_str()).collect::<Vec<_>>(),
        vec!["http://a/", "http://b/"]
    );
}

#[test]
fn builtin_default_tails_var_log() {
    let c = Config::builtin_default(std::path::Path::new("/state"));
    assert_eq!(
        c.positions.filename,
        std::path::Path::new("/state/positions.yaml")
    );
    assert_eq!(
        c.scrape_configs[0].static_configs[0].labels.0["__path__"],
        "/var/log/*log"
    );
    assert!(c.clients.is_empty());
}

#[test]
fn client_settings_are_checked_at_load() {
    let e = err("clients:\n- url: ftp://x/\n");
    assert!(e.contains("clients[0].url") && e.contains("http"), "{e}");
    let e = err("clients:\n- url: http://l/\n  encoding: protobuf\n  compression: gzip\n");
    assert!(
        e.contains("clients[0].compression") && e.contains("snappy"),
        "{e}"
    );
    let e = err("clients:\n- url: http://l/\n  encoding: xml\n");
    assert!(e.contains("clients[0].encoding"), "{e}");
    Config::parse(
        "clients:\n- url: https://l:3100/p\n  encoding: json\n  compression: none\n",
        "x",
    )
    .unwrap();
}

#[test]
fn journal_config_has_promtails_defaults_and_checks_matches() {
    let config = Config::parse(
        "scrape_configs:\n- job_name: j\n  journal:\n    labels: {job: systemd}\n    matches: _SYSTEMD_UNIT=ssh.service PRIORITY=3\n",
        "x",
    )
    .unwrap();
    let journal = config.scrape_configs[0].journal.clone().unwrap();
    assert_eq!(journal.max_age, GoDuration::from_secs(7 * 3600));
    assert!(!journal.json);
    assert_eq!(journal.path, None);
    assert_eq!(
        journal.matches.0,
        vec![
            ("_SYSTEMD_UNIT".to_string(), "ssh.service".to_string()),
            ("PRIORITY".to_string(), "3".to_string())
        ]
    );
    let e = err(
        "scrape_configs:\n- job_name: j\n  journal:\n    json: true\n    matches: _SYSTEMD_UNIT\n",
    );
    assert!(
        e.starts_with(
            "cfg.yaml:5:5: scrape_configs[0].journal.matches: \"_SYSTEMD_UNIT\" is not FIELD=value"
        ),
        "{e}"
    );
    let e = err("scrape_configs:\n- job_name: j\n  journal:\n    matches: unit=x\n");
    assert!(e.contains("not a journal field name"), "{e}");
    let e = err("scrape_configs:\n- job_name: j\n  journal:\n    max_age: soon\n");
    assert!(
        e.starts_with("cfg.yaml:4:5: scrape_configs[0].journal.max_age"),
        "{e}"
    );
    let e = err("scrape_configs:\n- job_name: j\n  journal:\n    paths: /x\n");
    assert!(e.contains("unknown field `paths`"), "{e}");
}
