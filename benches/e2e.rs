//! End-to-end benchmark of sealgate's pass-through path: LMTP client → sealgate → LMTP sink.
//!
//! Everything runs in this process except sealgate itself: an in-process LMTP sink (the next
//! hop), the release `sealgate` binary, started fresh for every scenario so that its peak RSS
//! (`VmHWM`) belongs to that scenario alone, and a load client of M concurrent connections that
//! sends N messages (MAIL, RCPT, DATA pipelined in one write; the body after the 354). For each
//! scenario it prints throughput (msgs/s, and message MB/s with 1 MB = 10^6 bytes), latency per
//! message from MAIL to the final reply (p50/p99/max), sealgate's peak RSS and its CPU time
//! (utime+stime). Client and sink share the cores with sealgate, so msgs per sealgate
//! CPU-second is the figure to compare across machines. Failed messages make the exit code 1;
//! the performance targets at the end are printed for reference only.
//!
//! Run:
//! - `cargo bench --bench e2e`: the default scenarios (4 KiB, 64 KiB, 1 MiB, one 256 MiB).
//! - `cargo bench --bench e2e -- --quick`: the same with a tenth of the messages (smoke run).
//! - `cargo bench --bench e2e -- --messages N --size BYTES --connections M`: one custom scenario.
//!
//! `cargo test --all-targets` runs this binary too, unoptimised and without arguments; it then
//! does the `--quick` run. Linux only: reads `/proc/<pid>/status` and `/proc/<pid>/stat`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use sealgate_protocol::{
    BareNewline, Command as Cmd, DataDecoder, DotStuffer, EnhancedCode, LineDecoder, Reply,
    ReplyDecoder, parse_command,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Socket read size; a streamed message is written in pieces of about this size.
const PIECE: usize = 64 * 1024;
/// A body line: 76 printable characters and CRLF.
const LINE: usize = 78;
/// Messages larger than this are generated while they are sent, never held in memory.
const STREAM_ABOVE: usize = 16 << 20;
/// Longest wait for a reply from sealgate before the connection counts as failed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// /proc/<pid>/stat counts CPU time in USER_HZ ticks, 100 per second on Linux.
const CLOCK_TICKS: f64 = 100.0;
const ENVELOPE: &[u8] =
    b"MAIL FROM:<sender@bench.example>\r\nRCPT TO:<rcpt@bench.example>\r\nDATA\r\n";
const TEXT: &[u8] = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen \
    liquor jugs. Sphinx of black quartz, judge my vow! 0123456789 ";
const HEADER: &str = "scenario                     msgs  err    secs   msgs/s    MB/s  p50ms  p99ms   maxms  rss_MiB  cpu_s msgs/cpu_s";

/// Messages and message bytes the sink has received, all connections together.
static SINK_MESSAGES: AtomicU64 = AtomicU64::new(0);
static SINK_BYTES: AtomicU64 = AtomicU64::new(0);

