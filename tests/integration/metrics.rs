//! Operations: the Prometheus metrics move by exactly what each recipient outcome adds, the
//! exposition passes `promtool check metrics`, `/readyz` follows the next hop, and the JSON
//! log lines carry the queue ID Postfix logged for the same message.
//!
//! The exposition is parsed here by hand (name, labels, value per sample line), so the test
//! does not trust the library that wrote it.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sequoia_openpgp::cert::{CertBuilder, CipherSuite};
use sequoia_openpgp::serialize::{Serialize, SerializeInto};
use testkit::lmtp::{Client, assert_codes};
use testkit::peers::{Postfix, PostfixConfig, swaks};
use testkit::sealgate::Sealgate;

const WAIT: Duration = Duration::from_secs(60);

/// Postfix's `myhostname` in the harness, trusted for Received evidence.
const TRUSTED_MTA: &str = "mx.example.org";

/// The samples of one scrape: `name{label="value",...}` (labels sorted) → value.
#[derive(Debug, Clone, Default)]
struct Scrape(HashMap<String, f64>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = HashMap::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("sample line without a value: {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                    let mut labels = BTreeMap::new();
                    for pair in body.split(',').filter(|p| !p.is_empty()) {
                        let (k, v) = pair
                            .split_once('=')
                            .unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
                        labels.insert(k.to_string(), v.trim_matches('"').to_string());
                    }
                    (name, labels)
                }
                None => (series, BTreeMap::new()),
            };
            samples.insert(key(name, &labels), value);
        }
        Scrape(samples)
    }

    /// The sample's value; 0 when the series is absent (a counter that never moved).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0.get(&key(name, &labels)).copied().unwrap_or(0.0)
    }

    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0.contains_key(&key(name, &labels))
    }
}

fn key(name: &str, labels: &BTreeMap<String, String>) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// Scrapes `/metrics`; checks the status and content type on the way.
fn scrape(sealgate: &Sealgate) -> (Scrape, String) {
    let (status, body) = sealgate.http_get("/metrics");
    assert_eq!(status, 200, "{body}");
    (Scrape::parse(&body), body)
}

