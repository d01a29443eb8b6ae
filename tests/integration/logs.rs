//! Logs an operator can follow (issue 12, finding 10), read from sealgate's own output:
//! one summary line per message (queue ID, sender, Message-ID token, size, each recipient's
//! code, outcome and key fingerprint) with addresses as `SEALGATE_LOG_ADDRESSES` says; logfmt
//! quoting of values in text mode; a next hop (a real Dovecot) that goes down and comes back,
//! or answers `421` as Dovecot does while it shuts down, logged once at WARN each way, with
//! the cause.

use std::time::Duration;

use sealgate::{AddressLog, token};
use sealgate_protocol::{EnhancedCode, Reply};
use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::serialize::SerializeInto;
use testkit::fault_proxy::FaultProxy;
use testkit::lmtp::{Client, assert_codes};
use testkit::peers::{Dovecot, Postfix, PostfixConfig, swaks};
use testkit::sealgate::Sealgate;

const WAIT: Duration = Duration::from_secs(30);

/// The `key=value` fields of a logfmt line (after its message), quotes and escapes undone.
fn fields(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while chars.peek().is_some() {
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            chars.next();
            if c == '=' {
                break;
            }
            if c == ' ' {
                key.clear();
                continue;
            }
            key.push(c);
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        if !key.is_empty() {
            out.push((key, value));
        }
    }
    out
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn one_summary_line_per_message_with_hashed_addresses() {
    let keys = tempfile::tempdir().expect("tempdir");
    let mail = tempfile::tempdir().expect("tempdir");
    let (cert, _) = CertBuilder::general_purpose(Some("<alice@example.org>"))
        .generate()
        .expect("generate");
    testkit::sealgate::keys_import_ok(keys.path(), &cert.armored().to_vec().expect("armor"));
    let fingerprint = cert.fingerprint().to_hex();
    let next_hop = format!("maildir:{}", mail.path().display());
    let keystore = keys.path().display().to_string();
    let secure = mail.path().join("secure");
    std::fs::write(&secure, "boss@example.org\n").expect("write");
    let secure = secure.display().to_string();
    let sealgate = Sealgate::spawn(&[
        ("SEALGATE_NEXT_HOP", next_hop.as_str()),
        ("SEALGATE_KEYSTORE", keystore.as_str()),
        ("SEALGATE_SECURE_MAILBOXES", secure.as_str()),
        ("SEALGATE_TRUSTED_MTA", "mx.example.org"),
        ("SEALGATE_LOG_ADDRESSES", "hash"),
    ]);

    let message = b"From: sender@example.net\r\nSubject: summary\r\n\
        Message-ID: <1234.secret-host@laptop.example.net>\r\n\r\nhello\r\n";
    let mut client = Client::connect(sealgate.port());
    client.expect("LHLO client.example", "250");
    client.expect("XFORWARD IDENT=4fX0nb4Cymzl", "250");
    client.expect("MAIL FROM:<Sender@example.net>", "250");
    for rcpt in [
        "\"alice\"@example.org",
        "bob@example.org",
        "boss@example.org",
    ] {
        client.expect(&format!("RCPT TO:<{rcpt}>"), "250");
    }
    client.expect("DATA", "354");
    client.send_message(message);
    assert_codes(&client.reply(), "250", "alice");
    assert_codes(&client.reply(), "250", "bob");
    assert_codes(&client.reply(), "550 5.7.1", "boss");

    let line = sealgate.wait_for_log("message summary", WAIT);
    let log = sealgate.log();
    assert_eq!(log.matches("message summary").count(), 1, "{log}");
    assert!(line.contains(" INFO "), "{line}");
    let f = fields(&line);
    let hash = |a: &str| AddressLog::Hash.show(a).to_string();
    assert_eq!(field(&f, "queue_id"), Some("4fX0nb4Cymzl"), "{line}");
    assert_eq!(
        field(&f, "from"),
        Some(hash("sender@example.net").as_str()),
        "{line}"
    );
    assert_eq!(
        field(&f, "message_id"),
        Some(token(b"<1234.secret-host@laptop.example.net>").as_str()),
        "{line}"
    );
    assert_eq!(
        field(&f, "octets"),
        Some(message.len().to_string().as_str()),
        "{line}"
    );
    let expected = format!(
        "{}:250:delivered_encrypted:{fingerprint},{}:250:delivered_plain,{}:550:refused_no_tls",
        hash("alice@example.org"),
        hash("bob@example.org"),
        hash("boss@example.org"),
    );
    assert_eq!(field(&f, "recipients"), Some(expected.as_str()), "{line}");
    // Nothing in it names a person.
    for secret in [
        "example.org",
        "example.net",
        "secret-host",
        "alice",
        "Sender",
    ] {
        assert!(!line.contains(secret), "{secret} in {line}");
    }
    // A value with spaces is quoted (logfmt): the refusal's reply text stays one field.
    let refusal = log
        .lines()
        .find(|l| l.contains("recipient outcome") && l.contains("code=550"))
        .unwrap_or_else(|| panic!("no refusal line:\n{log}"));
    let reply = field(&fields(refusal), "reply")
        .unwrap_or_default()
        .to_string();
    assert!(
        reply.starts_with("550 5.7.1 ") && reply.contains("TLS required"),
        "{refusal}"
    );
    assert!(refusal.contains("reply=\"550 5.7.1 "), "{refusal}");
}

#[test]
fn a_next_hop_going_down_and_up_is_logged_once_each_way() {
    if !testkit::require("dovecot") {
        return;
    }
    let mut dovecot = Dovecot::start();
    let next_hop = format!("lmtp:127.0.0.1:{}", dovecot.lmtp_port);
    let sealgate = Sealgate::spawn(&[("SEALGATE_NEXT_HOP", next_hop.as_str())]);
    let message = b"Subject: hop\r\n\r\nhello\r\n";
    let deliver = |code: &str| {
        let mut client = Client::connect(sealgate.port());
        let replies = client.deliver("sender@example.net", &["user@example.org"], message);
        assert_codes(&replies[0], code, "delivery");
    };
    deliver("250");
    assert!(!sealgate.log().contains("next hop is down"));

    dovecot.stop();
    for _ in 0..3 {
        deliver("451 4.4.1");
    }
    let down = sealgate.wait_for_log("next hop is down", WAIT);
    assert!(down.contains(" WARN "), "{down}");
    let cause = field(&fields(&down), "cause")
        .unwrap_or_default()
        .to_string();
    assert!(
        cause.contains("refused") || cause.contains("Refused"),
        "{down}"
    );
    assert_eq!(
        sealgate.log().matches("next hop is down").count(),
        1,
        "{}",
        sealgate.log()
    );

    dovecot.restart();
    deliver("250");
    deliver("250");
    let up = sealgate.wait_for_log("next hop is up again", WAIT);
    assert!(up.contains(" WARN ") && up.contains("was="), "{up}");
    let log = sealgate.log();
    assert_eq!(log.matches("next hop is up again").count(), 1, "{log}");
    assert_eq!(log.matches("next hop is down").count(), 1, "{log}");
}

/// A next hop answering `421` (what Dovecot answers an open session while it shuts down,
/// here said by a proxy in front of the real Dovecot, on every session): Postfix's message is
/// deferred with that reply, sealgate logs one WARN naming it when the trouble starts and one
/// when the next hop works again, and after that the message is delivered, none lost.
#[test]
fn a_next_hop_answering_421_is_logged_once_each_way_and_the_mail_delivered_after() {
    if !testkit::require_all(&["dovecot", "postfix", "swaks"]) {
        return;
    }
    let dovecot = Dovecot::start();
    let proxy = FaultProxy::start(
        testkit::free_port(),
        dovecot.lmtp_port,
        true,
        Duration::from_secs(60),
        1,
    );
    let next_hop = format!("lmtp:127.0.0.1:{}", proxy.port);
    let sealgate = Sealgate::spawn(&[("SEALGATE_NEXT_HOP", next_hop.as_str())]);
    let postfix = Postfix::start(PostfixConfig {
        main_cf: vec![format!(
            "virtual_transport = lmtp:inet:{}",
            sealgate.lmtp_addr
        )],
        master_cf: Vec::new(),
    });
    let send = |to: &str, token: &str| {
        let port = postfix.smtp_port.to_string();
        let (ok, out) = swaks(&[
            "--server",
            "127.0.0.1",
            "--port",
            &port,
            "--from",
            "sender@example.net",
            "--to",
            to,
            "--body",
            token,
        ]);
        assert!(ok, "swaks: {out}");
    };
    // A delivery first, so that sealgate holds a pooled connection when the trouble starts.
    send("early@example.org", "token-421-early");
    postfix.wait_for_status("early@example.org", "sent", WAIT);

    proxy.close_sessions_with(Some(Reply::new(
        421,
        EnhancedCode::new(4, 3, 2),
        "vm Shutting down",
    )));
    send("late@example.org", "token-421-late");
    let deferred = postfix.wait_for_status("late@example.org", "deferred", WAIT);
    assert!(deferred.contains("421 4.3.2"), "{deferred}");
    let down = sealgate.wait_for_log("next hop is down", WAIT);
    assert!(down.contains(" WARN "), "{down}");
    let cause = field(&fields(&down), "cause")
        .unwrap_or_default()
        .to_string();
    assert!(cause.contains("421 4.3.2 vm Shutting down"), "{down}");
    // Postfix retries (every second or two here) meanwhile; still one line.
    let tries = proxy.record().closed_with_reply;
    testkit::wait_until("Postfix's retries to reach the next hop", WAIT, || {
        proxy.record().closed_with_reply >= tries + 2
    });
    assert_eq!(
        sealgate.log().matches("next hop is down").count(),
        1,
        "{}",
        sealgate.log()
    );

    proxy.close_sessions_with(None);
    postfix.flush();
    postfix.wait_for_status("late@example.org", "sent", WAIT);
    assert!(
        !postfix.log().contains("status=bounced"),
        "{}",
        postfix.log()
    );
    let inbox = dovecot.wait_for_inbox("late@example.org", 1, WAIT);
    assert!(String::from_utf8_lossy(&inbox[0]).contains("token-421-late"));
    let up = sealgate.wait_for_log("next hop is up again", WAIT);
    assert!(up.contains(" WARN "), "{up}");
    let was = field(&fields(&up), "was").unwrap_or_default().to_string();
    assert!(was.contains("421 4.3.2"), "{up}");
    let log = sealgate.log();
    assert_eq!(log.matches("next hop is down").count(), 1, "{log}");
    assert_eq!(log.matches("next hop is up again").count(), 1, "{log}");
    assert!(
        testkit::poll_until(WAIT, || postfix.queue_is_empty()),
        "queue not empty"
    );
}
