//! Facts about a message, with no I/O: the envelope, canonical addresses, the header
//! tokenizer, the Received trace and TLS evidence.

pub(crate) mod address;
pub(crate) mod header;
pub(crate) mod outcome;
pub(crate) mod received;
pub(crate) mod replies;
pub(crate) mod tls;

use sealgate_protocol::MailParams;

use crate::message::tls::TlsEvidence;

/// The transaction's envelope, as far as stages need it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Envelope {
    /// MAIL FROM's address, `""` for the null sender.
    pub reverse_path: String,
    /// MAIL FROM's parameters.
    pub params: MailParams,
    /// Postfix's queue ID, from XFORWARD IDENT, for logging.
    pub queue_id: Option<String>,
    /// How the message reached our MTA, when that is known with the envelope: before the
    /// queue (the milter, from Postfix's macros). `None` after the queue (LMTP): the evidence
    /// is then our MTA's Received field, known with the header block.
    pub tls: Option<TlsEvidence>,
}

/// One accepted RCPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipient {
    /// The address as the client sent it, without angle brackets: what replies and logs name.
    pub address: String,
    /// The mailbox the message is delivered to and looked up for (keys): the address, unless
    /// a stage routed it elsewhere (a secure twin `user@secure.example.org` goes to
    /// `user@example.org`).
    pub mailbox: String,
}

impl Recipient {
    /// A recipient delivered to the address it was sent to.
    pub(crate) fn new(address: String) -> Recipient {
        Recipient {
            mailbox: address.clone(),
            address,
        }
    }
}
