//! The PostgreSQL key store, for fleets: many sealgate hosts read one database, the place where
//! a provider already keeps its users. cert-d stays the embedded default; the scheme of
//! `SEALGATE_KEYSTORE` chooses ([`connect::is_url`]).
//!
//! Design rule: **fail closed.** An answer comes from the database or from a cached answer
//! the database confirmed at most `max_stale` ago; anything else is [`Lookup::Unknown`]
//! (a 4xx), also for recipients never seen before. A row sealgate cannot read, or one the
//! certificate itself does not back (its own user IDs lack the address), is a doubt, never
//! "no key".
//!
//! How answers stay current: one connection per host carries the lookups and `LISTEN
//! sealgate_keys`; triggers notify the address of every change ([`schema`]), and the host
//! refetches that address at once. Notifications lost while the connection was down are made
//! up for by refetching every cached address on reconnection and by a full check every
//! [`FULL_CHECK`] as a safety net. A ping every [`PING_INTERVAL`] proves the link alive.
//!
//! - [`connect`]: the URL, the password file, TLS.
//! - [`schema`]: the embedded migrations and the version check.
//! - [`cache`]: the pure freshness rule and the answer for an address.
//! - [`admin`]: the writes `sealgate keys` makes, each in one transaction.

pub mod admin;
pub mod cache;
pub mod connect;
pub mod schema;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::timeout;
use tokio_postgres::{AsyncMessage, Client};
use tracing::{error, info, warn};

use crate::message::address;
use crate::store::secure::as_addressed;
use crate::store::{Lookup, SecureLookup, TlsRule};

use cache::{Cache, CertRow, Fetched, Link};
pub use connect::Location;

/// How often the connection is proved alive (`SELECT 1`) while idle.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);

/// How often every cached answer is fetched again, whatever the notifications said.
pub const FULL_CHECK: Duration = Duration::from_secs(60);

/// A cached answer no lookup asked for in this long is dropped at the next full check.
pub const CACHE_IDLE: Duration = Duration::from_secs(3600);

/// How long one round trip may take before the link counts as down.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// Reconnection backoff: first wait, doubled up to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(30));

/// The NOTIFY channel the schema's triggers use.
pub const CHANNEL: &str = "sealgate_keys";

/// The default of `SEALGATE_KEYSTORE_MAX_STALE`.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(300);

/// Why the key database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Connecting failed (network, TLS, authentication, password file).
    #[error("cannot connect to the key database: {0}")]
    Connect(String),
    /// The schema is missing or of a version this binary does not know.
    #[error("{0}")]
    Schema(String),
    /// A query failed.
    #[error("key database query failed: {}", connect::redact(&.0.to_string()))]
    Query(#[from] tokio_postgres::Error),
    /// A round trip took longer than [`QUERY_TIMEOUT`].
    #[error("the key database did not answer within {} s", QUERY_TIMEOUT.as_secs())]
    Timeout,
    /// Something the database holds is not what sealgate wrote or can read.
    #[error("{0}")]
    Data(String),
}

/// Counts for metrics (read by the ops layer).
#[derive(Debug, Default)]
pub struct Counters {
    /// Addresses looked up.
    pub lookups: AtomicU64,
    /// Addresses the cache had no current answer for (each one asked of the database).
    pub cache_misses: AtomicU64,
    /// Round trips made for them: one per batch (the pipelined RCPTs of one message).
    pub fetches: AtomicU64,
    /// Answered from an answer the database keeps current.
    pub current_answers: AtomicU64,
    /// Answered from a cached answer the database had not confirmed lately (link down,
    /// within the staleness limit).
    pub stale_answers: AtomicU64,
    /// Answered "unknown" because the database could not be asked.
    pub unknown_answers: AtomicU64,
    /// Failed connections and round trips.
    pub errors: AtomicU64,
    /// Notifications received.
    pub notifications: AtomicU64,
}

/// What `/readyz` and the logs say about the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The connection is up and listening for changes.
    pub up: bool,
    /// How long ago the database last answered (`None`: never).
    pub since_contact: Option<Duration>,
    /// Why it is down, when it is.
    pub error: Option<String>,
}

/// The key store of a fleet host: cached answers kept current by the database.
pub struct PgKeyStore {
    location: Location,
    max_stale: Duration,
    state: Mutex<State>,
    /// Wakes the supervisor when a lookup saw the link fail.
    trouble: Notify,
    /// Wakes [`PgKeyStore::wait_up`] when the link comes up.
    came_up: Notify,
    /// Metrics counts.
    pub counters: Counters,
}

struct State {
    cache: Cache,
    link: Link,
    client: Option<Arc<Client>>,
}

