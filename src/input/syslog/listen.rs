//! The sockets: TCP (with or without TLS) and UDP listeners, as tasks on the input's own
//! runtime. Each task parses and relabels what it reads (so that both of the runtime's threads
//! do that work, and the input's thread only chunks) and hands each read's messages, in one
//! buffer, to the input's thread over a bounded queue: a TCP connection waits for room (so
//! when the outputs are full the sender's buffer fills, as with any relay), a UDP datagram that
//! finds no room is counted as dropped, since nothing can hold a UDP sender back.

use super::framing::{BrokenFraming, Decoder, Frame};
use super::message::{self, Wanted};
use super::resolve::Resolver;
use crate::config::SyslogConfig;
use crate::entry::Timestamp;
use crate::input::records::{RelabeledBatch, Relabeler, lossy_utf8};
use crate::status::ListenerCounters;
use prometheus_client::metrics::counter::Counter;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, watch};

/// Open TCP connections one listener serves at most; more are closed at once (and logged),
/// so that many idle clients cannot exhaust logferry's descriptors.
pub const MAX_CONNECTIONS: usize = 1000;
/// Bytes asked for per read.
const READ_SIZE: usize = 64 * 1024;
/// Datagrams taken in one go before they are handed on.
const UDP_BATCH: usize = 256;

/// Counters of what a listener could not deliver, by reason (`dropped_entries{reason=…}`).
#[derive(Clone)]
pub struct Drops {
    pub malformed: Counter,
    pub too_long: Counter,
    pub empty: Counter,
    pub queue_full: Counter,
    pub shutdown: Counter,
}

