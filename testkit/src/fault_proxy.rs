//! A fault-injecting LMTP/SMTP proxy for the zero-loss test (`tests/integration/faults.rs`):
//! it sits between sealgate and its next hop (Dovecot's LMTP or Postfix's reinjection smtpd),
//! relays the conversation command by command, and on request breaks one transaction in a
//! chosen way. It also records what it did, so the test can tell an injected 5xx from a real
//! one and knows which copies the next hop may have stored without sealgate hearing about it
//! (the at-least-once window).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sealgate_protocol::{EnhancedCode, Reply, ReplyDecoder};

use crate::{STARTUP_TIMEOUT, poll_until};

/// How long the proxy waits for sealgate's next command or DATA bytes.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the proxy waits for the next hop's reply before it gives the session up.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// Connecting to the next hop.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of the DATA stream is searched for the `X-Test-Id:` header.
const HEADER_SCAN: usize = 64 * 1024;

/// One way to break one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// The final dot is not forwarded; sealgate gets `451 4.3.0 injected tempfail` per
    /// accepted recipient (LMTP) or once (SMTP), then both connections are closed.
    Tempfail,
    /// The transaction's first RCPT is not forwarded but answered `550 5.1.1 <rcpt>:
    /// injected #n`, `n` unique per proxy, so the bounce in Postfix's log can be attributed.
    Permfail,
    /// Forwarding stops somewhere in DATA (never past the final dot); the proxy reads and
    /// discards until sealgate gives up (its next-hop timeout) and closes.
    HangMidData,
    /// Everything is forwarded, the next hop's final replies are read but withheld until
    /// sealgate gives up: the next hop has stored a copy sealgate reports as 4xx (window).
    HangAfterDot,
    /// Both connections are closed after a random part of DATA (never the final dot).
    CloseMidData,
}

/// An injected `550` and whether sealgate certainly saw it as the recipient's final reply
/// (`effective`: the MAIL was accepted and the DATA reply relayed, so no later failure of
/// this transaction can replace it; only losing sealgate itself can).
#[derive(Clone, Debug)]
pub struct Permfail {
    pub serial: u64,
    pub rcpt: String,
    pub effective: bool,
}

/// What the proxy did.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// Faults applied to a transaction, by kind.
    pub applied: HashMap<Fault, usize>,
    /// Every injected 550, in order.
    pub permfails: Vec<Permfail>,
    /// `(X-Test-Id, recipient)` for each time the next hop may have stored a copy whose final
    /// reply did not reach sealgate in time: the dot was forwarded and the reply was withheld,
    /// lost, relayed later than the slow-reply threshold, or was a `421` (the next hop closing,
    /// which says nothing about the copy).
    pub windows: Vec<(String, String)>,
    /// Connections from sealgate, and those closed at once because the next hop was down.
    pub sessions: usize,
    pub upstream_down: usize,
    /// MAIL commands answered with the [`FaultProxy::close_sessions_with`] reply.
    pub closed_with_reply: usize,
    /// Transactions whose DATA ended with every final reply relayed.
    pub completed: usize,
}

