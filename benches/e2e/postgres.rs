//! The `postgres` group (issue 14): the PostgreSQL key store against cert-d, in the same run.
//!
//! A private PostgreSQL (testkit::postgres, on 127.0.0.1, `fsync=off`) is started, migrated with
//! `sealgate keys migrate`, and given the keys; then, each against a fresh sealgate:
//! - **warm**: the 4 KiB Cv25519 scenario of the encrypt group, once with the key in a cert-d
//!   directory and once in the database, after a warm-up pass that fills the cache; `rounds`
//!   pairs in A B B A order, so a drift of the machine meets both alike. The ratios
//!   PostgreSQL / cert-d of msgs/s and of msgs per sealgate CPU-second are compared with 0.90,
//!   and the database's cache misses during the measured run are printed (0 when warm).
//! - **cold**: N addresses sealgate has never seen, each with its own key imported into the
//!   database (before sealgate starts, so no notification warms the cache), one message each
//!   on one connection: MAIL, then RCPT alone, timed from its write to its reply (the RCPT
//!   check is where the lookup happens: sealgate awaits the database there, so the RCPT reply
//!   time is the lookup plus one LMTP command, while the message latency would add the
//!   encryption and the next hop), then DATA. The same for N keyless addresses (a negative
//!   answer is fetched and cached too), then the keyed ones again, now cached: p50/p99/max
//!   per recipient and the round trips each pass cost.
//! - **fanout**: one message to 100 addresses never seen (MAIL, 100 RCPT and DATA in one
//!   write, as Postfix's LMTP client pipelines them; `fanout_keyed` of them with a key):
//!   `sealgate_keystore_database_fetches_total` from the metrics endpoint before and after must
//!   differ by exactly 1, or the benchmark fails.
//!
//! Without PostgreSQL installed the group is skipped with a note; with `CI=true` that is a
//! failure (testkit's `require()`).

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use sealgate::store::postgres::Location;
use sealgate::store::postgres::admin::{Admin, Imported};
use sequoia_openpgp::Cert;
use sequoia_openpgp::cert::{CertBuilder, CipherSuite};
use testkit::Sealgate;
use testkit::postgres::{self as pg, Postgres};
use tokio::net::TcpStream;

use crate::{
    BenchKey, Conn, HEADER, Outcome, Payload, ReplyDecoder, Scenario, Store, Suite, num, per_cpu,
    run_scenario, sink_encrypted, sink_messages, spawn_sealgate, stop_sealgate,
};

/// What the group runs.
pub(crate) struct PgPlan {
    /// Pairs of warm runs (cert-d, PostgreSQL).
    pub(crate) rounds: usize,
    pub(crate) messages: usize,
    pub(crate) warmup: usize,
    pub(crate) connections: usize,
    /// Fresh recipients per cold pass.
    pub(crate) cold: usize,
    /// Recipients of the fanout message, and how many of them have a key.
    pub(crate) fanout: usize,
    pub(crate) fanout_keyed: usize,
}

/// The warm pair's target: PostgreSQL at least this share of cert-d.
const WARM_TARGET: f64 = 0.90;

/// Runs the group; true if anything failed.
pub(crate) async fn run(plan: &PgPlan, sink_port: u16, work: &Path, key: &BenchKey) -> bool {
    println!(
        "# postgres: the PostgreSQL key store (a private server on 127.0.0.1, fsync=off) against \
         cert-d"
    );
    if !pg::require() {
        println!("# postgres: skipped, PostgreSQL is not installed (with CI=true this fails)");
        return false;
    }
    let started = Instant::now();
    let db = Postgres::start();
    let password_file = work.join("keystore.password");
    std::fs::write(&password_file, format!("{}\n", pg::PASSWORD)).expect("password file");
    let url = db.url();
    let store = Store::Postgres {
        url: &url,
        password_file: &password_file,
    };
    cli(&store, &["keys", "migrate"]);
    cli(&store, &["keys", "import", &key.file.display().to_string()]);
    let location = Location::parse(&url, Some(&password_file)).expect("the URL parses");
    let mut admin = Admin::connect(&location).await.expect("connect as admin");
    let cold_keyed = addresses("cold", plan.cold);
    let fanout_all = addresses("fanout", plan.fanout);
    let to_key: Vec<&String> = cold_keyed
        .iter()
        .chain(&fanout_all[..plan.fanout_keyed.min(plan.fanout)])
        .collect();
    let keying = Instant::now();
    for address in &to_key {
        import(&mut admin, &generate(address)).await;
    }
    admin.close().await;
    println!(
        "# postgres: server started and migrated, {} keys generated and imported in {:.1} s ({:.1} \
         s for the keys)",
        to_key.len() + 1,
        started.elapsed().as_secs_f64(),
        keying.elapsed().as_secs_f64()
    );

    let mut failed = warm(plan, sink_port, key, &store).await;
    failed |= cold(plan, sink_port, &store, &cold_keyed).await;
    failed |= fanout(plan, sink_port, &store, &fanout_all).await;
    failed
}

