//! `docker_sd_configs` against a real Docker Engine: each test starts its own `dockerd` (data,
//! state and socket in a temporary directory, no bridge, no iptables), builds a tiny image
//! from the host's static busybox (nothing is pulled), runs containers with `--network none`
//! and checks what the real binary ships to the Loki receiver. Needs root and Debian's
//! `docker.io` and `busybox-static` (the test command installs them).

mod common;

use common::{Agent, LONG, SOON, wait_until};
use loki_receiver::{Behavior, ReceivedEntry, Receiver};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// One daemon at a time: each is heavy, and the machines are small.
static ONE_ENGINE: Mutex<()> = Mutex::new(());

const IMAGE: &str = "logferry-test-busybox";

/// A Docker Engine of its own. Dropping it removes its containers and stops it, also when a
/// test fails.
struct Engine {
    dir: tempfile::TempDir,
    daemon: Option<Child>,
    _turn: MutexGuard<'static, ()>,
}

impl Engine {
    fn start() -> Engine {
        let turn = ONE_ENGINE.lock().unwrap_or_else(|p| p.into_inner());
        // Short paths: Unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("lfd")
            .tempdir_in("/tmp")
            .unwrap();
        let mut engine = Engine {
            dir,
            daemon: None,
            _turn: turn,
        };
        engine.start_daemon();
        engine.build_image();
        engine
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("d.sock")
    }

