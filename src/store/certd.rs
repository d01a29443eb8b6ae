//! The cert-d directory on disk (as `sq` uses it): reading its entries for the index
//! ([`crate::store::keys`]) and the writes `sealgate keys` makes ([`insert`], [`remove`],
//! [`init`], [`reindex`]), all under the cert-d lock, so `sealgate keys` and `sq` can change
//! the directory while sealgate runs.

use std::fs::{self, OpenOptions};
use std::hash::{DefaultHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use openpgp_cert_d::{CertD, MergeResult};
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::serialize::MarshalInto;
use sequoia_openpgp::{Cert, Fingerprint};
use tracing::warn;

use crate::error::BoxError;
use crate::openpgp::strip_third_party_certifications;
use crate::store::keys::Problem;
use crate::store::manifest::{MANIFEST, Manifest, is_hex};

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
        source: BoxError,
    },
}

impl KeyStoreError {
    pub(crate) fn certificate(
        fingerprint: &Fingerprint,
        err: sequoia_openpgp::anyhow::Error,
    ) -> Self {
        KeyStoreError::Certificate {
            fingerprint: fingerprint.to_hex(),
            source: err.into(),
        }
    }
}

/// Name of the cert-d lock file (draft-nwjw-openpgp-cert-d, "writelock").
const WRITELOCK: &str = "writelock";

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
pub(crate) fn read_manifest(dir: &Path) -> Result<Option<Manifest>, String> {
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
pub(crate) type Walk = (Vec<(String, PathBuf)>, Vec<Problem>);

/// The cert-d path of the entry `name` (a lower-case hex fingerprint).
pub(crate) fn entry_path(dir: &Path, name: &str) -> PathBuf {
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
pub(crate) fn walk(dir: &Path) -> io::Result<Walk> {
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
pub(crate) fn stat_digest(dir: &Path) -> u64 {
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

pub(crate) fn open_certd(dir: &Path) -> Result<CertD, KeyStoreError> {
    // `with_base_dir` only records the path in openpgp-cert-d 0.3; map whatever a later
    // version might check to "cannot read".
    CertD::with_base_dir(dir).map_err(|err| KeyStoreError::Read {
        dir: dir.to_path_buf(),
        source: io::Error::other(err),
    })
}

/// Parses a stored file: one certificate whose fingerprint is the file name. Secret key
/// material, should someone have stored a key, is dropped.
pub(crate) fn parse_stored(name: &str, data: &[u8]) -> Result<Cert, String> {
    let cert = Cert::from_bytes(data).map_err(|err| err.to_string())?;
    let actual = cert.fingerprint().to_hex().to_lowercase();
    if actual != name {
        return Err(format!("file holds certificate {actual}"));
    }
    Ok(cert.strip_secret_key_material())
}

pub(crate) fn digest(data: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(data);
    hasher.finish()
}

/// Newest modification time among the cert-d's two-hex-digit subdirectories (what its tag is
/// computed from).
pub(crate) fn newest_subdir_mtime(dir: &Path) -> Option<SystemTime> {
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