/// The warm pairs, their rows and ratios.
async fn warm(plan: &PgPlan, sink_port: u16, key: &BenchKey, database: &Store<'_>) -> bool {
    let scenario = |backend: &str| Scenario {
        name: format!("encrypt cv25519 4KiB {backend}"),
        key: Some(Suite::Cv25519),
        messages: plan.messages,
        size: 4 << 10,
        connections: plan.connections,
        warmup: plan.warmup,
    };
    let (certd_sc, pg_sc) = (scenario("cert-d"), scenario("postgres"));
    let certd = Store::CertD(&key.store);
    println!(
        "# postgres warm: {} msgs after a warm-up of {}, {} connections, {} round(s) (cert-d then \
         postgres, then the other way round); the postgres rows note the cache misses during \
         the measured run",
        plan.messages, plan.warmup, plan.connections, plan.rounds
    );
    println!("{HEADER}");
    let (mut certd_runs, mut pg_runs) = (Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let order = match round % 2 {
            0 => [false, true],
            _ => [true, false],
        };
        for on_pg in order {
            match on_pg {
                false => certd_runs.push(run_scenario(&certd_sc, sink_port, &certd).await),
                true => pg_runs.push(run_scenario(&pg_sc, sink_port, database).await),
            }
        }
    }
    let verdict = |v: f64| match v {
        v if !v.is_finite() => "not measurable",
        v if v >= WARM_TARGET => "PASS",
        _ => "MISS",
    };
    // Per pair (adjacent runs, so the same load on the machine), then the median of the pairs
    // and all runs pooled.
    let ratios: Vec<(f64, f64)> = certd_runs
        .iter()
        .zip(&pg_runs)
        .map(|(c, p)| (p.rate / c.rate, per_cpu(p.ok, p.cpu) / per_cpu(c.ok, c.cpu)))
        .collect();
    for (i, (rate, cpu)) in ratios.iter().enumerate() {
        println!(
            "postgres/cert-d round {}: msgs/s {}, msgs per sealgate CPU-second {}",
            i + 1,
            num(*rate),
            num(*cpu)
        );
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let rate = median(ratios.iter().map(|r| r.0).collect());
    let cpu = median(ratios.iter().map(|r| r.1).collect());
    println!(
        "postgres/cert-d (median of the rounds): msgs/s {} ({}: >= {WARM_TARGET:.2}), msgs per \
         sealgate CPU-second {} ({})",
        num(rate),
        verdict(rate),
        num(cpu),
        verdict(cpu)
    );
    let sum = |runs: &[Outcome]| -> (f64, usize, f64) {
        runs.iter().fold((0.0, 0, 0.0), |(secs, ok, cpu), o| {
            (secs + o.secs, ok + o.ok, cpu + o.cpu)
        })
    };
    let ((c_secs, c_ok, c_cpu), (p_secs, p_ok, p_cpu)) = (sum(&certd_runs), sum(&pg_runs));
    let rate = (p_ok as f64 / p_secs) / (c_ok as f64 / c_secs);
    let cpu = per_cpu(p_ok, p_cpu) / per_cpu(c_ok, c_cpu);
    println!(
        "postgres/cert-d (all runs pooled): msgs/s {} ({}), msgs per sealgate CPU-second {} ({})",
        num(rate),
        verdict(rate),
        num(cpu),
        verdict(cpu)
    );
    certd_runs.iter().chain(&pg_runs).any(|o| o.errors > 0)
}

/// The cold passes (keyed, keyless) and the warm one after them.
async fn cold(plan: &PgPlan, sink_port: u16, database: &Store<'_>, keyed: &[String]) -> bool {
    let keyless = addresses("nokey", plan.cold);
    let payload = Payload::new(4 << 10, true);
    let mut gate = spawn_sealgate(sink_port, database);
    let addr = format!("127.0.0.1:{}", gate.port());
    println!(
        "# postgres cold: one message per recipient on one connection; latency is the RCPT reply \
         time (write to reply: the lookup happens there), per recipient"
    );
    println!(
        "pass                            rcpts  err  p50ms  p99ms  maxms  fetches  cache_misses  encrypted"
    );
    let mut failed = false;
    let passes: [(&str, &[String], bool); 3] = [
        ("cold keyed (own key each)", keyed, true),
        ("cold keyless", &keyless, false),
        ("warm keyed (the same again)", keyed, true),
    ];
    for (name, addresses, encrypted) in passes {
        let (fetches0, misses0) = (fetches(&gate), misses(&gate));
        let (enc0, msgs0) = (sink_encrypted(), sink_messages());
        let res = one_by_one(&addr, &payload, addresses).await;
        let (fetched, missed) = (fetches(&gate) - fetches0, misses(&gate) - misses0);
        let (enc, msgs) = (sink_encrypted() - enc0, sink_messages() - msgs0);
        let mut errors = res.errors;
        let want_enc = if encrypted { res.ok } else { 0 };
        let mut notes = res.first_error.into_iter().collect::<Vec<_>>();
        if (enc, msgs) != (want_enc as u64, res.ok as u64) {
            errors += 1;
            notes.push(format!(
                "FAIL: the sink got {msgs} messages, {enc} encrypted, for {} delivered ({} \
                 expected encrypted)",
                res.ok, want_enc
            ));
        }
        let mut latencies = res.latencies;
        latencies.sort_unstable();
        let pct = |p: usize| crate::percentile(&latencies, p);
        println!(
            "{:<30} {:>6} {:>4} {:>6} {:>6} {:>6} {:>8} {:>13} {:>10}",
            name,
            addresses.len(),
            errors,
            num(pct(50)),
            num(pct(99)),
            num(pct(100)),
            fetched,
            missed,
            enc
        );
        for note in notes {
            println!("  note: {note}");
        }
        failed |= errors > 0;
    }
    for note in stop_sealgate(&mut gate) {
        println!("  note: {note}");
    }
    failed
}

/// One message to `addresses` never seen before: exactly one round trip, or a failure.
async fn fanout(plan: &PgPlan, sink_port: u16, database: &Store<'_>, addresses: &[String]) -> bool {
    let payload = Payload::new(4 << 10, true);
    let mut gate = spawn_sealgate(sink_port, database);
    let addr = format!("127.0.0.1:{}", gate.port());
    let (fetches0, misses0) = (fetches(&gate), misses(&gate));
    let (enc0, msgs0) = (sink_encrypted(), sink_messages());
    let started = Instant::now();
    let sent = one_message(&addr, &payload, addresses).await;
    let took = started.elapsed().as_secs_f64() * 1e3;
    let (fetched, missed) = (fetches(&gate) - fetches0, misses(&gate) - misses0);
    let (enc, msgs) = (sink_encrypted() - enc0, sink_messages() - msgs0);
    let mut failed = false;
    println!(
        "postgres fanout: 1 message to {} new recipients ({} with a key), pipelined: {} database \
         round trip(s) (sealgate_keystore_database_fetches_total), {} cache misses, {} ms MAIL to \
         the last final reply; the sink got {} messages, {} encrypted",
        addresses.len(),
        plan.fanout_keyed.min(addresses.len()),
        fetched,
        missed,
        num(took),
        msgs,
        enc
    );
    if let Err(err) = sent {
        println!("  note: FAIL: {err}");
        failed = true;
    }
    if fetched != 1 {
        println!("  note: FAIL: {fetched} round trips for one pipelined batch, want 1");
        failed = true;
    }
    for note in stop_sealgate(&mut gate) {
        println!("  note: {note}");
    }
    failed
}

/// `count` addresses `PREFIX-N@pg.bench.example`.
fn addresses(prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("{prefix}-{i}@pg.bench.example"))
        .collect()
}

