//! Prometheus metrics: typed handles, registered in a [`Registry`] the caller passes in (never
//! the process-global default registry), shared as `Arc<Metrics>`.
//!
//! Names follow the Prometheus conventions: a `sealgate_` prefix, `_total` for counters, base
//! units (`_seconds`, `_bytes`). Labels are few and come from closed sets (an outcome, a stage
//! name, a next-hop kind): never an address, a key ID or anything else a sender controls.
//! Series with a small fixed label set are created at start, so they read 0 before the first
//! event and `rate()` works from the first scrape.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::config::{Keyword, UnusableKey};
use crate::message::outcome::Tally;
pub(crate) use crate::message::outcome::{MessageOutcome, RecipientOutcome};
use crate::openpgp::Unusable;
use crate::store::keys::KeyStore;
use crate::store::postgres::PgKeyStore;

/// Buckets for work inside sealgate (one stage for one message): 50 µs to 10 s.
const STAGE_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// Buckets for whole messages and next-hop deliveries: 1 ms to 10 min (the next-hop timeout
/// is 300 s by default, Postfix waits 600 s for the final reply).
const MESSAGE_BUCKETS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

impl Tally for Metrics {
    fn tally(&self, outcome: RecipientOutcome) {
        self.recipient(outcome);
    }
}

/// The kind of next hop: the `kind` label of the `sealgate_next_hop_*` metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHopKind {
    /// `maildir:PATH`
    Maildir,
    /// `lmtp:…` (Dovecot)
    Lmtp,
    /// `smtp:…` (Postfix reinjection)
    Smtp,
}

impl NextHopKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            NextHopKind::Maildir => "maildir",
            NextHopKind::Lmtp => "lmtp",
            NextHopKind::Smtp => "smtp",
        }
    }
}

/// What went wrong with the next hop: the `error` label of `sealgate_next_hop_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHopError {
    /// The connection (or its greeting and LHLO/EHLO) failed, including a connect timeout.
    Connect,
    /// A read or write timed out mid-conversation.
    Timeout,
    /// The connection broke mid-conversation.
    Lost,
    /// The next hop answered 4xx (per refused recipient, or once for a refused MAIL/DATA).
    Refused4xx,
    /// The next hop answered 5xx (likewise).
    Refused5xx,
    /// The Maildir could not be written (per recipient).
    Storage,
}

impl NextHopError {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            NextHopError::Connect => "connect",
            NextHopError::Timeout => "timeout",
            NextHopError::Lost => "lost",
            NextHopError::Refused4xx => "refused_4xx",
            NextHopError::Refused5xx => "refused_5xx",
            NextHopError::Storage => "storage",
        }
    }

    /// The refusal a reply of the next hop stands for: `None` for 2xx and 3xx.
    pub fn refusal(code: u16) -> Option<NextHopError> {
        match code / 100 {
            4 => Some(NextHopError::Refused4xx),
            5 => Some(NextHopError::Refused5xx),
            _ => None,
        }
    }
}

/// A listener's protocol: the `protocol` label of `sealgate_sessions_active`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionProtocol {
    /// LMTP sessions from Postfix's LMTP client.
    Lmtp,
    /// Milter sessions from Postfix's smtpd.
    Milter,
}

impl SessionProtocol {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionProtocol::Lmtp => "lmtp",
            SessionProtocol::Milter => "milter",
        }
    }
}

/// Every metric sealgate records, as typed handles. Recording is lock-free (atomics); only
/// label lookups of the rarer events take the vector's read lock.
pub struct Metrics {
    recipients: Vec<IntCounter>,
    messages: Vec<IntCounter>,
    encryption_failures: IntCounter,
    unverified_encrypted: IntCounterVec,
    unusable_keys: IntCounterVec,
    keystore_unknown: IntCounter,
    received_bytes: IntCounter,
    delivered_bytes: IntCounter,
    stage_duration: HistogramVec,
    message_duration: Histogram,
    next_hop_duration: HistogramVec,
    next_hop_errors: IntCounterVec,
    sessions_active: IntGaugeVec,
    untrusted_received: IntCounter,
    /// The distinct untrusted `by` values already logged (at most [`UNTRUSTED_LOGGED`]).
    untrusted_logged: Mutex<std::collections::HashSet<String>>,
}

