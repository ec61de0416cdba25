//! `syslog:` scrape configs: a listener per job that receives syslog messages (RFC 5424 and
//! RFC 3164) over TCP (octet counting or one per line, optionally TLS) or UDP, labels them as
//! Promtail does, and runs them through the job's relabeling and stages.
//!
//! The sockets are served by a small runtime the input owns, whose tasks parse and relabel
//! messages; its thread takes them, a read's worth at a time, from a bounded queue (64 TCP
//! reads of at most 64 KiB, or batches of up to 256 datagrams) and gives them to a
//! [`RecordStep`], whose sending blocks while the outputs are full: the queue then fills, TCP
//! connections stop being read, and UDP datagrams are counted as dropped. A socket has nothing to resume from, so its source is
//! untracked: what was received and not yet handed to the outputs when logferry stops is
//! counted as dropped (`reason="shutdown"`).

mod framing;
mod listen;
mod message;
mod resolve;
mod rfc3164;
mod rfc5424;
mod tls;

use super::records::{RecordStep, RelabeledBatch, Relabeler};
use super::{Input, InputContext, InputError, RunningInput};
use crate::config::{Config, ConfigError, SyslogConfig, SyslogProtocol};
use crate::metrics::HostReason;
use crate::status::{ListenerCounters, ListenerStatus};
use listen::{Drops, Shared};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Batches of records waiting between the sockets and the input's thread.
const QUEUE: usize = 64;
/// What is put in chunks at most between two sends: records, and bytes of their lines.
const SEND_RECORDS: u64 = 10_000;
const SEND_BYTES: usize = 4 << 20;
/// How long stopping waits for what was received to be handed to the outputs.
const HAND_OVER: Duration = Duration::from_secs(1);

/// One job's listener, resolved from its config.
pub struct SyslogInput {
    job: String,
    config: SyslogConfig,
    address: SocketAddr,
    relabel: Vec<crate::relabel::RelabelConfig>,
    stages: Vec<serde_yaml_ng::Value>,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// What decides whether a reload may keep the running listener: the resolved config, the
    /// rules, the stages and the bytes of the TLS files (a renewed certificate restarts it).
    identity: String,
}

impl SyslogInput {
    /// The listener of scrape config `index`; None when it has no `syslog:`.
    pub fn new(
        config: &Config,
        index: usize,
        origin: &str,
    ) -> Result<Option<SyslogInput>, ConfigError> {
        let Some(job) = config.scrape_configs.get(index) else {
            return Ok(None);
        };
        let Some(syslog) = &job.syslog else {
            return Ok(None);
        };
        let semantic = |key: &str, message: String| ConfigError::Semantic {
            file: origin.to_string(),
            key: format!("scrape_configs[{index}].syslog.{key}"),
            message,
        };
        let address = syslog
            .socket_addr()
            .map_err(|m| semantic("listen_address", m))?;
        let mut tls_bytes = Vec::new();
        let tls = match &syslog.tls_config {
            None => None,
            Some(tls) => {
                for path in [&tls.cert_file, &tls.key_file, &tls.ca_file]
                    .into_iter()
                    .flatten()
                {
                    tls_bytes.push(std::fs::read(path).unwrap_or_default());
                }
                Some(tls::server_config(tls).map_err(|e| semantic("tls_config", e.to_string()))?)
            }
        };
        let identity = format!(
            "{syslog:?}\n{:?}\n{:?}\n{tls_bytes:?}",
            job.relabel_configs, job.pipeline_stages
        );
        Ok(Some(SyslogInput {
            job: job.job_name.clone(),
            config: syslog.clone(),
            address,
            relabel: job.relabel_configs.clone(),
            stages: job.pipeline_stages.clone(),
            tls,
            identity,
        }))
    }

    fn protocol(&self) -> &'static str {
        match (self.config.listen_protocol, &self.tls) {
            (SyslogProtocol::Udp, _) => "udp",
            (SyslogProtocol::Tcp, None) => "tcp",
            (SyslogProtocol::Tcp, Some(_)) => "tcp+tls",
        }
    }
}

/// A socket bound before the input starts, so that a busy port fails the start (or the
/// reload) at once.
enum Socket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

impl Input for SyslogInput {
    fn key(&self) -> String {
        format!("syslog/{}", self.job)
    }

