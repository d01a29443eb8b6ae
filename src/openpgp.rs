//! OpenPGP certificate checks shared by the key store, the key tooling and the encryption
//! stage: is a certificate usable for encryption *now*, and to which keys do we encrypt.
//! This is the only place that decides "usable", so RCPT time, DATA time and `keys import`
//! always agree.

use std::fmt;
use std::time::SystemTime;

use sequoia_openpgp::cert::ValidCert;
use sequoia_openpgp::cert::amalgamation::key::ValidErasedKeyAmalgamation;
use sequoia_openpgp::packet::Signature;
use sequoia_openpgp::packet::key::PublicParts;
use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::serialize::stream::Recipient;
use sequoia_openpgp::types::{Features, KeyFlags, RevocationStatus};
use sequoia_openpgp::{Cert, KeyHandle, Packet};

use crate::message::address;

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
///
/// # Errors
/// Why the certificate is unusable.
pub fn recipients(cert: &Cert) -> Result<Vec<Recipient<'_>>, Unusable> {
    let (_, keys) = encryption_keys(cert)?;
    Ok(keys
        .into_iter()
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
        .collect())
}

/// Whether `cert` can be encrypted to now and, if so, until when that stays true by the
/// clock alone: the earliest expiry of the primary key and of the keys [`recipients`] picks
/// (`None`: none expires).
///
/// # Errors
/// Why the certificate is unusable.
pub fn usable_until(cert: &Cert) -> Result<Option<SystemTime>, Unusable> {
    let (valid, keys) = encryption_keys(cert)?;
    Ok(keys
        .iter()
        .filter_map(|ka| ka.key_expiration_time())
        .chain(valid.primary_key().key_expiration_time())
        .min())
}

/// Whether `cert` can be encrypted to now.
///
/// # Errors
/// Why not.
pub fn check(cert: &Cert) -> Result<(), Unusable> {
    usable_until(cert).map(|_| ())
}

/// `cert` as valid now under [`POLICY`], and its live encryption keys (never none).
/// Certificate-level revocation is checked explicitly: `revoked(false)` on keys does not.
fn encryption_keys(cert: &Cert) -> Result<(ValidCert<'_>, Vec<EncryptionKey<'_>>), Unusable> {
    let valid = cert
        .with_policy(&POLICY, None)
        .map_err(|e| Unusable::Policy(e.to_string()))?;
    if let RevocationStatus::Revoked(_) = valid.revocation_status() {
        return Err(Unusable::Revoked);
    }
    if valid.alive().is_err() {
        return Err(Unusable::Expired);
    }
    let keys: Vec<EncryptionKey<'_>> = valid
        .keys()
        .supported()
        .alive()
        .revoked(false)
        .key_flags(
            KeyFlags::empty()
                .set_storage_encryption()
                .set_transport_encryption(),
        )
        .collect();
    if keys.is_empty() {
        return Err(Unusable::NoEncryptionSubkey);
    }
    Ok((valid, keys))
}

