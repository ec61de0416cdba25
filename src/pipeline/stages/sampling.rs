//! `sampling`: keeps a random `rate` share of the entries (0 drops all, 1 keeps all); the others
//! are dropped with reason `drop_counter_reason` (default `sampling_stage`).

use super::options;
use super::weak::{WF64, WString};
use crate::pipeline::{Cx, Entry, Flow, Stage};
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SamplingConfig {
    rate: Option<WF64>,
    drop_counter_reason: Option<WString>,
}

struct Sampling {
    /// Keep when a random 63-bit number is at most this.
    boundary: u64,
    state: u64,
    reason: String,
}

const MAX_RANDOM: u64 = (1 << 63) - 1;

impl Sampling {
    /// xorshift64*: fast and good enough to sample.
    fn random(&mut self) -> u64 {
        loop {
            let mut x = self.state;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.state = x;
            let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D) & MAX_RANDOM;
            if v != 0 {
                return v;
            }
        }
    }
}

impl Stage for Sampling {
    fn name(&self) -> &'static str {
        "sampling"
    }
    fn process(&mut self, entry: Entry, cx: &mut Cx<'_>) -> Flow {
        if self.boundary >= self.random() {
            Flow::Pass(entry)
        } else {
            cx.drop(entry.origin, &self.reason);
            Flow::Nothing
        }
    }
}

pub(crate) fn build(config: &Yaml) -> Result<Box<dyn Stage>, String> {
    let c: SamplingConfig = options(config)?;
    let rate = c.rate.map_or(0.0, |r| r.0);
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!(
            "sampling stage failed to parse rate,Sampling Rate must be between 0.0 and 1.0, received {rate}"
        ));
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64)
        ^ (&rate as *const f64 as u64);
    Ok(Box::new(Sampling {
        boundary: (MAX_RANDOM as f64 * rate) as u64,
        state: seed | 1,
        reason: c
            .drop_counter_reason
            .map(|r| r.0)
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "sampling_stage".to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use crate::pipeline::tests::{build_err, run_lines};

    fn kept(rate: &str, n: usize) -> (usize, usize) {
        let lines: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (out, dropped) = run_lines(&format!("- sampling:\n    rate: {rate}"), &refs);
        (out.len(), dropped.len())
    }

    #[test]
    fn docs_rates() {
        assert_eq!(kept("1", 1000), (1000, 0));
        assert_eq!(kept("0", 1000), (0, 1000));
        let (k, d) = kept("0.1", 10_000);
        assert_eq!(k + d, 10_000);
        assert!((700..1300).contains(&k), "{k}");
        let (_, dropped) = run_lines(
            "- sampling:\n    rate: 0\n    drop_counter_reason: sampled_out",
            &["a"],
        );
        assert_eq!(dropped[0].1, "sampled_out");
        let (_, dropped) = run_lines("- sampling:\n    rate: 0", &["a"]);
        assert_eq!(dropped[0].1, "sampling_stage");
    }

    #[test]
    fn config_errors() {
        assert!(build_err("- sampling:\n    rate: 1.5").contains("between 0.0 and 1.0"));
    }
}
