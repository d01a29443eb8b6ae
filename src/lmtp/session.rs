//! One LMTP session (RFC 2033): commands in, replies out, pipelined; DATA streamed through the
//! pipeline to the next hop; one final reply per accepted RCPT. Connection state (who the
//! client is) is kept apart from transaction state (this message), which RSET and the end of
//! DATA drop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use sealgate_protocol::{
    BareNewline, Command, DataDecoder, LineDecoder, LineError, MailParams, Reply, parse_command,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument, Span, debug, info, info_span, warn};

use crate::conn::{self, Conn, Next, READ_CHUNK, WriteEnd};
use crate::lmtp::Context;
use crate::lmtp::fanout::Fanout;
use crate::message::outcome::{Answer, Decided, MessageOutcome};
use crate::message::replies::{
    self, bad_sequence, command_error, internal_error, ok, shutting_down, syntax_error, too_big,
};
use crate::ops::metrics::SessionProtocol;
use crate::ops::redact::AddressLog;
use crate::pipeline::{Envelope, Recipient};
use crate::shutdown::Shutdown;

/// Who the client is; lives for the whole connection.
struct ConnState {
    lhlo: Option<String>,
    /// XFORWARD attributes: kept for logging, never forwarded; reset after each transaction.
    xforward: Vec<(String, String)>,
}

/// The message being received; dropped by RSET and at the end of DATA.
struct Transaction {
    envelope: Envelope,
    /// Accepted RCPTs in order, duplicates included: each gets one reply after DATA.
    recipients: Vec<Recipient>,
    started: Instant,
    /// The transaction's span (`txn`), child of the session's: carries Postfix's queue ID
    /// (`queue_id`), from XFORWARD IDENT or, once the header block is known, from our MTA's
    /// Received field.
    span: Span,
}

/// Serves one LMTP connection until QUIT, EOF, a timeout or shutdown. Errors end as a reply to
/// the client or a closed connection, never as a panic.
pub(crate) async fn serve<S>(
    io: S,
    peer: String,
    shared: Arc<Context>,
    shutdown: impl Into<Shutdown>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let span = info_span!("lmtp", %peer);
    let _active = shared.metrics.session(SessionProtocol::Lmtp);
    let mut session = Session {
        io: Conn::new(io, shutdown.into(), 4096),
        shared: Arc::clone(&shared),
        lines: LineDecoder::new(shared.limits.max_line_length),
        conn: ConnState {
            lhlo: None,
            xforward: Vec::new(),
        },
        txn: None,
    };
    async move {
        debug!("session opened");
        match session.run().await {
            Ok(()) => debug!("session closed"),
            Err(err) => debug!(%err, "session ended"),
        }
    }
    .instrument(span)
    .await;
}

struct Session<S> {
    io: Conn<S>,
    shared: Arc<Context>,
    lines: LineDecoder,
    conn: ConnState,
    txn: Option<Transaction>,
}

/// Why reading from the client stopped.
enum ReadEnd {
    Closed,
    TimedOut,
    Shutdown,
}

impl std::fmt::Display for ReadEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReadEnd::Closed => "closed by peer",
            ReadEnd::TimedOut => "timed out",
            ReadEnd::Shutdown => "shutting down",
        })
    }
}

/// Why a session ended other than by QUIT, the client's close, a timeout or shutdown (which
/// end it normally, with their reply).
#[derive(Debug)]
enum End {
    /// A reply could not be written.
    Write(WriteEnd),
    /// A reason given by command handling.
    Other(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Write(WriteEnd::Failed(err)) => write!(f, "write: {err}"),
            End::Write(WriteEnd::TimedOut) => f.write_str("write timed out"),
            End::Other(why) => f.write_str(why),
        }
    }
}

impl From<String> for End {
    fn from(why: String) -> End {
        End::Other(why)
    }
}

