//! The cache of database answers and the one rule for how long an answer may be used: no I/O,
//! the clock passed in, so the rule is tested to the instant.
//!
//! An answer is **current** while the connection that will announce its change has been up
//! since before the answer was fetched. When the connection drops, each current answer is
//! marked confirmed until the last moment the database answered; from then on it is
//! **stale**, and usable only until `max_stale` after that moment. An address with no usable
//! answer is **unknown** (a 4xx), never "no key".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sequoia_openpgp::Cert;

use crate::openpgp::{self, Unusable};
use crate::store::Lookup;

/// The state of the link to the database.
#[derive(Debug, Clone, Default)]
pub struct Link {
    /// Listening for changes since then (`None`: down).
    pub listening_since: Option<Instant>,
    /// The database last answered then.
    pub last_alive: Option<Instant>,
    /// Why the link is down.
    pub error: Option<String>,
}

impl Link {
    /// Whether the link is up and listening.
    pub fn is_up(&self) -> bool {
        self.listening_since.is_some()
    }

    /// The database answered at `now`.
    pub fn alive(&mut self, now: Instant) {
        self.last_alive = Some(now);
    }

    /// Listening since `since`, proved alive at `now`.
    pub fn up(&mut self, since: Instant, now: Instant) {
        self.listening_since = Some(since);
        self.last_alive = Some(now);
        self.error = None;
    }

    /// The link failed: every answer that was current is confirmed up to the last contact.
    pub fn down(&mut self, error: String, cache: &mut Cache) {
        if let (Some(since), Some(last)) = (self.listening_since, self.last_alive) {
            for entry in cache.entries.values_mut() {
                if entry.fetched >= since {
                    entry.confirmed = entry.confirmed.max(last);
                }
            }
        }
        self.listening_since = None;
        self.error = Some(error);
    }
}

/// A certificate as read from the database, with its usability verdict cached until the
/// clock alone could change it (an expiry).
#[derive(Debug, Clone)]
pub struct Key {
    /// The certificate.
    pub cert: Arc<Cert>,
    created: SystemTime,
    verdict: Result<Option<SystemTime>, Unusable>,
}

impl Key {
    /// Judges `cert` now.
    pub fn new(cert: Cert) -> Key {
        let verdict = openpgp::usable_until(&cert);
        Key {
            created: cert.primary_key().key().creation_time(),
            cert: Arc::new(cert),
            verdict,
        }
    }

    fn verdict(&self, now: SystemTime) -> Result<(), Unusable> {
        match &self.verdict {
            Ok(Some(until)) if now >= *until => openpgp::check(&self.cert),
            Ok(_) => Ok(()),
            Err(why) => Err(why.clone()),
        }
    }
}

/// One certificate row behind an address.
#[derive(Debug, Clone)]
pub enum CertRow {
    /// Parsed, its fingerprint and user IDs match the row.
    Readable(Key),
    /// Cannot be used as it stands: a doubt about the address.
    Damaged {
        /// The row's fingerprint.
        fingerprint: String,
        /// A short cause for the reply and the log.
        reason: String,
    },
}

/// What one round trip said about one address.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The canonical address asked for.
    pub address: String,
    /// Its certificates (none: a negative answer).
    pub certs: Vec<CertRow>,
    /// Its `mailbox_flags.tls_required` (no row: false).
    pub tls_required: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    certs: Arc<[CertRow]>,
    tls_required: bool,
    /// When the query that produced it was sent.
    fetched: Instant,
    /// Known current up to here (only moves when the link drops).
    confirmed: Instant,
    last_used: Instant,
}

/// How an answer was served.
#[derive(Debug, Clone)]
pub enum Served {
    /// From an answer the database keeps current.
    Current(Lookup),
    /// From an answer confirmed at most `max_stale` ago while the database is away.
    Stale(Lookup),
    /// No usable answer.
    Unknown(Lookup),
}

