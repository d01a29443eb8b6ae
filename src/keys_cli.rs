//! `sealgate keys ...`: import, list, show and remove the certificates in the key store.
//!
//! Import is the edge where certificates are judged (style habit 4): a certificate that
//! carries secret key material, has no self-signed e-mail user ID, or is unusable under
//! [`crate::openpgp::check`] is refused with a one-line reason and never written.

use std::io::{self, Read as _};
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use sequoia_openpgp::cert::CertParser;
use sequoia_openpgp::crypto::mpi::PublicKey;
use sequoia_openpgp::packet::Key;
use sequoia_openpgp::packet::key::{KeyParts, KeyRole};
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::serialize::stream::Recipient;
use sequoia_openpgp::types::{HashAlgorithm, PublicKeyAlgorithm};
use sequoia_openpgp::{Cert, Fingerprint, KeyHandle};

use crate::config::Config;
use crate::keystore::{self, KeyStore, KeyStoreError, Lookup};
use crate::openpgp::{self, POLICY, Unusable};

/// sysexits(3): bad command line.
const EX_USAGE: u8 = 64;
/// sysexits(3): an input or store file could not be read or written.
const EX_IOERR: u8 = 74;
/// sysexits(3): bad configuration.
const EX_CONFIG: u8 = 78;

const USAGE: &str = "\
Usage:
  sealgate keys import FILE|-      import OpenPGP certificates (armored or binary; - = stdin)
  sealgate keys list               one line per certificate: fingerprint, status, addresses
  sealgate keys show ADDRESS       the certificate(s) an address resolves to
  sealgate keys remove FINGERPRINT remove a certificate (hex, any case, spaces allowed)

The store is the cert-d directory in SEALGATE_KEYSTORE (default ./keys).
Exit codes: 0 done; 1 refused or not found; 64 usage; 74 I/O error; 78 bad configuration.
";

/// A parsed `sealgate keys` command line.
enum Verb<'a> {
    Import(&'a str),
    List,
    Show(&'a str),
    Remove(String),
}

/// Runs `sealgate keys ARGS...` and returns the process exit code. The store is the
/// configuration's `SEALGATE_KEYSTORE`.
pub fn main(args: &[&str]) -> ExitCode {
    let verb = match args {
        ["import", source] => Verb::Import(source),
        ["list"] => Verb::List,
        ["show", address] => Verb::Show(address),
        // A fingerprint pasted with spaces may arrive as several arguments.
        ["remove", parts @ ..] if !parts.is_empty() => Verb::Remove(parts.concat()),
        ["help" | "--help" | "-h"] => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprint!("sealgate keys: unknown or incomplete arguments {args:?}\n\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let dir = match Config::from_env() {
        Ok(config) => config.keystore,
        Err(err) => {
            eprintln!("sealgate keys: invalid configuration: {err}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    init_logging();
    match verb {
        Verb::Import(source) => import(&dir, source),
        Verb::List => list(&dir),
        Verb::Show(address) => show(&dir, address),
        Verb::Remove(fingerprint) => remove(&dir, &fingerprint),
    }
}

/// Warnings from the key store (e.g. skipped files) go to stderr.
fn init_logging() {
    // A second initialisation (tests calling `main` in-process) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_max_level(tracing::Level::WARN)
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .try_init();
}

/// Why one certificate was not imported.
enum ImportError {
    /// The certificate is not acceptable; nothing was written.
    Refused(String),
    /// The store could not be read or written.
    Store(KeyStoreError),
}

impl From<KeyStoreError> for ImportError {
    fn from(err: KeyStoreError) -> Self {
        ImportError::Store(err)
    }
}

fn import(dir: &Path, source: &str) -> ExitCode {
    let data = match read_input(source) {
        Ok(data) => data,
        Err(err) => {
            eprintln!("sealgate keys import: cannot read {source}: {err}");
            return ExitCode::from(EX_IOERR);
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
        match import_one(dir, cert) {
            Ok(stored) => {
                let addresses = keystore::email_addresses(&stored);
                println!("imported {fingerprint} {}", bracketed(&addresses));
            }
            Err(ImportError::Refused(reason)) => {
                eprintln!("sealgate keys import: refused {fingerprint}: {reason}");
                refused += 1;
            }
            Err(ImportError::Store(err)) => {
                eprintln!(
                    "sealgate keys import: {}",
                    keystore::error_chain(&err).replace('\n', " ")
                );
                return ExitCode::from(EX_IOERR);
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
    if cert.is_tsk() {
        // Don't even strip and store: whoever exported a secret key by mistake should learn
        // about it, and the secret should go no further than this process.
        return Err(ImportError::Refused(
            "contains secret key material; export the public key with `gpg --export`".into(),
        ));
    }
    let fingerprint = cert.fingerprint();
    let stored = keystore::stored(dir, &fingerprint)?;
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
    let problem = if keystore::email_addresses(&candidate).is_empty() {
        Some("no self-signed user ID with an e-mail address".to_string())
    } else {
        openpgp::check(&candidate)
            .err()
            .map(|why| explain(&candidate, &why))
    };
    match problem {
        None => Ok(keystore::insert(dir, &cert)?),
        Some(reason) if update => {
            keystore::insert(dir, &cert)?;
            Err(ImportError::Refused(format!(
                "{reason} (merged into the stored copy, which is no longer used)"
            )))
        }
        Some(reason) => Err(ImportError::Refused(reason)),
    }
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
    ExitCode::SUCCESS
}

fn show(dir: &Path, address: &str) -> ExitCode {
    let store = match KeyStore::open(dir) {
        Ok(store) => store,
        Err(err) => return store_failure("show", &err),
    };
    let certs = store.certificates_for(address);
    if certs.is_empty() {
        eprintln!("sealgate keys show: no certificate for {address}");
        return ExitCode::FAILURE;
    }
    let usable = match store.lookup(address) {
        Lookup::Usable(cert) => {
            println!("{address} resolves to {} (usable)", cert.fingerprint());
            true
        }
        Lookup::Unusable {
            fingerprint,
            reason,
        } => {
            println!("{address} resolves to {fingerprint} (unusable: {reason})");
            false
        }
        // The store did not change between the two calls (same process, no reload).
        Lookup::None => false,
    };
    for cert in &certs {
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
        return ExitCode::from(EX_USAGE);
    };
    match keystore::remove(dir, &fingerprint) {
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
    let addresses = keystore::email_addresses(cert);
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
    eprintln!(
        "sealgate keys {verb}: {}",
        one_line(&keystore::error_chain(err))
    );
    ExitCode::from(EX_IOERR)
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