/// Runs `promtool check metrics` on the exposition. Missing promtool skips (fails with CI).
fn promtool_accepts(exposition: &str) {
    if !testkit::require("promtool") {
        return;
    }
    let mut child = Command::new(testkit::bin_path("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("wait for promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\nexposition:\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Generates a certificate for `address` with sequoia and imports it with `sealgate keys
/// import -` into `store`.
fn import_key(store: &Path, address: &str) {
    let (cert, _) = CertBuilder::new()
        .add_userid(format!("<{address}>"))
        .set_cipher_suite(CipherSuite::Cv25519)
        .add_transport_encryption_subkey()
        .generate()
        .expect("generate a certificate");
    let armored = cert
        .strip_secret_key_material()
        .armored()
        .to_vec()
        .expect("armor");
    testkit::sealgate::keys_import_ok(store, &armored);
}

/// Puts an expired certificate for `address` straight into the cert-d directory `store`
/// (`keys import` refuses expired ones).
fn plant_expired(store: &Path, address: &str) {
    let year = Duration::from_secs(365 * 24 * 3600);
    let (cert, _) = CertBuilder::new()
        .add_userid(format!("<{address}>"))
        .set_cipher_suite(CipherSuite::Cv25519)
        .add_transport_encryption_subkey()
        .set_creation_time(std::time::SystemTime::now() - 2 * year)
        .set_validity_period(year)
        .generate()
        .expect("generate an expired certificate");
    let fingerprint = cert.fingerprint().to_hex().to_lowercase();
    let dir = store.join(&fingerprint[..2]);
    std::fs::create_dir_all(&dir).expect("cert-d subdirectory");
    let mut public = Vec::new();
    cert.serialize(&mut public).expect("serialize");
    std::fs::write(dir.join(&fingerprint[2..]), public).expect("write the certificate");
}

fn message(to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: sender@example.net\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nHello,\r\nthis is {subject}.\r\n"
    )
    .into_bytes()
}

/// Already PGP/MIME, and verifiably so (random ciphertext in valid packets): stored as
/// received for a recipient with a key.
fn encrypted_message() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/encrypted/01-pgp-mime.eml"))
        .expect("corpus/encrypted/01-pgp-mime.eml")
}

/// A message our own MTA received without TLS (its Received field says so).
fn plaintext_received(to: &str, subject: &str) -> Vec<u8> {
    let mut m = format!(
        "Received: from client.example.net (client.example.net [192.0.2.1])\r\n\
         \tby {TRUSTED_MTA} (Postfix) with ESMTP id 4Xq1AbC2dEf;\r\n\
         \tSun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n"
    )
    .into_bytes();
    m.extend_from_slice(&message(to, subject));
    m
}

/// Octets of the copies stored under the Maildir `root`, without the two fields the Maildir
/// delivery puts on top (`Return-Path:`, `Delivered-To:`): what was handed to the next hop.
fn stored_octets(root: &Path, sender: &str) -> u64 {
    let mut total = 0;
    for mailbox in std::fs::read_dir(root).expect("maildir root") {
        let mailbox = mailbox.expect("entry").path();
        let name = mailbox
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let prefix = format!("Return-Path: <{sender}>\r\nDelivered-To: {name}\r\n");
        for file in std::fs::read_dir(mailbox.join("new")).expect("new/") {
            let bytes = std::fs::read(file.expect("file").path()).expect("read message");
            assert!(bytes.starts_with(prefix.as_bytes()));
            total += (bytes.len() - prefix.len()) as u64;
        }
    }
    total
}

/// Every recipient outcome through one sealgate (Maildir next hop, a key store with one usable
/// and one expired certificate, a secure domain): the counters move by exactly what each
/// message adds, and nothing else moves.
#[test]
fn every_outcome_moves_its_counter_exactly() {
    let work = testkit::temp_dir("sealgate-metrics-");
    let keys = work.path().join("keys");
    let mail = work.path().join("mail");
    import_key(&keys, "alice@example.org");
    plant_expired(&keys, "expired@example.org");
    let keystore = keys.display().to_string();
    let next_hop = format!("maildir:{}", mail.display());
    let sealgate = Sealgate::spawn(&[
        ("SEALGATE_KEYSTORE", &keystore),
        ("SEALGATE_NEXT_HOP", &next_hop),
        ("SEALGATE_SECURE_DOMAINS", "secure.example.org=example.org"),
        ("SEALGATE_TRUSTED_MTA", TRUSTED_MTA),
    ]);
    let (before, exposition) = scrape(&sealgate);
    // Series of the configured stages and next hop exist from the start.
    assert!(before.has(
        "sealgate_stage_duration_seconds_count",
        &[("stage", "encrypt")]
    ));
    assert!(before.has(
        "sealgate_next_hop_duration_seconds_count",
        &[("kind", "maildir")]
    ));
    assert!(before.has(
        "sealgate_recipients_total",
        &[("outcome", "refused_no_tls")]
    ));
    promtool_accepts(&exposition);

    const FROM: &str = "sender@example.net";
    let mut received = 0u64;
    let mut client = Client::connect(sealgate.port());

    // 1. Plain: no key.
    let plain = message("plain@example.org", "plain");
    received += plain.len() as u64;
    let replies = client.deliver(FROM, &["plain@example.org"], &plain);
    assert_codes(&replies[0], "250", "plain");

    // 2. Encrypted: alice has a key.
    let secret = message("alice@example.org", "to be encrypted");
    received += secret.len() as u64;
    let replies = client.deliver(FROM, &["alice@example.org"], &secret);
    assert_codes(&replies[0], "250", "encrypted");

    // 3. Already encrypted: passed as received.
    let sealed = encrypted_message();
    received += sealed.len() as u64;
    let replies = client.deliver(FROM, &["alice@example.org"], &sealed);
    assert_codes(&replies[0], "250", "already encrypted");

    // 4. A secure address, received without TLS: refused at the end of DATA.
    let no_tls = plaintext_received("user@secure.example.org", "no tls");
    received += no_tls.len() as u64;
    let replies = client.deliver(FROM, &["user@secure.example.org"], &no_tls);
    assert_codes(&replies[0], "550 5.7.1", "no TLS");

    // 5. Tempfailed: an expired key, refused at RCPT (default policy tempfail).
    client.expect(&format!("MAIL FROM:<{FROM}>"), "250");
    client.expect("RCPT TO:<expired@example.org>", "450 4.7.1");
    client.expect("RSET", "250");

    // 6. Rejected: a bare LF (the default policy rejects it once the message is in).
    let bare = b"From: sender@example.net\r\nSubject: bare\r\n\r\nline one\nline two\r\n".to_vec();
    received += bare.len() as u64;
    let replies = client.deliver(FROM, &["plain@example.org"], &bare);
    assert_codes(&replies[0], "550 5.5.2", "bare LF");

    // 7. One message, three outcomes: plain, encrypted, refused for missing TLS.
    let mixed = plaintext_received("several", "mixed");
    received += mixed.len() as u64;
    let replies = client.deliver(
        FROM,
        &[
            "plain2@example.org",
            "alice@example.org",
            "user@secure.example.org",
        ],
        &mixed,
    );
    assert_codes(&replies[0], "250", "mixed plain");
    assert_codes(&replies[1], "250", "mixed encrypted");
    assert_codes(&replies[2], "550 5.7.1", "mixed secure");
    client.expect("QUIT", "221");
    drop(client);

    let (after, exposition) = scrape(&sealgate);
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let recipients = [
        ("delivered_plain", 2.0),
        ("delivered_encrypted", 2.0),
        ("passed_encrypted", 1.0),
        ("refused_no_tls", 2.0),
        ("tempfailed", 1.0),
        ("rejected", 1.0),
    ];
    for (outcome, expected) in recipients {
        assert_eq!(
            delta("sealgate_recipients_total", &[("outcome", outcome)]),
            expected,
            "recipients {outcome}\n{exposition}"
        );
    }
    for (outcome, expected) in [("accepted", 4.0), ("tempfailed", 0.0), ("rejected", 2.0)] {
        assert_eq!(
            delta("sealgate_messages_total", &[("outcome", outcome)]),
            expected,
            "messages {outcome}\n{exposition}"
        );
    }
    assert_eq!(delta("sealgate_received_bytes_total", &[]), received as f64);
    assert_eq!(
        delta("sealgate_delivered_bytes_total", &[]),
        stored_octets(&mail, FROM) as f64,
        "{exposition}"
    );
    assert_eq!(
        delta(
            "sealgate_unusable_keys_total",
            &[("reason", "expired"), ("policy", "tempfail")]
        ),
        1.0
    );
    assert_eq!(delta("sealgate_encryption_failures_total", &[]), 0.0);
    // Six messages got final replies; five reached the pipeline (not the bare-LF one); five
    // copies went to the Maildir (1, 2, 3 and two in 7; 4 has none).
    assert_eq!(delta("sealgate_message_duration_seconds_count", &[]), 6.0);
    for stage in ["scrub", "require_tls", "encrypt"] {
        assert_eq!(
            delta("sealgate_stage_duration_seconds_count", &[("stage", stage)]),
            5.0,
            "stage {stage}"
        );
    }
    assert_eq!(
        delta(
            "sealgate_next_hop_duration_seconds_count",
            &[("kind", "maildir")]
        ),
        5.0
    );
    assert!(
        delta(
            "sealgate_stage_duration_seconds_sum",
            &[("stage", "encrypt")]
        ) > 0.0
    );
    for error in ["storage", "connect"] {
        assert_eq!(
            delta(
                "sealgate_next_hop_errors_total",
                &[("kind", "maildir"), ("error", error)]
            ),
            0.0
        );
    }
    assert_eq!(after.get("sealgate_keystore_certificates", &[]), 2.0);
    assert_eq!(after.get("sealgate_keystore_reload_errors_total", &[]), 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let reloaded = after.get("sealgate_keystore_last_reload_timestamp_seconds", &[]);
    assert!(
        reloaded > now - 120.0 && reloaded <= now + 1.0,
        "{reloaded} vs {now}"
    );
    let build = after
        .0
        .iter()
        .find(|(k, _)| k.starts_with("sealgate_build_info{"))
        .expect("sealgate_build_info");
    assert_eq!(*build.1, 1.0);
    assert!(
        build
            .0
            .contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{}",
        build.0
    );
    promtool_accepts(&exposition);

    // The session has ended: the gauge is back to 0.
    testkit::wait_until("sealgate_sessions_active{protocol=lmtp} == 0", WAIT, || {
        scrape(&sealgate)
            .0
            .get("sealgate_sessions_active", &[("protocol", "lmtp")])
            == 0.0
    });
    // The outcome lines say what was counted.
    let log = sealgate.log();
    for outcome in ["delivered_encrypted", "passed_encrypted", "refused_no_tls"] {
        assert!(
            log.lines()
                .any(|l| l.contains("recipient outcome") && l.contains(outcome)),
            "no outcome={outcome} line:\n{log}"
        );
    }
}

/// `/readyz` follows the next hop (here an LMTP address whose listener the test opens and
/// closes); a message while it is down is tempfailed and counted as a connect error.
#[test]
fn readiness_follows_the_next_hop() {
    let port = testkit::free_port();
    let next_hop = format!("lmtp:127.0.0.1:{port}");
    let work = testkit::temp_dir("sealgate-ready-");
    let keystore = work.path().join("keys").display().to_string();
    let sealgate = Sealgate::spawn(&[
        ("SEALGATE_NEXT_HOP", &next_hop),
        ("SEALGATE_KEYSTORE", &keystore),
        ("SEALGATE_NEXT_HOP_POOL_SIZE", "0"),
    ]);
    assert_eq!(sealgate.http_get("/healthz"), (200, "ok\n".to_string()));
    assert_eq!(sealgate.http_get("/nothing-here").0, 404);

    // Down from the start: 503, and the reason names the next hop.
    let (status, body) = sealgate.http_get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!("next hop lmtp:127.0.0.1:{port}")),
        "{body}"
    );
    assert_eq!(body.lines().count(), 1, "{body}");

    let (before, _) = scrape(&sealgate);
    let mut client = Client::connect(sealgate.port());
    let m = message("bob@example.org", "next hop down");
    let replies = client.deliver("sender@example.net", &["bob@example.org"], &m);
    assert_codes(&replies[0], "451 4.4.1", "next hop down");
    let (after, exposition) = scrape(&sealgate);
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    assert_eq!(
        delta("sealgate_recipients_total", &[("outcome", "tempfailed")]),
        1.0
    );
    assert_eq!(
        delta("sealgate_messages_total", &[("outcome", "tempfailed")]),
        1.0
    );
    assert_eq!(
        delta(
            "sealgate_next_hop_errors_total",
            &[("kind", "lmtp"), ("error", "connect")]
        ),
        1.0,
        "{exposition}"
    );
    assert_eq!(delta("sealgate_delivered_bytes_total", &[]), 0.0);
    assert_eq!(
        delta(
            "sealgate_next_hop_duration_seconds_count",
            &[("kind", "lmtp")]
        ),
        1.0
    );
    promtool_accepts(&exposition);

    // Up: 200 within the probe cache time.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the next hop");
    testkit::wait_until("/readyz 200", WAIT, || {
        sealgate.http_get("/readyz").0 == 200
    });
    // Down again: 503.
    drop(listener);
    testkit::wait_until("/readyz 503", WAIT, || {
        sealgate.http_get("/readyz").0 == 503
    });
    // And back.
    let _listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("rebind");
    testkit::wait_until("/readyz 200 again", WAIT, || {
        sealgate.http_get("/readyz").0 == 200
    });
    drop(client);
}