impl PgKeyStore {
    /// A store for `location`; nothing is connected until [`PgKeyStore::start`].
    pub fn new(location: Location, max_stale: Duration) -> Arc<PgKeyStore> {
        Arc::new(PgKeyStore {
            location,
            max_stale,
            state: Mutex::new(State {
                cache: Cache::default(),
                link: Link::default(),
                client: None,
            }),
            trouble: Notify::new(),
            came_up: Notify::new(),
            counters: Counters::default(),
        })
    }

    /// Connects once and checks the schema, as the service does before it accepts mail.
    ///
    /// # Errors
    /// [`PgError::Schema`] for a schema this binary does not know (the service refuses to
    /// run); [`PgError::Connect`] when the database cannot be reached (the service runs, and
    /// answers 4xx until it can).
    pub async fn preflight(location: &Location) -> Result<(), PgError> {
        let (client, connection) = location.connect().await?;
        let driver = tokio::spawn(connection);
        let checked = timeout(QUERY_TIMEOUT, schema::check(&client))
            .await
            .map_err(|_| PgError::Timeout)?;
        drop(client);
        let _ = driver.await;
        checked
    }

    /// Starts the task that keeps the connection and the cache current, until `shutdown`.
    pub fn start(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let store = Arc::clone(self);
        tokio::spawn(async move { store.supervise(shutdown).await })
    }

