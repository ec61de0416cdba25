//! The end-to-end pipeline workload: nginx access logs parsed the way a new user writes it,
//! `regex` (8 named groups) → `labels` (method, status) → `timestamp` (`time_local`), shipped
//! by the `logferry` binary to a Loki receiver on 127.0.0.1; next to two floors measured in the
//! same run: the shipping floor (read, split, encode and compress, no stages) and the parsing
//! floor (the same regex with `captures_read` into reused locations and chrono reading the
//! timestamp, one thread, in-process).
//!
//! It runs twice: on every core, and pinned to one core, so the figure of using the cores is
//! measured on the same files.
//!
//! [`run_case`] does the same for the other pipelines users run (`common/cases.rs`): the
//! Docker and CRI chains, and Java stack traces joined by `multiline`, each with the shipping
//! floor of its files and its own parsing floor, run once with the default settings.

use logferry::config::{Compression, Encoding};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cases;
use super::loki_run::{Shipment, ship};
use super::workload::{builds, floor_of, thread_cpu};

/// Busy files, each read by the same target.
pub const STAGE_FILES: usize = 4;

const REGEX: &str = r#"^(?P<remote_addr>\S+) - (?P<remote_user>\S+) \[(?P<time_local>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>[^"]+)" (?P<status>\d{3}) (?P<body_bytes_sent>\d+) "[^"]*" "[^"]*"$"#;
const LAYOUT: &str = "02/Jan/2006:15:04:05 -0700";
const CHRONO_LAYOUT: &str = "%d/%b/%Y:%H:%M:%S %z";

