//! The milter conversation: each command dispatched on the connection state (the SMTP client
//! and its TLS macros, until QUIT_NC) and the message state (MAIL to EOM or ABORT); RCPT
//! verdicts from the pipeline; the header deletions at the end of the message.

use std::collections::HashMap;
use std::sync::Arc;

use sealgate_protocol::Reply;
use sealgate_protocol::milter::consts::{SMFIC_CONNECT, SMFIC_HELO};
use sealgate_protocol::milter::{Command, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use super::{End, Next, Session};
use crate::message::address;
use crate::message::outcome::{Answer, Decided};
use crate::message::tls::TlsEvidence;
use crate::pipeline::{Envelope, Recipient};

/// Macros that describe the SMTP connection's TLS: kept for the whole connection, whatever
/// stage they arrive with.
const TLS_MACROS: [&str; 3] = ["tls_version", "cipher", "cipher_bits"];

/// The SMTP connection the MTA tells us about; reset by QUIT_NC.
#[derive(Debug, Default)]
pub(super) struct ConnState {
    /// CONNECT was seen.
    connected: bool,
    /// The client's address (CONNECT), for logs.
    client: Option<String>,
    /// The latest value of each TLS macro (names without braces).
    tls: HashMap<String, String>,
}

impl ConnState {
    /// TLS evidence from the macros Postfix sent so far on this SMTP connection. A TLS
    /// session never turns back into plaintext, so the latest values stand even if a later
    /// stage does not repeat them.
    pub(super) fn evidence(&self) -> TlsEvidence {
        TlsEvidence::from_macros(
            self.tls.get("tls_version").map(String::as_str),
            self.tls.get("cipher").map(String::as_str),
        )
    }
}

/// The message between MAIL and EOM or ABORT, by phase: each command accepts the phases it
/// matches, and what a phase does not need it does not hold.
#[derive(Debug)]
pub(super) enum Message {
    /// After MAIL: recipients.
    Envelope {
        envelope: Envelope,
        /// The message's headers are to be scrubbed (authenticated sender, or
        /// `SEALGATE_SCRUB=all`).
        scrub: bool,
    },
    /// After DATA or the first header.
    Headers {
        envelope: Envelope,
        scrub: bool,
        deletions: Deletions,
    },
    /// After the end of the headers.
    Body {
        envelope: Envelope,
        deletions: Deletions,
    },
}

impl Message {
    fn envelope_mut(&mut self) -> &mut Envelope {
        match self {
            Message::Envelope { envelope, .. }
            | Message::Headers { envelope, .. }
            | Message::Body { envelope, .. } => envelope,
        }
    }

    /// The phase's name, for logs.
    fn phase(&self) -> &'static str {
        match self {
            Message::Envelope { .. } => "Envelope",
            Message::Headers { .. } => "Headers",
            Message::Body { .. } => "Body",
        }
    }

    /// The headers are over (EOH, or a BODY or EOM without one): the envelope and the
    /// deletions so far.
    fn end_headers(self) -> (Envelope, Deletions) {
        match self {
            Message::Envelope { envelope, .. } => (envelope, Deletions::default()),
            Message::Headers {
                envelope,
                deletions,
                ..
            }
            | Message::Body {
                envelope,
                deletions,
            } => (envelope, deletions),
        }
    }
}

/// Listed headers to delete at EOM.
#[derive(Debug, Default)]
pub(super) struct Deletions {
    /// Occurrences so far of each listed header name (lower-case).
    seen: HashMap<String, u32>,
    /// The name as sent and its 1-based occurrence among the headers of that name
    /// (case-insensitive, as Postfix counts them).
    fields: Vec<(String, u32)>,
}

impl Deletions {
    fn push(&mut self, name: String) {
        let seen = self.seen.entry(name.to_ascii_lowercase()).or_insert(0);
        *seen += 1;
        self.fields.push((name, *seen));
    }
}

