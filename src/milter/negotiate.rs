//! Option negotiation (OPTNEG): the protocol version sealgate answers, the actions and
//! protocol steps it asks for, and the macros it wants at MAIL and RCPT.

use std::sync::atomic::{AtomicBool, Ordering};

use sealgate_protocol::milter::Response;
use sealgate_protocol::milter::consts::{
    SMFIF_CHGHDRS, SMFIF_SETSYMLIST, SMFIM_ENVFROM, SMFIM_ENVRCPT, SMFIP_NOBODY, SMFIP_NODATA,
    SMFIP_NOUNKNOWN,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, warn};

use super::{End, Session};

/// The milter protocol version sealgate speaks (Postfix ≥ 2.6 and Sendmail 8.14 speak it).
pub(crate) const MILTER_VERSION: u32 = 6;

/// The oldest MTA protocol version we answer (version 2 is Sendmail 8.11's).
pub(crate) const MIN_MILTER_VERSION: u32 = 2;

/// Macros asked for at MAIL. The TLS macros are asked for again here (Postfix sends them with
/// HELO by default) because a client may send MAIL without the EHLO after STARTTLS; and a list
/// replaces `milter_mail_macros`, so `{auth_authen}` must be named too.
pub(crate) const MAIL_MACROS: &str =
    "i {mail_addr} {auth_authen} {tls_version} {cipher} {cipher_bits}";

/// Macros asked for at RCPT (the queue ID `i` exists only from the first accepted RCPT on).
pub(crate) const RCPT_MACROS: &str = "i {rcpt_addr} {tls_version} {cipher} {cipher_bits}";

/// Set once the missing-SETSYMLIST warning was logged (it would repeat on every connection).
static WARNED_NO_SYMLIST: AtomicBool = AtomicBool::new(false);

/// Set once the missing-CHGHDRS warning was logged.
static WARNED_NO_CHGHDRS: AtomicBool = AtomicBool::new(false);

/// What was agreed in OPTNEG.
#[derive(Debug, Clone, Copy)]
pub(super) struct Negotiated {
    /// We may delete headers (`SMFIF_CHGHDRS` granted).
    pub(super) change_headers: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) fn negotiate(
        &mut self,
        version: u32,
        actions: u32,
        protocol: u32,
    ) -> Result<(), End> {
        if self.negotiated.is_some() {
            return Err(End::OutOfOrder("a second OPTNEG".into()));
        }
        if version < MIN_MILTER_VERSION {
            return Err(End::OutOfOrder(format!(
                "the MTA speaks milter protocol version {version}; at least {MIN_MILTER_VERSION} is needed"
            )));
        }
        let version = version.min(MILTER_VERSION);
        // Header rights and the headers themselves are wanted even without scrubbing: a
        // sender's `X-Sealgate-Encrypted` field is removed from every message.
        let wanted_actions = SMFIF_SETSYMLIST | SMFIF_CHGHDRS;
        let mut actions = wanted_actions & actions;
        // Macro lists are a version 6 feature.
        if version < 6 {
            actions &= !SMFIF_SETSYMLIST;
        }
        // Don't send what we don't look at.
        let skip = SMFIP_NOBODY | SMFIP_NOUNKNOWN | SMFIP_NODATA;
        let protocol = skip & protocol;
        let macros = if actions & SMFIF_SETSYMLIST != 0 {
            vec![
                (SMFIM_ENVFROM, MAIL_MACROS.to_string()),
                (SMFIM_ENVRCPT, RCPT_MACROS.to_string()),
            ]
        } else {
            // A configuration problem, not a per-connection event: say it once.
            if !WARNED_NO_SYMLIST.swap(true, Ordering::Relaxed) {
                warn!(
                    version,
                    "the MTA does not let us ask for macros (SMFIF_SETSYMLIST): TLS is known \
                     only from milter_helo_macros, authentication only from milter_mail_macros"
                );
            }
            Vec::new()
        };
        let change_headers = actions & SMFIF_CHGHDRS != 0;
        if !change_headers && !WARNED_NO_CHGHDRS.swap(true, Ordering::Relaxed) {
            warn!(
                "the MTA does not let us change headers (SMFIF_CHGHDRS): no scrubbing and no \
                 removal of a sender's X-Sealgate-Encrypted here"
            );
        }
        debug!(version, actions, protocol, "option negotiation");
        self.negotiated = Some(Negotiated { change_headers });
        self.respond(Response::OptNeg {
            version,
            actions,
            protocol,
            macros,
        });
        Ok(())
    }
}
