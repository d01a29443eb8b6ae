//! What became of a recipient and of a message: what a copy turned out to be, why a stage
//! refused, the outcomes counted and logged, and the one place that logs and counts a
//! recipient's final answer ([`Answer::report`]).

use sealgate_protocol::Reply;
use tracing::{info, warn};

use crate::message::tls::{TlsEvidence, TlsVersion};
use crate::ops::redact::AddressLog;

/// What a recipient's copy turned out to be, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// Not encrypted by sealgate (no key, or the unusable-key policy said plaintext).
    Plain,
    /// Encrypted by sealgate.
    Encrypted,
    /// The recipient has a key, but the message was already encrypted: stored as received.
    PassedEncrypted,
}

/// Why a stage refused a recipient: what the refusal counts as in metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalReason {
    /// A secure (TLS-only) address, and the message came without (enough) TLS.
    NoTls,
    /// Any other refusal (an unusable or unknown key, ...): it counts by its reply code.
    Other,
}

/// A stage's refusal of one recipient, at RCPT or once the header block is known.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    /// What the refusal counts as: the refusing stage's
    /// [`crate::pipeline::Stage::refusal_reason`].
    pub reason: RefusalReason,
    /// The recipient's final reply.
    pub reply: Reply,
}

/// The final outcome of one recipient: the `outcome` label of `sealgate_recipients_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientOutcome {
    /// Stored (2xx) as received, or with headers rewritten, but not encrypted.
    DeliveredPlain,
    /// Stored PGP/MIME-encrypted to the recipient's key.
    DeliveredEncrypted,
    /// The recipient has a key, but the message was already encrypted: stored as received.
    PassedEncrypted,
    /// A secure (TLS-only) address, and the message came without (enough) TLS.
    RefusedNoTls,
    /// Any 4xx: Postfix keeps the message and retries.
    Tempfailed,
    /// Any other 5xx: the sender gets a bounce.
    Rejected,
}

impl RecipientOutcome {
    /// Every outcome, in label order.
    pub const ALL: [RecipientOutcome; 6] = [
        RecipientOutcome::DeliveredPlain,
        RecipientOutcome::DeliveredEncrypted,
        RecipientOutcome::PassedEncrypted,
        RecipientOutcome::RefusedNoTls,
        RecipientOutcome::Tempfailed,
        RecipientOutcome::Rejected,
    ];

    /// The label value (also logged as `outcome=`).
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientOutcome::DeliveredPlain => "delivered_plain",
            RecipientOutcome::DeliveredEncrypted => "delivered_encrypted",
            RecipientOutcome::PassedEncrypted => "passed_encrypted",
            RecipientOutcome::RefusedNoTls => "refused_no_tls",
            RecipientOutcome::Tempfailed => "tempfailed",
            RecipientOutcome::Rejected => "rejected",
        }
    }

    /// Classifies a final reply: `code` is the reply code, `copy` what the recipient's copy
    /// was (meaningful for 2xx only), `no_tls` whether the refusal came from the TLS policy.
    /// Anything that is neither 2xx nor 5xx counts as temporary, as it is for the client.
    pub fn classify(code: u16, copy: CopyKind, no_tls: bool) -> RecipientOutcome {
        match code / 100 {
            2 => match copy {
                CopyKind::Plain => RecipientOutcome::DeliveredPlain,
                CopyKind::Encrypted => RecipientOutcome::DeliveredEncrypted,
                CopyKind::PassedEncrypted => RecipientOutcome::PassedEncrypted,
            },
            5 if no_tls => RecipientOutcome::RefusedNoTls,
            5 => RecipientOutcome::Rejected,
            _ => RecipientOutcome::Tempfailed,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// What became of one message (one DATA): the `outcome` label of `sealgate_messages_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageOutcome {
    /// At least one recipient got a 2xx.
    Accepted,
    /// No 2xx, at least one 4xx.
    Tempfailed,
    /// Every recipient got a 5xx.
    Rejected,
}

impl MessageOutcome {
    /// Every outcome, in label order.
    pub const ALL: [MessageOutcome; 3] = [
        MessageOutcome::Accepted,
        MessageOutcome::Tempfailed,
        MessageOutcome::Rejected,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageOutcome::Accepted => "accepted",
            MessageOutcome::Tempfailed => "tempfailed",
            MessageOutcome::Rejected => "rejected",
        }
    }

    /// The outcome of a message whose recipients got replies with these codes.
    pub fn of(codes: impl IntoIterator<Item = u16>) -> MessageOutcome {
        let mut outcome = MessageOutcome::Rejected;
        for code in codes {
            match code / 100 {
                2 => return MessageOutcome::Accepted,
                5 => {}
                _ => outcome = MessageOutcome::Tempfailed,
            }
        }
        outcome
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One recipient's final reply, and what it came to.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The reply the client gets.
    pub reply: Reply,
    /// Its classification for metrics and logs.
    pub outcome: RecipientOutcome,
    /// The key the recipient's copy was encrypted to, if sealgate encrypted it.
    pub fingerprint: Option<String>,
}

/// Where an answer was decided: what its log line says besides the recipient and outcome.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Decided<'a> {
    /// An LMTP RCPT refused (the transaction's span names the queue ID).
    LmtpRcpt,
    /// The final reply after LMTP DATA: the message's size, and the time since MAIL.
    LmtpData {
        /// The message's size as received.
        octets: u64,
        /// Milliseconds since MAIL.
        elapsed_ms: u64,
    },
    /// A milter RCPT refused: Postfix's queue ID and the SMTP client; a TLS refusal also
    /// names the evidence and the minimum it fell short of.
    MilterRcpt {
        /// Postfix's queue ID, `-` before it is known.
        queue_id: &'a str,
        /// The SMTP client, `-` when unknown.
        client: &'a str,
        /// The TLS evidence of the macros.
        evidence: &'a TlsEvidence,
        /// `SEALGATE_TLS_MIN_VERSION`.
        min: TlsVersion,
    },
}

