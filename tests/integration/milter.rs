//! The milter endpoint (`SEALGATE_MILTER_LISTEN`) against its real peers:
//!
//! - a real Postfix with `smtpd_milters` at sealgate and STARTTLS: a secure address is
//!   accepted at RCPT over TLS and refused there (`550 5.7.1`, shown to the client) without;
//!   mixed recipients; an authenticated submission loses its tracking headers;
//! - `miltertest` (OpenDKIM's Lua-scripted MTA) running `tests/milter/session.lua`;
//! - a raw socket sending malformed, truncated, oversized, unknown and out-of-order packets,
//!   each followed by a good session: the milter survives every one and logs each ending.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::Command as Process;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use sealgate_protocol::milter::consts::{
    SMFIC_HELO, SMFIC_MAIL, SMFIC_RCPT, SMFIF_CHGHDRS, SMFIF_SETSYMLIST, SMFIM_ENVFROM,
    SMFIM_ENVRCPT, SMFIP_NOBODY,
};
use sealgate_protocol::milter::{Command, Family, Response, ResponseDecoder};
use sequoia_openpgp::Cert;
use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::serialize::Serialize;
use testkit::peers::{Dovecot, Postfix, PostfixConfig, TestCert, status_of, swaks};
use testkit::sealgate::Sealgate;

/// Deadline for a delivery, a log line or the milter's reaction.
const WAIT: Duration = Duration::from_secs(60);

/// Postfix's `myhostname` in the harness.
const TRUSTED_MTA: &str = "mx.example.org";

/// Envelope sender; its domain is not ours, so a bounce to it fails at once.
const SENDER: &str = "sender@example.net";

/// A secure twin: TLS-only, delivered to `user@example.org`.
const SECURE: &str = "user@secure.example.org";

/// Its mailbox.
const TWIN_MAILBOX: &str = "user@example.org";

/// An ordinary recipient.
const NORMAL: &str = "other@example.org";

/// `SEALGATE_SECURE_DOMAINS` for every test here.
const SECURE_DOMAINS: &str = "secure.example.org=example.org,vault.example.net";

// ---------------------------------------------------------------------------------------------
// Real Postfix with STARTTLS
// ---------------------------------------------------------------------------------------------

/// swaks → Postfix (STARTTLS offered, sealgate as its milter) → sealgate's LMTP → Maildir in
/// sealgate's directory. Postfix drops first, the certificate last.
struct Stack {
    postfix: Postfix,
    sealgate: Sealgate,
    _cert: TestCert,
}

impl Stack {
    fn start() -> Option<Stack> {
        Stack::start_with(&[])
    }

    /// Like [`Stack::start`], with `env` added to sealgate's environment.
    fn start_with(env: &[(&str, &str)]) -> Option<Stack> {
        if !testkit::require_all(&["postfix", "swaks", "openssl"]) {
            return None;
        }
        let cert = TestCert::generate(TRUSTED_MTA);
        let mut all = vec![
            ("SEALGATE_MILTER_LISTEN", "127.0.0.1:0"),
            ("SEALGATE_SECURE_DOMAINS", SECURE_DOMAINS),
            ("SEALGATE_TRUSTED_MTA", TRUSTED_MTA),
        ];
        all.extend_from_slice(env);
        let sealgate = Sealgate::spawn(&all);
        let postfix = Postfix::start(
            milter_config(&sealgate)
                .with_lmtp_transport(sealgate.port())
                .with_starttls(&cert),
        );
        Some(Stack {
            postfix,
            sealgate,
            _cert: cert,
        })
    }

    /// Runs swaks against Postfix's smtpd; returns (exit success, transcript).
    fn swaks(&self, to: &str, extra: &[&str]) -> (bool, String) {
        let port = self.postfix.smtp_port.to_string();
        let mut args = vec![
            "--server",
            "127.0.0.1",
            "--port",
            &port,
            "--from",
            SENDER,
            "--to",
            to,
            "--helo",
            "client.example.net",
        ];
        args.extend_from_slice(extra);
        swaks(&args)
    }

