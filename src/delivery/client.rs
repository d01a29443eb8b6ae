//! LMTP and SMTP client for the next hop: Dovecot's LMTP (one reply per recipient after the
//! final dot) or Postfix's reinjection smtpd (one reply for the whole copy). Connections that
//! end a transaction cleanly are kept in a small pool and reused, as Postfix does.

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use sealgate_protocol::{Body, DotStuffer, EnhancedCode, Reply, ReplyDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use super::{connection_lost, unreachable};
use crate::config::NextHopClient;
use crate::net::{self, Address, BoxStream, ConnectError};
use crate::ops::metrics::{Metrics, NextHopError, NextHopKind};
use crate::pipeline::{Envelope, Recipient};

/// Stuffed DATA bytes are written in pieces of about this size.
const WRITE_CHUNK: usize = 64 * 1024;

/// The next hop's LMTP or SMTP server.
pub(crate) struct Client {
    endpoint: Address,
    lmtp: bool,
    hostname: String,
    connect_timeout: Duration,
    timeout: Duration,
    pool_size: usize,
    idle: Mutex<Vec<Connection>>,
    /// Where failures and refusals are counted.
    metrics: Arc<Metrics>,
    /// Why the next hop is down (unreachable, or refusing with `421`), `None` while it is up:
    /// the transitions are logged at WARN, once each, not on every delivery.
    down: Mutex<Option<String>>,
}

/// What the server announced in its LHLO/EHLO reply.
#[derive(Debug, Default, Clone, Copy)]
struct Extensions {
    pipelining: bool,
    eight_bit_mime: bool,
    smtputf8: bool,
}

struct Connection {
    stream: BoxStream,
    input: BytesMut,
    decoder: ReplyDecoder,
    extensions: Extensions,
    /// Taken from the pool: the server may have closed it meanwhile.
    reused: bool,
}

/// Why a conversation step failed.
enum Failure {
    /// Could not connect or the greeting was bad: nothing was said yet.
    Connect(String),
    /// The connection broke mid-conversation.
    Lost(String),
    /// A read or write timed out mid-conversation.
    TimedOut(String),
    /// The server refused with this reply.
    Refused(Reply),
}

impl Failure {
    fn into_reply(self) -> Reply {
        match self {
            Failure::Connect(what) => unreachable(&what),
            Failure::Lost(what) | Failure::TimedOut(what) => connection_lost(&what),
            Failure::Refused(reply) => relayable(reply),
        }
    }

    /// The connection is gone: broken, timed out, or the server said so with `421` (Dovecot
    /// does on shutdown and after five idle minutes). On a pooled connection that says nothing
    /// about a fresh one.
    fn is_closed_connection(&self) -> bool {
        match self {
            Failure::Lost(_) | Failure::TimedOut(_) => true,
            Failure::Refused(reply) => reply.code == 421,
            Failure::Connect(_) => false,
        }
    }

    /// The metrics label; `None` for a refusal that is not one (never happens: refusals are
    /// non-positive replies).
    fn error(&self) -> Option<NextHopError> {
        match self {
            Failure::Connect(_) => Some(NextHopError::Connect),
            Failure::Lost(_) => Some(NextHopError::Lost),
            Failure::TimedOut(_) => Some(NextHopError::Timeout),
            Failure::Refused(reply) => NextHopError::refusal(reply.code),
        }
    }
}

impl Client {
    /// A client for `endpoint`; `lmtp` picks LMTP (LHLO, per-recipient replies) over SMTP.
    /// Failures and refusals are counted in `metrics`.
    pub(crate) fn new(
        endpoint: &Address,
        lmtp: bool,
        settings: NextHopClient,
        metrics: Arc<Metrics>,
    ) -> Client {
        Client {
            endpoint: endpoint.clone(),
            lmtp,
            hostname: settings.hostname,
            connect_timeout: settings.connect_timeout,
            timeout: settings.timeout,
            pool_size: settings.pool_size,
            idle: Mutex::new(Vec::new()),
            metrics,
            down: Mutex::new(None),
        }
    }

    /// Whether this is an LMTP (not an SMTP) client.
    pub(crate) fn is_lmtp(&self) -> bool {
        self.lmtp
    }

    fn kind(&self) -> NextHopKind {
        if self.lmtp {
            NextHopKind::Lmtp
        } else {
            NextHopKind::Smtp
        }
    }

    /// Counts a failure of the conversation (once per failed delivery); one that means the
    /// next hop is down (no connection, a broken or timed-out one, `421`) is a state change.
    fn count(&self, failure: &Failure) {
        if let Some(error) = failure.error() {
            self.metrics.next_hop_error(self.kind(), error);
        }
        match failure {
            Failure::Connect(cause) | Failure::Lost(cause) | Failure::TimedOut(cause) => {
                self.went_down(cause);
            }
            Failure::Refused(reply) => self.count_reply_state(reply),
        }
    }

    /// Counts a reply of the next hop if it is a refusal.
    fn count_reply(&self, reply: &Reply) {
        if let Some(error) = NextHopError::refusal(reply.code) {
            self.metrics.next_hop_error(self.kind(), error);
        }
        self.count_reply_state(reply);
    }

    /// `421` is the server closing its doors (Dovecot shutting down, overloaded): down.
    fn count_reply_state(&self, reply: &Reply) {
        if reply.code == 421 {
            self.went_down(&format!("replied {reply}"));
        }
    }

    /// The next hop failed for `cause`: logged at WARN if it was up.
    fn went_down(&self, cause: &str) {
        let mut down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        if down.is_none() {
            tracing::warn!(
                next_hop = %self.endpoint, cause,
                "next hop is down: deliveries get 4xx until it answers again"
            );
            *down = Some(cause.to_string());
        }
    }

    /// The next hop answered a whole transaction (final replies, or refusals of its
    /// recipients or DATA other than `421`): logged at WARN if it was down, with what it had
    /// been. Not at LHLO: a server that greets and then answers `421` (Dovecot shutting down)
    /// is still down.
    fn came_up(&self) {
        let mut down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cause) = down.take() {
            tracing::warn!(
                next_hop = %self.endpoint, was = %cause,
                "next hop is up again"
            );
        }
    }

    pub(super) async fn begin(
        self: &Arc<Self>,
        envelope: &Envelope,
        recipients: &[&Recipient],
    ) -> super::Delivery {
        // A pooled connection the server has closed fails before any recipient was accepted;
        // one retry on a fresh connection covers that.
        let mut attempt = self.checkout().await;
        loop {
            let reused = matches!(&attempt, Ok(c) if c.reused);
            let result = match attempt {
                Ok(conn) => self.envelope(conn, envelope, recipients).await,
                Err(failure) => Err(failure),
            };
            match result {
                Err(failure) if reused && failure.is_closed_connection() => {
                    attempt = self.connect().await;
                }
                Err(failure) => {
                    self.count(&failure);
                    let reply = failure.into_reply();
                    return super::Delivery::Done(vec![reply; recipients.len()]);
                }
                Ok(delivery) => return delivery,
            }
        }
    }

    async fn checkout(&self) -> Result<Connection, Failure> {
        let pooled = self.idle.lock().map(|mut idle| idle.pop()).ok().flatten();
        match pooled {
            Some(mut conn) => {
                conn.reused = true;
                Ok(conn)
            }
            None => self.connect().await,
        }
    }

    fn checkin(&self, mut conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.pool_size
        {
            conn.input.clear();
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Connection, Failure> {
        let target = match &self.endpoint {
            Address::Tcp(addr) => addr.clone(),
            Address::Unix(path) => path.display().to_string(),
        };
        let stream = match net::connect(&self.endpoint, self.connect_timeout).await {
            Ok(stream) => stream,
            Err(ConnectError::TimedOut) => {
                return Err(Failure::Connect(format!("connect to {target} timed out")));
            }
            Err(ConnectError::Failed(err)) => {
                return Err(Failure::Connect(format!(
                    "connect to {target}: {}",
                    err.kind()
                )));
            }
        };
        let mut conn = Connection {
            stream,
            input: BytesMut::with_capacity(4096),
            decoder: ReplyDecoder::new(),
            extensions: Extensions::default(),
            reused: false,
        };
        let greeting = self.read_reply(&mut conn).await.map_err(as_connect)?;
        if greeting.code != 220 {
            return Err(Failure::Connect(format!("greeting {greeting}")));
        }
        let hello = if self.lmtp { "LHLO" } else { "EHLO" };
        self.send(
            &mut conn,
            format!("{hello} {}\r\n", self.hostname).as_bytes(),
        )
        .await
        .map_err(as_connect)?;
        let reply = self.read_reply(&mut conn).await.map_err(as_connect)?;
        if reply.code != 250 {
            return Err(Failure::Connect(format!("{hello} answered {reply}")));
        }
        for line in reply.lines.iter().skip(1) {
            let keyword = line
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => conn.extensions.pipelining = true,
                "8BITMIME" => conn.extensions.eight_bit_mime = true,
                "SMTPUTF8" => conn.extensions.smtputf8 = true,
                _ => {}
            }
        }
        Ok(conn)
    }

    /// MAIL, RCPT for each recipient, DATA: pipelined when the server allows it.
    async fn envelope(
        self: &Arc<Self>,
        mut conn: Connection,
        envelope: &Envelope,
        recipients: &[&Recipient],
    ) -> Result<super::Delivery, Failure> {
        let mut mail = format!("MAIL FROM:<{}>", envelope.reverse_path);
        if envelope.params.body == Some(Body::EightBitMime) && conn.extensions.eight_bit_mime {
            mail.push_str(" BODY=8BITMIME");
        }
        if envelope.params.smtputf8 && conn.extensions.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        mail.push_str("\r\n");
        let rcpts: Vec<String> = recipients
            .iter()
            .map(|r| format!("RCPT TO:<{}>\r\n", r.mailbox))
            .collect();

        let mut rcpt_replies = Vec::with_capacity(recipients.len());
        let data_reply;
        if conn.extensions.pipelining {
            let mut batch = mail.into_bytes();
            for rcpt in &rcpts {
                batch.extend_from_slice(rcpt.as_bytes());
            }
            batch.extend_from_slice(b"DATA\r\n");
            self.send(&mut conn, &batch).await?;
            let mail_reply = closing(self.read_reply(&mut conn).await?)?;
            for _ in &rcpts {
                rcpt_replies.push(closing(self.read_reply(&mut conn).await?)?);
            }
            data_reply = closing(self.read_reply(&mut conn).await?)?;
            if !mail_reply.is_positive() {
                return Err(Failure::Refused(mail_reply));
            }
        } else {
            self.send(&mut conn, mail.as_bytes()).await?;
            let mail_reply = self.read_reply(&mut conn).await?;
            if !mail_reply.is_positive() {
                return Err(Failure::Refused(mail_reply));
            }
            for rcpt in &rcpts {
                self.send(&mut conn, rcpt.as_bytes()).await?;
                rcpt_replies.push(closing(self.read_reply(&mut conn).await?)?);
            }
            if !rcpt_replies.iter().any(Reply::is_positive) {
                rcpt_replies.iter().for_each(|r| self.count_reply(r));
                self.came_up();
                let replies = rcpt_replies.into_iter().map(relayable).collect();
                self.reset(conn).await;
                return Ok(super::Delivery::Done(replies));
            }
            self.send(&mut conn, b"DATA\r\n").await?;
            data_reply = closing(self.read_reply(&mut conn).await?)?;
        }

        let accepted: Vec<usize> = (0..recipients.len())
            .filter(|&i| rcpt_replies[i].is_positive())
            .collect();
        rcpt_replies.iter().for_each(|r| self.count_reply(r));
        if accepted.is_empty() || data_reply.code != 354 {
            if !accepted.is_empty() {
                self.count_reply(&data_reply);
            }
            self.came_up();
            let replies = rcpt_replies
                .into_iter()
                .map(|r| {
                    if r.is_positive() {
                        relayable(data_reply.clone())
                    } else {
                        relayable(r)
                    }
                })
                .collect();
            // The server is between transactions again (DATA was refused): keep the connection.
            self.reset(conn).await;
            return Ok(super::Delivery::Done(replies));
        }
        let replies = rcpt_replies
            .into_iter()
            .map(|r| (!r.is_positive()).then(|| relayable(r)))
            .collect();
        Ok(super::Delivery::Client(Box::new(Delivery {
            client: Arc::clone(self),
            conn: Some(conn),
            replies,
            accepted,
            stuffer: DotStuffer::new(),
            output: BytesMut::with_capacity(WRITE_CHUNK + 4096),
            failure: None,
        })))
    }

    /// After a refused transaction: RSET and pool the connection, or drop it.
    async fn reset(&self, mut conn: Connection) {
        if self.send(&mut conn, b"RSET\r\n").await.is_ok()
            && matches!(self.read_reply(&mut conn).await, Ok(r) if r.is_positive())
        {
            self.checkin(conn);
        }
    }

    async fn send(&self, conn: &mut Connection, bytes: &[u8]) -> Result<(), Failure> {
        self.within("write", conn.stream.write_all(bytes)).await
    }

    async fn read_reply(&self, conn: &mut Connection) -> Result<Reply, Failure> {
        loop {
            match conn.decoder.decode(&mut conn.input) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(err) => return Err(Failure::Lost(format!("bad reply: {err}"))),
            }
            let n = self
                .within("read", conn.stream.read_buf(&mut conn.input))
                .await?;
            if n == 0 {
                return Err(Failure::Lost("closed by the next hop".into()));
            }
        }
    }

    async fn within<T>(
        &self,
        what: &str,
        op: impl Future<Output = io::Result<T>>,
    ) -> Result<T, Failure> {
        match timeout(self.timeout, op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(Failure::Lost(format!("{what}: {}", err.kind()))),
            Err(_) => Err(Failure::TimedOut(format!("{what} timed out"))),
        }
    }
}

