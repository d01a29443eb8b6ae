use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use sequoia_openpgp::anyhow;
use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::packet::{PKESK, SKESK};
use sequoia_openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use sequoia_openpgp::parse::{PacketParser, Parse};
use sequoia_openpgp::types::{Features, KeyFlags};
use sequoia_openpgp::{KeyHandle, Packet, PacketPile};

use bytes::BytesMut;
use sequoia_openpgp::types::{DataFormat, SymmetricAlgorithm};

use super::pgp_mime::{BOUNDARY_OCTETS, field_name_with_colon, new_boundary};
use super::*;
use crate::openpgp;
use crate::pipeline::Rewrite;
use crate::testing::golden;

/// Metrics nobody reads, for rewrites whose counts a test does not check.
fn metrics() -> Arc<Metrics> {
    Arc::new(Metrics::new(&prometheus::Registry::new()).unwrap())
}

/// A test certificate: the public part the stage gets, the secret part to decrypt.
struct TestKey {
    name: &'static str,
    tsk: Cert,
    public: Arc<Cert>,
}

impl TestKey {
    fn new(name: &'static str, tsk: Cert) -> TestKey {
        let public = Arc::new(tsk.clone().strip_secret_key_material());
        TestKey { name, tsk, public }
    }

    fn fingerprint(&self) -> String {
        self.public.fingerprint().to_hex()
    }

    /// The KeyIDs of the subkeys a message to this key must name.
    fn encryption_key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = openpgp::recipients(&self.public)
            .unwrap()
            .iter()
            .map(|r| r.key_handle().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }
}

/// Cv25519 and RSA-3072 shaped like GnuPG's (SEIPDv1 only), and sequoia's default,
/// which advertises SEIPDv2.
fn keys() -> &'static [TestKey] {
    static KEYS: OnceLock<Vec<TestKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let encryption = KeyFlags::empty()
            .set_storage_encryption()
            .set_transport_encryption();
        let (cv25519, _) = CertBuilder::new()
            .add_userid("<alice@example.org>")
            .set_cipher_suite(CipherSuite::Cv25519)
            .add_subkey(encryption.clone(), None, None)
            .set_features(Features::empty().set_seipdv1())
            .unwrap()
            .generate()
            .unwrap();
        let (rsa, _) = CertBuilder::new()
            .add_userid("<carol@example.org>")
            .set_cipher_suite(CipherSuite::RSA3k)
            .add_subkey(encryption, None, None)
            .set_features(Features::empty().set_seipdv1())
            .unwrap()
            .generate()
            .unwrap();
        let (default, _) = CertBuilder::general_purpose(Some("<dave@example.org>"))
            .generate()
            .unwrap();
        vec![
            TestKey::new("cv25519", cv25519),
            TestKey::new("rsa3k", rsa),
            TestKey::new("sequoia-default", default),
        ]
    })
}

/// Feeds `message` to `rewrite` as the pipeline does: the header block, then the body
/// in `chunk`-octet pieces, then the end (an empty chunk and finish, like
/// `Chain::finish`).
fn run(rewrite: &mut dyn Rewrite, message: &[u8], chunk: usize) -> Result<Vec<u8>, Reply> {
    let header_end = if message.starts_with(b"\r\n") {
        2
    } else {
        memchr::memmem::find(message, b"\r\n\r\n").map_or(message.len(), |i| i + 4)
    };
    let (headers, body) = message.split_at(header_end);
    let mut output = Vec::new();
    let mut out = BytesMut::new();
    rewrite.headers(headers, &mut out)?;
    output.extend_from_slice(&out);
    for piece in body.chunks(chunk.max(1)) {
        out.clear();
        rewrite.body(piece, &mut out)?;
        output.extend_from_slice(&out);
    }
    out.clear();
    rewrite.body(&[], &mut out)?;
    rewrite.finish(&mut out)?;
    output.extend_from_slice(&out);
    Ok(output)
}