impl Served {
    /// The lookup, however it was served.
    pub fn into_lookup(self) -> Lookup {
        match self {
            Served::Current(l) | Served::Stale(l) | Served::Unknown(l) => l,
        }
    }
}

/// Answers by canonical address.
#[derive(Debug, Default)]
pub struct Cache {
    entries: HashMap<String, Entry>,
}

enum Freshness {
    Current,
    Stale,
    Expired,
}

impl Entry {
    fn freshness(&self, link: &Link, now: Instant, max_stale: Duration) -> Freshness {
        if link
            .listening_since
            .is_some_and(|since| self.fetched >= since)
        {
            return Freshness::Current;
        }
        if now.saturating_duration_since(self.confirmed) <= max_stale {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }
}

impl Cache {
    /// Of `wanted`, the addresses without a current answer (each once).
    pub fn missing(&mut self, wanted: &[String], link: &Link, now: Instant) -> Vec<String> {
        let mut missing: Vec<String> = Vec::new();
        for address in wanted {
            let current = self.entries.get_mut(address).is_some_and(|entry| {
                entry.last_used = now;
                matches!(
                    entry.freshness(link, now, Duration::ZERO),
                    Freshness::Current
                )
            });
            if !current && !missing.contains(address) {
                missing.push(address.clone());
            }
        }
        missing
    }

    /// Stores answers fetched by a query sent at `sent`.
    pub fn store(&mut self, fetched: Vec<Fetched>, sent: Instant) {
        for answer in fetched {
            let previous_use = self.entries.get(&answer.address).map(|e| e.last_used);
            self.entries.insert(
                answer.address,
                Entry {
                    certs: answer.certs.into(),
                    tls_required: answer.tls_required,
                    fetched: sent,
                    confirmed: sent,
                    last_used: previous_use.unwrap_or(sent),
                },
            );
        }
    }

    /// Replaces the answers for `addresses` (those missing from `fetched` are dropped).
    pub fn replace(&mut self, addresses: &[String], fetched: Vec<Fetched>, sent: Instant) {
        let uses: HashMap<String, Instant> = addresses
            .iter()
            .filter_map(|a| self.entries.remove(a).map(|e| (a.clone(), e.last_used)))
            .collect();
        self.store(fetched, sent);
        for (address, used) in uses {
            if let Some(entry) = self.entries.get_mut(&address) {
                entry.last_used = used;
            }
        }
    }

    /// Drops the answers for `addresses`.
    pub fn forget(&mut self, addresses: &[String]) {
        for address in addresses {
            self.entries.remove(address);
        }
    }

    /// Drops answers nobody asked for in `idle`.
    pub fn evict_idle(&mut self, now: Instant, idle: Duration) {
        self.entries
            .retain(|_, entry| now.saturating_duration_since(entry.last_used) < idle);
    }

