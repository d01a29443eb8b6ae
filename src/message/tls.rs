//! TLS facts about how a message reached our MTA, and the one rule a secure address applies
//! to them. The facts come from Postfix's `{tls_version}` macro (milter) or from our MTA's own
//! `Received:` field (after the queue); [`TlsEvidence`] does not say which, so both paths give
//! the same verdict for the same facts.

use std::fmt;

use sealgate_protocol::{EnhancedCode, Reply};

use crate::message::received;

/// A TLS protocol version, as Postfix writes it in its Received header (`TLSv1.2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// SSLv3
    Ssl3,
    /// TLSv1
    Tls1_0,
    /// TLSv1.1
    Tls1_1,
    /// TLSv1.2
    Tls1_2,
    /// TLSv1.3
    Tls1_3,
}

impl TlsVersion {
    /// Parses Postfix's and OpenSSL's spelling (`TLSv1.3`, `TLSv1`, `SSLv3`), case-insensitive.
    pub fn parse(raw: &str) -> Option<TlsVersion> {
        match raw.to_ascii_lowercase().as_str() {
            "sslv3" => Some(TlsVersion::Ssl3),
            "tlsv1" | "tlsv1.0" => Some(TlsVersion::Tls1_0),
            "tlsv1.1" => Some(TlsVersion::Tls1_1),
            "tlsv1.2" => Some(TlsVersion::Tls1_2),
            "tlsv1.3" => Some(TlsVersion::Tls1_3),
            _ => None,
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Ssl3 => "SSLv3",
            TlsVersion::Tls1_0 => "TLSv1",
            TlsVersion::Tls1_1 => "TLSv1.1",
            TlsVersion::Tls1_2 => "TLSv1.2",
            TlsVersion::Tls1_3 => "TLSv1.3",
        })
    }
}

/// TLS details a Received field gives in a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsInfo {
    /// The version, when it is one [`TlsVersion`] knows.
    pub version: Option<TlsVersion>,
    /// The version as written: `TLSv1.3`, `TLS1_2`, ...
    pub version_text: String,
    /// The cipher, when named.
    pub cipher: Option<String>,
    /// The comment stands before the field's `by` clause, in the `from` clause: where our MTA
    /// writes it (Postfix), but also where a client's HELO text lands. It is evidence only
    /// together with a protocol word that says TLS ([`TlsEvidence`]).
    pub in_from_clause: bool,
}

/// What we know about how the message reached our MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsEvidence {
    /// No TLS, or nothing we trust says there was TLS.
    Plaintext,
    /// The client talked to our MTA over TLS.
    Tls {
        /// The protocol version, when the evidence names one we know.
        version: Option<TlsVersion>,
        /// The cipher, when the evidence names it.
        cipher: Option<String>,
    },
}

impl TlsEvidence {
    /// After the queue: the evidence of the first `Received:` field of `headers`, which our
    /// own MTA wrote, if its `by` host is one of `trusted` (lower-case host names).
    ///
    /// Fails closed: no Received field, an untrusted `by`, or no sign of TLS give
    /// [`TlsEvidence::Plaintext`]. TLS shows as the RFC 3848 protocol word (`with ESMTPS`,
    /// `ESMTPSA`, `UTF8SMTPS`, ...) or as Postfix's `(using TLSv1.3 with cipher ...)` comment
    /// (`smtpd_tls_received_header = yes`); the version and cipher come from the comment, so
    /// `with ESMTPS` alone gives `Tls { version: None, cipher: None }`.
    ///
    /// A TLS comment next to a protocol word that says *no* TLS (`with ESMTP`) is a
    /// contradiction our MTA never writes: Postfix always appends the `S` for a TLS session.
    /// The client controls part of the field (its HELO name; Postfix replaces spaces and
    /// parentheses in it, but other MTAs may not), so such a field is taken as plaintext, and
    /// so is a TLS comment in the `from` clause with no protocol word at all. The clauses
    /// themselves are read by the field's structure ([`received::parse`]): `by` and `with`
    /// words inside a HELO do not count.
    pub(crate) fn from_received(headers: &[u8], trusted: &[String]) -> TlsEvidence {
        let Some(received) = received::first_trusted(headers, trusted) else {
            return TlsEvidence::Plaintext;
        };
        let says_plaintext = received.with.is_some() && !received.with_tls();
        match received.tls {
            _ if says_plaintext => TlsEvidence::Plaintext,
            // Without a protocol word, a TLS comment in the `from` clause may be the client's
            // own HELO text: no evidence.
            Some(tls) if tls.in_from_clause && !received.with_tls() => TlsEvidence::Plaintext,
            Some(tls) => TlsEvidence::Tls {
                version: tls.version,
                cipher: tls.cipher,
            },
            None if received.with_tls() => TlsEvidence::Tls {
                version: None,
                cipher: None,
            },
            None => TlsEvidence::Plaintext,
        }
    }

    /// Milter: the evidence of Postfix's `{tls_version}` and `{cipher}` macros. Postfix sends
    /// them only for a TLS session, so an absent (or empty) `{tls_version}` means plaintext,
    /// whatever `{cipher}` says. A version we don't know (`TLSv1.4`) gives `version: None`.
    pub(crate) fn from_macros(tls_version: Option<&str>, cipher: Option<&str>) -> TlsEvidence {
        let Some(version) = tls_version.map(str::trim).filter(|v| !v.is_empty()) else {
            return TlsEvidence::Plaintext;
        };
        TlsEvidence::Tls {
            version: TlsVersion::parse(version),
            cipher: cipher
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string),
        }
    }
}

impl fmt::Display for TlsEvidence {
    /// For logs: `plaintext`, `TLSv1.3 TLS_AES_256_GCM_SHA384`, `TLS (version unknown)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsEvidence::Plaintext => f.write_str("plaintext"),
            TlsEvidence::Tls { version, cipher } => {
                match version {
                    Some(version) => write!(f, "{version}")?,
                    None => f.write_str("TLS (version unknown)")?,
                }
                match cipher {
                    Some(cipher) => write!(f, " {cipher}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The verdict for one recipient of a secure address: `Ok(())` accepts; `Err(reply)` refuses
/// with a permanent `550 5.7.1` that says why:
///
/// - `<addr>: TLS required for this address; no TLS evidence from a trusted MTA`
/// - `<addr>: TLS required for this address; received with TLSv1.1, at least TLSv1.2 required`
///
/// TLS of unknown version is accepted whatever `min` is: `with ESMTPS` without a TLS comment
/// (Postfix's default, `smtpd_tls_received_header = no`) is our own MTA's word that TLS was
/// used, and refusing it would refuse every message unless that setting is on. Enforcing
/// `min` after the queue therefore needs `smtpd_tls_received_header = yes`.
///
/// # Errors
/// The reply for this recipient when the evidence falls short.
pub(crate) fn tls_verdict(
    address: &str,
    evidence: &TlsEvidence,
    min: TlsVersion,
) -> Result<(), Reply> {
    let why = match evidence {
        // After the queue this means only that no first Received field from a trusted MTA
        // shows TLS (a wrong SEALGATE_TRUSTED_MTA looks the same); in the milter, that
        // Postfix's macros show none.
        TlsEvidence::Plaintext => "no TLS evidence from a trusted MTA".to_string(),
        TlsEvidence::Tls {
            version: Some(version),
            ..
        } if *version < min => format!("received with {version}, at least {min} required"),
        TlsEvidence::Tls { .. } => return Ok(()),
    };
    Err(Reply::new(
        550,
        EnhancedCode::new(5, 7, 1),
        format!("<{address}>: TLS required for this address; {why}"),
    ))
}
