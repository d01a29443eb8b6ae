//! One milter session (Postfix's `smtpd_milters`, protocol version 6): sealgate's policy
//! applied before the queue, so a refusal reaches the sending client at RCPT time instead of
//! becoming a bounce.
//!
//! - RCPT: a secure address needs TLS, judged from Postfix's `{tls_version}`/`{cipher}` macros
//!   by the same policy code as the LMTP stage ([`crate::store::secure`]); then the same RCPT checks
//!   as an LMTP RCPT ([`crate::pipeline::Pipeline::check_recipient`]: secure twins are looked
//!   up under their mailbox, an unusable key follows `SEALGATE_UNUSABLE_KEY`).
//! - End of message: the `SEALGATE_SCRUB_HEADERS` fields of scrubbed mail, and a sender's
//!   `X-Sealgate-Encrypted` field of any mail, are deleted (`CHGHEADER` with an empty value).
//!
//! Connection state (the SMTP client: TLS macros) is kept apart from message state (MAIL to
//! end of message or ABORT). A malformed, oversized or out-of-order packet ends the milter
//! session with a log line; Postfix then applies its `milter_default_action`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use sealgate_protocol::Reply;
use sealgate_protocol::milter::consts::{
    SMFIC_CONNECT, SMFIC_HELO, SMFIF_CHGHDRS, SMFIF_SETSYMLIST, SMFIM_ENVFROM, SMFIM_ENVRCPT,
    SMFIP_NOBODY, SMFIP_NODATA, SMFIP_NOUNKNOWN,
};
use sealgate_protocol::milter::{Command, FrameDecoder, MilterError, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::timeout;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::{Config, ScrubMode};
use crate::message::address;
use crate::message::tls::{TlsEvidence, tls_verdict};
use crate::ops::metrics::{Metrics, RecipientOutcome, SessionProtocol};
use crate::pipeline::scrub;
use crate::pipeline::{CopyKind, Envelope, Pipeline, Recipient};
use crate::store::secure::SecureAddresses;

/// The milter protocol version sealgate speaks (Postfix ≥ 2.6 and Sendmail 8.14 speak it).
pub const MILTER_VERSION: u32 = 6;

/// The oldest MTA protocol version we answer (version 2 is Sendmail 8.11's).
pub const MIN_MILTER_VERSION: u32 = 2;

/// Macros asked for at MAIL. The TLS macros are asked for again here (Postfix sends them with
/// HELO by default) because a client may send MAIL without the EHLO after STARTTLS; and a list
/// replaces `milter_mail_macros`, so `{auth_authen}` must be named too.
pub const MAIL_MACROS: &str = "i {mail_addr} {auth_authen} {tls_version} {cipher} {cipher_bits}";

/// Macros asked for at RCPT (the queue ID `i` exists only from the first accepted RCPT on).
pub const RCPT_MACROS: &str = "i {rcpt_addr} {tls_version} {cipher} {cipher_bits}";

/// Macros that describe the SMTP connection's TLS: kept for the whole connection, whatever
/// stage they arrive with.
const TLS_MACROS: [&str; 3] = ["tls_version", "cipher", "cipher_bits"];

/// Set once the missing-SETSYMLIST warning was logged (it would repeat on every connection).
static WARNED_NO_SYMLIST: AtomicBool = AtomicBool::new(false);

/// Set once the missing-CHGHDRS warning was logged.
static WARNED_NO_CHGHDRS: AtomicBool = AtomicBool::new(false);

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// What milter sessions share: the configuration, the pipeline (whose RCPT checks the milter
/// runs too: the LMTP side holds the same one), the counters and the secure addresses.
pub struct Context {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The stages; the milter asks their RCPT-time checks.
    pub pipeline: Arc<Pipeline>,
    /// What is counted.
    pub metrics: Arc<Metrics>,
    /// The secure (TLS-only) addresses.
    pub secure: Arc<SecureAddresses>,
}

/// Serves one milter connection until QUIT, EOF, a timeout, a protocol error or shutdown.
/// Errors end the session with a log line (warn for a misbehaving peer), never a panic.
pub async fn serve<S>(io: S, peer: String, context: Arc<Context>, shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // `mta` is Postfix's end of the milter socket; `client` (the SMTP client, from CONNECT)
    // and `id` (Postfix's queue ID, the `i` macro) are recorded once known.
    let span = info_span!(
        "milter",
        mta = %peer,
        client = tracing::field::Empty,
        id = tracing::field::Empty
    );
    let config = &context.config;
    let mut session = Session {
        io,
        frames: FrameDecoder::new(config.milter_max_frame),
        input: BytesMut::with_capacity(READ_CHUNK),
        output: BytesMut::with_capacity(1024),
        context: Arc::clone(&context),
        negotiated: None,
        conn: ConnState::default(),
        msg: None,
        pending: Vec::new(),
        shutdown,
        draining: false,
    };
    let _active = context.metrics.session(SessionProtocol::Milter);
    async move {
        debug!("milter session opened");
        match session.run().await {
            Ok(()) => debug!("milter session closed"),
            Err(end) if end.is_peer_fault() => warn!(reason = %end, "milter session ended"),
            Err(end) => info!(reason = %end, "milter session ended"),
        }
    }
    .instrument(span)
    .await;
}

/// Why a session ended other than by QUIT.
#[derive(Debug)]
enum End {
    /// The MTA closed the connection between packets without QUIT.
    Closed,
    /// The MTA closed the connection in the middle of a packet.
    Truncated {
        /// Octets of the unfinished packet received.
        buffered: usize,
    },
    /// No packet for `SEALGATE_MILTER_TIMEOUT`.
    TimedOut,
    /// sealgate is shutting down.
    Shutdown,
    /// A packet the codec refused (malformed, oversized, unknown command).
    Malformed(MilterError),
    /// A well-formed packet at the wrong time.
    OutOfOrder(String),
    /// Reading or writing the socket failed.
    Io(String),
}

impl End {
    /// True when the peer broke the protocol (logged as a warning).
    fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            End::Truncated { .. } | End::Malformed(_) | End::OutOfOrder(_)
        )
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Closed => f.write_str("closed by the MTA without QUIT"),
            End::Truncated { buffered } => write!(
                f,
                "closed by the MTA in the middle of a packet ({buffered} octets buffered)"
            ),
            End::TimedOut => f.write_str("timed out waiting for the MTA"),
            End::Shutdown => f.write_str("shutting down"),
            End::Malformed(err) => write!(f, "malformed packet: {err}"),
            End::OutOfOrder(what) => write!(f, "out of order: {what}"),
            End::Io(err) => write!(f, "i/o error: {err}"),
        }
    }
}

