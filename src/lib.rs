//! logferry: a log shipper for Loki that reads Promtail configs unchanged.
//!
//! The modules follow the data: [`discover`] finds files, [`tail`] reads them into
//! [`entry::Chunk`]s, [`ship`] delivers chunks, [`acknowledge`] records what was delivered, and
//! [`positions`] remembers it on disk. [`agent`] wires them together; [`config`] reads the
//! YAML. [`pipeline`] runs Promtail's `pipeline_stages` over entries, and
//! [`relabel`] applies `relabel_configs`.

pub mod acknowledge;
pub mod agent;
pub mod config;
pub mod discover;
pub mod entry;
pub mod expand;
pub mod labels;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod positions;
pub mod relabel;
pub mod server;
pub mod ship;
pub mod status;
pub mod tail;
pub mod units;