/// How many distinct untrusted `by` values are logged; beyond that only the counter moves (a
/// sender controls the field when our MTA did not write it).
const UNTRUSTED_LOGGED: usize = 32;

impl Metrics {
    /// Creates the metrics and registers them, with `sealgate_build_info`, in `registry`.
    ///
    /// # Errors
    /// Registration failed: `registry` already holds metrics of these names (each registry
    /// takes one `Metrics`).
    pub fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let recipients = IntCounterVec::new(
            Opts::new(
                "sealgate_recipients_total",
                "Final outcomes of recipients, one per accepted RCPT (and per RCPT refused by a stage).",
            ),
            &["outcome"],
        )?;
        let messages = IntCounterVec::new(
            Opts::new(
                "sealgate_messages_total",
                "Messages (DATA) by outcome: accepted when at least one recipient got 2xx.",
            ),
            &["outcome"],
        )?;
        let encryption_failures = IntCounter::new(
            "sealgate_encryption_failures_total",
            "Copies that failed while being encrypted (their recipients got 451 4.3.0).",
        )?;
        let unverified_encrypted = IntCounterVec::new(
            Opts::new(
                "sealgate_unverified_encrypted_total",
                "Copies that looked already encrypted but failed verification, so were encrypted, by the rule they broke.",
            ),
            &["reason"],
        )?;
        let unusable_keys = IntCounterVec::new(
            Opts::new(
                "sealgate_unusable_keys_total",
                "Recipients whose certificate was unusable, by reason and by the policy applied.",
            ),
            &["reason", "policy"],
        )?;
        let keystore_unknown = IntCounter::new(
            "sealgate_keystore_unknown_total",
            "Recipients tempfailed (451 4.7.0) because the key store could not tell whether they have a key.",
        )?;
        let untrusted_received = IntCounter::new(
            "sealgate_untrusted_received_total",
            "Messages whose first Received field was not written by a SEALGATE_TRUSTED_MTA host: no TLS or authentication evidence counted for them.",
        )?;
        let received_bytes = IntCounter::new(
            "sealgate_received_bytes_total",
            "Message octets received in DATA (after dot-unstuffing).",
        )?;
        let delivered_bytes = IntCounter::new(
            "sealgate_delivered_bytes_total",
            "Octets of copies the next hop accepted, once per copy (not per recipient).",
        )?;
        let stage_duration = HistogramVec::new(
            HistogramOpts::new(
                "sealgate_stage_duration_seconds",
                "Processing time of each pipeline stage per message (plan and rewrite calls).",
            )
            .buckets(STAGE_BUCKETS.to_vec()),
            &["stage"],
        )?;
        let message_duration = Histogram::with_opts(
            HistogramOpts::new(
                "sealgate_message_duration_seconds",
                "From the DATA command to the last final reply.",
            )
            .buckets(MESSAGE_BUCKETS.to_vec()),
        )?;
        let next_hop_duration = HistogramVec::new(
            HistogramOpts::new(
                "sealgate_next_hop_duration_seconds",
                "From opening a delivery to the next hop's final reply, per copy.",
            )
            .buckets(MESSAGE_BUCKETS.to_vec()),
            &["kind"],
        )?;
        let next_hop_errors = IntCounterVec::new(
            Opts::new(
                "sealgate_next_hop_errors_total",
                "Failures and refusals of the next hop.",
            ),
            &["kind", "error"],
        )?;
        let sessions_active = IntGaugeVec::new(
            Opts::new("sealgate_sessions_active", "Open sessions by protocol."),
            &["protocol"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "sealgate_build_info",
                "Always 1; the labels tell the version, commit and compiler of this build.",
            ),
            &["version", "commit", "rustc"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), BUILD_COMMIT, BUILD_RUSTC])
            .set(1);

        let collectors: [Box<dyn Collector>; 15] = [
            Box::new(untrusted_received.clone()),
            Box::new(recipients.clone()),
            Box::new(messages.clone()),
            Box::new(encryption_failures.clone()),
            Box::new(unverified_encrypted.clone()),
            Box::new(unusable_keys.clone()),
            Box::new(keystore_unknown.clone()),
            Box::new(received_bytes.clone()),
            Box::new(delivered_bytes.clone()),
            Box::new(stage_duration.clone()),
            Box::new(message_duration.clone()),
            Box::new(next_hop_duration.clone()),
            Box::new(next_hop_errors.clone()),
            Box::new(sessions_active.clone()),
            Box::new(build_info),
        ];
        for collector in collectors {
            registry.register(collector)?;
        }
        for protocol in [SessionProtocol::Lmtp, SessionProtocol::Milter] {
            sessions_active
                .with_label_values(&[protocol.as_str()])
                .set(0);
        }
        Ok(Metrics {
            recipients: RecipientOutcome::ALL
                .iter()
                .map(|o| recipients.with_label_values(&[o.as_str()]))
                .collect(),
            messages: MessageOutcome::ALL
                .iter()
                .map(|o| messages.with_label_values(&[o.as_str()]))
                .collect(),
            encryption_failures,
            unverified_encrypted,
            untrusted_received,
            untrusted_logged: Mutex::new(std::collections::HashSet::new()),
            unusable_keys,
            keystore_unknown,
            received_bytes,
            delivered_bytes,
            stage_duration,
            message_duration,
            next_hop_duration,
            next_hop_errors,
            sessions_active,
        })
    }

    /// Creates the series of the stages and the next hop actually configured, so they read 0
    /// (and exist) before the first message.
    pub fn declare(&self, stages: &[&str], next_hop: NextHopKind) {
        for stage in stages {
            let _ = self.stage_duration.with_label_values(&[stage]);
        }
        let _ = self
            .next_hop_duration
            .with_label_values(&[next_hop.as_str()]);
    }

    /// One recipient's final outcome.
    pub fn recipient(&self, outcome: RecipientOutcome) {
        self.recipients[outcome.index()].inc();
    }

    /// One message's outcome, its size as received and how long it took (DATA to the last
    /// reply).
    pub fn message(&self, outcome: MessageOutcome, received: u64, elapsed: Duration) {
        self.messages[outcome.index()].inc();
        self.received_bytes.inc_by(received);
        self.message_duration.observe(elapsed.as_secs_f64());
    }

    /// A message's first Received field was written by `by` (`None`: no `by`), which is not a
    /// trusted MTA. Returns whether to log it: the first time for each value, up to a limit.
    pub fn untrusted_received(&self, by: Option<&str>) -> bool {
        self.untrusted_received.inc();
        let by = by.unwrap_or("").to_ascii_lowercase();
        let mut logged = self
            .untrusted_logged
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        logged.len() < UNTRUSTED_LOGGED && logged.insert(by)
    }

    /// A copy failed while being encrypted.
    pub fn encryption_failure(&self) {
        self.encryption_failures.inc();
    }

    /// A copy looked already encrypted but was not verified (`reason`: the rule's kind).
    pub fn unverified_encrypted(&self, reason: &str) {
        self.unverified_encrypted.with_label_values(&[reason]).inc();
    }

    /// A recipient's certificate was unusable and `policy` was applied.
    pub fn unusable_key(&self, reason: &Unusable, policy: UnusableKey) {
        self.unusable_keys
            .with_label_values(&[reason.kind(), policy.as_str()])
            .inc();
    }

    /// A recipient was tempfailed because the key store could not tell whether it has a key.
    pub fn keystore_unknown(&self) {
        self.keystore_unknown.inc();
    }

    /// The next hop accepted a copy of `octets` octets.
    pub fn delivered(&self, octets: u64) {
        self.delivered_bytes.inc_by(octets);
    }

    /// Time one stage spent on one message.
    pub fn stage_time(&self, stage: &str, elapsed: Duration) {
        self.stage_duration
            .with_label_values(&[stage])
            .observe(elapsed.as_secs_f64());
    }

    /// One delivery to the next hop, from opening it to the final reply.
    pub fn next_hop_time(&self, kind: NextHopKind, elapsed: Duration) {
        self.next_hop_duration
            .with_label_values(&[kind.as_str()])
            .observe(elapsed.as_secs_f64());
    }

    /// A failure or refusal of the next hop.
    pub fn next_hop_error(&self, kind: NextHopKind, error: NextHopError) {
        self.next_hop_errors
            .with_label_values(&[kind.as_str(), error.as_str()])
            .inc();
    }

    /// Counts a session as open until the returned guard is dropped.
    pub fn session(&self, protocol: SessionProtocol) -> SessionGuard {
        let gauge = self.sessions_active.with_label_values(&[protocol.as_str()]);
        gauge.inc();
        SessionGuard { gauge }
    }
}

