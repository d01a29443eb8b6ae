//! Zero loss under faults (issue 7, item 1). Messages of mixed sizes, to several recipients
//! with and without an OpenPGP key, go Postfix → sealgate → next hop while the test, at
//! random moments, kills sealgate with SIGKILL and restarts it, stops and restarts the next
//! hop (Dovecot; the reinjection path), makes the next hop answer 4xx or 5xx, hang past
//! sealgate's timeout or close mid-DATA, and fills the Maildir's file system. After Postfix's
//! queue has drained, every message must be in exactly the right mailboxes, byte-exact (or
//! PGP/MIME for keyed recipients, never plaintext), duplicated only inside the documented
//! at-least-once window, and bounced only where a 5xx was injected.
//!
//! Three phases run at the same time, each with its own Postfix and sealgate:
//! - A: sealgate as Postfix's LMTP transport, next hop Dovecot's LMTP behind a fault proxy
//!   (4xx, 5xx, hang, close mid-DATA), plus SIGKILL of sealgate and Dovecot restarts.
//! - B: sealgate as LMTP transport onto the embedded Maildir on a small tmpfs that is filled
//!   up at random moments (sealgate must answer 452 4.3.1), plus SIGKILL of sealgate.
//! - C: sealgate as after-queue content_filter, reinjecting over SMTP through a fault proxy
//!   into Postfix's reinjection smtpd (4xx, 5xx, hang, close mid-DATA; the reinjection smtpd,
//!   or the way to it, stopped and restarted), plus SIGKILL of sealgate.
//!
//! The oracle for "the documented window" is what Postfix and the proxy saw: a copy may be
//! stored twice only where Postfix logged "message may be sent more than once" for that
//! recipient (sealgate lost between Postfix's dot and its reply), or where the proxy
//! forwarded the dot to the next hop and the final reply did not reach sealgate in time
//! (withheld, lost, slower than half sealgate's next-hop timeout, or a `421` "closing"
//! instead of an outcome: Dovecot answers so when it is stopped after it stored the copy).
//!
//! Counts: 300 messages by default (and in CI); `TEST_FULL_FAULTS=1` sends 2,000. `TEST_FAULTS_SEED=<n>`
//! replays a run's fault schedule (the seed is printed first).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use sealgate_protocol::{DotStuffer, Reply, ReplyDecoder};
use sequoia_openpgp as openpgp;
use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::crypto::SessionKey;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::serialize::SerializeInto;
use sequoia_openpgp::types::SymmetricAlgorithm;

use testkit::fault_proxy::{Fault, FaultProxy};
use testkit::peers::{Dovecot, Postfix, PostfixConfig, status_of};
use testkit::pgp::{armored_part, expected_inner};
use testkit::sealgate::Sealgate;
use testkit::tmpfs::Tmpfs;

/// Mailboxes u0..u9@example.org; u0..u4 have a key.
const USERS: usize = 10;
const KEYED: usize = 5;
const SENDER: &str = "sender@example.net";
/// sealgate's next-hop timeout: hangs cost this much per affected connection.
const NEXT_HOP_TIMEOUT: &str = "3s";
/// A final reply relayed later than this after the dot counts as a window (sealgate may have
/// given up at 3 s); half the timeout leaves room for a busy machine.
const SLOW_REPLY: Duration = Duration::from_millis(1500);
/// Messages per SMTP session of the test's client.
const MESSAGES_PER_SESSION: usize = 20;
/// How many keyed copies per phase are decrypted and compared.
const DECRYPT_SAMPLE: usize = 25;

fn user(i: usize) -> String {
    format!("u{i}@example.org")
}

fn is_keyed(rcpt: &str) -> bool {
    (0..KEYED).any(|i| user(i) == rcpt)
}

/// Prints straight to the process's stderr (libtest does not capture that handle).
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "faults: {text}");
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A free port on 127.0.0.1 *outside* the kernel's ephemeral range, for listeners the test
/// stops and starts again (sealgate, the proxies, the reinjection smtpd): while one is down, an
/// outgoing connection of any process could otherwise get its port as local port and make the
/// restart fail. Never returns the same port twice in this process.
fn stable_port() -> u16 {
    static USED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = range
        .split_whitespace()
        .filter_map(|v| v.parse::<u32>().ok());
    let (lo, hi) = (
        bounds.next().unwrap_or(32768),
        bounds.next().unwrap_or(60999),
    );
    let (from, to) = if lo > 12_000 {
        (10_000, lo - 1)
    } else {
        (hi + 1, 65_000)
    };
    assert!(
        from < to,
        "no port range outside the ephemeral range {lo}-{hi}"
    );
    let mut rng = Rng(u64::from(std::process::id()) ^ seed_from_clock());
    let mut used = lock(&USED);
    let used = used.get_or_insert_with(HashSet::new);
    loop {
        let port = u16::try_from(from + rng.below(u64::from(to - from)) as u32).expect("port");
        if !used.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            used.insert(port);
            return port;
        }
    }
}

fn seed_from_clock() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs() ^ (u64::from(now.subsec_nanos()) << 20)
}

// ---------------------------------------------------------------------------------------------
// Size of the run, randomness
// ---------------------------------------------------------------------------------------------

/// Messages per phase and how fast they are sent.
struct Plan {
    full: bool,
    /// (messages, messages per second) for phases A, B, C.
    phases: [(usize, f64); 3],
    /// How long the final drain of one phase's queue may take.
    drain: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        // Not a SEALGATE_* name: the binary refuses unknown SEALGATE_* variables.
        let full = std::env::var("TEST_FULL_FAULTS").is_ok_and(|v| v == "1" || v == "true");
        if full {
            Plan {
                full,
                phases: [(1200, 12.0), (400, 5.0), (400, 5.0)],
                drain: Duration::from_secs(600),
            }
        } else {
            Plan {
                full,
                phases: [(180, 4.0), (60, 1.5), (60, 1.5)],
                drain: Duration::from_secs(180),
            }
        }
    }
}

/// SplitMix64: small, seedable, good enough to pick fault moments and message shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.between(lo, hi))
    }

    fn fork(&mut self) -> Rng {
        Rng(self.next())
    }
}

fn seed_from_env() -> u64 {
    match std::env::var("TEST_FAULTS_SEED") {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("TEST_FAULTS_SEED={v:?}: {e}"))
        }
        Err(_) => seed_from_clock() ^ u64::from(std::process::id()),
    }
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

struct TestMessage {
    /// Unique `X-Test-Id:` (also the local part of the Message-ID).
    id: String,
    rcpts: Vec<String>,
    /// The message as submitted: CRLF lines, not dot-stuffed.
    bytes: Vec<u8>,
    /// Occurs only in the body (first and last line and every 37th): a keyed recipient's copy
    /// must never contain it.
    marker: String,
}

