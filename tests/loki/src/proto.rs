//! Loki push API protobuf messages (`logproto.PushRequest` and friends), as
//! they appear on the wire. Field numbers and types follow Loki's
//! `pkg/push/push.proto`.

/// The body of a protobuf push request (before snappy compression).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    /// The pushed streams.
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// One stream: a label set and its entries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    /// The label set as text, e.g. `{job="app", env="prod"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    /// The stream's entries.
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    /// A hash of the labels; Loki ignores it on push.
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// One log entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    /// When the entry happened; required by this receiver.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<prost_types::Timestamp>,
    /// The log line.
    #[prost(string, tag = "2")]
    pub line: String,
    /// Structured metadata (Loki 2.9+/3.x).
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

/// A name/value pair of structured metadata.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPairAdapter {
    /// Metadata name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Metadata value.
    #[prost(string, tag = "2")]
    pub value: String,
}
