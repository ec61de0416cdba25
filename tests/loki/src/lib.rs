//! A faithful Loki push receiver (being written).