    /// Messages stored in sealgate's Maildir for `mailbox`.
    fn stored(&self, mailbox: &str) -> Vec<Vec<u8>> {
        testkit::maildir::messages(&self.sealgate.dir.path().join("mail").join(mailbox))
    }

    /// Waits until `mailbox` holds `n` messages and returns them.
    fn wait_stored(&self, mailbox: &str, n: usize) -> Vec<Vec<u8>> {
        let mut stored = Vec::new();
        let done = testkit::poll_until(WAIT, || {
            stored = self.stored(mailbox);
            stored.len() >= n
        });
        assert!(
            done,
            "{mailbox}: {} of {n} messages stored; maillog tail:\n{}\nsealgate log tail:\n{}",
            stored.len(),
            testkit::tail(&self.postfix.log(), 30),
            testkit::tail(&self.sealgate.log(), 30)
        );
        stored
    }
}

/// Fails if Postfix logged a warning or error about the milter (a refused negotiation, an
/// unexpected reply, a broken connection): each would make it apply milter_default_action.
fn assert_no_milter_trouble(postfix: &Postfix) {
    let log = postfix.log();
    let trouble: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("milter") && (l.contains("warning:") || l.contains("error:")))
        .collect();
    assert!(
        trouble.is_empty(),
        "Postfix complained about the milter:\n{}",
        trouble.join("\n")
    );
}

/// The Postfix settings that put sealgate's milter on every smtpd.
fn milter_config(sealgate: &Sealgate) -> PostfixConfig {
    PostfixConfig::default()
        .with_main_cf(format!(
            "smtpd_milters = inet:127.0.0.1:{}",
            sealgate.milter_port()
        ))
        .with_main_cf("milter_default_action = tempfail")
        .with_main_cf("milter_protocol = 6")
}

/// The server's reply to the client line containing `sent` in a swaks transcript: the next
/// line that comes from the server (`<-` plain, `<~` over TLS), multi-line replies joined.
fn reply_to(transcript: &str, sent: &str) -> String {
    let lines: Vec<&str> = transcript.lines().collect();
    let at = lines
        .iter()
        .position(|l| {
            let l = l.trim_start();
            (l.starts_with("->") || l.starts_with("~>")) && l.contains(sent)
        })
        .unwrap_or_else(|| panic!("swaks did not send {sent:?}:\n{transcript}"));
    let reply: Vec<&str> = lines[at + 1..]
        .iter()
        .map(|l| l.trim_start())
        .skip_while(|l| !(l.starts_with("<-") || l.starts_with("<~") || l.starts_with("<**")))
        .take_while(|l| l.starts_with("<-") || l.starts_with("<~") || l.starts_with("<**"))
        .collect();
    assert!(!reply.is_empty(), "no reply to {sent:?}:\n{transcript}");
    reply.join("\n")
}

/// A secure address over STARTTLS: the milter lets the RCPT through (250), and the message is
/// delivered to the twin's mailbox.
#[test]
fn secure_address_over_tls_is_accepted_at_rcpt() {
    let Some(stack) = Stack::start() else { return };
    let (ok, out) = stack.swaks(SECURE, &["--tls", "--body", "token-milter-tls-1312"]);
    assert!(ok, "swaks over TLS was refused:\n{out}");
    assert!(out.contains("TLS started"), "swaks did not use TLS:\n{out}");
    let reply = reply_to(&out, &format!("RCPT TO:<{SECURE}>"));
    assert!(reply.contains(" 250 "), "RCPT over TLS: {reply}\n{out}");
    let stored = stack.wait_stored(TWIN_MAILBOX, 1);
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(text.contains("token-milter-tls-1312"), "{text}");
    assert!(text.contains(&format!("X-Original-To: {SECURE}")), "{text}");
    stack.postfix.wait_for_status(SECURE, "sent", WAIT);
    assert_no_milter_trouble(&stack.postfix);
    // The milter saw the TLS macros Postfix sent after STARTTLS.
    assert!(
        !stack.sealgate.log().contains("refused at RCPT"),
        "{}",
        stack.sealgate.log()
    );
}

