//! The command line as a user meets it: both flag spellings, `-check-syntax`, the messages of
//! bad configs, `-print-config-stderr`, `-config.expand-env`, `-version`, the built-in default
//! config, and stopping on signals.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A config whose text is `yaml`, in `dir/name`.
fn write(dir: &Path, name: &str, yaml: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

#[test]
fn both_flag_spellings_read_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "hello from the log\n");
    let config = Config::new(dir.path(), &log).write(dir.path());

    // Promtail's single dash with `=`.
    let mut agent = Agent::start_cmd(command(&config));
    agent.wait_for_line("hello from the log", SOON);
    agent.stop();

    // GNU style: two dashes, value as the next argument.
    append(&log, "second run\n");
    let mut cmd = Command::new(BIN);
    cmd.arg("--config.file").arg(&config);
    let mut agent = Agent::start_cmd(cmd);
    agent.wait_for_line("second run", SOON);
    agent.stop();
    assert_eq!(agent.lines(), vec!["second run"]);

    // A bad config through either spelling is that file's error.
    let bad = write(dir.path(), "bad.yaml", "server:\n  colour: red\n");
    for args in [
        vec![format!("-config.file={bad}")],
        vec!["--config.file".to_string(), bad.clone()],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("bad.yaml:2:3"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn check_syntax_of_a_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new(dir.path(), dir.path().join("*.log"));
    let path = config.write(dir.path()).display().to_string();
    for flag in ["-check-syntax", "--check-syntax"] {
        let out = run(&[flag, &format!("-config.file={path}")]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            "Valid config file! No syntax issues found\n"
        );
    }
    // It only checks: nothing was started, no positions written.
    assert!(!config.positions.exists());
}

#[test]
fn check_syntax_of_an_invalid_config_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "config.yaml",
        "positions:\n  sync_period: soon\n",
    );
    let out = run(&["-check-syntax", &format!("-config.file={path}")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!text(&out.stdout).contains("Valid config file"));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("config.yaml:2:3") && stderr.contains("positions.sync_period"),
        "{stderr}"
    );
    // A missing file too.
    let out = run(&["-check-syntax", "-config.file=/nonexistent/logferry.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/logferry.yaml"));
}

/// Each bad config fails at start with exit code 1 and a message naming file:line and the key.
#[test]
fn bad_configs_name_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown-key.yaml",
            "server:\n  http_listen_port: 9080\n  colour: red\n",
            &["unknown-key.yaml:3:3:", "server.colour", "unknown field"],
        ),
        (
            "bad-duration.yaml",
            "positions:\n  filename: /tmp/p.yaml\n  sync_period: 10\n",
            &[
                "bad-duration.yaml:3:3:",
                "positions.sync_period",
                "invalid duration",
            ],
        ),
        (
            "bad-glob.yaml",
            "scrape_configs:\n- job_name: j\n  static_configs:\n  - labels:\n      __path__: \"/x/[a\"\n",
            &["bad-glob.yaml:", "__path__", "/x/[a", "invalid glob"],
        ),
        (
            "journal.yaml",
            "scrape_configs:\n- job_name: j\n  journal:\n    max_age: 12h\n    matches: _SYSTEMD_UNIT\n",
            &[
                "journal.yaml:5:5:",
                "scrape_configs[0].journal.matches",
                "not FIELD=value",
            ],
        ),
    ];
    for (name, yaml, wanted) in cases {
        let path = write(dir.path(), name, yaml);
        for check in [false, true] {
            let mut args = vec![format!("-config.file={path}")];
            if check {
                args.push("-check-syntax".into());
            }
            let out = Command::new(BIN).args(&args).output().unwrap();
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
            for w in *wanted {
                assert!(stderr.contains(w), "{name}: {w:?} not in {stderr:?}");
            }
            // The line named is the offending one, or (for the glob) its labels mapping.
            let line: usize = stderr
                .split(&format!("{name}:"))
                .nth(1)
                .and_then(|r| r.split(':').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name}: no line number in {stderr:?}"));
            assert!(line >= 3, "{name}: line {line} in {stderr:?}");
        }
    }
}

