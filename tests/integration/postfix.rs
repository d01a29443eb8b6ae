//! sealgate between a real Postfix and its next hops, in both deployments README.md shows:
//! as the LMTP transport in front of Dovecot (or the embedded Maildir), and as an after-queue
//! content_filter with SMTP reinjection. Postfix's own log is the oracle for per-recipient
//! outcomes.

use std::process::Command;
use std::time::Duration;

use testkit::peers::{Dovecot, Postfix, PostfixConfig, swaks};
use testkit::{Maildir, Sealgate};

const WAIT: Duration = Duration::from_secs(60);

fn lmtp_transport_to(sealgate: &Sealgate) -> PostfixConfig {
    PostfixConfig {
        main_cf: vec![format!(
            "virtual_transport = lmtp:inet:127.0.0.1:{}",
            sealgate.port()
        )],
        master_cf: Vec::new(),
    }
}

#[test]
fn postfix_to_dovecot_through_sealgate_per_recipient_outcomes() {
    if !testkit::require_all(&["postfix", "dovecot", "swaks"]) {
        return;
    }
    let dovecot = Dovecot::start_with_users(&["alice@example.org", "bob@example.org"]);
    let next_hop = format!("lmtp:127.0.0.1:{}", dovecot.lmtp_port);
    let sealgate = Sealgate::spawn(&[("SEALGATE_NEXT_HOP", &next_hop)]);
    let postfix = Postfix::start(lmtp_transport_to(&sealgate));

    let port = postfix.smtp_port.to_string();
    let (ok, out) = swaks(&[
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--from",
        "sender@example.net",
        "--to",
        "alice@example.org,nobody@example.org,bob@example.org",
        "--header",
        "Subject: three recipients via sealgate",
        "--body",
        "token-3f9c1e",
    ]);
    assert!(ok, "swaks: {out}");

    // Two stored, one bounced with Dovecot's own reply relayed through sealgate.
    let alice = postfix.wait_for_status("alice@example.org", "sent", WAIT);
    postfix.wait_for_status("bob@example.org", "sent", WAIT);
    let nobody = postfix.wait_for_status("nobody@example.org", "bounced", WAIT);
    assert!(
        alice.contains(&format!("127.0.0.1[127.0.0.1]:{}", sealgate.port())),
        "{alice}"
    );
    assert!(nobody.contains("550 5.1.1"), "{nobody}");
    for user in ["alice@example.org", "bob@example.org"] {
        let inbox = dovecot.wait_for_inbox(user, 1, WAIT);
        assert_eq!(inbox.len(), 1, "{user}");
        let text = String::from_utf8_lossy(&inbox[0]);
        assert!(
            text.contains("Subject: three recipients via sealgate"),
            "{text}"
        );
        assert!(text.contains("token-3f9c1e"), "{text}");
    }
    assert!(!postfix.log().contains("to=<alice@example.org>, relay=none"));
}

#[test]
fn postfix_to_maildir_through_sealgate() {
    if !testkit::require_all(&["postfix", "swaks"]) {
        return;
    }
    let mail = Maildir::new();
    let next_hop = mail.next_hop();
    let sealgate = Sealgate::spawn(&[("SEALGATE_NEXT_HOP", &next_hop)]);
    let postfix = Postfix::start(lmtp_transport_to(&sealgate));
    let port = postfix.smtp_port.to_string();
    let (ok, out) = swaks(&[
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--from",
        "sender@example.net",
        "--to",
        "carol@example.org,dave@example.org",
        "--body",
        "token-maildir-81",
    ]);
    assert!(ok, "swaks: {out}");
    postfix.wait_for_status("carol@example.org", "sent", WAIT);
    postfix.wait_for_status("dave@example.org", "sent", WAIT);
    for user in ["carol@example.org", "dave@example.org"] {
        let mut stored = mail.messages(user);
        assert_eq!(stored.len(), 1, "{user}");
        let text = String::from_utf8(stored.remove(0)).expect("message");
        assert!(text.contains("token-maildir-81"));
        assert!(text.contains(&format!("Delivered-To: {user}\r\n")));
        // Postfix's own Received header came through untouched.
        assert!(
            text.contains("by mx.example.org (Postfix) with ESMTP id"),
            "{text}"
        );
        assert!(mail.tmp_is_empty(user));
    }
}