/// A Cv25519 certificate for `address` (primary plus a transport-encryption subkey).
fn generate(address: &str) -> Cert {
    let (tsk, _revocation) = CertBuilder::new()
        .set_cipher_suite(CipherSuite::Cv25519)
        .add_userid(format!("<{address}>"))
        .add_transport_encryption_subkey()
        .generate()
        .expect("generate a certificate");
    tsk.strip_secret_key_material()
}

/// Imports `cert` in one transaction, as `sealgate keys import` does.
async fn import(admin: &mut Admin, cert: &Cert) {
    let judge = |c: &Cert| sealgate::openpgp::check(c).err().map(|why| why.to_string());
    match admin.import(cert, "bench@e2e", judge).await {
        Ok(Imported::Stored(_)) => {}
        other => panic!("import of {}: {other:?}", cert.fingerprint()),
    }
}

/// `sealgate ARGS` against the database; panics unless it succeeds.
fn cli(store: &Store<'_>, args: &[&str]) {
    let mut command = testkit::sealgate::command();
    command.args(args).envs(store.env()).stdin(Stdio::null());
    let out = command.output().expect("run sealgate");
    assert!(
        out.status.success(),
        "sealgate {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A counter from sealgate's metrics endpoint (0 if absent).
fn counter(gate: &Sealgate, name: &str) -> u64 {
    let (_, text) = tokio::task::block_in_place(|| gate.http_get("/metrics"));
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Database round trips made for lookups.
pub(crate) fn fetches(gate: &Sealgate) -> u64 {
    counter(gate, "sealgate_keystore_database_fetches_total")
}

/// Addresses the cache had no current answer for.
pub(crate) fn misses(gate: &Sealgate) -> u64 {
    counter(gate, "sealgate_keystore_cache_misses_total")
}

/// What a cold pass measured: RCPT reply times in microseconds.
#[derive(Default)]
struct Timed {
    latencies: Vec<u64>,
    ok: usize,
    errors: usize,
    first_error: Option<String>,
}

/// One message per address, in turn, on one connection; each RCPT timed alone.
async fn one_by_one(addr: &str, payload: &Payload, addresses: &[String]) -> Timed {
    let mut res = Timed::default();
    let mut conn = match connect(addr).await {
        Ok(conn) => conn,
        Err(err) => {
            res.errors = addresses.len();
            res.first_error = Some(err);
            return res;
        }
    };
    for (i, address) in addresses.iter().enumerate() {
        match transaction(&mut conn, payload, address).await {
            Ok(micros) => {
                res.latencies.push(micros);
                res.ok += 1;
            }
            Err((err, usable)) => {
                res.errors += 1;
                res.first_error.get_or_insert(format!("{address}: {err}"));
                if !usable {
                    res.errors += addresses.len() - i - 1;
                    return res;
                }
            }
        }
    }
    let _ = conn.send(b"QUIT\r\n").await;
    res
}

/// MAIL, the timed RCPT, DATA and the message. `Err((why, connection still usable))`.
async fn transaction(
    conn: &mut Conn,
    payload: &Payload,
    address: &str,
) -> Result<u64, (String, bool)> {
    let broken = |err: String| (err, false);
    conn.send(b"MAIL FROM:<sender@bench.example>\r\n")
        .await
        .map_err(broken)?;
    conn.expect(250, "MAIL").await.map_err(broken)?;
    let started = Instant::now();
    conn.send(format!("RCPT TO:<{address}>\r\n").as_bytes())
        .await
        .map_err(broken)?;
    let rcpt = conn.reply().await.map_err(broken)?;
    let micros = started.elapsed().as_micros() as u64;
    if rcpt.code != 250 {
        conn.send(b"RSET\r\n").await.map_err(broken)?;
        conn.reply().await.map_err(broken)?;
        return Err((format!("RCPT {rcpt}"), true));
    }
    conn.send(b"DATA\r\n").await.map_err(broken)?;
    conn.expect(354, "DATA").await.map_err(broken)?;
    payload
        .send(&mut conn.stream)
        .await
        .map_err(|e| broken(format!("write: {e}")))?;
    match conn.reply().await.map_err(broken)? {
        last if last.is_positive() => Ok(micros),
        last => Err((format!("final reply {last}"), true)),
    }
}

/// MAIL, every RCPT and DATA in one write, then the message; every reply positive.
async fn one_message(addr: &str, payload: &Payload, addresses: &[String]) -> Result<(), String> {
    let mut conn = connect(addr).await?;
    let mut envelope = String::from("MAIL FROM:<sender@bench.example>\r\n");
    for address in addresses {
        envelope.push_str(&format!("RCPT TO:<{address}>\r\n"));
    }
    envelope.push_str("DATA\r\n");
    conn.send(envelope.as_bytes()).await?;
    conn.expect(250, "MAIL").await?;
    for address in addresses {
        conn.expect(250, &format!("RCPT {address}")).await?;
    }
    conn.expect(354, "DATA").await?;
    let sent = payload.send(&mut conn.stream).await;
    sent.map_err(|e| format!("write: {e}"))?;
    for address in addresses {
        let reply = conn.reply().await?;
        if !reply.is_positive() {
            return Err(format!("final reply for {address}: {reply}"));
        }
    }
    let _ = conn.send(b"QUIT\r\n").await;
    Ok(())
}

async fn connect(addr: &str) -> Result<Conn, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        input: bytes::BytesMut::new(),
        decoder: ReplyDecoder::new(),
    };
    conn.expect(220, "greeting").await?;
    conn.send(b"LHLO bench.example\r\n").await?;
    conn.expect(250, "LHLO").await?;
    Ok(conn)
}