/// A packet out of order for `msg` (`None`: outside a message).
fn unexpected(what: &str, msg: Option<&Message>) -> End {
    match msg {
        Some(msg) => End::OutOfOrder(format!("{what} in the {} phase of a message", msg.phase())),
        None => End::OutOfOrder(format!("{what} without MAIL")),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) fn command(&mut self, command: Command) -> Result<Next, End> {
        let name = command_name(&command);
        if self.negotiated.is_none() && !matches!(command, Command::OptNeg { .. }) {
            return Err(End::OutOfOrder(format!("{name} before option negotiation")));
        }
        match command {
            Command::OptNeg {
                version,
                actions,
                protocol,
            } => self.negotiate(version, actions, protocol)?,
            Command::Macros { stage, macros } => self.macros(stage, macros),
            Command::Connect {
                hostname, address, ..
            } => {
                if self.conn.connected {
                    return Err(End::OutOfOrder(format!(
                        "{name} a second time without QUIT_NC"
                    )));
                }
                self.pending.clear();
                self.conn.connected = true;
                let client = match address {
                    Some(address) => format!("{hostname}[{address}]"),
                    None => hostname,
                };
                debug!(%client, "SMTP connection");
                tracing::Span::current().record("client", client.as_str());
                self.conn.client = Some(client);
                self.respond(Response::Continue);
            }
            Command::Helo { name } => {
                self.pending.clear();
                if self.msg.take().is_some() {
                    // Postfix sends ABORT first (a new HELO resets the SMTP transaction);
                    // treat a missing one the same way.
                    debug!("HELO inside a message: message dropped");
                }
                debug!(helo = %name, tls = %self.conn.evidence(), "HELO");
                self.respond(Response::Continue);
            }
            Command::Mail { args } => self.mail(args)?,
            Command::Rcpt { args } => self.rcpt(args)?,
            Command::Data => {
                match self.msg.take() {
                    Some(Message::Envelope { envelope, scrub }) => {
                        self.msg = Some(Message::Headers {
                            envelope,
                            scrub,
                            deletions: Deletions::default(),
                        });
                    }
                    other => return Err(unexpected("DATA", other.as_ref())),
                }
                self.respond(Response::Continue);
            }
            Command::Header { name, value: _ } => self.header(name)?,
            Command::EndOfHeaders => {
                let msg = match self.msg.take() {
                    Some(msg @ (Message::Envelope { .. } | Message::Headers { .. })) => msg,
                    other => return Err(unexpected("EOH", other.as_ref())),
                };
                let (envelope, deletions) = msg.end_headers();
                self.msg = Some(Message::Body {
                    envelope,
                    deletions,
                });
                self.respond(Response::Continue);
            }
            Command::Body(_) => {
                // We asked not to get the body (NOBODY); an MTA that sends it anyway gets a
                // plain CONTINUE.
                let Some(msg) = self.msg.take() else {
                    return Err(unexpected("BODY", None));
                };
                let (envelope, deletions) = msg.end_headers();
                self.msg = Some(Message::Body {
                    envelope,
                    deletions,
                });
                self.respond(Response::Continue);
            }
            Command::EndOfMessage => self.end_of_message()?,
            Command::Abort => {
                self.pending.clear();
                if self.msg.take().is_some() {
                    debug!("message aborted");
                }
            }
            Command::Quit => return Ok(Next::Close),
            Command::QuitNewConnection => {
                // The same milter connection now serves another SMTP connection: nothing of
                // the old one (its TLS above all) may carry over.
                self.pending.clear();
                self.msg = None;
                self.conn = ConnState::default();
                debug!("QUIT_NC: connection state reset");
            }
            Command::Unknown { .. } => {
                // An SMTP command Postfix did not know (we asked not to get these).
                self.pending.clear();
                self.respond(Response::Continue);
            }
        }
        Ok(Next::Continue)
    }

    /// Macros for the command that follows: TLS ones describe the connection and are kept for
    /// it; the others (`i`, `{auth_authen}`, ...) belong to the command they precede.
    fn macros(&mut self, stage: u8, macros: Vec<(String, String)>) {
        for (name, value) in macros {
            if TLS_MACROS.contains(&name.as_str()) {
                self.conn.tls.insert(name, value);
            } else if matches!(stage, SMFIC_CONNECT | SMFIC_HELO) {
                // Connection-level macros other than TLS ones (`j`, `{daemon_name}`, ...) are
                // not used.
            } else {
                self.pending.retain(|(n, _)| *n != name);
                self.pending.push((name, value));
            }
        }
    }

    /// Takes the macros that arrived for this command; a queue ID among them is recorded.
    fn take_macros(&mut self) -> Vec<(String, String)> {
        let macros = std::mem::take(&mut self.pending);
        if let Some(envelope) = self.msg.as_mut().map(Message::envelope_mut)
            && let Some((_, id)) = macros.iter().find(|(n, v)| n == "i" && !v.is_empty())
            && envelope.queue_id.as_deref() != Some(id)
        {
            envelope.queue_id = Some(id.clone());
            tracing::Span::current().record("id", id.as_str());
        }
        macros
    }

    fn mail(&mut self, args: Vec<String>) -> Result<(), End> {
        if self.msg.is_some() {
            return Err(End::OutOfOrder("MAIL inside a message".into()));
        }
        let config = &self.context.limits;
        let macros = std::mem::take(&mut self.pending);
        let macro_value = |name: &str| {
            macros
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let authenticated = macro_value("auth_authen").is_some();
        let scrub = self.context.scrub.applies(authenticated);
        let queue_id = macro_value("i").map(str::to_string);
        if let Some(id) = &queue_id {
            tracing::Span::current().record("id", id.as_str());
        }
        let reverse_path = args.first().map(|a| bare_address(a)).unwrap_or_default();
        let log = config.log_addresses;
        debug!(from = %log.show(&reverse_path), authenticated, scrub, "MAIL");
        self.msg = Some(Message::Envelope {
            envelope: Envelope {
                reverse_path,
                queue_id,
                ..Envelope::default()
            },
            scrub,
        });
        self.respond(Response::Continue);
        Ok(())
    }

    /// The recipient's verdict: the same RCPT checks as an LMTP RCPT
    /// ([`crate::pipeline::Pipeline::check_recipient`]), with the TLS evidence of the macros in the envelope, so
    /// the require-TLS stage decides now (a secure address without TLS is refused here).
    fn rcpt(&mut self, args: Vec<String>) -> Result<(), End> {
        if !matches!(self.msg, Some(Message::Envelope { .. })) {
            return Err(unexpected("RCPT", self.msg.as_ref()));
        }
        let macros = self.take_macros();
        let context = Arc::clone(&self.context);
        let config = &context.limits;
        let address = match args.first() {
            Some(arg) => bare_address(arg),
            None => macros
                .iter()
                .find(|(n, _)| n == "rcpt_addr")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        };
        let evidence = self.conn.evidence();
        let Some(Message::Envelope { envelope, .. }) = self.msg.as_mut() else {
            return Err(unexpected("RCPT", self.msg.as_ref()));
        };
        envelope.tls = Some(evidence.clone());
        let queue_id = envelope.queue_id.as_deref().unwrap_or("-");
        let client = self.conn.client.as_deref().unwrap_or("-");
        let log = config.log_addresses;
        let mut rcpt = Recipient::new(address);
        let response = match context.pipeline.check_recipient(envelope, &mut rcpt) {
            Ok(()) => Response::Continue,
            Err(refusal) => {
                let answer = Answer::of_refusal(refusal);
                let at = Decided::MilterRcpt {
                    queue_id,
                    client,
                    evidence: &evidence,
                    min: config.tls_min_version,
                };
                answer.report(&rcpt.address, log, &*context.metrics, at);
                reply_code(&answer.reply)
            }
        };
        self.respond(response);
        Ok(())
    }

    fn header(&mut self, name: String) -> Result<(), End> {
        let (envelope, scrub, mut deletions) = match self.msg.take() {
            Some(Message::Envelope { envelope, scrub }) => (envelope, scrub, Deletions::default()),
            Some(Message::Headers {
                envelope,
                scrub,
                deletions,
            }) => (envelope, scrub, deletions),
            other => return Err(unexpected("HEADER", other.as_ref())),
        };
        if self.context.scrub.removes(name.as_bytes(), scrub) {
            deletions.push(name);
        }
        self.msg = Some(Message::Headers {
            envelope,
            scrub,
            deletions,
        });
        self.respond(Response::Continue);
        Ok(())
    }

    fn end_of_message(&mut self) -> Result<(), End> {
        if self.msg.is_none() {
            return Err(unexpected("EOM", None));
        }
        self.take_macros();
        let Some(msg) = self.msg.take() else {
            return Err(unexpected("EOM", None));
        };
        let (envelope, deletions) = msg.end_headers();
        let deletions = deletions.fields;
        let change_headers = self.negotiated.is_some_and(|n| n.change_headers);
        let queue_id = envelope.queue_id.as_deref().unwrap_or("-");
        if !deletions.is_empty() && change_headers {
            // Implementation note: Postfix finds the n-th header of a name among those not
            // yet deleted, so deleting #1 first would turn #2 into #1. Deleting from the last
            // occurrence backwards is right whether or not the MTA renumbers.
            for (name, index) in deletions.iter().rev() {
                self.respond(Response::ChangeHeader {
                    index: *index,
                    name: name.clone(),
                    value: String::new(),
                });
            }
            let names: Vec<&str> = deletions.iter().map(|(n, _)| n.as_str()).collect();
            let client = self.conn.client.as_deref().unwrap_or("-");
            info!(queue_id, client, removed = %names.join(","), "headers scrubbed");
        }
        self.respond(Response::Continue);
        Ok(())
    }
}

/// The command's libmilter name, for logs.
pub(super) fn command_name(command: &Command) -> &'static str {
    match command {
        Command::OptNeg { .. } => "OPTNEG",
        Command::Macros { .. } => "MACRO",
        Command::Connect { .. } => "CONNECT",
        Command::Helo { .. } => "HELO",
        Command::Mail { .. } => "MAIL",
        Command::Rcpt { .. } => "RCPT",
        Command::Data => "DATA",
        Command::Header { .. } => "HEADER",
        Command::EndOfHeaders => "EOH",
        Command::Body(_) => "BODY",
        Command::EndOfMessage => "EOM",
        Command::Abort => "ABORT",
        Command::Quit => "QUIT",
        Command::QuitNewConnection => "QUIT_NC",
        Command::Unknown { .. } => "UNKNOWN",
    }
}

/// `<user@example.org>` → `user@example.org`; a source route (`<@a,@b:user@c>`) is dropped.
pub(super) fn bare_address(arg: &str) -> String {
    address::path_mailbox(arg).to_string()
}

/// An SMTP reply as a milter REPLYCODE: `550` and `5.7.1 <text>`, on one line. (The codec
/// doubles `%`, which Postfix would expand, and blanks CR and NUL.)
pub(super) fn reply_code(reply: &Reply) -> Response {
    let mut text = String::new();
    if let Some(enhanced) = &reply.enhanced {
        text.push_str(&enhanced.to_string());
        text.push(' ');
    }
    text.push_str(&reply.lines.join("; ").replace('\n', " "));
    Response::ReplyCode {
        code: reply.code,
        text,
    }
}