/// For the command handlers that still end a session with a `String`.
impl From<End> for String {
    fn from(end: End) -> String {
        end.to_string()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    async fn run(&mut self) -> Result<(), End> {
        self.reply(replies::greeting(&self.shared.limits.hostname));
        loop {
            match self.lines.decode(&mut self.io.input) {
                Ok(Some(line)) => {
                    if let Next::Close = self.command(&line).await? {
                        self.flush().await?;
                        return Ok(());
                    }
                }
                Ok(None) => {
                    // Pipelining (RFC 2920): replies go out before we block on a read.
                    self.flush().await?;
                    let idle = self.txn.is_none();
                    let wait = if idle {
                        self.shared.limits.idle_timeout
                    } else {
                        self.shared.limits.command_timeout
                    };
                    if let Err(end) = self.read_more(wait, idle).await {
                        return self.close_for(end).await;
                    }
                }
                Err(LineError::TooLong) => {
                    self.reply(replies::line_too_long(self.shared.limits.max_line_length));
                }
                Err(_) => self.reply(syntax_error("Malformed command line")),
            }
        }
    }

    /// Reads more input. Shutdown interrupts only a session between transactions (`idle`).
    async fn read_more(&mut self, wait: Duration, idle: bool) -> Result<(), ReadEnd> {
        self.io
            .read_more(wait, idle)
            .await
            .map_err(|end| match end {
                conn::ReadEnd::Closed | conn::ReadEnd::Failed(_) => ReadEnd::Closed,
                conn::ReadEnd::TimedOut => ReadEnd::TimedOut,
                conn::ReadEnd::Shutdown => ReadEnd::Shutdown,
            })
    }

    async fn close_for(&mut self, end: ReadEnd) -> Result<(), End> {
        match end {
            ReadEnd::Closed => return Ok(()),
            ReadEnd::TimedOut => {
                info!("timeout, closing");
                self.reply(replies::timed_out(&self.shared.limits.hostname));
            }
            ReadEnd::Shutdown => self.reply(shutting_down(&self.shared.limits.hostname)),
        }
        self.flush().await
    }

    fn reply(&mut self, reply: Reply) {
        reply.encode(&mut self.io.output);
    }

    async fn flush(&mut self) -> Result<(), End> {
        let wait = self.shared.limits.command_timeout;
        self.io.flush(wait).await.map_err(End::Write)
    }

    async fn command(&mut self, line: &[u8]) -> Result<Next, String> {
        let command = match parse_command(line) {
            Ok(command) => command,
            Err(err) => {
                self.reply(command_error(&err));
                return Ok(Next::Continue);
            }
        };
        match command {
            Command::Lhlo { domain } => {
                self.txn = None;
                self.conn.lhlo = Some(domain);
                self.reply(self.lhlo_reply());
            }
            Command::Helo { .. } | Command::Ehlo { .. } => self.reply(replies::use_lhlo()),
            Command::Mail {
                reverse_path,
                params,
            } => self.mail(reverse_path, params),
            Command::Rcpt { forward_path, .. } => {
                self.prefetch(&forward_path).await;
                self.rcpt(forward_path);
            }
            Command::Data => return self.data().await,
            Command::Rset => {
                self.txn = None;
                self.conn.xforward.clear();
                self.reply(ok("Ok"));
            }
            Command::Noop => self.reply(ok("Ok")),
            Command::Quit => {
                self.reply(replies::bye());
                return Ok(Next::Close);
            }
            Command::Vrfy { .. } => self.reply(replies::cannot_vrfy()),
            Command::Xforward { attributes } => {
                if self.txn.is_some() {
                    self.reply(bad_sequence("XFORWARD not allowed inside a transaction"));
                } else {
                    self.conn.xforward.extend(attributes);
                    self.reply(ok("Ok"));
                }
            }
            Command::Bdat | Command::StartTls | Command::Auth | Command::Expn | Command::Help => {
                self.reply(replies::not_implemented())
            }
        }
        Ok(Next::Continue)
    }

    fn lhlo_reply(&self) -> Reply {
        let config = &self.shared.limits;
        let mut lines = vec![
            config.hostname.clone(),
            "PIPELINING".into(),
            "ENHANCEDSTATUSCODES".into(),
            "8BITMIME".into(),
        ];
        lines.push(match config.max_message_size {
            Some(limit) => format!("SIZE {limit}"),
            None => "SIZE".into(),
        });
        if self.shared.next_hop.supports_smtputf8() {
            lines.push("SMTPUTF8".into());
        }
        lines.push("XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE".into());
        Reply::plain(250, lines)
    }

    fn mail(&mut self, reverse_path: String, params: MailParams) {
        if self.conn.lhlo.is_none() {
            return self.reply(bad_sequence("Send LHLO first"));
        }
        if self.txn.is_some() {
            return self.reply(bad_sequence("Nested MAIL command"));
        }
        if let (Some(size), Some(limit)) = (params.size, self.shared.limits.max_message_size)
            && size > limit
        {
            return self.reply(too_big(limit));
        }
        let queue_id = self
            .conn
            .xforward
            .iter()
            .find(|(name, _)| name == "IDENT")
            .map(|(_, value)| value.clone());
        let span = info_span!("txn", queue_id = tracing::field::Empty);
        if let Some(id) = &queue_id {
            span.record("queue_id", id.as_str());
        }
        self.txn = Some(Transaction {
            envelope: Envelope {
                reverse_path,
                params,
                queue_id,
                // After the queue: the evidence is our MTA's Received field.
                tls: None,
            },
            recipients: Vec::new(),
            started: Instant::now(),
            span,
        });
        self.reply(replies::sender_ok());
    }

    /// A networked key store answers RCPT checks from memory: before the first of a pipelined
    /// batch of RCPTs, fetch every address in the batch (this one and those already buffered)
    /// in one round trip; the later ones of the batch then find their answers in memory.
    async fn prefetch(&mut self, address: &str) {
        let pipeline = &self.shared.pipeline;
        let Some(txn) = self.txn.as_ref() else {
            return;
        };
        if !pipeline.needs_prefetch() {
            return;
        }
        let mut batch = vec![address.to_string()];
        let buffered = &self.io.input[..];
        let complete = buffered
            .windows(2)
            .rposition(|w| w == b"\r\n")
            .map_or(&buffered[..0], |end| &buffered[..end]);
        // Up to DATA (what follows is the message, not commands), and no more than a
        // transaction may have.
        for line in complete.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match parse_command(line) {
                Ok(Command::Rcpt { forward_path, .. }) => batch.push(forward_path),
                Ok(Command::Data) => break,
                _ => {}
            }
            if batch.len() >= self.shared.limits.max_recipients {
                break;
            }
        }
        pipeline.prefetch(&txn.envelope, &batch).await;
    }