    fn start_daemon(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("dockerd.log"))
            .unwrap();
        let child = Command::new("dockerd")
            .arg(format!("--data-root={}", d.join("data").display()))
            .arg(format!("--exec-root={}", d.join("exec").display()))
            .arg(format!("--pidfile={}", d.join("dockerd.pid").display()))
            .arg(format!("-H=unix://{}", self.socket().display()))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--log-driver=json-file",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd (Debian package docker.io) is needed, and root");
        self.daemon = Some(child);
        let up = wait_until(LONG, || {
            self.try_docker(&["version", "--format", "{{.Server.Version}}"])
                .is_some()
        });
        assert!(up, "dockerd did not start:\n{}", self.daemon_log());
    }

    /// Stops the daemon as a service manager would (SIGTERM), waiting for it to exit.
    fn stop_daemon(&mut self) {
        let Some(mut child) = self.daemon.take() else {
            return;
        };
        // SAFETY: a signal to our own child, not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let stopped = wait_until(LONG, || child.try_wait().ok().flatten().is_some());
        if !stopped {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    fn try_docker(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("docker")
            .arg(format!("--host=unix://{}", self.socket().display()))
            .args(args)
            .env("DOCKER_BUILDKIT", "0")
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .arg(format!("--host=unix://{}", self.socket().display()))
            .args(args)
            .env("DOCKER_BUILDKIT", "0")
            .stdin(Stdio::null())
            .output()
            .expect("the docker client (Debian package docker.io) is needed");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// An image of the host's static busybox, built offline.
    fn build_image(&self) {
        let context = self.dir.path().join("image");
        std::fs::create_dir_all(&context).unwrap();
        std::fs::copy("/bin/busybox", context.join("busybox"))
            .expect("a static /bin/busybox (Debian package busybox-static) is needed");
        std::fs::write(
            context.join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
        )
        .unwrap();
        self.docker(&["build", "-q", "-t", IMAGE, context.to_str().unwrap()]);
    }

    /// `docker run -d` of a shell script, with more options before the image; the container id.
    fn run(&self, options: &[&str], script: &str) -> String {
        let mut args = vec!["run", "-d", "--network=none", "--stop-timeout=1"];
        args.extend_from_slice(options);
        args.extend_from_slice(&[IMAGE, "sh", "-c", script]);
        self.docker(&args)
    }

    /// `docker logs -t`: each line of the container with Docker's time, in nanoseconds.
    fn logs(&self, container: &str) -> Vec<(i64, String)> {
        let out = Command::new("docker")
            .arg(format!("--host=unix://{}", self.socket().display()))
            .args(["logs", "-t", container])
            .output()
            .unwrap();
        let mut all = String::from_utf8_lossy(&out.stdout).into_owned();
        all.push_str(&String::from_utf8_lossy(&out.stderr));
        all.lines()
            .filter_map(|l| {
                let (time, text) = l.split_once(' ')?;
                let nanos = chrono::DateTime::parse_from_rfc3339(time)
                    .ok()?
                    .timestamp_nanos_opt()?;
                Some((nanos, text.trim_end_matches('\r').to_string()))
            })
            .collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            if let Some(ids) = self.try_docker(&["ps", "-aq"]) {
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let mut args = vec!["rm", "-f"];
                    args.extend(ids);
                    let _ = self.try_docker(&args);
                }
            }
            self.stop_daemon();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The seed use case's relabeling: container name, stream, Compose and Swarm labels.
const RELABEL: &str = "  relabel_configs:
  - source_labels: [__meta_docker_container_name]
    regex: '/(.*)'
    target_label: container
  - source_labels: [__meta_docker_container_log_stream]
    target_label: stream
  - source_labels: [__meta_docker_container_label_com_docker_compose_project]
    target_label: compose_project
  - source_labels: [__meta_docker_container_label_com_docker_compose_service]
    target_label: compose_service
  - source_labels: [__meta_docker_container_label_com_docker_stack_namespace]
    target_label: swarm_stack
";

/// A config reading `engine` (discovery every minute: what is quicker comes from events),
/// shipping to `loki`, serving `/targets` on `port`.
fn config(dir: &Path, engine: &Engine, loki: &Receiver, port: u16) -> PathBuf {
    let yaml = format!(
        "server:\n  http_listen_port: {port}\npositions:\n  filename: '{}'\n  sync_period: 200ms\nclients:\n- url: {}\n  batchwait: 100ms\nscrape_configs:\n- job_name: docker\n  docker_sd_configs:\n  - host: unix://{}\n    refresh_interval: 1m\n{RELABEL}",
        dir.join("positions.yaml").display(),
        loki.url(),
        engine.socket().display(),
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn entries_of(loki: &Receiver, container: &str) -> Vec<ReceivedEntry> {
    loki.entries()
        .into_iter()
        .filter(|e| e.label("container") == Some(container))
        .collect()
}

fn lines_of(loki: &Receiver, container: &str) -> Vec<String> {
    entries_of(loki, container)
        .into_iter()
        .map(|e| e.line)
        .collect()
}

fn wait_for_lines(loki: &Receiver, agent: &Agent, container: &str, lines: &[&str]) {
    let ok = wait_until(SOON, || {
        let got = lines_of(loki, container);
        lines.iter().all(|l| got.iter().any(|g| g == l))
    });
    assert!(
        ok,
        "{container}: expected {lines:?}, got {:?}; stderr:\n{}",
        lines_of(loki, container),
        agent.tail_of_stderr()
    );
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body
}

fn positions(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("positions.yaml")).unwrap_or_default()
}

/// The position recorded for a container, as written in the positions file.
fn cursor(dir: &Path, id: &str) -> Option<String> {
    let file: serde_yaml_ng::Value = serde_yaml_ng::from_str(&positions(dir)).ok()?;
    file.get("cursors")?
        .get(format!("cursor-{id}"))?
        .as_str()
        .map(str::to_string)
}

/// A time as the positions file records it: unix seconds with nine decimals.
fn seconds(nanos: i64) -> String {
    format!(
        "{}.{:09}",
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000)
    )
}

#[test]
fn containers_before_and_after_start_with_streams_tty_long_lines_and_compose_labels() {
    let engine = Engine::start();
    let dir = tempfile::tempdir().unwrap();
    let early = engine.run(
        &[
            "--name=early",
            "--label=com.docker.compose.project=shop",
            "--label=com.docker.compose.service=web",
            "--label=com.docker.stack.namespace=prod",
        ],
        "echo out-early; echo err-early >&2; exec sleep 1000",
    );
    let loki = Receiver::start();
    let port = free_port();
    let mut agent = Agent::start(&config(dir.path(), &engine, &loki, port));
    wait_for_lines(&loki, &agent, "early", &["out-early", "err-early"]);

    // Started after logferry: picked up through the event stream, not the 1-minute listing.
    engine.run(
        &["--name=late"],
        "echo out-late; head -c 40000 /dev/zero | tr '\\0' x; echo; echo after-long; exec sleep 1000",
    );
    engine.run(
        &["--name=tty", "-t"],
        "echo tty-line; echo tty-err >&2; exec sleep 1000",
    );
    let long = "x".repeat(40_000);
    wait_for_lines(&loki, &agent, "late", &["out-late", &long, "after-long"]);
    wait_for_lines(&loki, &agent, "tty", &["tty-line", "tty-err"]);

    let by_line: BTreeMap<String, ReceivedEntry> = loki
        .entries()
        .into_iter()
        .map(|e| (e.line.clone(), e))
        .collect();
    let labels = |line: &str| by_line[line].labels.clone();
    let expected: BTreeMap<String, String> = [
        ("container", "early"),
        ("stream", "stdout"),
        ("compose_project", "shop"),
        ("compose_service", "web"),
        ("swarm_stack", "prod"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(
        labels("out-early"),
        expected,
        "no internal label is shipped"
    );
    assert_eq!(by_line["err-early"].label("stream"), Some("stderr"));
    assert_eq!(by_line["out-late"].label("compose_service"), None);
    // A TTY has one stream; its carriage returns are not part of the lines.
    assert_eq!(by_line["tty-err"].label("stream"), Some("stdout"));
    // Docker's time of each line, to the nanosecond.
    let logged = engine.logs("early").into_iter().chain(engine.logs("late"));
    // `docker logs` prints the parts of a long line with a time in front of each.
    for (nanos, text) in logged.filter(|(_, text)| text.len() < 16 * 1024) {
        assert_eq!(by_line[&text].timestamp_ns, nanos, "time of {text:?}");
    }
    assert_eq!(loki.entry_count(), 7, "each line once: {:?}", loki.lines());

    // `/api/v1/targets` lists each container with its labels and acknowledged position.
    let ok = wait_until(SOON, || {
        let page = http_get(port, "/api/v1/targets");
        page.contains(&early)
            && page.contains("\"/tty\"")
            && page.contains("\"following\"")
            && page.contains("com_docker_compose_service")
            && !page.contains("\"position\":null")
    });
    assert!(ok, "{}", http_get(port, "/api/v1/targets"));
    assert!(http_get(port, "/targets").contains("<h2>Containers</h2>"));
    agent.stop();
}

#[test]
fn restarted_stopped_and_removed_containers_ship_each_line_once() {
    let engine = Engine::start();
    let dir = tempfile::tempdir().unwrap();
    let loki = Receiver::start();
    let port = free_port();
    let cfg = config(dir.path(), &engine, &loki, port);
    let mut agent = Agent::start(&cfg);
    // Each run appends to a file kept in the container, and says how many runs there were.
    let id = engine.run(
        &["--name=job"],
        "echo x >> /runs; echo \"run $(wc -l < /runs)\"",
    );
    wait_for_lines(&loki, &agent, "job", &["run 1"]);
    engine.docker(&["start", "job"]);
    wait_for_lines(&loki, &agent, "job", &["run 1", "run 2"]);
    engine.docker(&["start", "job"]);
    wait_for_lines(&loki, &agent, "job", &["run 1", "run 2", "run 3"]);

    // A run while logferry is stopped is read at the next start, from the recorded position.
    agent.stop();
    assert!(
        cursor(dir.path(), &id).is_some(),
        "{}",
        positions(dir.path())
    );
    engine.docker(&["start", "-a", "job"]);
    let mut agent = Agent::start(&cfg);
    wait_for_lines(&loki, &agent, "job", &["run 4"]);
    assert_eq!(
        lines_of(&loki, "job"),
        ["run 1", "run 2", "run 3", "run 4"],
        "each run's line once, in order"
    );

    // A renamed container's next lines carry its new name; a removed container is let go.
    engine.run(
        &["--name=named"],
        "echo hello; while [ ! -e /go ]; do usleep 50000; done; echo bye; exec sleep 1000",
    );
    wait_for_lines(&loki, &agent, "named", &["hello"]);
    engine.docker(&["rename", "named", "renamed"]);
    assert!(wait_until(SOON, || http_get(port, "/api/v1/targets")
        .contains("\"/renamed\"")));
    engine.docker(&["exec", "renamed", "touch", "/go"]);
    wait_for_lines(&loki, &agent, "renamed", &["bye"]);
    engine.docker(&["rm", "-f", "renamed"]);
    assert!(
        wait_until(SOON, || {
            let page = http_get(port, "/api/v1/targets");
            page.contains("\"/job\"") && !page.contains("\"/renamed\"")
        }),
        "{}",
        http_get(port, "/api/v1/targets")
    );
    assert_eq!(lines_of(&loki, "named"), ["hello"]);
    assert_eq!(lines_of(&loki, "renamed"), ["bye"]);
    agent.stop();
}

#[test]
fn kill_9_mid_stream_loses_nothing() {
    let engine = Engine::start();
    let dir = tempfile::tempdir().unwrap();
    let loki = Receiver::start();
    let cfg = config(dir.path(), &engine, &loki, free_port());
    let mut agent = Agent::start(&cfg);
    const N: usize = 20_000;
    let id = engine.run(
        &["--name=busy"],
        &format!(
            "i=0; while [ $i -lt {N} ]; do echo \"n $i\"; i=$((i+1)); \
             [ $((i % 500)) = 0 ] && usleep 50000; done; exec sleep 1000"
        ),
    );
    let some = wait_until(LONG, || loki.entry_count() >= 2_000);
    assert!(some, "stderr:\n{}", agent.tail_of_stderr());
    agent.kill9();
    let before = loki.entry_count();
    assert!(
        before < N,
        "killed too late to test anything ({before} lines)"
    );

    let mut agent = Agent::start(&cfg);
    let missing = || {
        let got: HashSet<String> = lines_of(&loki, "busy").into_iter().collect();
        (0..N)
            .filter(|i| !got.contains(&format!("n {i}")))
            .collect::<Vec<usize>>()
    };
    let all = wait_until(LONG, || missing().is_empty());
    let got = lines_of(&loki, "busy");
    let missing: Vec<usize> = missing().into_iter().take(10).collect();
    assert!(
        all,
        "lines lost across kill -9: first missing {missing:?} (got {})",
        got.len()
    );
    // What is sent again is at most the window not yet acknowledged at the kill.
    let duplicates = got.len() - N;
    assert!(
        duplicates <= before,
        "{duplicates} lines sent twice, more than the {before} sent before the kill"
    );
    agent.stop();
    // The position is the last line's time, with nanoseconds.
    let last = engine.logs(&id).last().map(|(nanos, _)| *nanos).unwrap();
    assert_eq!(
        cursor(dir.path(), &id),
        Some(seconds(last)),
        "{}",
        positions(dir.path())
    );
}

#[test]
fn a_daemon_stopped_and_started_again_is_followed_again() {
    let mut engine = Engine::start();
    let dir = tempfile::tempdir().unwrap();
    let loki = Receiver::start();
    let cfg = config(dir.path(), &engine, &loki, free_port());
    let mut agent = Agent::start(&cfg);
    engine.run(
        &["--name=svc", "--restart=always"],
        "echo x >> /boots; echo \"boot $(wc -l < /boots)\"; exec sleep 1000",
    );
    wait_for_lines(&loki, &agent, "svc", &["boot 1"]);

    engine.stop_daemon();
    let noticed = wait_until(SOON, || {
        agent.stderr().contains("cannot reach the Docker daemon")
    });
    assert!(noticed, "stderr:\n{}", agent.tail_of_stderr());
    // Long enough for several attempts while it is away.
    std::thread::sleep(Duration::from_secs(3));
    engine.start_daemon();
    wait_for_lines(&loki, &agent, "svc", &["boot 1", "boot 2"]);
    assert!(wait_until(SOON, || agent
        .stderr()
        .contains("Docker daemon reachable again")));
    let stderr = agent.stderr();
    assert_eq!(
        stderr.matches("cannot reach the Docker daemon").count(),
        1,
        "said once:\n{stderr}"
    );
    assert_eq!(lines_of(&loki, "svc"), ["boot 1", "boot 2"]);
    agent.stop();
}

#[test]
fn a_promtail_position_resumes_from_its_second() {
    let engine = Engine::start();
    let dir = tempfile::tempdir().unwrap();
    let id = engine.run(
        &["--name=old"],
        "echo before; sleep 2; echo at-1; echo at-2; exec sleep 1000",
    );
    let logged = wait_until(SOON, || engine.logs(&id).len() == 3);
    assert!(logged, "{:?}", engine.logs(&id));
    let logs = engine.logs(&id);
    let second = logs[1].0.div_euclid(1_000_000_000);
    assert!(logs[0].0 < second * 1_000_000_000, "{logs:?}");
    // What Promtail 2.8 wrote: the container's id, unix seconds of the last line read.
    std::fs::write(
        dir.path().join("positions.yaml"),
        format!("positions:\n  cursor-{id}: \"{second}\"\n"),
    )
    .unwrap();
    let loki = Receiver::start();
    let cfg = config(dir.path(), &engine, &loki, free_port());
    let mut agent = Agent::start(&cfg);
    wait_for_lines(&loki, &agent, "old", &["at-1", "at-2"]);
    agent.stop();
    assert_eq!(
        lines_of(&loki, "old"),
        ["at-1", "at-2"],
        "the rest of that second on, nothing before"
    );
    assert_eq!(
        cursor(dir.path(), &id),
        Some(seconds(logs[2].0)),
        "{}",
        positions(dir.path())
    );
}

#[test]
fn while_loki_is_down_the_position_waits_and_nothing_is_lost() {
    let engine = Engine::start();
    let dir = tempfile::tempdir().unwrap();
    let loki = Receiver::builder()
        .behavior(Behavior::Status(503, "ingesters unavailable".into()))
        .start();
    let cfg = config(dir.path(), &engine, &loki, free_port());
    let mut agent = Agent::start(&cfg);
    const N: usize = 5_000;
    let id = engine.run(
        &["--name=during"],
        &format!("i=0; while [ $i -lt {N} ]; do echo \"d $i\"; i=$((i+1)); done; exec sleep 1000"),
    );
    let tried = wait_until(SOON, || loki.request_count() >= 2);
    assert!(tried, "stderr:\n{}", agent.tail_of_stderr());
    assert_eq!(loki.entry_count(), 0);
    // Positions are written every 200 ms: none may claim what Loki refused.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(cursor(dir.path(), &id), None, "{}", positions(dir.path()));

    loki.set_behavior(Behavior::Accept);
    let all = wait_until(LONG, || loki.entry_count() >= N);
    assert!(all, "got {} of {N}", loki.entry_count());
    agent.stop();
    let got = lines_of(&loki, "during");
    let expected: Vec<String> = (0..N).map(|i| format!("d {i}")).collect();
    assert_eq!(got, expected, "every line once, in order");
}
