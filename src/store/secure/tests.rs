use super::*;
use crate::message::received;
use crate::message::tls::{TlsEvidence, TlsVersion, tls_verdict};
use crate::store::watch::RACY_MARGIN;
use sealgate_protocol::{EnhancedCode, Reply};
use std::thread;
use std::time::Duration;

use TlsVersion::{Tls1_0, Tls1_1, Tls1_2, Tls1_3};

fn trusted() -> Vec<String> {
    vec!["mx.test.example".to_string()]
}

/// Postfix 3.7's Received field for a TLS 1.3 session, with
/// `smtpd_tls_received_header = yes` (reference §7.1, observed).
const TLS13: &str = "Received: from client.example.net (unknown [127.0.0.1])\r\n\
    \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n\
    \t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\r\n\
    \t(No client certificate requested)\r\n\
    \tby mx.test.example (Postfix) with ESMTPS id 79C45C8770;\r\n\
    \tSun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n";

const TLS11: &str = "Received: from old.example.net (old.example.net [192.0.2.7])\r\n\
    \t(using TLSv1.1 with cipher ECDHE-RSA-AES256-SHA (256/256 bits))\r\n\
    \t(No client certificate requested)\r\n\
    \tby mx.test.example (Postfix) with ESMTPS id 1A2B3C4D5E;\r\n\
    \tSun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n";

/// TLS with Postfix's default `smtpd_tls_received_header = no`: only the protocol word.
const ESMTPS: &str = "Received: from client.example.net (unknown [127.0.0.1])\r\n\
    \tby mx.test.example (Postfix) with ESMTPS id 79C45C8771;\r\n\
    \tSun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n";

const ESMTPSA: &str = "Received: from [192.168.1.20] (unknown [192.0.2.9])\r\n\
    \t(using TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits))\r\n\
    \t(No client certificate requested)\r\n\
    \tby mx.test.example (Postfix) with ESMTPSA id 5E6F7A8B9C;\r\n\
    \tSun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n";

const PLAIN: &str = "Received: from client.example.net (unknown [127.0.0.1])\r\n\
    \tby mx.test.example (Postfix) with ESMTP id 3D78AC876E\r\n\
    \tfor <user@example.com>; Sun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n";

const UNTRUSTED_TLS13: &str = "Received: from client.example.net (unknown [127.0.0.1])\r\n\
    \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\
    \tby mx.elsewhere.example (Postfix) with ESMTPS id 79C45C8772;\r\n\
    \tSun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n";

/// A HELO of `x (using TLSv1.3 with cipher X)` copied verbatim (Postfix would replace the
/// spaces and parentheses; a less careful MTA might not), with `with ESMTP`.
const HELO_INJECTED: &str = "Received: from x (using TLSv1.3 with cipher X) (unknown [192.0.2.66])\r\n\
    \tby mx.test.example (Postfix) with ESMTP id 3D78AC8770\r\n\
    \tfor <user@example.com>; Sun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n";

/// A HELO of `x by mx.test.example with ESMTPS (using TLSv1.3 ...)` copied verbatim: its
/// `by` and `with` words must not stand in for the MTA's own `with ESMTP`.
const HELO_CLAUSES: &str = "Received: from x by mx.test.example with ESMTPS \
    (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384) (unknown [192.0.2.66])\r\n\
    \tby mx.test.example (Postfix) with ESMTP id 3D78AC8771;\r\n\
    \tSun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n";

/// The same HELO before an MTA that writes no protocol word.
const HELO_CLAUSES_NO_WITH: &str = "Received: from x by mx.test.example with ESMTPS \
    (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384) (unknown [192.0.2.66])\r\n\
    \tby mx.test.example id 3D78AC8772;\r\n\
    \tSun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n";

const REST: &str = "From: a@example.net\r\nSubject: hi\r\n\r\n";

fn tls(version: Option<TlsVersion>, cipher: Option<&str>) -> TlsEvidence {
    TlsEvidence::Tls {
        version,
        cipher: cipher.map(str::to_string),
    }
}

