//! One canonical address (issue 11 §3 and "Also") over LMTP, with keys made by GnuPG and a
//! Maildir next hop: quoted, differently cased and IDNA spellings of a key holder's address
//! all get her key (stored encrypted, decrypting with gpg) and her one Maildir folder; the
//! quoted spelling of a TLS-only mailbox is refused like the plain one; a folder name longer
//! than NAME_MAX is a permanent 550; a sender's `X-Sealgate-Encrypted` field survives on no
//! copy.

use testkit::lmtp::{Client, assert_codes};
use testkit::pgp::{Gpg, armored_part, expected_inner};
use testkit::{Maildir, Sealgate};

/// A sealgate with a key store, a Maildir and a secure mailbox file in temporary directories.
struct Setup {
    keys: tempfile::TempDir,
    mail: Maildir,
    secure: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let secure = tempfile::tempdir().expect("tempdir");
        std::fs::write(secure.path().join("mailboxes"), "boss@example.org\n").expect("write");
        Setup {
            keys: tempfile::tempdir().expect("tempdir"),
            mail: Maildir::new(),
            secure,
        }
    }

    fn spawn(&self) -> Sealgate {
        let next_hop = self.mail.next_hop();
        let keystore = self.keys.path().display().to_string();
        let mailboxes = self.secure.path().join("mailboxes").display().to_string();
        Sealgate::spawn(&[
            ("SEALGATE_NEXT_HOP", next_hop.as_str()),
            ("SEALGATE_KEYSTORE", keystore.as_str()),
            ("SEALGATE_SECURE_MAILBOXES", mailboxes.as_str()),
            ("SEALGATE_TRUSTED_MTA", "mx.example.org"),
        ])
    }

    /// The Maildir folders that exist, by name.
    fn folders(&self) -> Vec<String> {
        self.mail.folders()
    }

    fn stored(&self, folder: &str) -> Vec<Vec<u8>> {
        self.mail.messages(folder)
    }
}

/// One transaction, one recipient: the final reply.
fn deliver_one(sealgate: &Sealgate, rcpt: &str, message: &[u8]) -> sealgate_protocol::Reply {
    let mut client = Client::connect(sealgate.port());
    client.expect("LHLO client.example", "250");
    client.expect("MAIL FROM:<sender@example.net> SMTPUTF8", "250 2.1.0");
    client.expect(&format!("RCPT TO:<{rcpt}>"), "250 2.1.5");
    client.expect("DATA", "354");
    client.send_message(message);
    client.reply()
}

const FORGED: &str = "X-Sealgate-Encrypted: 00FORGED00\r\n";

fn message(token: &str) -> Vec<u8> {
    format!(
        "From: sender@example.net\r\nTo: someone@example.org\r\nSubject: {token}\r\n\
         {FORGED}x-sealgate-encrypted:\r\n folded forgery\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nbody {token}\r\n"
    )
    .into_bytes()
}

/// The `X-Sealgate-Encrypted` fields of a stored copy's header block (any case).
fn markers(stored: &[u8]) -> Vec<String> {
    let (block, _) = testkit::pgp::split_message(stored);
    testkit::pgp::header_fields(block)
        .into_iter()
        .map(|f| String::from_utf8_lossy(&f).into_owned())
        .filter(|f| f.to_ascii_lowercase().starts_with("x-sealgate-encrypted"))
        .collect()
}

