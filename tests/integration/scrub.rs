//! Scrubbing (promise 3) against a real Postfix and Dovecot: mail that a logged-in user
//! submitted (Postfix's first `Received:` says `with ESMTPSA`) loses the client's name, HELO
//! and IP from that Received field and the tracking header fields (`User-Agent`, `X-Mailer`,
//! `X-Originating-IP`, ...); every other byte stays as sent. Mail from unauthenticated
//! clients passes untouched (`SEALGATE_SCRUB=authenticated`, the default).
//!
//! Each test sends a message it built itself (`swaks --data @file --no-data-fixup`), reads the
//! stored copy back over IMAP, and compares: everything below Postfix's own Received field
//! must be the sent message minus exactly the scrubbed fields.

use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use testkit::peers::{Dovecot, Postfix, PostfixConfig, TestCert, status_of, swaks};
use testkit::sealgate::Sealgate;

/// Deadline for a delivery to show up in Postfix's log (it takes well under a second).
const WAIT: Duration = Duration::from_secs(60);

/// The HELO name of the submitting client: it must appear nowhere in a scrubbed message.
const HELO: &str = "myclient.example.net";

/// Postfix's `myhostname` in the harness: the only host whose Received header counts.
const TRUSTED_MTA: &str = "mx.example.org";

/// The SASL user (Dovecot's static passdb accepts any user with [`testkit::peers::DOVECOT_PASSWORD`]).
const USER: &str = "alice@example.org";

/// The recipient.
const RCPT: &str = "bob@example.org";

/// Header fields the default `SEALGATE_SCRUB_HEADERS` removes, as they appear in [`message`]
/// (one folded over two lines).
const TRACKING_FIELDS: [&str; 4] = [
    "User-Agent: Foo/1.0\r\n",
    "X-Mailer: Bar 2\r\n",
    "X-Originating-IP: [198.51.100.7]\r\n",
    "X-Forwarded-For: 198.51.100.7,\r\n 203.0.113.5\r\n",
];

/// The message the client sends (CRLF line endings, no line starting with a dot, no
/// `From ` line: swaks sends it as it is). The tracking fields sit between fields that must
/// stay; `X-Mailer-Info` only shares a prefix with a scrubbed name, and the body quotes a
/// tracking field, which is content, not a header.
fn message(token: &str) -> String {
    format!(
        "From: Alice <{USER}>\r\n\
         To: Bob <{RCPT}>\r\n\
         Subject: scrub test {token}\r\n\
         Date: Sun, 22 Nov 2026 12:00:00 +0000\r\n\
         Message-ID: <{token}@example.org>\r\n\
         {}\
         MIME-Version: 1.0\r\n\
         {}\
         Content-Type: text/plain; charset=us-ascii\r\n\
         {}\
         X-Mailer-Info: not a tracking field, stays\r\n\
         {}\
         X-Keep:  two  spaces\t and a tab stay\r\n\
         \r\n\
         Hello Bob,\r\n\
         \r\n\
         User-Agent: Foo/1.0 (quoted in the body: stays)\r\n\
         \x20 indented line\r\n\
         {token}\r\n",
        TRACKING_FIELDS[0], TRACKING_FIELDS[1], TRACKING_FIELDS[2], TRACKING_FIELDS[3],
    )
}

/// `message(token)` without the tracking fields: what a scrubbed copy must contain below
/// Postfix's Received field, byte for byte.
fn scrubbed(token: &str) -> String {
    TRACKING_FIELDS
        .iter()
        .fold(message(token), |m, field| m.replacen(field, "", 1))
}

/// The peers: swaks → Postfix (plain smtpd, plus a SASL submission smtpd with STARTTLS) →
/// sealgate → Dovecot (also Postfix's SASL backend). Fields drop in order: Postfix first,
/// the certificate last.
struct Stack {
    postfix: Postfix,
    submission_port: u16,
    sealgate: Sealgate,
    dovecot: Dovecot,
    _cert: TestCert,
    /// Holds the message files for swaks.
    files: tempfile::TempDir,
}

