//! The secure addresses: which recipients require TLS (`SEALGATE_SECURE_DOMAINS`, the
//! `SEALGATE_SECURE_MAILBOXES` file, kept in memory and reloaded). The TLS facts and the verdict
//! on them are [`crate::message::tls`]'s.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use tracing::{info, warn};

use crate::error::error_chain;
use crate::message::address::{self, Address};
use crate::store::watch::{self, Reload, Trigger};
use crate::store::{SecureLookup, TlsRule};

/// Why the secure addresses could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The secure mailbox file could not be read.
    #[error("cannot read secure mailbox file {}", path.display())]
    Read {
        /// The file (`SEALGATE_SECURE_MAILBOXES`).
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The secure addresses: whole domains (`SEALGATE_SECURE_DOMAINS`, each a secure twin of a
/// real domain or itself) and single mailboxes listed in a file (`SEALGATE_SECURE_MAILBOXES`)
/// that [`SecureAddresses::reload`] re-reads when it changes. Lookups never touch the disk.
#[derive(Debug)]
pub struct SecureAddresses {
    /// Secure domain (canonical: A-labels, lower-case) → the real domain its addresses are delivered to.
    domains: HashMap<String, String>,
    /// The mailbox file, if any.
    file: Option<PathBuf>,
    /// The file's addresses as last read; replaced whole on reload.
    mailboxes: RwLock<Arc<Mailboxes>>,
    /// Held for the whole of a reload, so two reloads don't interleave.
    reloading: Mutex<()>,
}

/// One reading of the mailbox file.
#[derive(Debug, Default)]
struct Mailboxes {
    /// The file's state when it was read; `None` when never read or read too soon after a
    /// change to trust (see [`watch::RACY_MARGIN`]).
    stamp: Option<Stamp>,
    /// Canonical addresses ([`crate::message::address`]).
    addresses: HashSet<String>,
}

/// What tells us the file changed: a rewrite in place changes the time or size, a
/// write-and-rename (editors, `install`) the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: SystemTime,
    len: u64,
    dev: u64,
    inode: u64,
}

impl SecureAddresses {
    /// The secure addresses: `domains` as (secure, real) pairs, `(d, d)` for a domain that is
    /// TLS-only itself; `mailboxes`, a file of single addresses, one per line (blank lines and
    /// `#` comments ignored, case-insensitive), read now.
    ///
    /// # Errors
    /// The mailbox file is given but cannot be read.
    pub fn new(
        domains: Vec<(String, String)>,
        mailboxes: Option<PathBuf>,
    ) -> Result<SecureAddresses, PolicyError> {
        let secure = SecureAddresses {
            domains: domains
                .into_iter()
                .map(|(secure, real)| (domain_key(&secure), real.to_lowercase()))
                .collect(),
            file: mailboxes,
            mailboxes: RwLock::default(),
            reloading: Mutex::default(),
        };
        secure.reload(true)?;
        Ok(secure)
    }

    /// True when nothing is configured: no secure domain and no mailbox file.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && self.file.is_none()
    }

    /// Re-reads the mailbox file if it changed since the last reading (or `force`). Blocking
    /// I/O: call it from `spawn_blocking` or a plain thread.
    ///
    /// Returns whether the set of listed addresses changed.
    ///
    /// # Errors
    /// The file cannot be read; the previous list stays in place (fail closed: an address
    /// stays TLS-only until a good reading says otherwise).
    pub fn reload(&self, force: bool) -> Result<bool, PolicyError> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        let _reloading = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = self.current();
        let read_error = |source| PolicyError::Read {
            path: path.clone(),
            source,
        };
        // Read the clock before the stamp: a change after this instant either changes the
        // stamp or falls within RACY_MARGIN of it.
        let sampled = SystemTime::now();
        let metadata = fs::metadata(path).map_err(read_error)?;
        let stamp = Stamp::of(&metadata);
        if !force && old.stamp == Some(stamp) {
            return Ok(false);
        }
        let text = fs::read_to_string(path).map_err(read_error)?;
        let addresses = parse_mailbox_file(path, &text);
        let changed = addresses != old.addresses;
        let racy = watch::racy(stamp.modified, sampled);
        let fresh = Mailboxes {
            stamp: (!racy).then_some(stamp),
            addresses,
        };
        *self
            .mailboxes
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(changed)
    }

    /// `None`: `address` is not a secure address. `Some(mailbox)`: it is, and its mail goes to
    /// `mailbox`: `user@secure.example.org` → `user@example.org` for a secure twin (the local
    /// part as given, a `+tag` included: the next hop deals with it), the address itself
    /// (domain lower-cased) for a bare secure domain or a listed mailbox. In memory only.
    ///
    /// Addresses compare in their canonical form ([`crate::message::address`]): `"boss"@`, `Boss@` and
    /// `boss@` are one mailbox, `bücher.example` is `xn--bcher-kva.example`, and
    /// `user+tag@domain` also matches a listed `user@domain` (it reaches the same mailbox).
    pub fn classify(&self, address: &str) -> Option<String> {
        let canonical = Address::parse(address).ok()?;
        let domain = canonical.domain()?;
        // The local part as given, for the mailbox the next hop gets.
        let given = address::path_mailbox(address);
        let local = given.rsplit_once('@').map_or(given, |(local, _)| local);
        if let Some(real) = self.domains.get(domain) {
            return Some(format!("{local}@{real}"));
        }
        let listed = self.current();
        let key = canonical.to_string();
        let hit = listed.addresses.contains(&key)
            || address::without_subaddress(&key)
                .is_some_and(|base| listed.addresses.contains(&base));
        hit.then(|| as_addressed(address))
    }

    fn current(&self) -> Arc<Mailboxes> {
        Arc::clone(
            &self
                .mailboxes
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

impl Reload for SecureAddresses {
    fn what(&self) -> &'static str {
        "secure mailbox"
    }

    fn thread_name(&self) -> &'static str {
        "sealgate-secure"
    }

    fn watched(&self) -> bool {
        self.file.is_some()
    }

    fn reload_logged(&self, trigger: Trigger) {
        let file = self.file.as_deref().unwrap_or(Path::new("")).display();
        match self.reload(trigger == Trigger::Signal) {
            Ok(changed) if trigger == Trigger::Signal => info!(
                %file,
                changed,
                mailboxes = self.current().addresses.len(),
                "secure mailboxes reloaded (SIGHUP)"
            ),
            Ok(true) => info!(
                %file,
                mailboxes = self.current().addresses.len(),
                "secure mailbox list reloaded"
            ),
            Ok(false) => {}
            Err(err) => warn!(
                %file,
                err = %error_chain(&err),
                "secure mailbox list reload failed; keeping the previous list"
            ),
        }
    }
}