/// Postfix's smtp-source as the LMTP client: 200 messages over 5 sessions, all stored.
#[test]
fn smtp_source_200_messages_over_5_sessions() {
    if !testkit::require("smtp-source") {
        return;
    }
    let mail = Maildir::new();
    let next_hop = mail.next_hop();
    let sealgate = Sealgate::spawn(&[("SEALGATE_NEXT_HOP", &next_hop)]);
    let output = Command::new(testkit::bin_path("smtp-source"))
        .args([
            "-L",
            "-m",
            "200",
            "-s",
            "5",
            "-r",
            "1",
            "-l",
            "2000",
            "-f",
            "sender@example.net",
            "-t",
            "load@example.org",
            &format!("127.0.0.1:{}", sealgate.port()),
        ])
        .output()
        .expect("run smtp-source");
    assert!(
        output.status.success(),
        "smtp-source: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(mail.paths("load@example.org").len(), 200);
    let log = sealgate.log();
    let stored = log
        .lines()
        .filter(|l| l.contains("recipient outcome") && l.contains("code=250"))
        .count();
    assert_eq!(stored, 200, "{}", testkit::tail(&log, 20));
}

/// After-queue content_filter: Postfix → sealgate → reinjection smtpd → Dovecot, and the
/// reinjected message is not filtered again.
#[test]
fn content_filter_with_reinjection_and_no_loop() {
    if !testkit::require_all(&["postfix", "dovecot", "swaks"]) {
        return;
    }
    let dovecot = Dovecot::start();
    let reinject_port = testkit::free_port();
    let sealgate = Sealgate::spawn(&[(
        "SEALGATE_NEXT_HOP",
        &format!("smtp:127.0.0.1:{reinject_port}"),
    )]);
    let filter = format!("sealgate:inet:127.0.0.1:{}", sealgate.port());
    let postfix = Postfix::start(PostfixConfig {
        main_cf: vec![
            format!("virtual_transport = lmtp:inet:127.0.0.1:{}", dovecot.lmtp_port),
            format!("content_filter = {filter}"),
            "receive_override_options = no_address_mappings".into(),
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
        ],
    });
    let port = postfix.smtp_port.to_string();
    let (ok, out) = swaks(&[
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--from",
        "sender@example.net",
        "--to",
        "erin@example.org",
        "--body",
        "token-filter-5521",
    ]);
    assert!(ok, "swaks: {out}");
    let inbox = dovecot.wait_for_inbox("erin@example.org", 1, WAIT);
    let text = String::from_utf8_lossy(&inbox[0]);
    assert!(text.contains("token-filter-5521"));

    let log = postfix.log();
    let to_erin: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("to=<erin@example.org>") && l.contains("status=sent"))
        .collect();
    // Exactly two hops: once into sealgate, once (after reinjection) into Dovecot.
    assert_eq!(to_erin.len(), 2, "{}", to_erin.join("\n"));
    let via_filter = format!("127.0.0.1[127.0.0.1]:{}", sealgate.port());
    let via_dovecot = format!("127.0.0.1[127.0.0.1]:{}", dovecot.lmtp_port);
    assert_eq!(
        to_erin.iter().filter(|l| l.contains(&via_filter)).count(),
        1
    );
    assert_eq!(
        to_erin.iter().filter(|l| l.contains(&via_dovecot)).count(),
        1
    );
    // sealgate logged the queue ID Postfix sent with XFORWARD.
    let outcome = sealgate.wait_for_log("recipient outcome", WAIT);
    assert!(outcome.contains("erin@example.org"), "{outcome}");
    assert!(sealgate.log().contains("id="), "{}", sealgate.log());
    // Once through smtpd, once through reinjection, once Dovecot's: three Received headers.
    assert_eq!(text.matches("Received: ").count(), 3, "{text}");
}