/// What every task of one listener shares.
pub struct Shared {
    pub config: SyslogConfig,
    pub counters: Arc<ListenerCounters>,
    pub drops: Drops,
    pub resolver: Resolver,
    pub connections: Arc<Semaphore>,
    pub job: String,
    /// The `__syslog_*` labels the job's relabeling reads.
    wanted: Wanted,
    /// The job's relabeling; each task relabels with a clone of its own.
    relabeler: Relabeler,
    /// When a bad message was last logged: at most one warning a second per listener.
    last_warning: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Shared {
    pub fn new(
        job: String,
        config: SyslogConfig,
        counters: Arc<ListenerCounters>,
        drops: Drops,
        relabeler: Relabeler,
    ) -> Shared {
        Shared {
            wanted: Wanted::new(&relabeler),
            relabeler,
            config,
            counters,
            drops,
            resolver: Resolver::default(),
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            job,
            last_warning: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    fn warn(&self, peer: IpAddr, what: &dyn std::fmt::Display) {
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(job = %self.job, %peer, suppressed, "syslog: {what}");
    }

    /// The labels every message from `ip` starts with: the job's `labels` and the
    /// connection's.
    async fn connection_labels(&self, ip: IpAddr) -> Vec<(String, String)> {
        let mut labels: Vec<(String, String)> = self
            .config
            .labels
            .0
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        if self.wanted.wants("__syslog_connection_ip_address") {
            labels.push(("__syslog_connection_ip_address".into(), ip.to_string()));
        }
        if self.wanted.wants("__syslog_connection_hostname") {
            labels.push((
                "__syslog_connection_hostname".into(),
                self.resolver.name(ip).await.to_string(),
            ));
        }
        labels
    }

    /// Adds one frame to `batch`, relabeled; nothing (counted) when it is not a message to
    /// ship.
    fn record(
        &self,
        frame: &[u8],
        base: &[(String, String)],
        peer: IpAddr,
        now: Timestamp,
        relabeler: &mut Relabeler,
        batch: &mut RelabeledBatch,
    ) {
        let text = lossy_utf8(frame);
        let parsed = match message::parse(&text) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.drops.malformed.inc();
                self.warn(peer, &format_args!("malformed message skipped: {e}"));
                return;
            }
        };
        let Some(msg) = parsed.msg else {
            self.drops.empty.inc();
            return;
        };
        relabeler.labels(base.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        parsed.add_labels(self.config.label_structured_data, &self.wanted, |n, v| {
            relabeler.label(n, v)
        });
        let timestamp = match parsed.timestamp {
            Some(t) if self.config.use_incoming_timestamp => t,
            _ => now,
        };
        let line = if self.config.use_rfc5424_message {
            text.trim_end_matches(['\n', '\r', '\0'])
        } else {
            msg
        };
        batch.push(relabeler.finish(), timestamp, line);
    }

    fn too_long(&self, peer: IpAddr) {
        self.drops.too_long.inc();
        self.warn(
            peer,
            &format_args!(
                "message longer than max_message_length ({} bytes) skipped",
                self.config.max_message_length
            ),
        );
    }
}

/// Accepts TCP connections until `stop`, each served by a task of its own.
pub async fn accept(
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    queue: mpsc::Sender<RelabeledBatch>,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(job = %shared.job, error = %e, "syslog: cannot listen");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                tracing::warn!(job = %shared.job, error = %e, "syslog: cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            shared.warn(
                peer.ip(),
                &format_args!("more than {MAX_CONNECTIONS} connections: closing a new one"),
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (shared, queue, stop) = (shared.clone(), queue.clone(), stop.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            shared.counters.connections.fetch_add(1, Ordering::Relaxed);
            match tls {
                None => serve(stream, peer, &shared, queue, stop).await,
                Some(acceptor) => {
                    let idle = shared.config.idle_timeout.0;
                    match tokio::time::timeout(idle, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve(stream, peer, &shared, queue, stop).await,
                        Ok(Err(e)) => {
                            shared.warn(peer.ip(), &format_args!("TLS handshake failed: {e}"))
                        }
                        Err(_) => shared.warn(peer.ip(), &"TLS handshake timed out"),
                    }
                }
            }
            shared.counters.connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// Reads one connection until it closes, goes idle past `idle_timeout`, breaks its framing,
/// or the listener stops.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    shared: &Shared,
    queue: mpsc::Sender<RelabeledBatch>,
    mut stop: watch::Receiver<bool>,
) {
    let ip = peer.ip();
    let base = shared.connection_labels(ip).await;
    let mut relabeler = shared.relabeler.clone();
    let idle = shared.config.idle_timeout.0;
    let mut decoder = Decoder::new(shared.config.max_message_length);
    loop {
        decoder.buffer().reserve(READ_SIZE);
        let read = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            read = tokio::time::timeout(idle, stream.read_buf(decoder.buffer())) => read,
        };
        let ended = match read {
            Err(_) => {
                tracing::debug!(job = %shared.job, %peer, "syslog: idle connection closed");
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(job = %shared.job, %peer, error = %e, "syslog: connection failed");
                true
            }
            Ok(Ok(0)) => true,
            Ok(Ok(_)) => false,
        };
        let now = Timestamp::now();
        let mut batch = RelabeledBatch::default();
        let mut each = |frame: Frame<'_>| match frame {
            Frame::Message(bytes) => {
                shared.record(bytes, &base, ip, now, &mut relabeler, &mut batch);
            }
            Frame::TooLong => shared.too_long(ip),
        };
        let framing = if ended {
            decoder.finish(&mut each)
        } else {
            decoder.decode(&mut each)
        };
        if !batch.is_empty() {
            let n = batch.len() as u64;
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {
                    shared.drops.shutdown.inc_by(n);
                    return;
                }
                sent = queue.send(batch) => if sent.is_err() {
                    shared.drops.shutdown.inc_by(n);
                    return;
                },
            }
            shared.counters.messages.fetch_add(n, Ordering::Relaxed);
        }
        if let Err(BrokenFraming) = framing {
            shared.drops.malformed.inc();
            shared.warn(
                ip,
                &"broken octet counting: closing the connection (the next frame cannot be found)",
            );
            return;
        }
        if ended {
            // A TLS client expects close_notify back before it counts its messages as sent.
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
            return;
        }
    }
}

/// Reads datagrams until `stop`: one message each.
pub async fn receive(
    socket: std::net::UdpSocket,
    shared: Arc<Shared>,
    queue: mpsc::Sender<RelabeledBatch>,
    mut stop: watch::Receiver<bool>,
) {
    let socket = match tokio::net::UdpSocket::from_std(socket) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(job = %shared.job, error = %e, "syslog: cannot listen");
            return;
        }
    };
    let max = shared.config.max_message_length;
    let mut buf = vec![0u8; 65536];
    let mut labels: BTreeMap<IpAddr, Vec<(String, String)>> = BTreeMap::new();
    let mut relabeler = shared.relabeler.clone();
    loop {
        let first = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            got = socket.recv_from(&mut buf) => got,
        };
        let now = Timestamp::now();
        let mut batch = RelabeledBatch::default();
        let mut got = first;
        for _ in 0..UDP_BATCH {
            match got {
                Ok((n, peer)) => {
                    let ip = peer.ip();
                    if !labels.contains_key(&ip) {
                        if labels.len() >= 4096 {
                            labels.clear();
                        }
                        let base = shared.connection_labels(ip).await;
                        labels.insert(ip, base);
                    }
                    if n > max {
                        shared.too_long(ip);
                    } else if let Some(base) = labels.get(&ip) {
                        shared.record(&buf[..n], base, ip, now, &mut relabeler, &mut batch);
                    }
                }
                Err(e) => tracing::debug!(job = %shared.job, error = %e, "syslog: receive failed"),
            }
            got = match socket.try_recv_from(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                other => other,
            };
        }
        if batch.is_empty() {
            continue;
        }
        let n = batch.len() as u64;
        shared.counters.messages.fetch_add(n, Ordering::Relaxed);
        match queue.try_send(batch) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                shared.drops.queue_full.inc_by(n);
                shared.warn(
                    IpAddr::from([0, 0, 0, 0]),
                    &format_args!("outputs are behind: {n} UDP message(s) dropped"),
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
