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
    let pipeline = crate::app::pipeline(&config, keys, vec![secure], Arc::clone(&metrics));
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
            &self.config,
            Arc::clone(&self.pipeline),
            Arc::clone(&self.metrics),
        ))
    }

    /// The LMTP sessions' context, with the configured next hop.
    pub(crate) fn lmtp(&self) -> Arc<lmtp::Context> {
        Arc::new(lmtp::Context {
            limits: self.config.lmtp(),
            pipeline: Arc::clone(&self.pipeline),
            next_hop: NextHop::new(
                &self.config.next_hop,
                self.config.next_hop_client(),
                Arc::clone(&self.metrics),
            ),
            metrics: Arc::clone(&self.metrics),
        })
    }
}

/// Compares `actual` with the golden file `relative` (from the crate root); with
/// `TEST_BLESS=1` a missing or different file is written instead (review the diff).
pub(crate) fn golden(relative: &str, actual: &[u8]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let expected = std::fs::read(&path).ok();
    if expected.as_deref() == Some(actual) {
        return;
    }
    if crate::config::environment()
        .get("TEST_BLESS")
        .is_some_and(|v| v == "1")
    {
        std::fs::write(&path, actual).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        return;
    }
    panic!(
        "{relative} differs (TEST_BLESS=1 rewrites it):\n--- got\n{}\n--- expected\n{}",
        String::from_utf8_lossy(actual),
        String::from_utf8_lossy(expected.as_deref().unwrap_or(b"(missing)"))
    );
}