/// Without STARTTLS the milter refuses the secure address at RCPT with sealgate's own
/// `550 5.7.1` text, which swaks (the sending client) sees; nothing is queued.
#[test]
fn secure_address_without_tls_is_refused_at_rcpt() {
    let Some(stack) = Stack::start() else { return };
    let (ok, out) = stack.swaks(SECURE, &[]);
    assert!(!ok, "swaks without TLS should fail:\n{out}");
    let reply = reply_to(&out, &format!("RCPT TO:<{SECURE}>"));
    assert!(
        reply.contains(
            "550 5.7.1 <user@secure.example.org>: TLS required for this address; \
             no TLS evidence from a trusted MTA"
        ),
        "RCPT without TLS: {reply}\n{out}"
    );
    assert!(!out.contains("-> DATA"), "swaks went on to DATA:\n{out}");
    let line = testkit::poll_until(WAIT, || stack.postfix.log().contains("milter-reject: RCPT"));
    assert!(line, "maillog:\n{}", stack.postfix.log());
    stack
        .sealgate
        .wait_for_log("refused at RCPT: TLS required", WAIT);
    assert!(stack.postfix.queue_is_empty());
    assert!(stack.stored(TWIN_MAILBOX).is_empty());
    assert_no_milter_trouble(&stack.postfix);
}

/// The quoted and differently cased spellings of a TLS-only mailbox (a listed one, and one of
/// a secure domain) are that mailbox: refused at RCPT without TLS, before the queue, so no
/// bounce is sent after it (issue 11 §3).
#[test]
fn quoted_spellings_of_a_secure_address_are_refused_at_rcpt() {
    let list = testkit::temp_dir("sealgate-secure-list-");
    let file = list.path().join("mailboxes");
    fs::write(&file, "boss@example.org\n").expect("write the mailbox list");
    let file = file.display().to_string();
    let Some(stack) = Stack::start_with(&[("SEALGATE_SECURE_MAILBOXES", file.as_str())]) else {
        return;
    };
    for rcpt in [
        "\"boss\"@example.org",
        "\"bo\\ss\"@example.org",
        "Boss@EXAMPLE.org",
        "\"user\"@secure.example.org",
    ] {
        let (ok, out) = stack.swaks(rcpt, &[]);
        assert!(!ok, "swaks to {rcpt} without TLS should fail:\n{out}");
        let reply = reply_to(&out, &format!("RCPT TO:<{rcpt}>"));
        assert!(
            reply.contains("550 5.7.1 ") && reply.contains("TLS required for this address"),
            "RCPT {rcpt} without TLS: {reply}\n{out}"
        );
        assert!(!out.contains("-> DATA"), "swaks went on to DATA:\n{out}");
    }
    // The milter's line names the SMTP client (from CONNECT), not only Postfix's socket.
    let line = stack
        .sealgate
        .wait_for_log("refused at RCPT: TLS required", WAIT);
    let client = line
        .split(' ')
        .rev()
        .find_map(|word| word.strip_prefix("client="))
        .unwrap_or_else(|| panic!("no client field: {line}"));
    assert!(client.ends_with("[127.0.0.1]"), "{line}");
    assert!(line.contains("queue_id="), "{line}");
    let refusals = stack.postfix.log().matches("milter-reject: RCPT").count();
    assert_eq!(refusals, 4, "maillog:\n{}", stack.postfix.log());
    assert!(stack.postfix.queue_is_empty());
    // Over TLS the quoted spelling goes through, to the listed mailbox.
    let (ok, out) = stack.swaks(
        "\"boss\"@example.org",
        &["--tls", "--body", "token-quoted-4242"],
    );
    assert!(ok, "swaks over TLS was refused:\n{out}");
    let stored = stack.wait_stored("boss@example.org", 1);
    assert!(String::from_utf8_lossy(&stored[0]).contains("token-quoted-4242"));
    assert_no_milter_trouble(&stack.postfix);
}