impl SecureLookup for SecureAddresses {
    /// See [`SecureAddresses::classify`]: everything is in memory, so no prefetch is needed,
    /// and the answer is never unknown.
    fn tls_rule(&self, address: &str) -> TlsRule {
        match SecureAddresses::classify(self, address) {
            Some(mailbox) => TlsRule::Required { mailbox },
            None => TlsRule::Optional,
        }
    }
}

/// The mailbox a listed (not twinned) secure address is delivered to: the address as given,
/// its domain lower-cased, without a trailing dot. One rule for the file and the database.
pub(crate) fn as_addressed(address: &str) -> String {
    let given = address::path_mailbox(address);
    let local = given.rsplit_once('@').map_or(given, |(local, _)| local);
    format!("{local}@{}", given_domain(given))
}

/// A secure domain as the map is keyed: canonical, or lower-cased if it is not a domain.
fn domain_key(domain: &str) -> String {
    address::canonical_domain(domain).unwrap_or_else(|| domain.to_lowercase())
}

/// The domain of a mailbox as given, lower-cased, without a trailing dot.
fn given_domain(mailbox: &str) -> String {
    let domain = mailbox.rsplit_once('@').map_or("", |(_, domain)| domain);
    domain.strip_suffix('.').unwrap_or(domain).to_lowercase()
}

impl Stamp {
    fn of(metadata: &fs::Metadata) -> Stamp {
        Stamp {
            // Every file system Linux mounts has an mtime; UNIX_EPOCH only makes the stamp
            // racy, i.e. the file is read again next time.
            modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            len: metadata.len(),
            dev: metadata.dev(),
            inode: metadata.ino(),
        }
    }
}

/// The addresses of a mailbox file, canonical ([`crate::message::address`]): the first word of each line that is not
/// blank or a `#` comment; a `#` after whitespace starts a trailing comment. Lines that hold
/// no address are logged and skipped.
fn parse_mailbox_file(path: &Path, text: &str) -> HashSet<String> {
    let mut addresses = HashSet::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (address, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim_start();
        let valid = address
            .rsplit_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
            && (rest.is_empty() || rest.starts_with('#'));
        if !valid {
            warn!(file = %path.display(), line = number + 1, "skipping a line that is not one address");
            continue;
        }
        addresses.insert(address::canonical(address));
    }
    addresses
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
