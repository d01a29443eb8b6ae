//! Facts about a message, with no I/O: canonical addresses and the Received trace.

pub mod address;
pub mod received;