fn build_message(rng: &mut Rng, id: String) -> TestMessage {
    let count = 1 + rng.below(3) as usize;
    let mut rcpts: Vec<String> = Vec::new();
    while rcpts.len() < count {
        let rcpt = user(rng.below(USERS as u64) as usize);
        if !rcpts.contains(&rcpt) {
            rcpts.push(rcpt);
        }
    }
    // Mostly small, some large: 1-4 KiB 50 %, 4-32 KiB 30 %, 32-128 KiB 15 %, 128-256 KiB 5 %.
    let (lo, hi) = match rng.below(100) {
        0..50 => (1, 4),
        50..80 => (4, 32),
        80..95 => (32, 128),
        _ => (128, 256),
    };
    let target = rng.between(lo * 1024, hi * 1024) as usize;
    let marker = format!("bodymark-{:016x}{:016x}", rng.next(), rng.next());
    let mut text = format!(
        "X-Test-Id: {id}\r\n\
         Message-ID: <{id}@faults.sealgate.test>\r\n\
         Date: Sun, 22 Nov 2026 12:00:00 +0000\r\n\
         From: {SENDER}\r\n\
         To: {}\r\n\
         Subject: fault injection {id}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         {marker} begins\r\n",
        rcpts.join(", ")
    );
    let mut n = 1u64;
    while text.len() < target {
        if n.is_multiple_of(37) {
            text.push_str(&format!("{marker} line {n}\r\n"));
        } else {
            // Lines starting with a dot exercise dot-stuffing on every hop.
            if n.is_multiple_of(53) {
                text.push('.');
            }
            let len = rng.between(40, 76) as usize;
            let mut line = String::with_capacity(len);
            while line.len() < len {
                let word = rng.between(2, 9);
                for _ in 0..word {
                    line.push(char::from(b'a' + rng.below(26) as u8));
                }
                line.push(' ');
            }
            text.push_str(line.trim_end());
            text.push_str("\r\n");
        }
        n += 1;
    }
    text.push_str(&format!("{marker} ends\r\n"));
    TestMessage {
        id,
        rcpts,
        bytes: text.into_bytes(),
        marker,
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal SMTP client for Postfix's smtpd
// ---------------------------------------------------------------------------------------------

struct SmtpClient {
    stream: TcpStream,
    input: BytesMut,
    decoder: ReplyDecoder,
}

impl SmtpClient {
    fn connect(port: u16) -> SmtpClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to Postfix smtpd");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("read timeout");
        let mut client = SmtpClient {
            stream,
            input: BytesMut::new(),
            decoder: ReplyDecoder::new(),
        };
        client.expect(None, 220);
        client.expect(Some("EHLO client.faults.example"), 250);
        client
    }

    fn reply(&mut self) -> Reply {
        loop {
            if let Some(reply) = self.decoder.decode(&mut self.input).expect("SMTP reply") {
                return reply;
            }
            let mut buf = [0u8; 8192];
            let n = self.stream.read(&mut buf).expect("read from Postfix smtpd");
            assert!(n > 0, "Postfix smtpd closed the connection");
            self.input.extend_from_slice(&buf[..n]);
        }
    }

    fn expect(&mut self, command: Option<&str>, code: u16) -> Reply {
        if let Some(command) = command {
            self.stream
                .write_all(format!("{command}\r\n").as_bytes())
                .expect("write to Postfix smtpd");
        }
        let reply = self.reply();
        assert_eq!(reply.code, code, "Postfix smtpd: {command:?} got {reply}");
        reply
    }

    /// Submits one message; returns Postfix's queue ID.
    fn send(&mut self, message: &TestMessage) -> String {
        self.expect(Some(&format!("MAIL FROM:<{SENDER}>")), 250);
        for rcpt in &message.rcpts {
            self.expect(Some(&format!("RCPT TO:<{rcpt}>")), 250);
        }
        self.expect(Some("DATA"), 354);
        let mut wire = BytesMut::new();
        let mut stuffer = DotStuffer::new();
        stuffer.encode(&message.bytes, &mut wire);
        stuffer.finish(&mut wire);
        self.stream.write_all(&wire).expect("write message");
        let reply = self.reply();
        assert_eq!(
            reply.code, 250,
            "Postfix smtpd refused {}: {reply}",
            message.id
        );
        let text = reply.to_string();
        text.split("queued as ")
            .nth(1)
            .map(|q| q.trim().to_string())
            .unwrap_or_default()
    }

    fn quit(mut self) {
        let _ = self.stream.write_all(b"QUIT\r\n");
        let _ = self.reply();
    }
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// The keyed users' certificates with their secrets (for decrypting samples).
struct Keys {
    dir: tempfile::TempDir,
    certs: HashMap<String, Cert>,
}

impl Keys {
    fn generate() -> Keys {
        let dir = testkit::temp_dir("sealgate-faults-keys-");
        let mut certs = HashMap::new();
        for i in 0..KEYED {
            let (cert, _) = CertBuilder::new()
                .add_userid(format!("<{}>", user(i)))
                .set_cipher_suite(CipherSuite::Cv25519)
                .add_transport_encryption_subkey()
                .generate()
                .expect("generate key");
            let public = cert.clone().strip_secret_key_material();
            let armored = public.armored().to_vec().expect("armor certificate");
            testkit::sealgate::keys_import_ok(dir.path(), &armored);
            certs.insert(user(i), cert);
        }
        Keys { dir, certs }
    }
}

struct Helper<'a> {
    secret: &'a Cert,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[openpgp::KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }
    fn check(&mut self, _structure: MessageStructure) -> openpgp::Result<()> {
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[openpgp::packet::PKESK],
        _skesks: &[openpgp::packet::SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        let policy = StandardPolicy::new();
        for key in self
            .secret
            .keys()
            .unencrypted_secret()
            .with_policy(&policy, None)
            .for_transport_encryption()
            .for_storage_encryption()
        {
            let mut pair = key.key().clone().into_keypair()?;
            for pkesk in pkesks {
                if let Some((algo, session_key)) = pkesk.decrypt(&mut pair, sym_algo)
                    && decrypt(algo, &session_key)
                {
                    return Ok(None);
                }
            }
        }
        Err(openpgp::Error::InvalidOperation("no PKESK for our key".into()).into())
    }
}

/// Decrypts the armored OpenPGP message of a stored PGP/MIME copy with `secret`.
fn decrypt(secret: &Cert, armored: &[u8]) -> Result<Vec<u8>, String> {
    let policy = StandardPolicy::new();
    let mut decryptor = DecryptorBuilder::from_bytes(armored)
        .map_err(|e| format!("parse: {e}"))?
        .with_policy(&policy, None, Helper { secret })
        .map_err(|e| format!("decrypt: {e}"))?;
    let mut plaintext = Vec::new();
    decryptor
        .read_to_end(&mut plaintext)
        .map_err(|e| format!("read plaintext: {e}"))?;
    Ok(plaintext)
}

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Kill,
    DovecotRestart,
    ReinjectRestart,
    Tempfail,
    Permfail,
    Hang,
    CloseMidData,
    DiskFull,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::Kill,
        Kind::DovecotRestart,
        Kind::ReinjectRestart,
        Kind::Tempfail,
        Kind::Permfail,
        Kind::Hang,
        Kind::CloseMidData,
        Kind::DiskFull,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::DovecotRestart => "dovecot_restart",
            Kind::ReinjectRestart => "reinject_restart",
            Kind::Tempfail => "tempfail",
            Kind::Permfail => "permfail",
            Kind::Hang => "hang",
            Kind::CloseMidData => "close_mid_data",
            Kind::DiskFull => "disk_full",
        }
    }
}