impl Stack {
    /// Starts the peers; `env` is added to sealgate's environment. `None` when a peer binary
    /// is missing (the test then returns; `CI=true` panics instead).
    fn start(env: &[(&str, &str)]) -> Option<Stack> {
        if !testkit::require_all(&["postfix", "dovecot", "swaks", "python3", "openssl"]) {
            return None;
        }
        let cert = TestCert::generate(TRUSTED_MTA);
        let dovecot = Dovecot::start_with_sasl();
        let auth_port = dovecot.auth_port.expect("Dovecot with an auth listener");
        let next_hop = format!("lmtp:127.0.0.1:{}", dovecot.lmtp_port);
        let mut full_env = vec![
            ("SEALGATE_NEXT_HOP", next_hop.as_str()),
            ("SEALGATE_TRUSTED_MTA", TRUSTED_MTA),
        ];
        full_env.extend_from_slice(env);
        let sealgate = Sealgate::spawn(&full_env);
        let submission_port = testkit::free_port();
        let postfix = Postfix::start(
            PostfixConfig::default()
                .with_lmtp_transport(sealgate.port())
                .with_starttls(&cert)
                .with_submission(submission_port, auth_port),
        );
        testkit::wait_for_port(submission_port);
        Some(Stack {
            postfix,
            submission_port,
            sealgate,
            dovecot,
            _cert: cert,
            files: testkit::temp_dir("sealgate-scrub-msg-"),
        })
    }

    /// Sends `data` as the whole DATA content with swaks to `port`, with `extra` swaks
    /// arguments (`--tls`, `--auth`, ...). Panics unless Postfix accepted it.
    fn send(&self, port: u16, data: &str, extra: &[&str]) -> String {
        static SENT: AtomicUsize = AtomicUsize::new(0);
        let n = SENT.fetch_add(1, Ordering::Relaxed);
        let file = self.files.path().join(format!("message-{n}.eml"));
        // --no-data-fixup sends the file as it is, so it must end with the final dot (swaks
        // adds the CRLF after it).
        fs::write(&file, format!("{data}.")).expect("write message file");
        let port = port.to_string();
        let data_arg = format!("@{}", file.display());
        let mut args = vec![
            "--server",
            "127.0.0.1",
            "--port",
            &port,
            "--from",
            USER,
            "--to",
            RCPT,
            "--helo",
            HELO,
            "--data",
            &data_arg,
            "--no-data-fixup",
        ];
        args.extend_from_slice(extra);
        let (ok, out) = swaks(&args);
        assert!(
            ok,
            "swaks {args:?} was not accepted by Postfix:\n{out}\nmaillog tail:\n{}",
            testkit::tail(&self.postfix.log(), 40)
        );
        out
    }

    /// Submits `data` as the logged-in user, over STARTTLS, to the submission smtpd.
    fn submit(&self, data: &str) {
        let out = self.send(
            self.submission_port,
            data,
            &[
                "--tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                USER,
                "--auth-password",
                testkit::peers::DOVECOT_PASSWORD,
            ],
        );
        assert!(out.contains("TLS started"), "{out}");
        assert!(out.contains("<~  235 "), "authentication failed:\n{out}");
    }

    /// Sends `data` without authentication (and without TLS) to the plain smtpd.
    fn relay(&self, data: &str) {
        let out = self.send(self.postfix.smtp_port, data, &[]);
        assert!(!out.contains("AUTH "), "{out}");
    }

    /// Waits for the `n`-th outcome Postfix logs for [`RCPT`], which must be `sent` through
    /// sealgate, then returns the `n`-th stored message (read over IMAP).
    fn delivered(&self, n: usize) -> Vec<u8> {
        let lines = self.postfix.wait_for_outcomes(RCPT, n, WAIT);
        let line = &lines[n - 1];
        assert_eq!(
            status_of(line),
            Some("sent"),
            "{line}\nsealgate log tail:\n{}",
            testkit::tail(&self.sealgate.log(), 20)
        );
        let relay = format!("relay=127.0.0.1[127.0.0.1]:{}", self.sealgate.port());
        assert!(line.contains(&relay), "not via sealgate: {line}");
        let mut inbox = self.dovecot.fetch_inbox(RCPT);
        assert_eq!(inbox.len(), n, "{RCPT}'s INBOX");
        inbox.swap_remove(n - 1)
    }
}