    fn rcpt(&mut self, address: String) {
        let max = self.shared.limits.max_recipients;
        let Some(txn) = self.txn.as_mut() else {
            return self.reply(bad_sequence("Need MAIL before RCPT"));
        };
        let _span = txn.span.clone().entered();
        let answer = if txn.recipients.len() >= max {
            Answer::refused(replies::too_many_recipients())
        } else {
            let mut rcpt = Recipient::new(address.clone());
            match self
                .shared
                .pipeline
                .check_recipient(&txn.envelope, &mut rcpt)
            {
                Ok(()) => {
                    txn.recipients.push(rcpt);
                    return self.reply(replies::recipient_ok());
                }
                Err(refusal) => Answer::of_refusal(refusal),
            }
        };
        // Refused at RCPT: this is the recipient's final answer in this transaction.
        let log = self.shared.limits.log_addresses;
        answer.report(&address, log, &*self.shared.metrics, Decided::LmtpRcpt);
        self.reply(answer.reply);
    }

    /// DATA: 354, stream the message to the next hop, then one reply per accepted RCPT.
    async fn data(&mut self) -> Result<Next, String> {
        let Some(txn) = self.txn.take() else {
            self.reply(bad_sequence("Need MAIL before DATA"));
            return Ok(Next::Continue);
        };
        if txn.recipients.is_empty() {
            self.txn = Some(txn);
            self.reply(bad_sequence("No valid recipients"));
            return Ok(Next::Continue);
        }
        let span = txn.span.clone();
        self.transfer(txn).instrument(span).await
    }

