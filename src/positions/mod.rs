//! Positions: how far each file has been delivered, remembered across restarts.
//!
//! The [`Table`] holds one record per file identity ([`FileId`] plus [`Fingerprint`]) and one
//! cursor per cursor-keeping input (journal, containers); only the acknowledgement path moves
//! them. [`file`] reads and writes it atomically; the [`Writer`] writes it soon after each
//! acknowledgement moves it.

mod checkpoint;
pub mod file;
mod identity;
mod render;
mod table;
mod writer;

pub use checkpoint::{AckedCursor, AckedOffset};
pub use file::{PositionsError, load, save};
pub use identity::{FINGERPRINT_BYTES, FileId, Fingerprint, Prefix};
pub use table::Table;
pub use writer::{Changes, WRITE_INTERVAL, WriteCounters, Writer, write_interval};