#[test]
fn every_spelling_of_a_key_holder_gets_her_key_and_her_folder() {
    if !testkit::require("gpg") {
        return;
    }
    let gpg = Gpg::new();
    gpg.generate("Alice <alice@example.org>", "future-default", "default");
    gpg.generate("Bea <bea@bücher.example>", "future-default", "default");
    let setup = Setup::new();
    testkit::sealgate::keys_import_ok(setup.keys.path(), &gpg.export("alice@example.org"));
    testkit::sealgate::keys_import_ok(setup.keys.path(), &gpg.export("bea@bücher.example"));
    let sealgate = setup.spawn();
    let alice = gpg.fingerprint("alice@example.org");
    let bea = gpg.fingerprint("bea@bücher.example");

    let spellings = [
        ("alice@example.org", "alice@example.org", &alice),
        ("\"alice\"@example.org", "alice@example.org", &alice),
        ("\"al\\ice\"@example.org", "alice@example.org", &alice),
        ("Alice@EXAMPLE.org", "alice@example.org", &alice),
        ("bea@bücher.example", "bea@xn--bcher-kva.example", &bea),
        (
            "bea@xn--bcher-kva.example",
            "bea@xn--bcher-kva.example",
            &bea,
        ),
        (
            "BEA@XN--BCHER-KVA.example",
            "bea@xn--bcher-kva.example",
            &bea,
        ),
    ];
    for (i, (rcpt, folder, fingerprint)) in spellings.iter().enumerate() {
        let original = message(&format!("token-{i}"));
        let reply = deliver_one(&sealgate, rcpt, &original);
        assert_codes(&reply, "250", rcpt);
        let stored = setup.stored(folder);
        let earlier = spellings[..i]
            .iter()
            .filter(|(_, f, _)| f == folder)
            .count();
        assert_eq!(stored.len(), earlier + 1, "{rcpt}: not in {folder}");
        let copy = stored.last().expect("stored");
        let text = String::from_utf8_lossy(copy);
        assert!(
            !text.contains(&format!("body token-{i}")),
            "{rcpt}: plaintext stored"
        );
        // Our marker, once, naming the recipient's key; the forgeries are gone.
        let found = markers(copy);
        assert_eq!(found.len(), 1, "{rcpt}: {found:?}");
        assert!(
            found[0]
                .to_uppercase()
                .contains(&fingerprint.to_uppercase()),
            "{found:?}"
        );
        assert!(
            !text.contains("FORGED") && !text.contains("folded forgery"),
            "{text}"
        );
        let decrypted = gpg.decrypt(&armored_part(copy));
        assert!(decrypted.ok, "{rcpt}: {}", decrypted.status);
        assert!(
            decrypted.plaintext == expected_inner(&original),
            "{rcpt}: decrypted differs"
        );
    }
    // One folder per mailbox, however it was spelt.
    assert_eq!(
        setup.folders(),
        vec![
            "alice@example.org".to_string(),
            "bea@xn--bcher-kva.example".to_string()
        ]
    );
    assert_eq!(setup.stored("alice@example.org").len(), 4);
    assert_eq!(setup.stored("bea@xn--bcher-kva.example").len(), 3);
}

#[test]
fn a_keyless_copy_keeps_no_forged_marker() {
    let setup = Setup::new();
    let sealgate = setup.spawn();
    let original = message("keyless");
    for rcpt in ["bob@example.org", "\"Bob\"@example.org"] {
        assert_codes(&deliver_one(&sealgate, rcpt, &original), "250", rcpt);
    }
    let stored = setup.stored("bob@example.org");
    assert_eq!(stored.len(), 2, "{:?}", setup.folders());
    for copy in stored {
        assert!(
            markers(&copy).is_empty(),
            "{}",
            String::from_utf8_lossy(&copy)
        );
        let text = String::from_utf8_lossy(&copy);
        assert!(text.contains("body keyless"), "{text}");
        // Only the marker went: the rest of the header block is as sent.
        let without_forgery = String::from_utf8_lossy(&original)
            .replace(FORGED, "")
            .replace("x-sealgate-encrypted:\r\n folded forgery\r\n", "");
        assert!(text.ends_with(&without_forgery), "{text}");
    }
}

#[test]
fn every_spelling_of_a_tls_only_mailbox_needs_tls() {
    let setup = Setup::new();
    let sealgate = setup.spawn();
    // No Received field from the trusted MTA: no TLS evidence.
    let original = message("secure");
    for rcpt in [
        "boss@example.org",
        "\"boss\"@example.org",
        "\"b\\oss\"@Example.ORG",
        "BOSS@example.org",
    ] {
        let reply = deliver_one(&sealgate, rcpt, &original);
        assert_codes(&reply, "550 5.7.1", rcpt);
        assert!(
            reply.to_string().contains("TLS required"),
            "{rcpt}: {reply}"
        );
    }
    assert!(setup.folders().is_empty(), "{:?}", setup.folders());
}

#[test]
fn a_folder_name_longer_than_name_max_is_a_permanent_refusal() {
    let setup = Setup::new();
    let sealgate = setup.spawn();
    // 100 slashes become 300 octets of %2F in the folder name; the address itself is short
    // enough for the protocol (256).
    let long = format!("{}x@example.org", "/".repeat(100));
    let reply = deliver_one(&sealgate, &long, &message("long"));
    assert_codes(&reply, "550 5.1.3", "NAME_MAX");
    assert!(reply.to_string().contains("too long"), "{reply}");
    // A name that fits is stored.
    let fits = format!("{}x@example.org", "/".repeat(60));
    assert_codes(
        &deliver_one(&sealgate, &fits, &message("fits")),
        "250",
        "fits",
    );
    assert_eq!(setup.folders().len(), 1, "{:?}", setup.folders());
}