/// Keeps one session counted in `sealgate_sessions_active` while it lives.
pub struct SessionGuard {
    gauge: IntGauge,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The git commit sealgate was built from (`build.rs`), or `unknown`.
pub const BUILD_COMMIT: &str = env!("BUILD_GIT_COMMIT");

/// The compiler sealgate was built with (`rustc --version`, from `build.rs`).
pub const BUILD_RUSTC: &str = env!("BUILD_RUSTC_VERSION");

/// The OpenPGP crypto backend compiled in (sequoia's `crypto-openssl` feature).
pub const CRYPTO_BACKEND: &str = "openssl";

/// Registers the key store's gauges (`sealgate_keystore_certificates`,
/// `sealgate_keystore_last_reload_timestamp_seconds`, `sealgate_keystore_bad_entries`,
/// `sealgate_keystore_blind`) and its failed-reload counter
/// (`sealgate_keystore_reload_errors_total`) in `registry`. They are read from `keys` at
/// each scrape, so reloads (timer or SIGHUP) need no hook.
///
/// # Errors
/// Registration failed (the registry already has them).
pub(crate) fn register_keystore(
    registry: &Registry,
    keys: Arc<KeyStore>,
) -> prometheus::Result<()> {
    let collector = KeyStoreCollector {
        keys,
        certificates: IntGauge::new(
            "sealgate_keystore_certificates",
            "Certificates in the key store's current index.",
        )?,
        last_reload: Gauge::new(
            "sealgate_keystore_last_reload_timestamp_seconds",
            "When a reload last confirmed the index matches the directory (Unix time).",
        )?,
        reload_errors: IntCounter::new(
            "sealgate_keystore_reload_errors_total",
            "Key store reloads that failed or left problems (bad entries, missing manifest or certificates).",
        )?,
        bad_entries: IntGauge::new(
            "sealgate_keystore_bad_entries",
            "Key store problems now: unreadable or unparseable entries, a missing or bad manifest, listed certificates that are missing.",
        )?,
        blind: IntGauge::new(
            "sealgate_keystore_blind",
            "1 while the key store cannot tell which addresses have a key (their recipients get 451 4.7.0).",
        )?,
        sync: Mutex::new(()),
    };
    registry.register(Box::new(collector))
}

/// Reads the key store's state when Prometheus scrapes.
struct KeyStoreCollector {
    keys: Arc<KeyStore>,
    certificates: IntGauge,
    last_reload: Gauge,
    reload_errors: IntCounter,
    bad_entries: IntGauge,
    blind: IntGauge,
    /// Serialises scrapes while the counter catches up with the store's count.
    sync: Mutex<()>,
}

impl Collector for KeyStoreCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.certificates.desc();
        descs.extend(self.last_reload.desc());
        descs.extend(self.reload_errors.desc());
        descs.extend(self.bad_entries.desc());
        descs.extend(self.blind.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _sync = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        self.certificates
            .set(i64::try_from(self.keys.len()).unwrap_or(i64::MAX));
        self.last_reload.set(unix_time(self.keys.loaded_at()));
        let errors = self.keys.reload_errors();
        self.reload_errors
            .inc_by(errors.saturating_sub(self.reload_errors.get()));
        let problems = self.keys.problems();
        self.bad_entries
            .set(i64::try_from(problems.len()).unwrap_or(i64::MAX));
        self.blind.set(i64::from(problems.iter().any(|p| p.blind)));
        let mut families = self.certificates.collect();
        families.extend(self.last_reload.collect());
        families.extend(self.reload_errors.collect());
        families.extend(self.bad_entries.collect());
        families.extend(self.blind.collect());
        families
    }
}