    /// The DATA phase of `txn`, inside its span.
    async fn transfer(&mut self, txn: Transaction) -> Result<Next, String> {
        let data_started = Instant::now();
        self.reply(replies::start_data());
        self.flush().await?;

        let shared = Arc::clone(&self.shared);
        let config = &shared.limits;
        let mut fanout = Some(Fanout::new(&shared, &txn.envelope, &txn.recipients));
        let mut decoder = DataDecoder::new(config.bare_newline);
        let mut chunk = BytesMut::with_capacity(READ_CHUNK + 1024);
        let mut size: u64 = 0;
        let mut refusal: Option<Reply> = None;
        loop {
            if !self.io.input.is_empty() {
                chunk.clear();
                let progress = decoder.decode(&self.io.input, &mut chunk);
                self.io.input.advance(progress.consumed);
                size += chunk.len() as u64;
                if refusal.is_none() {
                    if config.max_message_size.is_some_and(|limit| size > limit) {
                        refusal = config.max_message_size.map(too_big);
                    } else if config.bare_newline == BareNewline::Reject
                        && decoder.saw_bare_newline()
                    {
                        refusal = Some(replies::bare_newline());
                    }
                    // Keep draining to the end of DATA, but nothing more goes to the next hop.
                    if refusal.is_some()
                        && let Some(f) = fanout.take()
                    {
                        f.abort().await;
                    }
                }
                if let Some(f) = fanout.as_mut() {
                    f.feed(&chunk).await;
                }
                if progress.done {
                    break;
                }
            }
            if let Err(end) = self.read_more(config.data_timeout, false).await {
                if let Some(f) = fanout.take() {
                    f.abort().await;
                }
                warn!(reason = %end, octets = size, "DATA interrupted, nothing delivered");
                self.close_for(end).await?;
                return Ok(Next::Close);
            }
        }

        let mut queue_id = txn.envelope.queue_id.clone();
        let mut message_id = None;
        let answers = match (fanout, refusal) {
            (Some(f), None) => {
                queue_id = queue_id.or_else(|| f.queue_id().map(str::to_string));
                message_id = f.message_id().map(str::to_string);
                f.finish().await
            }
            (_, refusal) => {
                vec![Answer::refused(refusal.unwrap_or_else(internal_error)); txn.recipients.len()]
            }
        };
        let elapsed_ms = txn.started.elapsed().as_millis() as u64;
        let outcome = MessageOutcome::of(answers.iter().map(|a| a.reply.code));
        let answers_logged = answers.clone();
        for (rcpt, answer) in txn.recipients.iter().zip(answers) {
            let at = Decided::LmtpData {
                octets: size,
                elapsed_ms,
            };
            answer.report(&rcpt.address, config.log_addresses, &*shared.metrics, at);
            self.reply(answer.reply);
        }
        summary(
            config.log_addresses,
            &txn,
            &answers_logged,
            queue_id.as_deref(),
            message_id.as_deref(),
            size,
            elapsed_ms,
        );
        shared
            .metrics
            .message(outcome, size, data_started.elapsed());
        self.conn.xforward.clear();
        if self.io.is_shutdown() {
            self.reply(shutting_down(&config.hostname));
            return Ok(Next::Close);
        }
        Ok(Next::Continue)
    }
}

/// The message's one summary line (INFO): Postfix's queue ID, the sender, the Message-ID
/// as a token, the size, and each recipient's code, outcome and (if encrypted) key
/// fingerprint, as `rcpt:code:outcome[:fingerprint]` separated by commas. Addresses follow
/// `SEALGATE_LOG_ADDRESSES`.
fn summary(
    log: AddressLog,
    txn: &Transaction,
    answers: &[Answer],
    queue_id: Option<&str>,
    message_id: Option<&str>,
    octets: u64,
    elapsed_ms: u64,
) {
    let recipients: Vec<String> = txn
        .recipients
        .iter()
        .zip(answers)
        .map(|(rcpt, answer)| {
            let mut item = format!(
                "{}:{}:{}",
                log.show(&rcpt.address),
                answer.reply.code,
                answer.outcome.as_str()
            );
            if let Some(fingerprint) = &answer.fingerprint {
                item.push(':');
                item.push_str(fingerprint);
            }
            item
        })
        .collect();
    let reverse_path = &txn.envelope.reverse_path;
    let from = if reverse_path.is_empty() {
        "<>".to_string()
    } else {
        log.show(reverse_path).to_string()
    };
    info!(
        queue_id = queue_id.unwrap_or("-"),
        from = %from,
        message_id = message_id.unwrap_or("-"),
        octets,
        elapsed_ms,
        recipients = %recipients.join(","),
        "message summary"
    );
}
