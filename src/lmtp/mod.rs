//! The LMTP wing: one session per connection from Postfix, and the fan-out of each message
//! into per-recipient copies for the next hop.

pub(crate) mod fanout;
pub(crate) mod session;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::config::LmtpLimits;
use crate::delivery::NextHop;
use crate::ops::metrics::Metrics;
use crate::pipeline::Pipeline;

/// What LMTP sessions share: built once by `app::run`, read by every session and fan-out.
pub(crate) struct Context {
    /// The session's settings (its section of the configuration).
    pub limits: LmtpLimits,
    /// The stages every message goes through (the milter runs the same RCPT checks).
    pub pipeline: Arc<Pipeline>,
    /// Where messages go.
    pub next_hop: NextHop,
    /// What is counted.
    pub metrics: Arc<Metrics>,
}
