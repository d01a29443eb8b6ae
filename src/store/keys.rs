//! The key store: OpenPGP certificates in a cert-d directory (as `sq` uses), indexed in memory
//! by e-mail address so the encryption stage can ask "which key for this recipient?" without
//! touching the disk.
//!
//! Reading: [`KeyStore`] loads every certificate once, keeps the parsed `Arc<Cert>`s and an
//! address index, and swaps in a fresh index when the directory's cert-d tag changes
//! ([`KeyStore::reload`], [`KeyStore::watch`]). Writing ([`insert`], [`remove`]) goes through
//! the cert-d lock, so `sealgate keys` and `sq` can change the directory while sealgate runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::hash::{DefaultHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use openpgp_cert_d::{CertD, MergeResult, Tag};
use sequoia_openpgp::packet::Signature;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::serialize::MarshalInto;
use sequoia_openpgp::{Cert, Fingerprint, Packet};
use tracing::{info, warn};

use crate::message::address;
use crate::openpgp::{self, Unusable};
use crate::store::watch::{self, Reload, Trigger};
use crate::store::{KeyLookup, Lookup};

/// How long a usability verdict is reused before the certificate is checked again. Expiry is
/// time-dependent, so a "usable" verdict is also dropped at the first expiry among the primary
/// key and the encryption keys; that is what makes a lookup at DATA time judge anew.
pub const VERDICT_TTL: Duration = Duration::from_secs(60);

/// Name of the cert-d lock file (draft-nwjw-openpgp-cert-d, "writelock").
const WRITELOCK: &str = "writelock";

/// Name of the manifest `sealgate keys` keeps in the store directory: a store identity and
/// the fingerprints it should hold, so a store that shrinks (a volume that did not mount, a
/// wrong path, deleted files) is noticed instead of turning key holders into plaintext
/// recipients.
pub const MANIFEST: &str = ".sealgate-manifest";

/// Something the store cannot vouch for: a file or directory and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file or directory concerned.
    pub path: PathBuf,
    /// What is wrong with it, in a few words.
    pub cause: String,
    /// The store can no longer tell which addresses have a key: every lookup without a
    /// usable certificate is [`Lookup::Unknown`]. Otherwise the last good copy of the entry is
    /// still used and the problem only degrades the store.
    pub blind: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.cause)
    }
}

/// The manifest's content: which store this is and the certificates it should hold.
/// A codec without I/O ([`Manifest::parse`], [`Manifest::render`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Random identity of the store, logged at start (tells two stores apart).
    pub id: String,
    /// Lower-case hex fingerprints of the certificates `sealgate keys` stored.
    pub fingerprints: BTreeSet<String>,
}

impl Manifest {
    const MAGIC: &'static str = "sealgate-keystore 1";

    /// A manifest for a new, empty store with a fresh identity.
    pub fn new() -> Manifest {
        // An identity, not a secret: std's keyed SipHash (OS-seeded keys) over the clock.
        use std::hash::{BuildHasher, RandomState};
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let (high, low) = (
            RandomState::new().hash_one(now),
            RandomState::new().hash_one(now),
        );
        Manifest {
            id: format!("{high:016x}{low:016x}"),
            fingerprints: BTreeSet::new(),
        }
    }

    /// Parses a manifest; `#` lines and blank lines are ignored.
    ///
    /// # Errors
    /// Not a manifest, or a line that is not `id HEX` or `cert FINGERPRINT`.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        if lines.next() != Some(Self::MAGIC) {
            return Err(format!(
                "not a manifest (first line is not `{}`)",
                Self::MAGIC
            ));
        }
        let mut id = None;
        let mut fingerprints = BTreeSet::new();
        for line in lines {
            match line.split_once(' ') {
                Some(("id", value)) if id.is_none() && is_hex(value, &[32]) => {
                    id = Some(value.to_string());
                }
                Some(("cert", value)) if is_hex(value, &[40, 64]) => {
                    fingerprints.insert(value.to_ascii_lowercase());
                }
                _ => return Err(format!("unexpected line `{}`", line.escape_debug())),
            }
        }
        let id = id.ok_or("no `id` line")?;
        Ok(Manifest { id, fingerprints })
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut text = format!(
            "# sealgate key store manifest, written by `sealgate keys`: the certificates this\n\
             # store must hold. Do not edit; see sealgate(8), KEY STORE.\n{}\nid {}\n",
            Self::MAGIC,
            self.id
        );
        for fingerprint in &self.fingerprints {
            text.push_str(&format!("cert {fingerprint}\n"));
        }
        text
    }
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest::new()
    }
}

fn is_hex(text: &str, lengths: &[usize]) -> bool {
    lengths.contains(&text.len()) && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// What a [`KeyStore::reload`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadStats {
    /// Certificates in the index.
    pub certificates: usize,
    /// Distinct (canonical, [`crate::message::address`]) addresses in the index.
    pub addresses: usize,
    /// Entries that could not be read or parsed (logged; their last good copy, if any, is
    /// still in the index).
    pub skipped: usize,
    /// Everything the store cannot vouch for (bad entries, a missing or wrong manifest,
    /// certificates the manifest lists that are missing); see [`KeyStore::problems`].
    pub problems: usize,
    /// Whether the index differs from the previous one (certificates added, removed or
    /// updated).
    pub changed: bool,
}