struct Helper<'a> {
    tsk: &'a Cert,
    literal_format: Option<DataFormat>,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _: &[KeyHandle]) -> sequoia_openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }
    fn check(&mut self, _: MessageStructure<'_>) -> sequoia_openpgp::Result<()> {
        Ok(())
    }
    fn inspect(&mut self, pp: &PacketParser<'_>) -> sequoia_openpgp::Result<()> {
        if let Packet::Literal(literal) = &pp.packet {
            self.literal_format = Some(literal.format());
        }
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(
            Option<SymmetricAlgorithm>,
            &sequoia_openpgp::crypto::SessionKey,
        ) -> bool,
    ) -> sequoia_openpgp::Result<Option<Cert>> {
        for pkesk in pkesks {
            for ka in self.tsk.keys().unencrypted_secret() {
                if !pkesk
                    .recipient()
                    .is_some_and(|r| r.aliases(ka.key().key_handle()))
                {
                    continue;
                }
                let mut pair = ka.key().clone().into_keypair()?;
                if let Some((algo, key)) = pkesk.decrypt(&mut pair, sym_algo)
                    && decrypt(algo, &key)
                {
                    return Ok(Some(self.tsk.clone()));
                }
            }
        }
        Err(anyhow::anyhow!("no key to decrypt"))
    }
}

/// Decrypts an armored message with `key`'s secret keys, after checking its packets:
/// one PKESK v3 per encryption subkey of this certificate (no other key IDs), then one
/// SEIPD v1, as GnuPG 2.2 and Thunderbird need. Returns the literal data.
fn decrypt(key: &TestKey, armored: &[u8]) -> Vec<u8> {
    let pile = PacketPile::from_bytes(armored).unwrap();
    let packets: Vec<&Packet> = pile.children().collect();
    let (seip, pkesks) = packets.split_last().unwrap();
    match seip {
        Packet::SEIP(seip) => assert_eq!(seip.version(), 1, "{}", key.name),
        other => panic!("{}: expected SEIP, got {other:?}", key.name),
    }
    let mut named: Vec<String> = pkesks
        .iter()
        .map(|p| match p {
            Packet::PKESK(pkesk) => {
                assert_eq!(pkesk.version(), 3, "{}", key.name);
                pkesk.recipient().unwrap().to_string()
            }
            other => panic!("{}: expected PKESK, got {other:?}", key.name),
        })
        .collect();
    named.sort();
    assert_eq!(named, key.encryption_key_ids(), "{}", key.name);

    let helper = Helper {
        tsk: &key.tsk,
        literal_format: None,
    };
    let mut decryptor = DecryptorBuilder::from_bytes(armored)
        .unwrap()
        .with_policy(&openpgp::POLICY, None, helper)
        .unwrap();
    let mut plaintext = Vec::new();
    decryptor.read_to_end(&mut plaintext).unwrap();
    assert_eq!(
        decryptor.helper_ref().literal_format,
        Some(DataFormat::Binary),
        "{}",
        key.name
    );
    plaintext
}

/// Where the PGP/MIME skeleton's golden file is: what follows the outer fields, up to the
/// armor's first line, with `{boundary}` and `{fingerprint}` for what changes per copy.
const SKELETON: &str = "corpus/skeleton/pgp-mime.eml";

