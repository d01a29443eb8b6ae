//! Facts about a message, with no I/O: canonical addresses, the Received trace and TLS evidence.

pub mod address;
pub mod header;
pub mod received;
pub mod tls;
