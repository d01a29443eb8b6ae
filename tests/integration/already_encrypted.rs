//! Already-encrypted mail made by the real tools at test time: GnuPG (PGP/MIME and inline),
//! sq (PGP/MIME), `openssl smime -encrypt` and `openssl cms -encrypt` (enveloped and
//! authEnveloped, DER in base64, also streamed with indefinite lengths). Each reaches a keyed
//! recipient through the LMTP server and is stored byte for byte as sent; large ones also
//! show that genuine ciphertext never trips the verifier's randomness test. The forged forms
//! of `corpus/encrypted/not` are in `encryption.rs` (stored encrypted, decrypting to
//! the original).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use testkit::lmtp::{Client, assert_codes};
use testkit::pgp::{Gpg, Sq};
use testkit::{Maildir, Sealgate};

/// Large enough that every verifier block and partial length is exercised, small enough to
/// keep the test quick on two shared cores.
const LARGE: usize = 3 << 20;

/// LF line ends (as the tools write) to CRLF.
fn crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    for &b in data {
        if b == b'\n' {
            out.push(b'\r');
        }
        if b != b'\r' {
            out.push(b);
        }
    }
    out
}

fn outer(subject: &str) -> String {
    format!(
        "From: Carol <carol@example.net>\r\nTo: Alice <alice@example.org>\r\n\
         Subject: {subject}\r\nDate: Wed, 02 Dec 2026 09:00:00 +0000\r\n\
         Message-ID: <{subject}@example.net>\r\n"
    )
}

/// Thunderbird's PGP/MIME layout around an armored message.
fn pgp_mime(subject: &str, armored: &[u8]) -> Vec<u8> {
    let b = "------------tb7Xq2Zk9LmN4pR8sT1vW3yA";
    let mut m = format!(
        "{}MIME-Version: 1.0\r\nContent-Type: multipart/encrypted;\r\n \
         protocol=\"application/pgp-encrypted\";\r\n boundary=\"{b}\"\r\n\r\n\
         This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n--{b}\r\n\
         Content-Type: application/pgp-encrypted\r\n\
         Content-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n--{b}\r\n\
         Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
         Content-Description: OpenPGP encrypted message\r\n\
         Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n",
        outer(subject)
    )
    .into_bytes();
    m.extend(crlf(armored));
    m.extend(format!("\r\n--{b}--\r\n").as_bytes());
    m
}

/// Inline PGP: a text/plain message that is only the armored block.
fn inline(subject: &str, armored: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "{}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
        outer(subject)
    )
    .into_bytes();
    m.extend(crlf(armored));
    m
}

/// What OpenSSL writes (its own MIME header block and the base64 body) under our fields.
fn openssl_message(subject: &str, tool_output: &[u8]) -> Vec<u8> {
    let mut m = outer(subject).into_bytes();
    m.extend(crlf(tool_output));
    m
}

fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(testkit::bin_path("openssl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openssl");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&data);
    });
    let output = child.wait_with_output().expect("openssl");
    let _ = writer.join();
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// An inner entity of `size` octets: readable text, which only encryption makes random.
fn entity(size: usize) -> Vec<u8> {
    let mut e = b"Content-Type: text/plain; charset=us-ascii\r\n\r\n".to_vec();
    let line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n";
    while e.len() < size {
        e.extend_from_slice(line);
    }
    e
}

