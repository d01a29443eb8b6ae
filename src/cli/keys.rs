//! `sealgate keys ...`: import, list, show and remove the certificates in the key store.
//!
//! Import is the edge where certificates are judged (style habit 4): a certificate that
//! carries secret key material, has no self-signed e-mail user ID, or is unusable under
//! [`sealgate::openpgp::check`] is refused with a one-line reason and never written.

use std::collections::BTreeMap;
use std::io::{self, Read as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sequoia_openpgp::cert::CertParser;
use sequoia_openpgp::crypto::mpi::PublicKey;
use sequoia_openpgp::packet::Key;
use sequoia_openpgp::packet::key::{KeyParts, KeyRole};
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::serialize::stream::Recipient;
use sequoia_openpgp::types::{HashAlgorithm, PublicKeyAlgorithm};
use sequoia_openpgp::{Cert, Fingerprint, KeyHandle};

use sealgate::config::{self, Config, KeyStoreLocation};
use sealgate::error::error_chain;
use sealgate::openpgp::{self, POLICY, Unusable};
use sealgate::store::certd::KeyStoreError;
use sealgate::store::keys::KeyStore;
use sealgate::store::manifest::MANIFEST;
use sealgate::store::{Lookup, certd};

use super::{Exit, init_command_logs};

/// The packaged service user (packaging/debian/postinst), whose access to the store matters.
const SERVICE_USER: &str = "sealgate";

const USAGE: &str = "\
Usage:
  sealgate keys import FILE|-      import OpenPGP certificates (armored or binary; - = stdin)
  sealgate keys list               one line per certificate: fingerprint, status, addresses
  sealgate keys show ADDRESS       the certificate(s) an address resolves to
  sealgate keys remove FINGERPRINT remove a certificate (hex, any case, spaces allowed)
  sealgate keys init               create an empty store with its manifest
  sealgate keys reindex            accept the certificates present now as the store's
                                   contents (after removing files on purpose, or a store
                                   written by another tool)
  sealgate keys migrate            create or upgrade a PostgreSQL key store's schema
  sealgate keys copy --from STORE --to STORE
                                   copy every certificate from one store to another (a
                                   directory or a postgresql:// URL, either way), with the
                                   refusals of import

The store is SEALGATE_KEYSTORE (default ./keys): a cert-d directory or a postgresql:// URL
(docs/keystore-postgres.md), read like the service reads it: the environment, over the env
file in SEALGATE_ENV_FILE (default /etc/sealgate/sealgate.env when it exists; systemd
EnvironmentFile= syntax). init and reindex are for directories, migrate for databases.
Exit codes: 0 done; 1 refused or not found; 64 usage; 74 I/O error; 75 the store is
degraded or the database does not answer (list and show print why); 78 bad configuration,
or a database schema to migrate.
";

/// A parsed `sealgate keys` command line.
enum Verb<'a> {
    Import(&'a str),
    List,
    Show(&'a str),
    Remove(String),
    Init,
    Reindex,
    Migrate,
    Copy { from: &'a str, to: &'a str },
}

/// Runs `sealgate keys ARGS...` and returns the process exit code. The store is the
/// configuration's `SEALGATE_KEYSTORE`.
pub(crate) fn main(args: &[&str]) -> ExitCode {
    let verb = match args {
        ["import", source] => Verb::Import(source),
        ["list"] => Verb::List,
        ["show", address] => Verb::Show(address),
        // A fingerprint pasted with spaces may arrive as several arguments.
        ["remove", parts @ ..] if !parts.is_empty() => Verb::Remove(parts.concat()),
        ["init"] => Verb::Init,
        ["reindex"] => Verb::Reindex,
        ["migrate"] => Verb::Migrate,
        ["copy", "--from", from, "--to", to] | ["copy", "--to", to, "--from", from] => {
            Verb::Copy { from, to }
        }
        ["help" | "--help" | "-h"] => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprint!("sealgate keys: unknown or incomplete arguments {args:?}\n\n{USAGE}");
            return ExitCode::from(Exit::Usage);
        }
    };
    let config = match service_config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("sealgate keys: invalid configuration: {err}");
            return ExitCode::from(Exit::Config);
        }
    };
    // Warnings from the key store (e.g. skipped files) go to stderr.
    init_command_logs();
    if let Verb::Copy { from, to } = verb {
        return database::copy(&config, from, to);
    }
    let dir = match &config.keystore {
        KeyStoreLocation::Directory(dir) => dir.clone(),
        KeyStoreLocation::Database(url) => return database::main(&config, url, verb),
    };
    if let Verb::Migrate = verb {
        eprintln!(
            "sealgate keys migrate: SEALGATE_KEYSTORE is a directory ({}); migrate is for a \
             postgresql:// key store",
            dir.display()
        );
        return ExitCode::from(Exit::Usage);
    }
    // Only the verbs that write need the service user's access (list and show only read).
    let writes = matches!(
        verb,
        Verb::Import(_) | Verb::Init | Verb::Reindex | Verb::Remove(_)
    );
    let owner = match Owner::of_service(&dir) {
        Ok(owner) => owner.filter(|_| writes),
        Err(refusal) if writes => {
            eprintln!("sealgate keys: refused: {refusal}");
            return ExitCode::FAILURE;
        }
        Err(_) => None,
    };
    let code = match verb {
        Verb::Import(source) => import(source, |cert| import_one(&dir, cert)),
        Verb::List => list(&dir),
        Verb::Show(address) => show(&dir, address),
        Verb::Remove(fingerprint) => remove(&dir, &fingerprint),
        Verb::Init => match certd::init(&dir) {
            Ok(manifest) => {
                println!(
                    "key store {} ready (id {}, {} certificate(s) listed)",
                    dir.display(),
                    manifest.id,
                    manifest.fingerprints.len()
                );
                ExitCode::SUCCESS
            }
            Err(err) => store_failure("init", &err),
        },
        // Answered above, before the directory was known.
        Verb::Migrate | Verb::Copy { .. } => ExitCode::from(Exit::Usage),
        Verb::Reindex => match certd::reindex(&dir) {
            Ok(manifest) => {
                println!(
                    "key store {} reindexed: {} certificate(s) expected from now on",
                    dir.display(),
                    manifest.fingerprints.len()
                );
                ExitCode::SUCCESS
            }
            Err(err) => store_failure("reindex", &err),
        },
    };
    if let Some(owner) = owner
        && let Err(err) = owner.hand_over(&dir)
    {
        eprintln!("sealgate keys: {err}");
        return ExitCode::from(Exit::IoErr);
    }
    code
}