    /// Waits up to `limit` for the link to be up (at start, so the first recipients need not
    /// tempfail while the connection is made); `false` if it is not.
    pub async fn wait_up(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let came_up = self.came_up.notified();
            if self.lock().link.is_up() {
                return true;
            }
            if tokio::time::timeout_at(deadline, came_up).await.is_err() {
                return self.lock().link.is_up();
            }
        }
    }

    /// The database's state for `/readyz`.
    pub fn health(&self) -> Health {
        let state = self.lock();
        Health {
            up: state.link.is_up(),
            since_contact: state.link.last_alive.map(|t| t.elapsed()),
            error: state.link.error.clone(),
        }
    }

    /// The location, for logs (no password).
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// How long cached answers outlive the database's last answer.
    pub fn max_stale(&self) -> Duration {
        self.max_stale
    }

    /// What is known about each of `addresses` (in order), in at most one round trip for all
    /// of them. Never waits longer than [`QUERY_TIMEOUT`].
    pub async fn lookup_many(&self, addresses: &[&str]) -> Vec<Lookup> {
        self.prefetch(addresses).await;
        addresses.iter().map(|a| self.lookup_cached(a)).collect()
    }

    /// Makes sure each of `addresses` has a current answer in the cache: one round trip for
    /// all that lack one (none when the link is down). The protocol task calls this for every
    /// RCPT it has read (pipelined RCPTs together) before it judges them with
    /// [`PgKeyStore::lookup_cached`], which never waits.
    pub async fn prefetch(&self, addresses: &[&str]) {
        let wanted: Vec<String> = addresses
            .iter()
            .flat_map(|a| {
                let (canonical, base) = forms(a);
                std::iter::once(canonical).chain(base)
            })
            .collect();
        let (missing, client) = {
            let mut state = self.lock();
            let link = state.link.clone();
            let missing = state.cache.missing(&wanted, &link, Instant::now());
            (missing, state.client.clone())
        };
        // No client: the link is down, and the cache alone answers (stale or unknown).
        if missing.is_empty() {
            return;
        }
        self.counters
            .cache_misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        if let Some(client) = client {
            let started = Instant::now();
            self.counters.fetches.fetch_add(1, Ordering::Relaxed);
            match fetch(&client, &missing).await {
                Ok(rows) => {
                    let mut state = self.lock();
                    state.link.alive(Instant::now());
                    state.cache.store(rows, started);
                }
                Err(err) => self.link_failed(&err),
            }
        }
    }

    /// What the cache says about `address` now, without waiting: current, stale (the
    /// database away, within `max_stale`) or unknown (never "no key" for want of an answer).
    pub fn lookup_cached(&self, address_text: &str) -> Lookup {
        let (canonical, base) = forms(address_text);
        self.counters.lookups.fetch_add(1, Ordering::Relaxed);
        let state = self.lock();
        let answer = state.cache.answer(
            &canonical,
            base.as_deref(),
            &state.link,
            Instant::now(),
            self.max_stale,
        );
        let counter = match &answer {
            cache::Served::Current(_) => &self.counters.current_answers,
            cache::Served::Stale(_) => &self.counters.stale_answers,
            cache::Served::Unknown(_) => &self.counters.unknown_answers,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        answer.into_lookup()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data, consistent after every statement: a panic elsewhere
        // cannot leave it half-changed, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn link_failed(&self, err: &PgError) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        let was_up = state.link.is_up();
        state.client = None;
        let State { cache, link, .. } = &mut *state;
        link.down(err.to_string(), cache);
        drop(state);
        if was_up {
            warn!(
                keystore = %self.location,
                error = %err,
                "key database unreachable; cached answers are used for up to {} s",
                self.max_stale.as_secs()
            );
        }
        self.trouble.notify_one();
    }

    async fn supervise(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = BACKOFF.0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.session(&mut shutdown).await {
                Ok(()) => return,
                Err(err) => {
                    let never_up = {
                        let state = self.lock();
                        state.link.last_alive.is_none() && state.link.error.is_none()
                    };
                    self.link_failed(&err);
                    if matches!(err, PgError::Schema(_)) {
                        error!(keystore = %self.location, error = %err, "key database unusable");
                    } else if never_up {
                        warn!(
                            keystore = %self.location,
                            error = %err,
                            "key database unreachable; recipients get 4xx until it answers"
                        );
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF.1);
            if self.lock().link.is_up() {
                backoff = BACKOFF.0;
            }
        }
    }

    /// One connection's life: connect, LISTEN, check the schema, refetch every cached
    /// answer, then follow notifications until the link fails (`Err`) or shutdown (`Ok`).
    async fn session(&self, shutdown: &mut watch::Receiver<bool>) -> Result<(), PgError> {
        let (client, mut connection) = self.location.connect().await?;
        let (notes, mut noted) = mpsc::unbounded_channel::<String>();
        let mut driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(note))) => {
                        if notes.send(note.payload().to_string()).is_err() {
                            return None;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Some(err.to_string()),
                    None => return None,
                }
            }
        });
        let client = Arc::new(client);
        let result = self
            .follow(&client, &mut noted, &mut driver, shutdown)
            .await;
        driver.abort();
        result
    }

    async fn follow(
        &self,
        client: &Arc<Client>,
        noted: &mut mpsc::UnboundedReceiver<String>,
        driver: &mut tokio::task::JoinHandle<Option<String>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), PgError> {
        round_trip(client.batch_execute(&format!("LISTEN {CHANNEL}"))).await?;
        round_trip(schema::check(client)).await?;
        // Listening from here on: what changed before is caught by refetching everything.
        let listening_since = Instant::now();
        self.refetch_all(client).await?;
        let recovered = {
            let mut state = self.lock();
            let recovered = state.link.error.is_some();
            state.link.up(listening_since, Instant::now());
            state.client = Some(Arc::clone(client));
            recovered
        };
        self.came_up.notify_waiters();
        if recovered {
            info!(keystore = %self.location, "key database reachable again");
        } else {
            info!(keystore = %self.location, "key database connected");
        }
        let mut ping = tokio::time::interval(PING_INTERVAL);
        let mut full = tokio::time::interval(FULL_CHECK);
        ping.tick().await;
        full.tick().await;
        loop {
            tokio::select! {
                note = noted.recv() => {
                    let Some(first) = note else {
                        return Err(PgError::Connect("the connection closed".into()));
                    };
                    let mut changed = vec![first];
                    while let Ok(more) = noted.try_recv() {
                        changed.push(more);
                    }
                    self.counters.notifications.fetch_add(changed.len() as u64, Ordering::Relaxed);
                    self.refetch(client, changed).await?;
                }
                _ = ping.tick() => {
                    round_trip(client.simple_query("SELECT 1")).await?;
                    self.lock().link.alive(Instant::now());
                }
                _ = full.tick() => {
                    round_trip(schema::check(client)).await?;
                    self.refetch_all(client).await?;
                }
                _ = self.trouble.notified() => {
                    // A lookup failed on this connection: prove it or drop it.
                    round_trip(client.simple_query("SELECT 1")).await?;
                    let mut state = self.lock();
                    state.link.up(listening_since, Instant::now());
                    state.client = Some(Arc::clone(client));
                }
                ended = &mut *driver => {
                    let why = ended.ok().flatten().unwrap_or_else(|| "the connection closed".into());
                    return Err(PgError::Connect(why));
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    /// Fetches `addresses` again and replaces their cached answers; on failure their answers
    /// are dropped (they are known to have changed).
    async fn refetch(&self, client: &Client, addresses: Vec<String>) -> Result<(), PgError> {
        let started = Instant::now();
        match fetch(client, &addresses).await {
            Ok(rows) => {
                self.lock().cache.replace(&addresses, rows, started);
                Ok(())
            }
            Err(err) => {
                self.lock().cache.forget(&addresses);
                Err(err)
            }
        }
    }

    async fn refetch_all(&self, client: &Client) -> Result<(), PgError> {
        let addresses = {
            let mut state = self.lock();
            state.cache.evict_idle(Instant::now(), CACHE_IDLE);
            state.cache.addresses()
        };
        for chunk in addresses.chunks(10_000) {
            self.refetch(client, chunk.to_vec()).await?;
        }
        Ok(())
    }
}

/// `future` within [`QUERY_TIMEOUT`].
async fn round_trip<T, E: Into<PgError>>(
    future: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, PgError> {
    match timeout(QUERY_TIMEOUT, future).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(PgError::Timeout),
    }
}

/// One round trip: the certificates and the TLS flag of every address in `addresses`; an
/// address with neither gets an empty answer (a negative answer worth caching).
async fn fetch(client: &Client, addresses: &[String]) -> Result<Vec<Fetched>, PgError> {
    let rows = round_trip(client.query(
        "SELECT q.address, c.fingerprint, c.certificate, coalesce(f.tls_required, false)
           FROM unnest($1::text[]) AS q(address)
           LEFT JOIN sealgate.mailbox_flags f ON f.address = q.address
           LEFT JOIN sealgate.addresses a ON a.address = q.address
           LEFT JOIN sealgate.certificates c ON c.fingerprint = a.fingerprint",
        &[&addresses],
    ))
    .await?;
    let mut by_address: HashMap<String, Fetched> = HashMap::new();
    for row in rows {
        let address: String = row.try_get(0)?;
        let fingerprint: Option<String> = row.try_get(1)?;
        let bytes: Option<Vec<u8>> = row.try_get(2)?;
        let tls_required: bool = row.try_get(3)?;
        let entry = by_address
            .entry(address.clone())
            .or_insert_with(|| Fetched {
                address: address.clone(),
                certs: Vec::new(),
                tls_required,
            });
        if let (Some(fingerprint), Some(bytes)) = (fingerprint, bytes) {
            entry
                .certs
                .push(CertRow::read(&address, &fingerprint, &bytes));
        }
    }
    Ok(by_address.into_values().collect())
}

impl CertRow {
    /// A certificate row as sealgate reads it: parsed, its fingerprint and its own user IDs
    /// checked against the row, or a damaged row with the reason.
    fn read(address: &str, fingerprint: &str, bytes: &[u8]) -> CertRow {
        let damaged = |why: String| CertRow::Damaged {
            fingerprint: fingerprint.to_string(),
            reason: why,
        };
        let cert = match Cert::from_bytes(bytes) {
            Ok(cert) => cert,
            Err(err) => {
                return damaged(format!(
                    "certificate {fingerprint} in the key database cannot be read: {err}"
                ));
            }
        };
        if cert.fingerprint().to_hex() != fingerprint {
            return damaged(format!(
                "the key database row {fingerprint} holds certificate {}",
                cert.fingerprint().to_hex()
            ));
        }
        if !crate::openpgp::email_addresses(&cert)
            .iter()
            .any(|a| a == address)
        {
            return damaged(format!(
                "certificate {fingerprint} has no user ID for the address it is indexed under"
            ));
        }
        CertRow::Readable(cache::Key::new(cert))
    }
}

/// The forms an address is looked up under: canonical, then without its subaddress (as the
/// cert-d store looks it up).
fn forms(address_text: &str) -> (String, Option<String>) {
    let canonical = address::canonical(address_text);
    let base = address::without_subaddress(&canonical);
    (canonical, base)
}

impl PgKeyStore {
    /// Whether `address_text` requires TLS (`mailbox_flags`), from the cache, without waiting:
    /// unknown under the same rule as the key answers.
    pub fn tls_rule_cached(&self, address_text: &str) -> TlsRule {
        let (canonical, base) = forms(address_text);
        let state = self.lock();
        let required = state.cache.tls_required(
            &canonical,
            base.as_deref(),
            &state.link,
            Instant::now(),
            self.max_stale,
        );
        match required {
            Ok(true) => TlsRule::Required {
                mailbox: as_addressed(address_text),
            },
            Ok(false) => TlsRule::Optional,
            Err(reason) => TlsRule::Unknown { reason },
        }
    }
}

/// The key database's `mailbox_flags` as the require-TLS stage asks them: the rows come with
/// the key answers, in the same round trip and the same cache.
impl SecureLookup for PgKeyStore {
    fn tls_rule(&self, address: &str) -> TlsRule {
        self.tls_rule_cached(address)
    }

    fn needs_prefetch(&self) -> bool {
        true
    }

    fn prefetch<'a>(&'a self, addresses: &'a [&'a str]) -> crate::store::Prefetch<'a> {
        Box::pin(PgKeyStore::prefetch(self, addresses))
    }
}

impl crate::store::KeyLookup for PgKeyStore {
    fn lookup(&self, address: &str) -> Lookup {
        self.lookup_cached(address)
    }

    fn needs_prefetch(&self) -> bool {
        true
    }

    fn prefetch<'a>(&'a self, addresses: &'a [&'a str]) -> crate::store::Prefetch<'a> {
        Box::pin(PgKeyStore::prefetch(self, addresses))
    }
}
