//! Self-test of the integration-test harness (`testkit`): real Postfix and Dovecot
//! instances, without sealgate. If these fail, fix the harness or the machine before looking
//! at sealgate's own tests.

use std::time::{Duration, Instant};

use testkit::peers::{Dovecot, Postfix, PostfixConfig, swaks};

/// Upper bound for a delivery that should take well under a second.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

/// The harness runs the binary cargo built for this test run (testkit cannot use
/// `env!("CARGO_BIN_EXE_sealgate")` itself: cargo sets it only for the package's own tests).
#[test]
fn testkit_runs_the_binary_cargo_built() {
    let expected = std::fs::canonicalize(env!("CARGO_BIN_EXE_sealgate")).expect("the binary");
    let found = std::fs::canonicalize(testkit::sealgate::binary()).expect("testkit's binary");
    assert_eq!(found, expected);
}

/// LMTP straight into Dovecot, read back over IMAP.
#[test]
fn dovecot_lmtp_delivery_is_readable_over_imap() {
    if !testkit::require_all(&["dovecot", "swaks", "python3"]) {
        return;
    }
    let started = Instant::now();
    let dovecot = Dovecot::start();

    let subject = "harness selftest: dovecot lmtp";
    let server = format!("127.0.0.1:{}", dovecot.lmtp_port);
    let (ok, out) = swaks(&[
        "--protocol",
        "LMTP",
        "--server",
        &server,
        "--from",
        "sender@example.com",
        "--to",
        "a@example.org",
        "--header",
        &format!("Subject: {subject}"),
    ]);
    assert!(ok, "swaks LMTP delivery failed:\n{out}");

    let messages = dovecot.wait_for_inbox("a@example.org", 1, DELIVERY_TIMEOUT);
    assert_eq!(messages.len(), 1, "expected exactly one message");
    let text = String::from_utf8_lossy(&messages[0]);
    assert!(
        text.contains(&format!("Subject: {subject}\r\n")),
        "subject missing in:\n{text}"
    );
    eprintln!(
        "dovecot_lmtp_delivery_is_readable_over_imap: {:?}",
        started.elapsed()
    );
}

/// With an explicit user list, Dovecot rejects unknown recipients at RCPT and still
/// delivers to known ones.
#[test]
fn dovecot_with_users_rejects_unknown_recipient() {
    if !testkit::require_all(&["dovecot", "swaks", "python3"]) {
        return;
    }
    let started = Instant::now();
    let dovecot = Dovecot::start_with_users(&["alice@example.org"]);
    let server = format!("127.0.0.1:{}", dovecot.lmtp_port);

    let (ok, out) = swaks(&[
        "--protocol",
        "LMTP",
        "--server",
        &server,
        "--to",
        "bob@example.org",
    ]);
    assert!(!ok, "swaks should report the rejected RCPT:\n{out}");
    assert!(
        out.contains("550 5.1.1"),
        "expected `550 5.1.1 User doesn't exist` in:\n{out}"
    );

    let (ok, out) = swaks(&[
        "--protocol",
        "LMTP",
        "--server",
        &server,
        "--to",
        "alice@example.org",
    ]);
    assert!(ok, "delivery to the known user failed:\n{out}");
    let messages = dovecot.wait_for_inbox("alice@example.org", 1, DELIVERY_TIMEOUT);
    assert_eq!(messages.len(), 1, "expected exactly one message");
    eprintln!(
        "dovecot_with_users_rejects_unknown_recipient: {:?}",
        started.elapsed()
    );
}

/// SMTP into Postfix, which hands the mail to Dovecot over LMTP (no sealgate in between).
#[test]
fn postfix_delivers_to_dovecot_over_lmtp() {
    if !testkit::require_all(&["postfix", "postqueue", "dovecot", "swaks", "python3"]) {
        return;
    }
    let started = Instant::now();
    let dovecot = Dovecot::start();
    let postfix = Postfix::start(PostfixConfig {
        main_cf: vec![format!(
            "virtual_transport = lmtp:inet:127.0.0.1:{}",
            dovecot.lmtp_port
        )],
        ..PostfixConfig::default()
    });

    let subject = "harness selftest: postfix to dovecot";
    let server = format!("127.0.0.1:{}", postfix.smtp_port);
    let (ok, out) = swaks(&[
        "--server",
        &server,
        "--from",
        "sender@example.com",
        "--to",
        "alice@example.org",
        "--header",
        &format!("Subject: {subject}"),
    ]);
    assert!(ok, "swaks SMTP submission failed:\n{out}");

    let line = postfix.wait_for_status("alice@example.org", "sent", DELIVERY_TIMEOUT);
    assert!(
        line.contains(&format!(":{}", dovecot.lmtp_port)),
        "relayed elsewhere: {line}"
    );
    let messages = dovecot.wait_for_inbox("alice@example.org", 1, DELIVERY_TIMEOUT);
    let text = String::from_utf8_lossy(&messages[0]);
    assert!(
        text.contains(&format!("Subject: {subject}\r\n")),
        "subject missing in:\n{text}"
    );
    assert!(
        text.contains("by mx.example.org (Postfix)"),
        "no Postfix Received header:\n{text}"
    );
    testkit::wait_until("Postfix queue to drain", DELIVERY_TIMEOUT, || {
        postfix.queue_is_empty()
    });
    eprintln!(
        "postfix_delivers_to_dovecot_over_lmtp: {:?}",
        started.elapsed()
    );
}
