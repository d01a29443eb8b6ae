//! End-to-end benchmark of sealgate: LMTP client → sealgate → LMTP sink, in pass-through and
//! with encryption.
//!
//! Everything runs in this process except sealgate itself: an in-process LMTP sink (the next
//! hop), the release `sealgate` binary, started fresh for every scenario so that its peak RSS
//! (`VmHWM`) belongs to that scenario alone, and a load client of M concurrent connections that
//! sends N messages (MAIL, RCPT, DATA pipelined in one write; the body after the 354). For each
//! scenario it prints throughput (msgs/s, and message MB/s with 1 MB = 10^6 bytes, counted on
//! the message as sent), latency per message from MAIL to the final reply (p50/p99/max),
//! sealgate's peak RSS and its CPU time (utime+stime). Client and sink share the cores with
//! sealgate, so msgs per sealgate CPU-second is the figure to compare across machines. Failed
//! messages make the exit code 1; the performance targets at the end are printed for reference
//! only.
//!
//! Encryption scenarios generate a certificate (Cv25519 or RSA-3072, one transport-encryption
//! subkey, user ID `<bench@example.org>`), import it with `sealgate keys import` into a
//! temporary key store and send to `bench@example.org`. The sink checks every delivered
//! message: PGP/MIME (`multipart/encrypted`) with one complete armored OpenPGP message; one
//! that is not fails the scenario. After the sealgate scenarios the same message bytes are
//! encrypted in-process by sequoia alone, one thread (`Message → Armorer → Encryptor`
//! (SEIPDv1, AES-256, `sealgate::openpgp::recipients`) `→ LiteralWriter` → discarded), and
//! sealgate's figures are set against that baseline. A second in-process row, "stage", runs
//! sealgate's encryption stage alone (MIME framing, its own armor encoder) on the same bytes:
//! it separates what the stage costs from what the protocol and I/O around it cost. The
//! process uses sealgate's allocator (jemalloc), so neither side is handicapped.
//!
//! Run:
//! - `cargo bench --bench e2e`: the default scenarios (pass-through 4 KiB, 64 KiB, 1 MiB, one
//!   256 MiB; encryption Cv25519 and RSA-3072 4 KiB and 64 KiB, one Cv25519 256 MiB).
//! - `cargo bench --bench e2e -- --quick`: the same with a tenth of the messages (smoke run).
//! - `cargo bench --bench e2e -- --only passthrough|encrypt|postgres`: one group of scenarios.
//!   `postgres` (also part of the default run; `benches/e2e/postgres.rs` says what it does):
//!   the 4 KiB Cv25519 scenario with the key in cert-d and in a private PostgreSQL, warm, and
//!   their ratio; cold lookups (RCPT reply time per new recipient); one message to 100 new
//!   recipients, which must cost one database round trip (else exit 1).
//! - `cargo bench --bench e2e -- --messages N --size BYTES --connections M [--key
//!   cv25519|rsa3072]`: one custom scenario, encrypted to a key of that kind if `--key` is given.
//!
//! `cargo test --all-targets` runs this binary too, unoptimised and without arguments; it then
//! does the `--quick` run, with one small encryption scenario and a short baseline instead of
//! the encryption group, and a tiny `postgres` group (20 messages per warm row, 5 cold
//! recipients of each kind, the 100-recipient message with 5 keys; about 2 s more): PostgreSQL
//! missing skips it with a note, or fails it with `CI=true`. Linux only: reads `/proc/<pid>/status` and `/proc/<pid>/stat`.
#![allow(
    clippy::disallowed_methods,
    reason = "test code reads its own knobs (CI, TEST_*) and the harness environment; .clippy.toml guards the service code"
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use sealgate::bench::Metrics;
use sealgate::bench::PgpMime;
use sealgate::bench::Rewrite;
use sealgate_protocol::{
    BareNewline, Command as Cmd, DataDecoder, DotStuffer, EnhancedCode, LineDecoder, Reply,
    ReplyDecoder, parse_command,
};
use sequoia_openpgp::cert::{CertBuilder, CipherSuite};
use sequoia_openpgp::serialize::SerializeInto;
use sequoia_openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message};
use sequoia_openpgp::types::{DataFormat, SymmetricAlgorithm};
use sequoia_openpgp::{Cert, armor};
use testkit::Sealgate;

#[path = "e2e/postgres.rs"]
mod postgres;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The allocator the sealgate binary uses (src/main.rs), so the in-process baselines are not
/// handicapped by a slower one.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
/// To a recipient without a key: the message passes through.
const ENVELOPE: &[u8] =
    b"MAIL FROM:<sender@bench.example>\r\nRCPT TO:<rcpt@bench.example>\r\nDATA\r\n";
/// To the holder of the generated certificate: the message is encrypted.
const ENVELOPE_ENCRYPT: &[u8] =
    b"MAIL FROM:<sender@bench.example>\r\nRCPT TO:<bench@example.org>\r\nDATA\r\n";