    fn start(self: Box<Self>, ctx: InputContext) -> Result<Box<dyn RunningInput>, InputError> {
        let key = self.key();
        let listen_error = |source: std::io::Error| InputError::Listen {
            job: self.job.clone(),
            address: self.address.to_string(),
            source,
        };
        let socket = match self.config.listen_protocol {
            SyslogProtocol::Tcp => {
                let l = std::net::TcpListener::bind(self.address).map_err(listen_error)?;
                l.set_nonblocking(true).map_err(listen_error)?;
                Socket::Tcp(l)
            }
            SyslogProtocol::Udp => {
                let s = std::net::UdpSocket::bind(self.address).map_err(listen_error)?;
                s.set_nonblocking(true).map_err(listen_error)?;
                Socket::Udp(s)
            }
        };
        let bound = match &socket {
            Socket::Tcp(l) => l.local_addr(),
            Socket::Udp(s) => s.local_addr(),
        }
        .map(|a| a.to_string())
        .unwrap_or_else(|_| self.address.to_string());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("syslog-{}", self.job))
            .enable_all()
            .build()
            .map_err(|source| InputError::Thread {
                name: key.clone(),
                source,
            })?;
        let drop_counter = |reason: &str| {
            ctx.metrics
                .dropped_entries
                .get_or_create(&HostReason {
                    host: String::new(),
                    reason: reason.to_string(),
                })
                .clone()
        };
        let drops = Drops {
            malformed: drop_counter("syslog_malformed"),
            too_long: drop_counter("syslog_too_long"),
            empty: drop_counter("syslog_empty_message"),
            queue_full: drop_counter("syslog_queue_full"),
            shutdown: drop_counter("shutdown"),
        };
        let counters = Arc::new(ListenerCounters::default());
        ctx.status.add_listener(
            &key,
            ListenerStatus {
                job: self.job.clone(),
                protocol: self.protocol().into(),
                address: bound.clone(),
                open_connections: 0,
                messages_received: 0,
            },
            counters.clone(),
        );
        let shared = Arc::new(Shared::new(
            self.job.clone(),
            self.config.clone(),
            counters,
            drops.clone(),
            Relabeler::new(&self.relabel),
        ));
        let (queue, records) = mpsc::channel::<RelabeledBatch>(QUEUE);
        let (stop_tx, stop_rx) = watch::channel(false);
        match socket {
            Socket::Tcp(listener) => {
                let tls = self.tls.clone().map(tokio_rustls::TlsAcceptor::from);
                runtime.spawn(listen::accept(listener, tls, shared, queue, stop_rx));
            }
            Socket::Udp(socket) => {
                runtime.spawn(listen::receive(socket, shared, queue, stop_rx));
            }
        }
        tracing::info!(job = %self.job, protocol = self.protocol(), address = %bound, "syslog listener started");
        (ctx.started)(&key);
        let source = ctx.acks.open_untracked();
        let step = RecordStep::new(&self.job, &self.relabel, &self.stages, source, &ctx)?;
        let (handed_over, handed_over_rx) = std::sync::mpsc::sync_channel(1);
        let stop = stop_tx.clone();
        let thread = super::spawn(&key, &ctx, move || {
            let mut forward = Forward {
                step,
                records,
                drops,
                stop,
            };
            forward.run(&runtime);
            let _ = handed_over.send(());
            // Closes every socket before the thread ends, so that a restart can bind again.
            runtime.shutdown_timeout(Duration::from_secs(1));
            Ok(())
        })?;
        Ok(Box::new(RunningSyslog {
            key,
            identity: self.identity,
            stop: stop_tx,
            handed_over: handed_over_rx,
            thread,
            status: ctx.status.clone(),
        }))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// The input's thread: records from the sockets → the record step → the outputs.
struct Forward {
    step: RecordStep,
    records: mpsc::Receiver<RelabeledBatch>,
    drops: Drops,
    stop: watch::Sender<bool>,
}

impl Forward {
    fn run(&mut self, runtime: &tokio::runtime::Runtime) {
        loop {
            let now = Instant::now();
            let wait = self
                .step
                .next_deadline()
                .map_or(Duration::from_secs(1), |d| d.saturating_duration_since(now));
            let got =
                runtime.block_on(async { tokio::time::timeout(wait, self.records.recv()).await });
            let pending = match got {
                // Every socket task ended: the listener was stopped.
                Ok(None) => break,
                Ok(Some(batch)) => {
                    let mut pending = batch.len() as u64;
                    let mut bytes = batch.bytes();
                    let now = Instant::now();
                    self.step.push_batch(batch, now);
                    // Whatever else is queued goes in the same chunks, up to a bound in bytes
                    // too: messages may be long.
                    while pending < SEND_RECORDS && bytes < SEND_BYTES {
                        let Ok(batch) = self.records.try_recv() else {
                            break;
                        };
                        pending += batch.len() as u64;
                        bytes += batch.bytes();
                        self.step.push_batch(batch, now);
                    }
                    pending
                }
                Err(_) => 0,
            };
            if !self.step.send(Instant::now()) {
                self.give_up(pending);
                return;
            }
        }
        if !self.step.finish() {
            tracing::warn!("syslog: outputs gone before the last messages were handed over");
        }
    }