struct Scenario {
    name: String,
    messages: usize,
    size: usize,
    connections: usize,
    warmup: usize,
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test` passes nothing: then a smoke run will do.
    let under_cargo_test = args.is_empty();
    args.retain(|a| a != "--bench");
    let command = if under_cargo_test {
        args.push("--quick".into());
        "cargo test (smoke run, as --quick)".to_owned()
    } else {
        format!("cargo bench --bench e2e -- {}", args.join(" "))
    };
    let (scenarios, quick) = scenarios(&args).unwrap_or_else(|err| {
        eprintln!("e2e: {err}\nusage: cargo bench --bench e2e -- [--quick] [--messages N --size BYTES --connections M]");
        std::process::exit(2)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let failed = runtime.block_on(run(scenarios, quick, command.trim_end_matches(" -- ")));
    std::process::exit(i32::from(failed));
}

fn scenarios(args: &[String]) -> Result<(Vec<Scenario>, bool), String> {
    let (mut quick, mut messages, mut size, mut connections) = (false, None, None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse().map_err(|_| format!("{name}: not a number: {v}"))
        };
        match arg.as_str() {
            "--quick" => quick = true,
            "--messages" => messages = Some(value(arg)?),
            "--size" => size = Some(value(arg)?),
            "--connections" => connections = Some(value(arg)?.max(1)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let sc = |name: &str, messages, size, connections, warmup| Scenario {
        name: name.to_owned(),
        messages,
        size,
        connections,
        warmup,
    };
    let mut list = if messages.is_none() && size.is_none() && connections.is_none() {
        vec![
            sc("passthrough 4KiB", 20_000, 4 << 10, 8, 500),
            sc("passthrough 64KiB", 3000, 64 << 10, 8, 0),
            sc("passthrough 1MiB", 200, 1 << 20, 4, 0),
            sc("passthrough 256MiB single", 1, 256 << 20, 1, 0),
        ]
    } else {
        let size = size.unwrap_or(4096);
        let (n, m) = (messages.unwrap_or(1000), connections.unwrap_or(8));
        vec![sc(&format!("custom {size}B"), n, size, m, 0)]
    };
    if quick {
        for s in &mut list {
            (s.messages, s.warmup) = ((s.messages / 10).max(1), s.warmup / 10);
        }
    }
    Ok((list, quick))
}

/// Runs every scenario, prints the table and the targets; true if any message failed.
async fn run(scenarios: Vec<Scenario>, quick: bool, command: &str) -> bool {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let quick = if quick {
        " (quick: message counts / 10)"
    } else {
        ""
    };
    println!("# sealgate end-to-end: LMTP client -> sealgate (pass-through) -> LMTP sink");
    println!("# cores: {cores}; command: {command}{quick}");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the sink");
    let sink_port = listener.local_addr().expect("sink address").port();
    tokio::spawn(sink(listener));
    println!("{HEADER}");
    let mut results = Vec::new();
    for sc in &scenarios {
        results.push((sc.name.as_str(), run_scenario(sc, sink_port).await));
    }
    let find = |name: &str| results.iter().find(|r| r.0 == name).map(|r| r.1);
    println!("targets (reference only, not enforced):");
    let rate = find("passthrough 4KiB").map(|(rate, _, _)| rate);
    target("passthrough 4KiB >= 5000 msgs/s", rate, |v| v >= 5000.0);
    let rss = find("passthrough 256MiB single").map(|(_, rss, _)| rss);
    target("passthrough 256MiB single peak RSS <= 64 MiB", rss, |v| {
        v <= 64.0
    });
    let failed = results.iter().any(|(_, (_, _, errors))| *errors > 0);
    if failed {
        println!("FAILED: some messages were not delivered (see the notes above)");
    }
    failed
}

fn target(what: &str, value: Option<f64>, pass: impl Fn(f64) -> bool) {
    match value {
        Some(v) if pass(v) => println!("  {what}: {} PASS", num(v)),
        Some(v) => println!("  {what}: {} MISS", num(v)),
        None => println!("  {what}: not run"),
    }
}

/// One scenario against a fresh sealgate; prints its row. Returns (msgs/s, RSS MiB, errors).
async fn run_scenario(sc: &Scenario, sink_port: u16) -> (f64, f64, usize) {
    let payload = Payload::new(sc.size);
    let mut gate = Sealgate::spawn(sink_port);
    let (addr, pid) = (format!("127.0.0.1:{}", gate.port), gate.child.id());
    let mut notes = Vec::new();
    if sc.warmup > 0 {
        let warm = load(&addr, &payload, sc.warmup, sc.connections).await;
        if warm.errors > 0 {
            notes.push(format!(
                "warm-up: {} failed, first: {}",
                warm.errors,
                warm.first()
            ));
        }
    }
    let (cpu0, sink_msgs0, sink_bytes0) = (cpu_seconds(pid), sink_messages(), sink_bytes());
    let started = Instant::now();
    let mut res = load(&addr, &payload, sc.messages, sc.connections).await;
    let secs = started.elapsed().as_secs_f64();
    let (cpu, rss) = (cpu_seconds(pid) - cpu0, peak_rss_mib(pid));
    let (sink_msgs, sink_bytes) = (sink_messages() - sink_msgs0, sink_bytes() - sink_bytes0);
    if res.errors > 0 {
        notes.push(format!("{} failed, first: {}", res.errors, res.first()));
    }
    notes.extend(gate.stop());

    let ok = (sc.messages - res.errors) as u64;
    let bytes = ok * payload.len as u64;
    if (sink_msgs, sink_bytes) != (ok, bytes) {
        notes.push(format!(
            "the sink got {sink_msgs} messages ({sink_bytes} bytes) for {ok} accepted ({bytes} bytes)"
        ));
    }
    res.latencies.sort_unstable();
    let n = res.latencies.len();
    let pct = |p: usize| match n {
        0 => f64::NAN,
        _ => res.latencies[(n * p).div_ceil(100).clamp(1, n) - 1] as f64 / 1000.0,
    };
    let rate = ok as f64 / secs;
    println!(
        "{:<26} {:>6} {:>4} {:>7.2} {:>8} {:>7} {:>6} {:>6} {:>7} {:>8.1} {:>6.2} {:>10}",
        sc.name,
        sc.messages,
        res.errors,
        secs,
        num(rate),
        num(bytes as f64 / secs / 1e6),
        num(pct(50)),
        num(pct(99)),
        num(pct(100)),
        rss,
        cpu,
        num(ok as f64 / cpu),
    );
    for note in notes {
        println!("  note: {note}");
    }
    (rate, rss, res.errors)
}

/// About three significant digits, whatever the magnitude; "-" when there is no value (no
/// message delivered, or too little CPU time to measure).
fn num(v: f64) -> String {
    match v.abs() {
        a if !a.is_finite() => "-".to_owned(),
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

/// The message of one scenario. Up to [`STREAM_ABOVE`] it is generated and dot-stuffed once;
/// larger ones are generated piece by piece while they are sent.
#[derive(Clone)]
struct Payload {
    size: usize,
    /// Exact length of the message (without dot-stuffing and terminator).
    len: usize,
    stuffed: Option<Bytes>,
}

impl Payload {
    fn new(size: usize) -> Payload {
        let len = pieces(size).map(|p| p.len()).sum();
        let stuffed = (len <= STREAM_ABOVE).then(|| {
            let (mut out, mut stuffer) =
                (BytesMut::with_capacity(len + len / 64), DotStuffer::new());
            pieces(size).for_each(|piece| stuffer.encode(&piece, &mut out));
            stuffer.finish(&mut out);
            out.freeze()
        });
        Payload { size, len, stuffed }
    }

    /// Writes the dot-stuffed message and its terminating ".\r\n".
    async fn send(&self, stream: &mut TcpStream) -> std::io::Result<()> {
        if let Some(whole) = &self.stuffed {
            return stream.write_all(whole).await;
        }
        let (mut out, mut stuffer) = (BytesMut::with_capacity(2 * PIECE), DotStuffer::new());
        for piece in pieces(self.size) {
            stuffer.encode(&piece, &mut out);
            stream.write_all(&out).await?;
            out.clear();
        }
        stuffer.finish(&mut out);
        stream.write_all(&out).await
    }
}

/// A deterministic message of exactly `size` bytes (at least the header block), in pieces of
/// at most [`PIECE`] bytes: the header block, whose Subject is padded so that the body is a whole
/// number of lines, then lines of 76 printable characters + CRLF. Every 64th line starts with
/// "." so that dot-stuffing is exercised.
fn pieces(size: usize) -> impl Iterator<Item = Vec<u8>> {
    let header = |pad: usize| {
        format!(
            "From: Bench Sender <sender@bench.example>\r\nTo: <rcpt@bench.example>\r\n\
             Subject: sealgate benchmark, {size} octets{:~>pad$}\r\n\
             Date: Mon, 06 Jan 2025 10:00:00 +0000\r\nMessage-ID: <e2e-{size}@bench.example>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
            ""
        )
        .into_bytes()
    };
    let body = size.saturating_sub(header(0).len());
    let header = header(body % LINE);
    let lines = size.saturating_sub(header.len()) / LINE;
    let per_piece = PIECE / LINE;
    let body = (0..lines).step_by(per_piece).map(move |first| {
        let mut piece = Vec::with_capacity(PIECE);
        for i in first..(first + per_piece).min(lines) {
            let start = piece.len();
            piece.extend((0..LINE - 2).map(|c| TEXT[(i * 7 + c) % TEXT.len()]));
            if i % 64 == 63 {
                piece[start] = b'.';
            }
            piece.extend_from_slice(b"\r\n");
        }
        piece
    });
    std::iter::once(header).chain(body)
}

// ---------------------------------------------------------------------------------------------
// Load client

#[derive(Default)]
struct LoadResult {
    /// Microseconds from MAIL to the final 2xx reply, per delivered message.
    latencies: Vec<u64>,
    errors: usize,
    first_error: Option<String>,
}

impl LoadResult {
    fn fail(&mut self, count: usize, why: String) {
        self.errors += count;
        self.first_error.get_or_insert(why);
    }

    fn first(&self) -> &str {
        self.first_error.as_deref().unwrap_or("?")
    }
}

/// Sends `messages` messages over `connections` concurrent connections.
async fn load(addr: &str, payload: &Payload, messages: usize, connections: usize) -> LoadResult {
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let count = messages / connections + usize::from(i < messages % connections);
            let (addr, payload) = (addr.to_owned(), payload.clone());
            tokio::spawn(async move {
                let (mut res, mut done) = (LoadResult::default(), 0);
                if let Err(err) = client(&addr, &payload, count, &mut res, &mut done).await {
                    res.fail(count - done, err);
                }
                res
            })
        })
        .collect();
    let mut total = LoadResult::default();
    for task in tasks {
        let res = task.await.expect("a client task panicked");
        total.latencies.extend(res.latencies);
        if let Some(why) = res.first_error {
            total.fail(res.errors, why);
        }
    }
    total
}

/// One connection: LHLO, then `count` transactions. `Err`: the connection is unusable.
async fn client(
    addr: &str,
    payload: &Payload,
    count: usize,
    res: &mut LoadResult,
    done: &mut usize,
) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        input: BytesMut::new(),
        decoder: ReplyDecoder::new(),
    };
    conn.expect(220, "greeting").await?;
    conn.send(b"LHLO bench.example\r\n").await?;
    conn.expect(250, "LHLO").await?;
    while *done < count {
        let started = Instant::now();
        conn.send(ENVELOPE).await?;
        let (mail, rcpt, data) = (
            conn.reply().await?,
            conn.reply().await?,
            conn.reply().await?,
        );
        *done += 1;
        if data.code != 354 {
            res.fail(
                1,
                format!("refused: MAIL {mail} / RCPT {rcpt} / DATA {data}"),
            );
            conn.send(b"RSET\r\n").await?;
            conn.reply().await?;
            continue;
        }
        let sent = payload.send(&mut conn.stream).await;
        sent.map_err(|e| format!("write: {e}"))?;
        match conn.reply().await? {
            last if last.is_positive() => res.latencies.push(started.elapsed().as_micros() as u64),
            last => res.fail(1, format!("final reply {last}")),
        }
    }
    conn.send(b"QUIT\r\n").await?;
    let _ = conn.reply().await;
    Ok(())
}

struct Conn {
    stream: TcpStream,
    input: BytesMut,
    decoder: ReplyDecoder,
}

impl Conn {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let written = self.stream.write_all(bytes).await;
        written.map_err(|e| format!("write: {e}"))
    }

    async fn reply(&mut self) -> Result<Reply, String> {
        loop {
            match self.decoder.decode(&mut self.input) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => self.input.reserve(4096),
                Err(err) => return Err(format!("bad reply from sealgate: {err}")),
            }
            match tokio::time::timeout(REPLY_TIMEOUT, self.stream.read_buf(&mut self.input)).await {
                Ok(Ok(0)) => return Err("connection closed by sealgate".into()),
                Ok(Ok(_)) => {}
                Ok(Err(err)) => return Err(format!("read: {err}")),
                Err(_) => return Err(format!("no reply within {REPLY_TIMEOUT:?}")),
            }
        }
    }

    async fn expect(&mut self, code: u16, what: &str) -> Result<(), String> {
        let reply = self.reply().await?;
        match reply.code == code {
            true => Ok(()),
            false => Err(format!("{what}: {reply}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sink: the next hop

fn sink_messages() -> u64 {
    SINK_MESSAGES.load(Relaxed)
}

fn sink_bytes() -> u64 {
    SINK_BYTES.load(Relaxed)
}

async fn sink(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => drop(tokio::spawn(sink_session(stream))),
            Err(err) => {
                eprintln!("e2e: sink accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One next-hop connection. Pipelining: every complete command in the buffer is answered
/// before the replies are flushed and the next read blocks.
async fn sink_session(mut stream: TcpStream) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (mut input, mut out, mut scratch) = (BytesMut::new(), BytesMut::new(), BytesMut::new());
    let (mut lines, mut data) = (LineDecoder::new(4096), None::<DataDecoder>);
    let (mut in_txn, mut rcpts, mut size) = (false, 0, 0);
    let reply = |out: &mut BytesMut, code, (c, s, d), text: &str| {
        Reply::new(code, EnhancedCode::new(c, s, d), text).encode(out)
    };
    reply(&mut out, 220, (2, 0, 0), "sink LMTP");
    loop {
        loop {
            if let Some(decoder) = data.as_mut() {
                if input.is_empty() {
                    break;
                }
                let progress = decoder.decode(&input, &mut scratch);
                input.advance(progress.consumed);
                size += scratch.len() as u64;
                scratch.clear();
                if !progress.done {
                    break;
                }
                SINK_MESSAGES.fetch_add(1, Relaxed);
                SINK_BYTES.fetch_add(std::mem::take(&mut size), Relaxed);
                for _ in 0..std::mem::take(&mut rcpts) {
                    reply(&mut out, 250, (2, 0, 0), "Ok");
                }
                (data, in_txn) = (None, false);
                continue;
            }
            let line = match lines.decode(&mut input) {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(_) => {
                    reply(&mut out, 500, (5, 5, 2), "Line too long");
                    continue;
                }
            };
            match parse_command(&line) {
                Ok(Cmd::Lhlo { .. }) => {
                    let lines = ["sink", "PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME"];
                    Reply::plain(250, lines.map(String::from).to_vec()).encode(&mut out);
                }
                Ok(Cmd::Mail { .. }) if !in_txn => {
                    (in_txn, rcpts) = (true, 0);
                    reply(&mut out, 250, (2, 1, 0), "Ok");
                }
                Ok(Cmd::Rcpt { .. }) if in_txn => {
                    rcpts += 1;
                    reply(&mut out, 250, (2, 1, 5), "Ok");
                }
                Ok(Cmd::Data) if rcpts > 0 => {
                    Reply::plain(354, vec!["End data with <CR><LF>.<CR><LF>".into()])
                        .encode(&mut out);
                    data = Some(DataDecoder::new(BareNewline::Allow));
                }
                Ok(Cmd::Mail { .. } | Cmd::Rcpt { .. } | Cmd::Data) => {
                    reply(&mut out, 503, (5, 5, 1), "Bad sequence of commands");
                }
                Ok(Cmd::Rset) => {
                    (in_txn, rcpts) = (false, 0);
                    reply(&mut out, 250, (2, 0, 0), "Ok");
                }
                Ok(Cmd::Noop) => reply(&mut out, 250, (2, 0, 0), "Ok"),
                Ok(Cmd::Quit) => {
                    reply(&mut out, 221, (2, 0, 0), "Bye");
                    return stream.write_all(&out).await;
                }
                Ok(_) => reply(&mut out, 502, (5, 5, 1), "Command not implemented"),
                Err(_) => reply(&mut out, 501, (5, 5, 4), "Syntax error"),
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        input.reserve(PIECE);
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The sealgate process

struct Sealgate {
    child: Child,
    port: u16,
    /// stderr lines other than INFO ones (warnings, errors, panics); the first 50.
    log: Arc<Mutex<Vec<String>>>,
}

impl Sealgate {
    fn spawn(sink_port: u16) -> Sealgate {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealgate"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SEALGATE_") {
                cmd.env_remove(key);
            }
        }
        // Plain `warn` would hide the INFO line that carries the bound port.
        cmd.env("SEALGATE_LOG", "warn,sealgate::server=info")
            .env("SEALGATE_LMTP_LISTEN", "127.0.0.1:0")
            .env("SEALGATE_NEXT_HOP", format!("lmtp:127.0.0.1:{sink_port}"))
            .env("SEALGATE_MAX_MESSAGE_SIZE", "0")
            .env("SEALGATE_MAX_CONNECTIONS", "200")
            .env("SEALGATE_NEXT_HOP_POOL_SIZE", "64")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the sealgate binary");
        let stderr = child.stderr.take().expect("sealgate's stderr is piped");
        let (log, (tx, rx)) = (Arc::new(Mutex::new(Vec::new())), mpsc::channel());
        let lines = Arc::clone(&log);
        // Drains stderr for the process's whole life, so the pipe never fills up.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = listen_port(&line) {
                    let _ = tx.send(port);
                } else if !line.contains(" INFO ") {
                    let mut lines = lines.lock().unwrap_or_else(|e| e.into_inner());
                    if lines.len() < 50 {
                        lines.push(line);
                    }
                }
            }
        });
        // Disconnected (sealgate exited) or timed out.
        let Ok(port) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            let log = log.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
            panic!("sealgate did not log `listening protocol=lmtp address=…`; stderr:\n{log}");
        };
        Sealgate { child, port, log }
    }

    /// SIGTERM, then waits up to 30 s. Returns notes: a bad exit, logged warnings.
    fn stop(&mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut notes = Vec::new();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => break,
                Ok(Some(status)) => break notes.push(format!("sealgate exited with {status}")),
                _ if Instant::now() > deadline => {
                    notes.push("sealgate still running 30 s after SIGTERM; killed".into());
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        std::thread::sleep(Duration::from_millis(50)); // lets the stderr thread catch up
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        notes.extend(log.iter().map(|line| format!("sealgate log: {line}")));
        notes
    }
}

/// The port of a `listening protocol="lmtp" address=127.0.0.1:PORT` log line.
fn listen_port(line: &str) -> Option<u16> {
    if !line.contains("listening") || !line.contains("lmtp") {
        return None;
    }
    let addr = line
        .split_whitespace()
        .find_map(|t| t.strip_prefix("address="))?;
    addr.trim_matches('"').rsplit(':').next()?.parse().ok()
}

/// Peak resident set size (`VmHWM`) of `pid`, in MiB; NaN if unreadable.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmHWM:"));
    let kib = kib.and_then(|v| v.trim().trim_end_matches(" kB").parse::<f64>().ok());
    kib.map_or(f64::NAN, |kib| kib / 1024.0)
}

/// utime + stime of `pid`, in seconds; NaN if unreadable.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the "(command name)": field 3 (state) first; utime is field 14, stime field 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map_while(|v| v.parse().ok())
        .collect();
    match ticks[..] {
        [utime, stime] => (utime + stime) / CLOCK_TICKS,
        _ => f64::NAN,
    }
}
