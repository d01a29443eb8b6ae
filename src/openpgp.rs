//! OpenPGP certificate checks shared by the key store, the key tooling and the encryption
//! stage: is a certificate usable for encryption *now*, and to which keys do we encrypt.
//! This is the only place that decides "usable", so RCPT time, DATA time and `keys import`
//! always agree.

use std::fmt;

use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::serialize::stream::Recipient;
use sequoia_openpgp::types::{Features, KeyFlags, RevocationStatus};
use sequoia_openpgp::{Cert, KeyHandle};

/// Sequoia's standard policy, judged at the current time.
pub static POLICY: StandardPolicy<'static> = StandardPolicy::new();

/// Why a certificate cannot be used to encrypt to its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// The certificate (its primary key) has expired.
    Expired,
    /// The certificate is revoked.
    Revoked,
    /// No live, unrevoked subkey with an encryption flag under the standard policy.
    NoEncryptionSubkey,
    /// The certificate does not pass the standard policy at all (e.g. SHA-1 bindings).
    Policy(String),
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::Expired => f.write_str("expired"),
            Unusable::Revoked => f.write_str("revoked"),
            Unusable::NoEncryptionSubkey => f.write_str("no encryption-capable subkey"),
            Unusable::Policy(why) => write!(f, "rejected by policy: {why}"),
        }
    }
}

impl Unusable {
    /// A short token for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Unusable::Expired => "expired",
            Unusable::Revoked => "revoked",
            Unusable::NoEncryptionSubkey => "no_encryption_subkey",
            Unusable::Policy(_) => "policy",
        }
    }
}

/// The keys a message for `cert`'s holder is encrypted to, now.
///
/// v4 certificates get PKESKv3 + SEIPDv1 (with MDC) even when they advertise SEIPDv2, because
/// GnuPG 2.2, rnp and Thunderbird cannot read SEIPDv2; v6 certificates get SEIPDv2.
/// Certificate-level revocation is checked explicitly: `revoked(false)` on keys does not.
///
/// # Errors
/// Why the certificate is unusable.
pub fn recipients(cert: &Cert) -> Result<Vec<Recipient<'_>>, Unusable> {
    let valid = cert
        .with_policy(&POLICY, None)
        .map_err(|e| Unusable::Policy(e.to_string()))?;
    if let RevocationStatus::Revoked(_) = valid.revocation_status() {
        return Err(Unusable::Revoked);
    }
    if valid.alive().is_err() {
        return Err(Unusable::Expired);
    }
    let encryption = KeyFlags::empty()
        .set_storage_encryption()
        .set_transport_encryption();
    let recipients: Vec<Recipient<'_>> = valid
        .keys()
        .supported()
        .alive()
        .revoked(false)
        .key_flags(encryption)
        .map(|ka| {
            if ka.key().version() == 6 {
                Recipient::from(ka)
            } else {
                Recipient::new(
                    Some(Features::empty().set_seipdv1()),
                    KeyHandle::from(ka.key().keyid()),
                    ka.key(),
                )
            }
        })
        .collect();
    if recipients.is_empty() {
        return Err(Unusable::NoEncryptionSubkey);
    }
    Ok(recipients)
}

/// Whether `cert` can be encrypted to now.
///
/// # Errors
/// Why not.
pub fn check(cert: &Cert) -> Result<(), Unusable> {
    recipients(cert).map(|_| ())
}