    /// The outputs are gone (logferry is stopping): what is still queued is counted.
    fn give_up(&mut self, pending: u64) {
        self.drops.shutdown.inc_by(pending);
        let _ = self.stop.send(true);
        while let Some(batch) = self.records.blocking_recv() {
            self.drops.shutdown.inc_by(batch.len() as u64);
        }
    }
}

struct RunningSyslog {
    key: String,
    identity: String,
    stop: watch::Sender<bool>,
    handed_over: std::sync::mpsc::Receiver<()>,
    thread: std::thread::JoinHandle<()>,
    status: Arc<crate::status::StatusBoard>,
}

impl RunningInput for RunningSyslog {
    fn reconfigure(&mut self, next: Box<dyn Input>) -> Option<Box<dyn Input>> {
        match next.as_any().downcast_ref::<SyslogInput>() {
            Some(same) if same.identity == self.identity => None,
            _ => Some(next),
        }
    }

    /// Stops the sockets and waits a moment for what they received to be handed to the
    /// outputs, which deliver it within the shutdown deadline.
    fn stop(&mut self) {
        let _ = self.stop.send(true);
        let _ = self.handed_over.recv_timeout(HAND_OVER);
    }

    fn join(self: Box<Self>) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
        self.status.remove_listener(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::CustomMetrics;

    fn plan(yaml: &str) -> Vec<Box<dyn Input>> {
        let config = Config::parse(yaml, "x.yaml").unwrap();
        crate::input::plan(&config, "x.yaml", false, &CustomMetrics::default()).unwrap()
    }

    fn identity(input: &dyn Input) -> String {
        input
            .as_any()
            .downcast_ref::<SyslogInput>()
            .map(|s| s.identity.clone())
            .unwrap_or_default()
    }

    #[test]
    fn the_example_config_plans_one_listener_per_job_and_no_files() {
        let inputs = plan(include_str!("../../../config/syslog.yaml"));
        let keys: Vec<String> = inputs.iter().map(|i| i.key()).collect();
        assert_eq!(keys, ["syslog/syslog-tcp", "syslog/syslog-udp"]);
    }

    #[test]
    fn a_reload_keeps_the_listener_only_when_nothing_changed() {
        let base = "scrape_configs:\n- job_name: s\n  syslog:\n    listen_address: 127.0.0.1:1514\n    labels: {job: a}\n";
        let first = plan(base);
        assert_eq!(identity(&*first[0]), identity(&*plan(base)[0]));
        let relabeled = format!(
            "{base}  relabel_configs:\n  - {{source_labels: [__syslog_message_hostname], target_label: host}}\n"
        );
        for changed in [base.replace("job: a", "job: b"), relabeled] {
            assert_ne!(
                identity(&*first[0]),
                identity(&*plan(&changed)[0]),
                "{changed}"
            );
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |yaml: &str| Config::parse(yaml, "x.yaml").unwrap_err().to_string();
        let e = err("scrape_configs:\n- job_name: s\n  syslog:\n    listen_address: nowhere\n");
        assert!(e.contains("scrape_configs[0].syslog.listen_address"), "{e}");
        let e = err(
            "scrape_configs:\n- job_name: s\n  syslog:\n    listen_address: ':1'\n    listen_protocol: sctp\n",
        );
        assert!(e.starts_with("x.yaml:5:"), "{e}");
        let e = err(
            "scrape_configs:\n- job_name: s\n  syslog:\n    listen_address: ':1'\n    tls_config: {cert_file: a}\n",
        );
        assert!(e.contains("needs both cert_file and key_file"), "{e}");
        let e = err(
            "scrape_configs:\n- job_name: s\n  syslog: {listen_address: ':1', max_message_length: 0}\n",
        );
        assert!(
            e.contains("syslog.max_message_length: must be more than 0"),
            "{e}"
        );
    }
}