struct Shared {
    upstream: SocketAddr,
    lmtp: bool,
    slow_reply: Duration,
    armed: Mutex<VecDeque<Fault>>,
    record: Mutex<Record>,
    serial: AtomicU64,
    rng: Mutex<u64>,
    /// Open connections (both sides), so `stop` can cut them.
    conns: Mutex<HashMap<u64, Vec<TcpStream>>>,
    next_conn: AtomicU64,
    accepting: AtomicBool,
    /// While set, the reply to every MAIL, after which the session is closed.
    closing: Mutex<Option<Reply>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The proxy: listens on 127.0.0.1:[`FaultProxy::port`], relays to the upstream port.
pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1:`port` in front of 127.0.0.1:`upstream`. `lmtp`: one final reply
    /// per accepted recipient (else one per transaction, SMTP). `slow_reply`: a final reply
    /// relayed later than this after the dot arrived counts as a window (sealgate may have
    /// timed out first); keep it well below sealgate's `SEALGATE_NEXT_HOP_TIMEOUT`. `seed`
    /// drives the proxy's own choices (where DATA is cut).
    pub fn start(
        port: u16,
        upstream: u16,
        lmtp: bool,
        slow_reply: Duration,
        seed: u64,
    ) -> FaultProxy {
        let proxy = FaultProxy {
            port,
            shared: Arc::new(Shared {
                upstream: SocketAddr::from(([127, 0, 0, 1], upstream)),
                lmtp,
                slow_reply,
                armed: Mutex::new(VecDeque::new()),
                record: Mutex::new(Record::default()),
                serial: AtomicU64::new(0),
                rng: Mutex::new(seed | 1),
                conns: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(0),
                accepting: AtomicBool::new(false),
                closing: Mutex::new(None),
            }),
            acceptor: Mutex::new(None),
        };
        proxy.resume();
        proxy
    }

    /// The next transaction that reaches MAIL gets `fault`.
    pub fn arm(&self, fault: Fault) {
        lock(&self.shared.armed).push_back(fault);
    }

    /// From now on (until called with `None`), every MAIL is answered with `reply` instead of
    /// being forwarded, and both connections are closed: what Dovecot does to an open session
    /// when it shuts down (`421 4.3.2 <host> Shutting down`). Greeting and LHLO still come
    /// from the next hop.
    pub fn close_sessions_with(&self, reply: Option<Reply>) {
        *lock(&self.shared.closing) = reply;
    }

    /// Forgets faults armed but not yet applied.
    pub fn disarm(&self) {
        lock(&self.shared.armed).clear();
    }

    pub fn record(&self) -> Record {
        lock(&self.shared.record).clone()
    }

    /// True while the proxy accepts connections.
    pub fn is_up(&self) -> bool {
        self.shared.accepting.load(Ordering::SeqCst)
    }

