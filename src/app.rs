//! The wiring: builds the stores, the pipeline, the next hop and the metrics from the
//! configuration, serves the listeners, and fans SIGHUP out to the stores. Nothing here
//! decides anything about a message.

use std::future::Future;
use std::sync::Arc;

use crate::config::Config;
use crate::delivery::NextHop;
use crate::lmtp;
use crate::lmtp::session;
use crate::milter;
use crate::net::Listener;
use crate::ops::metrics::{Metrics, SessionProtocol};
use crate::ops::{http, metrics};
use crate::pipeline::Pipeline;
use crate::pipeline::encrypt::{EncryptConfig, EncryptStage, Observe};
use crate::pipeline::require_tls::RequireTlsStage;
use crate::pipeline::scrub::ScrubStage;
use crate::server::{self, Limits};
use crate::shutdown::Shutdown;
use crate::store::keys::KeyStore;
use crate::store::postgres::PgKeyStore;
use crate::store::secure::SecureAddresses;
use crate::store::watch::{self, Reload};
use crate::store::{KeyLookup, SecureLookup};

/// The configured stages, in order: scrub, TLS policy (which asks each of `secure` and routes
/// secure twins to their mailbox), encrypt (which looks keys up by mailbox and counts in
/// `metrics`).
pub(crate) fn pipeline(
    config: &Config,
    keys: Arc<dyn KeyLookup>,
    secure: Vec<Arc<dyn SecureLookup>>,
    metrics: Arc<Metrics>,
) -> Pipeline {
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
            config.log_addresses,
        )),
        Box::new(EncryptStage::new(
            keys,
            EncryptConfig {
                unusable: config.unusable_key,
                protected_headers: config.protected_headers,
                peek_limit: config.max_inspect_size,
            },
            Observe {
                metrics,
                log: config.log_addresses,
            },
        )),
    ])
}

/// What `run` shares with the rest of the process: state that is loaded before any port is
/// bound and reloaded on SIGHUP.
pub struct Stores {
    /// Recipients' certificates.
    pub keys: Keys,
    /// Secure (TLS-only) addresses.
    pub secure: Arc<SecureAddresses>,
}

/// Where recipients' certificates come from (`SEALGATE_KEYSTORE`).
pub enum Keys {
    /// A cert-d directory, loaded in memory and reloaded by the watcher.
    Directory(Arc<KeyStore>),
    /// A PostgreSQL database, cached and kept current by its notifications.
    Database(Arc<PgKeyStore>),
}

impl Keys {
    fn lookup(&self) -> Arc<dyn KeyLookup> {
        match self {
            Keys::Directory(keys) => Arc::clone(keys) as _,
            Keys::Database(keys) => Arc::clone(keys) as _,
        }
    }

    /// The key database's TLS-only flags (`mailbox_flags`); a directory has none.
    fn secure_lookup(&self) -> Option<Arc<dyn SecureLookup>> {
        match self {
            Keys::Directory(_) => None,
            Keys::Database(keys) => Some(Arc::clone(keys) as _),
        }
    }
}

/// The bound listening sockets, one per protocol; at least one is there.
pub struct Listeners {
    /// `SEALGATE_LMTP_LISTEN`, unless `off`.
    pub lmtp: Option<Listener>,
    /// `SEALGATE_MILTER_LISTEN`, unless `off`.
    pub milter: Option<Listener>,
    /// `SEALGATE_METRICS_LISTEN` (metrics and health probes), unless `off`.
    pub http: Option<Listener>,
}

/// Why [`run`] could not serve.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The metrics could not be registered: a programming error (the registry is fresh,
    /// the names constant, and a unit test registers them); refuse to run half-instrumented.
    #[error("cannot register the metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    /// The key store's metrics could not be registered (the same kind of error).
    #[error("cannot register the key store metrics: {0}")]
    KeyStoreMetrics(#[source] prometheus::Error),
}