/// Mixed recipients without TLS: only the secure one is refused at RCPT; the message goes to
/// the other one.
#[test]
fn mixed_recipients_only_the_secure_one_is_refused() {
    let Some(stack) = Stack::start() else { return };
    let to = format!("{SECURE},{NORMAL}");
    let (_, out) = stack.swaks(&to, &["--body", "token-milter-mixed-2718"]);
    let secure = reply_to(&out, &format!("RCPT TO:<{SECURE}>"));
    assert!(
        secure.contains("550 5.7.1 "),
        "secure RCPT: {secure}\n{out}"
    );
    let normal = reply_to(&out, &format!("RCPT TO:<{NORMAL}>"));
    assert!(normal.contains(" 250 "), "normal RCPT: {normal}\n{out}");
    let end = reply_to(&out, "-> .");
    assert!(end.contains(" 250 "), "end of DATA: {end}\n{out}");
    let stored = stack.wait_stored(NORMAL, 1);
    assert!(String::from_utf8_lossy(&stored[0]).contains("token-milter-mixed-2718"));
    stack.postfix.wait_for_status(NORMAL, "sent", WAIT);
    let log = stack.postfix.log();
    assert!(
        !log.lines()
            .any(|l| l.contains(&format!("to=<{SECURE}>")) && status_of(l).is_some()),
        "the refused recipient has a delivery line:\n{log}"
    );
    assert!(stack.stored(TWIN_MAILBOX).is_empty());
    assert_no_milter_trouble(&stack.postfix);
}

/// An authenticated submission through Postfix's submission smtpd, delivered straight to
/// Dovecot (sealgate runs only its milter): every listed tracking field is gone, whatever its
/// case and however often it occurs; the other fields stay in order.
#[test]
fn authenticated_submission_loses_tracking_headers_in_the_milter() {
    if !testkit::require_all(&["postfix", "dovecot", "swaks", "python3", "openssl"]) {
        return;
    }
    let cert = TestCert::generate(TRUSTED_MTA);
    let dovecot = Dovecot::start_with_sasl();
    let auth_port = dovecot.auth_port.expect("Dovecot with an auth listener");
    let sealgate = Sealgate::spawn(&[
        ("SEALGATE_LMTP_LISTEN", "off"),
        ("SEALGATE_MILTER_LISTEN", "127.0.0.1:0"),
    ]);
    assert!(sealgate.lmtp_addr.is_empty());
    let submission_port = testkit::free_port();
    let postfix = Postfix::start(
        milter_config(&sealgate)
            .with_main_cf(format!(
                "virtual_transport = lmtp:inet:127.0.0.1:{}",
                dovecot.lmtp_port
            ))
            .with_starttls(&cert)
            .with_submission(submission_port, auth_port),
    );
    testkit::wait_for_port(submission_port);

    let files = testkit::temp_dir("sealgate-milter-msg-");
    let user = "alice@example.org";
    let rcpt = "bob@example.org";
    let message = format!(
        "From: Alice <{user}>\r\n\
         X-Mailer: First 1.0\r\n\
         To: Bob <{rcpt}>\r\n\
         Subject: milter scrub token-milter-scrub-4242\r\n\
         User-Agent: Foo/1.0\r\n\
         x-mailer: second, lower case\r\n\
         X-Mailer-Info: shares a prefix, stays\r\n\
         X-Originating-IP: [198.51.100.7]\r\n\
         X-MAILER: third, upper case\r\n\
         \r\n\
         X-Mailer: in the body, stays\r\n\
         .\r\n"
    );
    let file = files.path().join("message.eml");
    fs::write(&file, message.trim_end_matches("\r\n")).expect("write message");
    let port = submission_port.to_string();
    let data = format!("@{}", file.display());
    let (ok, out) = swaks(&[
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--from",
        user,
        "--to",
        rcpt,
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        user,
        "--auth-password",
        testkit::peers::DOVECOT_PASSWORD,
        "--data",
        &data,
        "--no-data-fixup",
    ]);
    assert!(ok, "submission refused:\n{out}");
    let line = postfix.wait_for_status(rcpt, "sent", WAIT);
    assert!(line.contains("relay=127.0.0.1"), "{line}");
    let inbox = dovecot.fetch_inbox(rcpt);
    assert_eq!(inbox.len(), 1);
    let stored = String::from_utf8_lossy(&inbox[0]).into_owned();
    let (headers, body) = stored.split_once("\r\n\r\n").expect("header block");
    let names: Vec<String> = headers
        .split("\r\n")
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_string()))
        .filter(|n| {
            ![
                "Return-Path",
                "Delivered-To",
                "Received",
                "Message-Id",
                "Date",
            ]
            .iter()
            .any(|skip| n.eq_ignore_ascii_case(skip))
        })
        .collect();
    assert_eq!(
        names,
        ["From", "To", "Subject", "X-Mailer-Info"],
        "stored headers:\n{headers}\nsealgate log:\n{}",
        testkit::tail(&sealgate.log(), 20)
    );
    assert!(body.contains("X-Mailer: in the body, stays"), "{body}");
    sealgate.wait_for_log("headers scrubbed", WAIT);
    assert_no_milter_trouble(&postfix);
}