/// A stored message split at Postfix's Received field: (the fields above it, that field,
/// everything below it). Panics if there is not exactly one Received field by our Postfix.
fn split_at_postfix_received(stored: &[u8]) -> (String, String, String) {
    let text = String::from_utf8(stored.to_vec()).expect("stored message is UTF-8");
    let header_end = text.find("\r\n\r\n").expect("header block") + 2;
    // Field boundaries: offsets of lines that do not start with white space.
    let mut starts: Vec<usize> = vec![0];
    let mut pos = 0;
    while let Some(i) = text[pos..header_end].find("\r\n") {
        let next = pos + i + 2;
        if next < header_end && !text[next..].starts_with([' ', '\t']) {
            starts.push(next);
        }
        pos = next;
    }
    starts.push(header_end);
    let ours: Vec<(usize, usize)> = starts
        .windows(2)
        .map(|w| (w[0], w[1]))
        .filter(|&(a, b)| {
            let field = &text[a..b];
            field.starts_with("Received:") && field.contains("by mx.example.org (Postfix)")
        })
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "expected one Received field by our Postfix in:\n{text}"
    );
    let (a, b) = ours[0];
    (
        text[..a].to_owned(),
        text[a..b].to_owned(),
        text[b..].to_owned(),
    )
}

/// Field names of a header block (lower-case).
fn field_names(headers: &str) -> Vec<String> {
    headers
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.to_ascii_lowercase()))
        .collect()
}

/// Authenticated submission (ESMTPSA): the stored message has no client IP, name or HELO in
/// Postfix's Received field, no tracking header fields, and is otherwise byte-exact.
#[test]
fn authenticated_submission_is_scrubbed() {
    let Some(stack) = Stack::start(&[]) else {
        return;
    };
    let token = "token-scrub-auth-5150";
    stack.submit(&message(token));
    let stored = stack.delivered(1);
    let (above, received, below) = split_at_postfix_received(&stored);

    // Postfix's Received field: still says who received it and how, but not from whom.
    assert!(
        received.contains("by mx.example.org (Postfix) with ESMTPSA id "),
        "{received}"
    );
    // The rest of the field stays: the TLS clause, the `for` clause and the date.
    assert!(
        received.contains("(using TLSv1.") && received.contains(&format!("\tfor <{RCPT}>; ")),
        "{received}"
    );
    for needle in ["127.0.0.1", "localhost", HELO] {
        assert!(
            !received.contains(needle),
            "{needle:?} left in Postfix's Received field:\n{received}"
        );
    }
    assert!(
        !received
            .split(|c: char| c.is_whitespace() || c == ':')
            .any(|word| word.eq_ignore_ascii_case("from")),
        "the from clause is still there:\n{received}"
    );
    // The HELO name nowhere at all (Dovecot's own Received names sealgate, not the client).
    let all = String::from_utf8_lossy(&stored);
    assert!(!all.contains(HELO), "HELO name left in:\n{all}");

    // No tracking field anywhere in the header block.
    let header_end = all.find("\r\n\r\n").expect("header block");
    let names = field_names(&all[..header_end + 2]);
    for name in [
        "user-agent",
        "x-mailer",
        "x-originating-ip",
        "x-forwarded-for",
    ] {
        assert!(
            !names.iter().any(|n| n == name),
            "{name} left in:\n{}",
            &all[..header_end]
        );
    }
    assert!(!all[..header_end].contains("198.51.100.7"), "{all}");

    // Everything below Postfix's field is the sent message minus the tracking fields.
    assert_eq!(below, scrubbed(token), "stored message:\n{all}");
    // Above it: only what sealgate and Dovecot add, nothing of the client's.
    for needle in ["Foo/1.0", "Bar 2", "198.51.100.7"] {
        assert!(!above.contains(needle), "{needle:?} above:\n{above}");
    }
}