/// `SEALGATE_METRICS_LISTEN=off`: no HTTP listener, and sealgate still starts.
#[test]
fn metrics_listener_can_be_off() {
    let sealgate = Sealgate::spawn(&[("SEALGATE_METRICS_LISTEN", "off")]);
    assert!(sealgate.metrics_addr.is_none());
    assert!(!sealgate.log().contains("protocol=http"));
}

#[test]
fn version_names_the_build() {
    let out = Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .arg("--version")
        .output()
        .expect("run sealgate --version");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("sealgate {}\n", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("\ncommit: "), "{text}");
    assert!(text.contains("\nrustc: rustc 1."), "{text}");
    assert!(text.contains("\ncrypto backend: openssl"), "{text}");
}

/// Real Postfix → sealgate (the LMTP transport, which sends no XFORWARD) with JSON logs and
/// hashed addresses: the recipient line parses as JSON and carries the queue ID Postfix
/// logged for the message (from the `id` of Postfix's own Received field), and the address
/// appears nowhere in sealgate's log.
#[test]
fn json_log_lines_carry_postfixs_queue_id() {
    if !testkit::require_all(&["postfix", "swaks"]) {
        return;
    }
    const RCPT: &str = "carol@example.org";
    let mail = testkit::temp_dir("sealgate-json-mail-");
    let next_hop = format!("maildir:{}", mail.path().display());
    let sealgate = Sealgate::spawn(&[
        ("SEALGATE_NEXT_HOP", &next_hop),
        ("SEALGATE_LOG_FORMAT", "json"),
        ("SEALGATE_LOG_ADDRESSES", "hash"),
        ("SEALGATE_TRUSTED_MTA", TRUSTED_MTA),
    ]);
    let postfix = Postfix::start(PostfixConfig::default().with_lmtp_transport(sealgate.port()));
    let port = postfix.smtp_port.to_string();
    let (ok, out) = swaks(&[
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--from",
        "sender@example.net",
        "--to",
        RCPT,
        "--body",
        "token-json-queue-id",
    ]);
    assert!(ok, "swaks: {out}");
    let sent = postfix.wait_for_status(RCPT, "sent", WAIT);
    // `... postfix/lmtp[123]: 4XyZ...: to=<carol@example.org>, relay=..., status=sent ...`
    let queue_id = sent
        .split(": to=<")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no queue ID in {sent}"))
        .to_string();
    assert!(
        queue_id.len() >= 6 && queue_id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{queue_id:?} from {sent}"
    );

    let line = sealgate.wait_for_log("recipient outcome", WAIT);
    let json: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let fields = &json["fields"];
    assert_eq!(fields["message"], "recipient outcome", "{line}");
    assert_eq!(fields["code"], 250, "{line}");
    assert_eq!(fields["outcome"], "delivered_plain", "{line}");
    let spans = json["spans"]
        .as_array()
        .unwrap_or_else(|| panic!("no spans: {line}"));
    let carried: Vec<&str> = spans
        .iter()
        .chain(std::iter::once(&json["span"]))
        .filter_map(|s| s["queue_id"].as_str())
        .collect();
    assert!(
        !carried.is_empty() && carried.iter().all(|id| *id == queue_id),
        "queue_id {queue_id} (Postfix) vs {carried:?} in {line}"
    );
    assert_eq!(json["span"]["queue_id"], queue_id.as_str(), "{line}");

    // The address is logged hashed, and nowhere in full.
    let expected = {
        use sequoia_openpgp::types::HashAlgorithm;
        let mut hash = HashAlgorithm::SHA256
            .context()
            .expect("SHA-256")
            .for_digest();
        hash.update(RCPT.as_bytes());
        let digest = hash.into_digest().expect("digest");
        digest[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(fields["rcpt"], expected.as_str(), "{line}");
    let log = sealgate.log();
    assert!(
        !log.to_lowercase().contains(RCPT),
        "address in the log:\n{log}"
    );
    for line in log.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    drop(postfix);
}