/// Serves LMTP and/or the milter on `listeners` with `config` until `shutdown` completes and
/// the grace period has let open transactions finish. `reload` fires for each SIGHUP: the key
/// store is re-read.
///
/// # Errors
/// The metrics could not be registered (before anything is served).
pub async fn run(
    config: Config,
    stores: Stores,
    listeners: Listeners,
    mut reload: tokio::sync::mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let Stores { keys, secure } = stores;
    // One poller per store; a SIGHUP re-reads them in this order through the same reload.
    let mut reloadable: Vec<Arc<dyn Reload>> = vec![Arc::clone(&secure) as _];
    if let Keys::Directory(keys) = &keys {
        reloadable.push(Arc::clone(keys) as _);
    }
    for store in &reloadable {
        watch::watch(Arc::clone(store), config.keystore_reload);
    }
    tokio::spawn(async move {
        while reload.recv().await.is_some() {
            watch::reload_all(&reloadable).await;
        }
    });
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(Metrics::new(&registry).map_err(AppError::Metrics)?);
    let readiness = Arc::new(http::Readiness::new(config.next_hop.clone()));
    // The database's connection task stops with the process, after the listeners drained.
    let (database_stop, database_stopped) = tokio::sync::watch::channel(false);
    match &keys {
        Keys::Directory(store) => {
            metrics::register_keystore(&registry, Arc::clone(store))
                .map_err(AppError::KeyStoreMetrics)?;
            readiness.set_keystore(Arc::clone(store));
        }
        Keys::Database(store) => {
            metrics::register_key_database(&registry, Arc::clone(store))
                .map_err(AppError::KeyStoreMetrics)?;
            readiness.set_key_database(Arc::clone(store));
            store.start(database_stopped);
            // The first recipients should not tempfail while the connection is being made.
            if !store
                .wait_up(crate::store::postgres::connect::CONNECT_TIMEOUT)
                .await
            {
                tracing::warn!(
                    keystore = %store.location(),
                    "key database not connected yet; recipients get 451 until it answers"
                );
            }
        }
    }
    let next_hop = NextHop::new(
        &config.next_hop,
        config.next_hop_client(),
        Arc::clone(&metrics),
    );
    let secure_lookups = std::iter::once(Arc::clone(&secure) as Arc<dyn SecureLookup>)
        .chain(keys.secure_lookup())
        .collect();
    let pipeline = pipeline(&config, keys.lookup(), secure_lookups, Arc::clone(&metrics));
    metrics.declare(&pipeline.stage_names(), next_hop.kind());
    let pipeline = Arc::new(pipeline);
    let milter = Arc::new(milter::Context::new(
        &config,
        Arc::clone(&pipeline),
        Arc::clone(&metrics),
    ));
    let limits = |protocol| Limits {
        protocol,
        max_connections: config.max_connections,
        grace: Some(config.shutdown_grace),
    };
    let lmtp_limits = limits(SessionProtocol::Lmtp.as_str());
    let milter_limits = limits(SessionProtocol::Milter.as_str());
    let shared = Arc::new(lmtp::Context {
        limits: config.lmtp(),
        pipeline,
        next_hop,
        metrics,
    });
    // One shutdown signal, fanned out to every listener.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stop = Shutdown::new(stop_rx.clone());
        async move { stop.recv().await }
    };
    let not_ready = Arc::clone(&readiness);
    let signal = async move {
        shutdown.await;
        not_ready.set_serving(false);
        let _ = stop_tx.send(true);
    };
    let lmtp = async {
        if let Some(listener) = listeners.lmtp {
            server::serve(listener, lmtp_limits, stopped(), |stream, peer, stop| {
                session::serve(stream, peer, Arc::clone(&shared), stop)
            })
            .await;
        }
    };
    let milter = async {
        if let Some(listener) = listeners.milter {
            server::serve(listener, milter_limits, stopped(), |stream, peer, stop| {
                milter::serve(stream, peer, Arc::clone(&milter), stop)
            })
            .await;
        }
    };
    // The HTTP listener outlives the others' grace period: /readyz says 503 meanwhile.
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let servers = async {
        tokio::join!(lmtp, milter);
        let _ = drained_tx.send(());
    };
    let http = async {
        if let Some(listener) = listeners.http {
            let drained = async {
                let _ = drained_rx.await;
            };
            http::serve(listener, registry, Arc::clone(&readiness), drained).await;
        }
    };
    readiness.set_serving(true);
    tokio::join!(signal, servers, http);
    let _ = database_stop.send(true);
    Ok(())
}