/// One header block per case, and what it proves.
fn evidence_cases() -> Vec<(&'static str, String, TlsEvidence)> {
    let aes = Some("TLS_AES_256_GCM_SHA384");
    vec![
        (
            "TLS 1.3, multi-line comment",
            format!("{TLS13}{REST}"),
            tls(Some(Tls1_3), aes),
        ),
        (
            "TLS 1.1",
            format!("{TLS11}{REST}"),
            tls(Some(Tls1_1), Some("ECDHE-RSA-AES256-SHA")),
        ),
        (
            "ESMTPS without a comment",
            format!("{ESMTPS}{REST}"),
            tls(None, None),
        ),
        (
            "ESMTPSA",
            format!("{ESMTPSA}{REST}"),
            tls(Some(Tls1_2), Some("ECDHE-RSA-AES256-GCM-SHA384")),
        ),
        (
            "plain ESMTP",
            format!("{PLAIN}{REST}"),
            TlsEvidence::Plaintext,
        ),
        (
            "untrusted by",
            format!("{UNTRUSTED_TLS13}{REST}"),
            TlsEvidence::Plaintext,
        ),
        (
            "forged TLS Received below a real plain one",
            format!("{PLAIN}{TLS13}{REST}"),
            TlsEvidence::Plaintext,
        ),
        ("no Received", REST.to_string(), TlsEvidence::Plaintext),
        ("empty header block", String::new(), TlsEvidence::Plaintext),
        (
            "milter header above the real Received",
            format!("X-Milter: inserted\r\n{TLS13}{REST}"),
            tls(Some(Tls1_3), aes),
        ),
        (
            "milter header above a real plain Received",
            format!("X-Milter: inserted\r\n{PLAIN}{TLS13}{REST}"),
            TlsEvidence::Plaintext,
        ),
        (
            "TLS comment injected through HELO, with ESMTP",
            format!("{HELO_INJECTED}{REST}"),
            TlsEvidence::Plaintext,
        ),
        (
            "by/with clauses injected through HELO, real with ESMTP",
            format!("{HELO_CLAUSES}{REST}"),
            TlsEvidence::Plaintext,
        ),
        (
            "by/with clauses injected through HELO, no real protocol word",
            format!("{HELO_CLAUSES_NO_WITH}{REST}"),
            TlsEvidence::Plaintext,
        ),
    ]
}

#[test]
fn evidence_from_postfix_received_fields() {
    // The parser does see the injected comment: only the `with ESMTP` rule refuses it.
    let injected = received::first(HELO_INJECTED.as_bytes()).unwrap();
    assert!(injected.tls.is_some() && !injected.with_tls());
    for (name, headers, expected) in evidence_cases() {
        let evidence = TlsEvidence::from_received(headers.as_bytes(), &trusted());
        assert_eq!(evidence, expected, "{name}");
    }
}

#[test]
fn evidence_from_macros() {
    let cases = [
        (None, None, TlsEvidence::Plaintext),
        (Some(""), None, TlsEvidence::Plaintext),
        // Postfix never sends a cipher without a version: fail closed.
        (None, Some("TLS_AES_256_GCM_SHA384"), TlsEvidence::Plaintext),
        (
            Some("TLSv1.3"),
            Some("TLS_AES_256_GCM_SHA384"),
            tls(Some(Tls1_3), Some("TLS_AES_256_GCM_SHA384")),
        ),
        (Some("TLSv1"), None, tls(Some(Tls1_0), None)),
        (Some("TLSv1.4"), Some(""), tls(None, None)),
    ];
    for (version, cipher, expected) in cases {
        assert_eq!(
            TlsEvidence::from_macros(version, cipher),
            expected,
            "{version:?} {cipher:?}"
        );
    }
}

fn reply_text(result: Result<(), Reply>) -> Option<String> {
    result.err().map(|reply| {
        assert_eq!(reply.code, 550);
        assert_eq!(reply.enhanced, Some(EnhancedCode::new(5, 7, 1)));
        reply.lines.join("\n")
    })
}

/// Refused (true) or accepted (false) for min = TLSv1, 1.1, 1.2, 1.3.
fn verdict_row(evidence: &TlsEvidence) -> [bool; 4] {
    [Tls1_0, Tls1_1, Tls1_2, Tls1_3].map(|min| tls_verdict("a@x.org", evidence, min).is_err())
}