type EncryptionKey<'a> = ValidErasedKeyAmalgamation<'a, PublicParts>;

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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use sequoia_openpgp::cert::prelude::*;
    use sequoia_openpgp::types::{KeyFlags, RevocationStatus};

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn generate(builder: CertBuilder<'_>) -> Cert {
        builder.generate().expect("generate").0
    }

    /// Shaped like GnuPG's default keys: a primary key plus one encryption subkey.
    fn with_encryption(suite: CipherSuite) -> CertBuilder<'static> {
        CertBuilder::new()
            .add_userid("<alice@example.org>")
            .set_cipher_suite(suite)
            .add_storage_encryption_subkey()
            .add_transport_encryption_subkey()
    }

    #[test]
    fn cv25519_and_rsa3k_are_usable() {
        for suite in [CipherSuite::Cv25519, CipherSuite::RSA3k] {
            let cert = generate(with_encryption(suite));
            let recipients = recipients(&cert).expect("usable");
            // Both subkeys (storage and transport flags) are encrypted to.
            assert_eq!(recipients.len(), 2, "{suite:?}");
            assert_eq!(check(&cert), Ok(()));
        }
    }

    #[test]
    fn seipdv2_advertising_cert_is_usable_with_keyid_handles() {
        // Sequoia's default Features include SEIPDv2 (0x08); the cert must still be usable,
        // and its v4 keys get a KeyID handle (PKESKv3 + SEIPDv1 follow from that).
        let cert = generate(with_encryption(CipherSuite::Cv25519));
        let features = cert
            .with_policy(&POLICY, None)
            .expect("valid")
            .features()
            .expect("features");
        assert!(features.supports_seipdv2());
        for recipient in recipients(&cert).expect("usable") {
            assert!(
                matches!(recipient.key_handle(), Some(KeyHandle::KeyID(_))),
                "{:?}",
                recipient.key_handle()
            );
        }
    }

    #[test]
    fn seipdv1_only_cert_is_usable() {
        let builder = with_encryption(CipherSuite::Cv25519)
            .set_features(Features::empty().set_seipdv1())
            .expect("features");
        assert_eq!(check(&generate(builder)), Ok(()));
    }

    #[test]
    fn expired_cert() {
        let now = SystemTime::now();
        let cert = generate(
            with_encryption(CipherSuite::Cv25519)
                .set_creation_time(now - 730 * DAY)
                .set_validity_period(365 * DAY),
        );
        assert_eq!(check(&cert), Err(Unusable::Expired));
    }

    #[test]
    fn revoked_cert() {
        let (cert, revocation) = with_encryption(CipherSuite::RSA3k)
            .generate()
            .expect("generate");
        assert_eq!(check(&cert), Ok(()));
        let (cert, _) = cert.insert_packets(revocation).expect("merge");
        assert!(matches!(
            cert.revocation_status(&POLICY, None),
            RevocationStatus::Revoked(_)
        ));
        assert_eq!(check(&cert), Err(Unusable::Revoked));
    }

    #[test]
    fn primary_only_has_no_encryption_subkey() {
        // `CertBuilder::new()` makes a certification-only primary key, like
        // `gpg --quick-gen-key ... rsa3072 sign never` (no subkey).
        let cert = generate(CertBuilder::new().add_userid("<dave@example.org>"));
        assert_eq!(check(&cert), Err(Unusable::NoEncryptionSubkey));
        let signing_only = generate(
            CertBuilder::new()
                .add_userid("<dave@example.org>")
                .add_signing_subkey(),
        );
        assert_eq!(check(&signing_only), Err(Unusable::NoEncryptionSubkey));
    }

    #[test]
    fn expired_encryption_subkey_alone_is_no_encryption_subkey() {
        let now = SystemTime::now();
        let cert = generate(
            CertBuilder::new()
                .add_userid("<erin@example.org>")
                .set_creation_time(now - 2 * DAY)
                .add_subkey(
                    KeyFlags::empty()
                        .set_storage_encryption()
                        .set_transport_encryption(),
                    DAY,
                    CipherSuite::Cv25519,
                ),
        );
        assert_eq!(check(&cert), Err(Unusable::NoEncryptionSubkey));
    }

    #[test]
    fn usable_until_is_the_first_expiry_among_primary_and_encryption_keys() {
        // OpenPGP times are whole seconds.
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs());
        let forever = generate(with_encryption(CipherSuite::Cv25519));
        assert_eq!(usable_until(&forever), Ok(None));

        let created = now - DAY;
        let subkey_expires = generate(
            CertBuilder::new()
                .add_userid("<erin@example.org>")
                .set_creation_time(created)
                .set_validity_period(None)
                .add_subkey(
                    KeyFlags::empty().set_storage_encryption(),
                    10 * DAY,
                    CipherSuite::Cv25519,
                ),
        );
        assert_eq!(usable_until(&subkey_expires), Ok(Some(created + 10 * DAY)));

        let primary_first = generate(
            with_encryption(CipherSuite::Cv25519)
                .set_creation_time(created)
                .set_validity_period(3 * DAY),
        );
        assert_eq!(usable_until(&primary_first), Ok(Some(created + 3 * DAY)));
    }

    #[test]
    fn not_yet_valid_cert_fails_the_policy() {
        let cert = generate(
            with_encryption(CipherSuite::Cv25519).set_creation_time(SystemTime::now() + DAY),
        );
        let err = check(&cert).expect_err("not valid yet");
        assert_eq!(err.kind(), "policy");
        assert!(err.to_string().starts_with("rejected by policy: "), "{err}");
    }

    #[test]
    fn display_and_kind() {
        let cases = [
            (Unusable::Expired, "expired", "expired"),
            (Unusable::Revoked, "revoked", "revoked"),
            (
                Unusable::NoEncryptionSubkey,
                "no encryption-capable subkey",
                "no_encryption_subkey",
            ),
            (
                Unusable::Policy("sha1".into()),
                "rejected by policy: sha1",
                "policy",
            ),
        ];
        for (reason, display, kind) in cases {
            assert_eq!(reason.to_string(), display);
            assert_eq!(reason.kind(), kind);
        }
    }
}