/// The golden PGP/MIME skeleton ([`SKELETON`]).
fn skeleton() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(SKELETON);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Checks the PGP/MIME layout byte for byte and returns the armored message.
fn check_layout(original: &[u8], output: &[u8], key: &TestKey, protect: bool) -> Vec<u8> {
    for (i, &b) in output.iter().enumerate() {
        match b {
            b'\n' => assert!(i > 0 && output[i - 1] == b'\r', "bare LF at {i}"),
            b'\r' => assert_eq!(output.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
            _ => {}
        }
    }
    let boundary_at = memchr::memmem::find(output, b"boundary=\"sealgate-").unwrap() + 10;
    let boundary_len = memchr::memchr(b'"', &output[boundary_at..]).unwrap();
    let boundary = std::str::from_utf8(&output[boundary_at..boundary_at + boundary_len]).unwrap();
    assert_eq!(boundary.len(), "sealgate-".len() + 2 * BOUNDARY_OCTETS);

    let split = mime::split_header_block(original);
    let mut expected = Vec::new();
    for field in &split.outer {
        if protect && field.is("Subject") {
            expected.extend_from_slice(field_name_with_colon(field));
            expected.extend_from_slice(b" ...\r\n");
        } else {
            expected.extend_from_slice(field.raw);
            if !field.raw.ends_with(b"\r\n") {
                expected.extend_from_slice(b"\r\n");
            }
        }
    }
    if !split.has_mime_version {
        expected.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    expected.extend_from_slice(
        skeleton()
            .replace("{boundary}", boundary)
            .replace("{fingerprint}", &key.fingerprint())
            .as_bytes(),
    );
    assert!(
        output.starts_with(&expected),
        "{}: layout\n--- got\n{}\n--- expected\n{}",
        key.name,
        String::from_utf8_lossy(&output[..expected.len().min(output.len())]),
        String::from_utf8_lossy(&expected)
    );
    let armored_start = expected.len() - "-----BEGIN PGP MESSAGE-----\r\n".len();
    let tail = format!("-----END PGP MESSAGE-----\r\n\r\n--{boundary}--\r\n");
    assert!(output.ends_with(tail.as_bytes()), "{}: closing", key.name);
    let armored =
        &output[armored_start..output.len() - tail.len() + "-----END PGP MESSAGE-----\r\n".len()];
    // One armored block, no stray boundary inside.
    assert!(memchr::memmem::find(armored, boundary.as_bytes()).is_none());
    armored.to_vec()
}

/// The skeleton every encrypted copy has after its outer fields, as a golden file: the
/// output for a message without fields, its boundary and fingerprint put back as
/// placeholders.
#[test]
fn skeleton_matches_its_golden_file() {
    let key = &keys()[0];
    let mut rewrite = PgpMime::new(vec![Arc::clone(&key.public)], false, PEEK_LIMIT, metrics());
    let output = run(&mut rewrite, b"\r\nbody\r\n", 4096).unwrap();
    let text = String::from_utf8(output).unwrap();
    let begin = "-----BEGIN PGP MESSAGE-----\r\n";
    let end = text.find(begin).unwrap() + begin.len();
    let at = text.find("boundary=\"").unwrap() + "boundary=\"".len();
    let boundary = &text[at..at + text[at..].find('"').unwrap()];
    let skeleton = text[..end]
        .strip_prefix("MIME-Version: 1.0\r\n")
        .unwrap()
        .replace(boundary, "{boundary}")
        .replace(&key.fingerprint(), "{fingerprint}");
    golden(SKELETON, skeleton.as_bytes());
}

/// Whole encrypted copies of corpus messages as golden files (`corpus/skeleton/<case>.eml`):
/// the outer fields as kept or hidden, the skeleton, and the armor's frame; the boundary, the
/// fingerprint and the armored lines (random per copy) as placeholders.
#[test]
fn corpus_copies_match_their_golden_files() {
    let key = &keys()[0];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (case, protect) in [
        ("01-plain-ascii", false),
        ("15-folded-headers", true),
        ("19-nested-multipart", false),
    ] {
        let message = std::fs::read(root.join(format!("corpus/messages/{case}.eml"))).unwrap();
        let mut rewrite = PgpMime::new(
            vec![Arc::clone(&key.public)],
            protect,
            PEEK_LIMIT,
            metrics(),
        );
        let text = String::from_utf8(run(&mut rewrite, &message, 4096).unwrap()).unwrap();
        let at = text.find("boundary=\"").unwrap() + "boundary=\"".len();
        let boundary = &text[at..at + text[at..].find('"').unwrap()];
        let begin = text.find("-----BEGIN PGP MESSAGE-----\r\n").unwrap();
        let end = text.find("-----END PGP MESSAGE-----\r\n").unwrap();
        let framed = format!(
            "{}-----BEGIN PGP MESSAGE-----\r\n{{armored}}\r\n{}",
            &text[..begin],
            &text[end..]
        );
        let normalized = framed
            .replace(boundary, "{boundary}")
            .replace(&key.fingerprint(), "{fingerprint}");
        golden(
            &format!("corpus/skeleton/{case}.eml"),
            normalized.as_bytes(),
        );
    }
}

/// The entity the recipient gets after decryption: the original Content-* fields (or
/// text/plain), the empty line, the body.
fn expected_inner(original: &[u8]) -> Vec<u8> {
    let split = mime::split_header_block(original);
    let mut inner = Vec::new();
    for field in &split.content {
        inner.extend_from_slice(field.raw);
        if !field.raw.ends_with(b"\r\n") {
            inner.extend_from_slice(b"\r\n");
        }
    }
    if !split.content.iter().any(|f| f.is("Content-Type")) {
        inner.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
    }
    inner.extend_from_slice(b"\r\n");
    inner.extend_from_slice(split.body);
    inner
}

fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let mut binary = b"From: a@example.org\r\n\
        Content-Type: application/octet-stream\r\n\
        Content-Transfer-Encoding: binary\r\n\r\n"
        .to_vec();
    binary.extend((0..=255u8).cycle().take(3000));
    let mut large = b"From: a@example.org\r\nSubject: large\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\r\n"
        .to_vec();
    for i in 0..2000 {
        large.extend_from_slice(
            format!("line {i}: Gr\u{fc}\u{df}e aus K\u{f6}ln, nothing encrypted here\r\n")
                .as_bytes(),
        );
    }
    vec![
        (
            "typical",
            b"Return-Path: <alice@example.com>\r\n\
              Received: from mail.example.com (mail.example.com [192.0.2.25])\r\n\
              \tby mx.example.org (Postfix) with ESMTPS id 4Tq2Vh1xYzz9sQ\r\n\
              \tfor <bob@example.org>; Tue, 02 Jan 2024 10:00:01 +0000 (UTC)\r\n\
              From: Alice <alice@example.com>\r\n\
              To: Bob <bob@example.org>\r\n\
              Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\
              \x20and more\r\n\
              Date: Tue, 02 Jan 2024 10:00:00 +0000\r\n\
              Message-ID: <typical@example.com>\r\n\
              MIME-Version: 1.0\r\n\
              Content-Type: text/plain;\r\n\
              \tcharset=utf-8\r\n\
              Content-Transfer-Encoding: 8bit\r\n\
              X-Mailer: after the content fields\r\n\
              \r\n\
              Gr\xc3\xbc\xc3\x9fe!\r\n.\r\n..leading dots\r\n"
                .to_vec(),
        ),
        (
            "no content fields",
            b"From: a@example.org\r\nSubject: plain\r\n\r\nJust text.\r\n".to_vec(),
        ),
        (
            "no blank line, no final CRLF",
            b"From: a@example.org\r\nContent-Type: text/plain".to_vec(),
        ),
        (
            "headers only",
            b"From: a@example.org\r\nSubject: x\r\n".to_vec(),
        ),
        (
            "empty header block",
            b"\r\nA body without header fields.\r\n".to_vec(),
        ),
        ("empty body", b"Subject: e\r\n\r\n".to_vec()),
        (
            "no final CRLF",
            b"Subject: n\r\nContent-Type: text/html\r\n\r\n<p>x</p>".to_vec(),
        ),
        (
            "multipart/signed",
            b"From: a@example.org\r\nMIME-Version: 1.0\r\n\
              Content-Type: multipart/signed; micalg=pgp-sha256;\r\n \
              protocol=\"application/pgp-signature\"; boundary=\"s\"\r\n\r\n\
              preamble\r\n--s\r\nContent-Type: text/plain\r\n\r\nsigned\r\n\
              --s\r\nContent-Type: application/pgp-signature\r\n\r\nsig\r\n--s--\r\n"
                .to_vec(),
        ),
        ("binary", binary),
        ("over the peek limit", large),
    ]
}

const PEEK_LIMIT: usize = 16 * 1024;

#[test]
fn encrypts_to_the_recipient_only_in_pgp_mime() {
    for key in keys() {
        for (name, message) in messages() {
            for chunk in [1, 7, 4096, message.len()] {
                if chunk == 1 && message.len() > 10_000 {
                    continue;
                }
                let mut rewrite =
                    PgpMime::new(vec![Arc::clone(&key.public)], false, PEEK_LIMIT, metrics());
                assert_eq!(rewrite.variant(), format!("encrypt:{}", key.fingerprint()));
                let output = run(&mut rewrite, &message, chunk).unwrap();
                let armored = check_layout(&message, &output, key, false);
                let inner = decrypt(key, &armored);
                assert!(
                    inner == expected_inner(&message),
                    "{} / {name} / chunk {chunk}: inner entity\n{}",
                    key.name,
                    String::from_utf8_lossy(&inner)
                );
            }
        }
    }
}

#[test]
fn default_certificate_advertises_seipdv2_but_gets_seipdv1() {
    let key = &keys()[2];
    let features = key
        .public
        .with_policy(&openpgp::POLICY, None)
        .unwrap()
        .features();
    assert!(features.unwrap().supports_seipdv2());
    // decrypt() asserts PKESK v3 and SEIPD v1.
    let message = b"Subject: v2\r\n\r\nbody\r\n";
    let output = run(
        &mut PgpMime::new(vec![Arc::clone(&key.public)], false, PEEK_LIMIT, metrics()),
        message,
        4096,
    )
    .unwrap();
    decrypt(key, &check_layout(message, &output, key, false));
}

#[test]
fn inner_entity_examples() {
    let cases: &[(&[u8], &[u8])] = &[
        (
            b"From: a\r\nSubject: s\r\n\r\nbody\r\n",
            b"Content-Type: text/plain; charset=us-ascii\r\n\r\nbody\r\n",
        ),
        (
            b"From: a\r\nContent-Type: text/plain;\r\n charset=utf-8\r\nSubject: s\r\n\
              content-transfer-encoding: 8bit\r\n\r\nb",
            b"Content-Type: text/plain;\r\n charset=utf-8\r\n\
              content-transfer-encoding: 8bit\r\n\r\nb",
        ),
        (
            b"Content-Type: text/plain",
            b"Content-Type: text/plain\r\n\r\n",
        ),
        (
            b"Content-Disposition: inline\r\n\r\nx",
            b"Content-Disposition: inline\r\n\
              Content-Type: text/plain; charset=us-ascii\r\n\r\nx",
        ),
    ];
    let key = &keys()[0];
    for (message, inner) in cases {
        let output = run(
            &mut PgpMime::new(vec![Arc::clone(&key.public)], false, 0, metrics()),
            message,
            3,
        )
        .unwrap();
        assert_eq!(
            decrypt(key, &check_layout(message, &output, key, false)),
            *inner
        );
    }
}

#[test]
fn protected_headers_copy_fields_and_hide_the_subject() {
    let key = &keys()[0];
    let message = b"Received: from x\r\nFrom: Alice <a@example.org>\r\nTo: b@example.org\r\n\
        subject: Secret\r\n plan\r\nMessage-ID: <p@x>\r\nX-Other: y\r\n\
        Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
        body\r\n";
    let output = run(
        &mut PgpMime::new(vec![Arc::clone(&key.public)], true, PEEK_LIMIT, metrics()),
        message,
        5,
    )
    .unwrap();
    let armored = check_layout(message, &output, key, true);
    assert!(memchr::memmem::find(&output, b"\r\nsubject: ...\r\n").is_some());
    assert!(memchr::memmem::find(&output, b"Secret").is_none());
    let inner = decrypt(key, &armored);
    let expected: &[u8] = b"From: Alice <a@example.org>\r\nTo: b@example.org\r\n\
        subject: Secret\r\n plan\r\nMessage-ID: <p@x>\r\n\
        HP-Outer: subject: ...\r\n\
        Content-Type: text/plain; charset=utf-8;\r\n \
        hp=\"cipher\"; protected-headers=\"v1\"\r\n\
        Content-Transfer-Encoding: 8bit\r\n\r\nbody\r\n";
    assert_eq!(
        String::from_utf8_lossy(&inner),
        String::from_utf8_lossy(expected)
    );

    // Without a Content-Type the default one carries the parameters.
    let message = b"Subject: s\r\n\r\nb";
    let output = run(
        &mut PgpMime::new(vec![Arc::clone(&key.public)], true, PEEK_LIMIT, metrics()),
        message,
        5,
    )
    .unwrap();
    let inner = decrypt(key, &check_layout(message, &output, key, true));
    assert_eq!(
        inner,
        b"Subject: s\r\nHP-Outer: Subject: ...\r\n\
          Content-Type: text/plain; charset=us-ascii;\r\n \
          hp=\"cipher\"; protected-headers=\"v1\"\r\n\r\nb"
    );
}

fn corpus(folder: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_already_encrypted_is_stored_as_received() {
    let key = &keys()[0];
    let files = corpus("corpus/encrypted");
    assert!(files.len() >= 10);
    for (path, message) in files {
        for chunk in [1, 7, 4096, message.len()] {
            let mut rewrite =
                PgpMime::new(vec![Arc::clone(&key.public)], false, 64 * 1024, metrics());
            let output = run(&mut rewrite, &message, chunk).unwrap();
            assert!(output == message, "{path} / chunk {chunk}");
        }
    }
}

#[test]
fn corpus_look_alikes_are_encrypted() {
    let key = &keys()[0];
    let files = corpus("corpus/encrypted/not");
    assert!(files.len() >= 40);
    // A bare LF never reaches a stage (the LMTP codec refuses it), and the layout check
    // below holds output to CRLF.
    for (path, message) in files.into_iter().filter(|(p, _)| !p.contains("bare-lf")) {
        for chunk in [7, message.len()] {
            let mut rewrite =
                PgpMime::new(vec![Arc::clone(&key.public)], false, 64 * 1024, metrics());
            let output = run(&mut rewrite, &message, chunk).unwrap();
            let inner = decrypt(key, &check_layout(&message, &output, key, false));
            assert!(inner == expected_inner(&message), "{path} / chunk {chunk}");
        }
    }
}

#[test]
fn peek_limit_bounds_what_is_held_back() {
    let key = &keys()[0];
    let inline = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/encrypted/06-inline-pgp.eml"),
    )
    .unwrap();
    // Fits: passes through. One octet short: encrypted, whatever the chunking.
    for chunk in [1, 100, inline.len()] {
        let output = run(
            &mut PgpMime::new(
                vec![Arc::clone(&key.public)],
                false,
                inline.len(),
                metrics(),
            ),
            &inline,
            chunk,
        )
        .unwrap();
        assert!(output == inline);
        let output = run(
            &mut PgpMime::new(
                vec![Arc::clone(&key.public)],
                false,
                inline.len() - 1,
                metrics(),
            ),
            &inline,
            chunk,
        )
        .unwrap();
        assert_eq!(
            decrypt(key, &check_layout(&inline, &output, key, false)),
            expected_inner(&inline)
        );
    }
    // A header block over the limit is encrypted at once.
    let mut rewrite = PgpMime::new(vec![Arc::clone(&key.public)], false, 10, metrics());
    let mut out = BytesMut::new();
    rewrite
        .headers(b"Subject: over ten octets\r\n\r\n", &mut out)
        .unwrap();
    assert!(out.starts_with(b"Subject: over ten octets\r\nMIME-Version: 1.0\r\n"));
    // A .p7m is verified in full, so one larger than the limit is encrypted even though
    // its first octets say enveloped-data.
    let p7m = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/encrypted/04-smime-legacy-p7m.eml"),
    )
    .unwrap();
    let header_len = memchr::memmem::find(&p7m, b"\r\n\r\n").unwrap() + 4;
    for chunk in [1, 64, 4096] {
        let output = run(
            &mut PgpMime::new(
                vec![Arc::clone(&key.public)],
                false,
                header_len + 200,
                metrics(),
            ),
            &p7m,
            chunk,
        )
        .unwrap();
        assert_eq!(
            decrypt(key, &check_layout(&p7m, &output, key, false)),
            expected_inner(&p7m),
            "chunk {chunk}"
        );
    }
}

