//! sealgate: an inbound-mail privacy filter between Postfix and Dovecot.
//!
//! Postfix hands each message over LMTP ([`session`], accepted by [`server`]); the message
//! streams through the [`pipeline`] stages, split into per-recipient copies by [`fanout`],
//! and goes to the next hop ([`delivery`]). Settings come from `SEALGATE_*` variables
//! ([`config`]).
//!
//! The library exists for the binary, the integration tests and the benchmarks; it makes no
//! stability promise.

pub mod config;
pub mod delivery;
pub mod fanout;
pub mod openpgp;
pub mod pipeline;
pub mod server;
pub mod session;

use std::future::Future;
use std::sync::Arc;

use crate::config::Config;
use crate::delivery::NextHop;
use crate::pipeline::Pipeline;
use crate::server::Listener;
use crate::session::Shared;

/// Serves LMTP on `listener` with `config` until `shutdown` completes and the grace period
/// has let open transactions finish.
pub async fn run(config: Config, listener: Listener, shutdown: impl Future<Output = ()>) {
    let next_hop = NextHop::new(&config);
    let shared = Arc::new(Shared {
        pipeline: Pipeline::pass_through(),
        next_hop,
        config,
    });
    server::serve(listener, shared, shutdown).await;
}