const KEY_USERID: &str = "<bench@example.org>";
const TEXT: &[u8] = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen \
    liquor jugs. Sphinx of black quartz, judge my vow! 0123456789 ";
const HEADER: &str = "scenario                         msgs  err    secs   msgs/s    MB/s  p50ms  p99ms   maxms  rss_MiB  cpu_s msgs/cpu_s";
const BARE_HEADER: &str = "baseline                         msgs    secs msgs/s/core    MB/s  us/msg  select_us  cpu_s msgs/cpu_s";

/// What the sink checks in an encrypted message: the PGP/MIME type in the first
/// [`SINK_PREFIX`] octets, the armor header after it, the armor footer in the last
/// [`SINK_TAIL`] octets.
const MULTIPART_ENCRYPTED: &[u8] = b"multipart/encrypted";
const BEGIN_PGP: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END_PGP: &[u8] = b"-----END PGP MESSAGE-----";
const SINK_PREFIX: usize = 16 * 1024;
const SINK_TAIL: usize = 256;

/// Messages and message bytes the sink has received, all connections together, and how many
/// of those messages were PGP/MIME-encrypted.
static SINK_MESSAGES: AtomicU64 = AtomicU64::new(0);
static SINK_BYTES: AtomicU64 = AtomicU64::new(0);
static SINK_ENCRYPTED: AtomicU64 = AtomicU64::new(0);