const PATHS: &[&str] = &[
    "/",
    "/index.html",
    "/api/v1/orders",
    "/api/v1/orders/8812/items",
    "/static/app.3f9a1c.js",
    "/login",
    "/api/v2/search?q=rust+log+shipper&page=2",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "curl/8.5.0",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const STATUS: &[&str] = &["200", "200", "200", "304", "404", "500", "201"];

/// Writes `STAGE_FILES` nginx access logs totalling about `bytes`; returns their paths and the
/// number of lines.
fn make_nginx_files(dir: &Path, bytes: u64) -> (Vec<PathBuf>, u64) {
    let mut n: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut lines = 0;
    let mut paths = vec![];
    for i in 0..STAGE_FILES {
        let path = dir.join(format!("nginx-{i}.log"));
        let mut out = BufWriter::new(std::fs::File::create(&path).expect("create bench file"));
        let mut written = 0u64;
        let mut line = Vec::with_capacity(512);
        while written < bytes / STAGE_FILES as u64 {
            n ^= n << 13;
            n ^= n >> 7;
            n ^= n << 17;
            let pick = |items: &[&'static str], shift: u32| {
                items[((n >> shift) % items.len() as u64) as usize]
            };
            line.clear();
            let _ = writeln!(
                line,
                "10.{}.{}.{} - - [21/Nov/2026:{:02}:{:02}:{:02} +0100] \"{} {} HTTP/1.1\" {} {} \"-\" \"{}\"",
                n % 256,
                (n >> 8) % 256,
                (n >> 16) % 256,
                (lines / 3600) % 24,
                (lines / 60) % 60,
                lines % 60,
                pick(METHODS, 24),
                pick(PATHS, 28),
                pick(STATUS, 32),
                (n >> 40) % 50_000,
                pick(AGENTS, 36),
            );
            out.write_all(&line).expect("write bench file");
            written += line.len() as u64;
            lines += 1;
        }
        out.flush().expect("flush bench file");
        paths.push(path);
    }
    (paths, lines)
}

/// Calls `parse` with every line of `paths` (without its newline), on this thread; returns
/// the CPU time it took, reading included.
fn each_line(paths: &[PathBuf], mut parse: impl FnMut(&str)) -> Duration {
    let start = thread_cpu();
    let mut line = String::new();
    for path in paths {
        let mut file = BufReader::with_capacity(
            256 * 1024,
            std::fs::File::open(path).expect("open bench file"),
        );
        loop {
            line.clear();
            if file.read_line(&mut line).expect("read bench file") == 0 {
                break;
            }
            parse(line.trim_end_matches('\n'));
        }
    }
    thread_cpu() - start
}

/// The parsing floor: the regex with `captures_read` into reused locations, and chrono reading
/// `time_local`, over every line, on this thread. Returns CPU time.
fn parsing_floor(paths: &[PathBuf]) -> Duration {
    let regex = regex::Regex::new(REGEX).expect("bench regex");
    let time_group = regex
        .capture_names()
        .position(|n| n == Some("time_local"))
        .expect("time_local group");
    let mut locs = regex.capture_locations();
    let mut sum = 0i64;
    let cpu = each_line(paths, |text| {
        if regex.captures_read(&mut locs, text).is_some()
            && let Some((a, b)) = locs.get(time_group)
            && let Ok(t) = chrono::DateTime::parse_from_str(&text[a..b], CHRONO_LAYOUT)
        {
            sum = sum.wrapping_add(t.timestamp());
        }
    });
    std::hint::black_box(sum);
    cpu
}

/// The job's stages, as the config has them.
fn stages_yaml() -> String {
    format!(
        "    pipeline_stages:\n      - regex:\n          expression: '{REGEX}'\n      - labels:\n          method:\n          status:\n      - timestamp:\n          source: time_local\n          format: '{LAYOUT}'\n"
    )
}

fn total_size(paths: &[PathBuf]) -> u64 {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Measures the shipping and the parsing floor of `paths` (`gb` in all), each the least of a
/// few runs, and prints them; returns their sum in CPU-s per GB. Both read the files first,
/// which also warms the page cache.
fn floors(
    paths: &[PathBuf],
    gb: f64,
    shipping_floor: impl Fn(&[PathBuf], Encoding, Compression) -> Duration,
    parsing_floor: impl Fn() -> Duration,
) -> f64 {
    let ship = floor_of(|| shipping_floor(paths, Encoding::Protobuf, Compression::Snappy))
        .as_secs_f64()
        / gb;
    let parse = floor_of(parsing_floor).as_secs_f64() / gb;
    println!(
        "floors, CPU-s/GB: shipping {ship:.2}, parsing {parse:.2}, sum {:.2}",
        ship + parse
    );
    ship + parse
}

/// Runs the workload on about `bytes` of nginx lines and prints its figures and floors.
pub fn run(bytes: u64, shipping_floor: impl Fn(&[PathBuf], Encoding, Compression) -> Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (paths, lines) = make_nginx_files(dir.path(), bytes);
    let total = total_size(&paths);
    let gb = total as f64 / 1e9;
    let glob = format!("{}/nginx-*.log", dir.path().display());
    println!(
        "\nstages: regex (8 groups) → labels (method, status) → timestamp (time_local); {STAGE_FILES} files, {lines} lines, {:.1} MB",
        total as f64 / 1e6
    );
    let floors = floors(&paths, gb, shipping_floor, || parsing_floor(&paths));
    println!(
        "{:<18} {:>12} {:>9} {:>11} {:>6} {:>9} {:>13}",
        "cores", "lines/s", "MB/s", "CPU-s/GB", "most", "peak RSS", "vs floors"
    );
    for (build, (which, binary)) in builds().into_iter().enumerate() {
        let mut all_cores = 0.0;
        for one_core in [false, true] {
            // On all cores the stages run in as many lanes as there are cores.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let lanes = [("LOGFERRY_STAGE_LANES", cores.to_string())];
            let run = ship(&Shipment {
                binary: &binary,
                // Its own positions file per run.
                name: &format!("stages-{build}-{}", if one_core { "1" } else { "all" }),
                dir: dir.path(),
                glob: &glob,
                lines,
                client: "",
                stages: &stages_yaml(),
                one_core,
                env: if one_core { &[] } else { &lanes },
            });
            let secs = run.wall.as_secs_f64();
            let cpu_per_gb = run.cpu.as_secs_f64() / gb;
            let rate = lines as f64 / secs;
            println!(
                "{:<18} {:>12.0} {:>9.1} {:>11.2} {:>6.2} {:>7.1}MB {:>12.2}x",
                format!("{}{which}", if one_core { "1" } else { "all" }),
                rate,
                total as f64 / 1e6 / secs,
                cpu_per_gb,
                run.cpu_most.as_secs_f64() / gb,
                run.peak_rss as f64 / (1 << 20) as f64,
                cpu_per_gb / floors.max(1e-9)
            );
            let threads: Vec<String> = run
                .threads
                .iter()
                .filter(|(_, cpu)| cpu.as_secs_f64() / secs >= 0.01)
                .map(|(name, cpu)| format!("{name} {:.2}", cpu.as_secs_f64() / secs))
                .collect();
            println!(
                "  cores used: logferry {:.2} ({}), the receiver {:.2}",
                run.cpu.as_secs_f64() / secs,
                threads.join(", "),
                run.receiver_cores
            );
            if one_core {
                println!("all cores / one core{which}: {:.2}x", all_cores / rate);
            } else {
                all_cores = rate;
            }
        }
    }
}

/// Writes `STAGE_FILES` files of a case's entries totalling about `bytes`; returns their paths,
/// and the number of entries the case's stages make of their lines.
fn make_case_files(dir: &Path, case: &str, bytes: u64) -> (Vec<PathBuf>, u64) {
    let mut entries = 0;
    let mut paths = vec![];
    let mut lines = Vec::new();
    for i in 0..STAGE_FILES {
        let path = dir.join(format!("{case}-{i}.log"));
        let mut out = BufWriter::new(std::fs::File::create(&path).expect("create bench file"));
        let mut written = 0u64;
        while written < bytes / STAGE_FILES as u64 {
            lines.clear();
            cases::entry_lines(case, entries as usize, &mut lines);
            for line in &lines {
                out.write_all(line.as_bytes()).expect("write bench file");
                out.write_all(b"\n").expect("write bench file");
                written += line.len() as u64 + 1;
            }
            entries += 1;
        }
        out.flush().expect("flush bench file");
        paths.push(path);
    }
    (paths, entries)
}

/// A case's parsing floor: its parser over every line of the files, on this thread. Returns
/// CPU time.
fn case_parsing_floor(case: &str, paths: &[PathBuf]) -> Duration {
    let mut parse = cases::parser(case);
    let (mut lines, mut parsed) = (0usize, 0usize);
    let cpu = each_line(paths, |line| {
        parsed += parse(line);
        lines += 1;
    });
    assert_eq!(
        parsed, lines,
        "{case}: the floor's parser failed on some lines"
    );
    cpu
}

/// Runs a case of `common/cases.rs` on about `bytes` of its lines and prints its figures and
/// floors.
pub fn run_case(
    case: &str,
    bytes: u64,
    shipping_floor: impl Fn(&[PathBuf], Encoding, Compression) -> Duration,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (paths, entries) = make_case_files(dir.path(), case, bytes);
    let total = total_size(&paths);
    let gb = total as f64 / 1e9;
    let glob = format!("{}/{case}-*.log", dir.path().display());
    println!(
        "\nstages-{case}: {STAGE_FILES} files, {entries} entries, {:.1} MB",
        total as f64 / 1e6
    );
    let floors = floors(&paths, gb, shipping_floor, || {
        case_parsing_floor(case, &paths)
    });
    println!(
        "{:<18} {:>12} {:>9} {:>11} {:>6} {:>9} {:>13}",
        "build", "entries/s", "MB/s", "CPU-s/GB", "most", "peak RSS", "vs floors"
    );
    let stages: String = cases::stages_yaml(case)
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    for (build, (which, binary)) in builds().into_iter().enumerate() {
        let run = ship(&Shipment {
            binary: &binary,
            name: &format!("{case}-{build}"),
            dir: dir.path(),
            glob: &glob,
            lines: entries,
            client: "",
            stages: &format!("    pipeline_stages:\n{stages}"),
            one_core: false,
            env: &[],
        });
        let secs = run.wall.as_secs_f64();
        let cpu_per_gb = run.cpu.as_secs_f64() / gb;
        println!(
            "{:<18} {:>12.0} {:>9.1} {:>11.2} {:>6.2} {:>7.1}MB {:>12.2}x",
            format!("default{which}"),
            entries as f64 / secs,
            total as f64 / 1e6 / secs,
            cpu_per_gb,
            run.cpu_most.as_secs_f64() / gb,
            run.peak_rss as f64 / (1 << 20) as f64,
            cpu_per_gb / floors.max(1e-9)
        );
    }
}
