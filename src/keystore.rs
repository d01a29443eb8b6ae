//! The key store: OpenPGP certificates in a cert-d directory (as `sq` uses), indexed in memory
//! by e-mail address so the encryption stage can ask "which key for this recipient?" without
//! touching the disk.
//!
//! Reading: [`KeyStore`] loads every certificate once, keeps the parsed `Arc<Cert>`s and an
//! address index, and swaps in a fresh index when the directory's cert-d tag changes
//! ([`KeyStore::reload`], [`KeyStore::watch`]). Writing ([`insert`], [`remove`]) goes through
//! the cert-d lock, so `sealgate keys` and `sq` can change the directory while sealgate runs.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::hash::{DefaultHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use openpgp_cert_d::{CertD, MergeResult, Tag};
use sequoia_openpgp::packet::Signature;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::serialize::MarshalInto;
use sequoia_openpgp::{Cert, Fingerprint, Packet};
use tracing::{error, info, warn};

use crate::address;
use crate::openpgp::{self, Unusable};

/// How long a usability verdict is reused before the certificate is checked again. Expiry is
/// time-dependent, so a "usable" verdict is also dropped at the first expiry among the primary
/// key and the encryption keys; that is what makes a lookup at DATA time judge anew.
pub const VERDICT_TTL: Duration = Duration::from_secs(60);

/// A directory modified less than this before its tag was read may change again within the
/// same (coarse) file-system timestamp without changing the tag; such an index is re-read on
/// the next [`KeyStore::reload`] even if the tag looks unchanged.
pub const RACY_MARGIN: Duration = Duration::from_secs(2);

/// Shortest interval [`KeyStore::watch`] polls at; shorter requests are raised to this.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Name of the cert-d lock file (draft-nwjw-openpgp-cert-d, "writelock").
const WRITELOCK: &str = "writelock";

/// What the key store knows about an address.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// No certificate for this address.
    None,
    /// A usable certificate: encrypt to it.
    Usable(Arc<Cert>),
    /// A certificate exists but can't be used now (the policy decides what happens).
    Unusable {
        /// Fingerprint (upper-case hex) of the newest certificate for the address.
        fingerprint: String,
        /// Why it cannot be used.
        reason: Unusable,
    },
}

/// What a [`KeyStore::reload`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadStats {
    /// Certificates in the index.
    pub certificates: usize,
    /// Distinct (canonical, [`crate::address`]) addresses in the index.
    pub addresses: usize,
    /// Files that could not be read or parsed (logged, left out of the index).
    pub skipped: usize,
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
    /// (never loaded, or loaded within [`RACY_MARGIN`] of a modification).
    tag: Option<Tag>,
    /// Certificates by lower-case fingerprint (the cert-d file name).
    certs: BTreeMap<String, Arc<Entry>>,
    /// Normalised address → certificates with a self-signed user ID for it, by fingerprint.
    addresses: HashMap<String, Vec<Arc<Entry>>>,
    skipped: usize,
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
    fn build(tag: Option<Tag>, certs: BTreeMap<String, Arc<Entry>>, skipped: usize) -> Index {
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
            skipped,
        }
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
            changed,
        }
    }
}

