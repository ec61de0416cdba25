//! Throughput of logferry's read-and-split path next to a plain `read()` loop, over the same
//! ~200 MB file of nginx-like lines, in the same run.
//!
//! `read_and_split` does what the tailer does for each read of a file: take the splitter's
//! buffer (the unfinished line of the last read first), read up to 256 KiB into it, and split
//! it into complete lines ([`Splitter::take_buffer`] + [`Splitter::split`], which also checks
//! UTF-8 once per chunk). `plain_read` only reads the file in 256 KiB reads into one buffer:
//! the floor any reader pays. The file is written once, so both read from the page cache and
//! the difference is the CPU cost of splitting.
//!
//! ```sh
//! cargo bench --bench read_split
//! ```

use logferry::tail::lines::{LineLimit, Splitter};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::OnceLock;

const READ_SIZE: usize = 256 * 1024;
const FILE_BYTES: u64 = 200 * 1024 * 1024;

/// The benchmark file (made on first use) and its size.
fn bench_file() -> &'static (PathBuf, u64) {
    static FILE: OnceLock<(PathBuf, u64)> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!(
            "logferry-bench-read-split-{}.log",
            std::process::id()
        ));
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path).unwrap());
        let mut written = 0u64;
        let mut i = 0u64;
        let agents = [
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "curl/8.5.0",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15",
            "Prometheus/2.53.0",
        ];
        let paths = ["/", "/api/v1/items", "/static/app.js", "/login", "/healthz"];
        while written < FILE_BYTES {
            let line = format!(
                "203.0.{}.{} - - [21/Nov/2026:{:02}:{:02}:{:02} +0000] \"GET {}?id={} HTTP/1.1\" {} {} \"https://example.com/page/{}\" \"{}\"\n",
                i % 7,
                i % 251,
                i / 3600 % 24,
                i / 60 % 60,
                i % 60,
                paths[(i % 5) as usize],
                i,
                [200, 200, 200, 304, 404][(i % 5) as usize],
                100 + i * 37 % 9000,
                i % 97,
                agents[(i % 4) as usize],
            );
            out.write_all(line.as_bytes()).unwrap();
            written += line.len() as u64;
            i += 1;
        }
        out.flush().unwrap();
        (path, written)
    })
}

fn main() {
    let (path, size) = bench_file();
    eprintln!(
        "benchmark file: {} ({:.1} MB)",
        path.display(),
        *size as f64 / 1e6
    );
    divan::main();
    let _ = std::fs::remove_file(path);
}

/// 256 KiB `read()`s into one buffer until the end of the file.
#[divan::bench(sample_count = 15, sample_size = 1)]
fn plain_read(bencher: divan::Bencher) {
    let (path, size) = bench_file();
    bencher
        .counter(divan::counter::BytesCount::new(*size))
        .bench(|| {
            let mut file = File::open(path).unwrap();
            let mut buf = vec![0u8; READ_SIZE];
            let mut total = 0usize;
            loop {
                let n = file.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                total += n;
            }
            divan::black_box(total)
        });
}

/// The tailer's path: the splitter's buffer, a 256 KiB read into it, split into lines.
#[divan::bench(sample_count = 15, sample_size = 1)]
fn read_and_split(bencher: divan::Bencher) {
    let (path, size) = bench_file();
    bencher
        .counter(divan::counter::BytesCount::new(*size))
        .bench(|| {
            let mut file = File::open(path).unwrap();
            let mut splitter = Splitter::new(LineLimit::from_config(0, false));
            let mut offset = 0u64;
            let mut lines = 0usize;
            loop {
                let mut buf = splitter.take_buffer(READ_SIZE);
                let base = buf.len();
                buf.resize(base + READ_SIZE, 0);
                let n = file.read(&mut buf[base..]).unwrap();
                if n == 0 {
                    break;
                }
                buf.truncate(base + n);
                offset += n as u64;
                let split = splitter.split(buf, offset);
                lines += split.spans.len();
                divan::black_box(&split.text);
            }
            assert_eq!(offset, *size);
            divan::black_box(lines)
        });
}