/// The service's configuration as `sealgate keys` sees it: the env file (systemd syntax;
/// `SEALGATE_ENV_FILE`, else the package's when it exists) under the environment, which
/// wins.
fn service_config() -> Result<Config, String> {
    let environment = config::environment();
    let file = match environment.get(config::ENV_FILE) {
        Some(path) => Some(PathBuf::from(path)),
        None => Some(PathBuf::from(config::DEFAULT_ENV_FILE)).filter(|p| p.exists()),
    };
    let mut vars = BTreeMap::new();
    if let Some(file) = file {
        let text = std::fs::read_to_string(&file)
            .map_err(|err| format!("cannot read the env file {}: {err}", file.display()))?;
        // Only SEALGATE_* settings: the service ignores the rest too.
        vars.extend(
            sealgate::config::env_file::parse(&text)
                .into_iter()
                .filter(|(k, _)| k.starts_with("SEALGATE_")),
        );
    }
    vars.extend(environment);
    Config::from_vars(&vars).map_err(|err| err.to_string())
}

/// Who must be able to read the store: the packaged service user, when it exists and is not
/// who runs `sealgate keys`.
struct Owner {
    uid: u32,
    gid: u32,
}

impl Owner {
    /// `None` when nothing needs doing: no service user on this host, or we are it. As root:
    /// what we write is handed over to the service user afterwards ([`Owner::hand_over`]).
    /// As another user: refused (`Err`) when the service user could not read the store.
    fn of_service(dir: &Path) -> Result<Option<Owner>, String> {
        let Some((uid, gid)) = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|passwd| passwd_entry(&passwd, SERVICE_USER))
        else {
            return Ok(None);
        };
        let me = rustix::process::geteuid().as_raw();
        if me == uid {
            return Ok(None);
        }
        if me == 0 {
            return Ok(Some(Owner { uid, gid }));
        }
        // Every existing directory from / down to the store must let the service user in.
        let mut path = PathBuf::new();
        for part in dir.components() {
            path.push(part);
            let Ok(meta) = std::fs::metadata(&path) else {
                break;
            };
            let need = if path == dir { 0o5 } else { 0o1 };
            if !may(&meta, uid, gid, need) {
                return Err(format!(
                    "the service user {SERVICE_USER} (uid {uid}) could not read the key store: \
                     {} is owned by uid {} gid {} with mode {:o}; run `sealgate keys` as root or \
                     as {SERVICE_USER}, or fix the permissions",
                    path.display(),
                    meta.uid(),
                    meta.gid(),
                    meta.mode() & 0o7777
                ));
            }
        }
        Ok(None)
    }

    /// Gives what root wrote in the store (the directory, entries, manifest, lock) to the
    /// service user, as the package creates the store (owner sealgate, mode 0700).
    fn hand_over(&self, dir: &Path) -> Result<(), String> {
        let mut paths = vec![dir.to_path_buf()];
        for name in [MANIFEST, "writelock"] {
            paths.push(dir.join(name));
        }
        if let Ok(subdirs) = std::fs::read_dir(dir) {
            for subdir in subdirs.filter_map(Result::ok) {
                let name = subdir.file_name();
                if name.len() != 2 || !subdir.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                paths.push(subdir.path());
                if let Ok(entries) = std::fs::read_dir(subdir.path()) {
                    paths.extend(entries.filter_map(Result::ok).map(|e| e.path()));
                }
            }
        }
        for path in paths {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            // Only what root owns: an administrator's own choice of owner stays.
            if meta.uid() == 0 && !meta.file_type().is_symlink() {
                std::os::unix::fs::chown(&path, Some(self.uid), Some(self.gid)).map_err(|err| {
                    format!(
                        "cannot give {} to {SERVICE_USER}: {err}; the service could not \
                             read it",
                        path.display()
                    )
                })?;
            }
        }
        Ok(())
    }
}