/// Why the key store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The store directory could not be created.
    #[error("cannot create key store directory {}", dir.display())]
    Create {
        /// The store directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The store directory could not be read.
    #[error("cannot read key store directory {}", dir.display())]
    Read {
        /// The store directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The manifest is missing where it must be, or can't be read or written.
    #[error("key store manifest {}: {reason}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The store's write lock could not be taken.
    #[error("cannot lock key store {}", dir.display())]
    Lock {
        /// The store directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A stored certificate could not be read.
    #[error("cannot read certificate {fingerprint}")]
    Fetch {
        /// The certificate's fingerprint.
        fingerprint: String,
        /// The cause.
        #[source]
        source: openpgp_cert_d::Error,
    },
    /// A certificate could not be written to the store.
    #[error("cannot store certificate {fingerprint}")]
    Insert {
        /// The certificate's fingerprint.
        fingerprint: String,
        /// The cause.
        #[source]
        source: openpgp_cert_d::Error,
    },
    /// A certificate could not be removed from the store.
    #[error("cannot remove certificate {fingerprint}")]
    Remove {
        /// The certificate's fingerprint.
        fingerprint: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A certificate could not be read back, re-encoded or rebuilt.
    #[error("invalid certificate {fingerprint}")]
    Certificate {
        /// The certificate's fingerprint.
        fingerprint: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl KeyStoreError {
    fn certificate(fingerprint: &Fingerprint, err: sequoia_openpgp::anyhow::Error) -> Self {
        KeyStoreError::Certificate {
            fingerprint: fingerprint.to_hex(),
            source: err.into(),
        }
    }
}

/// The certificates of a cert-d directory, indexed by e-mail address. `Send + Sync`; share it
/// as `Arc<KeyStore>`.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    certd: CertD,
    /// The current index. The lock is held only to clone or swap the `Arc`.
    index: RwLock<Arc<Index>>,
    /// Serialises reloads, so two of them never build an index from the same old one.
    reloading: Mutex<()>,
    /// When a reload last confirmed the index matches the directory.
    loaded_at: Mutex<SystemTime>,
    /// Reloads that failed (the previous index stayed), for metrics.
    reload_errors: AtomicU64,
}

/// One certificate file, parsed.
#[derive(Debug)]
struct Entry {
    cert: Arc<Cert>,
    created: SystemTime,
    /// Hash of the file's bytes: an unchanged file keeps its parsed certificate (and its
    /// cached verdict) across reloads.
    digest: u64,
    verdict: Mutex<Option<Verdict>>,
}

/// A cached answer to "is this certificate usable now?".
#[derive(Debug, Clone)]
struct Verdict {
    result: Result<(), Unusable>,
    checked: Instant,
    /// When the verdict was "usable": the first expiry among the primary key and the
    /// encryption keys; it is void from then on.
    until: Option<SystemTime>,
}

/// An immutable snapshot of the store.
#[derive(Debug, Default)]
struct Index {
    /// The cert-d tag this index was built from; `None` when it must be re-read regardless
    /// (never loaded, or loaded within [`watch::RACY_MARGIN`] of a modification).
    tag: Option<Tag>,
    /// Certificates by lower-case fingerprint (the cert-d file name), including the last good
    /// copy of entries that became unreadable.
    certs: BTreeMap<String, Arc<Entry>>,
    /// Normalised address → certificates with a self-signed user ID for it, by fingerprint.
    addresses: HashMap<String, Vec<Arc<Entry>>>,
    skipped: usize,
    /// What the store cannot vouch for; empty when healthy.
    problems: Vec<Problem>,
    /// Size, mode, owner and change time of every entry and of the manifest: the cert-d tag
    /// only sees directories, and an entry truncated or made unreadable in place must be
    /// noticed too.
    stat: u64,
    /// The manifest's store identity, when it could be read.
    manifest_id: Option<String>,
}

/// Adds every entry of `old` missing from `certs` (their last good copies).
fn keep_all(old: &BTreeMap<String, Arc<Entry>>, certs: &mut BTreeMap<String, Arc<Entry>>) {
    for (name, entry) in old {
        certs
            .entry(name.clone())
            .or_insert_with(|| Arc::clone(entry));
    }
}

/// What a walk of the directory found besides the certificates.
struct Health {
    skipped: usize,
    problems: Vec<Problem>,
    stat: u64,
    manifest_id: Option<String>,
}

impl Entry {
    fn new(cert: Cert, digest: u64) -> Entry {
        Entry {
            created: cert.primary_key().key().creation_time(),
            cert: Arc::new(cert),
            digest,
            verdict: Mutex::new(None),
        }
    }

    /// Whether the certificate is usable now; cached for [`VERDICT_TTL`].
    fn verdict(&self) -> Result<(), Unusable> {
        let cached = self
            .verdict
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(v) = cached
            && v.checked.elapsed() < VERDICT_TTL
            && v.until.is_none_or(|until| SystemTime::now() < until)
        {
            return v.result;
        }
        // Validate outside the lock: concurrent lookups of one certificate may both validate,
        // which is cheaper than making them wait for each other.
        let usable = openpgp::usable_until(&self.cert);
        let until = usable.as_ref().ok().copied().flatten();
        let result = usable.map(|_| ());
        *self.verdict.lock().unwrap_or_else(PoisonError::into_inner) = Some(Verdict {
            result: result.clone(),
            checked: Instant::now(),
            until,
        });
        result
    }
}

impl Index {
    fn build(tag: Option<Tag>, certs: BTreeMap<String, Arc<Entry>>, health: Health) -> Index {
        let mut addresses: HashMap<String, Vec<Arc<Entry>>> = HashMap::new();
        for entry in certs.values() {
            for address in email_addresses(&entry.cert) {
                addresses
                    .entry(address)
                    .or_default()
                    .push(Arc::clone(entry));
            }
        }
        Index {
            tag,
            certs,
            addresses,
            skipped: health.skipped,
            problems: health.problems,
            stat: health.stat,
            manifest_id: health.manifest_id,
        }
    }

    /// Why lookups without a usable certificate are unknown, if they are.
    fn blind(&self) -> Option<String> {
        let mut blind = self.problems.iter().filter(|p| p.blind);
        let first = blind.next()?;
        let more = blind.count();
        Some(if more == 0 {
            first.to_string()
        } else {
            format!("{first}; and {more} more")
        })
    }

    /// The certificates for `address`: the exact canonical address first, then without its
    /// `+tag`.
    fn candidates(&self, address: &str) -> &[Arc<Entry>] {
        let address = address::canonical(address);
        if let Some(found) = self.addresses.get(&address) {
            return found;
        }
        address::without_subaddress(&address)
            .and_then(|base| self.addresses.get(&base))
            .map_or(&[], Vec::as_slice)
    }

    fn stats(&self, changed: bool) -> ReloadStats {
        ReloadStats {
            certificates: self.certs.len(),
            addresses: self.addresses.len(),
            skipped: self.skipped,
            problems: self.problems.len(),
            changed,
        }
    }
}

impl KeyStore {
    /// Opens the cert-d directory `dir` and loads the index. A missing or unreadable
    /// directory, bad entries and a missing manifest are not errors: they are
    /// [`KeyStore::problems`], and lookups they leave in doubt answer [`Lookup::Unknown`].
    ///
    /// # Errors
    /// Not expected with openpgp-cert-d 0.3 (opening only records the path).
    pub fn open(dir: &Path) -> Result<KeyStore, KeyStoreError> {
        let store = KeyStore {
            dir: dir.to_path_buf(),
            certd: open_certd(dir)?,
            index: RwLock::new(Arc::new(Index::default())),
            reloading: Mutex::new(()),
            loaded_at: Mutex::new(SystemTime::now()),
            reload_errors: AtomicU64::new(0),
        };
        // A failure is recorded in the index as a blind problem (and logged).
        let _ = store.reload(true);
        Ok(store)
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What we know about `address`, from memory only (never touches the disk). The address
    /// is lower-cased; when it has no entry, `user+tag@domain` falls back to `user@domain`.
    /// Every usable certificate is returned (newest first); if none is usable, the newest
    /// one's reason is reported. While the store cannot vouch for its index (a blind
    /// [`Problem`]), anything but a usable certificate is [`Lookup::Unknown`].
    pub fn lookup(&self, address: &str) -> Lookup {
        let index = self.current();
        let mut usable: Vec<&Entry> = Vec::new();
        let mut unusable: Option<(&Entry, Unusable)> = None;
        for entry in index.candidates(address) {
            match entry.verdict() {
                Ok(()) => usable.push(entry),
                Err(reason) => {
                    if unusable
                        .as_ref()
                        .is_none_or(|(newest, _)| entry.created > newest.created)
                    {
                        unusable = Some((entry, reason));
                    }
                }
            }
        }
        if !usable.is_empty() {
            usable.sort_by_key(|entry| std::cmp::Reverse(entry.created));
            return Lookup::Usable(usable.iter().map(|e| Arc::clone(&e.cert)).collect());
        }
        if let Some(reason) = index.blind() {
            return Lookup::Unknown { reason };
        }
        match unusable {
            Some((entry, reason)) => Lookup::Unusable {
                fingerprint: entry.cert.fingerprint().to_hex(),
                reason,
            },
            None => Lookup::None,
        }
    }

    /// What the store cannot vouch for right now; empty when healthy.
    pub fn problems(&self) -> Vec<Problem> {
        self.current().problems.clone()
    }

    /// The manifest's store identity, when the manifest could be read.
    pub fn manifest_id(&self) -> Option<String> {
        self.current().manifest_id.clone()
    }

    /// Every certificate `address` resolves to (same normalisation as [`KeyStore::lookup`]),
    /// usable or not, ordered by fingerprint.
    pub fn certificates_for(&self, address: &str) -> Vec<Arc<Cert>> {
        self.current()
            .candidates(address)
            .iter()
            .map(|entry| Arc::clone(&entry.cert))
            .collect()
    }

    /// Every certificate in the index, ordered by fingerprint.
    pub fn certificates(&self) -> Vec<Arc<Cert>> {
        self.current()
            .certs
            .values()
            .map(|entry| Arc::clone(&entry.cert))
            .collect()
    }

    /// Number of certificates in the current index.
    pub fn len(&self) -> usize {
        self.current().certs.len()
    }

    /// Whether the current index holds no certificate.
    pub fn is_empty(&self) -> bool {
        self.current().certs.is_empty()
    }

    /// Time of the last successful [`KeyStore::reload`] (including one that found nothing
    /// new).
    pub fn loaded_at(&self) -> SystemTime {
        *self
            .loaded_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of [`KeyStore::reload`] calls that failed or left [`KeyStore::problems`] since
    /// the store was opened.
    pub fn reload_errors(&self) -> u64 {
        self.reload_errors.load(Ordering::Relaxed)
    }

    /// Re-reads the directory if its cert-d tag changed (or `force`) and swaps in the new
    /// index. Unchanged files keep their parsed certificate. Blocking I/O: call it from
    /// `spawn_blocking` or a plain thread.
    ///
    /// # Errors
    /// The directory can't be read; the previous index stays in place (counted in
    /// [`KeyStore::reload_errors`]). Unreadable or unparseable files are skipped (logged,
    /// counted in [`ReloadStats::skipped`]).
    pub fn reload(&self, force: bool) -> Result<ReloadStats, KeyStoreError> {
        let result = self.reload_index(force);
        if !result.as_ref().is_ok_and(|stats| stats.problems == 0) {
            self.reload_errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn reload_index(&self, force: bool) -> Result<ReloadStats, KeyStoreError> {
        let _reloading = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = self.current();
        // Read the clock before the tag: a change after this instant either changes the tag
        // or falls within RACY_MARGIN of it (see below).
        let sampled = SystemTime::now();
        let tag = self.certd.tag();
        let stat = stat_digest(&self.dir);
        // A store with problems is walked every time, so a repair is noticed at once.
        if !force && old.tag == Some(tag) && old.stat == stat && old.problems.is_empty() {
            self.touch();
            return Ok(old.stats(false));
        }

        let (files, mut problems) = match walk(&self.dir) {
            Ok(walked) => walked,
            Err(source) => {
                // Keep every certificate (still encrypt to them) but answer nothing else.
                let problem = Problem {
                    path: self.dir.clone(),
                    cause: format!("cannot read the key store directory: {source}"),
                    blind: true,
                };
                self.report(&old.problems, std::slice::from_ref(&problem));
                let health = Health {
                    skipped: 0,
                    problems: vec![problem],
                    stat,
                    manifest_id: None,
                };
                let index = Index::build(None, old.certs.clone(), health);
                *self.index.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(index);
                return Err(KeyStoreError::Read {
                    dir: self.dir.clone(),
                    source,
                });
            }
        };
        let mut certs = BTreeMap::new();
        let mut skipped = 0;
        for (name, path) in &files {
            let read = fs::read(path).map_err(|err| format!("cannot read: {err}"));
            let entry = read.and_then(|data| {
                let digest = digest(&data);
                match old.certs.get(name) {
                    Some(entry) if entry.digest == digest => Ok(Arc::clone(entry)),
                    _ => parse_stored(name, &data)
                        .map(|cert| Arc::new(Entry::new(cert, digest)))
                        .map_err(|why| format!("not a usable certificate file: {why}")),
                }
            });
            match entry {
                Ok(entry) => {
                    certs.insert(name.clone(), entry);
                }
                Err(cause) => {
                    skipped += 1;
                    // The last good copy stays; without one, nobody knows whose it is.
                    let kept = old.certs.get(name);
                    if let Some(entry) = kept {
                        certs.insert(name.clone(), Arc::clone(entry));
                    }
                    problems.push(Problem {
                        path: path.clone(),
                        cause,
                        blind: kept.is_none(),
                    });
                }
            }
        }
        let manifest_path = self.dir.join(MANIFEST);
        let manifest_id = match read_manifest(&self.dir) {
            Ok(Some(manifest)) => {
                for fingerprint in &manifest.fingerprints {
                    if files.iter().any(|(name, _)| name == fingerprint) {
                        continue;
                    }
                    let kept = old.certs.get(fingerprint);
                    if let Some(entry) = kept {
                        certs.insert(fingerprint.clone(), Arc::clone(entry));
                    }
                    problems.push(Problem {
                        path: entry_path(&self.dir, fingerprint),
                        cause: format!("listed in {MANIFEST} but missing"),
                        blind: kept.is_none(),
                    });
                }
                Some(manifest.id)
            }
            // Without a manifest nothing says what should be here: every certificate seen
            // before is kept (still encrypted to), and the rest is unknown.
            Ok(None) => {
                keep_all(&old.certs, &mut certs);
                problems.push(Problem {
                    path: manifest_path,
                    cause: "missing: not a store made by `sealgate keys` (or not mounted?); \
                            see `sealgate keys init` and `sealgate keys reindex`"
                        .into(),
                    blind: true,
                });
                None
            }
            Err(cause) => {
                keep_all(&old.certs, &mut certs);
                problems.push(Problem {
                    path: manifest_path,
                    cause,
                    blind: true,
                });
                None
            }
        };
        self.report(&old.problems, &problems);

        let changed = old.certs.len() != certs.len()
            || old
                .certs
                .iter()
                .zip(&certs)
                .any(|((a, ea), (b, eb))| a != b || ea.digest != eb.digest);
        // Implementation note: cert-d tags are built from directory mtimes, so a directory
        // modified within RACY_MARGIN before we sampled the clock makes the tag untrusted
        // (the racy-stamp rule, [`watch::racy`]).
        let racy =
            newest_subdir_mtime(&self.dir).is_some_and(|newest| watch::racy(newest, sampled));
        let health = Health {
            skipped,
            problems,
            stat,
            manifest_id,
        };
        let index = Index::build((!racy).then_some(tag), certs, health);
        let stats = index.stats(changed);
        *self.index.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(index);
        self.touch();
        Ok(stats)
    }

    /// Logs problems that are new since the last reload (WARN, naming the file), and the
    /// recovery when the last one is gone.
    fn report(&self, before: &[Problem], now: &[Problem]) {
        for problem in now.iter().filter(|p| !before.contains(p)) {
            warn!(
                dir = %self.dir.display(),
                file = %problem.path.display(),
                cause = %problem.cause,
                blind = problem.blind,
                "key store degraded: {}",
                if problem.blind {
                    "recipients without a usable key get 451 until this is fixed"
                } else {
                    "the entry's last good certificate is still used"
                }
            );
        }
        if now.is_empty() && !before.is_empty() {
            info!(dir = %self.dir.display(), "key store healthy again");
        }
    }

    fn current(&self) -> Arc<Index> {
        Arc::clone(&self.index.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn touch(&self) {
        *self
            .loaded_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = SystemTime::now();
    }
}

impl Reload for KeyStore {
    fn what(&self) -> &'static str {
        "key store"
    }

    fn thread_name(&self) -> &'static str {
        "sealgate-keystore"
    }

    fn reload_logged(&self, trigger: Trigger) {
        let dir = self.dir.display();
        match self.reload(trigger == Trigger::Signal) {
            Ok(stats) if trigger == Trigger::Signal => info!(
                %dir,
                certificates = stats.certificates,
                addresses = stats.addresses,
                skipped = stats.skipped,
                problems = stats.problems,
                "key store reloaded (SIGHUP)"
            ),
            Ok(stats) if stats.changed => info!(
                %dir,
                certificates = stats.certificates,
                addresses = stats.addresses,
                skipped = stats.skipped,
                problems = stats.problems,
                "key store reloaded"
            ),
            Ok(_) => {}
            Err(err) => warn!(
                %dir,
                err = %error_chain(&err),
                "key store reload failed; keeping the previous index"
            ),
        }
    }
}

impl KeyLookup for KeyStore {
    /// See [`KeyStore::lookup`]: everything is in memory, so no prefetch is needed.
    fn lookup(&self, address: &str) -> Lookup {
        KeyStore::lookup(self, address)
    }
}

/// The canonical e-mail addresses of `cert`'s self-signed user IDs (sequoia's parsing), in
/// order, without duplicates. A user ID whose newest self-signature is older than a
/// self-revocation is left out; third-party certifications count for nothing.
pub fn email_addresses(cert: &Cert) -> Vec<String> {
    let mut addresses = Vec::new();
    for uid in cert.userids() {
        let bundle = uid.bundle();
        // Both iterators verify the signatures and yield the newest first.
        let Some(newest) = bundle.self_signatures().next() else {
            continue;
        };
        if let Some(revocation) = bundle.self_revocations().next()
            && revocation.signature_creation_time() >= newest.signature_creation_time()
        {
            continue;
        }
        let Ok(Some(email)) = uid.userid().email() else {
            continue;
        };
        let address = address::canonical(email);
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    addresses
}

/// `cert` with only the holder's own signatures: third-party certifications (and signatures
/// that don't verify) are dropped, self-signatures and revocations kept.
///
/// # Errors
/// The remaining packets don't form a certificate (not expected: the primary key and its
/// self-signatures always remain).
pub fn strip_third_party_certifications(cert: Cert) -> sequoia_openpgp::Result<Cert> {
    let foreign: Vec<Signature> = cert
        .primary_key()
        .bundle()
        .certifications()
        .chain(cert.userids().flat_map(|uid| uid.bundle().certifications()))
        .chain(
            cert.user_attributes()
                .flat_map(|ua| ua.bundle().certifications()),
        )
        .chain(
            cert.keys()
                .subkeys()
                .flat_map(|ka| ka.bundle().certifications()),
        )
        .chain(cert.bad_signatures())
        .cloned()
        .collect();
    if foreign.is_empty() {
        return Ok(cert);
    }
    let packets = cert
        .into_packets()
        .filter(|packet| !matches!(packet, Packet::Signature(sig) if foreign.contains(sig)));
    Cert::from_packets(packets)
}

/// Reads the stored copy of the certificate `fingerprint` from the cert-d `dir`.
///
/// # Errors
/// The file can't be read or parsed.
pub fn stored(dir: &Path, fingerprint: &Fingerprint) -> Result<Option<Cert>, KeyStoreError> {
    let certd = open_certd(dir)?;
    let found = certd
        .get(&fingerprint.to_hex().to_lowercase())
        .map_err(|source| KeyStoreError::Fetch {
            fingerprint: fingerprint.to_hex(),
            source,
        })?;
    found
        .map(|(_tag, data)| {
            Cert::from_bytes(&data).map_err(|err| KeyStoreError::certificate(fingerprint, err))
        })
        .transpose()
}

/// Writes the public part of `cert` into the cert-d `dir` (created if missing), without
/// third-party certifications, merged (`Cert::merge_public`) with a stored copy under the
/// cert-d lock. Returns what was stored. The caller decides whether `cert` is acceptable.
///
/// # Errors
/// The directory or the file can't be written, or the certificate can't be re-encoded.
pub fn insert(dir: &Path, cert: &Cert) -> Result<Cert, KeyStoreError> {
    let fingerprint = cert.fingerprint();
    let incoming = strip_third_party_certifications(cert.clone().strip_secret_key_material())
        .map_err(|err| KeyStoreError::certificate(&fingerprint, err))?;
    // `Cert`'s own serialisation never includes secret key material.
    let data = incoming
        .to_vec()
        .map_err(|err| KeyStoreError::certificate(&fingerprint, err))?;
    fs::create_dir_all(dir).map_err(|source| KeyStoreError::Create {
        dir: dir.to_path_buf(),
        source,
    })?;
    // Before writing: a store holding certificates without a manifest is refused here.
    manifest_or_new(dir)?;
    let certd = open_certd(dir)?;
    let merge = |new: Vec<u8>, old: Option<&[u8]>| -> openpgp_cert_d::Result<MergeResult<'_>> {
        let Some(old) = old else {
            return Ok(MergeResult::Data(new));
        };
        let merged = match Cert::from_bytes(old) {
            Ok(old) => old.merge_public(incoming.clone())?,
            Err(err) => {
                warn!(file = %fingerprint, err = %err, "replacing an unparseable stored copy");
                incoming.clone()
            }
        };
        Ok(MergeResult::Data(
            strip_third_party_certifications(merged)?.to_vec()?,
        ))
    };
    let (_tag, written) = certd
        .insert(&fingerprint.to_hex().to_lowercase(), data, true, merge)
        .map_err(|source| KeyStoreError::Insert {
            fingerprint: fingerprint.to_hex(),
            source,
        })?;
    let name = fingerprint.to_hex().to_lowercase();
    update_manifest(dir, |manifest| {
        manifest.fingerprints.insert(name);
    })?;
    // We asked for the written data (`return_inserted`), so it is there.
    Cert::from_bytes(written.as_deref().unwrap_or_default())
        .map_err(|err| KeyStoreError::certificate(&fingerprint, err))
}

/// Creates the store `dir` (if missing) with an empty manifest: what a new store starts as.
/// An existing manifest is kept. Returns the manifest.
///
/// # Errors
/// The directory holds certificates but no manifest ([`reindex`] is the explicit way to
/// accept them), or the directory or manifest can't be written.
pub fn init(dir: &Path) -> Result<Manifest, KeyStoreError> {
    fs::create_dir_all(dir).map_err(|source| KeyStoreError::Create {
        dir: dir.to_path_buf(),
        source,
    })?;
    let _lock = lock(dir)?;
    let manifest = manifest_or_new(dir)?;
    write_manifest(dir, &manifest)?;
    Ok(manifest)
}

/// Rewrites the manifest of `dir` to list exactly the certificate files present now (keeping
/// the store identity if the old manifest could be read): the operator's way to accept a
/// store that shrank on purpose, or one written by another tool. Returns the new manifest.
///
/// # Errors
/// The directory can't be read, or the manifest can't be written.
pub fn reindex(dir: &Path) -> Result<Manifest, KeyStoreError> {
    let _lock = lock(dir)?;
    let (files, problems) = walk(dir).map_err(|source| KeyStoreError::Read {
        dir: dir.to_path_buf(),
        source,
    })?;
    if let Some(problem) = problems.first() {
        return Err(KeyStoreError::Manifest {
            path: dir.join(MANIFEST),
            reason: format!("cannot list the store: {problem}"),
        });
    }
    let mut manifest = read_manifest(dir).ok().flatten().unwrap_or_default();
    manifest.fingerprints = files.into_iter().map(|(name, _)| name).collect();
    write_manifest(dir, &manifest)?;
    Ok(manifest)
}

/// The manifest of `dir`, or a new one when the store holds no certificate file yet.
fn manifest_or_new(dir: &Path) -> Result<Manifest, KeyStoreError> {
    let path = dir.join(MANIFEST);
    match read_manifest(dir) {
        Ok(Some(manifest)) => Ok(manifest),
        Ok(None) => {
            let (files, _) = walk(dir).map_err(|source| KeyStoreError::Read {
                dir: dir.to_path_buf(),
                source,
            })?;
            if files.is_empty() {
                Ok(Manifest::new())
            } else {
                Err(KeyStoreError::Manifest {
                    path,
                    reason: format!(
                        "missing, but the store holds {} certificate(s): check that this is \
                         the right store, then accept its contents with `sealgate keys reindex`",
                        files.len()
                    ),
                })
            }
        }
        Err(reason) => Err(KeyStoreError::Manifest { path, reason }),
    }
}

/// Changes the manifest of `dir` under the store's write lock (created when the store holds no
/// certificate besides what is being added).
fn update_manifest(dir: &Path, change: impl FnOnce(&mut Manifest)) -> Result<(), KeyStoreError> {
    let _lock = lock(dir)?;
    let mut manifest = match read_manifest(dir) {
        Ok(Some(manifest)) => manifest,
        Ok(None) => Manifest::new(),
        Err(reason) => {
            return Err(KeyStoreError::Manifest {
                path: dir.join(MANIFEST),
                reason,
            });
        }
    };
    change(&mut manifest);
    write_manifest(dir, &manifest)
}

/// Reads the manifest of `dir`: `None` when there is none.
fn read_manifest(dir: &Path) -> Result<Option<Manifest>, String> {
    match fs::read(dir.join(MANIFEST)) {
        Ok(data) => {
            let text = String::from_utf8(data).map_err(|_| "not UTF-8 text".to_string())?;
            Manifest::parse(&text).map(Some)
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(format!("cannot read: {err}")),
    }
}

/// Writes the manifest of `dir` atomically (a temporary file renamed over it). The caller
/// holds the write lock.
fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), KeyStoreError> {
    let path = dir.join(MANIFEST);
    let temporary = dir.join(format!("{MANIFEST}.tmp"));
    let error = |err: io::Error| KeyStoreError::Manifest {
        path: path.clone(),
        reason: format!("cannot write: {err}"),
    };
    let mut file = fs::File::create(&temporary).map_err(error)?;
    io::Write::write_all(&mut file, manifest.render().as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    fs::rename(&temporary, &path).map_err(error)
}

/// Takes the cert-d write lock of `dir` (released when the file is dropped).
fn lock(dir: &Path) -> Result<fs::File, KeyStoreError> {
    let lock_error = |source| KeyStoreError::Lock {
        dir: dir.to_path_buf(),
        source,
    };
    // Implementation note: openpgp-cert-d 0.3 has no delete and no public lock. It locks by
    // flock(2) on `writelock` (fd-lock), which is what `File::lock` does on Unix, so this
    // excludes concurrent inserts by `sq` or `sealgate keys import`.
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(WRITELOCK))
        .map_err(lock_error)?;
    lock.lock().map_err(lock_error)?;
    Ok(lock)
}

/// What [`walk`] found: `(fingerprint, path)` of each entry, and the subdirectories it could
/// not list.
type Walk = (Vec<(String, PathBuf)>, Vec<Problem>);

/// The cert-d path of the entry `name` (a lower-case hex fingerprint).
fn entry_path(dir: &Path, name: &str) -> PathBuf {
    let split = name.len().min(2);
    dir.join(&name[..split]).join(&name[split..])
}

/// The certificate entries of the cert-d `dir` as `(fingerprint, path)`: files named by
/// a lower-case hex fingerprint (v4 or v6) in two-digit subdirectories, as cert-d stores
/// them; special and vendor files are not entries. A subdirectory that can't be listed is a
/// blind [`Problem`].
///
/// # Errors
/// `dir` itself can't be listed.
fn walk(dir: &Path) -> io::Result<Walk> {
    let lower_hex = |name: &str, lengths: &[usize]| {
        is_hex(name, lengths) && !name.chars().any(|c| c.is_ascii_uppercase())
    };
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let mut subdirs: Vec<_> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| lower_hex(n, &[2]))
                && entry.file_type().is_ok_and(|t| t.is_dir())
        })
        .collect();
    subdirs.sort_by_key(fs::DirEntry::file_name);
    for subdir in subdirs {
        let prefix = subdir.file_name().to_string_lossy().into_owned();
        let listing = match fs::read_dir(subdir.path()) {
            Ok(listing) => listing,
            Err(err) => {
                problems.push(Problem {
                    path: subdir.path(),
                    cause: format!("cannot list: {err}"),
                    blind: true,
                });
                continue;
            }
        };
        for entry in listing.filter_map(Result::ok) {
            let Some(rest) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if lower_hex(&rest, &[38, 62]) {
                files.push((format!("{prefix}{rest}"), entry.path()));
            }
        }
    }
    files.sort();
    Ok((files, problems))
}

/// A digest of the size, mode, owner and change time of every entry and of the manifest
/// (0 for an unreadable directory).
fn stat_digest(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut hasher = DefaultHasher::new();
    let Ok((files, _)) = walk(dir) else {
        return 0;
    };
    let manifest = dir.join(MANIFEST);
    for path in files.iter().map(|(_, p)| p).chain([&manifest]) {
        hasher.write(path.as_os_str().as_encoded_bytes());
        if let Ok(meta) = fs::metadata(path) {
            for n in [
                meta.size(),
                u64::from(meta.mode()),
                u64::from(meta.uid()),
                u64::from(meta.gid()),
            ] {
                hasher.write_u64(n);
            }
            hasher.write_i64(meta.ctime());
            hasher.write_i64(meta.ctime_nsec());
            hasher.write_i64(meta.mtime_nsec());
        }
    }
    hasher.finish()
}

/// Removes the certificate `fingerprint` from the cert-d `dir`, under the cert-d lock.
/// Returns `false` when it was not there.
///
/// # Errors
/// The lock can't be taken or the file can't be removed.
pub fn remove(dir: &Path, fingerprint: &Fingerprint) -> Result<bool, KeyStoreError> {
    let certd = open_certd(dir)?;
    let Ok(path) = certd.get_path_by_fingerprint(&fingerprint.to_hex()) else {
        // Not a v4 or v6 fingerprint: no file can have this name.
        return Ok(false);
    };
    if !path.exists() {
        return Ok(false);
    }
    let name = fingerprint.to_hex().to_lowercase();
    // The manifest first: a reload in between sees an unlisted file (fine), never a listed
    // one missing. update_manifest takes and releases the lock, so it is taken again below.
    if dir.join(MANIFEST).exists() {
        update_manifest(dir, |manifest| {
            manifest.fingerprints.remove(&name);
        })?;
    }
    let _lock = lock(dir)?;
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(KeyStoreError::Remove {
            fingerprint: fingerprint.to_hex(),
            source,
        }),
    }
}

/// `err` and its causes, joined by ": ", for logs and one-line messages.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cause = err.source();
    }
    text
}

fn open_certd(dir: &Path) -> Result<CertD, KeyStoreError> {
    // `with_base_dir` only records the path in openpgp-cert-d 0.3; map whatever a later
    // version might check to "cannot read".
    CertD::with_base_dir(dir).map_err(|err| KeyStoreError::Read {
        dir: dir.to_path_buf(),
        source: io::Error::other(err),
    })
}

/// Parses a stored file: one certificate whose fingerprint is the file name. Secret key
/// material, should someone have stored a key, is dropped.
fn parse_stored(name: &str, data: &[u8]) -> Result<Cert, String> {
    let cert = Cert::from_bytes(data).map_err(|err| err.to_string())?;
    let actual = cert.fingerprint().to_hex().to_lowercase();
    if actual != name {
        return Err(format!("file holds certificate {actual}"));
    }
    Ok(cert.strip_secret_key_material())
}

fn digest(data: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(data);
    hasher.finish()
}

/// Newest modification time among the cert-d's two-hex-digit subdirectories (what its tag is
/// computed from).
fn newest_subdir_mtime(dir: &Path) -> Option<SystemTime> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.as_encoded_bytes();
            name.len() == 2 && name.iter().all(|b| b.is_ascii_hexdigit())
        })
        .filter_map(|entry| entry.metadata().ok())
        .filter(fs::Metadata::is_dir)
        .filter_map(|meta| meta.modified().ok())
        .max()
}

