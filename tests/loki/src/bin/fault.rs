//! `fault`: logferry killed with SIGKILL again and again while files grow, shipping to this
//! receiver, which records every line; then the count of what was lost and what came twice.
//! Run through `scripts/fault`, which builds both binaries.
//!
//! ```text
//! fault --logferry PATH [--files 4] [--rate 2000] [--seconds 45] [--kill-every 5]
//!       [--cycles N [--refuse SECONDS]] [--seed N] [--keep]
//! ```
//!
//! `--files` files get `--rate` lines per second between them for `--seconds` seconds, while
//! logferry is killed every `--kill-every` seconds (each interval drawn between half and one and
//! a half of it) and started again. Every line is numbered, so once everything written has
//! arrived (or nothing more arrives), each line is counted: lost if it never arrived, duplicated
//! if it arrived more than once (its extra copies summed). Exits 1 if a line was lost.
//!
//! `--cycles N` is the soak: N kills, whatever the time it takes, with the files rotated every
//! second (half of them renamed away and created anew, half copied and truncated in place) and
//! the receiver answering 503 to every push for `--refuse` seconds in the middle (60, or a third
//! of the run if that is shorter). The glob matches the renamed files, as it must for their
//! last lines to be read after a crash, and the copies too: a copy is a new file, read whole,
//! but it holds the lines a truncation took before logferry read them (always the case while
//! logferry is down or the receiver refuses). So a line arriving through a copy counts as
//! arrived, and the copies' lines are counted apart rather than as duplicates.
//!
//! The rotation is done here, not by `logrotate`: the writer pauses while a file is rotated, so
//! copytruncate's own window (lines written between the copy and the truncation, lost by any
//! shipper) does not count against logferry.

use anyhow::{Context as _, bail};
use loki_receiver::{Behavior, Receiver};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: fault --logferry PATH [--files N] [--rate LINES_PER_S] [--seconds S]
             [--kill-every S] [--cycles N [--refuse S]] [--seed N] [--keep]";

/// How long to wait, after the last line was written, for lines still missing to arrive.
const SETTLE: Duration = Duration::from_secs(120);
/// Lines are padded to about this many bytes, like a short access-log line.
const LINE_BYTES: usize = 100;

#[derive(Debug)]
struct Args {
    logferry: PathBuf,
    files: usize,
    rate: u64,
    seconds: u64,
    kill_every: f64,
    cycles: Option<u32>,
    refuse: Option<u64>,
    seed: u64,
    keep: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Args>> {
    let mut a = Args {
        logferry: PathBuf::new(),
        files: 4,
        rate: 2000,
        seconds: 45,
        kill_every: 5.0,
        cycles: None,
        refuse: None,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        keep: false,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--keep" => a.keep = true,
            "--logferry" => a.logferry = value("--logferry")?.into(),
            "--files" => a.files = number(&value("--files")?)?,
            "--rate" => a.rate = number(&value("--rate")?)?,
            "--seconds" => a.seconds = number(&value("--seconds")?)?,
            "--kill-every" => a.kill_every = number(&value("--kill-every")?)?,
            "--cycles" => a.cycles = Some(number(&value("--cycles")?)?),
            "--refuse" => a.refuse = Some(number(&value("--refuse")?)?),
            "--seed" => a.seed = number(&value("--seed")?)?,
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    if a.logferry.as_os_str().is_empty() {
        bail!("--logferry PATH is required\n\n{USAGE}");
    }
    if a.files == 0 || a.rate == 0 || a.kill_every <= 0.0 || a.cycles == Some(0) {
        bail!("--files, --rate, --kill-every and --cycles must be positive");
    }
    Ok(Some(a))
}

fn number<T: std::str::FromStr>(text: &str) -> anyhow::Result<T> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("not a number: {text:?}"))
}

/// A small deterministic generator for the kill intervals.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One log file being written, and rotated when the soak says so.
struct LogFile {
    index: usize,
    path: PathBuf,
    file: Mutex<File>,
    written: AtomicU64,
    rotations: AtomicU64,
}

impl LogFile {
    fn create(dir: &Path, index: usize) -> anyhow::Result<LogFile> {
        let path = dir.join(format!("app-{index}.log"));
        Ok(LogFile {
            index,
            file: Mutex::new(open_append(&path)?),
            path,
            written: AtomicU64::new(0),
            rotations: AtomicU64::new(0),
        })
    }