#[test]
fn verdicts_for_each_minimum_version() {
    let cases = [
        (TlsEvidence::Plaintext, [true, true, true, true]),
        (tls(Some(TlsVersion::Ssl3), None), [true, true, true, true]),
        (tls(Some(Tls1_0), None), [false, true, true, true]),
        (tls(Some(Tls1_1), None), [false, false, true, true]),
        (tls(Some(Tls1_2), None), [false, false, false, true]),
        (tls(Some(Tls1_3), None), [false, false, false, false]),
        // `with ESMTPS` without a version: our MTA says TLS, so accepted.
        (tls(None, None), [false, false, false, false]),
    ];
    for (evidence, expected) in cases {
        assert_eq!(verdict_row(&evidence), expected, "{evidence}");
    }
}

#[test]
fn reply_texts_say_why() {
    assert_eq!(
        reply_text(tls_verdict(
            "User@Secure.example.org",
            &TlsEvidence::Plaintext,
            Tls1_2
        ))
        .unwrap(),
        "<User@Secure.example.org>: TLS required for this address; \
         no TLS evidence from a trusted MTA"
    );
    assert_eq!(
        reply_text(tls_verdict(
            "a@secure.example.org",
            &tls(Some(Tls1_1), None),
            Tls1_2
        ))
        .unwrap(),
        "<a@secure.example.org>: TLS required for this address; \
         received with TLSv1.1, at least TLSv1.2 required"
    );
    assert_eq!(
        reply_text(tls_verdict("a@x.org", &tls(Some(Tls1_2), None), Tls1_2)),
        None
    );
}

/// The milter and the LMTP stage must agree: the same session described as a Received
/// field and as macros gives the same evidence, hence the same verdict for every minimum.
#[test]
fn received_and_macros_agree() {
    let cases: [(String, Option<&str>, Option<&str>); 6] = [
        (
            format!("{TLS13}{REST}"),
            Some("TLSv1.3"),
            Some("TLS_AES_256_GCM_SHA384"),
        ),
        (
            format!("{TLS11}{REST}"),
            Some("TLSv1.1"),
            Some("ECDHE-RSA-AES256-SHA"),
        ),
        (
            format!("{ESMTPSA}{REST}"),
            Some("TLSv1.2"),
            Some("ECDHE-RSA-AES256-GCM-SHA384"),
        ),
        (format!("{PLAIN}{REST}"), None, None),
        (REST.to_string(), None, None),
        // A version neither path knows: the Received field names none.
        (format!("{ESMTPS}{REST}"), Some("TLSv1.4"), None),
    ];
    for (headers, version, cipher) in cases {
        let received = TlsEvidence::from_received(headers.as_bytes(), &trusted());
        let macros = TlsEvidence::from_macros(version, cipher);
        assert_eq!(received, macros, "{headers}");
        for min in [Tls1_0, Tls1_1, Tls1_2, Tls1_3] {
            assert_eq!(
                reply_text(tls_verdict("a@secure.example.org", &received, min)),
                reply_text(tls_verdict("a@secure.example.org", &macros, min)),
                "{headers} {min}"
            );
        }
    }
}

fn domains() -> Vec<(String, String)> {
    vec![
        ("secure.example.org".into(), "example.org".into()),
        ("Vault.Example.NET".into(), "vault.example.net".into()),
        (
            "sicher.xn--bcher-kva.example".into(),
            "xn--bcher-kva.example".into(),
        ),
    ]
}

#[test]
fn secure_twins_and_domains() {
    let secure = SecureAddresses::new(domains(), None).unwrap();
    let cases = [
        ("user@secure.example.org", Some("user@example.org")),
        ("User@SECURE.Example.org", Some("User@example.org")),
        ("user+tag@secure.example.org", Some("user+tag@example.org")),
        ("user@secure.example.org.", Some("user@example.org")),
        ("\"a@b\"@secure.example.org", Some("\"a@b\"@example.org")),
        ("Boss@vault.example.net", Some("Boss@vault.example.net")),
        ("boss@VAULT.example.net", Some("boss@vault.example.net")),
        ("\"user\"@secure.example.org", Some("\"user\"@example.org")),
        ("u@Sicher.Bücher.example", Some("u@xn--bcher-kva.example")),
        ("user@example.org", None),
        ("user@sub.secure.example.org", None),
        ("user@notsecure.example.org", None),
        ("postmaster", None),
        ("@secure.example.org", None),
    ];
    for (address, expected) in cases {
        assert_eq!(secure.classify(address).as_deref(), expected, "{address}");
    }
    assert!(!secure.is_empty());
    assert!(SecureAddresses::new(Vec::new(), None).unwrap().is_empty());
}