/// A `421` before DATA: the server is closing the connection, so no further reply will come
/// (reading on would report "closed by the next hop" instead of the server's own reason).
fn closing(reply: Reply) -> Result<Reply, Failure> {
    if reply.code == 421 {
        Err(Failure::Refused(reply))
    } else {
        Ok(reply)
    }
}

fn as_connect(failure: Failure) -> Failure {
    match failure {
        Failure::Lost(what) | Failure::TimedOut(what) => Failure::Connect(what),
        other => other,
    }
}

/// A reply of the next hop, made fit to pass on: a 2xx, 4xx or 5xx with a correct enhanced
/// code (Postfix reads one from every reply). Anything else becomes a temporary failure.
fn relayable(reply: Reply) -> Reply {
    let class = (reply.code / 100) as u8;
    if !matches!(class, 2 | 4 | 5) {
        return connection_lost(&format!("unexpected reply {reply}"));
    }
    match reply.enhanced {
        Some(code) if code.class == class => reply,
        _ => Reply {
            enhanced: Some(EnhancedCode::new(class, 0, 0)),
            ..reply
        },
    }
}

/// One copy in its DATA phase towards the next hop.
pub(crate) struct Delivery {
    client: Arc<Client>,
    conn: Option<Connection>,
    /// Final reply per recipient; `None` while the next hop still owes one.
    replies: Vec<Option<Reply>>,
    /// Indexes of the recipients the next hop accepted, in RCPT order.
    accepted: Vec<usize>,
    stuffer: DotStuffer,
    output: BytesMut,
    failure: Option<Reply>,
}