/// A message from an unauthenticated client (the plain smtpd, no TLS) keeps everything:
/// the tracking fields and the from clause of Postfix's Received field.
#[test]
fn unauthenticated_mail_keeps_its_headers() {
    let Some(stack) = Stack::start(&[]) else {
        return;
    };
    let token = "token-scrub-plain-6160";
    stack.relay(&message(token));
    let stored = stack.delivered(1);
    let (_above, received, below) = split_at_postfix_received(&stored);
    assert!(
        received.starts_with(&format!(
            "Received: from {HELO} (localhost [127.0.0.1])\r\n"
        )),
        "{received}"
    );
    assert!(
        received.contains("by mx.example.org (Postfix) with ESMTP id "),
        "{received}"
    );
    assert_eq!(
        below,
        message(token),
        "stored message:\n{}",
        String::from_utf8_lossy(&stored)
    );
}

/// A forged `Received: … with ESMTPSA` in the message, below Postfix's real (unauthenticated)
/// one, does not make sealgate scrub: only our MTA's first Received counts.
#[test]
fn forged_authenticated_received_does_not_trigger_scrubbing() {
    let Some(stack) = Stack::start(&[]) else {
        return;
    };
    let token = "token-scrub-forged-7170";
    let forged = format!(
        "Received: from laptop (laptop [192.0.2.44])\r\n\
         \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\
         \tby mx.example.org (Postfix) with ESMTPSA id 5E6F7A8B9C\r\n\
         \tfor <{RCPT}>; Sun, 22 Nov 2026 11:59:59 +0000 (UTC)\r\n{}",
        message(token)
    );
    stack.relay(&forged);
    let stored = stack.delivered(1);
    let text = String::from_utf8_lossy(&stored);
    // Postfix's real Received is the first of the two by mx.example.org; all below it stays.
    let real = text
        .find("Received: from myclient.example.net (localhost [127.0.0.1])\r\n")
        .unwrap_or_else(|| panic!("Postfix's Received field was changed:\n{text}"));
    let below_real = &text[real..];
    let forged_at = below_real
        .find("\r\nReceived: from laptop (laptop [192.0.2.44])\r\n")
        .unwrap_or_else(|| panic!("forged field changed:\n{text}"));
    assert_eq!(
        &below_real[forged_at + 2..],
        forged,
        "stored message:\n{text}"
    );
}

/// `SEALGATE_SCRUB=off`: even an authenticated submission is stored as sent.
#[test]
fn scrub_off_keeps_authenticated_mail() {
    let Some(stack) = Stack::start(&[("SEALGATE_SCRUB", "off")]) else {
        return;
    };
    let token = "token-scrub-off-8180";
    stack.submit(&message(token));
    let stored = stack.delivered(1);
    let (_above, received, below) = split_at_postfix_received(&stored);
    assert!(
        received.starts_with(&format!(
            "Received: from {HELO} (localhost [127.0.0.1])\r\n"
        )),
        "{received}"
    );
    assert!(received.contains(" with ESMTPSA id "), "{received}");
    assert_eq!(
        below,
        message(token),
        "stored message:\n{}",
        String::from_utf8_lossy(&stored)
    );
}

/// `SEALGATE_SCRUB=all`: unauthenticated mail is scrubbed too.
#[test]
fn scrub_all_cleans_unauthenticated_mail() {
    let Some(stack) = Stack::start(&[("SEALGATE_SCRUB", "all")]) else {
        return;
    };
    let token = "token-scrub-all-9190";
    stack.relay(&message(token));
    let stored = stack.delivered(1);
    let (_above, received, below) = split_at_postfix_received(&stored);
    assert!(
        received.contains("by mx.example.org (Postfix) with ESMTP id "),
        "{received}"
    );
    for needle in ["127.0.0.1", "localhost", HELO] {
        assert!(
            !received.contains(needle),
            "{needle:?} left in Postfix's Received field:\n{received}"
        );
    }
    assert_eq!(
        below,
        scrubbed(token),
        "stored message:\n{}",
        String::from_utf8_lossy(&stored)
    );
}