#[test]
fn mailbox_file_is_parsed_and_reloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("secure_mailboxes");
    fs::write(
        &path,
        "# TLS-only mailboxes\n\
         \n\
         Secret@Example.org\n\
         \t boss@example.com   # the boss\n\
         not an address\n\
         foo#bar@example.net\n",
    )
    .unwrap();
    let secure = SecureAddresses::new(domains(), Some(path.clone())).unwrap();
    let cases = [
        ("secret@example.org", Some("secret@example.org")),
        ("SECRET@EXAMPLE.ORG", Some("SECRET@example.org")),
        ("secret+news@example.org", Some("secret+news@example.org")),
        ("boss@example.com", Some("boss@example.com")),
        ("foo#bar@example.net", Some("foo#bar@example.net")),
        // Quoted spellings of a listed mailbox are that mailbox (issue 11 §3).
        ("\"secret\"@example.org", Some("\"secret\"@example.org")),
        ("\"se\\cret\"@Example.org", Some("\"se\\cret\"@example.org")),
        ("<\"Boss\"@example.com>", Some("\"Boss\"@example.com")),
        ("\"secret other\"@example.org", None),
        ("other@example.org", None),
        ("secretary@example.org", None),
        ("not", None),
        ("user@secure.example.org", Some("user@example.org")),
    ];
    for (address, expected) in cases {
        assert_eq!(secure.classify(address).as_deref(), expected, "{address}");
    }

    // Unchanged file: nothing changes, whether the stamp is trusted yet or not.
    assert!(!secure.reload(false).unwrap());
    assert!(!secure.reload(true).unwrap());

    // Same size, same second: still noticed (the reading was racy).
    fs::write(&path, "Secret@Example.net\n").unwrap();
    assert!(secure.reload(false).unwrap());
    assert_eq!(
        secure.classify("secret@example.net").as_deref(),
        Some("secret@example.net")
    );
    assert_eq!(secure.classify("secret@example.org"), None);
    assert!(!secure.reload(false).unwrap());

    // Replaced by rename, as editors do.
    let next = tmp.path().join("next");
    fs::write(&next, "new@example.org\n").unwrap();
    fs::rename(&next, &path).unwrap();
    assert!(secure.reload(false).unwrap());
    assert!(secure.classify("new@example.org").is_some());

    // A file that disappears keeps the previous list: fail closed.
    fs::remove_file(&path).unwrap();
    assert!(matches!(
        secure.reload(false),
        Err(PolicyError::Read { .. })
    ));
    assert!(secure.classify("new@example.org").is_some());
    assert!(matches!(
        SecureAddresses::new(domains(), Some(path)),
        Err(PolicyError::Read { .. })
    ));
}

#[test]
fn stable_stamp_skips_the_reread() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("secure_mailboxes");
    fs::write(&path, "a@example.org\n").unwrap();
    let old = SystemTime::now() - 2 * RACY_MARGIN;
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let secure = SecureAddresses::new(Vec::new(), Some(path.clone())).unwrap();
    // A change that keeps time, size and inode is not seen without force: the stamp is
    // trusted, so the file is not read at all.
    let file = fs::File::options().write(true).open(&path).unwrap();
    io::Write::write_all(&mut &file, b"b").unwrap();
    file.set_modified(old).unwrap();
    assert!(!secure.reload(false).unwrap());
    assert!(secure.classify("a@example.org").is_some());
    assert!(secure.reload(true).unwrap());
    assert!(secure.classify("b@example.org").is_some());
}

#[test]
fn watcher_picks_up_changes_and_ends_with_the_last_arc() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("secure_mailboxes");
    fs::write(&path, "a@example.org\n").unwrap();
    let secure = Arc::new(SecureAddresses::new(Vec::new(), Some(path.clone())).unwrap());
    watch::watch(secure.clone(), watch::MIN_WATCH_INTERVAL);
    fs::write(&path, "a@example.org\nb@example.org\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while secure.classify("b@example.org").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "watcher did not reload"
        );
        thread::sleep(watch::MIN_WATCH_INTERVAL);
    }
    let weak = Arc::downgrade(&secure);
    drop(secure);
    // The watcher holds only a Weak between polls (and an Arc during one).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while weak.upgrade().is_some() {
        assert!(std::time::Instant::now() < deadline, "watcher kept the Arc");
        thread::sleep(watch::MIN_WATCH_INTERVAL);
    }
}