// ---------------------------------------------------------------------------------------------
// miltertest
// ---------------------------------------------------------------------------------------------

/// A certificate that expired a year ago (created two years ago, valid for one).
fn expired_cert(address: &str) -> Cert {
    let two_years = Duration::from_secs(2 * 365 * 24 * 3600);
    CertBuilder::new()
        .add_userid(format!("<{address}>"))
        .set_cipher_suite(CipherSuite::Cv25519)
        .add_transport_encryption_subkey()
        .set_creation_time(SystemTime::now() - two_years)
        .set_validity_period(Duration::from_secs(365 * 24 * 3600))
        .generate()
        .expect("generate")
        .0
}

/// Puts `cert` into the cert-d `keys` directly (`keys import` refuses unusable ones).
fn plant(keys: &Path, cert: &Cert) {
    let fpr = cert.fingerprint().to_hex().to_lowercase();
    let dir = keys.join(&fpr[..2]);
    fs::create_dir_all(&dir).expect("cert-d dir");
    let mut bytes = Vec::new();
    cert.serialize(&mut bytes).expect("serialize cert");
    fs::write(dir.join(&fpr[2..]), bytes).expect("write cert");
}

/// `tests/milter/session.lua` through miltertest against sealgate's milter alone
/// (`SEALGATE_LMTP_LISTEN=off`): negotiation, TLS macros at HELO, MAIL and RCPT, unusable
/// keys, header deletion for authenticated mail, ABORT and several messages per connection.
#[test]
fn miltertest_session_script() {
    if !testkit::require("miltertest") {
        return;
    }
    let keys = testkit::temp_dir("sealgate-milter-keys-");
    plant(keys.path(), &expired_cert("expired@example.org"));
    let keystore = keys.path().display().to_string();
    let sealgate = Sealgate::spawn(&[
        ("SEALGATE_LMTP_LISTEN", "off"),
        ("SEALGATE_MILTER_LISTEN", "127.0.0.1:0"),
        ("SEALGATE_SECURE_DOMAINS", SECURE_DOMAINS),
        ("SEALGATE_KEYSTORE", &keystore),
    ]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/milter/session.lua");
    let (ok, out) = testkit::run(
        Process::new(testkit::bin_path("miltertest"))
            .arg("-D")
            .arg(format!("port={}", sealgate.milter_port()))
            .arg("-s")
            .arg(&script),
    );
    assert!(
        ok && out.contains("all milter checks passed"),
        "miltertest {} failed:\n{out}\nsealgate log tail:\n{}",
        script.display(),
        testkit::tail(&sealgate.log(), 40)
    );
    // miltertest is done when the last reply reached it; sealgate's log lines of that session
    // may still be on their way to the log file.
    sealgate.wait_for_log("headers scrubbed", WAIT);
    sealgate.wait_for_log("recipient's key is unusable", WAIT);
    let log = sealgate.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") && l.contains("milter session ended")),
        "a session ended badly:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Raw packets
// ---------------------------------------------------------------------------------------------

/// A raw MTA-side connection: sends encoded commands or arbitrary bytes, reads responses.
struct Mta {
    stream: TcpStream,
    input: BytesMut,
    decoder: ResponseDecoder,
}

impl Mta {
    fn connect(port: u16) -> Mta {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the milter");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set timeout");
        Mta {
            stream,
            input: BytesMut::new(),
            decoder: ResponseDecoder::new(1 << 20),
        }
    }

    fn send(&mut self, command: &Command) {
        let mut out = BytesMut::new();
        command.encode(&mut out);
        self.raw(&out);
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the milter");
    }

    fn response(&mut self) -> Response {
        loop {
            if let Some(response) = self.decoder.decode(&mut self.input).expect("a response") {
                return response;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("read a response");
            assert!(n > 0, "the milter closed the connection");
            self.input.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends `command` and expects CONTINUE.
    fn ok(&mut self, command: Command) {
        self.send(&command);
        assert_eq!(self.response(), Response::Continue, "reply to {command:?}");
    }

    /// Waits until the milter closes the connection (EOF or reset), or panics after 10 s.
    fn expect_closed(&mut self, case: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset) => return,
                Err(e) => panic!("{case}: the milter did not close the connection: {e}"),
            }
            assert!(Instant::now() < deadline, "{case}: connection still open");
        }
    }

    /// OPTNEG as Postfix sends it; checks sealgate's answer.
    fn negotiate(&mut self) {
        self.send(&Command::OptNeg {
            version: 6,
            actions: 0x1FF,
            protocol: 0x1F_FFFF,
        });
        match self.response() {
            Response::OptNeg {
                version,
                actions,
                protocol,
                macros,
            } => {
                assert_eq!(version, 6);
                assert_eq!(actions, SMFIF_CHGHDRS | SMFIF_SETSYMLIST);
                assert_ne!(protocol & SMFIP_NOBODY, 0);
                let stages: Vec<u32> = macros.iter().map(|(stage, _)| *stage).collect();
                assert_eq!(stages, [SMFIM_ENVFROM, SMFIM_ENVRCPT]);
                assert!(macros[0].1.contains("{auth_authen}"), "{macros:?}");
                assert!(macros[1].1.contains("{tls_version}"), "{macros:?}");
            }
            other => panic!("OPTNEG answered with {other:?}"),
        }
    }

    fn connect_and_helo(&mut self, tls: Option<&str>) {
        self.ok(Command::Connect {
            hostname: "client.example.net".into(),
            family: Family::Inet,
            port: Some(40000),
            address: Some("192.0.2.10".into()),
        });
        if let Some(version) = tls {
            self.send(&Command::Macros {
                stage: SMFIC_HELO,
                macros: vec![
                    ("tls_version".into(), version.into()),
                    ("cipher".into(), "TLS_AES_256_GCM_SHA384".into()),
                    ("cipher_bits".into(), "256".into()),
                ],
            });
        }
        self.ok(Command::Helo {
            name: "client.example.net".into(),
        });
    }

    fn mail(&mut self) {
        self.send(&Command::Macros {
            stage: SMFIC_MAIL,
            macros: vec![("mail_addr".into(), SENDER.into())],
        });
        self.ok(Command::Mail {
            args: vec![format!("<{SENDER}>")],
        });
    }

    fn rcpt(&mut self, address: &str) -> Response {
        self.send(&Command::Macros {
            stage: SMFIC_RCPT,
            macros: vec![("rcpt_addr".into(), address.into())],
        });
        self.send(&Command::Rcpt {
            args: vec![format!("<{address}>")],
        });
        self.response()
    }
}

/// A whole good session, as Postfix runs it without TLS: the secure address gets sealgate's
/// 550, the other recipient CONTINUE, then QUIT.
fn good_session(port: u16, case: &str) {
    let mut mta = Mta::connect(port);
    mta.negotiate();
    mta.connect_and_helo(None);
    mta.mail();
    assert_eq!(
        mta.rcpt(SECURE),
        Response::ReplyCode {
            code: 550,
            text: "5.7.1 <user@secure.example.org>: TLS required for this address; no TLS \
                   evidence from a trusted MTA"
                .into(),
        },
        "after {case}"
    );
    assert_eq!(mta.rcpt(NORMAL), Response::Continue, "after {case}");
    mta.send(&Command::Abort);
    mta.send(&Command::Quit);
    mta.expect_closed(case);
}

/// Every broken input ends only its own milter session, with a warning naming the problem;
/// a good session right after each gets the right verdict, and the process stays up.
#[test]
fn malformed_packets_end_only_their_session() {
    let mut sealgate = Sealgate::spawn(&[
        ("SEALGATE_MILTER_LISTEN", "127.0.0.1:0"),
        ("SEALGATE_SECURE_DOMAINS", SECURE_DOMAINS),
    ]);
    let port = sealgate.milter_port();
    good_session(port, "nothing");

    type Case = (&'static str, bool, Vec<u8>, &'static str);
    let mut rcpt_packet = BytesMut::new();
    Command::Rcpt {
        args: vec![format!("<{SECURE}>")],
    }
    .encode(&mut rcpt_packet);
    let mut eom_packet = BytesMut::new();
    Command::EndOfMessage.encode(&mut eom_packet);
    let cases: Vec<Case> = vec![
        // (name, negotiate first, bytes, expected log text)
        (
            "zero-length frame",
            true,
            vec![0, 0, 0, 0],
            "empty milter packet",
        ),
        (
            "4 GiB length",
            true,
            vec![0xff, 0xff, 0xff, 0xff, b'B', 0, 0],
            "too large",
        ),
        (
            "unknown command byte",
            true,
            vec![0, 0, 0, 1, b'Z'],
            "unknown milter packet type 'Z'",
        ),
        (
            "malformed OPTNEG",
            false,
            vec![0, 0, 0, 3, b'O', 0, 6],
            "malformed milter packet 'O'",
        ),
        (
            "RCPT before OPTNEG",
            false,
            rcpt_packet.to_vec(),
            "RCPT before option negotiation",
        ),
        (
            "EOM without MAIL",
            true,
            eom_packet.to_vec(),
            "EOM without MAIL",
        ),
        (
            "garbage",
            false,
            b"GET / HTTP/1.1\r\nHost: milter\r\n\r\n".to_vec(),
            "too large",
        ),
    ];
    for (name, negotiate, bytes, expected) in &cases {
        let mut mta = Mta::connect(port);
        if *negotiate {
            mta.negotiate();
        }
        mta.raw(bytes);
        mta.expect_closed(name);
        sealgate.wait_for_log(expected, WAIT);
        good_session(port, name);
        assert!(sealgate.is_running(), "sealgate died after {name}");
    }

    // A truncated frame, then the MTA closes: the milter notices the half packet.
    let mut mta = Mta::connect(port);
    mta.negotiate();
    mta.raw(&[0, 0, 0, 100, b'M', b'<', b'a', b'@']);
    mta.stream.shutdown(Shutdown::Both).expect("close");
    sealgate.wait_for_log("in the middle of a packet", WAIT);
    good_session(port, "truncated frame");
    assert!(sealgate.is_running(), "sealgate died");

    // One warning per broken session, none for the good ones.
    let log = sealgate.log();
    let ended: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("milter session ended"))
        .collect();
    assert_eq!(
        ended.len(),
        cases.len() + 1,
        "one line per ended session:\n{}",
        ended.join("\n")
    );
    assert!(
        ended.iter().all(|l| l.contains("WARN")),
        "{}",
        ended.join("\n")
    );
}

