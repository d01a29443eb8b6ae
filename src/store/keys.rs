//! The key store: OpenPGP certificates in a cert-d directory (as `sq` uses), indexed in memory
//! by e-mail address so the encryption stage can ask "which key for this recipient?" without
//! touching the disk.
//!
//! [`KeyStore`] loads every certificate once, keeps the parsed `Arc<Cert>`s and an address
//! index, and swaps in a fresh index when the directory's cert-d tag changes
//! ([`KeyStore::reload`], polled by [`crate::store::watch`]). Reading the directory and the
//! writes `sealgate keys` makes are [`crate::store::certd`]'s.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use openpgp_cert_d::{CertD, Tag};
use sequoia_openpgp::Cert;
use tracing::{info, warn};

use crate::error::error_chain;
use crate::message::address;
use crate::openpgp::{self, Unusable};
use crate::store::certd::{
    KeyStoreError, digest, entry_path, newest_subdir_mtime, open_certd, parse_stored,
    read_manifest, stat_digest, walk,
};
use crate::store::manifest::MANIFEST;
use crate::store::watch::{self, Reload, Trigger};
use crate::store::{KeyLookup, Lookup};

/// How long a usability verdict is reused before the certificate is checked again. Expiry is
/// time-dependent, so a "usable" verdict is also dropped at the first expiry among the primary
/// key and the encryption keys; that is what makes a lookup at DATA time judge anew.
pub const VERDICT_TTL: Duration = Duration::from_secs(60);

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
            for address in openpgp::email_addresses(&entry.cert) {
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

#[cfg(test)]
mod tests;