    /// Every cached address.
    pub fn addresses(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// The answer for a recipient: its own address's certificates, or else (none there) its
    /// address without the subaddress's, as the cert-d store answers.
    pub fn answer(
        &self,
        canonical: &str,
        base: Option<&str>,
        link: &Link,
        now: Instant,
        max_stale: Duration,
    ) -> Served {
        let mut stale = false;
        let mut certs: Option<&[CertRow]> = None;
        for address in std::iter::once(canonical).chain(base) {
            let Some(entry) = self.entries.get(address) else {
                return unknown(link, "no answer from the key database yet");
            };
            match entry.freshness(link, now, max_stale) {
                Freshness::Current => {}
                Freshness::Stale => stale = true,
                Freshness::Expired => {
                    return unknown(link, "the key database has been unreachable too long");
                }
            }
            if !entry.certs.is_empty() {
                certs = Some(&entry.certs);
                break;
            }
        }
        let lookup = decide(certs.unwrap_or(&[]), SystemTime::now());
        if stale {
            Served::Stale(lookup)
        } else {
            Served::Current(lookup)
        }
    }

    /// Whether a recipient requires TLS: its own address's flag or (for `local+tag@`) its
    /// address without the subaddress's, as the mailbox file matches. `Err` with the cause
    /// when either answer is missing or too old: the caller cannot tell.
    pub fn tls_required(
        &self,
        canonical: &str,
        base: Option<&str>,
        link: &Link,
        now: Instant,
        max_stale: Duration,
    ) -> Result<bool, String> {
        let mut required = false;
        for address in std::iter::once(canonical).chain(base) {
            let Some(entry) = self.entries.get(address) else {
                return Err(reason(link, "no answer from the key database yet"));
            };
            if let Freshness::Expired = entry.freshness(link, now, max_stale) {
                return Err(reason(
                    link,
                    "the key database has been unreachable too long",
                ));
            }
            required |= entry.tls_required;
        }
        Ok(required)
    }
}

fn unknown(link: &Link, what: &str) -> Served {
    Served::Unknown(Lookup::Unknown {
        reason: reason(link, what),
    })
}

/// `what`, with the link's error when it is down.
fn reason(link: &Link, what: &str) -> String {
    match &link.error {
        Some(error) => format!("{what}: {error}"),
        None => what.to_string(),
    }
}

/// The cert-d store's rule, over database rows: every usable certificate, newest first; if
/// none, a damaged row makes the answer unknown; else the newest unusable one's reason; no
/// rows: no key.
pub(super) fn decide(rows: &[CertRow], now: SystemTime) -> Lookup {
    let mut usable: Vec<&Key> = Vec::new();
    let mut unusable: Option<(&Key, Unusable)> = None;
    let mut damaged: Option<&str> = None;
    for row in rows {
        match row {
            CertRow::Readable(key) => match key.verdict(now) {
                Ok(()) => usable.push(key),
                Err(why) => {
                    if unusable
                        .as_ref()
                        .is_none_or(|(newest, _)| key.created > newest.created)
                    {
                        unusable = Some((key, why));
                    }
                }
            },
            CertRow::Damaged { reason, .. } => damaged = damaged.or(Some(reason)),
        }
    }
    if !usable.is_empty() {
        usable.sort_by_key(|key| std::cmp::Reverse(key.created));
        return Lookup::Usable(usable.iter().map(|key| Arc::clone(&key.cert)).collect());
    }
    if let Some(reason) = damaged {
        return Lookup::Unknown {
            reason: reason.to_string(),
        };
    }
    match unusable {
        Some((key, reason)) => Lookup::Unusable {
            fingerprint: key.cert.fingerprint().to_hex(),
            reason,
        },
        None => Lookup::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negative(address: &str) -> Fetched {
        Fetched {
            address: address.into(),
            certs: Vec::new(),
            tls_required: false,
        }
    }

    fn served(cache: &Cache, address: &str, link: &Link, now: Instant) -> &'static str {
        match cache.answer(address, None, link, now, Duration::from_secs(300)) {
            Served::Current(Lookup::None) => "current none",
            Served::Stale(Lookup::None) => "stale none",
            Served::Unknown(Lookup::Unknown { .. }) => "unknown",
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn answers_are_current_while_listening_then_stale_then_unknown() {
        let t0 = Instant::now();
        let mut link = Link::default();
        let mut cache = Cache::default();
        assert_eq!(served(&cache, "a@example.org", &link, t0), "unknown");

        link.up(t0, t0);
        cache.store(vec![negative("a@example.org")], t0 + Duration::from_secs(1));
        let t = t0 + Duration::from_secs(1000);
        assert_eq!(served(&cache, "a@example.org", &link, t), "current none");

        link.alive(t);
        link.down("connection reset".into(), &mut cache);
        assert_eq!(
            served(&cache, "a@example.org", &link, t + Duration::from_secs(300)),
            "stale none"
        );
        assert_eq!(
            served(&cache, "a@example.org", &link, t + Duration::from_secs(301)),
            "unknown"
        );
        // Never seen before: unknown at once while the database is away.
        assert_eq!(served(&cache, "b@example.org", &link, t), "unknown");
    }

    #[test]
    fn an_answer_fetched_before_listening_is_not_current() {
        let t0 = Instant::now();
        let mut link = Link::default();
        let mut cache = Cache::default();
        cache.store(vec![negative("a@example.org")], t0);
        link.up(t0 + Duration::from_secs(1), t0 + Duration::from_secs(1));
        let wanted = vec!["a@example.org".to_string()];
        assert_eq!(
            cache.missing(&wanted, &link, t0 + Duration::from_secs(2)),
            wanted
        );
        // Not current, but not yet too old either.
        assert_eq!(
            served(&cache, "a@example.org", &link, t0 + Duration::from_secs(2)),
            "stale none"
        );
    }

    #[test]
    fn the_subaddress_falls_back_to_the_base_address_and_both_must_be_known() {
        let t0 = Instant::now();
        let mut link = Link::default();
        link.up(t0, t0);
        let mut cache = Cache::default();
        cache.store(vec![negative("a+tag@example.org")], t0);
        let answer = cache.answer(
            "a+tag@example.org",
            Some("a@example.org"),
            &link,
            t0,
            Duration::from_secs(300),
        );
        assert!(matches!(answer, Served::Unknown(_)), "{answer:?}");
        cache.store(vec![negative("a@example.org")], t0);
        let answer = cache.answer(
            "a+tag@example.org",
            Some("a@example.org"),
            &link,
            t0,
            Duration::from_secs(300),
        );
        assert!(
            matches!(answer, Served::Current(Lookup::None)),
            "{answer:?}"
        );
    }

    #[test]
    fn a_damaged_row_is_a_doubt_unless_a_usable_key_exists() {
        let damaged = CertRow::Damaged {
            fingerprint: "AB".into(),
            reason: "certificate AB in the key database cannot be read".into(),
        };
        assert!(matches!(
            decide(&[damaged], SystemTime::now()),
            Lookup::Unknown { .. }
        ));
        assert!(matches!(decide(&[], SystemTime::now()), Lookup::None));
    }

    #[test]
    fn idle_answers_are_evicted() {
        let t0 = Instant::now();
        let mut cache = Cache::default();
        cache.store(vec![negative("a@example.org")], t0);
        cache.evict_idle(t0 + Duration::from_secs(10), Duration::from_secs(60));
        assert_eq!(cache.addresses().len(), 1);
        cache.evict_idle(t0 + Duration::from_secs(61), Duration::from_secs(60));
        assert!(cache.addresses().is_empty());
    }

    #[test]
    fn the_tls_flag_follows_the_freshness_rule_and_the_base_address() {
        let t0 = Instant::now();
        let max = Duration::from_secs(300);
        let mut link = Link::default();
        link.up(t0, t0);
        let mut cache = Cache::default();
        let (tagged, base) = ("a+tag@example.org", Some("a@example.org"));
        assert!(cache.tls_required(tagged, base, &link, t0, max).is_err());
        cache.store(vec![negative(tagged)], t0);
        // The base address unanswered: cannot tell.
        assert!(cache.tls_required(tagged, base, &link, t0, max).is_err());
        let mut flagged = negative("a@example.org");
        flagged.tls_required = true;
        cache.store(vec![flagged], t0);
        assert_eq!(cache.tls_required(tagged, base, &link, t0, max), Ok(true));
        assert_eq!(cache.tls_required(tagged, None, &link, t0, max), Ok(false));
        link.down("gone".into(), &mut cache);
        assert_eq!(
            cache.tls_required(tagged, base, &link, t0 + max, max),
            Ok(true)
        );
        let after = cache.tls_required(tagged, base, &link, t0 + max + Duration::from_secs(1), max);
        assert!(
            after.as_ref().is_err_and(|why| why.contains("gone")),
            "{after:?}"
        );
    }
}
