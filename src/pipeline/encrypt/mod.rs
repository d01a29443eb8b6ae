//! The encryption stage: every copy for a recipient with a usable OpenPGP certificate is
//! stored PGP/MIME-encrypted (RFC 3156) to that certificate only, streaming, unless it is
//! already encrypted (openpgp.md §3, [`mime`]).
//!
//! Fail closed: any error while encrypting ends in `451 4.3.0` for the copy, never in
//! plaintext. Only [`UnusableKey::Plaintext`] delivers in clear, and only for a
//! certificate that is known to be unusable before the copy starts.

pub(crate) mod armor;
pub(crate) mod mime;
pub(crate) mod pgp_mime;
pub(crate) mod verify;

pub use pgp_mime::PgpMime;

use std::sync::Arc;

use sealgate_protocol::{EnhancedCode, Reply};

use crate::config::UnusableKey;
use crate::message::replies;
use crate::openpgp::Unusable;
use crate::ops::metrics::Metrics;
use crate::ops::redact::AddressLog;
use crate::pipeline::encrypt::pgp_mime::fingerprints;
use crate::pipeline::{Envelope, Plan, Recipient, Stage};
use crate::store::{KeyLookup, Lookup, Prefetch};

/// The encryption stage.
pub(crate) struct EncryptStage {
    keys: Arc<dyn KeyLookup>,
    config: EncryptConfig,
    metrics: Arc<Metrics>,
    log: AddressLog,
}

/// The encryption stage's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncryptConfig {
    /// `SEALGATE_UNUSABLE_KEY`: what happens to a recipient whose certificate is unusable.
    pub unusable: UnusableKey,
    /// `SEALGATE_PROTECTED_HEADERS`: copy the protected fields into the encrypted part.
    pub protected_headers: bool,
    /// The verifier's window: how much of a message that may be already encrypted is held
    /// back (header block included) to verify it ([`crate::pipeline::encrypt::verify`]); a
    /// larger one is encrypted.
    pub peek_limit: usize,
}

/// How the encryption stage counts and logs: its metrics and how addresses appear in logs.
pub(crate) struct Observe {
    /// Where unusable keys and encryption failures are counted.
    pub metrics: Arc<Metrics>,
    /// `SEALGATE_LOG_ADDRESSES`.
    pub log: AddressLog,
}

impl EncryptStage {
    /// A stage that looks recipients up in `keys`.
    pub(crate) fn new(keys: Arc<dyn KeyLookup>, config: EncryptConfig, observe: Observe) -> Self {
        EncryptStage {
            keys,
            config,
            metrics: observe.metrics,
            log: observe.log,
        }
    }

    /// Applies the unusable-key policy: `Ok` means "deliver in clear". Counted when the
    /// policy takes effect: a refusal at RCPT or at plan time, plaintext at plan time only
    /// (RCPT time lets such a recipient through, and plan time decides again).
    fn on_unusable(
        &self,
        at_rcpt: bool,
        rcpt: &Recipient,
        fingerprint: &str,
        reason: &Unusable,
    ) -> Result<(), Reply> {
        let address = &rcpt.address;
        let shown = self.log.show(address);
        let policy = self.config.unusable;
        if !(at_rcpt && policy == UnusableKey::Plaintext) {
            self.metrics.unusable_key(reason, policy);
        }
        match policy {
            UnusableKey::Tempfail => {
                tracing::warn!(
                    rcpt = %shown, fingerprint, reason = %reason, kind = reason.kind(),
                    "recipient's key is unusable: tempfail"
                );
                Err(Reply::new(
                    450,
                    EnhancedCode::new(4, 7, 1),
                    format!(
                        "{address}: recipient's OpenPGP key is unusable ({reason}); try again later"
                    ),
                ))
            }
            UnusableKey::Reject => {
                tracing::warn!(
                    rcpt = %shown, fingerprint, reason = %reason, kind = reason.kind(),
                    "recipient's key is unusable: rejected"
                );
                Err(Reply::new(
                    550,
                    EnhancedCode::new(5, 7, 1),
                    format!("{address}: recipient's OpenPGP key is unusable ({reason})"),
                ))
            }
            UnusableKey::Plaintext => {
                tracing::warn!(
                    rcpt = %shown, fingerprint, reason = %reason, kind = reason.kind(),
                    "recipient's key is unusable: delivering unencrypted"
                );
                Ok(())
            }
        }
    }
}

impl EncryptStage {
    /// The key store cannot tell whether `rcpt` has a key: `451 4.7.0`, counted and logged.
    fn on_unknown(&self, rcpt: &Recipient, reason: &str) -> Reply {
        self.metrics.keystore_unknown();
        tracing::warn!(
            rcpt = %self.log.show(&rcpt.address), reason,
            "key store cannot tell whether the recipient has a key: tempfail"
        );
        replies::key_unknown(&rcpt.address, reason)
    }
}

impl Stage for EncryptStage {
    fn name(&self) -> &'static str {
        "encrypt"
    }

    fn needs_prefetch(&self) -> bool {
        self.keys.needs_prefetch()
    }

    fn prefetch<'a>(&'a self, mailboxes: &'a [&'a str]) -> Prefetch<'a> {
        self.keys.prefetch(mailboxes)
    }

    fn check_recipient(&self, _envelope: &Envelope, rcpt: &mut Recipient) -> Result<(), Reply> {
        match self.keys.lookup(&rcpt.mailbox) {
            Lookup::None => {
                tracing::debug!(rcpt = %self.log.show(&rcpt.address), "no OpenPGP key");
                Ok(())
            }
            Lookup::Usable(certs) => {
                tracing::debug!(
                    rcpt = %self.log.show(&rcpt.address),
                    fingerprint = %fingerprints(&certs),
                    "OpenPGP key found"
                );
                Ok(())
            }
            Lookup::Unknown { reason } => Err(self.on_unknown(rcpt, &reason)),
            Lookup::Unusable {
                fingerprint,
                reason,
            } => self.on_unusable(true, rcpt, &fingerprint, &reason),
        }
    }

    fn plan(&self, _envelope: &Envelope, headers: &[u8], rcpt: &Recipient) -> Result<Plan, Reply> {
        let certs = match self.keys.lookup(&rcpt.mailbox) {
            Lookup::None => return Ok(Plan::Unchanged),
            // A recipient that became unknown since RCPT: this copy is tempfailed.
            Lookup::Unknown { reason } => return Err(self.on_unknown(rcpt, &reason)),
            Lookup::Unusable {
                fingerprint,
                reason,
            } => {
                return self
                    .on_unusable(false, rcpt, &fingerprint, &reason)
                    .map(|()| Plan::Unchanged);
            }
            Lookup::Usable(certs) => certs,
        };
        // This lookup judged usability again (a key that expired or was revoked since RCPT
        // counts): the store's verdict is void at the first expiry of the keys involved and
        // is redone when the certificate changes on disk.
        let fingerprint = fingerprints(&certs);
        let shown = self.log.show(&rcpt.address);
        // No verdict from labels: whether the message is already encrypted is verified from
        // its content, by the rewrite, as it streams in.
        let _ = headers;
        tracing::debug!(rcpt = %shown, fingerprint, "encrypting");
        let rewrite = PgpMime::new(
            certs,
            self.config.protected_headers,
            self.config.peek_limit,
            Arc::clone(&self.metrics),
        );
        Ok(Plan::Rewrite(Box::new(rewrite)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
