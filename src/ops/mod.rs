//! What operators see: Prometheus metrics, the HTTP health probes, and how addresses appear
//! in logs.

pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod redact;