/// What was agreed in OPTNEG.
#[derive(Debug, Clone, Copy)]
struct Negotiated {
    /// We may delete headers (`SMFIF_CHGHDRS` granted).
    change_headers: bool,
}

/// The SMTP connection the MTA tells us about; reset by QUIT_NC.
#[derive(Debug, Default)]
struct ConnState {
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
    fn evidence(&self) -> TlsEvidence {
        TlsEvidence::from_macros(
            self.tls.get("tls_version").map(String::as_str),
            self.tls.get("cipher").map(String::as_str),
        )
    }
}

/// Where a message is between MAIL and the end of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// After MAIL: recipients.
    Envelope,
    /// After DATA or the first header.
    Headers,
    /// After the end of the headers.
    Body,
}

/// The message between MAIL and EOM or ABORT.
#[derive(Debug)]
struct Message {
    envelope: Envelope,
    phase: Phase,
    /// The message's headers are to be scrubbed (authenticated sender, or `SEALGATE_SCRUB=all`).
    scrub: bool,
    /// Occurrences so far of each listed header name (lower-case).
    seen: HashMap<String, u32>,
    /// Listed headers to delete at EOM: the name as sent and its 1-based occurrence among
    /// the headers of that name (case-insensitive, as Postfix counts them).
    deletions: Vec<(String, u32)>,
}

/// What the caller does after a command.
enum Next {
    Continue,
    Close,
}

struct Session<S> {
    io: S,
    frames: FrameDecoder,
    input: BytesMut,
    output: BytesMut,
    context: Arc<Context>,
    negotiated: Option<Negotiated>,
    conn: ConnState,
    msg: Option<Message>,
    /// Macros (other than TLS ones) for the next command, as name → value.
    pending: Vec<(String, String)>,
    shutdown: watch::Receiver<bool>,
    /// Shutdown was requested inside a message: close after it.
    draining: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    async fn run(&mut self) -> Result<(), End> {
        loop {
            match self.frames.decode(&mut self.input) {
                Ok(Some(command)) => {
                    let next = self.command(command)?;
                    self.flush().await?;
                    if let Next::Close = next {
                        return Ok(());
                    }
                    if self.draining && self.msg.is_none() {
                        return Err(End::Shutdown);
                    }
                }
                Ok(None) => self.read_more().await?,
                Err(err) => return Err(End::Malformed(err)),
            }
        }
    }

