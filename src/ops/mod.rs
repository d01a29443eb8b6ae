//! What operators see: Prometheus metrics, the HTTP health probes, and how addresses appear
//! in logs.

pub mod http;
pub mod metrics;
pub mod redact;