/// The certificate kinds the encryption scenarios use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Suite {
    Cv25519,
    Rsa3072,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::Cv25519 => "cv25519",
            Suite::Rsa3072 => "rsa3072",
        }
    }

    fn cipher_suite(self) -> CipherSuite {
        match self {
            Suite::Cv25519 => CipherSuite::Cv25519,
            Suite::Rsa3072 => CipherSuite::RSA3k,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Passthrough,
    Encrypt,
    Postgres,
}

struct Scenario {
    name: String,
    /// `Some`: sent to the holder of a certificate of this kind, so encrypted.
    key: Option<Suite>,
    messages: usize,
    size: usize,
    connections: usize,
    warmup: usize,
}

impl Scenario {
    fn group(&self) -> Group {
        match self.key {
            Some(_) => Group::Encrypt,
            None => Group::Passthrough,
        }
    }
}

/// What the scenarios to run are, and how they were chosen.
struct Plan {
    scenarios: Vec<Scenario>,
    quick: bool,
    /// Messages per baseline run under `cargo test`, instead of the scenario's count.
    bare_messages: Option<usize>,
    /// A baseline run lasts at least this long (more messages than the scenario's if need
    /// be), so that CPU time in 10 ms ticks is measured to about 1 %.
    bare_min: Duration,
    /// The `postgres` group, when it runs.
    postgres: Option<postgres::PgPlan>,
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
    let plan = plan(&args, under_cargo_test).unwrap_or_else(|err| {
        eprintln!(
            "e2e: {err}\nusage: cargo bench --bench e2e -- [--quick] [--only passthrough|encrypt|postgres] \
             [--messages N --size BYTES --connections M [--key cv25519|rsa3072]]"
        );
        std::process::exit(2)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let failed = runtime.block_on(run(plan, command.trim_end_matches(" -- ")));
    std::process::exit(i32::from(failed));
}

fn plan(args: &[String], under_cargo_test: bool) -> Result<Plan, String> {
    let (mut quick, mut only, mut key) = (false, None, None);
    let (mut messages, mut size, mut connections) = (None, None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut word = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => quick = true,
            "--only" => {
                only = Some(match word(arg)?.as_str() {
                    "passthrough" => Group::Passthrough,
                    "encrypt" => Group::Encrypt,
                    "postgres" => Group::Postgres,
                    other => {
                        return Err(format!(
                            "--only: passthrough, encrypt or postgres, not {other:?}"
                        ));
                    }
                })
            }
            "--key" => {
                key = Some(match word(arg)?.as_str() {
                    "cv25519" => Suite::Cv25519,
                    "rsa3072" | "rsa3k" => Suite::Rsa3072,
                    other => return Err(format!("--key: cv25519 or rsa3072, not {other:?}")),
                })
            }
            "--messages" | "--size" | "--connections" => {
                let v = word(arg)?;
                let v: usize = v.parse().map_err(|_| format!("{arg}: not a number: {v}"))?;
                match arg.as_str() {
                    "--messages" => messages = Some(v),
                    "--size" => size = Some(v),
                    _ => connections = Some(v.max(1)),
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let sc = |name: &str, key, messages, size, connections, warmup| Scenario {
        name: name.to_owned(),
        key,
        messages,
        size,
        connections,
        warmup,
    };
    use Suite::{Cv25519, Rsa3072};
    let custom = messages.is_some() || size.is_some() || connections.is_some() || key.is_some();
    let mut list = if custom {
        let size = size.unwrap_or(4096);
        let (n, m) = (messages.unwrap_or(1000), connections.unwrap_or(8));
        let name = match key {
            Some(suite) => format!("custom encrypt {} {size}B", suite.name()),
            None => format!("custom {size}B"),
        };
        vec![sc(&name, key, n, size, m, 0)]
    } else {
        vec![
            sc("passthrough 4KiB", None, 20_000, 4 << 10, 8, 500),
            sc("passthrough 64KiB", None, 3000, 64 << 10, 8, 0),
            sc("passthrough 1MiB", None, 200, 1 << 20, 4, 0),
            sc("passthrough 256MiB single", None, 1, 256 << 20, 1, 0),
            sc("encrypt cv25519 4KiB", Some(Cv25519), 5000, 4 << 10, 8, 300),
            sc("encrypt rsa3072 4KiB", Some(Rsa3072), 5000, 4 << 10, 8, 300),
            sc("encrypt cv25519 64KiB", Some(Cv25519), 1000, 64 << 10, 8, 0),
            sc("encrypt rsa3072 64KiB", Some(Rsa3072), 1000, 64 << 10, 8, 0),
            sc(
                "encrypt cv25519 256MiB single",
                Some(Cv25519),
                1,
                256 << 20,
                1,
                0,
            ),
        ]
    };
    let mut pg = (!custom).then_some(postgres::PgPlan {
        rounds: 4,
        messages: 5000,
        warmup: 300,
        connections: 8,
        cold: 1000,
        fanout: 100,
        fanout_keyed: 100,
    });
    if quick {
        for s in &mut list {
            (s.messages, s.warmup) = ((s.messages / 10).max(1), s.warmup / 10);
        }
        if let Some(pg) = &mut pg {
            (pg.rounds, pg.messages, pg.warmup, pg.cold) = (1, 500, 30, 100);
        }
    }
    let (mut bare_messages, mut bare_min) = (None, Duration::from_secs(1));
    if under_cargo_test {
        // Unoptimised: one small encryption scenario and a short baseline keep it quick.
        list.retain(|s| s.key.is_none());
        list.push(sc("encrypt cv25519 4KiB", Some(Cv25519), 20, 4 << 10, 4, 0));
        (bare_messages, bare_min) = (Some(40), Duration::ZERO);
        if let Some(pg) = &mut pg {
            (pg.messages, pg.warmup, pg.connections) = (20, 5, 4);
            (pg.cold, pg.fanout_keyed) = (5, 5);
        }
    }
    if let Some(group) = only {
        list.retain(|s| s.group() == group);
        pg = pg.filter(|_| group == Group::Postgres);
    }
    Ok(Plan {
        scenarios: list,
        quick,
        bare_messages,
        bare_min,
        postgres: pg,
    })
}

/// What a scenario measured.
#[derive(Clone, Copy)]
struct Outcome {
    /// Delivered messages per second.
    rate: f64,
    /// Wall-clock seconds of the measured run.
    secs: f64,
    /// Peak RSS, MiB.
    rss: f64,
    /// sealgate's CPU seconds during the measured run.
    cpu: f64,
    /// Messages delivered in the measured run.
    ok: usize,
    /// Failed messages: refused, lost, or (when encrypting) not encrypted at the sink.
    errors: usize,
}

/// Runs every scenario, prints the tables, the ratios and the targets; true if anything failed.
async fn run(plan: Plan, command: &str) -> bool {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let quick = if plan.quick {
        " (quick: message counts / 10)"
    } else {
        ""
    };
    println!(
        "# sealgate end-to-end: LMTP client -> sealgate (pass-through or encrypting) -> LMTP sink"
    );
    println!("# cores: {cores}; command: {command}{quick}");
    let work = tempfile::tempdir().expect("a temporary directory");
    // Pass-through runs get an empty key store, so no certificate lying around can matter.
    let empty_store = work.path().join("keys-empty");
    // Made as an operator makes one (`sealgate keys init`): a store without its manifest
    // tempfails every recipient.
    let out = testkit::sealgate::command()
        .args(["keys", "init"])
        .env("SEALGATE_KEYSTORE", &empty_store)
        .stdin(Stdio::null())
        .output()
        .expect("run sealgate keys init");
    assert!(
        out.status.success(),
        "sealgate keys init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut keys: Vec<BenchKey> = Vec::new();
    let suites = plan.scenarios.iter().filter_map(|sc| sc.key);
    let pg_suite = plan.postgres.as_ref().map(|_| Suite::Cv25519);
    for suite in suites.chain(pg_suite) {
        if keys.iter().all(|k| k.suite != suite) {
            let key = BenchKey::new(suite, work.path());
            println!(
                "# key {}: {} {KEY_USERID}, generated and imported with `sealgate keys import` \
                 ({:.2} s to generate)",
                suite.name(),
                key.cert.fingerprint(),
                key.generated_in.as_secs_f64()
            );
            keys.push(key);
        }
    }
    if !keys.is_empty() && library_backtraces() {
        println!(
            "# note: RUST_BACKTRACE/RUST_LIB_BACKTRACE turn on library backtraces: sequoia builds \
             (and drops) an anyhow error per message when its symmetric encryptor is dropped \
             after finalize, which then captures a backtrace, in sealgate and in the baseline \
             alike; unset both to measure without"
        );
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the sink");
    let sink_port = listener.local_addr().expect("sink address").port();
    tokio::spawn(sink(listener));
    if !plan.scenarios.is_empty() {
        println!("{HEADER}");
    }
    let mut results: Vec<(&Scenario, Outcome)> = Vec::new();
    for sc in &plan.scenarios {
        let store = match sc.key {
            Some(suite) => key_for(&keys, suite).store.as_path(),
            None => empty_store.as_path(),
        };
        results.push((sc, run_scenario(sc, sink_port, &Store::CertD(store)).await));
    }
    let pg_failed = match &plan.postgres {
        Some(pg) => postgres::run(pg, sink_port, work.path(), key_for(&keys, Suite::Cv25519)).await,
        None => false,
    };

    // The baseline, with sealgate stopped: the machine is sequoia's alone.
    let encrypted: Vec<_> = results.iter().filter(|(sc, _)| sc.key.is_some()).collect();
    let mut bare = Vec::new();
    if !encrypted.is_empty() {
        println!(
            "# baseline: sequoia alone, in-process, one thread, the same message bytes in 64 KiB pieces: Message -> \
             Armorer -> Encryptor (SEIPDv1, AES-256, sealgate::openpgp::recipients per message) -> \
             LiteralWriter -> discarded; select_us is recipients() alone"
        );
        println!(
            "# stage rows: sealgate's encryption stage alone (PgpMime: MIME framing, its own armor \
             encoder, CRLF), same thread setup: what the stage costs without the protocol and I/O"
        );
        println!("{BARE_HEADER}");
        for (sc, _) in &encrypted {
            let key = key_for(&keys, sc.key.expect("an encryption scenario"));
            let messages = plan.bare_messages.unwrap_or(sc.messages);
            let warmup = (messages / 20).min(50);
            let run_and_print = |baseline| {
                let run = baseline_run(
                    baseline,
                    &key.cert,
                    sc.size,
                    messages,
                    warmup,
                    plan.bare_min,
                );
                let (word, select) = match baseline {
                    Baseline::Bare => ("bare", num(run.select_secs / run.messages as f64 * 1e6)),
                    Baseline::Stage => ("stage", "-".to_owned()),
                };
                println!(
                    "{:<30} {:>6} {:>7.2} {:>11} {:>7} {:>7} {:>10} {:>6.2} {:>10}",
                    sc.name.replacen("encrypt", word, 1),
                    run.messages,
                    run.secs,
                    num(run.messages as f64 / run.secs),
                    num((run.messages * sc.size) as f64 / run.secs / 1e6),
                    num(run.secs / run.messages as f64 * 1e6),
                    select,
                    run.cpu,
                    num(per_cpu(run.messages, run.cpu)),
                );
                run
            };
            let bare_run = run_and_print(Baseline::Bare);
            let stage_run = run_and_print(Baseline::Stage);
            bare.push((sc.name.as_str(), bare_run, stage_run));
        }
        println!("# ratios: sealgate / bare sequoia, same key and message size");
        println!(
            "#   machine_ratio (the issue's target): sealgate msgs/s on this {cores}-core machine / \
             bare msgs/s per core"
        );
        println!(
            "#   core_ratio: sealgate msgs/s / (bare msgs/s per core x {cores} cores; the load \
             client and the sink use them too)"
        );
        println!(
            "#   cpu_ratio (the strictest): sealgate msgs per sealgate CPU-second / bare msgs per \
             CPU-second; the bare loop does no I/O, sealgate receives and delivers over TCP"
        );
        println!("#   stage_ratio: the stage alone / bare, both in-process on one thread");
        println!(
            "scenario                       sealgate_msgs/s  bare_msgs/s/core  machine_ratio  core_ratio  sealgate_msgs/cpu_s  bare_msgs/cpu_s  cpu_ratio  stage_msgs/cpu_s  stage_ratio"
        );
        for ((sc, outcome), (_, run, stage)) in encrypted.iter().zip(&bare) {
            let bare_rate = run.messages as f64 / run.secs;
            let bare_per_cpu = per_cpu(run.messages, run.cpu);
            let stage_per_cpu = per_cpu(stage.messages, stage.cpu);
            let per_cpu = per_cpu(outcome.ok, outcome.cpu);
            println!(
                "{:<30} {:>15} {:>17} {:>14} {:>11} {:>20} {:>16} {:>10} {:>17} {:>12}",
                sc.name,
                num(outcome.rate),
                num(bare_rate),
                num(outcome.rate / bare_rate),
                num(outcome.rate / (bare_rate * cores as f64)),
                num(per_cpu),
                num(bare_per_cpu),
                num(per_cpu / bare_per_cpu),
                num(stage_per_cpu),
                num(stage_per_cpu / bare_per_cpu),
            );
        }
    }

    let find = |name: &str| results.iter().find(|r| r.0.name == name).map(|r| r.1);
    println!("targets (reference only, not enforced):");
    let rate = find("passthrough 4KiB").map(|o| o.rate);
    target("passthrough 4KiB >= 5000 msgs/s", rate, |v| v >= 5000.0);
    let rss = find("passthrough 256MiB single").map(|o| o.rss);
    target("passthrough 256MiB single peak RSS <= 64 MiB", rss, |v| {
        v <= 64.0
    });
    for name in [
        "encrypt cv25519 4KiB",
        "encrypt rsa3072 4KiB",
        "encrypt cv25519 64KiB",
        "encrypt rsa3072 64KiB",
        "encrypt cv25519 256MiB single",
    ] {
        let against_bare = find(name).zip(bare.iter().find(|b| b.0 == name));
        let machine =
            against_bare.map(|(o, (_, run, _))| o.rate / (run.messages as f64 / run.secs));
        let what = format!("{name} >= 0.80 of bare sequoia per core (machine_ratio)");
        target(&what, machine, |v| v >= 0.8);
        let cpu = against_bare
            .map(|(o, (_, run, _))| per_cpu(o.ok, o.cpu) / per_cpu(run.messages, run.cpu));
        let what = format!("{name} >= 0.80 of bare sequoia per CPU-second (cpu_ratio, stricter)");
        target(&what, cpu, |v| v >= 0.8);
    }
    let rss = find("encrypt cv25519 256MiB single").map(|o| o.rss);
    target(
        "encrypt cv25519 256MiB single peak RSS <= 64 MiB",
        rss,
        |v| v <= 64.0,
    );
    let failed = results.iter().any(|(_, o)| o.errors > 0) || pg_failed;
    if failed {
        println!(
            "FAILED: some messages were not delivered, or not encrypted (see the notes above)"
        );
    }
    failed
}

fn target(what: &str, value: Option<f64>, pass: impl Fn(f64) -> bool) {
    match value {
        Some(v) if !v.is_finite() => println!("  {what}: not measurable (too little CPU time)"),
        Some(v) if pass(v) => println!("  {what}: {} PASS", num(v)),
        Some(v) => println!("  {what}: {} MISS", num(v)),
        None => println!("  {what}: not run"),
    }
}

/// Whether `std::backtrace::Backtrace::capture` (so anyhow) captures, as the environment says.
fn library_backtraces() -> bool {
    let on = |name| std::env::var(name).ok().map(|v| v != "0");
    on("RUST_LIB_BACKTRACE")
        .or_else(|| on("RUST_BACKTRACE"))
        .unwrap_or(false)
}

/// Messages per CPU-second; NaN when less than a clock tick was measured.
fn per_cpu(messages: usize, cpu: f64) -> f64 {
    match cpu > 0.0 {
        true => messages as f64 / cpu,
        false => f64::NAN,
    }
}

/// One scenario against a fresh sealgate using the key store `store`; prints its row.
async fn run_scenario(sc: &Scenario, sink_port: u16, store: &Store<'_>) -> Outcome {
    let payload = Payload::new(sc.size, sc.key.is_some());
    let mut gate = spawn_sealgate(sink_port, store);
    let (addr, pid) = (format!("127.0.0.1:{}", gate.port()), gate.child.id());
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
    let on_pg = matches!(store, Store::Postgres { .. });
    let db0 = on_pg.then(|| (postgres::misses(&gate), postgres::fetches(&gate)));
    let (cpu0, sink_msgs0, sink_bytes0, sink_enc0) = (
        cpu_seconds(pid),
        sink_messages(),
        sink_bytes(),
        sink_encrypted(),
    );
    let started = Instant::now();
    let mut res = load(&addr, &payload, sc.messages, sc.connections).await;
    let secs = started.elapsed().as_secs_f64();
    let (cpu, rss) = (cpu_seconds(pid) - cpu0, peak_rss_mib(pid));
    let (sink_msgs, sink_bytes) = (sink_messages() - sink_msgs0, sink_bytes() - sink_bytes0);
    let sink_enc = sink_encrypted() - sink_enc0;
    if let Some((misses0, fetches0)) = db0 {
        notes.push(format!(
            "key database during the measured run: {} cache misses, {} round trips",
            postgres::misses(&gate) - misses0,
            postgres::fetches(&gate) - fetches0
        ));
    }
    if res.errors > 0 {
        notes.push(format!("{} failed, first: {}", res.errors, res.first()));
    }
    notes.extend(stop_sealgate(&mut gate));

    let ok = sc.messages - res.errors;
    let bytes = ok as u64 * payload.len as u64;
    let mut errors = res.errors;
    if sc.key.is_some() {
        // Every accepted message must have reached the sink encrypted.
        let missing = (ok as u64).saturating_sub(sink_enc);
        if missing > 0 || sink_msgs != ok as u64 {
            errors += missing as usize;
            notes.push(format!(
                "FAIL: {ok} accepted, the sink got {sink_msgs}, of them {sink_enc} \
                 PGP/MIME-encrypted ({}, {} ... {})",
                String::from_utf8_lossy(MULTIPART_ENCRYPTED),
                String::from_utf8_lossy(BEGIN_PGP),
                String::from_utf8_lossy(END_PGP),
            ));
        }
        let per_msg = sink_bytes as f64 / sink_msgs.max(1) as f64;
        notes.push(format!(
            "sink: {sink_enc} of {sink_msgs} messages PGP/MIME-encrypted, {} octets each on \
             average for {} sent (x{:.3})",
            num(per_msg),
            payload.len,
            per_msg / payload.len as f64
        ));
    } else {
        if (sink_msgs, sink_bytes) != (ok as u64, bytes) {
            notes.push(format!(
                "the sink got {sink_msgs} messages ({sink_bytes} bytes) for {ok} accepted \
                 ({bytes} bytes)"
            ));
        }
        if sink_enc > 0 {
            notes.push(format!(
                "{sink_enc} pass-through messages arrived encrypted"
            ));
        }
    }
    res.latencies.sort_unstable();
    let pct = |p: usize| percentile(&res.latencies, p);
    let rate = ok as f64 / secs;
    println!(
        "{:<30} {:>6} {:>4} {:>7.2} {:>8} {:>7} {:>6} {:>6} {:>7} {:>8.1} {:>6.2} {:>10}",
        sc.name,
        sc.messages,
        errors,
        secs,
        num(rate),
        num(bytes as f64 / secs / 1e6),
        num(pct(50)),
        num(pct(99)),
        num(pct(100)),
        rss,
        cpu,
        num(per_cpu(ok, cpu)),
    );
    for note in notes {
        println!("  note: {note}");
    }
    Outcome {
        rate,
        secs,
        rss,
        cpu,
        ok,
        errors,
    }
}

/// The `p`th percentile of `sorted` microseconds, in milliseconds; NaN when empty.
fn percentile(sorted: &[u64], p: usize) -> f64 {
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ => sorted[(n * p).div_ceil(100).clamp(1, n) - 1] as f64 / 1000.0,
    }
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
    /// MAIL, RCPT and DATA, pipelined.
    envelope: &'static [u8],
}

impl Payload {
    /// The message of `size` octets, to the certificate holder if `encrypt`.
    fn new(size: usize, encrypt: bool) -> Payload {
        let len = pieces(size).map(|p| p.len()).sum();
        let stuffed = (len <= STREAM_ABOVE).then(|| {
            let (mut out, mut stuffer) =
                (BytesMut::with_capacity(len + len / 64), DotStuffer::new());
            pieces(size).for_each(|piece| stuffer.encode(&piece, &mut out));
            stuffer.finish(&mut out);
            out.freeze()
        });
        let envelope = if encrypt { ENVELOPE_ENCRYPT } else { ENVELOPE };
        Payload {
            size,
            len,
            stuffed,
            envelope,
        }
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
        conn.send(payload.envelope).await?;
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

fn sink_encrypted() -> u64 {
    SINK_ENCRYPTED.load(Relaxed)
}

/// The start and the end of the message being received, to tell whether it is encrypted
/// without holding it.
#[derive(Default)]
struct Seen {
    prefix: Vec<u8>,
    tail: Vec<u8>,
}

impl Seen {
    fn add(&mut self, data: &[u8]) {
        let room = SINK_PREFIX - self.prefix.len();
        self.prefix.extend_from_slice(&data[..data.len().min(room)]);
        if data.len() >= SINK_TAIL {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - SINK_TAIL..]);
        } else {
            self.tail.extend_from_slice(data);
            let excess = self.tail.len().saturating_sub(SINK_TAIL);
            self.tail.drain(..excess);
        }
    }

    /// PGP/MIME with one complete armored message: `multipart/encrypted`, then the armor
    /// header, near the start; the armor footer near the end. Clears for the next message.
    fn take_encrypted(&mut self) -> bool {
        let find = |hay: &[u8], needle: &[u8]| memchr::memmem::find(hay, needle);
        let pgp_mime = find(&self.prefix, MULTIPART_ENCRYPTED)
            .is_some_and(|at| find(&self.prefix[at..], BEGIN_PGP).is_some())
            && find(&self.tail, END_PGP).is_some();
        self.prefix.clear();
        self.tail.clear();
        pgp_mime
    }
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
    let mut seen = Seen::default();
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
                seen.add(&scratch);
                scratch.clear();
                if !progress.done {
                    break;
                }
                if seen.take_encrypted() {
                    SINK_ENCRYPTED.fetch_add(1, Relaxed);
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
// Certificates and the bare-sequoia baseline

/// A generated certificate and the key store it was imported into.
struct BenchKey {
    suite: Suite,
    /// The public certificate (what the key store holds).
    cert: Arc<Cert>,
    /// The cert-d directory, for `SEALGATE_KEYSTORE`.
    store: PathBuf,
    /// The armored certificate.
    file: PathBuf,
    generated_in: Duration,
}

impl BenchKey {
    /// Generates a certificate shaped like a mail user's (primary key plus one
    /// transport-encryption subkey) and imports it with `sealgate keys import` into a new
    /// key store under `work`.
    fn new(suite: Suite, work: &Path) -> BenchKey {
        let started = Instant::now();
        let (tsk, _revocation) = CertBuilder::new()
            .set_cipher_suite(suite.cipher_suite())
            .add_userid(KEY_USERID)
            .add_transport_encryption_subkey()
            .generate()
            .expect("generate a certificate");
        let generated_in = started.elapsed();
        let cert = tsk.strip_secret_key_material();
        let file = work.join(format!("{}.asc", suite.name()));
        let armored = cert.armored().to_vec().expect("armor the certificate");
        std::fs::write(&file, armored).expect("write the certificate");
        let store = work.join(format!("keys-{}", suite.name()));
        let out = testkit::sealgate::command()
            .arg("keys")
            .arg("import")
            .arg(&file)
            .env("SEALGATE_KEYSTORE", &store)
            .env("SEALGATE_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run sealgate keys import");
        assert!(
            out.status.success(),
            "sealgate keys import refused the {} certificate: {}{}",
            suite.name(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        BenchKey {
            suite,
            cert: Arc::new(cert),
            store,
            file,
            generated_in,
        }
    }
}

fn key_for(keys: &[BenchKey], suite: Suite) -> &BenchKey {
    keys.iter()
        .find(|k| k.suite == suite)
        .expect("keys are generated for every scenario's suite")
}

/// What one baseline run measured.
struct BareRun {
    messages: usize,
    /// Wall-clock seconds for `messages` messages, warm-up excluded.
    secs: f64,
    /// CPU seconds of the encrypting thread, same span.
    cpu: f64,
    /// The part of `secs` spent in `recipients()`.
    select_secs: f64,
}

/// An `io::Write` that counts and forgets.
struct Discard(u64);

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How a baseline encrypts one message: the bare sequoia writer stack, or sealgate's
/// encryption stage alone.
#[derive(Clone, Copy, PartialEq)]
enum Baseline {
    Bare,
    Stage,
}

/// Encrypts the scenario's message (unstuffed, as sealgate gets it) to `cert` on one new
/// thread, the way `baseline` says: `warmup` times, then at least `messages` times and for
/// at least `min`; only the latter count.
fn baseline_run(
    baseline: Baseline,
    cert: &Arc<Cert>,
    size: usize,
    messages: usize,
    warmup: usize,
    min: Duration,
) -> BareRun {
    let pieces: Vec<Vec<u8>> = pieces(size).collect();
    let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).expect("metrics"));
    let one = |select: &mut Duration| match baseline {
        Baseline::Bare => bare_encrypt(cert, &pieces, select),
        Baseline::Stage => stage_encrypt(cert, &metrics, &pieces),
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut select = Duration::ZERO;
                for _ in 0..warmup {
                    one(&mut select);
                }
                select = Duration::ZERO;
                let (cpu0, started, mut done) = (thread_cpu_seconds(), Instant::now(), 0);
                while done < messages || started.elapsed() < min {
                    one(&mut select);
                    done += 1;
                }
                BareRun {
                    messages: done,
                    secs: started.elapsed().as_secs_f64(),
                    cpu: thread_cpu_seconds() - cpu0,
                    select_secs: select.as_secs_f64(),
                }
            })
            .join()
            .expect("the baseline thread panicked")
    })
}

/// One message: `recipients()` (timed into `select`), then the writer stack.
fn bare_encrypt(cert: &Cert, pieces: &[Vec<u8>], select: &mut Duration) {
    let started = Instant::now();
    let recipients = sealgate::openpgp::recipients(cert).expect("a usable certificate");
    *select += started.elapsed();
    seal(recipients, pieces, &mut Discard(0)).expect("bare sequoia encryption");
}

/// sealgate's encryption stage alone: the PgpMime rewrite (MIME framing, sealgate's armor
/// encoder, CRLF) over the header block and then the body pieces as the session hands them
/// over; the output is dropped piece by piece. Includes `recipients()`, which the rewrite
/// calls itself.
fn stage_encrypt(cert: &Arc<Cert>, metrics: &Arc<Metrics>, pieces: &[Vec<u8>]) {
    let mut rewrite = PgpMime::new(
        vec![Arc::clone(cert)],
        false,
        STAGE_PEEK_LIMIT,
        Arc::clone(metrics),
    );
    let mut out = BytesMut::with_capacity(PIECE * 2);
    let (headers, body) = pieces.split_first().expect("a header block");
    rewrite
        .headers(headers, &mut out)
        .expect("stage: header block");
    out.clear();
    for piece in body {
        rewrite.body(piece, &mut out).expect("stage: body");
        out.clear();
    }
    rewrite.finish(&mut out).expect("stage: finish");
}

/// `SEALGATE_MAX_INSPECT_SIZE`'s default.
const STAGE_PEEK_LIMIT: usize = 1 << 20;

/// `Message → Armorer → Encryptor (SEIPDv1 for v4 keys, AES-256) → LiteralWriter`: what
/// sequoia offers for the job (sealgate armors with its own encoder), into `out`.
fn seal(
    recipients: Vec<sequoia_openpgp::serialize::stream::Recipient<'_>>,
    pieces: &[Vec<u8>],
    out: &mut Discard,
) -> sequoia_openpgp::Result<()> {
    let writer = Message::new(out);
    let writer = Armorer::new(writer).kind(armor::Kind::Message).build()?;
    let writer = Encryptor::for_recipients(writer, recipients)
        .symmetric_algo(SymmetricAlgorithm::AES256)
        .build()?;
    let mut writer = LiteralWriter::new(writer)
        .format(DataFormat::Binary)
        .build()?;
    // Piece by piece, as a stream arrives: one giant write makes sequoia's armor writer
    // allocate an encoding buffer the size of the whole message.
    for piece in pieces {
        writer.write_all(piece)?;
    }
    writer.finalize()
}

// ---------------------------------------------------------------------------------------------
// The sealgate process

/// Where a sealgate under test keeps its keys.
enum Store<'a> {
    /// A cert-d directory.
    CertD(&'a Path),
    /// The PostgreSQL key store.
    Postgres {
        url: &'a str,
        password_file: &'a Path,
    },
}

impl Store<'_> {
    /// `SEALGATE_KEYSTORE` (and the password file) for this store.
    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Store::CertD(dir) => vec![("SEALGATE_KEYSTORE", dir.display().to_string())],
            Store::Postgres { url, password_file } => vec![
                ("SEALGATE_KEYSTORE", (*url).to_owned()),
                (
                    "SEALGATE_KEYSTORE_PASSWORD_FILE",
                    password_file.display().to_string(),
                ),
            ],
        }
    }
}

/// Starts sealgate (testkit's harness) with the key store `store` and the sink as its next
/// hop.
fn spawn_sealgate(sink_port: u16, store: &Store<'_>) -> Sealgate {
    let next_hop = format!("lmtp:127.0.0.1:{sink_port}");
    let store_env = store.env();
    let mut env = vec![
        // Plain `warn` would hide the INFO lines that carry the bound ports; the per-message
        // INFO lines would cost what is measured.
        (
            "SEALGATE_LOG",
            "warn,sealgate::server=info,sealgate::ops::http=info",
        ),
        ("SEALGATE_NEXT_HOP", &next_hop),
        ("SEALGATE_MAX_MESSAGE_SIZE", "0"),
        ("SEALGATE_MAX_CONNECTIONS", "200"),
        ("SEALGATE_NEXT_HOP_POOL_SIZE", "64"),
    ];
    env.extend(store_env.iter().map(|(k, v)| (*k, v.as_str())));
    match store {
        Store::CertD(_) => Sealgate::spawn(&env),
        // Not a directory: no manifest to prepare.
        Store::Postgres { .. } => Sealgate::spawn_with_store_as_is(&env),
    }
}

/// SIGTERM, then waits for the exit. Returns notes: a bad exit, logged warnings and errors
/// (the first 50 lines other than INFO ones).
fn stop_sealgate(gate: &mut Sealgate) -> Vec<String> {
    let status = gate.stop();
    let mut notes = Vec::new();
    if !status.success() {
        notes.push(format!("sealgate exited with {status}"));
    }
    let log = gate.log();
    let unusual = log.lines().filter(|line| !line.contains(" INFO ")).take(50);
    notes.extend(unusual.map(|line| format!("sealgate log: {line}")));
    notes
}

/// Peak resident set size (`VmHWM`) of `pid`, in MiB; NaN if unreadable.
fn peak_rss_mib(pid: u32) -> f64 {
    testkit::proc_status_kib(pid, "VmHWM").map_or(f64::NAN, |kib| kib as f64 / 1024.0)
}

/// utime + stime of `pid`, in seconds; NaN if unreadable.
fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(format!("/proc/{pid}/stat"))
}

/// utime + stime of the calling thread, in seconds; NaN if unreadable.
fn thread_cpu_seconds() -> f64 {
    stat_cpu_seconds("/proc/thread-self/stat")
}

/// utime + stime from a `/proc/.../stat` file, in seconds; NaN if unreadable.
fn stat_cpu_seconds(path: impl AsRef<Path>) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
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