/// Where a phase's copies end up.
enum Store {
    Dovecot(Mutex<Dovecot>),
    Maildir(Tmpfs),
}

struct Phase {
    name: &'static str,
    /// Fault kinds and their weights.
    kinds: Vec<(Kind, u64)>,
    /// Pause between two faults, in ms.
    gap: (u64, u64),
    messages: Vec<TestMessage>,
    rate: f64,
    // Peers, in drop order: Postfix first, then sealgate, the proxy, the store.
    postfix: Postfix,
    sealgate: Mutex<Option<Sealgate>>,
    sealgate_env: Vec<(String, String)>,
    /// Logs of sealgate instances killed so far.
    old_logs: Mutex<String>,
    proxy: Option<FaultProxy>,
    store: Store,
    /// Phase C: the port of the reinjection smtpd (a master.cf service of `postfix`).
    reinject_port: Option<u16>,
    /// Reinjection outages in which smtpd processes were SIGKILLed too.
    smtpd_stops: Mutex<usize>,
    /// Faults done by the fault thread itself (process and file-system level).
    done: Mutex<BTreeMap<Kind, usize>>,
    /// Kill/restart moments with what was in flight, for diagnostics.
    events: Mutex<Vec<String>>,
    started: Instant,
}

fn sealgate_env(listen_port: u16, next_hop: &str, keys: &Keys) -> Vec<(String, String)> {
    vec![
        (
            "SEALGATE_LMTP_LISTEN".into(),
            format!("127.0.0.1:{listen_port}"),
        ),
        ("SEALGATE_NEXT_HOP".into(), next_hop.into()),
        (
            "SEALGATE_KEYSTORE".into(),
            keys.dir.path().display().to_string(),
        ),
        ("SEALGATE_NEXT_HOP_TIMEOUT".into(), NEXT_HOP_TIMEOUT.into()),
        ("SEALGATE_NEXT_HOP_CONNECT_TIMEOUT".into(), "2s".into()),
        ("SEALGATE_LOG".into(), "info".into()),
    ]
}

fn spawn_sealgate(env: &[(String, String)]) -> Sealgate {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Sealgate::spawn(&env)
}

/// Postfix with sealgate as the LMTP transport of every mailbox domain.
fn postfix_lmtp_transport(sealgate_port: u16) -> Postfix {
    Postfix::start(
        PostfixConfig::default()
            .with_lmtp_transport(sealgate_port)
            .with_main_cf("lmtp_assume_final = yes"),
    )
}