#[test]
fn print_config_stderr_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}clients:\n- url: http://127.0.0.1:9/loki/api/v1/push\n  basic_auth:\n    username: shipper\n    password: hunter2-password\n  bearer_token: tok-abc-123\n",
        Config::new(dir.path(), dir.path().join("*.log")).yaml()
    );
    let path = write(dir.path(), "config.yaml", &yaml);
    // With -dry-run nothing is shipped, so the config is printed and the agent runs.
    let mut cmd = Command::new(BIN);
    cmd.args([
        &format!("-config.file={path}"),
        "-print-config-stderr",
        "-dry-run",
    ]);
    let mut agent = Agent::start_cmd(cmd);
    agent.stop();
    let stderr = agent.stderr();
    assert!(stderr.contains("username: shipper"), "{stderr}");
    assert!(stderr.contains("password: <secret>"), "{stderr}");
    assert!(stderr.contains("bearer_token: <secret>"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(!stderr.contains("tok-abc"), "{stderr}");
}

#[test]
fn expand_env_replaces_variables_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "expanded\n");
    let yaml = "server:\n  http_listen_port: 0\npositions:\n  filename: ${LF_TEST_DIR}/positions.yaml\nscrape_configs:\n- job_name: env\n  static_configs:\n  - labels:\n      job: ${LF_TEST_UNSET:-fallback}\n      cost: $$5\n      __path__: ${LF_TEST_DIR}/*.log\n";
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();

    let mut cmd = command(&path);
    cmd.arg("-config.expand-env=true")
        .env("LF_TEST_DIR", dir.path())
        .env_remove("LF_TEST_UNSET");
    let mut agent = Agent::start_cmd(cmd);
    agent.wait_for_line("expanded", SOON);
    agent.stop();
    assert_eq!(
        agent.entries()[0].labels,
        format!(
            "{{cost=\"$5\", filename=\"{}\", job=\"fallback\"}}",
            log.display()
        )
    );
    assert!(dir.path().join("positions.yaml").exists());

    // Without the flag the references stay as written: the literal glob matches nothing.
    let mut cmd = command(&path);
    cmd.args(["-dry-run", "-print-config-stderr"])
        .env("LF_TEST_DIR", dir.path());
    let mut agent = Agent::start_cmd(cmd);
    agent.stop();
    assert!(
        agent.stderr().contains("__path__: ${LF_TEST_DIR}/*.log"),
        "{}",
        agent.stderr()
    );
    assert!(agent.lines().is_empty());
}

#[test]
fn version() {
    for flag in ["-version", "--version"] {
        let out = run(&[flag]);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            text(&out.stdout),
            format!("logferry, version {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn the_builtin_default_config_starts_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut cmd = Command::new(BIN);
    cmd.env("STATE_DIRECTORY", &state)
        .env("XDG_STATE_HOME", dir.path().join("xdg"))
        .env("HOME", dir.path().join("home"));
    let mut agent = Agent::start_cmd(cmd);
    agent.stop();
    // Positions went to the state directory given, and whatever it printed was /var/log's.
    let positions = state.join("positions.yaml");
    assert!(positions.exists(), "{}", agent.stderr());
    for record in read_positions(&positions) {
        assert!(record.path.starts_with("/var/log/"), "{record:?}");
    }
    for entry in agent.entries() {
        assert!(entry.labels.contains("job=\"varlogs\""), "{entry:?}");
        assert!(entry.filename().unwrap().starts_with("/var/log/"));
    }
}

#[test]
fn sigint_stops_cleanly_and_saves_positions() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "one\ntwo\n");
    let config = Config::new(dir.path(), &log).positions_sync("1h");
    let positions = config.positions.clone();
    let mut agent = Agent::start(&config.write(dir.path()));
    agent.wait_for_line("two", SOON);
    // SAFETY: signals our own, not yet reaped, child.
    unsafe { libc::kill(agent.pid(), libc::SIGINT) };
    let status = agent.wait_exit(LONG).expect("no exit after SIGINT");
    assert!(status.success(), "{status:?}");
    // The sync period is an hour away: this is the shutdown write.
    assert_eq!(position_of(&positions, &log), Some(8));
}
