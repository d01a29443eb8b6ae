//! One milter session (Postfix's `smtpd_milters`, protocol version 6): sealgate's policy
//! applied before the queue, so a refusal reaches the sending client at RCPT time instead of
//! becoming a bounce.
//!
//! - RCPT: the same RCPT checks as an LMTP RCPT ([`crate::pipeline::Pipeline::check_recipient`]),
//!   with Postfix's `{tls_version}`/`{cipher}` macros as the envelope's TLS evidence: a secure
//!   address needs TLS (the require-TLS stage decides), secure twins are looked up under their
//!   mailbox, an unusable key follows `SEALGATE_UNUSABLE_KEY`.
//! - End of message: the `SEALGATE_SCRUB_HEADERS` fields of scrubbed mail, and a sender's
//!   `X-Sealgate-Encrypted` field of any mail, are deleted (`CHGHEADER` with an empty value).
//!
//! Connection state (the SMTP client: TLS macros) is kept apart from message state (MAIL to
//! end of message or ABORT). A malformed, oversized or out-of-order packet ends the milter
//! session with a log line; Postfix then applies its `milter_default_action`.

mod negotiate;
mod session;

use std::fmt;
use std::sync::Arc;

use sealgate_protocol::milter::{Command, FrameDecoder, MilterError, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::{Config, MilterLimits};
use crate::conn::{Conn, Next, ReadEnd, WriteEnd};
use crate::ops::metrics::{Metrics, SessionProtocol};
use crate::pipeline::scrub::ScrubStage;
use crate::pipeline::{Envelope, Pipeline};
use crate::shutdown::Shutdown;
use negotiate::Negotiated;
use session::{ConnState, Message};

/// What milter sessions share: the configuration, the pipeline (whose RCPT checks the milter
/// runs too: the LMTP side holds the same one) and the counters.
pub(crate) struct Context {
    /// The session's settings (its section of the configuration).
    pub limits: MilterLimits,
    /// The stages; the milter asks their RCPT-time checks.
    pub pipeline: Arc<Pipeline>,
    /// What is counted.
    pub metrics: Arc<Metrics>,
    /// Which mail is scrubbed and which fields go: the scrub stage's own rules.
    pub scrub: ScrubStage,
}

impl Context {
    /// The milter's share of the wiring: `pipeline` is the one the LMTP side holds too; the
    /// scrub rules come from `config` as the scrub stage's do.
    pub(crate) fn new(config: &Config, pipeline: Arc<Pipeline>, metrics: Arc<Metrics>) -> Context {
        let scrub = ScrubStage::new(
            config.scrub,
            config.scrub_headers.clone(),
            config.trusted_mta.clone(),
        );
        Context {
            limits: config.milter(),
            pipeline,
            metrics,
            scrub,
        }
    }
}

/// Serves one milter connection until QUIT, EOF, a timeout, a protocol error or shutdown.
/// Errors end the session with a log line (warn for a misbehaving peer), never a panic.
pub(crate) async fn serve<S>(
    io: S,
    peer: String,
    context: Arc<Context>,
    shutdown: impl Into<Shutdown>,
) where
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
    let mut session = Session {
        io: Conn::new(io, shutdown.into(), 1024),
        frames: FrameDecoder::new(context.limits.max_frame),
        context: Arc::clone(&context),
        negotiated: None,
        conn: ConnState::default(),
        msg: None,
        pending: Vec::new(),
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

struct Session<S> {
    io: Conn<S>,
    frames: FrameDecoder,
    context: Arc<Context>,
    negotiated: Option<Negotiated>,
    conn: ConnState,
    msg: Option<Message>,
    /// Macros (other than TLS ones) for the next command, as name → value.
    pending: Vec<(String, String)>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    async fn run(&mut self) -> Result<(), End> {
        loop {
            match self.frames.decode(&mut self.io.input) {
                Ok(Some(command)) => {
                    if let Command::Rcpt { args } = &command
                        && let Some((pipeline, envelope, address)) = self.to_prefetch(args)
                    {
                        pipeline.prefetch(&envelope, &[address]).await;
                    }
                    let next = self.command(command)?;
                    self.flush().await?;
                    if let Next::Close = next {
                        return Ok(());
                    }
                    // Shutdown came inside a message, which is now over.
                    if self.io.is_shutdown() && self.msg.is_none() {
                        return Err(End::Shutdown);
                    }
                }
                Ok(None) => self.read_more().await?,
                Err(err) => return Err(End::Malformed(err)),
            }
        }
    }

    /// A networked key store answers the RCPT check from memory: what to fetch for this
    /// recipient first (Postfix sends one RCPT at a time and waits for its reply), if the
    /// pipeline needs it.
    fn to_prefetch(&self, args: &[String]) -> Option<(Arc<Pipeline>, Envelope, String)> {
        let Some(Message::Envelope { envelope, .. }) = self.msg.as_ref() else {
            return None;
        };
        if !self.context.pipeline.needs_prefetch() {
            return None;
        }
        let address = match args.first() {
            Some(arg) => session::bare_address(arg),
            None => self
                .pending
                .iter()
                .find(|(name, _)| name == "rcpt_addr")
                .map(|(_, value)| value.clone())
                .unwrap_or_default(),
        };
        let mut envelope = envelope.clone();
        envelope.tls = Some(self.conn.evidence());
        Some((Arc::clone(&self.context.pipeline), envelope, address))
    }

    /// Reads more input. Shutdown ends a session between messages at once; inside a message
    /// it lets the message finish.
    async fn read_more(&mut self) -> Result<(), End> {
        let wait = self.context.limits.timeout;
        let between_messages = self.msg.is_none();
        self.io
            .read_more(wait, between_messages)
            .await
            .map_err(|end| match end {
                ReadEnd::Closed if self.io.input.is_empty() => End::Closed,
                ReadEnd::Closed => End::Truncated {
                    buffered: self.io.input.len(),
                },
                ReadEnd::Failed(err) => End::Io(err.to_string()),
                ReadEnd::TimedOut => End::TimedOut,
                ReadEnd::Shutdown => End::Shutdown,
            })
    }

    fn respond(&mut self, response: Response) {
        response.encode(&mut self.io.output);
    }

    /// Writes the queued responses (in one write: see [`Conn::flush`]).
    async fn flush(&mut self) -> Result<(), End> {
        let wait = self.context.limits.timeout;
        self.io.flush(wait).await.map_err(|end| match end {
            WriteEnd::Failed(err) => End::Io(err.to_string()),
            WriteEnd::TimedOut => End::Io("write timed out".into()),
        })
    }
}

#[cfg(test)]
mod tests;