/// uid and gid of `user` in the text of /etc/passwd.
fn passwd_entry(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    })
}

/// Whether `uid`/`gid` (primary group only) have the permission bits `need` (`0o4` read,
/// `0o1` search, ...) on a file with `meta`, by the owner/group/other rule.
fn may(meta: &std::fs::Metadata, uid: u32, gid: u32, need: u32) -> bool {
    let mode = meta.mode();
    let bits = if meta.uid() == uid {
        mode >> 6
    } else if meta.gid() == gid {
        mode >> 3
    } else {
        mode
    };
    bits & need == need
}

/// Why one certificate was not imported.
enum ImportError {
    /// The certificate is not acceptable; nothing was written.
    Refused(String),
    /// The store could not be read or written (the cause, on one line).
    Store(String),
}

impl From<KeyStoreError> for ImportError {
    fn from(err: KeyStoreError) -> Self {
        ImportError::Store(error_chain(&err).replace('\n', " "))
    }
}

/// Imports every certificate in `source` with `store_one`, which judges and writes one.
fn import(source: &str, mut store_one: impl FnMut(Cert) -> Result<Cert, ImportError>) -> ExitCode {
    let data = match read_input(source) {
        Ok(data) => data,
        Err(err) => {
            eprintln!("sealgate keys import: cannot read {source}: {err}");
            return ExitCode::from(Exit::IoErr);
        }
    };
    let parser = match CertParser::from_bytes(&data) {
        Ok(parser) => parser,
        Err(err) => {
            eprintln!(
                "sealgate keys import: refused: not OpenPGP certificate data ({})",
                one_line(&format!("{err:#}"))
            );
            return ExitCode::FAILURE;
        }
    };
    let mut refused = 0;
    let mut seen = 0;
    for item in parser {
        seen += 1;
        let cert = match item {
            Ok(cert) => cert,
            Err(err) => {
                eprintln!(
                    "sealgate keys import: refused: not OpenPGP certificate data ({})",
                    one_line(&format!("{err:#}"))
                );
                refused += 1;
                continue;
            }
        };
        let fingerprint = cert.fingerprint();
        match store_one(cert) {
            Ok(stored) => {
                let addresses = openpgp::email_addresses(&stored);
                println!("imported {fingerprint} {}", bracketed(&addresses));
            }
            Err(ImportError::Refused(reason)) => {
                eprintln!("sealgate keys import: refused {fingerprint}: {reason}");
                refused += 1;
            }
            Err(ImportError::Store(err)) => {
                eprintln!("sealgate keys import: {err}");
                return ExitCode::from(Exit::IoErr);
            }
        }
    }
    if seen == 0 {
        eprintln!("sealgate keys import: refused: no OpenPGP certificate in the input");
        return ExitCode::FAILURE;
    }
    if refused > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Judges one certificate, merged with a stored copy if there is one, and stores it when
/// acceptable. Returns what was stored.
///
/// An update to a stored certificate is written even when the result is unusable (and still
/// reported as refused): it carries the holder's own newer signatures, e.g. a revocation,
/// and keeping the old copy would keep encrypting to a key its holder gave up.
fn import_one(dir: &Path, cert: Cert) -> Result<Cert, ImportError> {
    refuse_secrets(&cert)?;
    let fingerprint = cert.fingerprint();
    let stored = certd::stored(dir, &fingerprint)?;
    let update = stored.is_some();
    let candidate = match stored {
        Some(old) => old.merge_public(cert.clone()).map_err(|err| {
            ImportError::Refused(format!(
                "cannot merge with the stored copy: {}",
                one_line(&format!("{err:#}"))
            ))
        })?,
        None => cert.clone(),
    };
    match judge(&candidate) {
        None => Ok(certd::insert(dir, &cert)?),
        Some(reason) if update => {
            certd::insert(dir, &cert)?;
            Err(ImportError::Refused(format!(
                "{reason} (merged into the stored copy, which is no longer used)"
            )))
        }
        Some(reason) => Err(ImportError::Refused(reason)),
    }
}

/// A certificate with secret key material is refused before anything else: whoever exported
/// a secret key by mistake should learn about it, and the secret should go no further than
/// this process.
fn refuse_secrets(cert: &Cert) -> Result<(), ImportError> {
    if cert.is_tsk() {
        return Err(ImportError::Refused(
            "contains secret key material; export the public key with `gpg --export`".into(),
        ));
    }
    Ok(())
}

/// Why a certificate (merged with the stored copy) may not be used, for both backends:
/// no self-signed e-mail user ID, or unusable now.
fn judge(cert: &Cert) -> Option<String> {
    if openpgp::email_addresses(cert).is_empty() {
        return Some("no self-signed user ID with an e-mail address".to_string());
    }
    openpgp::check(cert).err().map(|why| explain(cert, &why))
}

/// A one-line reason for an unusable certificate, naming the fix where there is one.
fn explain(cert: &Cert, why: &Unusable) -> String {
    let fpr = cert.fingerprint();
    match why {
        Unusable::Expired => {
            let since = expiry(cert).map_or(String::new(), |t| format!(" on {}", date(t)));
            format!(
                "expired{since}; extend it with `gpg --quick-set-expire {fpr} 2y` and \
                 `gpg --quick-set-expire {fpr} 2y '*'`, then export it again"
            )
        }
        Unusable::Revoked => "revoked by its holder; a revoked key cannot be used again, \
                              generate a new one"
            .into(),
        Unusable::NoEncryptionSubkey => subkey_problem(cert),
        Unusable::Policy(detail) if self_signed_with_sha1(cert) => format!(
            "rejected by policy: its self-signatures use SHA-1 ({}); re-sign them with \
             SHA-512: `gpg --quick-set-expire {fpr} 2y` then `gpg --quick-set-expire {fpr} 2y \
             '*'`, then export it again",
            one_line(detail)
        ),
        Unusable::Policy(detail) => format!("rejected by policy: {}", one_line(detail)),
    }
}

/// Why a certificate that passes the policy has no encryption key, with the fix.
fn subkey_problem(cert: &Cert) -> String {
    let fpr = cert.fingerprint();
    let add =
        format!("add one with `gpg --quick-add-key {fpr} cv25519 encr`, then export it again");
    // Encryption subkeys as their own (newest) binding signatures describe them, before any
    // policy: the policy is what may have thrown them out.
    let encryption_subkeys: Vec<_> = cert
        .keys()
        .subkeys()
        .filter_map(|ka| {
            let binding = ka.bundle().self_signatures().next()?;
            let flags = binding.key_flags()?;
            (flags.for_storage_encryption() || flags.for_transport_encryption())
                .then(|| (ka.key().pk_algo(), binding.hash_algo()))
        })
        .collect();
    #[allow(deprecated)]
    let elgamal = |algo: &PublicKeyAlgorithm| {
        matches!(
            algo,
            PublicKeyAlgorithm::ElGamalEncrypt | PublicKeyAlgorithm::ElGamalEncryptSign
        )
    };
    if encryption_subkeys.iter().any(|(algo, _)| elgamal(algo)) {
        format!(
            "no encryption-capable subkey: ElGamal is rejected by the standard policy since \
             2025-02; {add}"
        )
    } else if encryption_subkeys
        .iter()
        .any(|(_, hash)| *hash == HashAlgorithm::SHA1)
    {
        format!(
            "no encryption-capable subkey: its subkey binding uses SHA-1; re-sign it with \
             `gpg --quick-set-expire {fpr} 2y '*'`, then export it again"
        )
    } else if !encryption_subkeys.is_empty() {
        format!(
            "no encryption-capable subkey: its encryption subkeys are expired, revoked or \
             rejected by policy; extend them with `gpg --quick-set-expire {fpr} 2y '*'` or {add}"
        )
    } else {
        format!("no encryption-capable subkey; {add}")
    }
}

/// Whether the newest self-signature on the primary key or a user ID uses SHA-1.
fn self_signed_with_sha1(cert: &Cert) -> bool {
    cert.primary_key()
        .bundle()
        .self_signatures()
        .next()
        .into_iter()
        .chain(
            cert.userids()
                .filter_map(|uid| uid.bundle().self_signatures().next()),
        )
        .any(|sig| sig.hash_algo() == HashAlgorithm::SHA1)
}

fn list(dir: &Path) -> ExitCode {
    let store = match KeyStore::open(dir) {
        Ok(store) => store,
        Err(err) => return store_failure("list", &err),
    };
    for cert in store.certificates() {
        println!("{}", summary(&cert));
    }
    degraded("list", &store)
}

/// Prints the store's problems to stderr: exit 75 when there are any, 0 otherwise.
fn degraded(verb: &str, store: &KeyStore) -> ExitCode {
    let problems = store.problems();
    for problem in &problems {
        let effect = if problem.blind {
            "the service answers 451 for recipients without a usable key"
        } else {
            "the service still uses its last good certificate"
        };
        eprintln!("sealgate keys {verb}: key store degraded: {problem} ({effect})");
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(Exit::TempFail)
    }
}

fn show(dir: &Path, address: &str) -> ExitCode {
    let store = match KeyStore::open(dir) {
        Ok(store) => store,
        Err(err) => return store_failure("show", &err),
    };
    resolution(
        address,
        store.lookup(address),
        &store.certificates_for(address),
    )
}

/// What `show` prints for both backends: the service's answer for `address`, then every
/// certificate it resolves to (usable or not, and why) with the keys a copy is encrypted to.
fn resolution(address: &str, lookup: Lookup, certs: &[Arc<Cert>]) -> ExitCode {
    if let Lookup::Unknown { reason } = &lookup {
        eprintln!("sealgate keys show: cannot tell whether {address} has a key: {reason}");
        return ExitCode::from(Exit::TempFail);
    }
    if certs.is_empty() {
        eprintln!("sealgate keys show: no certificate for {address}");
        return ExitCode::FAILURE;
    }
    let usable = match lookup {
        Lookup::Usable(usable) => {
            let fingerprints: Vec<String> =
                usable.iter().map(|c| c.fingerprint().to_hex()).collect();
            let each = if fingerprints.len() > 1 {
                "; copies are encrypted to each"
            } else {
                ""
            };
            println!(
                "{address} resolves to {} (usable{each})",
                fingerprints.join(", ")
            );
            true
        }
        Lookup::Unusable {
            fingerprint,
            reason,
        } => {
            println!("{address} resolves to {fingerprint} (unusable: {reason})");
            false
        }
        Lookup::None | Lookup::Unknown { .. } => false,
    };
    for cert in certs {
        println!("{}", summary(cert));
        for (fingerprint, algorithm, expires) in encryption_subkeys(cert) {
            println!(
                "  encryption subkey {fingerprint}  {algorithm}  expires {}",
                expires.map_or("never".into(), date)
            );
        }
    }
    if usable {
        ExitCode::SUCCESS
    } else {
        eprintln!("sealgate keys show: no usable certificate for {address}");
        ExitCode::FAILURE
    }
}

fn remove(dir: &Path, text: &str) -> ExitCode {
    let Some(fingerprint) = parse_fingerprint(text) else {
        eprintln!(
            "sealgate keys remove: not a fingerprint: {text} (expected 40 or 64 hex digits)\n\n\
             {USAGE}"
        );
        return ExitCode::from(Exit::Usage);
    };
    match certd::remove(dir, &fingerprint) {
        Ok(true) => {
            println!("removed {fingerprint}");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("sealgate keys remove: no certificate {fingerprint} in the key store");
            ExitCode::FAILURE
        }
        Err(err) => store_failure("remove", &err),
    }
}

/// `FINGERPRINT  status  <addresses>...  [expires DATE]`.
fn summary(cert: &Cert) -> String {
    let status = match openpgp::check(cert) {
        Ok(()) => "usable".to_string(),
        Err(why) => format!("unusable:{}", why.kind()),
    };
    let addresses = openpgp::email_addresses(cert);
    let addresses = if addresses.is_empty() {
        "(no e-mail address)".to_string()
    } else {
        bracketed(&addresses)
    };
    let expires = expiry(cert).map_or(String::new(), |t| format!("  expires {}", date(t)));
    format!("{}  {status}  {addresses}{expires}", cert.fingerprint())
}

/// The keys [`openpgp::recipients`] encrypts to: fingerprint, algorithm, expiry.
fn encryption_subkeys(cert: &Cert) -> Vec<(Fingerprint, String, Option<SystemTime>)> {
    let handles: Vec<KeyHandle> = openpgp::recipients(cert)
        .map(|recipients| {
            recipients
                .iter()
                .filter_map(Recipient::key_handle)
                .collect()
        })
        .unwrap_or_default();
    let Ok(valid) = cert.with_policy(&POLICY, None) else {
        return Vec::new();
    };
    valid
        .keys()
        .filter(|ka| {
            handles
                .iter()
                .any(|handle| handle.aliases(ka.key().key_handle()))
        })
        .map(|ka| {
            (
                ka.key().fingerprint(),
                algorithm(ka.key()),
                ka.key_expiration_time(),
            )
        })
        .collect()
}

/// `RSA 3072`, `ECDH Cv25519`, `X25519`, ...
fn algorithm<P: KeyParts, R: KeyRole>(key: &Key<P, R>) -> String {
    let algo = key.pk_algo();
    match key.mpis() {
        PublicKey::ECDH { curve, .. }
        | PublicKey::EdDSA { curve, .. }
        | PublicKey::ECDSA { curve, .. } => format!("{algo} {curve}"),
        mpis => match mpis.bits() {
            Some(bits) if matches!(mpis, PublicKey::RSA { .. } | PublicKey::DSA { .. }) => {
                format!("{algo} {bits}")
            }
            _ => algo.to_string(),
        },
    }
}

/// The primary key's expiry under the standard policy, if it has one.
fn expiry(cert: &Cert) -> Option<SystemTime> {
    cert.with_policy(&POLICY, None)
        .ok()?
        .primary_key()
        .key_expiration_time()
}

/// `40 or 64 hex digits`, any case, spaces anywhere.
fn parse_fingerprint(text: &str) -> Option<Fingerprint> {
    let hex: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !matches!(hex.len(), 40 | 64) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Fingerprint::from_hex(&hex).ok()
}

fn read_input(source: &str) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    if source == "-" {
        io::stdin().lock().read_to_end(&mut data)?;
    } else {
        data = std::fs::read(source)?;
    }
    Ok(data)
}