#[test]
fn output_streams_while_encrypting() {
    let key = &keys()[0];
    let mut rewrite = PgpMime::new(vec![Arc::clone(&key.public)], false, 0, metrics());
    let mut out = BytesMut::new();
    rewrite
        .headers(b"Content-Type: application/octet-stream\r\n\r\n", &mut out)
        .unwrap();
    let mut emitted = out.len();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..64 {
        out.clear();
        rewrite.body(&chunk, &mut out).unwrap();
        emitted += out.len();
        // Nothing accumulates in the sink between calls.
        assert!(rewrite.sink.lock().output().is_empty());
    }
    // 4 MiB in, and most of the armored output is already out.
    assert!(emitted > 4 * 1024 * 1024, "{emitted}");
    out.clear();
    rewrite.finish(&mut out).unwrap();
    assert!(out.ends_with(format!("--{}--\r\n", rewrite.boundary).as_bytes()));
}

#[test]
fn unusable_certificate_fails_closed() {
    // Certification-only primary key, no encryption subkey.
    let (cert, _) = CertBuilder::new()
        .add_userid("<eve@example.org>")
        .generate()
        .unwrap();
    let registry = prometheus::Registry::new();
    let mut rewrite = PgpMime::new(
        vec![Arc::new(cert)],
        false,
        PEEK_LIMIT,
        Arc::new(Metrics::new(&registry).unwrap()),
    );
    let mut out = BytesMut::new();
    let err = rewrite
        .headers(b"Subject: s\r\nContent-Type: image/png\r\n\r\n", &mut out)
        .unwrap_err();
    assert_eq!(
        (err.code, err.enhanced),
        (451, Some(EnhancedCode::new(4, 3, 0)))
    );
    assert_eq!(err.lines, ["Encryption failed, try again later"]);
    assert!(out.is_empty(), "nothing may be emitted");
    // Later calls fail too: nothing in clear.
    assert!(rewrite.body(b"secret", &mut out).is_err());
    assert!(rewrite.finish(&mut out).is_err());
    assert!(out.is_empty());
    assert_eq!(rewrite.copy_kind(), None);
    // One failed copy, counted once.
    let failures = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "sealgate_encryption_failures_total")
        .unwrap();
    assert_eq!(failures.get_metric()[0].get_counter().get_value(), 1.0);

    // Held back, then found not encrypted: the failure comes at the end.
    let (cert, _) = CertBuilder::new()
        .add_userid("<eve@example.org>")
        .generate()
        .unwrap();
    let mut rewrite = PgpMime::new(vec![Arc::new(cert)], false, PEEK_LIMIT, metrics());
    let err = run(&mut rewrite, b"Subject: s\r\n\r\nsecret\r\n", 3).unwrap_err();
    assert_eq!(err.code, 451);
}