impl Phase {
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &'static str,
        kinds: Vec<(Kind, u64)>,
        gap: (u64, u64),
        messages: Vec<TestMessage>,
        rate: f64,
        postfix: Postfix,
        sealgate: Sealgate,
        sealgate_env: Vec<(String, String)>,
        proxy: Option<FaultProxy>,
        store: Store,
    ) -> Phase {
        Phase {
            name,
            kinds,
            gap,
            messages,
            rate,
            postfix,
            sealgate: Mutex::new(Some(sealgate)),
            sealgate_env,
            old_logs: Mutex::new(String::new()),
            proxy,
            store,
            reinject_port: None,
            smtpd_stops: Mutex::new(0),
            done: Mutex::new(BTreeMap::new()),
            events: Mutex::new(Vec::new()),
            started: Instant::now(),
        }
    }

    fn note(&self, event: String) {
        let at = self.started.elapsed().as_secs_f64();
        lock(&self.events).push(format!("{at:8.3}s {event}"));
    }

    /// Submits the phase's messages to Postfix at the phase's rate.
    fn send_all(&self) {
        let start = Instant::now();
        let mut client: Option<SmtpClient> = None;
        for (i, message) in self.messages.iter().enumerate() {
            let due = start + Duration::from_secs_f64(i as f64 / self.rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait); // pacing, not synchronisation
            }
            if i % MESSAGES_PER_SESSION == 0
                && let Some(old) = client.take()
            {
                old.quit();
            }
            let c = client.get_or_insert_with(|| SmtpClient::connect(self.postfix.smtp_port));
            c.send(message);
        }
        if let Some(c) = client {
            c.quit();
        }
    }

    /// How often each of this phase's fault kinds has been injected so far.
    fn counts(&self) -> BTreeMap<Kind, usize> {
        let mut counts = lock(&self.done).clone();
        if let Some(proxy) = &self.proxy {
            let record = proxy.record();
            let applied = |f: Fault| record.applied.get(&f).copied().unwrap_or(0);
            counts.insert(Kind::Tempfail, applied(Fault::Tempfail));
            counts.insert(Kind::Permfail, applied(Fault::Permfail));
            counts.insert(
                Kind::Hang,
                applied(Fault::HangMidData) + applied(Fault::HangAfterDot),
            );
            counts.insert(Kind::CloseMidData, applied(Fault::CloseMidData));
        }
        counts
    }

    fn count_done(&self, kind: Kind) {
        *lock(&self.done).entry(kind).or_default() += 1;
    }

    /// Injects faults at random moments until sending is over and every kind of this phase
    /// has happened at least once (or 30 s more have passed).
    fn inject_faults(&self, rng: &mut Rng, sending_done: &AtomicBool) {
        // The first round has every kind once, in random order; then by weight.
        let mut first: Vec<Kind> = self.kinds.iter().map(|(k, _)| *k).collect();
        for i in (1..first.len()).rev() {
            first.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut first = first.into_iter();
        let total: u64 = self.kinds.iter().map(|(_, w)| w).sum();
        let mut done_at: Option<Instant> = None;
        loop {
            if sending_done.load(Ordering::SeqCst) {
                let since = *done_at.get_or_insert_with(Instant::now);
                let counts = self.counts();
                let all = self
                    .kinds
                    .iter()
                    .all(|(k, _)| counts.get(k).copied().unwrap_or(0) > 0);
                if all || since.elapsed() > Duration::from_secs(30) {
                    break;
                }
            }
            thread::sleep(rng.millis(self.gap.0, self.gap.1)); // a random moment
            let kind = first.next().unwrap_or_else(|| {
                let mut pick = rng.below(total);
                self.kinds
                    .iter()
                    .find(|(_, w)| {
                        if pick < *w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .map_or(Kind::Tempfail, |(k, _)| *k)
            });
            self.inject(kind, rng);
        }
        if let Some(proxy) = &self.proxy {
            proxy.disarm();
        }
    }

    fn inject(&self, kind: Kind, rng: &mut Rng) {
        match kind {
            Kind::Kill => {
                let mut slot = lock(&self.sealgate);
                if let Some(mut sealgate) = slot.take() {
                    let _ = sealgate.child.kill(); // SIGKILL
                    let _ = sealgate.child.wait();
                    lock(&self.old_logs).push_str(&sealgate.log());
                    lock(&self.old_logs).push_str("\n--- SIGKILL ---\n");
                }
                self.count_done(Kind::Kill);
                self.note("sealgate killed".into());
                thread::sleep(rng.millis(0, 800)); // down for a moment
                *slot = Some(spawn_sealgate(&self.sealgate_env));
                self.note("sealgate restarted".into());
            }
            Kind::DovecotRestart => {
                if let Store::Dovecot(dovecot) = &self.store {
                    let mut dovecot = lock(dovecot);
                    dovecot.stop();
                    self.count_done(Kind::DovecotRestart);
                    self.note("dovecot stopped".into());
                    thread::sleep(rng.millis(0, 1500));
                    dovecot.restart();
                    self.note("dovecot restarted".into());
                }
            }
            Kind::ReinjectRestart => {
                // The reinjection smtpd goes away: new connections are refused (the proxy in
                // front of it stops listening and cuts every open connection), and the first
                // time and then half of the time its smtpd processes are SIGKILLed too,
                // mid-session. Then it comes back.
                // Not `postfix reload` with the service removed from master.cf: each reload
                // restarts every daemon of the instance, each logs the harness's "overriding
                // earlier entry: virtual_transport" warning at once, and Postfix 3.7's postlogd
                // then blocks writing its own warning into its full socket (observed: the whole
                // instance hung, smtpd included).
                let Some(proxy) = &self.proxy else { return };
                // First the smtpds (their sessions die on the next hop's side), then the proxy.
                let first = *lock(&self.smtpd_stops) == 0;
                let killed = if self.reinject_port.is_some() && (first || rng.below(2) == 0) {
                    self.kill_reinjection_smtpds()
                } else {
                    0
                };
                proxy.stop();
                if killed > 0 {
                    *lock(&self.smtpd_stops) += 1;
                }
                self.count_done(Kind::ReinjectRestart);
                self.note(format!(
                    "reinjection path stopped ({killed} smtpd process(es) SIGKILLed)"
                ));
                thread::sleep(rng.millis(200, 1500));
                proxy.resume();
                self.note("reinjection path restarted".into());
            }
            Kind::DiskFull => {
                if let Store::Maildir(tmpfs) = &self.store {
                    let before = self.count_452();
                    let filled = tmpfs.fill();
                    self.count_done(Kind::DiskFull);
                    self.note(format!("maildir fs filled ({filled} bytes)"));
                    // Wait (polling) until a delivery ran into it, then a little longer.
                    let seen =
                        poll_every(Duration::from_millis(100), Duration::from_secs(15), || {
                            self.count_452() > before
                        });
                    thread::sleep(rng.millis(0, 1000));
                    tmpfs.free();
                    self.note(format!("maildir fs freed (452 seen: {seen})"));
                    self.postfix.flush();
                }
            }
            Kind::Tempfail | Kind::Permfail | Kind::Hang | Kind::CloseMidData => {
                if let Some(proxy) = &self.proxy {
                    proxy.arm(match kind {
                        Kind::Tempfail => Fault::Tempfail,
                        Kind::Permfail => Fault::Permfail,
                        Kind::CloseMidData => Fault::CloseMidData,
                        _ if rng.below(2) == 0 => Fault::HangMidData,
                        _ => Fault::HangAfterDot,
                    });
                }
            }
        }
    }

    /// SIGKILLs the processes of the reinjection smtpd service (children of this phase's
    /// Postfix master whose command line is `smtpd -n 127.0.0.1:<port> …`): their sessions
    /// die wherever they are, before or after the queue file was committed. Returns how many.
    /// (Taking the service out of master.cf with `postfix reload` is not used: under load it
    /// can deadlock the test instance's postlogd, see the note in `inject`.)
    fn kill_reinjection_smtpds(&self) -> usize {
        let port = self.reinject_port.expect("phase with a reinjection smtpd");
        let pid_file = self.postfix.dir.path().join("queue/pid/master.pid");
        let Some(master) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            return 0;
        };
        let service = format!("smtpd -n 127.0.0.1:{port} ");
        let mut killed = 0;
        for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // ppid is the second field after the parenthesised command name.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid != Some(master) {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline: String = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.starts_with(&service) {
                testkit::signal(i64::from(pid), "KILL");
                killed += 1;
            }
        }
        killed
    }

    /// Postfix deferrals because sealgate said the mail store is full.
    fn count_452(&self) -> usize {
        self.postfix
            .log()
            .lines()
            .filter(|l| l.contains("status=deferred") && l.contains("452 4.3.1"))
            .count()
    }

    /// Clears every fault and brings every peer back, then flushes Postfix's queue until it
    /// is empty. Returns how long that took.
    fn settle_and_drain(&self, limit: Duration) -> Duration {
        if let Some(proxy) = &self.proxy {
            proxy.disarm();
            proxy.resume();
        }
        match &self.store {
            Store::Dovecot(dovecot) => {
                let mut dovecot = lock(dovecot);
                if !dovecot.is_running() {
                    dovecot.restart();
                }
            }
            Store::Maildir(tmpfs) => tmpfs.free(),
        }
        {
            let mut slot = lock(&self.sealgate);
            if slot.as_mut().is_none_or(|s| !s.is_running()) {
                *slot = Some(spawn_sealgate(&self.sealgate_env));
            }
        }
        let start = Instant::now();
        loop {
            self.postfix.flush();
            if poll_every(Duration::from_millis(250), Duration::from_secs(3), || {
                self.postfix.queue_is_empty()
            }) {
                return start.elapsed();
            }
            if start.elapsed() > limit {
                let (_, queue) = testkit::run(
                    Command::new(testkit::bin_path("postqueue"))
                        .arg("-c")
                        .arg(self.postfix.conf_dir())
                        .arg("-p"),
                );
                panic!(
                    "phase {}: Postfix's queue did not drain within {limit:?}:\n{}\nmaillog tail:\n{}\n\
                     sealgate log tail:\n{}",
                    self.name,
                    testkit::tail(&queue, 60),
                    testkit::tail(&self.postfix.log(), 60),
                    testkit::tail(&self.sealgate_log(), 60)
                );
            }
        }
    }

    fn sealgate_log(&self) -> String {
        let mut log = lock(&self.old_logs).clone();
        if let Some(s) = lock(&self.sealgate).as_ref() {
            log.push_str(&s.log());
        }
        log
    }

    /// Every stored copy: (X-Test-Id, mailbox, bytes, file).
    fn stored(&self) -> Vec<(String, String, Vec<u8>, PathBuf)> {
        let mut out = Vec::new();
        for i in 0..USERS {
            let rcpt = user(i);
            let dir = match &self.store {
                Store::Dovecot(d) => lock(d).maildir(&rcpt),
                Store::Maildir(t) => t.path().join(&rcpt),
            };
            for sub in ["new", "cur"] {
                let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
                    continue;
                };
                for entry in entries {
                    let path = entry.expect("maildir entry").path();
                    let bytes = std::fs::read(&path).expect("read stored message");
                    out.push((header_value(&bytes, "X-Test-Id"), rcpt.clone(), bytes, path));
                }
            }
        }
        out
    }

    /// Files left in the maildirs' tmp/ (a copy cut off by SIGKILL mid-write).
    fn tmp_leftovers(&self) -> usize {
        (0..USERS)
            .map(|i| {
                let dir = match &self.store {
                    Store::Dovecot(d) => lock(d).maildir(&user(i)),
                    Store::Maildir(t) => t.path().join(user(i)),
                };
                std::fs::read_dir(dir.join("tmp")).map_or(0, Iterator::count)
            })
            .sum()
    }
}