#[cfg(test)]
mod tests {
    use sequoia_openpgp::cert::prelude::*;
    use sequoia_openpgp::packet::UserID;
    use sequoia_openpgp::packet::signature::SignatureBuilder;
    use sequoia_openpgp::types::SignatureType;

    use super::*;
    use crate::store::watch::RACY_MARGIN;
    use std::thread;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn builder(userids: &[&str]) -> CertBuilder<'static> {
        let mut builder = CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .add_storage_encryption_subkey();
        for uid in userids {
            builder = builder.add_userid(*uid);
        }
        builder
    }

    fn cert(userids: &[&str]) -> Cert {
        builder(userids).generate().expect("generate").0
    }

    fn created_ago(userids: &[&str], ago: Duration) -> Cert {
        builder(userids)
            .set_creation_time(SystemTime::now() - ago)
            .generate()
            .expect("generate")
            .0
    }

    fn expired(userids: &[&str]) -> Cert {
        builder(userids)
            .set_creation_time(SystemTime::now() - 730 * DAY)
            .set_validity_period(365 * DAY)
            .generate()
            .expect("generate")
            .0
    }

    fn revoked(userids: &[&str], ago: Duration) -> Cert {
        let (cert, revocation) = builder(userids)
            .set_creation_time(SystemTime::now() - ago)
            .generate()
            .expect("generate");
        cert.insert_packets(revocation).expect("revoke").0
    }

    /// Writes `cert` straight into the cert-d layout, as `sq` would.
    /// The store gets a manifest if it has none (planted entries are not listed in it: a
    /// store may grow behind `sealgate keys`' back, as `sq` would make it).
    fn write(dir: &Path, cert: &Cert) -> PathBuf {
        fs::create_dir_all(dir).expect("mkdir");
        if !dir.join(MANIFEST).exists() {
            fs::write(dir.join(MANIFEST), Manifest::new().render()).expect("manifest");
        }
        let name = cert.fingerprint().to_hex().to_lowercase();
        let path = dir.join(&name[..2]).join(&name[2..]);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, cert.to_vec().expect("serialize")).expect("write");
        path
    }

    fn usable_fingerprint(lookup: Lookup) -> Fingerprint {
        match lookup {
            Lookup::Usable(certs) => certs[0].fingerprint(),
            other => panic!("expected a usable certificate, got {other:?}"),
        }
    }

    #[test]
    fn normalisation_case_and_subaddress() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let alice = cert(&["Alice <Alice.Smith@Example.ORG>"]);
        let bare = cert(&["Bare.Address@Example.ORG"]);
        write(tmp.path(), &alice);
        write(tmp.path(), &bare);
        let store = KeyStore::open(tmp.path()).expect("open");
        assert_eq!(store.len(), 2);
        assert_eq!(
            usable_fingerprint(store.lookup("bare.address+x@example.org")),
            bare.fingerprint()
        );
        for address in [
            "alice.smith@example.org",
            "ALICE.SMITH@EXAMPLE.ORG",
            "Alice.Smith+lists@Example.org",
            "alice.smith+a+b@example.org",
        ] {
            assert_eq!(
                usable_fingerprint(store.lookup(address)),
                alice.fingerprint(),
                "{address}"
            );
        }
        for address in [
            "bob@example.org",
            "alice.smith@example.com",
            "+alice.smith@example.org",
            "alice",
            "",
        ] {
            assert!(matches!(store.lookup(address), Lookup::None), "{address}");
        }
    }

    #[test]
    fn exact_tagged_address_wins_over_base() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = cert(&["<carol@example.org>"]);
        let tagged = cert(&["<carol+work@example.org>"]);
        write(tmp.path(), &base);
        write(tmp.path(), &tagged);
        let store = KeyStore::open(tmp.path()).expect("open");
        assert_eq!(
            usable_fingerprint(store.lookup("carol+work@example.org")),
            tagged.fingerprint()
        );
        assert_eq!(
            usable_fingerprint(store.lookup("carol+home@example.org")),
            base.fingerprint()
        );
        assert_eq!(store.certificates_for("Carol+Home@example.org").len(), 1);
    }

    #[test]
    fn several_certificates_for_one_address() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let uid = ["<dan@example.org>"];
        let old_usable = created_ago(&uid, 20 * DAY);
        let new_usable = created_ago(&uid, 10 * DAY);
        let newest_revoked = revoked(&uid, DAY);
        for cert in [&old_usable, &new_usable, &newest_revoked] {
            write(tmp.path(), cert);
        }
        let store = KeyStore::open(tmp.path()).expect("open");
        assert_eq!(store.certificates_for("dan@example.org").len(), 3);
        // A usable one beats a newer unusable one; every usable one is used, newest first.
        match store.lookup("dan@example.org") {
            Lookup::Usable(certs) => assert_eq!(
                certs.iter().map(|c| c.fingerprint()).collect::<Vec<_>>(),
                vec![new_usable.fingerprint(), old_usable.fingerprint()]
            ),
            other => panic!("expected usable, got {other:?}"),
        }
    }

    #[test]
    fn none_usable_reports_the_newest() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let uid = ["<eve@example.org>"];
        let old_expired = expired(&uid); // created two years ago
        let new_revoked = revoked(&uid, DAY);
        write(tmp.path(), &old_expired);
        write(tmp.path(), &new_revoked);
        let store = KeyStore::open(tmp.path()).expect("open");
        match store.lookup("eve@example.org") {
            Lookup::Unusable {
                fingerprint,
                reason,
            } => {
                assert_eq!(fingerprint, new_revoked.fingerprint().to_hex());
                assert_eq!(reason, Unusable::Revoked);
            }
            other => panic!("expected unusable, got {other:?}"),
        }
        fs::remove_file(write(tmp.path(), &new_revoked)).expect("remove");
        store.reload(false).expect("reload");
        assert!(matches!(
            store.lookup("eve@example.org"),
            Lookup::Unusable {
                reason: Unusable::Expired,
                ..
            }
        ));
    }

    #[test]
    fn primary_only_certificate_is_indexed_as_unusable() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dave = CertBuilder::new()
            .add_userid("<dave@example.org>")
            .generate()
            .expect("generate")
            .0;
        write(tmp.path(), &dave);
        let store = KeyStore::open(tmp.path()).expect("open");
        assert!(matches!(
            store.lookup("dave@example.org"),
            Lookup::Unusable {
                reason: Unusable::NoEncryptionSubkey,
                ..
            }
        ));
    }

    #[test]
    fn only_self_signed_user_ids_are_indexed() {
        // A user ID without a self-signature (anyone can append one) must not route mail.
        let mallory = cert(&["<mallory@example.org>"]);
        let (with_foreign_uid, _) = mallory
            .insert_packets(UserID::from("<victim@example.org>"))
            .expect("insert");
        assert_eq!(with_foreign_uid.userids().count(), 2);
        assert_eq!(
            email_addresses(&with_foreign_uid),
            vec!["mallory@example.org".to_string()]
        );

        let tmp = tempfile::tempdir().expect("tempdir");
        write(tmp.path(), &with_foreign_uid);
        let store = KeyStore::open(tmp.path()).expect("open");
        assert!(matches!(store.lookup("victim@example.org"), Lookup::None));
        assert!(matches!(
            store.lookup("mallory@example.org"),
            Lookup::Usable(_)
        ));
    }

    #[test]
    fn junk_is_skipped_and_special_names_ignored() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let good = cert(&["<frank@example.org>"]);
        write(tmp.path(), &good);
        // A fingerprint-shaped file with garbage, one whose content is another certificate,
        // and cert-d special and vendor files.
        let junk = tmp.path().join("ab").join("c".repeat(38));
        fs::create_dir_all(junk.parent().expect("parent")).expect("mkdir");
        fs::write(&junk, b"not an OpenPGP certificate").expect("write");
        let other = cert(&["<grace@example.org>"]);
        let misplaced = tmp.path().join("cd").join("e".repeat(38));
        fs::create_dir_all(misplaced.parent().expect("parent")).expect("mkdir");
        fs::write(&misplaced, other.to_vec().expect("serialize")).expect("write");
        fs::write(tmp.path().join("trust-root"), b"junk").expect("write");
        fs::write(tmp.path().join("_sealgate_note"), b"junk").expect("write");
        fs::write(tmp.path().join("writelock"), b"").expect("write");

        let store = KeyStore::open(tmp.path()).expect("open");
        let stats = store.reload(true).expect("reload");
        assert_eq!(stats.certificates, 1);
        assert_eq!(stats.addresses, 1);
        assert_eq!(stats.skipped, 2);
        assert_eq!(stats.problems, 2);
        assert!(matches!(
            store.lookup("frank@example.org"),
            Lookup::Usable(_)
        ));
        // Whose the bad entries are nobody knows: everyone without a key is unknown.
        match store.lookup("grace@example.org") {
            Lookup::Unknown { reason } => assert!(reason.contains(&"c".repeat(38)), "{reason}"),
            other => panic!("expected unknown, got {other:?}"),
        }
    }

    #[test]
    fn reload_picks_up_new_and_removed_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("keys");
        init(&dir).expect("init");
        let store = KeyStore::open(&dir).expect("open");
        assert!(store.is_empty());
        assert!(store.problems().is_empty());
        let before = store.loaded_at();

        let heidi = cert(&["<heidi@example.org>"]);
        let path = write(&dir, &heidi);
        let stats = store.reload(false).expect("reload");
        assert_eq!(
            stats,
            ReloadStats {
                certificates: 1,
                addresses: 1,
                skipped: 0,
                problems: 0,
                changed: true
            }
        );
        assert!(matches!(
            store.lookup("heidi@example.org"),
            Lookup::Usable(_)
        ));
        assert!(store.loaded_at() >= before);

        let unchanged = store.reload(false).expect("reload");
        assert!(!unchanged.changed);
        assert_eq!(unchanged.certificates, 1);

        fs::remove_file(path).expect("remove");
        let stats = store.reload(false).expect("reload");
        assert!(stats.changed);
        assert_eq!(stats.certificates, 0);
        assert!(matches!(store.lookup("heidi@example.org"), Lookup::None));
        assert!(!store.reload(false).expect("reload").changed);
    }

    #[test]
    fn settled_tag_skips_the_directory_walk() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ivan = cert(&["<ivan@example.org>"]);
        let path = write(tmp.path(), &ivan);
        // Age the directory past RACY_MARGIN, so the tag is trusted.
        let old = SystemTime::now() - 10 * RACY_MARGIN;
        let subdir = fs::File::open(path.parent().expect("parent")).expect("open dir");
        subdir.set_modified(old).expect("set mtime");
        let store = KeyStore::open(tmp.path()).expect("open");
        assert!(store.current().tag.is_some());
        let first = Arc::clone(&store.current().certs.values().next().expect("entry").cert);

        let unchanged = store.reload(false).expect("reload");
        assert!(!unchanged.changed);
        // Same parsed certificate, not a re-read.
        let again = Arc::clone(&store.current().certs.values().next().expect("entry").cert);
        assert!(Arc::ptr_eq(&first, &again));

        // A change moves the mtime and so the tag.
        fs::remove_file(&path).expect("remove");
        let stats = store.reload(false).expect("reload");
        assert!(stats.changed);
        assert!(store.is_empty());
    }

    #[test]
    fn reload_error_keeps_the_index() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("keys");
        let judy = cert(&["<judy@example.org>"]);
        write(&dir, &judy);
        let store = KeyStore::open(&dir).expect("open");
        fs::remove_dir_all(&dir).expect("rm");
        let err = store.reload(true).expect_err("directory gone");
        assert!(matches!(err, KeyStoreError::Read { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("cannot read key store directory")
        );
        assert!(matches!(
            store.lookup("judy@example.org"),
            Lookup::Usable(_)
        ));
        // Nothing else can be answered.
        assert!(matches!(
            store.lookup("kim@example.org"),
            Lookup::Unknown { .. }
        ));
        assert!(store.problems()[0].blind);
    }

    #[test]
    fn a_missing_or_unreadable_directory_is_unknown() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("file");
        fs::write(&file, b"").expect("write");
        for dir in [tmp.path().join("absent"), file.join("keys")] {
            let store = KeyStore::open(&dir).expect("open");
            assert!(!dir.exists(), "open must not create {}", dir.display());
            match store.lookup("bob@example.org") {
                Lookup::Unknown { reason } => {
                    assert!(reason.contains(&*dir.display().to_string()), "{reason}");
                }
                other => panic!("expected unknown, got {other:?}"),
            }
        }
    }

    #[test]
    fn manifest_round_trip_and_refusals() {
        let mut manifest = Manifest::new();
        assert_eq!(manifest.id.len(), 32);
        assert_ne!(manifest.id, Manifest::new().id);
        manifest.fingerprints.insert("ab".repeat(20));
        let text = manifest.render();
        assert_eq!(Manifest::parse(&text), Ok(manifest.clone()));
        for bad in [
            "",
            "id 00112233445566778899aabbccddeeff\n",
            "sealgate-keystore 1\n",
            "sealgate-keystore 1\nid 0011\n",
            "sealgate-keystore 1\nid 00112233445566778899aabbccddeeff\ncert 1234\n",
            "sealgate-keystore 1\nid 00112233445566778899aabbccddeeff\nrm -rf\n",
        ] {
            assert!(Manifest::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn no_manifest_is_unknown_until_init_or_reindex() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = KeyStore::open(tmp.path()).expect("open");
        assert!(matches!(
            store.lookup("x@example.org"),
            Lookup::Unknown { .. }
        ));
        let id = init(tmp.path()).expect("init").id;
        assert_eq!(
            init(tmp.path()).expect("again").id,
            id,
            "init keeps the manifest"
        );
        store.reload(false).expect("reload");
        assert!(store.problems().is_empty(), "{:?}", store.problems());
        assert!(matches!(store.lookup("x@example.org"), Lookup::None));
        assert_eq!(store.manifest_id(), Some(id.clone()));

        // Certificates without a manifest (a store written by sq, or an old sealgate):
        // init refuses, reindex accepts them.
        let other = tempfile::tempdir().expect("tempdir");
        let olga = cert(&["<olga@example.org>"]);
        let name = olga.fingerprint().to_hex().to_lowercase();
        let path = entry_path(other.path(), &name);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, olga.to_vec().expect("serialize")).expect("write");
        let err = init(other.path()).expect_err("refused");
        assert!(err.to_string().contains("reindex"), "{err}");
        let store = KeyStore::open(other.path()).expect("open");
        assert!(matches!(
            store.lookup("x@example.org"),
            Lookup::Unknown { .. }
        ));
        assert!(matches!(
            store.lookup("olga@example.org"),
            Lookup::Usable(_)
        ));
        assert_eq!(
            reindex(other.path()).expect("reindex").fingerprints,
            BTreeSet::from([name])
        );
        store.reload(false).expect("reload");
        assert!(matches!(store.lookup("x@example.org"), Lookup::None));
    }

    #[test]
    fn a_bad_entry_keeps_its_last_good_copy() {
        let tmp = tempfile::tempdir().expect("tempdir");
        init(tmp.path()).expect("init");
        let pat = cert(&["<pat@example.org>"]);
        let stored = insert(tmp.path(), &pat).expect("insert");
        let path = entry_path(tmp.path(), &stored.fingerprint().to_hex().to_lowercase());
        let store = KeyStore::open(tmp.path()).expect("open");
        assert!(store.problems().is_empty());

        // Truncated in place: the cert-d tag (directory mtimes) does not move.
        let data = fs::read(&path).expect("read");
        fs::write(&path, &data[..data.len() / 2]).expect("truncate");
        let stats = store.reload(false).expect("reload");
        assert_eq!((stats.skipped, stats.problems), (1, 1));
        let problems = store.problems();
        assert_eq!(problems[0].path, path);
        assert!(!problems[0].blind);
        assert_eq!(
            usable_fingerprint(store.lookup("pat@example.org")),
            pat.fingerprint()
        );
        // The entry is known to be pat's: others are still answered.
        assert!(matches!(store.lookup("quinn@example.org"), Lookup::None));
        let errors = store.reload_errors();
        assert!(errors >= 1);

        // A fresh start cannot know whose it is.
        let fresh = KeyStore::open(tmp.path()).expect("open");
        assert!(matches!(
            fresh.lookup("pat@example.org"),
            Lookup::Unknown { .. }
        ));
        assert!(matches!(
            fresh.lookup("quinn@example.org"),
            Lookup::Unknown { .. }
        ));

        // Repaired: healthy again.
        fs::write(&path, &data).expect("repair");
        store.reload(false).expect("reload");
        assert!(store.problems().is_empty());
        fresh.reload(false).expect("reload");
        assert!(matches!(fresh.lookup("quinn@example.org"), Lookup::None));
    }

    #[test]
    fn a_store_that_shrinks_is_noticed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("keys");
        init(&dir).expect("init");
        let rae = insert(&dir, &cert(&["<rae@example.org>"])).expect("insert");
        let name = rae.fingerprint().to_hex().to_lowercase();
        let listed = read_manifest(&dir).expect("read").expect("present");
        assert!(listed.fingerprints.contains(&name));
        let store = KeyStore::open(&dir).expect("open");

        // The file deleted behind sealgate's back: still encrypted to, store degraded.
        fs::remove_file(entry_path(&dir, &name)).expect("rm");
        store.reload(false).expect("reload");
        assert!(matches!(store.lookup("rae@example.org"), Lookup::Usable(_)));
        assert!(matches!(store.lookup("sam@example.org"), Lookup::None));
        assert_eq!(store.problems().len(), 1);
        let fresh = KeyStore::open(&dir).expect("open");
        assert!(matches!(
            fresh.lookup("rae@example.org"),
            Lookup::Unknown { .. }
        ));

        // The directory replaced by an empty one (a volume that did not mount).
        fs::remove_dir_all(&dir).expect("rm");
        fs::create_dir(&dir).expect("mkdir");
        store.reload(false).expect("reload");
        assert!(matches!(
            store.lookup("sam@example.org"),
            Lookup::Unknown { .. }
        ));
        assert!(matches!(store.lookup("rae@example.org"), Lookup::Usable(_)));
    }

    #[test]
    fn remove_updates_the_manifest() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tia = insert(tmp.path(), &cert(&["<tia@example.org>"])).expect("insert");
        let store = KeyStore::open(tmp.path()).expect("open");
        assert!(store.problems().is_empty(), "{:?}", store.problems());
        assert!(remove(tmp.path(), &tia.fingerprint()).expect("remove"));
        store.reload(false).expect("reload");
        assert!(store.problems().is_empty(), "{:?}", store.problems());
        assert!(matches!(store.lookup("tia@example.org"), Lookup::None));
    }

    #[test]
    fn insert_strips_secrets_and_third_party_certifications_and_merges() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (kate, _) = builder(&["<kate@example.org>"])
            .generate()
            .expect("generate");
        assert!(kate.is_tsk());

        // A third party (Leo) certifies Kate's user ID.
        let (leo, _) = CertBuilder::general_purpose(Some("<leo@example.org>"))
            .generate()
            .expect("generate");
        let mut leo_signer = leo
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .expect("secret")
            .into_keypair()
            .expect("keypair");
        let uid = kate.userids().next().expect("uid").userid().clone();
        let certification = uid
            .certify(
                &mut leo_signer,
                &kate,
                SignatureType::GenericCertification,
                None,
                None,
            )
            .expect("certify");
        let (certified, _) = kate
            .clone()
            .insert_packets(vec![Packet::from(uid), certification.into()])
            .expect("insert");
        let third_party = |c: &Cert| {
            c.userids()
                .map(|u| u.bundle().certifications().count())
                .sum::<usize>()
        };
        assert_eq!(third_party(&certified), 1);

        let stored = insert(tmp.path(), &certified).expect("insert");
        assert!(!stored.is_tsk());
        assert_eq!(third_party(&stored), 0);
        assert_eq!(stored.userids().count(), 1);
        let on_disk = super::stored(tmp.path(), &kate.fingerprint())
            .expect("read")
            .expect("present");
        assert!(!on_disk.is_tsk());
        assert_eq!(third_party(&on_disk), 0);

        // A second import with a new self-signed user ID merges with the stored copy.
        let mut kate_signer = kate
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .expect("secret")
            .into_keypair()
            .expect("keypair");
        let work = UserID::from("<kate@work.example>");
        let binding = work
            .bind(
                &mut kate_signer,
                &kate,
                SignatureBuilder::new(SignatureType::PositiveCertification),
            )
            .expect("bind");
        let (update, _) = kate
            .strip_secret_key_material()
            .insert_packets(vec![Packet::from(work), binding.into()])
            .expect("insert");
        let merged = insert(tmp.path(), &update).expect("insert");
        assert_eq!(
            email_addresses(&merged),
            vec![
                "kate@example.org".to_string(),
                "kate@work.example".to_string()
            ]
        );
        let store = KeyStore::open(tmp.path()).expect("open");
        assert!(matches!(
            store.lookup("kate@work.example"),
            Lookup::Usable(_)
        ));
    }

    #[test]
    fn remove_under_the_lock() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let liam = cert(&["<liam@example.org>"]);
        insert(tmp.path(), &liam).expect("insert");
        assert!(remove(tmp.path(), &liam.fingerprint()).expect("remove"));
        assert!(!remove(tmp.path(), &liam.fingerprint()).expect("remove again"));
        assert!(
            super::stored(tmp.path(), &liam.fingerprint())
                .expect("read")
                .is_none()
        );
        let missing_dir = tmp.path().join("nothing-here");
        assert!(!remove(&missing_dir, &liam.fingerprint()).expect("remove"));
    }

    #[test]
    fn watch_reloads_in_the_background() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(KeyStore::open(tmp.path()).expect("open"));
        watch::watch(store.clone(), watch::MIN_WATCH_INTERVAL);
        let mia = cert(&["<mia@example.org>"]);
        write(tmp.path(), &mia);
        // Poll for the condition with a deadline (no sleep-as-synchronisation).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(store.lookup("mia@example.org"), Lookup::Usable(_)) {
            assert!(
                Instant::now() < deadline,
                "watcher did not pick up the new file"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn verdict_is_cached_and_refreshed() {
        let entry = Entry::new(cert(&["<nina@example.org>"]), 0);
        assert_eq!(entry.verdict(), Ok(()));
        let cached = entry.verdict.lock().expect("lock").clone().expect("cached");
        // Pretend the verdict is older than the TTL: it is recomputed.
        *entry.verdict.lock().expect("lock") = Some(Verdict {
            result: Err(Unusable::Expired),
            checked: cached.checked - 2 * VERDICT_TTL,
            until: None,
        });
        assert_eq!(entry.verdict(), Ok(()));
        // A fresh cached verdict is reused as is.
        *entry.verdict.lock().expect("lock") = Some(Verdict {
            result: Err(Unusable::Revoked),
            checked: Instant::now(),
            until: None,
        });
        assert_eq!(entry.verdict(), Err(Unusable::Revoked));
        // One past its `until` (the primary key's expiry) is not.
        *entry.verdict.lock().expect("lock") = Some(Verdict {
            result: Err(Unusable::Revoked),
            checked: Instant::now(),
            until: Some(SystemTime::now() - DAY),
        });
        assert_eq!(entry.verdict(), Ok(()));
    }

    #[test]
    fn keystore_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<KeyStore>();
        assert_send_sync::<Lookup>();
    }
}