fn store_failure(verb: &str, err: &KeyStoreError) -> ExitCode {
    eprintln!("sealgate keys {verb}: {}", one_line(&error_chain(err)));
    ExitCode::from(Exit::IoErr)
}

fn bracketed(addresses: &[String]) -> String {
    addresses
        .iter()
        .map(|a| format!("<{a}>"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `YYYY-MM-DD` (UTC).
fn date(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn service_user_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      sealgatex:x:5:5::/:/bin/false\n\
                      sealgate:x:998:997:sealgate mail filter:/var/lib/sealgate:/usr/sbin/nologin\n";
        assert_eq!(passwd_entry(passwd, "sealgate"), Some((998, 997)));
        assert_eq!(passwd_entry(passwd, "nobody"), None);
        assert_eq!(
            passwd_entry("sealgate:x:notanumber:1::/:/\n", "sealgate"),
            None
        );
    }

    #[test]
    fn access_by_owner_group_other() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("f");
        std::fs::write(&path, b"").expect("write");
        let meta = |mode: u32| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            std::fs::metadata(&path).expect("stat")
        };
        let owner = std::fs::metadata(&path).expect("stat").uid();
        let group = std::fs::metadata(&path).expect("stat").gid();
        let stranger = owner.wrapping_add(4242);
        let other_group = group.wrapping_add(4242);
        // 0600: the owner only; 0640: its group too; 0644: everyone.
        let m = meta(0o600);
        assert!(may(&m, owner, other_group, 0o4));
        assert!(!may(&m, stranger, group, 0o4));
        assert!(!may(&m, stranger, other_group, 0o4));
        let m = meta(0o640);
        assert!(may(&m, stranger, group, 0o4));
        assert!(!may(&m, stranger, other_group, 0o4));
        let m = meta(0o644);
        assert!(may(&m, stranger, other_group, 0o4));
        // Owner bits decide for the owner even when "other" would allow more.
        let m = meta(0o044);
        assert!(!may(&m, owner, group, 0o4));
    }

    #[test]
    fn fingerprints_any_case_with_spaces() {
        let want = "0123456789ABCDEF0123456789ABCDEF01234567";
        for text in [
            want,
            "0123456789abcdef0123456789abcdef01234567",
            "0123 4567 89AB CDEF 0123  4567 89ab cdef 0123 4567",
        ] {
            let fpr = parse_fingerprint(text).expect("valid");
            assert_eq!(fpr.to_hex(), want, "{text}");
        }
        assert!(parse_fingerprint("0123").is_none());
        assert!(parse_fingerprint("g123456789ABCDEF0123456789ABCDEF01234567").is_none());
    }
}