#[test]
fn genuine_messages_from_gpg_sq_and_openssl_pass_through_byte_exact() {
    if !testkit::require_all(&["gpg", "sq", "openssl"]) {
        return;
    }
    let gpg = Gpg::new();
    gpg.generate("Alice <alice@example.org>", "future-default", "default");
    let alice = gpg.export("alice@example.org");
    let sq = Sq::new();

    // A self-signed S/MIME certificate for Alice.
    let x509 = tempfile::tempdir().expect("tempdir");
    let cert: PathBuf = x509.path().join("alice.pem");
    let key = x509.path().join("alice.key");
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=alice@example.org",
            "-days",
            "2",
            "-keyout",
            key.to_str().expect("path"),
            "-out",
            cert.to_str().expect("path"),
        ],
        b"",
    );
    let cert = cert.to_str().expect("path");

    let small = entity(200);
    let large = entity(LARGE);
    let mut messages: Vec<(&str, Vec<u8>)> = vec![
        (
            "gpg-pgp-mime",
            pgp_mime("gpg-pgp-mime", &gpg.encrypt("alice@example.org", &small)),
        ),
        (
            "gpg-pgp-mime-large",
            pgp_mime(
                "gpg-pgp-mime-large",
                &gpg.encrypt("alice@example.org", &large),
            ),
        ),
        (
            "gpg-inline",
            inline("gpg-inline", &gpg.encrypt("alice@example.org", b"hello\n")),
        ),
        (
            "sq-pgp-mime",
            pgp_mime("sq-pgp-mime", &sq.encrypt(&alice, &small)),
        ),
        (
            "sq-pgp-mime-large",
            pgp_mime("sq-pgp-mime-large", &sq.encrypt(&alice, &large)),
        ),
    ];
    let openssl_cases: [(&str, &[&str], &[u8]); 5] = [
        ("openssl-smime", &["smime", "-encrypt", "-aes256"], &small),
        (
            "openssl-smime-stream-large",
            &["smime", "-encrypt", "-aes256", "-stream"],
            &large,
        ),
        ("openssl-cms", &["cms", "-encrypt", "-aes256"], &small),
        (
            "openssl-cms-gcm",
            &["cms", "-encrypt", "-aes-256-gcm"],
            &small,
        ),
        (
            "openssl-cms-stream-large",
            &["cms", "-encrypt", "-aes-128-cbc", "-stream"],
            &large,
        ),
    ];
    for (name, args, input) in openssl_cases {
        let mut args = args.to_vec();
        if args[0] == "cms" {
            args.extend(["-recip", cert]);
        } else {
            args.push(cert);
        }
        messages.push((name, openssl_message(name, &openssl(&args, input))));
    }

    let keys = tempfile::tempdir().expect("tempdir");
    let mail = Maildir::new();
    let (ok, out) = testkit::sealgate::keys_import(keys.path(), &alice);
    assert!(ok, "keys import: {out}");
    let next_hop = mail.next_hop();
    let keystore = keys.path().display().to_string();
    let sealgate = Sealgate::spawn(&[
        ("SEALGATE_NEXT_HOP", &next_hop),
        ("SEALGATE_KEYSTORE", &keystore),
        ("SEALGATE_MAX_INSPECT_SIZE", "8M"),
    ]);
    let mut client = Client::connect(sealgate.port());
    for (name, message) in &messages {
        let _ = std::fs::remove_dir_all(mail.path().join("alice@example.org"));
        let reply = &client.deliver("carol@example.net", &["alice@example.org"], message)[0];
        assert_codes(reply, "250", name);
        client.expect("RSET", "250");
        let mut stored = mail.messages("alice@example.org");
        assert_eq!(stored.len(), 1, "{name}");
        let stored = stored.remove(0);
        assert!(
            stored.ends_with(message),
            "{name}: not stored as sent ({} octets stored, {} sent)",
            stored.len(),
            message.len()
        );
        assert!(
            !String::from_utf8_lossy(&stored).contains("X-Sealgate-Encrypted"),
            "{name}: encrypted again"
        );
    }
    // The decision is visible in the log, naming the form.
    let log = sealgate.log();
    for form in ["form=pgp/mime", "form=s/mime", "form=\"inline pgp\""] {
        assert!(log.contains(form), "no {form} in the log:\n{log}");
    }
}

/// Forged look-alikes are encrypted, and each is visible: a log line naming the broken rule
/// and `sealgate_unverified_encrypted_total{reason}`; ordinary mail counts for neither.
#[test]
fn forged_look_alikes_are_encrypted_logged_and_counted() {
    if !testkit::require("gpg") {
        return;
    }
    let gpg = Gpg::new();
    gpg.generate("Alice <alice@example.org>", "future-default", "default");
    let keys = tempfile::tempdir().expect("tempdir");
    let mail = Maildir::new();
    let (ok, out) = testkit::sealgate::keys_import(keys.path(), &gpg.export("alice@example.org"));
    assert!(ok, "keys import: {out}");
    let next_hop = mail.next_hop();
    let keystore = keys.path().display().to_string();
    let sealgate = Sealgate::spawn(&[
        ("SEALGATE_NEXT_HOP", &next_hop),
        ("SEALGATE_KEYSTORE", &keystore),
    ]);
    let not = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/encrypted/not");
    let cases = [
        ("17-pgp-mime-extra-part.eml", "mime"),
        ("21-armor-comment-header.eml", "armor"),
        ("30-sed-packet.eml", "packets"),
        ("33-seipd-printable-body.eml", "not_random"),
        ("37-cms-plaintext-content.eml", "not_random"),
        ("36-cms-signed-labelled-enveloped.eml", "cms"),
    ];
    let mut client = Client::connect(sealgate.port());
    let plain = format!("{}\r\nJust a plain note.\r\n", outer("plain"));
    let reply = &client.deliver(
        "carol@example.net",
        &["alice@example.org"],
        plain.as_bytes(),
    )[0];
    assert_codes(reply, "250", "plain");
    client.expect("RSET", "250");
    for (file, _) in cases {
        let message = std::fs::read(not.join(file)).expect("corpus");
        let reply = &client.deliver("carol@example.net", &["alice@example.org"], &message)[0];
        assert_codes(reply, "250", file);
        client.expect("RSET", "250");
    }
    let stored = mail.messages("alice@example.org");
    assert_eq!(stored.len(), cases.len() + 1);
    for copy in &stored {
        let text = String::from_utf8_lossy(copy);
        assert!(
            text.contains("X-Sealgate-Encrypted: "),
            "not encrypted:\n{text}"
        );
        for secret in ["harbour", "door code", "Opaque-signed", "plain note"] {
            assert!(
                !text.contains(secret),
                "{secret:?} stored in clear:\n{text}"
            );
        }
    }
    let (status, metrics) = sealgate.http_get("/metrics");
    assert_eq!(status, 200);
    let count = |reason: &str| -> usize {
        let series = format!("sealgate_unverified_encrypted_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    for reason in ["mime", "armor", "packets", "cms"] {
        assert_eq!(count(reason), 1, "{reason}\n{metrics}");
    }
    assert_eq!(count("not_random"), 2, "{metrics}");
    assert_eq!(
        count("not_an_encrypted_form"),
        0,
        "ordinary mail is not counted"
    );
    let log = sealgate.log();
    assert_eq!(
        log.matches("looks encrypted but is not verified: encrypting")
            .count(),
        cases.len(),
        "{log}"
    );
    assert!(log.contains("text in the preamble") || log.contains("not exactly two parts"));
}