/// Sets the flag when dropped (also while unwinding).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Polls `f` every `interval` until it is true (→ true) or `timeout` passes (→ false). For
/// conditions that are expensive to check (a `postqueue` run), where the harness's 20 ms
/// interval would be wasteful.
fn poll_every(interval: Duration, timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(interval.min(deadline - now));
    }
}

/// A stored message and its file.
type StoredCopy = (Vec<u8>, PathBuf);

/// The value of header `name` (first occurrence, unfolded line only), or "".
fn header_value(message: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(&message[..message.len().min(256 * 1024)]);
    let prefix = format!("{name}: ");
    text.lines()
        .take_while(|l| !l.trim_end_matches('\r').is_empty())
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim_end_matches('\r').to_string())
        .unwrap_or_default()
}

/// CRLF → LF (Dovecot stores LF line ends; the Maildir next hop stores CRLF).
fn lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Postfix's log
// ---------------------------------------------------------------------------------------------

struct DeliveryLine {
    qid: String,
    rcpt: String,
    status: String,
    line: String,
}

struct MailLog {
    /// Queue ID → X-Test-Id (from cleanup's `message-id=<id@faults.sealgate.test>`).
    test_id: HashMap<String, String>,
    deliveries: Vec<DeliveryLine>,
}

/// The queue ID of a `postfix/…[pid]: QUEUEID: …` line, the word before `marker`.
fn queue_id(line: &str, marker: &str) -> Option<String> {
    let before = &line[..line.find(marker)?];
    before
        .split_whitespace()
        .last()
        .map(|w| w.trim_end_matches(':').to_string())
}

fn parse_maillog(log: &str) -> MailLog {
    let mut test_id = HashMap::new();
    let mut deliveries = Vec::new();
    for line in log.lines() {
        if let Some(i) = line.find(": message-id=<") {
            let rest = &line[i + ": message-id=<".len()..];
            if let Some(id) = rest.strip_suffix("@faults.sealgate.test>")
                && let Some(qid) = queue_id(line, ": message-id=<")
            {
                test_id.insert(qid, id.to_string());
            }
        } else if let Some(i) = line.find(": to=<")
            && let Some(status) = status_of(line)
        {
            let rest = &line[i + ": to=<".len()..];
            let rcpt = rest[..rest.find('>').unwrap_or(rest.len())].to_string();
            deliveries.push(DeliveryLine {
                qid: queue_id(line, ": to=<").unwrap_or_default(),
                rcpt,
                status: status.to_string(),
                line: line.to_string(),
            });
        }
    }
    MailLog {
        test_id,
        deliveries,
    }
}

/// The reason of a delivery line (the text in parentheses after `status=…`), with digit runs
/// folded to `N` so that equal reasons group.
fn reason(line: &str) -> String {
    let text = line
        .find(" status=")
        .and_then(|i| line[i..].find('(').map(|j| &line[i + j + 1..]))
        .unwrap_or("")
        .trim_end_matches(')');
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('N') {
                out.push('N');
            }
        } else {
            out.push(c);
        }
    }
    out.replace("N.N.N.N[N.N.N.N]:N", "HOST")
        .replace("N.N.N.N[N.N.N.N]", "HOST")
}

