//! logferry: a log shipper for Loki that reads Promtail configs unchanged.
//!
//! The modules follow the data: [`input`] is the seam every source implements ([`discover`]
//! finds files, [`tail`] reads them) and produces [`entry::Chunk`]s, [`ship`] is the seam of
//! the outputs that deliver them, [`acknowledge`] records what was delivered, and
//! [`positions`] remembers it on disk. [`agent`] builds inputs and outputs from the config and
//! runs them; [`config`] reads the YAML. See `docs/architecture.md`. [`pipeline`] runs Promtail's `pipeline_stages` over entries, and
//! [`relabel`] applies `relabel_configs`.

pub mod acknowledge;
pub mod agent;
pub mod budget;
pub mod config;
pub mod discover;
pub mod entry;
pub mod expand;
pub mod input;
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