/// Registers the PostgreSQL key store's metrics, read from its counters at each scrape.
pub(crate) fn register_key_database(
    registry: &Registry,
    database: Arc<PgKeyStore>,
) -> prometheus::Result<()> {
    let collector = KeyDatabaseCollector {
        database,
        up: IntGauge::new(
            "sealgate_keystore_database_up",
            "1 while the key database's connection is up and listening for changes.",
        )?,
        since_contact: Gauge::new(
            "sealgate_keystore_database_seconds_since_contact",
            "Seconds since the key database last answered (cached answers are used up to SEALGATE_KEYSTORE_MAX_STALE after it).",
        )?,
        answers: IntCounterVec::new(
            Opts::new(
                "sealgate_keystore_answers_total",
                "Recipient lookups answered, by how: current (kept current by the database), stale (cached, the database away), unknown (451).",
            ),
            &["answer"],
        )?,
        misses: IntCounter::new(
            "sealgate_keystore_cache_misses_total",
            "Addresses the cache had no current answer for, asked of the database.",
        )?,
        fetches: IntCounter::new(
            "sealgate_keystore_database_fetches_total",
            "Round trips for those addresses: one per batch (the pipelined RCPTs of one message).",
        )?,
        errors: IntCounter::new(
            "sealgate_keystore_database_errors_total",
            "Failed connections and round trips to the key database.",
        )?,
        notifications: IntCounter::new(
            "sealgate_keystore_notifications_total",
            "Change notifications received from the key database.",
        )?,
        sync: Mutex::new(()),
    };
    for answer in ["current", "stale", "unknown"] {
        collector.answers.with_label_values(&[answer]);
    }
    registry.register(Box::new(collector))
}