    /// The next hop goes away: the listener is closed (connections are refused) and every
    /// open connection is cut, both sides.
    pub fn stop(&self) {
        let Some(handle) = lock(&self.acceptor).take() else {
            return;
        };
        self.shared.accepting.store(false, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag and drops the listener.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        let _ = handle.join();
        for streams in lock(&self.shared.conns).values() {
            for s in streams {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Listens again on the same port (after [`FaultProxy::stop`]).
    pub fn resume(&self) {
        let mut acceptor = lock(&self.acceptor);
        if acceptor.is_some() {
            return;
        }
        let mut listener = None;
        let bound = poll_until(STARTUP_TIMEOUT, || {
            listener = TcpListener::bind(("127.0.0.1", self.port)).ok();
            listener.is_some()
        });
        let listener = match listener {
            Some(l) if bound => l,
            _ => panic!("fault proxy cannot bind 127.0.0.1:{} again", self.port),
        };
        self.shared.accepting.store(true, Ordering::SeqCst);
        let shared = Arc::clone(&self.shared);
        *acceptor = Some(thread::spawn(move || {
            for conn in listener.incoming() {
                if !shared.accepting.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = Arc::clone(&shared);
                thread::spawn(move || session(&shared, conn));
            }
        }));
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One side of the relay: a socket and what was read from it but not used yet.
struct Side {
    stream: TcpStream,
    input: BytesMut,
    decoder: ReplyDecoder,
}

impl Side {
    fn new(stream: TcpStream, timeout: Duration) -> Side {
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_nodelay(true);
        Side {
            stream,
            input: BytesMut::new(),
            decoder: ReplyDecoder::new(),
        }
    }

    /// Reads more bytes into `input`; `Ok(false)` at EOF.
    fn fill(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 65536];
        let n = self.stream.read(&mut buf)?;
        self.input.extend_from_slice(&buf[..n]);
        Ok(n > 0)
    }

    /// One command line with its CRLF; `None` at EOF.
    fn line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.input.iter().position(|&b| b == b'\n') {
                return Ok(Some(self.input.split_to(i + 1).to_vec()));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    fn reply(&mut self) -> io::Result<Reply> {
        loop {
            match self.decoder.decode(&mut self.input) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => return Err(io::Error::other(format!("bad reply: {e:?}"))),
            }
            if !self.fill()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn send_reply(&mut self, reply: &Reply) -> io::Result<()> {
        let mut out = BytesMut::new();
        reply.encode(&mut out);
        self.send(&out)
    }

    /// Reads and discards until EOF, an error or `limit` passes: waiting for the peer to give up.
    fn drain(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        self.input.clear();
        while Instant::now() < deadline {
            match self.fill() {
                Ok(true) => self.input.clear(),
                Ok(false) => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    }
}

/// The transaction being relayed.
struct Txn {
    fault: Option<Fault>,
    mail_ok: bool,
    /// Recipients the next hop accepted, in RCPT order (LMTP: one final reply each).
    accepted: Vec<String>,
    /// Index into `Record::permfails` of this transaction's injected 550.
    permfail: Option<usize>,
}

fn session(shared: &Arc<Shared>, client: TcpStream) {
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    lock(&shared.record).sessions += 1;
    let upstream = match TcpStream::connect_timeout(&shared.upstream, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(_) => {
            // The next hop is down: sealgate sees the connection close before a greeting.
            lock(&shared.record).upstream_down += 1;
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    {
        let mut conns = lock(&shared.conns);
        let clones = [client.try_clone(), upstream.try_clone()]
            .into_iter()
            .flatten()
            .collect();
        conns.insert(id, clones);
    }
    // `stop` may have run between accept and registration.
    if shared.accepting.load(Ordering::SeqCst) {
        let mut relay = Relay {
            shared,
            client: Side::new(client, CLIENT_TIMEOUT),
            upstream: Side::new(upstream, UPSTREAM_TIMEOUT),
        };
        let _ = relay.run();
        let _ = relay.client.stream.shutdown(Shutdown::Both);
        let _ = relay.upstream.stream.shutdown(Shutdown::Both);
    }
    lock(&shared.conns).remove(&id);
}

struct Relay<'a> {
    shared: &'a Shared,
    client: Side,
    upstream: Side,
}

/// The verb of a command line, upper-cased.
fn verb(line: &[u8]) -> String {
    let end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end]).to_ascii_uppercase()
}

/// The address between `<` and `>` of a MAIL/RCPT line.
fn address(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    match (text.find('<'), text.find('>')) {
        (Some(a), Some(b)) if a < b => text[a + 1..b].to_string(),
        _ => text.trim().to_string(),
    }
}

impl Relay<'_> {
    fn record(&self) -> MutexGuard<'_, Record> {
        lock(&self.shared.record)
    }

    fn applied(&self, fault: Fault) {
        *self.record().applied.entry(fault).or_default() += 1;
    }

    fn random(&self, below: u64) -> u64 {
        let mut state = lock(&self.shared.rng);
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state % below.max(1)
    }

    /// Forwards a command line and relays the next hop's reply.
    fn forward(&mut self, line: &[u8]) -> io::Result<Reply> {
        self.upstream.send(line)?;
        let reply = self.upstream.reply()?;
        self.client.send_reply(&reply)?;
        Ok(reply)
    }

    fn run(&mut self) -> io::Result<()> {
        let greeting = self.upstream.reply()?;
        self.client.send_reply(&greeting)?;
        let mut txn: Option<Txn> = None;
        loop {
            let Some(line) = self.client.line()? else {
                return Ok(());
            };
            match verb(&line).as_str() {
                "MAIL" => {
                    let closing = lock(&self.shared.closing).clone();
                    if let Some(reply) = closing {
                        self.record().closed_with_reply += 1;
                        self.client.send_reply(&reply)?;
                        return Ok(());
                    }
                    let fault = self
                        .shared
                        .armed
                        .lock()
                        .ok()
                        .and_then(|mut a| a.pop_front());
                    let reply = self.forward(&line)?;
                    txn = Some(Txn {
                        fault,
                        mail_ok: reply.is_positive(),
                        accepted: Vec::new(),
                        permfail: None,
                    });
                }
                "RCPT" => {
                    let rcpt = address(&line);
                    if let Some(t) = txn.as_mut()
                        && t.fault == Some(Fault::Permfail)
                        && t.permfail.is_none()
                    {
                        let serial = self.shared.serial.fetch_add(1, Ordering::Relaxed) + 1;
                        let reply = Reply::new(
                            550,
                            EnhancedCode::new(5, 1, 1),
                            format!("<{rcpt}>: injected #{serial}"),
                        );
                        self.client.send_reply(&reply)?;
                        let mut record = self.record();
                        t.permfail = Some(record.permfails.len());
                        record.permfails.push(Permfail {
                            serial,
                            rcpt,
                            effective: false,
                        });
                        *record.applied.entry(Fault::Permfail).or_default() += 1;
                        continue;
                    }
                    let reply = self.forward(&line)?;
                    if reply.is_positive()
                        && let Some(t) = txn.as_mut()
                    {
                        t.accepted.push(rcpt);
                    }
                }
                "DATA" => {
                    let reply = self.forward(&line)?;
                    let t = txn.take();
                    if let Some(t) = &t
                        && let Some(i) = t.permfail
                        && t.mail_ok
                    {
                        self.record().permfails[i].effective = true;
                    }
                    if reply.code == 354 {
                        let t = t.unwrap_or(Txn {
                            fault: None,
                            mail_ok: true,
                            accepted: Vec::new(),
                            permfail: None,
                        });
                        if !self.data(t)? {
                            return Ok(());
                        }
                    }
                }
                "RSET" => {
                    txn = None;
                    self.forward(&line)?;
                }
                "QUIT" => {
                    self.forward(&line)?;
                    return Ok(());
                }
                _ => {
                    self.forward(&line)?;
                }
            }
        }
    }

    /// Relays (or breaks) one DATA phase. `Ok(true)`: the session goes on.
    fn data(&mut self, txn: Txn) -> io::Result<bool> {
        let fault = txn.fault.filter(|f| *f != Fault::Permfail);
        // DATA bytes forwarded at most (never the final dot for the mid-DATA faults).
        let cut = match fault {
            Some(Fault::CloseMidData | Fault::HangMidData) => self.random(256 * 1024),
            _ => u64::MAX,
        };
        let mut header: Vec<u8> = Vec::new();
        // The last bytes seen, so the terminator is found across reads; DATA starts at a line
        // start, as if after a CRLF.
        let mut recent: Vec<u8> = b"\r\n".to_vec();
        let mut seen: u64 = 0;
        let mut forwarded: u64 = 0;
        // When the bytes holding the final dot arrived: sealgate's reply timer started before.
        let mut arrived: Instant;
        loop {
            if self.client.input.is_empty() && !self.client.fill()? {
                return Ok(false); // sealgate went away mid-DATA: the next hop never sees a dot.
            }
            arrived = Instant::now();
            let chunk = self.client.input.split().to_vec();
            let mut window = recent.clone();
            window.extend_from_slice(&chunk);
            let (piece, end) = match memchr::memmem::find(&window, b"\r\n.\r\n") {
                Some(i) => {
                    let end = i + 5 - recent.len(); // just past ".\r\n" within `chunk`
                    self.client.input.extend_from_slice(&chunk[end..]);
                    (&chunk[..end], true)
                }
                None => (&chunk[..], false),
            };
            if header.len() < HEADER_SCAN {
                header.extend_from_slice(&piece[..piece.len().min(HEADER_SCAN - header.len())]);
            }
            // Bytes of `piece` that may go on: the dot line (last 3 bytes) only without fault.
            let dot_allowed = matches!(fault, None | Some(Fault::HangAfterDot));
            let limit = if end && !dot_allowed {
                seen + piece.len() as u64 - 3
            } else {
                seen + piece.len() as u64
            };
            let upto = limit.min(cut);
            if upto > forwarded {
                let from = (forwarded - seen) as usize;
                let to = (upto - seen) as usize;
                if self.upstream.send(&piece[from..to]).is_err() {
                    return Ok(false); // next hop gone before the dot: nothing stored.
                }
                forwarded = upto;
            }
            seen += piece.len() as u64;
            let tail_from = window.len().saturating_sub(4);
            recent = window[tail_from..].to_vec();
            if forwarded >= cut {
                // A mid-DATA fault's moment has come.
                break;
            }
            if end {
                break;
            }
        }
        let dot_at = arrived;
        let test_id = test_id(&header);
        let expected = if self.shared.lmtp {
            txn.accepted.len()
        } else {
            usize::from(!txn.accepted.is_empty())
        };
        match fault {
            None => {
                // Relay the final replies; any not relayed are a window.
                for i in 0..expected {
                    let relayed = match self.upstream.reply() {
                        Ok(reply) => {
                            if reply.code == 421 {
                                // "Closing" instead of the outcome (Dovecot stopping after it
                                // stored the copy): whether it was stored is unknown.
                                let rcpts = if self.shared.lmtp {
                                    &txn.accepted[i..=i]
                                } else {
                                    &txn.accepted[..]
                                };
                                self.windows(&test_id, rcpts, 0);
                            }
                            self.client.send_reply(&reply).is_ok()
                        }
                        Err(_) => false,
                    };
                    if !relayed {
                        self.windows(
                            &test_id,
                            &txn.accepted,
                            if self.shared.lmtp { i } else { 0 },
                        );
                        return Ok(false);
                    }
                }
                if dot_at.elapsed() >= self.shared.slow_reply {
                    self.windows(&test_id, &txn.accepted, 0);
                }
                self.record().completed += 1;
                Ok(true)
            }
            Some(Fault::Tempfail) => {
                self.applied(Fault::Tempfail);
                let _ = self.upstream.stream.shutdown(Shutdown::Both);
                let reply = Reply::new(451, EnhancedCode::new(4, 3, 0), "injected tempfail");
                for _ in 0..expected {
                    let _ = self.client.send_reply(&reply);
                }
                Ok(false)
            }
            Some(Fault::CloseMidData) => {
                self.applied(Fault::CloseMidData);
                Ok(false)
            }
            Some(Fault::HangMidData) => {
                self.applied(Fault::HangMidData);
                self.client.drain(CLIENT_TIMEOUT);
                Ok(false)
            }
            Some(Fault::HangAfterDot) => {
                self.applied(Fault::HangAfterDot);
                // The next hop stores and answers; sealgate never hears it.
                for _ in 0..expected {
                    if self.upstream.reply().is_err() {
                        break;
                    }
                }
                self.windows(&test_id, &txn.accepted, 0);
                self.client.drain(CLIENT_TIMEOUT);
                Ok(false)
            }
            Some(Fault::Permfail) => unreachable!("filtered above"),
        }
    }

    /// Records a window for `accepted[from..]` (LMTP) or all of them (SMTP).
    fn windows(&self, test_id: &str, accepted: &[String], from: usize) {
        let mut record = self.record();
        for rcpt in accepted.iter().skip(from) {
            record.windows.push((test_id.to_string(), rcpt.clone()));
        }
    }
}

/// The value of the `X-Test-Id:` header in the first bytes of a message, or `?`.
fn test_id(header: &[u8]) -> String {
    let needle = b"X-Test-Id: ";
    let Some(i) = memchr::memmem::find(header, needle) else {
        return "?".into();
    };
    let rest = &header[i + needle.len()..];
    let end = rest
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}