/// The log targets of the outcome lines: the session's, as `SEALGATE_LOG` filters name them.
const LMTP: &str = "sealgate::lmtp::session";
const MILTER: &str = "sealgate::milter";

/// Where recipient outcomes are counted: [`crate::ops::metrics::Metrics`]. A trait, so that
/// the metrics may import these outcomes without an import circle.
pub(crate) trait Tally {
    /// One recipient got its final answer.
    fn tally(&self, outcome: RecipientOutcome);
}

impl Answer {
    /// A reply decided without a copy being stored (a limit or a failure).
    pub(crate) fn refused(reply: Reply) -> Answer {
        Answer::of_refusal(Refusal {
            reason: RefusalReason::Other,
            reply,
        })
    }

    /// A stage's refusal: no copy is stored.
    pub(crate) fn of_refusal(refusal: Refusal) -> Answer {
        let no_tls = refusal.reason == RefusalReason::NoTls;
        let outcome = RecipientOutcome::classify(refusal.reply.code, CopyKind::Plain, no_tls);
        Answer {
            reply: refusal.reply,
            outcome,
            fingerprint: None,
        }
    }

    /// The recipient's outcome line (addresses as `log` says) and count: the one place both
    /// happen, for LMTP and the milter alike.
    pub(crate) fn report(&self, rcpt: &str, log: AddressLog, tally: &dyn Tally, at: Decided<'_>) {
        let shown = log.show(rcpt);
        let outcome = self.outcome.as_str();
        let code = self.reply.code;
        match at {
            Decided::LmtpRcpt => info!(
                target: LMTP, rcpt = %shown, code, reply = %log.reply(&self.reply, rcpt), outcome,
                "recipient outcome"
            ),
            Decided::LmtpData { octets, elapsed_ms } => info!(
                target: LMTP, rcpt = %shown, code, reply = %log.reply(&self.reply, rcpt), outcome, octets,
                elapsed_ms, "recipient outcome"
            ),
            Decided::MilterRcpt {
                queue_id,
                client,
                evidence,
                min,
            } if self.outcome == RecipientOutcome::RefusedNoTls => warn!(
                target: MILTER, rcpt = %shown, queue_id, client, %evidence, %min, outcome,
                "refused at RCPT: TLS required for this address"
            ),
            Decided::MilterRcpt {
                queue_id, client, ..
            } => info!(
                target: MILTER, rcpt = %shown, queue_id, client, reply = %log.reply(&self.reply, rcpt), outcome,
                "refused at RCPT"
            ),
        }
        tally.tally(self.outcome);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use sealgate_protocol::EnhancedCode;

    use super::*;

    #[derive(Default)]
    struct Counted(Mutex<Vec<RecipientOutcome>>);

    impl Tally for Counted {
        fn tally(&self, outcome: RecipientOutcome) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(outcome);
        }
    }

    /// Each answer is counted once, wherever it was decided.
    #[test]
    fn report_counts_every_answer_once() {
        let counted = Counted::default();
        let no_tls = Answer::of_refusal(Refusal {
            reason: RefusalReason::NoTls,
            reply: Reply::new(550, EnhancedCode::new(5, 7, 1), "TLS required"),
        });
        let tempfail = Answer::refused(Reply::new(452, EnhancedCode::new(4, 5, 3), "x"));
        let evidence = TlsEvidence::Plaintext;
        let milter = Decided::MilterRcpt {
            queue_id: "-",
            client: "-",
            evidence: &evidence,
            min: TlsVersion::Tls1_2,
        };
        let data = Decided::LmtpData {
            octets: 1,
            elapsed_ms: 2,
        };
        for (answer, at) in [
            (&no_tls, milter),
            (&tempfail, milter),
            (&tempfail, Decided::LmtpRcpt),
            (&no_tls, data),
        ] {
            answer.report("a@example.org", AddressLog::Full, &counted, at);
        }
        use RecipientOutcome::{RefusedNoTls, Tempfailed};
        assert_eq!(
            *counted.0.lock().unwrap_or_else(|e| e.into_inner()),
            [RefusedNoTls, Tempfailed, Tempfailed, RefusedNoTls]
        );
    }

    #[test]
    fn outcomes() {
        use RecipientOutcome::*;
        let cases = [
            (250, CopyKind::Plain, false, DeliveredPlain),
            (250, CopyKind::Encrypted, false, DeliveredEncrypted),
            (250, CopyKind::PassedEncrypted, false, PassedEncrypted),
            (550, CopyKind::Plain, true, RefusedNoTls),
            (550, CopyKind::Plain, false, Rejected),
            (451, CopyKind::Encrypted, false, Tempfailed),
            (450, CopyKind::Plain, true, Tempfailed),
            (421, CopyKind::Plain, false, Tempfailed),
        ];
        for (code, copy, no_tls, expected) in cases {
            assert_eq!(
                RecipientOutcome::classify(code, copy, no_tls),
                expected,
                "{code}"
            );
        }
        assert_eq!(
            MessageOutcome::of([550, 250, 451]),
            MessageOutcome::Accepted
        );
        assert_eq!(MessageOutcome::of([550, 451]), MessageOutcome::Tempfailed);
        assert_eq!(MessageOutcome::of([550, 552]), MessageOutcome::Rejected);
    }
}