/// The `#n` of an injected 550 in a bounce line.
fn injected_serial(line: &str) -> Option<u64> {
    let rest = &line[line.find("injected #")? + "injected #".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Figures {
    messages: usize,
    recipients: usize,
    deliveries: usize,
    duplicates: usize,
    bounced: usize,
    permfail_injected: usize,
    permfail_effective: usize,
    windows_proxy: usize,
    windows_postfix: usize,
    plaintext_for_keyed: usize,
    keyless_exact: usize,
    keyed_encrypted: usize,
    decrypted: usize,
    deferrals: usize,
    full_disk_deferrals: usize,
    tmp_leftovers: usize,
    drain: Duration,
    /// Deferral reasons (digits folded to `N`) and how often Postfix logged each.
    reasons: BTreeMap<String, usize>,
}

impl Phase {
    /// Checks the phase's outcome; pushes every violation to `violations`.
    fn verify(&self, keys: &Keys, violations: &mut Vec<String>) -> Figures {
        let name = self.name;
        let mut fig = Figures {
            messages: self.messages.len(),
            ..Figures::default()
        };
        let log = parse_maillog(&self.postfix.log());
        let record = self
            .proxy
            .as_ref()
            .map(FaultProxy::record)
            .unwrap_or_default();
        let by_id: HashMap<&str, &TestMessage> =
            self.messages.iter().map(|m| (m.id.as_str(), m)).collect();

        // The at-least-once windows, per (test id, recipient).
        let mut windows: HashMap<(String, String), usize> = HashMap::new();
        for (id, rcpt) in &record.windows {
            *windows.entry((id.clone(), rcpt.clone())).or_default() += 1;
            fig.windows_proxy += 1;
        }
        let mut lost_connection: HashMap<String, usize> = HashMap::new();
        for d in &log.deliveries {
            if d.status == "deferred" {
                fig.deferrals += 1;
                *fig.reasons.entry(reason(&d.line)).or_default() += 1;
                if d.line.contains("452 4.3.1") {
                    fig.full_disk_deferrals += 1;
                }
                if d.line.contains("lost connection") || d.line.contains("timed out") {
                    *lost_connection.entry(d.rcpt.clone()).or_default() += 1;
                }
                if d.line.contains("may be sent more than once") {
                    match log.test_id.get(&d.qid) {
                        Some(id) => {
                            *windows.entry((id.clone(), d.rcpt.clone())).or_default() += 1;
                            fig.windows_postfix += 1;
                        }
                        None => violations.push(format!(
                            "{name}: deferral for an unknown queue ID: {}",
                            d.line
                        )),
                    }
                }
            }
        }

        // Bounces: each one must be an injected 550, each injection used at most once.
        let permfails: HashMap<u64, &testkit::fault_proxy::Permfail> =
            record.permfails.iter().map(|p| (p.serial, p)).collect();
        fig.permfail_injected = record.permfails.len();
        fig.permfail_effective = record.permfails.iter().filter(|p| p.effective).count();
        let mut used: HashSet<u64> = HashSet::new();
        let mut bounced: HashSet<(String, String)> = HashSet::new();
        let mut bounced_per_rcpt: HashMap<String, usize> = HashMap::new();
        for d in &log.deliveries {
            if d.status != "bounced" && d.status != "expired" {
                continue;
            }
            if d.rcpt == SENDER {
                continue; // the bounce notice to the outside sender, which cannot be sent
            }
            let Some(id) = log.test_id.get(&d.qid) else {
                violations.push(format!("{name}: bounce of an unknown queue ID: {}", d.line));
                continue;
            };
            match injected_serial(&d.line).and_then(|n| permfails.get(&n).map(|p| (n, p))) {
                Some((n, p)) if p.rcpt == d.rcpt && used.insert(n) => {
                    bounced.insert((id.clone(), d.rcpt.clone()));
                    *bounced_per_rcpt.entry(d.rcpt.clone()).or_default() += 1;
                    fig.bounced += 1;
                }
                _ => violations.push(format!(
                    "{name}: a 5xx that was not injected (or attributed twice): {}",
                    d.line
                )),
            }
        }
        // An effective injected 550 that did not bounce: only losing sealgate can do that, and
        // then Postfix logged a lost connection for that recipient.
        let mut unbounced: HashMap<&str, usize> = HashMap::new();
        for p in record
            .permfails
            .iter()
            .filter(|p| p.effective && !used.contains(&p.serial))
        {
            *unbounced.entry(p.rcpt.as_str()).or_default() += 1;
        }
        for (rcpt, n) in unbounced {
            let lost = lost_connection.get(rcpt).copied().unwrap_or(0);
            if n > lost {
                violations.push(format!(
                    "{name}: {n} injected 550(s) for {rcpt} never reached Postfix, but only {lost} \
                     lost connection(s) for it"
                ));
            }
        }

        // The stored copies.
        let mut copies: HashMap<(String, String), Vec<StoredCopy>> = HashMap::new();
        for (id, rcpt, bytes, path) in self.stored() {
            copies.entry((id, rcpt)).or_default().push((bytes, path));
        }
        for ((id, rcpt), list) in &copies {
            let expected = by_id
                .get(id.as_str())
                .is_some_and(|m| m.rcpts.contains(rcpt));
            if !expected {
                violations.push(format!(
                    "{name}: {} stray cop(ies) for ({id:?}, {rcpt}), e.g. {}",
                    list.len(),
                    list[0].1.display()
                ));
            }
        }
        let mut decrypted = 0usize;
        for message in &self.messages {
            for rcpt in &message.rcpts {
                fig.recipients += 1;
                let key = (message.id.clone(), rcpt.clone());
                let list = copies.get(&key).map_or(&[][..], Vec::as_slice);
                let n = list.len();
                let allowed_extra = windows.get(&key).copied().unwrap_or(0);
                fig.deliveries += n;
                if bounced.contains(&key) {
                    fig.duplicates += n;
                    if n > allowed_extra {
                        violations.push(format!(
                            "{name}: {} to {rcpt}: bounced (injected) but {n} cop(ies) stored, \
                             {allowed_extra} window(s)",
                            message.id
                        ));
                    }
                } else if n == 0 {
                    violations.push(format!(
                        "{name}: LOST {} to {rcpt}: not stored, not bounced; Postfix lines:\n{}",
                        message.id,
                        self.lines_about(&log, &message.id, rcpt)
                    ));
                } else {
                    fig.duplicates += n - 1;
                    if n - 1 > allowed_extra {
                        violations.push(format!(
                            "{name}: {} to {rcpt}: {n} copies but {allowed_extra} at-least-once \
                             window(s); Postfix lines:\n{}",
                            message.id,
                            self.lines_about(&log, &message.id, rcpt)
                        ));
                    }
                }
                for (bytes, path) in list {
                    let check = if is_keyed(rcpt) {
                        let secret = (decrypted < DECRYPT_SAMPLE)
                            .then(|| keys.certs.get(rcpt))
                            .flatten();
                        let r = check_keyed(message, bytes, secret);
                        if r.is_ok() {
                            fig.keyed_encrypted += 1;
                            if secret.is_some() {
                                decrypted += 1;
                            }
                        } else if memchr::memmem::find(bytes, message.marker.as_bytes()).is_some() {
                            fig.plaintext_for_keyed += 1;
                        }
                        r
                    } else {
                        let r = check_keyless(message, bytes);
                        if r.is_ok() {
                            fig.keyless_exact += 1;
                        }
                        r
                    };
                    if let Err(why) = check {
                        violations.push(format!(
                            "{name}: {} to {rcpt} ({}): {why}",
                            message.id,
                            path.display()
                        ));
                    }
                }
            }
        }
        fig.decrypted = decrypted;
        fig.tmp_leftovers = self.tmp_leftovers();
        for line in self.sealgate_log().lines() {
            if line.contains("panicked") {
                violations.push(format!("{name}: sealgate panicked: {line}"));
            }
        }
        let counts = self.counts();
        if counts.get(&Kind::DiskFull).copied().unwrap_or(0) > 0 && fig.full_disk_deferrals == 0 {
            violations.push(format!(
                "{name}: the mail store was filled, but Postfix never logged a 452 4.3.1 deferral"
            ));
        }
        fig
    }

    fn lines_about(&self, log: &MailLog, id: &str, rcpt: &str) -> String {
        let qids: HashSet<&String> = log
            .test_id
            .iter()
            .filter(|(_, v)| v.as_str() == id)
            .map(|(k, _)| k)
            .collect();
        let lines: Vec<&str> = log
            .deliveries
            .iter()
            .filter(|d| qids.contains(&d.qid) && d.rcpt == rcpt)
            .map(|d| d.line.as_str())
            .collect();
        format!("  {}", lines.join("\n  "))
    }
}

/// A keyless recipient's copy: the submitted message, byte for byte, below the trace headers
/// the hops added on top (Postfix's Received; Dovecot's Return-Path, Delivered-To, Received;
/// sealgate's Maildir Return-Path, Delivered-To).
fn check_keyless(message: &TestMessage, stored: &[u8]) -> Result<(), String> {
    if lf(stored).ends_with(&lf(&message.bytes)) {
        Ok(())
    } else {
        Err(format!(
            "keyless copy differs from what was sent ({} stored octets, {} sent); head:\n{}",
            stored.len(),
            message.bytes.len(),
            String::from_utf8_lossy(&stored[..stored.len().min(1200)])
        ))
    }
}

/// A keyed recipient's copy: PGP/MIME, no trace of the body in clear; with `secret`, it also
/// decrypts to the original Content-* fields and body.
fn check_keyed(message: &TestMessage, stored: &[u8], secret: Option<&Cert>) -> Result<(), String> {
    if memchr::memmem::find(stored, message.marker.as_bytes()).is_some() {
        return Err("PLAINTEXT: the body marker is stored in clear for a keyed recipient".into());
    }
    let head = header_block(stored);
    if !head.contains("Content-Type: multipart/encrypted")
        || !head.contains("X-Sealgate-Encrypted: ")
    {
        return Err(format!("not PGP/MIME; header block:\n{head}"));
    }
    if header_value(stored, "Subject") != format!("fault injection {}", message.id) {
        return Err(format!(
            "outer header fields changed; header block:\n{head}"
        ));
    }
    if let Some(secret) = secret {
        let plaintext = decrypt(secret, &armored_part(stored))?;
        if lf(&plaintext) != lf(&expected_inner(&message.bytes)) {
            return Err(format!(
                "decrypts to something else ({} octets, expected {})",
                plaintext.len(),
                expected_inner(&message.bytes).len()
            ));
        }
    }
    Ok(())
}

fn header_block(message: &[u8]) -> String {
    let text = lf(&message[..message.len().min(64 * 1024)]);
    let end = memchr::memmem::find(&text, b"\n\n").unwrap_or(text.len());
    String::from_utf8_lossy(&text[..end]).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

#[test]
fn zero_loss_under_faults() {
    if !testkit::require_all(&["postfix", "postqueue", "dovecot"]) {
        return;
    }
    let plan = Plan::from_env();
    let seed = seed_from_env();
    say(&format!(
        "seed={seed} (replay: TEST_FAULTS_SEED={seed}), {} run",
        if plan.full {
            "full"
        } else {
            "reduced (TEST_FULL_FAULTS=1 for 2,000 messages)"
        }
    ));
    let mut rng = Rng(seed);
    let keys = Keys::generate();

    let mut batches: Vec<Vec<TestMessage>> = Vec::new();
    for (p, (count, _)) in ["A", "B", "C"].iter().zip(plan.phases) {
        let mut shapes = rng.fork();
        batches.push(
            (0..count)
                .map(|i| build_message(&mut shapes, format!("{p}{i:05}-{:08x}", seed as u32)))
                .collect(),
        );
    }
    let mut batches = batches.into_iter();
    let users: Vec<String> = (0..USERS).map(user).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut phases: Vec<Phase> = Vec::new();

    // Phase A: Postfix → sealgate (LMTP transport) → fault proxy → Dovecot LMTP.
    {
        let messages = batches.next().expect("batch A");
        let dovecot = Dovecot::start_with_users(&users);
        let proxy = FaultProxy::start(
            stable_port(),
            dovecot.lmtp_port,
            true,
            SLOW_REPLY,
            rng.next(),
        );
        let port = stable_port();
        let env = sealgate_env(port, &format!("lmtp:127.0.0.1:{}", proxy.port), &keys);
        let sealgate = spawn_sealgate(&env);
        let postfix = postfix_lmtp_transport(port);
        phases.push(Phase::new(
            "A",
            vec![
                (Kind::Tempfail, 3),
                (Kind::Permfail, 2),
                (Kind::Hang, 2),
                (Kind::CloseMidData, 2),
                (Kind::Kill, 1),
                (Kind::DovecotRestart, 1),
            ],
            (300, 1500),
            messages,
            plan.phases[0].1,
            postfix,
            sealgate,
            env,
            Some(proxy),
            Store::Dovecot(Mutex::new(dovecot)),
        ));
    }

    // Phase B: Postfix → sealgate (LMTP transport) → Maildir on a small tmpfs.
    {
        let messages = batches.next().expect("batch B");
        // Room for every copy (encryption adds about 40 %) with a wide margin.
        let needed: u64 = messages
            .iter()
            .map(|m| (m.bytes.len() * m.rcpts.len()) as u64 * 2)
            .sum();
        match Tmpfs::mount(needed + (16 << 20)) {
            Ok(tmpfs) => {
                let port = stable_port();
                let env = sealgate_env(port, &format!("maildir:{}", tmpfs.path().display()), &keys);
                let sealgate = spawn_sealgate(&env);
                let postfix = postfix_lmtp_transport(port);
                phases.push(Phase::new(
                    "B",
                    vec![(Kind::DiskFull, 2), (Kind::Kill, 1)],
                    (1000, 3000),
                    messages,
                    plan.phases[1].1,
                    postfix,
                    sealgate,
                    env,
                    None,
                    Store::Maildir(tmpfs),
                ));
            }
            Err(why) if testkit::is_ci() => panic!("phase B needs a tmpfs (root): {why}"),
            Err(why) => say(&format!(
                "note: skipping phase B (Maildir on a full disk): {why}"
            )),
        }
    }

    // Phase C: Postfix → sealgate (content_filter) → fault proxy → reinjection smtpd → Dovecot.
    {
        let messages = batches.next().expect("batch C");
        let dovecot = Dovecot::start_with_users(&users);
        let reinject_port = stable_port();
        let proxy = FaultProxy::start(stable_port(), reinject_port, false, SLOW_REPLY, rng.next());
        let port = stable_port();
        let env = sealgate_env(port, &format!("smtp:127.0.0.1:{}", proxy.port), &keys);
        let sealgate = spawn_sealgate(&env);
        let postfix = Postfix::start(PostfixConfig {
            main_cf: vec![
                format!("virtual_transport = lmtp:inet:127.0.0.1:{}", dovecot.lmtp_port),
                format!("content_filter = sealgate:inet:127.0.0.1:{port}"),
                "receive_override_options = no_address_mappings".into(),
                // A reinjection smtpd SIGKILLed before it served anything makes master throttle
                // the service ("bad command startup"); keep that short.
                "service_throttle_time = 1s".into(),
            ],
            master_cf: vec![
                "sealgate unix - - n - 10 lmtp".into(),
                "  -o lmtp_send_xforward_command=yes".into(),
                "  -o disable_mime_output_conversion=yes".into(),
                "  -o lmtp_generic_maps=".into(),
                format!("127.0.0.1:{reinject_port} inet n - n - 10 smtpd"),
                "  -o content_filter=".into(),
                "  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters".into(),
                "  -o smtpd_helo_restrictions=".into(),
                "  -o smtpd_client_restrictions=".into(),
                "  -o smtpd_sender_restrictions=".into(),
                "  -o smtpd_relay_restrictions=".into(),
                "  -o smtpd_recipient_restrictions=permit_mynetworks,reject".into(),
                "  -o mynetworks=127.0.0.0/8".into(),
                "  -o smtpd_authorized_xforward_hosts=127.0.0.0/8".into(),
                "  -o message_size_limit=52428800".into(),
            ],
        });
        phases.push(Phase::new(
            "C",
            vec![
                (Kind::Tempfail, 3),
                (Kind::Permfail, 2),
                (Kind::Hang, 2),
                (Kind::CloseMidData, 2),
                (Kind::ReinjectRestart, 1),
                (Kind::Kill, 1),
            ],
            (300, 1500),
            messages,
            plan.phases[2].1,
            postfix,
            sealgate,
            env,
            Some(proxy),
            Store::Dovecot(Mutex::new(dovecot)),
        ));
        if let Some(c) = phases.last_mut() {
            c.reinject_port = Some(reinject_port);
        }
    }

    // Run the phases side by side: per phase a sender and a fault thread, then the drain.
    let started = Instant::now();
    let mut drains: Vec<Duration> = Vec::new();
    thread::scope(|s| {
        let handles: Vec<_> = phases
            .iter()
            .map(|phase| {
                let mut fault_rng = rng.fork();
                let drain_limit = plan.drain;
                s.spawn(move || {
                    let sending_done = AtomicBool::new(false);
                    thread::scope(|inner| {
                        inner.spawn(|| {
                            // Set even if sending panics, so the fault thread ends too.
                            let _done = SetOnDrop(&sending_done);
                            phase.send_all();
                        });
                        inner.spawn(|| phase.inject_faults(&mut fault_rng, &sending_done));
                    });
                    say(&format!(
                        "phase {}: sending and faults done after {:.1}s; draining",
                        phase.name,
                        phase.started.elapsed().as_secs_f64()
                    ));
                    phase.settle_and_drain(drain_limit)
                })
            })
            .collect();
        for h in handles {
            drains.push(h.join().expect("phase thread"));
        }
    });
    say(&format!(
        "all phases drained after {:.1}s",
        started.elapsed().as_secs_f64()
    ));

    // The oracle.
    let mut violations: Vec<String> = Vec::new();
    let mut total = Figures::default();
    let mut faults: BTreeMap<Kind, usize> = BTreeMap::new();
    for (phase, drain) in phases.iter().zip(&drains) {
        let mut fig = phase.verify(&keys, &mut violations);
        fig.drain = *drain;
        let counts = phase.counts();
        let record = phase
            .proxy
            .as_ref()
            .map(FaultProxy::record)
            .unwrap_or_default();
        let hang_split = format!(
            "mid-DATA {}, after dot {}",
            record
                .applied
                .get(&Fault::HangMidData)
                .copied()
                .unwrap_or(0),
            record
                .applied
                .get(&Fault::HangAfterDot)
                .copied()
                .unwrap_or(0)
        );
        say(&format!(
            "phase {}: faults {}; hang: {hang_split}; outages with smtpd processes SIGKILLed: \
             {}; next hop down at connect: {}",
            phase.name,
            phase
                .kinds
                .iter()
                .map(|(k, _)| format!("{}={}", k.name(), counts.get(k).copied().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(", "),
            lock(&phase.smtpd_stops),
            record.upstream_down
        ));
        say(&format!(
            "phase {}: messages={}, recipients={}, deliveries={}, duplicates={}, bounced={} \
             (injected 5xx {}, {} effective), windows: proxy {} postfix {}, deferrals={} \
             (452 4.3.1: {}), keyless byte-exact={}, keyed PGP/MIME={} ({} decrypted), \
             plaintext_for_keyed={}, tmp/ leftovers={}, drain {:.1}s",
            phase.name,
            fig.messages,
            fig.recipients,
            fig.deliveries,
            fig.duplicates,
            fig.bounced,
            fig.permfail_injected,
            fig.permfail_effective,
            fig.windows_proxy,
            fig.windows_postfix,
            fig.deferrals,
            fig.full_disk_deferrals,
            fig.keyless_exact,
            fig.keyed_encrypted,
            fig.decrypted,
            fig.plaintext_for_keyed,
            fig.tmp_leftovers,
            fig.drain.as_secs_f64()
        ));
        let mut reasons: Vec<(&String, &usize)> = fig.reasons.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1));
        for (text, n) in reasons {
            say(&format!("phase {}:   {n:5} deferred: {text}", phase.name));
        }
        for (k, n) in counts {
            *faults.entry(k).or_default() += n;
        }
        total.messages += fig.messages;
        total.recipients += fig.recipients;
        total.deliveries += fig.deliveries;
        total.duplicates += fig.duplicates;
        total.bounced += fig.bounced;
        total.permfail_injected += fig.permfail_injected;
        total.plaintext_for_keyed += fig.plaintext_for_keyed;
        total.windows_proxy += fig.windows_proxy;
        total.windows_postfix += fig.windows_postfix;
        total.keyless_exact += fig.keyless_exact;
        total.keyed_encrypted += fig.keyed_encrypted;
        total.decrypted += fig.decrypted;
    }
    let count = |k: Kind| faults.get(&k).copied().unwrap_or(0);
    say(&format!(
        "{}; messages={}, recipients={}, deliveries={}, duplicates={}, bounced={}, \
         plaintext_for_keyed={}",
        Kind::ALL
            .iter()
            .map(|k| format!("{}={}", k.name(), count(*k)))
            .collect::<Vec<_>>()
            .join(", "),
        total.messages,
        total.recipients,
        total.deliveries,
        total.duplicates,
        total.bounced,
        total.plaintext_for_keyed
    ));
    say(&format!(
        "duplicates allowed by windows: proxy {}, postfix {}; injected 5xx {}; keyless \
         byte-exact {}, keyed PGP/MIME {}, decrypted {}; total {:.1}s",
        total.windows_proxy,
        total.windows_postfix,
        total.permfail_injected,
        total.keyless_exact,
        total.keyed_encrypted,
        total.decrypted,
        started.elapsed().as_secs_f64()
    ));

    // Every fault kind of the issue happened at least once.
    let ran_b = phases.iter().any(|p| p.name == "B");
    for kind in Kind::ALL {
        if kind == Kind::DiskFull && !ran_b {
            continue;
        }
        if count(kind) == 0 {
            violations.push(format!("fault kind {} was never injected", kind.name()));
        }
    }
    if !violations.is_empty() {
        for phase in &phases {
            say(&format!(
                "phase {} events:\n{}",
                phase.name,
                lock(&phase.events).join("\n")
            ));
        }
        let shown: Vec<&String> = violations.iter().take(40).collect();
        panic!(
            "{} violation(s) (seed {seed}):\n{}",
            violations.len(),
            shown
                .iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert_eq!(total.plaintext_for_keyed, 0);
}

#[test]
fn message_shapes() {
    // The generator itself: sizes within bounds, marker only in the body, CRLF lines.
    let mut rng = Rng(7);
    for i in 0..200 {
        let m = build_message(&mut rng, format!("T{i}"));
        assert!(
            m.bytes.len() >= 1024 && m.bytes.len() <= 257 * 1024,
            "{}",
            m.bytes.len()
        );
        assert!((1..=3).contains(&m.rcpts.len()));
        let head = header_block(&m.bytes);
        assert!(!head.contains(&m.marker));
        assert!(!m.bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
        assert_eq!(header_value(&m.bytes, "X-Test-Id"), format!("T{i}"));
    }
}
