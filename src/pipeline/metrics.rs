//! The metrics that `metrics` stages define, exposed through `prometheus-client`.
//!
//! One [`CustomMetrics`] serves every pipeline of the process: a metric defined by several
//! pipelines (or several times, as Promtail allows) is one family. Register it once with
//! [`CustomMetrics::register`]; families defined later appear at the next scrape. Series not
//! updated for their `max_idle_duration` are removed at scrape time, as Promtail does.
//!
//! Counters are exposed the OpenMetrics way, their name ending in `_total` once (a configured
//! name that already ends in `_total` keeps a single suffix).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The label set of one series (sorted).
pub(crate) type SeriesLabels = Vec<(String, String)>;

/// Every custom metric of the process; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct CustomMetrics {
    families: Arc<Mutex<BTreeMap<String, Arc<Family>>>>,
}

impl std::fmt::Debug for CustomMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .families
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("CustomMetrics")
            .field("families", &names)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram(Vec<f64>),
}

/// One metric family.
#[derive(Debug)]
pub(crate) struct Family {
    name: String,
    help: String,
    kind: Kind,
    max_idle: Duration,
    series: Mutex<HashMap<SeriesLabels, Series>>,
}

#[derive(Debug, Clone)]
struct Series {
    value: f64,
    sum: f64,
    count: u64,
    /// Per bucket (not cumulative), the last one is +Inf.
    buckets: Vec<u64>,
    touched: Instant,
}

/// Prometheus' default histogram buckets (what Promtail uses when `buckets` is empty).
pub(crate) const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl CustomMetrics {
    /// Exposes every custom metric (present and future) through `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }

    /// The family `name`, created if new. Defining an existing name again with another type or
    /// other buckets is an error.
    pub(crate) fn family(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        max_idle: Duration,
    ) -> Result<Arc<Family>, String> {
        let mut families = self.families.lock().map_err(|_| "metrics lock poisoned")?;
        if let Some(f) = families.get(name) {
            if f.kind != kind {
                return Err(format!(
                    "metric {name} is already defined with another type or buckets"
                ));
            }
            return Ok(f.clone());
        }
        let f = Arc::new(Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            max_idle,
            series: Mutex::new(HashMap::new()),
        });
        families.insert(name.to_string(), f.clone());
        Ok(f)
    }

    /// Renders the families in the text format (for tests and debugging).
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

impl Family {
    fn with(&self, labels: &SeriesLabels, now: Instant, f: impl FnOnce(&mut Series)) {
        let Ok(mut series) = self.series.lock() else {
            return;
        };
        if let Some(s) = series.get_mut(labels) {
            f(s);
            s.touched = now;
            return;
        }
        let buckets = match &self.kind {
            Kind::Histogram(b) => vec![0; b.len() + 1],
            _ => vec![],
        };
        let mut s = Series {
            value: 0.0,
            sum: 0.0,
            count: 0,
            buckets,
            touched: now,
        };
        f(&mut s);
        series.insert(labels.clone(), s);
    }

    pub(crate) fn is_counter(&self) -> bool {
        self.kind == Kind::Counter
    }

    pub(crate) fn inc(&self, labels: &SeriesLabels, now: Instant) {
        self.add(labels, 1.0, now);
    }

    pub(crate) fn add(&self, labels: &SeriesLabels, v: f64, now: Instant) {
        self.with(labels, now, |s| s.value += v);
    }

    pub(crate) fn set(&self, labels: &SeriesLabels, v: f64, now: Instant) {
        self.with(labels, now, |s| s.value = v);
    }

    pub(crate) fn observe(&self, labels: &SeriesLabels, v: f64, now: Instant) {
        let Kind::Histogram(bounds) = &self.kind else {
            return;
        };
        let idx = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
        self.with(labels, now, |s| {
            s.sum += v;
            s.count += 1;
            s.buckets[idx] += 1;
        });
    }
}

impl Collector for CustomMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let families: Vec<Arc<Family>> = match self.families.lock() {
            Ok(f) => f.values().cloned().collect(),
            Err(_) => return Ok(()),
        };
        let now = Instant::now();
        for family in families {
            let Ok(mut series) = family.series.lock() else {
                continue;
            };
            series.retain(|_, s| now.duration_since(s.touched) < family.max_idle);
            let (name, metric_type) = match family.kind {
                Kind::Counter => (
                    family.name.strip_suffix("_total").unwrap_or(&family.name),
                    MetricType::Counter,
                ),
                Kind::Gauge => (family.name.as_str(), MetricType::Gauge),
                Kind::Histogram(_) => (family.name.as_str(), MetricType::Histogram),
            };
            let mut metric = encoder.encode_descriptor(name, &family.help, None, metric_type)?;
            let mut sorted: Vec<(&SeriesLabels, &Series)> = series.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            for (labels, s) in sorted {
                let mut m = metric.encode_family(labels)?;
                match &family.kind {
                    Kind::Counter => m.encode_counter::<NoLabelSet, f64, f64>(&s.value, None)?,
                    Kind::Gauge => m.encode_gauge(&s.value)?,
                    Kind::Histogram(bounds) => {
                        let buckets: Vec<(f64, u64)> = bounds
                            .iter()
                            .copied()
                            .chain(std::iter::once(f64::INFINITY))
                            .zip(s.buckets.iter().copied())
                            .collect();
                        m.encode_histogram::<NoLabelSet>(s.sum, s.count, &buckets, None)?
                    }
                }
            }
        }
        Ok(())
    }
}