/// `sealgate keys` against a PostgreSQL key store: the same verbs, refusals and output as for
/// a directory; each write is one transaction (store/postgres/admin.rs).
mod database {
    use super::*;

    use sealgate::store::postgres::Location;
    use sealgate::store::postgres::admin::{Admin, Imported};

    /// A current-thread runtime for the database client: `sealgate keys` is one short command.
    fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| {
                eprintln!("sealgate keys: cannot start the runtime: {err}");
                ExitCode::from(Exit::OsErr)
            })
    }

    fn location(config: &Config, url: &str) -> Result<Location, ExitCode> {
        Location::parse(url, config.keystore_password_file.as_deref()).map_err(|err| {
            eprintln!("sealgate keys: invalid configuration: SEALGATE_KEYSTORE: {err}");
            ExitCode::from(Exit::Config)
        })
    }

    /// The database failed: exit 74 with the cause (never the password).
    fn failed(verb: &str, err: &sealgate::store::postgres::PgError) -> ExitCode {
        eprintln!("sealgate keys {verb}: {}", one_line(&err.to_string()));
        ExitCode::from(Exit::IoErr)
    }

    /// Who imports, for `certificates.imported_by`: `sealgate keys import (USER@HOST)`.
    fn imported_by() -> String {
        let env = config::environment();
        let user = env
            .get("USER")
            .or_else(|| env.get("LOGNAME"))
            .map_or("?", String::as_str);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("sealgate keys import ({user}@{})", host.trim())
    }

    pub(super) fn main(config: &Config, url: &str, verb: Verb<'_>) -> ExitCode {
        let location = match location(config, url) {
            Ok(location) => location,
            Err(code) => return code,
        };
        let runtime = match runtime() {
            Ok(runtime) => runtime,
            Err(code) => return code,
        };
        let connected = runtime.block_on(async {
            match verb {
                Verb::Migrate => Admin::connect_unchecked(&location).await,
                _ => Admin::connect(&location).await,
            }
        });
        let mut admin = match connected {
            Ok(admin) => admin,
            Err(err) => {
                eprintln!("sealgate keys: {}", one_line(&err.to_string()));
                // A schema to migrate is the operator's to fix; a database away may come back.
                return match err {
                    sealgate::store::postgres::PgError::Schema(_) => ExitCode::from(Exit::Config),
                    _ => ExitCode::from(Exit::TempFail),
                };
            }
        };
        let code = match verb {
            // `import` is synchronous: each certificate's transaction runs on the runtime.
            Verb::Import(source) => {
                let by = imported_by();
                import(source, |cert| {
                    refuse_secrets(&cert)?;
                    match runtime.block_on(admin.import(&cert, &by, judge)) {
                        Ok(Imported::Stored(stored)) => Ok(stored),
                        Ok(Imported::MergedUnusable(_, reason)) => {
                            Err(ImportError::Refused(format!(
                                "{reason} (merged into the stored copy, which is no longer used)"
                            )))
                        }
                        Ok(Imported::Refused(reason)) => Err(ImportError::Refused(reason)),
                        Err(err) => Err(ImportError::Store(one_line(&err.to_string()))),
                    }
                })
            }
            verb => runtime.block_on(run(&mut admin, &location, verb)),
        };
        runtime.block_on(admin.close());
        code
    }

    async fn run(admin: &mut Admin, location: &Location, verb: Verb<'_>) -> ExitCode {
        match verb {
            Verb::Migrate => match admin.migrate().await {
                Ok(applied) if applied.is_empty() => {
                    println!("key store {location}: schema is up to date");
                    ExitCode::SUCCESS
                }
                Ok(applied) => {
                    let versions: Vec<String> = applied.iter().map(ToString::to_string).collect();
                    println!(
                        "key store {location}: applied schema version(s) {}",
                        versions.join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Err(err) => failed("migrate", &err),
            },
            // Imported by `main`, synchronously.
            Verb::Import(_) => ExitCode::from(Exit::Usage),
            Verb::List => match admin.certificates().await {
                Ok(certs) => {
                    for cert in certs {
                        println!("{}", summary(&cert));
                    }
                    ExitCode::SUCCESS
                }
                Err(err) => failed("list", &err),
            },
            Verb::Show(address) => match admin.lookup(address).await {
                Ok((lookup, certs)) => resolution(address, lookup, &certs),
                Err(err) => failed("show", &err),
            },
            Verb::Remove(text) => {
                let Some(fingerprint) = parse_fingerprint(&text) else {
                    eprintln!(
                        "sealgate keys remove: not a fingerprint: {text} (expected 40 or 64 \
                         hex digits)\n\n{USAGE}"
                    );
                    return ExitCode::from(Exit::Usage);
                };
                match admin.remove(&fingerprint.to_hex()).await {
                    Ok(true) => {
                        println!("removed {fingerprint}");
                        ExitCode::SUCCESS
                    }
                    Ok(false) => {
                        eprintln!(
                            "sealgate keys remove: no certificate {fingerprint} in the key store"
                        );
                        ExitCode::FAILURE
                    }
                    Err(err) => failed("remove", &err),
                }
            }
            Verb::Init | Verb::Reindex => {
                eprintln!(
                    "sealgate keys: init and reindex are for a directory; a database's schema \
                     is made by `sealgate keys migrate`"
                );
                ExitCode::from(Exit::Usage)
            }
            Verb::Copy { .. } => ExitCode::from(Exit::Usage),
        }
    }

    /// `sealgate keys copy --from STORE --to STORE`: every certificate of one store imported
    /// into the other (directory or database, either way) with import's refusals.
    pub(super) fn copy(config: &Config, from: &str, to: &str) -> ExitCode {
        let runtime = match runtime() {
            Ok(runtime) => runtime,
            Err(code) => return code,
        };
        let certs: Vec<Cert> = if sealgate::store::postgres::connect::is_url(from) {
            let location = match location(config, from) {
                Ok(location) => location,
                Err(code) => return code,
            };
            let read = runtime.block_on(async {
                let admin = Admin::connect(&location).await?;
                let certs = admin.certificates().await;
                admin.close().await;
                certs
            });
            match read {
                Ok(certs) => certs,
                Err(err) => return failed("copy", &err),
            }
        } else {
            match KeyStore::open(Path::new(from)) {
                Ok(store) => {
                    if !store.problems().is_empty() {
                        return degraded("copy", &store);
                    }
                    store.certificates().iter().map(|c| (**c).clone()).collect()
                }
                Err(err) => return store_failure("copy", &err),
            }
        };
        let mut bytes = Vec::new();
        for cert in &certs {
            if let Err(err) = sequoia_openpgp::serialize::Serialize::serialize(cert, &mut bytes) {
                eprintln!("sealgate keys copy: {}: {err}", cert.fingerprint());
                return ExitCode::from(Exit::IoErr);
            }
        }
        let input = match tempfile_with(&bytes) {
            Ok(file) => file,
            Err(err) => {
                eprintln!("sealgate keys copy: cannot stage the certificates: {err}");
                return ExitCode::from(Exit::IoErr);
            }
        };
        let source = input.path().display().to_string();
        let code = if sealgate::store::postgres::connect::is_url(to) {
            let mut target = config.clone();
            target.keystore = KeyStoreLocation::Database(to.to_string());
            main(&target, to, Verb::Import(&source))
        } else {
            let dir = PathBuf::from(to);
            import(&source, |cert| import_one(&dir, cert))
        };
        println!("copied {} certificate(s) from {from}", certs.len());
        code
    }

    /// A private temporary file holding `bytes` (public certificates only).
    fn tempfile_with(bytes: &[u8]) -> io::Result<TempInput> {
        let path = std::env::temp_dir().join(format!(
            "sealgate-keys-copy-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::write(&path, bytes)?;
        Ok(TempInput(path))
    }

    struct TempInput(PathBuf);

    impl TempInput {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempInput {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