    /// Appends lines until `total` are written, in one write, as a program's log buffer does.
    fn write_up_to(&self, total: u64) -> anyhow::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let from = self.written.load(Ordering::Relaxed);
        if total <= from {
            return Ok(());
        }
        let mut text = String::with_capacity((total - from) as usize * (LINE_BYTES + 1));
        for seq in from..total {
            text.push_str(&line_text(self.index, seq));
            text.push('\n');
        }
        file.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.written.store(total, Ordering::Release);
        Ok(())
    }

    /// Even files: renamed away and created anew; odd ones: copied, then truncated in place.
    fn rotate(&self) -> anyhow::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.rotations.fetch_add(1, Ordering::Relaxed) + 1;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if self.index.is_multiple_of(2) {
            let rotated = dir.join(format!("app-{}.log.{n}", self.index));
            std::fs::rename(&self.path, &rotated)
                .with_context(|| format!("renaming {}", self.path.display()))?;
            *file = open_append(&self.path)?;
        } else {
            let copy = dir.join(format!("app-{}.copy.{n}", self.index));
            std::fs::copy(&self.path, &copy)
                .with_context(|| format!("copying {}", self.path.display()))?;
            file.set_len(0)
                .with_context(|| format!("truncating {}", self.path.display()))?;
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn line_text(file: usize, seq: u64) -> String {
    let mut line = format!("f{file} s{seq:010} GET /api/v1/orders/{seq} 200 ");
    while line.len() < LINE_BYTES {
        line.push('x');
    }
    line
}

/// `(file, seq)` of a line this command wrote.
fn parse_line(line: &str) -> Option<(usize, u64)> {
    let mut words = line.split(' ');
    let file = words.next()?.strip_prefix('f')?.parse().ok()?;
    let seq = words.next()?.strip_prefix('s')?.parse().ok()?;
    Some((file, seq))
}

/// What arrived, per line of each file.
#[derive(Default)]
struct Tally {
    /// Arrivals read from the files logferry follows (the logs and their renamed selves).
    arrivals: Vec<Vec<u32>>,
    /// Whether the line also arrived read from a copytruncate copy.
    via_copy: Vec<Vec<bool>>,
    from_copies: u64,
    /// Distinct lines that arrived at all.
    arrived: u64,
    unknown: u64,
}

impl Tally {
    fn new(files: usize) -> Tally {
        Tally {
            arrivals: vec![Vec::new(); files],
            via_copy: vec![Vec::new(); files],
            ..Tally::default()
        }
    }

    fn add(&mut self, receiver: &Receiver) {
        for entry in receiver.take_entries() {
            let Some((file, seq)) =
                parse_line(&entry.line).filter(|(f, _)| *f < self.arrivals.len())
            else {
                self.unknown += 1;
                continue;
            };
            let seq = seq as usize;
            let (arrivals, via_copy) = (&mut self.arrivals[file], &mut self.via_copy[file]);
            if arrivals.len() <= seq {
                arrivals.resize(seq + 1, 0);
                via_copy.resize(seq + 1, false);
            }
            let first = arrivals[seq] == 0 && !via_copy[seq];
            if entry
                .label("filename")
                .is_some_and(|f| f.contains(".copy."))
            {
                via_copy[seq] = true;
                self.from_copies += 1;
            } else {
                arrivals[seq] += 1;
            }
            if first {
                self.arrived += 1;
            }
        }
    }
}

/// Scrapes one counter from logferry's `/metrics`.
fn scrape(port: u16, series: &str) -> Option<f64> {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One logferry process and what its positions writes cost.
struct Agent {
    child: Child,
    port: u16,
    started: Instant,
}

impl Agent {
    fn start(args: &Args, dir: &Path, receiver: &Receiver) -> anyhow::Result<Agent> {
        let port = free_port()?;
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "server:\n  http_listen_address: 127.0.0.1\n  http_listen_port: {port}\n\
                 positions:\n  filename: {}\n\
                 clients:\n- url: {}\n\
                 scrape_configs:\n- job_name: fault\n  static_configs:\n  - targets: [localhost]\n    \
                 labels: {{job: fault, __path__: '{}'}}\n",
                dir.join("positions.yaml").display(),
                receiver.url(),
                dir.join("logs").join("app-*.*").display(),
            ),
        )?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("logferry.log"))?;
        let child = Command::new(&args.logferry)
            .arg(format!("-config.file={}", config.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", args.logferry.display()))?;
        Ok(Agent {
            child,
            port,
            started: Instant::now(),
        })
    }

    /// Positions writes so far and seconds alive, when `/metrics` answers.
    fn writes(&self) -> Option<(f64, f64)> {
        let writes = scrape(self.port, "logferry_positions_writes_total")?;
        Some((writes, self.started.elapsed().as_secs_f64()))
    }

    fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().context("SIGKILL")?;
        self.child.wait()?;
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fault: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let Some(args) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(true);
    };
    let work = std::env::temp_dir().join(format!("logferry-fault-{}", std::process::id()));
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let outcome = fault_run(&args, &work, &logs);
    if args.keep || !matches!(outcome, Ok(true)) {
        eprintln!("fault: files kept in {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    outcome
}

fn fault_run(args: &Args, work: &Path, logs: &Path) -> anyhow::Result<bool> {
    let soak = args.cycles.is_some();
    let receiver = Receiver::builder().try_start()?;
    let files: Arc<Vec<LogFile>> = Arc::new(
        (0..args.files)
            .map(|i| LogFile::create(logs, i))
            .collect::<anyhow::Result<_>>()?,
    );
    let mut rng = Rng(args.seed | 1);
    let planned = match args.cycles {
        Some(n) => args.kill_every * f64::from(n),
        None => args.seconds as f64,
    };
    let refuse = soak.then(|| {
        args.refuse
            .map(|s| s as f64)
            .unwrap_or((planned / 3.0).min(60.0))
    });
    eprintln!(
        "fault: {} files, {} lines/s, {}, kill -9 every ~{}s (seed {}), in {}",
        args.files,
        args.rate,
        match args.cycles {
            Some(n) => format!("{n} cycles with rotation every second"),
            None => format!("{}s", args.seconds),
        },
        args.kill_every,
        args.seed,
        work.display()
    );

    // The writers (and, in the soak, the rotations) run until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let writer = {
        let (files, stop, rate) = (files.clone(), stop.clone(), args.rate);
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut next_rotation = Duration::from_secs(1);
            while !stop.load(Ordering::Acquire) {
                let elapsed = start.elapsed();
                let due = (elapsed.as_secs_f64() * rate as f64) as u64;
                for f in files.iter() {
                    // Lines go round-robin over the files.
                    let n = files.len() as u64;
                    f.write_up_to(due / n + u64::from((f.index as u64) < due % n))?;
                }
                if soak && elapsed >= next_rotation {
                    for f in files.iter() {
                        f.rotate()?;
                    }
                    next_rotation += Duration::from_secs(1);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })
    };

    let mut kills = 0u32;
    let mut shipping_writes = (0.0, 0.0);
    let mut refused = None;
    let mut agent = Agent::start(args, work, &receiver)?;
    let mut tally = Tally::new(args.files);
    loop {
        let done = match args.cycles {
            Some(n) => kills >= n,
            None => start.elapsed().as_secs_f64() >= args.seconds as f64,
        };
        if done {
            break;
        }
        let wait = args.kill_every * (0.5 + rng.unit());
        let until = Instant::now() + Duration::from_secs_f64(wait);
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
            if let Some(window) = refuse {
                let t = start.elapsed().as_secs_f64();
                let from = (planned - window) / 2.0;
                match refused {
                    None if t >= from => {
                        eprintln!("fault: the receiver refuses pushes (503) for {window:.0}s");
                        receiver.set_behavior(Behavior::Status(503, "refusing".into()));
                        refused = Some(Instant::now());
                    }
                    Some(since)
                        if since.elapsed().as_secs_f64() >= window
                            && receiver.behavior() != Behavior::Accept =>
                    {
                        eprintln!("fault: the receiver accepts pushes again");
                        receiver.set_behavior(Behavior::Accept);
                    }
                    _ => {}
                }
            }
            if args.cycles.is_none() && start.elapsed().as_secs() >= args.seconds {
                break;
            }
        }
        if let Some((w, s)) = agent.writes() {
            shipping_writes.0 += w;
            shipping_writes.1 += s;
        }
        agent.kill()?;
        kills += 1;
        tally.add(&receiver);
        agent = Agent::start(args, work, &receiver)?;
    }
    receiver.set_behavior(Behavior::Accept);
    stop.store(true, Ordering::Release);
    match writer.join() {
        Ok(result) => result?,
        Err(_) => bail!("the writer thread failed"),
    }
    let written: Vec<u64> = files
        .iter()
        .map(|f| f.written.load(Ordering::Acquire))
        .collect();
    let total: u64 = written.iter().sum();
    let wrote_for = start.elapsed();

    // Let the last logferry deliver everything, then measure what it writes while idle.
    let mut last_progress = (Instant::now(), tally.arrived);
    while tally.arrived < total && last_progress.0.elapsed() < SETTLE {
        std::thread::sleep(Duration::from_millis(200));
        tally.add(&receiver);
        if tally.arrived > last_progress.1 {
            last_progress = (Instant::now(), tally.arrived);
        }
    }
    // Acknowledgements of the last batches land in the positions file within moments.
    std::thread::sleep(Duration::from_secs(2));
    let idle_before = agent.writes();
    std::thread::sleep(Duration::from_secs(10));
    let idle_after = agent.writes();
    agent.kill()?;
    tally.add(&receiver);

    let mut lost = 0u64;
    let mut duplicated = 0u64;
    let mut extra = 0u64;
    let mut first_lost = Vec::new();
    for (file, &n) in written.iter().enumerate() {
        for seq in 0..n as usize {
            let count = tally.arrivals[file].get(seq).copied().unwrap_or(0);
            let via_copy = tally.via_copy[file].get(seq).copied().unwrap_or(false);
            if count == 0 && !via_copy {
                lost += 1;
                if first_lost.len() < 10 {
                    first_lost.push(format!("f{file} s{seq}"));
                }
            }
            if count > 1 {
                duplicated += 1;
                extra += u64::from(count - 1);
            }
        }
    }
    let pct = |n: u64| 100.0 * n as f64 / total.max(1) as f64;
    println!(
        "written {total}, lost {lost}, duplicated {duplicated} ({:.3} %), extra copies {extra}",
        pct(duplicated)
    );
    println!(
        "  {kills} kill -9 in {:.0}s of writing; {} lines/s over {} files",
        wrote_for.as_secs_f64(),
        args.rate,
        args.files
    );
    if soak {
        let rotations: u64 = files
            .iter()
            .map(|f| f.rotations.load(Ordering::Relaxed))
            .sum();
        println!(
            "  {rotations} rotations (half rename+create, half copytruncate); pushes refused for \
             {:.0}s; {} lines read again from copytruncate copies (not counted above)",
            refuse.unwrap_or(0.0),
            tally.from_copies
        );
    }
    if shipping_writes.1 > 0.0 {
        println!(
            "  positions writes/s: {:.2} while shipping (mean over the killed runs)",
            shipping_writes.0 / shipping_writes.1
        );
    }
    if let (Some((w0, s0)), Some((w1, s1))) = (idle_before, idle_after) {
        println!(
            "  positions writes/s: {:.2} while idle (after everything was delivered)",
            (w1 - w0) / (s1 - s0).max(1e-9)
        );
    }
    if tally.unknown > 0 {
        println!(
            "  {} entries that this command did not write",
            tally.unknown
        );
    }
    if lost > 0 {
        println!("LOST lines, first ones: {}", first_lost.join(", "));
    }
    Ok(lost == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_their_file_and_number() {
        let line = line_text(3, 1234);
        assert_eq!(line.len(), LINE_BYTES);
        assert_eq!(parse_line(&line), Some((3, 1234)));
        assert_eq!(parse_line("something else"), None);
    }

    #[test]
    fn arguments() {
        let parse = |list: &[&str]| parse_args(list.iter().map(|s| s.to_string()));
        let a = parse(&["--logferry", "/x", "--cycles", "20", "--refuse", "10"])
            .unwrap()
            .unwrap();
        assert_eq!((a.files, a.rate, a.seconds), (4, 2000, 45));
        assert_eq!((a.cycles, a.refuse), (Some(20), Some(10)));
        assert!(parse(&[]).is_err(), "--logferry is required");
        assert!(parse(&["--logferry", "/x", "--files", "0"]).is_err());
        assert!(parse(&["--help"]).unwrap().is_none());
    }
}