/// The milter alone (`SEALGATE_LMTP_LISTEN=off`): the LMTP port is not bound, the milter
/// answers, SIGTERM ends the process cleanly.
#[test]
fn milter_runs_alone_and_stops_on_sigterm() {
    let sealgate = Sealgate::spawn(&[
        ("SEALGATE_LMTP_LISTEN", "off"),
        ("SEALGATE_MILTER_LISTEN", "127.0.0.1:0"),
        ("SEALGATE_SECURE_DOMAINS", SECURE_DOMAINS),
    ]);
    assert!(sealgate.lmtp_addr.is_empty());
    assert!(!sealgate.log().contains("protocol=lmtp"));
    good_session(sealgate.milter_port(), "start");
    // An idle milter connection is closed at shutdown.
    let mut idle = Mta::connect(sealgate.milter_port());
    idle.negotiate();
    let status = sealgate.terminate();
    assert!(status.success(), "{status:?}");
    idle.expect_closed("shutdown");
}

/// Both listeners off is a configuration error (exit 78), reported before binding.
#[test]
fn lmtp_and_milter_both_off_is_refused() {
    let (ok, out) = testkit::run(
        Process::new(env!("CARGO_BIN_EXE_sealgate"))
            .arg("check-config")
            .env("SEALGATE_LMTP_LISTEN", "off")
            .env_remove("SEALGATE_MILTER_LISTEN"),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("SEALGATE_LMTP_LISTEN") && out.contains("SEALGATE_MILTER_LISTEN"),
        "{out}"
    );
}

