//! On-disk state kept in memory and reloaded: recipients' certificates (cert-d) and the
//! secure (TLS-only) mailbox list.

pub mod keys;
pub mod postgres;
pub mod secure;
