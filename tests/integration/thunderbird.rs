//! Thunderbird's own OpenPGP engine decrypts what sealgate stores: the librnp.so shipped in
//! Debian's thunderbird package (`scripts/thunderbird-librnp` extracts it into
//! `target/thunderbird/`), driven through its C FFI by `tests/thunderbird/librnp.py` (ctypes)
//! with the calls Thunderbird makes. librnp generates a Cv25519 and an RSA-3072 key the way
//! Thunderbird's "generate new key" does; `sealgate keys import` takes their certificates;
//! each stored copy decrypts with its owner's keyring to the original Content-* fields and
//! body, byte for byte, as SEIPDv1 with MDC and AES-256 (what Thunderbird shows as decrypted),
//! and not with the other key.
//!
//! The library is looked up in `$THUNDERBIRD_LIBRNP`, then `${CARGO_TARGET_DIR:-target}/
//! thunderbird/librnp.so`, then an installed Thunderbird's `/usr/lib/thunderbird/librnp.so`.
//! Missing, it skips the test, or fails it with `CI=true`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use testkit::Maildir;
use testkit::lmtp::{Client, assert_codes};
use testkit::pgp::{armored_part, expected_inner, header_fields, is_content_field, split_message};
use testkit::sealgate::{Sealgate, keys_import_ok};

/// The ctypes driver of librnp.
const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/thunderbird/librnp.py");

/// Where Thunderbird's librnp.so may be, in order.
fn librnp_candidates() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root.join("target"), |d| root.join(d));
    let mut candidates: Vec<PathBuf> = std::env::var_os("THUNDERBIRD_LIBRNP")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    candidates.push(target.join("thunderbird/librnp.so"));
    candidates.push(PathBuf::from("/usr/lib/thunderbird/librnp.so"));
    candidates
}