/// Reads the key database's counters when Prometheus scrapes.
struct KeyDatabaseCollector {
    database: Arc<PgKeyStore>,
    up: IntGauge,
    since_contact: Gauge,
    answers: IntCounterVec,
    misses: IntCounter,
    fetches: IntCounter,
    errors: IntCounter,
    notifications: IntCounter,
    /// Serialises scrapes while the counters catch up with the store's counts.
    sync: Mutex<()>,
}

impl Collector for KeyDatabaseCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.up.desc();
        descs.extend(self.since_contact.desc());
        descs.extend(self.answers.desc());
        descs.extend(self.misses.desc());
        descs.extend(self.fetches.desc());
        descs.extend(self.errors.desc());
        descs.extend(self.notifications.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        use std::sync::atomic::Ordering::Relaxed;
        let _sync = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        let catch_up = |counter: &IntCounter, total: u64| {
            counter.inc_by(total.saturating_sub(counter.get()));
        };
        let health = self.database.health();
        self.up.set(i64::from(health.up));
        self.since_contact.set(
            health
                .since_contact
                .map_or(f64::INFINITY, |t| t.as_secs_f64()),
        );
        let counts = &self.database.counters;
        catch_up(
            &self.answers.with_label_values(&["current"]),
            counts.current_answers.load(Relaxed),
        );
        catch_up(
            &self.answers.with_label_values(&["stale"]),
            counts.stale_answers.load(Relaxed),
        );
        catch_up(
            &self.answers.with_label_values(&["unknown"]),
            counts.unknown_answers.load(Relaxed),
        );
        catch_up(&self.misses, counts.cache_misses.load(Relaxed));
        catch_up(&self.fetches, counts.fetches.load(Relaxed));
        catch_up(&self.errors, counts.errors.load(Relaxed));
        catch_up(&self.notifications, counts.notifications.load(Relaxed));
        let mut families = self.up.collect();
        families.extend(self.since_contact.collect());
        families.extend(self.answers.collect());
        families.extend(self.misses.collect());
        families.extend(self.fetches.collect());
        families.extend(self.errors.collect());
        families.extend(self.notifications.collect());
        families
    }
}

