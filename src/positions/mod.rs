//! Positions: how far each file has been delivered, remembered across restarts.
//!
//! The [`Table`] holds one record per file identity ([`FileId`] plus [`Fingerprint`]); only
//! the acknowledgement path moves its offsets. [`file`] reads and writes it atomically.

pub mod file;
mod identity;
mod table;

pub use file::{PositionsError, load, save};
pub use identity::{FINGERPRINT_BYTES, FileId, Fingerprint};
pub use table::Table;