/// Thunderbird's librnp.so, or `None` (after a note on stderr) when it is missing; with
/// `CI=true` a missing library panics, like a missing peer binary in [`testkit::require`].
fn require_librnp() -> Option<PathBuf> {
    if !testkit::require("python3") {
        return None;
    }
    let candidates = librnp_candidates();
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Some(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    testkit::peer_missing(&format!(
        "Thunderbird's librnp.so not found (looked at {}); `scripts/thunderbird-librnp` \
         fetches it, `scripts/test` runs that",
        looked.join(", ")
    ));
    None
}

/// A key librnp generated: its primary fingerprint, armored certificate and subkeys.
struct Key {
    fingerprint: String,
    certificate: Vec<u8>,
    subkeys: Vec<Value>,
}

/// What librnp's `rnp_op_verify_execute` and the queries after it said.
struct Decryption {
    result: u64,
    result_text: String,
    mode: String,
    cipher: String,
    valid: bool,
    recipients: Vec<String>,
    used_recipient: Option<String>,
    signatures: u64,
    plaintext: Vec<u8>,
}

/// Thunderbird's librnp with one private profile directory (pubring.gpg, secring.gpg) per
/// user.
struct Thunderbird {
    librnp: PathBuf,
    profiles: tempfile::TempDir,
}

impl Thunderbird {
    fn new(librnp: PathBuf) -> Thunderbird {
        Thunderbird {
            librnp,
            profiles: testkit::temp_dir("sealgate-thunderbird-"),
        }
    }

    fn profile(&self, user: &str) -> PathBuf {
        let dir = self.profiles.path().join(user);
        std::fs::create_dir_all(&dir).expect("profile directory");
        dir
    }

    /// Runs the driver with `args` after the library path; its stdout as JSON.
    fn driver(&self, args: &[&OsStr]) -> Value {
        let (ok, out) = testkit::run(
            Command::new(testkit::bin_path("python3"))
                .arg(DRIVER)
                .arg(&self.librnp)
                .args(args),
        );
        assert!(ok, "librnp.py {args:?}: {out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("librnp.py {args:?}: {e}: {out}"))
    }

    /// `rnp_version_string_full()`.
    fn version(&self) -> String {
        self.driver(&[OsStr::new("version")])["version"]
            .as_str()
            .expect("version")
            .to_owned()
    }

    /// A key generated as Thunderbird does: `kind` is `ecc` (EdDSA + ECDH Curve25519) or
    /// `rsa3072`, into `user`'s profile.
    fn generate(&self, user: &str, kind: &str, userid: &str) -> Key {
        let profile = self.profile(user);
        let out = self.driver(&[
            OsStr::new("generate"),
            profile.as_os_str(),
            OsStr::new(kind),
            OsStr::new(userid),
        ]);
        Key {
            fingerprint: out["fingerprint"].as_str().expect("fingerprint").to_owned(),
            certificate: out["public_key"]
                .as_str()
                .expect("public_key")
                .as_bytes()
                .to_vec(),
            subkeys: out["subkeys"].as_array().expect("subkeys").clone(),
        }
    }

    /// Decrypts an armored OpenPGP message with `user`'s keyring.
    fn decrypt(&self, user: &str, armored: &[u8]) -> Decryption {
        let profile = self.profile(user);
        let message = self.profiles.path().join("message.asc");
        std::fs::write(&message, armored).expect("write the message");
        let out = self.driver(&[
            OsStr::new("decrypt"),
            profile.as_os_str(),
            message.as_os_str(),
        ]);
        let text = |field: &str| out[field].as_str().unwrap_or_default().to_owned();
        Decryption {
            result: out["result"].as_u64().expect("result"),
            result_text: text("result_text"),
            mode: text("mode"),
            cipher: text("cipher"),
            valid: out["valid"].as_bool().expect("valid"),
            recipients: out["recipients"]
                .as_array()
                .expect("recipients")
                .iter()
                .map(|r| r.as_str().unwrap_or_default().to_owned())
                .collect(),
            used_recipient: out["used_recipient"].as_str().map(str::to_owned),
            signatures: out["signatures"].as_u64().expect("signatures"),
            plaintext: from_hex(&text("plaintext_hex")),
        }
    }
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn corpus(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus/messages")
            .join(name),
    )
    .expect("corpus message")
}

#[test]
fn thunderbird_librnp_decrypts_its_own_cv25519_and_rsa3072_keys() {
    let Some(librnp) = require_librnp() else {
        return;
    };
    let thunderbird = Thunderbird::new(librnp);
    let version = thunderbird.version();
    assert!(
        version.contains("MZLA"),
        "not Thunderbird's build: {version}"
    );

    let tess = thunderbird.generate("tess", "ecc", "Tess <tess@example.org>");
    let rob = thunderbird.generate("rob", "rsa3072", "Rob <rob@example.org>");
    for (key, alg, bits, curve) in [
        (&tess, "ECDH", 255, Value::from("Curve25519")),
        (&rob, "RSA", 3072, Value::Null),
    ] {
        assert_eq!(key.subkeys.len(), 1, "{:?}", key.subkeys);
        let subkey = &key.subkeys[0];
        assert_eq!(subkey["alg"], alg, "{subkey}");
        assert_eq!(subkey["bits"], bits, "{subkey}");
        assert_eq!(subkey["curve"], curve, "{subkey}");
        assert_eq!(subkey["encrypt"], true, "{subkey}");
    }

    let keys = tempfile::tempdir().expect("tempdir");
    let mail = Maildir::new();
    keys_import_ok(keys.path(), &tess.certificate);
    keys_import_ok(keys.path(), &rob.certificate);
    let next_hop = mail.next_hop();
    let keystore = keys.path().display().to_string();
    let sealgate = Sealgate::spawn(&[
        ("SEALGATE_NEXT_HOP", &next_hop),
        ("SEALGATE_KEYSTORE", &keystore),
    ]);

    let users = [
        ("tess", "tess@example.org", &tess),
        ("rob", "rob@example.org", &rob),
    ];
    // 8bit text, a base64 attachment, nested multipart, and no Content-* fields at all (the
    // default Content-Type goes inside) with a dot-stuffed line.
    let messages = [
        ("8bit", corpus("02-utf8-8bit-body.eml")),
        ("attachment", corpus("17-base64-binary-attachment.eml")),
        ("nested", corpus("19-nested-multipart.eml")),
        ("no header fields", corpus("42-no-headers-body-only.eml")),
        (
            "bare",
            b"From: a@example.net\r\nSubject: no content fields\r\n\r\n.dot line\r\nplain\r\n"
                .to_vec(),
        ),
    ];
    for (name, message) in messages {
        for (_, rcpt, _) in users {
            let _ = std::fs::remove_dir_all(mail.path().join(rcpt));
        }
        let mut client = Client::connect(sealgate.port());
        let replies = client.deliver(
            "sender@example.net",
            &["tess@example.org", "rob@example.org"],
            &message,
        );
        for reply in &replies {
            assert_codes(reply, "250", name);
        }

        for (user, rcpt, key) in users {
            let context = format!("{name} for {rcpt}");
            let stored = mail.only_message(rcpt);
            let outer: Vec<String> = header_fields(split_message(&stored).0)
                .iter()
                .filter(|f| is_content_field(f))
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            assert_eq!(outer.len(), 1, "{context}: {outer:?}");
            assert!(
                outer[0].contains("multipart/encrypted")
                    && outer[0].contains("protocol=\"application/pgp-encrypted\""),
                "{context}: {outer:?}"
            );
            assert!(
                String::from_utf8_lossy(&stored)
                    .to_uppercase()
                    .contains(&format!("X-SEALGATE-ENCRYPTED: {}", key.fingerprint)),
                "{context}: no marker with {}",
                key.fingerprint
            );

            let armored = armored_part(&stored);
            let decrypted = thunderbird.decrypt(user, &armored);
            assert_eq!(
                decrypted.result, 0,
                "{context}: rnp_op_verify_execute: {}",
                decrypted.result_text
            );
            assert_eq!(decrypted.mode, "cfb-mdc", "{context}: protection mode");
            assert_eq!(decrypted.cipher, "AES256", "{context}: cipher");
            assert!(decrypted.valid, "{context}: integrity protection not valid");
            assert_eq!(decrypted.signatures, 0, "{context}: signatures");
            // One PKESK, for the recipient's own encryption subkey: the one that was used.
            let subkey_id = key.subkeys[0]["keyid"].as_str().expect("keyid");
            assert_eq!(decrypted.recipients, vec![subkey_id], "{context}: PKESKs");
            assert_eq!(
                decrypted.used_recipient.as_deref(),
                Some(subkey_id),
                "{context}: used recipient"
            );
            assert!(
                decrypted.plaintext == expected_inner(&message),
                "{context}: decrypted entity differs:\n{}",
                String::from_utf8_lossy(&decrypted.plaintext)
            );

            // The other user's profile cannot read this copy.
            let other = if user == "tess" { "rob" } else { "tess" };
            let refused = thunderbird.decrypt(other, &armored);
            assert_ne!(refused.result, 0, "{context}: {other} decrypted it");
            assert!(
                refused.plaintext.is_empty(),
                "{context}: {other} got plaintext"
            );
        }
    }
}