/// Seconds since the Unix epoch, for timestamps in metrics.
pub(crate) fn unix_time(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use prometheus::{Encoder, TextEncoder};

    fn exposition(registry: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn registers_once_per_registry_and_starts_at_zero() {
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).unwrap();
        assert!(Metrics::new(&registry).is_err());
        metrics.declare(&["scrub", "encrypt"], NextHopKind::Lmtp);
        let text = exposition(&registry);
        for outcome in RecipientOutcome::ALL {
            let line = format!(
                "sealgate_recipients_total{{outcome=\"{}\"}} 0\n",
                outcome.as_str()
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(text.contains("sealgate_messages_total{outcome=\"accepted\"} 0\n"));
        assert!(text.contains("sealgate_stage_duration_seconds_count{stage=\"encrypt\"} 0\n"));
        assert!(text.contains("sealgate_next_hop_duration_seconds_count{kind=\"lmtp\"} 0\n"));
        assert!(text.contains("sealgate_sessions_active{protocol=\"milter\"} 0\n"));
        assert!(text.contains("sealgate_build_info{commit=\""));
        assert!(text.contains("# TYPE sealgate_received_bytes_total counter\n"));
    }

    #[test]
    fn records_and_guards() {
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).unwrap();
        metrics.recipient(RecipientOutcome::PassedEncrypted);
        metrics.message(MessageOutcome::Accepted, 1234, Duration::from_millis(3));
        metrics.unusable_key(&Unusable::Expired, UnusableKey::Tempfail);
        metrics.next_hop_error(NextHopKind::Smtp, NextHopError::Refused5xx);
        let guard = metrics.session(SessionProtocol::Lmtp);
        let text = exposition(&registry);
        assert!(text.contains("sealgate_recipients_total{outcome=\"passed_encrypted\"} 1\n"));
        assert!(text.contains("sealgate_received_bytes_total 1234\n"));
        assert!(text.contains("sealgate_message_duration_seconds_count 1\n"));
        assert!(
            text.contains(
                "sealgate_unusable_keys_total{policy=\"tempfail\",reason=\"expired\"} 1\n"
            )
        );
        assert!(
            text.contains(
                "sealgate_next_hop_errors_total{error=\"refused_5xx\",kind=\"smtp\"} 1\n"
            )
        );
        assert!(text.contains("sealgate_sessions_active{protocol=\"lmtp\"} 1\n"));
        drop(guard);
        assert!(exposition(&registry).contains("sealgate_sessions_active{protocol=\"lmtp\"} 0\n"));
    }

    #[test]
    fn next_hop_refusals() {
        assert_eq!(NextHopError::refusal(250), None);
        assert_eq!(NextHopError::refusal(452), Some(NextHopError::Refused4xx));
    }
}
