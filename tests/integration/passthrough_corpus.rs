//! Pass-through is byte-exact: every message in `corpus/messages` comes out of sealgate as it
//! went in, apart from the header lines the next hop adds at the top. Checked for both the
//! embedded Maildir and a real Dovecot (read back over IMAP).

use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::lmtp::{Client, assert_codes};
use testkit::peers::Dovecot;
use testkit::{Maildir, Sealgate};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/messages");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus/messages")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    paths.sort();
    let messages: Vec<(String, Vec<u8>)> = paths
        .iter()
        .map(|p| {
            let name = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            (name, std::fs::read(p).expect("read corpus message"))
        })
        .collect();
    assert!(
        messages.len() >= 30,
        "corpus has only {} messages",
        messages.len()
    );
    messages
}

/// What the next hop must store: the message as sent; SMTP's end-of-data gives a message
/// whose last line lacks its CRLF one (RFC 5321 4.1.1.4).
fn expected(message: &[u8]) -> Vec<u8> {
    let mut expected = message.to_vec();
    if !expected.is_empty() && !expected.ends_with(b"\r\n") {
        expected.extend_from_slice(b"\r\n");
    }
    expected
}

/// Asserts `stored` is `expected` below a block of header lines whose names are in `added`.
fn assert_passed_through(name: &str, stored: &[u8], expected: &[u8], added: &[&str]) {
    assert!(
        stored.ends_with(expected),
        "{name}: stored copy differs from what was sent ({} vs {} octets)",
        stored.len(),
        expected.len()
    );
    let prefix = String::from_utf8_lossy(&stored[..stored.len() - expected.len()]);
    for line in prefix.split_inclusive("\r\n") {
        let continuation = line.starts_with(' ') || line.starts_with('\t');
        let known = added.iter().any(|h| {
            line.len() > h.len()
                && line[..h.len()].eq_ignore_ascii_case(h)
                && line[h.len()..].starts_with(':')
        });
        assert!(
            continuation || known,
            "{name}: unexpected added line {line:?}"
        );
    }
}

#[test]
fn corpus_passes_byte_exact_into_maildir() {
    let mail = Maildir::new();
    let next_hop = mail.next_hop();
    let sealgate = Sealgate::spawn(&[("SEALGATE_NEXT_HOP", &next_hop)]);
    let mut client = Client::connect(sealgate.port());
    for (name, message) in corpus() {
        let rcpt = format!("{name}@example.org");
        let replies = client.deliver("sender@example.net", &[&rcpt], &message);
        assert_codes(&replies[0], "250", &name);
        client.expect("RSET", "250");
        let mut stored = mail.messages(&rcpt);
        assert_eq!(stored.len(), 1, "{name}");
        let stored = stored.remove(0);
        assert_passed_through(
            &name,
            &stored,
            &expected(&message),
            &["Return-Path", "Delivered-To"],
        );
    }
}

#[test]
fn corpus_passes_byte_exact_into_dovecot() {
    if !testkit::require("dovecot") {
        return;
    }
    let dovecot = Dovecot::start();
    let next_hop = format!("lmtp:127.0.0.1:{}", dovecot.lmtp_port);
    let sealgate = Sealgate::spawn(&[("SEALGATE_NEXT_HOP", &next_hop)]);
    let mut client = Client::connect(sealgate.port());
    let corpus = corpus();
    for (name, message) in &corpus {
        let rcpt = format!("{name}@example.org");
        let replies = client.deliver("sender@example.net", &[&rcpt], message);
        assert_codes(&replies[0], "250", name);
    }
    for (name, message) in &corpus {
        let rcpt = format!("{name}@example.org");
        let stored = dovecot.wait_for_inbox(&rcpt, 1, Duration::from_secs(30));
        assert_eq!(stored.len(), 1, "{name}");
        assert_passed_through(
            name,
            &stored[0],
            &expected(message),
            &["Return-Path", "Delivered-To", "Received"],
        );
    }
}
