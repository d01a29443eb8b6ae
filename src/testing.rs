//! In-crate test wiring: the milter and LMTP contexts as `app::run` builds them (the same
//! [`crate::app::pipeline`]), from a few `SEALGATE_*` variables, for in-process session tests.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::delivery::NextHop;
use crate::lmtp;
use crate::milter;
use crate::ops::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::store::keys::KeyStore;
use crate::store::secure::SecureAddresses;

/// What a process shares, built from `vars` with the key store at `keys`.
pub(crate) struct Wiring {
    pub(crate) config: Arc<Config>,
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) registry: prometheus::Registry,
}

/// The wiring for `vars` (on top of a test's defaults: none) and the key store at `keys`.
pub(crate) fn context(vars: &[(&str, &str)], keys: &Path) -> Wiring {
    let vars: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config = Config::from_vars(&vars).unwrap();
    let keys = Arc::new(KeyStore::open(keys).unwrap());
    let secure = Arc::new(SecureAddresses::new(config.secure_domains.clone(), None).unwrap());
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(Metrics::new(&registry).unwrap());
    let pipeline = crate::app::pipeline(&config, keys, secure, Arc::clone(&metrics));
    Wiring {
        config: Arc::new(config),
        pipeline: Arc::new(pipeline),
        metrics,
        registry,
    }
}

impl Wiring {
    /// The milter's context, as `app::run` builds it.
    pub(crate) fn milter(&self) -> Arc<milter::Context> {
        Arc::new(milter::Context::new(
            Arc::clone(&self.config),
            Arc::clone(&self.pipeline),
            Arc::clone(&self.metrics),
        ))
    }

    /// The LMTP sessions' context, with the configured next hop.
    pub(crate) fn lmtp(&self) -> Arc<lmtp::Context> {
        Arc::new(lmtp::Context {
            config: Arc::clone(&self.config),
            pipeline: Arc::clone(&self.pipeline),
            next_hop: NextHop::new(&self.config, Arc::clone(&self.metrics)),
            metrics: Arc::clone(&self.metrics),
        })
    }
}