    /// Reads more input. Shutdown ends a session between messages at once; inside a message
    /// it lets the message finish.
    async fn read_more(&mut self) -> Result<(), End> {
        let wait = self.context.config.milter_timeout;
        self.input.reserve(READ_CHUNK);
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.changed(), if !self.draining => {
                    self.draining = true;
                    if self.msg.is_none() {
                        return Err(End::Shutdown);
                    }
                }
                read = timeout(wait, self.io.read_buf(&mut self.input)) => return match read {
                    Ok(Ok(0)) if self.input.is_empty() => Err(End::Closed),
                    Ok(Ok(0)) => Err(End::Truncated { buffered: self.input.len() }),
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(err)) => Err(End::Io(err.to_string())),
                    Err(_) => Err(End::TimedOut),
                },
            }
        }
    }

    fn respond(&mut self, response: Response) {
        response.encode(&mut self.output);
    }

    /// Writes the queued responses in one write: simple MTA implementations (miltertest) read
    /// a packet with one `read` for its header and one for its data.
    async fn flush(&mut self) -> Result<(), End> {
        if self.output.is_empty() {
            return Ok(());
        }
        let wait = self.context.config.milter_timeout;
        let result = timeout(wait, async {
            self.io.write_all(&self.output).await?;
            self.io.flush().await
        })
        .await;
        self.output.clear();
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(End::Io(err.to_string())),
            Err(_) => Err(End::Io("write timed out".into())),
        }
    }

    fn command(&mut self, command: Command) -> Result<Next, End> {
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
                self.in_message("DATA", &[Phase::Envelope], Phase::Headers)?;
                self.respond(Response::Continue);
            }
            Command::Header { name, value: _ } => self.header(name)?,
            Command::EndOfHeaders => {
                self.in_message("EOH", &[Phase::Envelope, Phase::Headers], Phase::Body)?;
                self.respond(Response::Continue);
            }
            Command::Body(_) => {
                // We asked not to get the body (NOBODY); an MTA that sends it anyway gets a
                // plain CONTINUE.
                self.in_message(
                    "BODY",
                    &[Phase::Envelope, Phase::Headers, Phase::Body],
                    Phase::Body,
                )?;
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

    fn negotiate(&mut self, version: u32, actions: u32, protocol: u32) -> Result<(), End> {
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
        if let Some(msg) = self.msg.as_mut()
            && let Some((_, id)) = macros.iter().find(|(n, v)| n == "i" && !v.is_empty())
            && msg.envelope.queue_id.as_deref() != Some(id)
        {
            msg.envelope.queue_id = Some(id.clone());
            tracing::Span::current().record("id", id.as_str());
        }
        macros
    }

    fn mail(&mut self, args: Vec<String>) -> Result<(), End> {
        if self.msg.is_some() {
            return Err(End::OutOfOrder("MAIL inside a message".into()));
        }
        let config = &self.context.config;
        let macros = std::mem::take(&mut self.pending);
        let macro_value = |name: &str| {
            macros
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let authenticated = macro_value("auth_authen").is_some();
        let scrub = match config.scrub {
            ScrubMode::All => true,
            ScrubMode::Authenticated => authenticated,
            ScrubMode::Off => false,
        };
        let queue_id = macro_value("i").map(str::to_string);
        if let Some(id) = &queue_id {
            tracing::Span::current().record("id", id.as_str());
        }
        let reverse_path = args.first().map(|a| bare_address(a)).unwrap_or_default();
        let log = config.log_addresses;
        debug!(from = %log.show(&reverse_path), authenticated, scrub, "MAIL");
        self.msg = Some(Message {
            envelope: Envelope {
                reverse_path,
                queue_id,
                ..Envelope::default()
            },
            phase: Phase::Envelope,
            scrub,
            seen: HashMap::new(),
            deletions: Vec::new(),
        });
        self.respond(Response::Continue);
        Ok(())
    }

    /// The recipient's verdict: TLS for a secure address first, then the LMTP side's RCPT
    /// checks (an unusable key), so both endpoints answer the same recipient the same way.
    fn rcpt(&mut self, args: Vec<String>) -> Result<(), End> {
        self.in_message("RCPT", &[Phase::Envelope], Phase::Envelope)?;
        let macros = self.take_macros();
        let context = Arc::clone(&self.context);
        let config = &context.config;
        let address = match args.first() {
            Some(arg) => bare_address(arg),
            None => macros
                .iter()
                .find(|(n, _)| n == "rcpt_addr")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        };
        let evidence = self.conn.evidence();
        let Some(msg) = self.msg.as_ref() else {
            return Err(End::OutOfOrder("RCPT outside a message".into()));
        };
        let queue_id = msg.envelope.queue_id.as_deref().unwrap_or("-");
        let client = self.conn.client.as_deref().unwrap_or("-");
        let log = config.log_addresses;
        let metrics = &context.metrics;
        if context.secure.classify(&address).is_some() {
            let min = config.tls_min_version;
            if let Err(reply) = tls_verdict(&address, &evidence, min) {
                let outcome = RecipientOutcome::classify(reply.code, CopyKind::Plain, true);
                warn!(
                    rcpt = %log.show(&address), queue_id, client, %evidence, %min,
                    outcome = outcome.as_str(),
                    "refused at RCPT: TLS required for this address"
                );
                metrics.recipient(outcome);
                self.respond(reply_code(&reply));
                return Ok(());
            }
            debug!(rcpt = %log.show(&address), queue_id, %evidence, "TLS-only address: accepted");
        }
        let mut rcpt = Recipient::new(address);
        match context.pipeline.check_recipient(&msg.envelope, &mut rcpt) {
            Ok(()) => self.respond(Response::Continue),
            Err(reply) => {
                let outcome = RecipientOutcome::classify(reply.code, CopyKind::Plain, false);
                info!(
                    rcpt = %log.show(&rcpt.address), queue_id, client,
                    reply = %log.reply(&reply, &rcpt.address),
                    outcome = outcome.as_str(),
                    "refused at RCPT"
                );
                metrics.recipient(outcome);
                self.respond(reply_code(&reply));
            }
        }
        Ok(())
    }

    fn header(&mut self, name: String) -> Result<(), End> {
        self.in_message("HEADER", &[Phase::Envelope, Phase::Headers], Phase::Headers)?;
        let listed = &self.context.config.scrub_headers;
        if let Some(msg) = self.msg.as_mut() {
            let lower = name.to_ascii_lowercase();
            let marker = lower.eq_ignore_ascii_case(scrub::MARKER);
            if marker || (msg.scrub && listed.contains(&lower)) {
                let seen = msg.seen.entry(lower).or_insert(0);
                *seen += 1;
                msg.deletions.push((name, *seen));
            }
        }
        self.respond(Response::Continue);
        Ok(())
    }

    fn end_of_message(&mut self) -> Result<(), End> {
        self.in_message(
            "EOM",
            &[Phase::Envelope, Phase::Headers, Phase::Body],
            Phase::Body,
        )?;
        self.take_macros();
        let Some(msg) = self.msg.take() else {
            return Err(End::OutOfOrder("EOM outside a message".into()));
        };
        let change_headers = self.negotiated.is_some_and(|n| n.change_headers);
        let queue_id = msg.envelope.queue_id.as_deref().unwrap_or("-");
        if !msg.deletions.is_empty() && change_headers {
            // Implementation note: Postfix finds the n-th header of a name among those not
            // yet deleted, so deleting #1 first would turn #2 into #1. Deleting from the last
            // occurrence backwards is right whether or not the MTA renumbers.
            for (name, index) in msg.deletions.iter().rev() {
                self.respond(Response::ChangeHeader {
                    index: *index,
                    name: name.clone(),
                    value: String::new(),
                });
            }
            let names: Vec<&str> = msg.deletions.iter().map(|(n, _)| n.as_str()).collect();
            let client = self.conn.client.as_deref().unwrap_or("-");
            info!(queue_id, client, removed = %names.join(","), "headers scrubbed");
        }
        self.respond(Response::Continue);
        Ok(())
    }

    /// Checks that a message is open and in one of `allowed` phases, then moves it to `next`.
    fn in_message(&mut self, what: &str, allowed: &[Phase], next: Phase) -> Result<(), End> {
        match self.msg.as_mut() {
            Some(msg) if allowed.contains(&msg.phase) => {
                msg.phase = next;
                Ok(())
            }
            Some(msg) => Err(End::OutOfOrder(format!(
                "{what} in the {:?} phase of a message",
                msg.phase
            ))),
            None => Err(End::OutOfOrder(format!("{what} without MAIL"))),
        }
    }
}

/// The command's libmilter name, for logs.
fn command_name(command: &Command) -> &'static str {
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
fn bare_address(arg: &str) -> String {
    address::path_mailbox(arg).to_string()
}

/// An SMTP reply as a milter REPLYCODE: `550` and `5.7.1 <text>`, on one line. (The codec
/// doubles `%`, which Postfix would expand, and blanks CR and NUL.)
fn reply_code(reply: &Reply) -> Response {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use sealgate_protocol::milter::consts::{
        SMFIC_MAIL, SMFIC_RCPT, SMFIF_ADDHDRS, SMFIP_NOEOH, SMFIP_NOHDRS, SMFIP_NR_HDR,
    };
    use sealgate_protocol::milter::{Family, ResponseDecoder};
    use sequoia_openpgp::cert::prelude::*;
    use sequoia_openpgp::serialize::Serialize;
    use tokio::io::{DuplexStream, duplex};
    use tokio::task::JoinHandle;

    use super::*;
    use crate::config::Config;
    use crate::ops::metrics::Metrics;
    use crate::store::keys::KeyStore;

    const SECURE: &str = "user@secure.example.org";
    const NORMAL: &str = "other@example.org";
    const EXPIRED: &str = "expired@example.org";
    const PLAINTEXT_REFUSAL: &str = "5.7.1 <user@secure.example.org>: TLS required for this \
        address; no TLS evidence from a trusted MTA";

    /// A context like `sealgate::run` builds, from `vars` (the secure domains are set), with
    /// a key store holding an expired certificate for [`EXPIRED`].
    fn test_context(vars: &[(&str, &str)]) -> (Arc<Context>, tempfile::TempDir) {
        test_context_with(vars, true)
    }

    /// `with_manifest: false`: a store without manifest (the key store cannot vouch for it).
    fn test_context_with(
        vars: &[(&str, &str)],
        with_manifest: bool,
    ) -> (Arc<Context>, tempfile::TempDir) {
        let mut all: BTreeMap<String, String> = [
            (
                "SEALGATE_SECURE_DOMAINS",
                "secure.example.org=example.org,vault.example.net",
            ),
            ("SEALGATE_TRUSTED_MTA", "mx.test.example"),
            ("SEALGATE_MILTER_LISTEN", "127.0.0.1:0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_vars(&all).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // A store as `sealgate keys` makes it (with its manifest), then a planted entry.
        if with_manifest {
            crate::store::certd::init(dir.path()).unwrap();
        }
        plant_expired(dir.path(), EXPIRED);
        let keys = Arc::new(KeyStore::open(dir.path()).unwrap());
        let secure = Arc::new(SecureAddresses::new(config.secure_domains.clone(), None).unwrap());
        let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).unwrap());
        let pipeline = crate::pipeline(&config, keys, Arc::clone(&secure), Arc::clone(&metrics));
        let context = Context {
            config: Arc::new(config),
            pipeline: Arc::new(pipeline),
            metrics,
            secure,
        };
        (Arc::new(context), dir)
    }

    fn plant_expired(keys: &std::path::Path, address: &str) {
        let two_years = Duration::from_secs(2 * 365 * 24 * 3600);
        let (cert, _) = CertBuilder::new()
            .add_userid(format!("<{address}>"))
            .set_cipher_suite(CipherSuite::Cv25519)
            .add_transport_encryption_subkey()
            .set_creation_time(SystemTime::now() - two_years)
            .set_validity_period(Duration::from_secs(365 * 24 * 3600))
            .generate()
            .unwrap();
        let fpr = cert.fingerprint().to_hex().to_lowercase();
        let dir = keys.join(&fpr[..2]);
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = Vec::new();
        cert.serialize(&mut bytes).unwrap();
        std::fs::write(dir.join(&fpr[2..]), bytes).unwrap();
    }

    /// The MTA's end of an in-memory connection to a running session.
    struct Mta {
        io: DuplexStream,
        input: BytesMut,
        decoder: ResponseDecoder,
        session: JoinHandle<()>,
        stop: watch::Sender<bool>,
    }

    impl Mta {
        fn start(context: &Arc<Context>) -> Mta {
            let (io, server) = duplex(1 << 20);
            let (stop, shutdown) = watch::channel(false);
            let session = tokio::spawn(serve(server, "test".into(), Arc::clone(context), shutdown));
            Mta {
                io,
                input: BytesMut::new(),
                decoder: ResponseDecoder::new(1 << 20),
                session,
                stop,
            }
        }

        async fn send(&mut self, command: Command) {
            let mut out = BytesMut::new();
            command.encode(&mut out);
            self.io.write_all(&out).await.unwrap();
        }

        async fn response(&mut self) -> Response {
            loop {
                if let Some(response) = self.decoder.decode(&mut self.input).unwrap() {
                    return response;
                }
                let n = timeout(Duration::from_secs(10), self.io.read_buf(&mut self.input))
                    .await
                    .expect("a response within 10 s")
                    .unwrap();
                assert!(n > 0, "the session closed");
            }
        }

        async fn ask(&mut self, command: Command) -> Response {
            self.send(command).await;
            self.response().await
        }

        async fn ok(&mut self, command: Command) {
            let what = format!("{command:?}");
            assert_eq!(self.ask(command).await, Response::Continue, "{what}");
        }

        /// End of message: the header edits the milter answers with, up to its final Continue.
        async fn end_of_message_edits(&mut self) -> Vec<Response> {
            self.send(Command::EndOfMessage).await;
            let mut edits = Vec::new();
            loop {
                match self.response().await {
                    Response::Continue => return edits,
                    edit => edits.push(edit),
                }
            }
        }

        /// The edit that deletes the `index`th field called `name`.
        fn deletion(index: u32, name: &str) -> Response {
            Response::ChangeHeader {
                index,
                name: name.into(),
                value: String::new(),
            }
        }

        /// The session ended: EOF, and the task finished.
        async fn closed(mut self) {
            let mut rest = Vec::new();
            timeout(Duration::from_secs(10), self.io.read_to_end(&mut rest))
                .await
                .expect("the session closes within 10 s")
                .unwrap();
            assert!(rest.is_empty(), "unexpected output {rest:?}");
            timeout(Duration::from_secs(10), self.session)
                .await
                .unwrap()
                .unwrap();
        }

        async fn negotiate(&mut self) -> Response {
            self.ask(Command::OptNeg {
                version: 6,
                actions: 0x1FF,
                protocol: 0x1F_FFFF,
            })
            .await
        }

        /// OPTNEG, CONNECT and HELO, with TLS macros at HELO when `tls` names a version.
        async fn open(&mut self, tls: Option<&str>) {
            assert!(matches!(self.negotiate().await, Response::OptNeg { .. }));
            self.ok(Command::Connect {
                hostname: "client.example.net".into(),
                family: Family::Inet,
                port: Some(40000),
                address: Some("192.0.2.10".into()),
            })
            .await;
            self.helo(tls).await;
        }

        async fn helo(&mut self, tls: Option<&str>) {
            if let Some(version) = tls {
                self.send(Command::Macros {
                    stage: SMFIC_HELO,
                    macros: vec![
                        ("tls_version".into(), version.into()),
                        ("cipher".into(), "TLS_AES_256_GCM_SHA384".into()),
                        ("cipher_bits".into(), "256".into()),
                    ],
                })
                .await;
            }
            self.ok(Command::Helo {
                name: "client.example.net".into(),
            })
            .await;
        }

        async fn mail(&mut self, macros: &[(&str, &str)]) {
            if !macros.is_empty() {
                self.send(Command::Macros {
                    stage: SMFIC_MAIL,
                    macros: macros
                        .iter()
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                        .collect(),
                })
                .await;
            }
            self.ok(Command::Mail {
                args: vec!["<sender@example.net>".into(), "SIZE=100".into()],
            })
            .await;
        }

        async fn rcpt(&mut self, address: &str) -> Response {
            self.ask(Command::Rcpt {
                args: vec![format!("<{address}>")],
            })
            .await
        }
    }

    fn refusal(code: u16, text: &str) -> Response {
        Response::ReplyCode {
            code,
            text: text.into(),
        }
    }

    #[tokio::test]
    async fn negotiation_asks_for_what_it_uses() {
        let (context, _keys) = test_context(&[]);
        let mut mta = Mta::start(&context);
        let Response::OptNeg {
            version,
            actions,
            protocol,
            macros,
        } = mta.negotiate().await
        else {
            panic!("no OPTNEG reply");
        };
        assert_eq!(version, 6);
        assert_eq!(actions, SMFIF_CHGHDRS | SMFIF_SETSYMLIST);
        assert_eq!(protocol, SMFIP_NOBODY | SMFIP_NOUNKNOWN | SMFIP_NODATA);
        assert_eq!(
            macros,
            vec![
                (SMFIM_ENVFROM, MAIL_MACROS.to_string()),
                (SMFIM_ENVRCPT, RCPT_MACROS.to_string())
            ]
        );
        mta.send(Command::Quit).await;
        mta.closed().await;

        // An older MTA that offers little: we answer its version, ask for no more than it
        // offers, and request no macros without SETSYMLIST.
        let mut mta = Mta::start(&context);
        let reply = mta
            .ask(Command::OptNeg {
                version: 2,
                actions: SMFIF_ADDHDRS | SMFIF_CHGHDRS,
                protocol: SMFIP_NOBODY | SMFIP_NR_HDR,
            })
            .await;
        assert_eq!(
            reply,
            Response::OptNeg {
                version: 2,
                actions: SMFIF_CHGHDRS,
                protocol: SMFIP_NOBODY,
                macros: Vec::new(),
            }
        );

        // No scrubbing: header rights and headers are still wanted, for the marker.
        let (context, _keys) = test_context(&[("SEALGATE_SCRUB", "off")]);
        let mut mta = Mta::start(&context);
        let Response::OptNeg {
            actions, protocol, ..
        } = mta.negotiate().await
        else {
            panic!("no OPTNEG reply");
        };
        assert_eq!(actions, SMFIF_SETSYMLIST | SMFIF_CHGHDRS);
        assert_eq!(protocol & (SMFIP_NOHDRS | SMFIP_NOEOH), 0);
    }

    #[tokio::test]
    async fn tls_is_connection_state_and_survives_messages_but_not_quit_nc() {
        let (context, _keys) = test_context(&[]);
        let mut mta = Mta::start(&context);
        mta.open(None).await;
        mta.mail(&[]).await;
        assert_eq!(mta.rcpt(SECURE).await, refusal(550, PLAINTEXT_REFUSAL));
        assert_eq!(mta.rcpt(NORMAL).await, Response::Continue);
        mta.send(Command::Abort).await;
        // STARTTLS, then the second EHLO with the TLS macros.
        mta.helo(Some("TLSv1.3")).await;
        mta.mail(&[]).await;
        assert_eq!(mta.rcpt(SECURE).await, Response::Continue);
        mta.send(Command::Abort).await;
        // ABORT drops the message only: the next one is still TLS.
        mta.mail(&[]).await;
        assert_eq!(mta.rcpt(SECURE).await, Response::Continue);
        mta.send(Command::Abort).await;
        // QUIT_NC: a new SMTP client on the same milter connection, without TLS.
        mta.send(Command::QuitNewConnection).await;
        mta.ok(Command::Connect {
            hostname: "[192.0.2.99]".into(),
            family: Family::Inet,
            port: Some(40001),
            address: Some("192.0.2.99".into()),
        })
        .await;
        mta.helo(None).await;
        mta.mail(&[]).await;
        assert_eq!(mta.rcpt(SECURE).await, refusal(550, PLAINTEXT_REFUSAL));
        mta.send(Command::Quit).await;
        mta.closed().await;
    }

    #[tokio::test]
    async fn tls_macros_at_mail_or_rcpt_count_and_the_minimum_applies() {
        let (context, _keys) = test_context(&[("SEALGATE_TLS_MIN_VERSION", "TLSv1.2")]);
        let mut mta = Mta::start(&context);
        mta.open(None).await;
        // No second EHLO after STARTTLS: the macros come with MAIL.
        mta.mail(&[
            ("tls_version", "TLSv1.2"),
            ("cipher", "ECDHE-RSA-AES256-GCM-SHA384"),
        ])
        .await;
        assert_eq!(mta.rcpt(SECURE).await, Response::Continue);
        mta.send(Command::Abort).await;
        mta.send(Command::QuitNewConnection).await;
        mta.ok(Command::Connect {
            hostname: "old.example.net".into(),
            family: Family::Inet6,
            port: Some(25),
            address: Some("2001:db8::1".into()),
        })
        .await;
        mta.helo(None).await;
        mta.mail(&[]).await;
        mta.send(Command::Macros {
            stage: SMFIC_RCPT,
            macros: vec![("tls_version".into(), "TLSv1.1".into())],
        })
        .await;
        assert_eq!(
            mta.rcpt("boss@Vault.example.net").await,
            refusal(
                550,
                "5.7.1 <boss@Vault.example.net>: TLS required for this address; received \
                 with TLSv1.1, at least TLSv1.2 required"
            )
        );
    }

    /// The milter and the LMTP stage give the same verdict for the same session, one seen as
    /// macros, the other as our MTA's Received header.
    #[tokio::test]
    async fn same_verdicts_as_the_lmtp_stage() {
        const REST: &str = "From: a@example.net\r\nSubject: hi\r\n\r\n";
        let received = |with: &str, tls: &str| {
            format!(
                "Received: from client.example.net (unknown [192.0.2.1])\r\n{tls}\
                 \tby mx.test.example (Postfix) with {with} id 79C45C8770;\r\n\
                 \tSun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n{REST}"
            )
        };
        let using = |version: &str, cipher: &str| {
            format!("\t(using {version} with cipher {cipher} (256/256 bits))\r\n")
        };
        let cases: Vec<(String, Option<&str>, Option<&str>)> = vec![
            (
                received("ESMTPS", &using("TLSv1.3", "TLS_AES_256_GCM_SHA384")),
                Some("TLSv1.3"),
                Some("TLS_AES_256_GCM_SHA384"),
            ),
            (
                received("ESMTPS", &using("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384")),
                Some("TLSv1.2"),
                Some("ECDHE-RSA-AES256-GCM-SHA384"),
            ),
            (
                received("ESMTPS", &using("TLSv1.1", "ECDHE-RSA-AES256-SHA")),
                Some("TLSv1.1"),
                Some("ECDHE-RSA-AES256-SHA"),
            ),
            (
                received("ESMTPS", &using("TLSv1", "AES256-SHA")),
                Some("TLSv1"),
                Some("AES256-SHA"),
            ),
            (received("ESMTP", ""), None, None),
            (REST.to_string(), None, None),
        ];
        for min in ["TLSv1", "TLSv1.2", "TLSv1.3"] {
            let (context, _keys) = test_context(&[("SEALGATE_TLS_MIN_VERSION", min)]);
            for (headers, version, cipher) in &cases {
                for address in [SECURE, "boss@vault.example.net", NORMAL] {
                    // LMTP: RCPT checks, then the plan once the header block is in.
                    let pipeline = &context.pipeline;
                    let envelope = Envelope::default();
                    let mut rcpt = Recipient::new(address.to_string());
                    pipeline.check_recipient(&envelope, &mut rcpt).unwrap();
                    let lmtp = match pipeline.plan(&envelope, headers.as_bytes(), &rcpt) {
                        Ok(_) => Response::Continue,
                        Err(refused) => reply_code(&refused.reply),
                    };
                    // Milter: the same session as macros.
                    let mut mta = Mta::start(&context);
                    mta.open(None).await;
                    let mut macros = Vec::new();
                    if let Some(version) = version {
                        macros.push(("tls_version", *version));
                    }
                    if let Some(cipher) = cipher {
                        macros.push(("cipher", *cipher));
                    }
                    mta.mail(&macros).await;
                    let milter = mta.rcpt(address).await;
                    assert_eq!(milter, lmtp, "{min} {address} {version:?}\n{headers}");
                }
            }
        }
    }

    #[tokio::test]
    async fn unknown_key_state_tempfails_at_rcpt_like_lmtp() {
        // The store loses its manifest (a volume that did not mount): whether a recipient
        // has a key is unknown, and the milter tempfails it as LMTP would.
        let (context, _keys) = test_context_with(&[("SEALGATE_UNUSABLE_KEY", "plaintext")], false);
        let mut mta = Mta::start(&context);
        mta.open(Some("TLSv1.3")).await;
        mta.mail(&[]).await;
        let address = "nokey@example.org";
        let mut rcpt = Recipient::new(address.to_string());
        let lmtp = context
            .pipeline
            .check_recipient(&Envelope::default(), &mut rcpt)
            .unwrap_err();
        assert_eq!(lmtp.code, 451);
        let reply = mta.rcpt(address).await;
        assert_eq!(reply, reply_code(&lmtp));
        let Response::ReplyCode { text, .. } = reply else {
            unreachable!()
        };
        assert!(text.starts_with("4.7.0 "), "{text}");
        assert!(text.contains(crate::store::manifest::MANIFEST), "{text}");
    }

    #[tokio::test]
    async fn unusable_key_follows_the_policy_with_the_lmtp_text() {
        for (policy, expected) in [
            ("tempfail", Some(450)),
            ("reject", Some(550)),
            ("plaintext", None),
        ] {
            let (context, _keys) = test_context(&[("SEALGATE_UNUSABLE_KEY", policy)]);
            let mut mta = Mta::start(&context);
            mta.open(Some("TLSv1.3")).await;
            mta.mail(&[]).await;
            for address in [EXPIRED, "expired@secure.example.org"] {
                // What an LMTP RCPT gets for the same recipient.
                let mut rcpt = Recipient::new(address.to_string());
                let lmtp = context
                    .pipeline
                    .check_recipient(&Envelope::default(), &mut rcpt);
                let reply = mta.rcpt(address).await;
                match expected {
                    Some(code) => {
                        let lmtp = lmtp.unwrap_err();
                        assert_eq!(lmtp.code, code);
                        assert_eq!(reply, reply_code(&lmtp), "{policy} {address}");
                        let Response::ReplyCode { text, .. } = reply else {
                            unreachable!()
                        };
                        assert!(text.contains("OpenPGP key is unusable"), "{text}");
                    }
                    None => assert_eq!(reply, Response::Continue, "{policy} {address}"),
                }
            }
        }
    }

    #[tokio::test]
    async fn authenticated_mail_loses_listed_headers_last_occurrence_first() {
        let (context, _keys) = test_context(&[]);
        let mut mta = Mta::start(&context);
        mta.open(Some("TLSv1.3")).await;
        mta.mail(&[("auth_authen", "alice"), ("i", "4ABC")]).await;
        assert_eq!(mta.rcpt(NORMAL).await, Response::Continue);
        for (name, value) in [
            ("X-Mailer", "one"),
            ("Subject", "hi"),
            ("User-Agent", "two"),
            ("x-mailer", "three"),
            ("X-Mailer-Info", "stays"),
        ] {
            mta.ok(Command::Header {
                name: name.into(),
                value: value.into(),
            })
            .await;
        }
        mta.ok(Command::EndOfHeaders).await;
        mta.ok(Command::Body(bytes::Bytes::from_static(b"body\r\n")))
            .await;
        let edits = mta.end_of_message_edits().await;
        let delete = Mta::deletion;
        assert_eq!(
            edits,
            vec![
                delete(2, "x-mailer"),
                delete(1, "User-Agent"),
                delete(1, "X-Mailer")
            ]
        );

        // The next message of the connection, without {auth_authen}: untouched.
        mta.mail(&[]).await;
        assert_eq!(mta.rcpt(NORMAL).await, Response::Continue);
        mta.ok(Command::Header {
            name: "X-Mailer".into(),
            value: "kept".into(),
        })
        .await;
        mta.ok(Command::EndOfHeaders).await;
        assert_eq!(mta.ask(Command::EndOfMessage).await, Response::Continue);

        // SEALGATE_SCRUB=all scrubs without authentication; off never does.
        for (mode, deleted) in [("all", true), ("off", false)] {
            let (context, _keys) = test_context(&[("SEALGATE_SCRUB", mode)]);
            let mut mta = Mta::start(&context);
            mta.open(None).await;
            mta.mail(&[("auth_authen", "alice")]).await;
            mta.ok(Command::Header {
                name: "User-Agent".into(),
                value: "x".into(),
            })
            .await;
            mta.send(Command::EndOfMessage).await;
            let first = mta.response().await;
            assert_eq!(
                first == delete(1, "User-Agent"),
                deleted,
                "{mode}: {first:?}"
            );
        }
    }

    /// A sender's `X-Sealgate-Encrypted` goes from every message, scrubbed or not.
    #[tokio::test]
    async fn a_senders_encryption_marker_is_deleted_in_every_mode() {
        for mode in ["off", "authenticated", "all"] {
            let (context, _keys) = test_context(&[("SEALGATE_SCRUB", mode)]);
            let mut mta = Mta::start(&context);
            mta.open(None).await;
            mta.mail(&[]).await;
            assert_eq!(mta.rcpt(NORMAL).await, Response::Continue);
            for (name, value) in [
                ("X-Sealgate-Encrypted", "FORGED"),
                ("Subject", "hi"),
                ("x-sealgate-encrypted", "again"),
            ] {
                mta.ok(Command::Header {
                    name: name.into(),
                    value: value.into(),
                })
                .await;
            }
            mta.ok(Command::EndOfHeaders).await;
            let edits = mta.end_of_message_edits().await;
            let delete = Mta::deletion;
            assert_eq!(
                edits,
                vec![
                    delete(2, "x-sealgate-encrypted"),
                    delete(1, "X-Sealgate-Encrypted")
                ],
                "{mode}"
            );
        }
    }

    #[tokio::test]
    async fn out_of_order_packets_end_the_session() {
        let (context, _keys) = test_context(&[]);
        let header = || Command::Header {
            name: "Subject".into(),
            value: "x".into(),
        };
        let mail = || Command::Mail {
            args: vec!["<a@example.net>".into()],
        };
        let rcpt = || Command::Rcpt {
            args: vec![format!("<{NORMAL}>")],
        };
        // (commands answered with CONTINUE, then the offending one)
        let cases: Vec<(Vec<Command>, Command)> = vec![
            (vec![], rcpt()),
            (vec![], Command::EndOfMessage),
            (vec![mail()], mail()),
            (vec![mail(), Command::EndOfHeaders], header()),
            (vec![mail(), Command::EndOfHeaders], rcpt()),
            (vec![mail(), header()], Command::Data),
            (
                vec![Command::Connect {
                    hostname: "a".into(),
                    family: Family::Unknown,
                    port: None,
                    address: None,
                }],
                Command::Connect {
                    hostname: "b".into(),
                    family: Family::Unknown,
                    port: None,
                    address: None,
                },
            ),
        ];
        for (before, offending) in cases {
            let what = format!("{before:?} then {offending:?}");
            let mut mta = Mta::start(&context);
            assert!(matches!(mta.negotiate().await, Response::OptNeg { .. }));
            for command in before {
                mta.ok(command).await;
            }
            mta.send(offending).await;
            eprintln!("{what}: expecting the session to end");
            mta.closed().await;
        }
        // Before OPTNEG, and a second OPTNEG.
        let mut mta = Mta::start(&context);
        mta.send(rcpt()).await;
        mta.closed().await;
        let mut mta = Mta::start(&context);
        mta.negotiate().await;
        mta.send(Command::OptNeg {
            version: 6,
            actions: 0,
            protocol: 0,
        })
        .await;
        mta.closed().await;
    }

    #[tokio::test]
    async fn malformed_and_oversized_packets_end_the_session() {
        let (context, _keys) = test_context(&[("SEALGATE_MILTER_MAX_FRAME", "64K")]);
        for bytes in [
            vec![0, 0, 0, 0],
            vec![0xff, 0xff, 0xff, 0xff],
            vec![0, 1, 0, 1, b'B'],
            vec![0, 0, 0, 1, b'Z'],
            vec![0, 0, 0, 2, b'H', b'x'],
        ] {
            let mut mta = Mta::start(&context);
            mta.negotiate().await;
            mta.io.write_all(&bytes).await.unwrap();
            mta.closed().await;
        }
        // A truncated packet, then EOF.
        let mut mta = Mta::start(&context);
        mta.negotiate().await;
        mta.io.write_all(&[0, 0, 0, 9, b'H', b'x']).await.unwrap();
        mta.io.shutdown().await.unwrap();
        mta.closed().await;
    }

    #[tokio::test]
    async fn silence_times_out() {
        let (context, _keys) = test_context(&[("SEALGATE_MILTER_TIMEOUT", "50ms")]);
        let mut mta = Mta::start(&context);
        mta.open(None).await;
        mta.closed().await;
    }

    #[tokio::test]
    async fn shutdown_closes_idle_sessions_and_lets_a_message_finish() {
        let (context, _keys) = test_context(&[]);
        let idle = Mta::start(&context);
        idle.stop.send(true).unwrap();
        idle.closed().await;

        let mut busy = Mta::start(&context);
        busy.open(None).await;
        busy.mail(&[]).await;
        busy.stop.send(true).unwrap();
        assert_eq!(busy.rcpt(NORMAL).await, Response::Continue);
        busy.ok(Command::EndOfHeaders).await;
        assert_eq!(busy.ask(Command::EndOfMessage).await, Response::Continue);
        busy.closed().await;
    }

    #[test]
    fn addresses_lose_brackets_and_routes() {
        let cases = [
            ("<user@example.org>", "user@example.org"),
            ("user@example.org", "user@example.org"),
            (
                "<@relay.example,@b.example:user@example.org>",
                "user@example.org",
            ),
            ("<>", ""),
            ("<\"a b\"@example.org>", "\"a b\"@example.org"),
        ];
        for (arg, expected) in cases {
            assert_eq!(bare_address(arg), expected, "{arg}");
        }
    }
}