/// `SEALGATE_MILTER_LISTEN=unix:PATH` with `SEALGATE_MILTER_SOCKET_MODE`: the socket gets the
/// mode, answers OPTNEG, and is removed at exit.
#[test]
fn milter_on_a_unix_socket() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;

    let dir = testkit::temp_dir("sealgate-milter-sock-");
    let path = dir.path().join("milter");
    let listen = format!("unix:{}", path.display());
    let sealgate = Sealgate::spawn(&[
        ("SEALGATE_MILTER_LISTEN", &listen),
        ("SEALGATE_MILTER_SOCKET_MODE", "0600"),
    ]);
    assert_eq!(sealgate.milter_addr.as_deref(), Some(listen.as_str()));
    let mode = fs::metadata(&path)
        .expect("socket file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let mut stream = UnixStream::connect(&path).expect("connect to the milter socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    let mut out = BytesMut::new();
    Command::OptNeg {
        version: 6,
        actions: 0x1FF,
        protocol: 0x1F_FFFF,
    }
    .encode(&mut out);
    Command::Quit.encode(&mut out);
    stream.write_all(&out).expect("write");
    let mut input = BytesMut::new();
    let mut decoder = ResponseDecoder::new(1 << 20);
    let response = loop {
        if let Some(response) = decoder.decode(&mut input).expect("a response") {
            break response;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "closed before answering OPTNEG");
        input.extend_from_slice(&chunk[..n]);
    };
    assert!(
        matches!(response, Response::OptNeg { version: 6, .. }),
        "{response:?}"
    );
    assert!(sealgate.terminate().success());
    assert!(!path.exists(), "the socket file is left behind");
}
