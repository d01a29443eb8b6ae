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
pub mod keys_cli;
pub mod keystore;
pub mod openpgp;
pub mod pipeline;
pub mod policy;
pub mod received;
pub mod server;
pub mod session;

use std::future::Future;
use std::sync::Arc;

use tracing::{info, warn};

use crate::config::Config;
use crate::delivery::NextHop;
use crate::keystore::KeyStore;
use crate::pipeline::Pipeline;
use crate::pipeline::encrypt::EncryptStage;
use crate::pipeline::require_tls::RequireTlsStage;
use crate::pipeline::scrub::ScrubStage;
use crate::policy::SecureAddresses;
use crate::server::Listener;
use crate::session::Shared;

/// The configured stages, in order: scrub, TLS policy (which routes secure twins to their
/// mailbox), encrypt (which looks keys up by mailbox).
pub fn pipeline(config: &Config, keys: Arc<KeyStore>, secure: Arc<SecureAddresses>) -> Pipeline {
    Pipeline::new(vec![
        Box::new(ScrubStage::new(
            config.scrub,
            config.scrub_headers.clone(),
            config.trusted_mta.clone(),
        )),
        Box::new(RequireTlsStage::new(
            secure,
            config.trusted_mta.clone(),
            config.tls_min_version,
        )),
        Box::new(EncryptStage::new(
            keys,
            config.unusable_key,
            config.protected_headers,
            config.max_inspect_size,
        )),
    ])
}

/// What `run` shares with the rest of the process: state that is loaded before any port is
/// bound and reloaded on SIGHUP.
pub struct Stores {
    /// Recipients' certificates.
    pub keys: Arc<KeyStore>,
    /// Secure (TLS-only) addresses.
    pub secure: Arc<SecureAddresses>,
}

/// Serves LMTP on `listener` with `config` until `shutdown` completes and the grace period
/// has let open transactions finish. `reload` fires for each SIGHUP: the key store is re-read.
pub async fn run(
    config: Config,
    stores: Stores,
    listener: Listener,
    mut reload: tokio::sync::mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) {
    let Stores { keys, secure } = stores;
    keys.watch(config.keystore_reload);
    secure.watch(config.keystore_reload);
    let reloader = Arc::clone(&keys);
    let secure_reloader = Arc::clone(&secure);
    tokio::spawn(async move {
        while reload.recv().await.is_some() {
            let secure = Arc::clone(&secure_reloader);
            match tokio::task::spawn_blocking(move || secure.reload(true)).await {
                Ok(Ok(changed)) => info!(changed, "secure mailboxes reloaded (SIGHUP)"),
                Ok(Err(err)) => warn!(
                    err = %keystore::error_chain(&err),
                    "secure mailbox reload failed; keeping the previous list"
                ),
                Err(err) => warn!(%err, "secure mailbox reload task failed"),
            }
            let store = Arc::clone(&reloader);
            match tokio::task::spawn_blocking(move || store.reload(true)).await {
                Ok(Ok(stats)) => info!(
                    certificates = stats.certificates,
                    addresses = stats.addresses,
                    skipped = stats.skipped,
                    "key store reloaded (SIGHUP)"
                ),
                Ok(Err(err)) => warn!(
                    err = %keystore::error_chain(&err),
                    "key store reload failed; keeping the previous index"
                ),
                Err(err) => warn!(%err, "key store reload task failed"),
            }
        }
    });
    let next_hop = NextHop::new(&config);
    let shared = Arc::new(Shared {
        pipeline: pipeline(&config, keys, secure),
        next_hop,
        config,
    });
    server::serve(listener, shared, shutdown).await;
}