impl KeyStore {
    /// Opens the cert-d directory `dir` (creating it if missing) and loads the index.
    ///
    /// # Errors
    /// The directory can't be created or read. Files that fail to parse are skipped (logged),
    /// never an error.
    pub fn open(dir: &Path) -> Result<KeyStore, KeyStoreError> {
        fs::create_dir_all(dir).map_err(|source| KeyStoreError::Create {
            dir: dir.to_path_buf(),
            source,
        })?;
        let store = KeyStore {
            dir: dir.to_path_buf(),
            certd: open_certd(dir)?,
            index: RwLock::new(Arc::new(Index::default())),
            reloading: Mutex::new(()),
            loaded_at: Mutex::new(SystemTime::now()),
            reload_errors: AtomicU64::new(0),
        };
        store.reload(true)?;
        Ok(store)
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What we know about `address`, from memory only (never touches the disk). The address
    /// is lower-cased; when it has no entry, `user+tag@domain` falls back to `user@domain`.
    /// Among several certificates the newest usable one wins; if none is usable, the newest
    /// one's reason is reported.
    pub fn lookup(&self, address: &str) -> Lookup {
        let index = self.current();
        let mut usable: Option<&Entry> = None;
        let mut unusable: Option<(&Entry, Unusable)> = None;
        for entry in index.candidates(address) {
            match entry.verdict() {
                Ok(()) => {
                    if usable.is_none_or(|best| entry.created > best.created) {
                        usable = Some(entry);
                    }
                }
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
        match (usable, unusable) {
            (Some(entry), _) => Lookup::Usable(Arc::clone(&entry.cert)),
            (None, Some((entry, reason))) => Lookup::Unusable {
                fingerprint: entry.cert.fingerprint().to_hex(),
                reason,
            },
            (None, None) => Lookup::None,
        }
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

    /// Number of [`KeyStore::reload`] calls that failed since the store was opened.
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
        if result.is_err() {
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
        if !force && old.tag == Some(tag) {
            self.touch();
            return Ok(old.stats(false));
        }

        // The cert-d iterator silently yields nothing for a missing directory; we want an
        // error (and to keep the old index) instead.
        fs::read_dir(&self.dir).map_err(|source| KeyStoreError::Read {
            dir: self.dir.clone(),
            source,
        })?;
        let mut certs = BTreeMap::new();
        let mut skipped = 0;
        for item in self.certd.iter() {
            let (name, _tag, data) = match item {
                Ok(item) => item,
                Err(err) => {
                    warn!(dir = %self.dir.display(), err = %error_chain(&err),
                          "skipping unreadable key store entry");
                    skipped += 1;
                    continue;
                }
            };
            let digest = digest(&data);
            if let Some(entry) = old.certs.get(&name)
                && entry.digest == digest
            {
                certs.insert(name, Arc::clone(entry));
                continue;
            }
            match parse_stored(&name, &data) {
                Ok(cert) => {
                    certs.insert(name, Arc::new(Entry::new(cert, digest)));
                }
                Err(why) => {
                    warn!(dir = %self.dir.display(), file = %name, %why,
                          "skipping unparseable certificate");
                    skipped += 1;
                }
            }
        }

        let changed = old.certs.len() != certs.len()
            || old
                .certs
                .iter()
                .zip(&certs)
                .any(|((a, ea), (b, eb))| a != b || ea.digest != eb.digest);
        // Implementation note: cert-d tags are built from directory mtimes, and file-system
        // timestamps are coarse (one clock tick, up to a second on some file systems). If a
        // directory was modified within RACY_MARGIN before we sampled the clock, a second
        // change in the same tick would leave the tag as it is, so we don't trust this tag
        // (as git does with its "racily clean" index entries).
        let racy =
            newest_subdir_mtime(&self.dir).is_some_and(|newest| newest + RACY_MARGIN > sampled);
        let index = Index::build((!racy).then_some(tag), certs, skipped);
        let stats = index.stats(changed);
        *self.index.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(index);
        self.touch();
        Ok(stats)
    }

    /// Starts a background thread that calls [`KeyStore::reload`]`(false)` every `interval`
    /// (at least [`MIN_WATCH_INTERVAL`]), logging changes and errors. Returns at once; the
    /// thread ends when the last `Arc` to the store is dropped.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let interval = interval.max(MIN_WATCH_INTERVAL);
        let store: Weak<KeyStore> = Arc::downgrade(self);
        let dir = self.dir.clone();
        let spawned = thread::Builder::new()
            .name("sealgate-keystore".into())
            .spawn(move || {
                loop {
                    thread::sleep(interval);
                    let Some(store) = store.upgrade() else {
                        break;
                    };
                    match store.reload(false) {
                        Ok(stats) if stats.changed => info!(
                            dir = %store.dir.display(),
                            certificates = stats.certificates,
                            addresses = stats.addresses,
                            skipped = stats.skipped,
                            "key store reloaded"
                        ),
                        Ok(_) => {}
                        Err(err) => warn!(
                            dir = %store.dir.display(),
                            err = %error_chain(&err),
                            "key store reload failed; keeping the previous index"
                        ),
                    }
                }
            });
        if let Err(err) = spawned {
            error!(dir = %dir.display(), %err, "cannot start the key store watcher");
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
    // We asked for the written data (`return_inserted`), so it is there.
    Cert::from_bytes(written.as_deref().unwrap_or_default())
        .map_err(|err| KeyStoreError::certificate(&fingerprint, err))
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
    fn write(dir: &Path, cert: &Cert) -> PathBuf {
        let name = cert.fingerprint().to_hex().to_lowercase();
        let path = dir.join(&name[..2]).join(&name[2..]);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, cert.to_vec().expect("serialize")).expect("write");
        path
    }

    fn usable_fingerprint(lookup: Lookup) -> Fingerprint {
        match lookup {
            Lookup::Usable(cert) => cert.fingerprint(),
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
        // A usable one beats a newer unusable one; among usable ones the newest wins.
        assert_eq!(
            usable_fingerprint(store.lookup("dan@example.org")),
            new_usable.fingerprint()
        );
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
        assert!(matches!(
            store.lookup("frank@example.org"),
            Lookup::Usable(_)
        ));
        assert!(matches!(store.lookup("grace@example.org"), Lookup::None));
    }

    #[test]
    fn reload_picks_up_new_and_removed_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("keys"); // created by open
        let store = KeyStore::open(&dir).expect("open");
        assert!(store.is_empty());
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
    }

    #[test]
    fn open_fails_when_the_directory_cannot_be_created() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("file");
        fs::write(&file, b"").expect("write");
        let err = KeyStore::open(&file.join("keys")).expect_err("not a directory");
        assert!(matches!(err, KeyStoreError::Create { .. }), "{err:?}");
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
        store.watch(MIN_WATCH_INTERVAL);
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