impl Delivery {
    pub(super) async fn write(&mut self, data: &[u8]) {
        if self.failure.is_some() {
            return;
        }
        self.stuffer.encode(data, &mut self.output);
        if self.output.len() >= WRITE_CHUNK {
            self.flush().await;
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.failure.is_none()
    }

    async fn flush(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Err(failure) = self.client.send(conn, &self.output).await {
            self.client.count(&failure);
            self.failure = Some(failure.into_reply());
            self.conn = None;
        }
        self.output.clear();
    }

    pub(super) async fn finish(mut self) -> Vec<Reply> {
        if self.failure.is_none() {
            self.stuffer.finish(&mut self.output);
            self.flush().await;
        }
        match (self.conn.take(), self.failure.take()) {
            (Some(mut conn), None) => {
                let complete = self.read_final_replies(&mut conn).await;
                if complete {
                    self.client.checkin(conn);
                }
            }
            (_, failure) => {
                let reply = failure.unwrap_or_else(|| connection_lost("aborted"));
                for &i in &self.accepted {
                    self.replies[i] = Some(reply.clone());
                }
            }
        }
        self.replies
            .into_iter()
            .map(|r| r.unwrap_or_else(|| connection_lost("no reply")))
            .collect()
    }

    /// LMTP: one reply per accepted recipient, in RCPT order. SMTP: one reply for all of them.
    /// Returns whether the conversation ended cleanly (so the connection can be reused).
    async fn read_final_replies(&mut self, conn: &mut Connection) -> bool {
        let expected = if self.client.lmtp {
            self.accepted.len()
        } else {
            1
        };
        let mut got = Vec::with_capacity(expected);
        let mut lost = None;
        while got.len() < expected {
            match self.client.read_reply(conn).await {
                Ok(reply) => got.push(relayable(reply)),
                Err(failure) => {
                    self.client.count(&failure);
                    lost = Some(failure.into_reply());
                    break;
                }
            }
        }
        for reply in &got {
            self.client.count_reply(reply);
        }
        if lost.is_none() && got.iter().all(|r| r.code != 421) {
            self.client.came_up();
        }
        for (n, &i) in self.accepted.iter().enumerate() {
            let reply = if self.client.lmtp {
                got.get(n)
            } else {
                got.first()
            };
            self.replies[i] =
                Some(reply.cloned().unwrap_or_else(|| {
                    lost.clone().unwrap_or_else(|| connection_lost("no reply"))
                }));
        }
        lost.is_none()
    }

    /// Dropping the connection mid-DATA makes the next hop discard the transaction.
    pub(super) fn abort(self) {}
}