#[test]
fn boundaries_are_well_formed_and_distinct() {
    let many: std::collections::HashSet<String> = (0..10_000).map(|_| new_boundary()).collect();
    assert_eq!(many.len(), 10_000);
    for boundary in many.iter().take(100) {
        let hex = boundary.strip_prefix("sealgate-").unwrap();
        assert_eq!(hex.len(), 2 * BOUNDARY_OCTETS);
        assert!(
            hex.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}

#[test]
fn rewrite_is_send() {
    fn send<T: Send>() {}
    send::<PgpMime>();
    send::<EncryptStage>();
}

/// A key lookup backed by a map. Its "usable" entries stand for verdicts reached at RCPT
/// time; once `later` is set, lookups judge them again, as the key store does when a
/// cached verdict has run out (a key that expired or was revoked since).
struct MapLookup(HashMap<String, Lookup>, std::sync::atomic::AtomicBool);

impl KeyLookup for MapLookup {
    fn lookup(&self, address: &str) -> Lookup {
        match self.0.get(address).cloned() {
            Some(Lookup::Usable(certs)) if self.1.load(std::sync::atomic::Ordering::SeqCst) => {
                match certs
                    .iter()
                    .find_map(|c| openpgp::check(c).err().map(|r| (c, r)))
                {
                    None => Lookup::Usable(certs),
                    Some((cert, reason)) => Lookup::Unusable {
                        fingerprint: cert.fingerprint().to_hex(),
                        reason,
                    },
                }
            }
            found => found.unwrap_or(Lookup::None),
        }
    }
}

/// The stage over a [`MapLookup`], and that lookup (to make it judge again).
fn stage(policy: UnusableKey) -> (EncryptStage, Arc<MapLookup>) {
    let now = SystemTime::now();
    let (expired, _) = CertBuilder::new()
        .add_userid("<old@example.org>")
        .add_transport_encryption_subkey()
        .set_creation_time(now - Duration::from_secs(7200))
        .set_validity_period(Duration::from_secs(3600))
        .generate()
        .unwrap();
    let (revoked, revocation) = CertBuilder::new()
        .add_userid("<gone@example.org>")
        .add_transport_encryption_subkey()
        .generate()
        .unwrap();
    let (revoked, _) = revoked.insert_packets(revocation).unwrap();
    let mut map = HashMap::new();
    map.insert(
        "alice@example.org".to_owned(),
        Lookup::Usable(vec![Arc::clone(&keys()[0].public)]),
    );
    map.insert(
        "unknown@example.org".to_owned(),
        Lookup::Unknown {
            reason: "/keys/ab/cd: cannot read: Permission denied".to_owned(),
        },
    );
    map.insert(
        "broken@example.org".to_owned(),
        Lookup::Unusable {
            fingerprint: "ABCDEF".to_owned(),
            reason: Unusable::NoEncryptionSubkey,
        },
    );
    // The store thought these usable; by plan time they are not.
    map.insert(
        "old@example.org".to_owned(),
        Lookup::Usable(vec![Arc::new(expired)]),
    );
    map.insert(
        "gone@example.org".to_owned(),
        Lookup::Usable(vec![Arc::new(revoked)]),
    );
    let observe = Observe {
        metrics: Arc::new(Metrics::new(&prometheus::Registry::new()).unwrap()),
        log: AddressLog::Full,
    };
    let lookup = Arc::new(MapLookup(map, std::sync::atomic::AtomicBool::new(false)));
    let config = EncryptConfig {
        unusable: policy,
        protected_headers: false,
        peek_limit: PEEK_LIMIT,
    };
    (EncryptStage::new(lookup.clone(), config, observe), lookup)
}

fn rcpt(address: &str) -> Recipient {
    Recipient::new(address.to_owned())
}

/// What a check or plan came to: `Ok(None)` unchanged, `Ok(Some(variant))` rewritten,
/// `Err((code, enhanced, text))` refused.
type Outcome = Result<Option<String>, (u16, String, String)>;

fn refused(reply: Reply) -> (u16, String, String) {
    (
        reply.code,
        reply.enhanced.map(|e| e.to_string()).unwrap_or_default(),
        reply.lines.join("\n"),
    )
}

#[test]
fn recipients_by_key_and_policy() {
    use UnusableKey::*;
    let alice = format!("encrypt:{}", keys()[0].fingerprint());
    let plain = b"From: x\r\nContent-Type: text/plain\r\n\r\n";
    let encrypted = b"From: x\r\nContent-Type: multipart/encrypted; boundary=b\r\n\r\n";
    let tempfail = |addr: &str, reason: &str| -> Outcome {
        Err((
            450,
            "4.7.1".into(),
            format!("{addr}: recipient's OpenPGP key is unusable ({reason}); try again later"),
        ))
    };
    let reject = |addr: &str, reason: &str| -> Outcome {
        Err((
            550,
            "5.7.1".into(),
            format!("{addr}: recipient's OpenPGP key is unusable ({reason})"),
        ))
    };
    let no_subkey = "no encryption-capable subkey";
    // (policy, address, headers, RCPT outcome, plan outcome)
    let unknown: Outcome = Err((
        451,
        "4.7.0".into(),
        "<unknown@example.org> key store cannot tell whether this recipient has a key \
         (/keys/ab/cd: cannot read: Permission denied), try again later"
            .into(),
    ));
    let cases: Vec<(UnusableKey, &str, &[u8], Outcome, Outcome)> = vec![
        (Tempfail, "nobody@example.org", plain, Ok(None), Ok(None)),
        // Whatever the unusable-key policy: never plaintext, never a guess.
        (
            Plaintext,
            "unknown@example.org",
            plain,
            unknown.clone(),
            unknown.clone(),
        ),
        (
            Reject,
            "unknown@example.org",
            encrypted,
            unknown.clone(),
            unknown.clone(),
        ),
        (
            Tempfail,
            "alice@example.org",
            plain,
            Ok(None),
            Ok(Some(alice.clone())),
        ),
        // A label is no verdict: the rewrite verifies the content.
        (
            Tempfail,
            "alice@example.org",
            encrypted,
            Ok(None),
            Ok(Some(alice.clone())),
        ),
        (
            Tempfail,
            "broken@example.org",
            plain,
            tempfail("broken@example.org", no_subkey),
            tempfail("broken@example.org", no_subkey),
        ),
        (
            Reject,
            "broken@example.org",
            plain,
            reject("broken@example.org", no_subkey),
            reject("broken@example.org", no_subkey),
        ),
        (Plaintext, "broken@example.org", plain, Ok(None), Ok(None)),
        (
            Tempfail,
            "old@example.org",
            plain,
            Ok(None),
            tempfail("old@example.org", "expired"),
        ),
        (
            Reject,
            "gone@example.org",
            plain,
            Ok(None),
            reject("gone@example.org", "revoked"),
        ),
        (Plaintext, "gone@example.org", plain, Ok(None), Ok(None)),
    ];
    let envelope = Envelope::default();
    for (policy, address, headers, at_rcpt, at_plan) in cases {
        let (stage, lookup) = stage(policy);
        assert_eq!(stage.name(), "encrypt");
        let got = stage
            .check_recipient(&envelope, &mut rcpt(address))
            .map(|()| None)
            .map_err(refused);
        assert_eq!(got, at_rcpt, "{policy:?} {address} at RCPT");
        lookup.1.store(true, std::sync::atomic::Ordering::SeqCst);
        let got = stage
            .plan(&envelope, headers, &rcpt(address))
            .map(|plan| match plan {
                Plan::Unchanged => None,
                Plan::Rewrite(rewrite) => Some(rewrite.variant()),
            })
            .map_err(refused);
        assert_eq!(got, at_plan, "{policy:?} {address} at plan");
    }
}
