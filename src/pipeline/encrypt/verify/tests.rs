use std::path::Path;

use super::*;

/// Deterministic pseudo-random octets (xorshift64*), good enough to stand for ciphertext.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

fn corpus(folder: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

fn chunked(message: &[u8], chunk: usize, window: usize) -> Verdict {
    let mut verifier = Verifier::new(window);
    for piece in message.chunks(chunk.max(1)) {
        if let Some(reason) = verifier.feed(piece) {
            return Verdict::NotVerified(reason);
        }
    }
    verifier.finish()
}

#[test]
fn genuine_corpus_is_verified_in_every_chunking() {
    let files = corpus("corpus/encrypted");
    assert!(files.len() >= 11);
    for (path, message) in files {
        let whole = verify_message(&message);
        assert!(matches!(whole, Verdict::Verified(_)), "{path}: {whole:?}");
        for chunk in [1, 2, 7, 64, 4096, message.len()] {
            assert_eq!(chunked(&message, chunk, 1 << 20), whole, "{path} / {chunk}");
        }
    }
}

#[test]
fn forged_corpus_is_not_verified_in_every_chunking() {
    let files = corpus("corpus/encrypted/not");
    assert!(files.len() >= 40, "only {} forged cases", files.len());
    for (path, message) in files {
        let whole = chunked(&message, message.len(), 1 << 20);
        assert!(
            matches!(whole, Verdict::NotVerified(_)),
            "{path}: {whole:?}"
        );
        for chunk in [1, 3, 64, 4096] {
            assert_eq!(chunked(&message, chunk, 1 << 20), whole, "{path} / {chunk}");
        }
    }
}

/// Each forged case fails for the reason it was built for, not by accident elsewhere.
#[test]
fn forged_cases_fail_for_their_reason() {
    let want: &[(&str, &str)] = &[
        ("15-", "mime"),
        ("16-", "cms"),
        ("17-", "two parts"),
        ("18-", "preamble"),
        ("19-", "epilogue"),
        ("20-", "Version: 1"),
        ("21-", "armor header"),
        ("22-", "armor header"),
        ("23-", "armor header"),
        ("24-", "HTML"),
        ("25-", "HTML"),
        ("26-", "HTML"),
        ("27-", "Version: 1"),
        ("28-", "not empty"),
        ("29-", "SKESK"),
        ("30-", "SED"),
        ("31-", "after the encrypted container"),
        ("32-", "literal"),
        ("33-", "not random"),
        ("34-", "after the ContentInfo"),
        ("35-", "truncated"),
        ("36-", "contentType"),
        ("37-", "not random"),
        ("38-", "checksum"),
        ("39-", "base64"),
        ("40-", "protocol"),
        ("41-", "application/pgp-encrypted"),
        ("42-", "Content-Description"),
        ("43-", "file name"),
        ("44-", "not random"),
        ("45-", "public-key recipient"),
        ("46-", "part field"),
        ("47-", "closing delimiter"),
        ("48-", "not random"),
        ("49-", "no encrypted container"),
        ("50-", "without encryptedContent"),
        ("51-", "HTML"),
        ("52-", "after the armored block"),
        ("53-", "transfer encoding"),
        ("54-", "attributes"),
        ("55-", "not random"),
        ("56-", "RecipientInfo"),
        ("57-", "Version"),
        ("58-", "bare CR or LF"),
        ("59-", "charset"),
    ];
    let files = corpus("corpus/encrypted/not");
    for (prefix, needle) in want {
        let (path, message) = files
            .iter()
            .find(|(p, _)| p.rsplit('/').next().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no case {prefix}"));
        let Verdict::NotVerified(reason) = verify_message(message) else {
            panic!("{path} verified");
        };
        let text = format!("{reason} {}", reason.kind());
        assert!(text.contains(needle), "{path}: {text}");
    }
}

#[test]
fn the_window_bounds_what_can_be_verified() {
    let (_, message) = corpus("corpus/encrypted").remove(0);
    let n = message.len();
    for chunk in [1, 100, n] {
        assert!(matches!(chunked(&message, chunk, n), Verdict::Verified(_)));
        assert_eq!(
            chunked(&message, chunk, n - 1),
            Verdict::NotVerified(Reason::BeyondWindow)
        );
    }
    // Beyond the window the chunk is not kept: memory stays within the window.
    let mut verifier = Verifier::new(n - 1);
    assert_eq!(verifier.feed(&message), Some(Reason::BeyondWindow));
    assert!(verifier.held().is_empty());
}

#[test]
fn ordinary_mail_is_decided_early() {
    let cases: &[&[u8]] = &[
        b"Subject: x\r\nContent-Type: image/png\r\n\r\n",
        b"Subject: x\r\n\r\nHello Bob",
        b"Content-Type: text/plain\r\n\r\n  \r\n-----BEGIN PGP SIGNED",
    ];
    for message in cases {
        let mut verifier = Verifier::new(1 << 20);
        assert!(
            matches!(verifier.feed(message), Some(Reason::NotAnEncryptedForm(_))),
            "{}",
            String::from_utf8_lossy(message)
        );
    }
    let mut multipart = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n".to_vec();
    multipart.extend(std::iter::repeat_n(b'x', MULTIPART_PROBE + MARKER_SLACK));
    let mut verifier = Verifier::new(1 << 20);
    assert!(verifier.feed(&multipart).is_some());
    // The start of an armored block keeps it waiting.
    let mut verifier = Verifier::new(1 << 20);
    assert_eq!(verifier.feed(b"Subject: x\r\n\r\n\r\n-----BEGIN PGP"), None);
}

/// One octet at a time, as a sender dribbling TCP segments would have it: every octet is
/// looked at once by the early rules (quadratic scanning would take minutes here).
#[test]
fn tiny_chunks_cost_linear_time() {
    let mut text = b"Subject: x\r\n\r\n".to_vec();
    text.extend(std::iter::repeat_n(b' ', 400_000));
    text.extend_from_slice(b"-----BEGIN PGP MESSAGE-----\r\n");
    let mut multipart =
        b"Content-Type: multipart/encrypted; boundary=b\r\n\r\n-----BEGIN PGP MESSAGE".to_vec();
    multipart.extend(std::iter::repeat_n(b'x', 400_000));
    for message in [text, multipart] {
        let mut verifier = Verifier::new(1 << 20);
        for octet in message.chunks(1) {
            assert_eq!(verifier.feed(octet), None);
        }
        assert!(matches!(verifier.finish(), Verdict::NotVerified(_)));
    }
}

#[test]
fn randomness_thresholds() {
    let pass = |data: &[u8]| {
        let mut r = Randomness::default();
        r.feed(data);
        r.finish()
    };
    // Random octets of many sizes pass, also fed in odd pieces.
    for (seed, n) in [
        (1, 20),
        (2, 100),
        (3, 511),
        (4, 600),
        (5, 4096),
        (6, 3 << 20),
    ] {
        assert_eq!(pass(&noise(seed, n)), Ok(()), "{n}");
    }
    let data = noise(7, 100_000);
    let mut r = Randomness::default();
    for piece in data.chunks(333) {
        r.feed(piece);
    }
    assert_eq!(r.finish(), Ok(()));
    // A printable run, mostly printable octets, a skewed distribution, nothing at all.
    let mut run = noise(8, 2000);
    run[1000..1000 + PRINTABLE_RUN].fill(b'a');
    assert!(pass(&run).is_err());
    let mostly: Vec<u8> = (0..4096)
        .map(|i| {
            if i % 20 == 0 {
                0x80
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    assert!(pass(&mostly).is_err());
    let skewed: Vec<u8> = noise(9, 4096).iter().map(|b| b & 0x8f).collect();
    assert!(pass(&skewed).is_err());
    assert!(pass(&[]).is_err());
}

#[test]
fn strict_base64() {
    let ok = |s: &str| base64_lines(s.as_bytes(), Reason::Mime("x")).ok();
    assert_eq!(ok("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
    assert_eq!(ok("aGVs\r\nbG8=\r\n\r\n").as_deref(), Some(&b"hello"[..]));
    assert_eq!(ok("aGVsbG8").as_deref(), None, "not a multiple of four");
    assert_eq!(ok("aGVsbG9=").as_deref(), None, "stray bits");
    assert_eq!(ok("aGVs=bG8").as_deref(), None, "padding inside");
    assert_eq!(ok("aGVs!G8=").as_deref(), None, "outside the alphabet");
    assert_eq!(ok("aGVsbG8=aGVs").as_deref(), None, "data after padding");
}

#[test]
fn quoted_printable_decoding() {
    assert_eq!(quoted_printable(b"a=3Db=\r\nc").unwrap(), b"a=bc".to_vec());
    assert!(quoted_printable(b"a=zz").is_err());
    assert!(quoted_printable(b"a=").is_err());
}

#[test]
fn crc24_known_value() {
    // RFC 4880 6.1's initial value, and the CRC-24/OPENPGP check value.
    assert_eq!(crc24(b""), 0x00b7_04ce);
    assert_eq!(crc24(b"123456789"), 0x0021_cf02);
}

#[test]
fn ber_indefinite_lengths_and_depth() {
    // SEQUENCE (indefinite) { NULL } then end-of-contents.
    let (tlv, rest) = read_tlv(&[0x30, 0x80, 0x05, 0x00, 0x00, 0x00, 0xff], 0).unwrap();
    assert_eq!(
        (tlv.tag, tlv.content, rest),
        (0x30, &[0x05, 0x00][..], &[0xff][..])
    );
    assert!(read_tlv(&[0x04, 0x80, 0x00, 0x00], 0).is_err(), "primitive");
    assert!(read_tlv(&[0x30, 0x80, 0x05, 0x00], 0).is_err(), "no end");
    let deep: Vec<u8> = std::iter::repeat_n([0x30u8, 0x80], 100).flatten().collect();
    assert!(read_tlv(&deep, 0).is_err());
    assert!(read_tlv(&[0x30, 0x85, 0, 0, 0, 0, 1], 0).is_err());
}

#[test]
fn html_keeps_everything_but_the_wrappers() {
    let cases = [
        ("<html><body><pre>a</pre></body></html>", "a"),
        ("<P>a<BR/>b</P>", "ab"),
        ("&lt;&#43;&#x3D;&amp;", "<+=&"),
        ("<!-- c -->a", "<!-- c -->a"),
        ("<pre class=\"x\">a", "<pre class=\"x\">a"),
        ("a<b", "a<b"),
        ("<title>t</title>", "<title>t</title>"),
    ];
    for (html, shown) in cases {
        assert_eq!(html_visible_text(html), shown, "{html}");
    }
}

#[test]
fn packet_framing() {
    let mut seipd = vec![1];
    seipd.extend(noise(3, 700));
    let pkesk = [3u8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0, 8, 0xff];
    let new = |tag: u8, body: &[u8]| -> Vec<u8> {
        let mut p = vec![0xc0 | tag, 0xff];
        p.extend(u32::try_from(body.len()).unwrap().to_be_bytes());
        p.extend(body);
        p
    };
    let good = [new(1, &pkesk), new(18, &seipd)].concat();
    assert_eq!(check_packets(&good), Ok(()));
    // Old-format PKESK, partial-length SEIPD (512, then the rest).
    let mut partial = vec![0x84, u8::try_from(pkesk.len()).unwrap()];
    partial.extend(pkesk);
    partial.extend([0xd2, 0xe9]);
    partial.extend(&seipd[..512]);
    // 189 octets left: a one-octet final length.
    partial.push(u8::try_from(seipd.len() - 512).unwrap());
    partial.extend(&seipd[512..]);
    assert_eq!(check_packets(&partial), Ok(()));
    // Partial lengths on a key packet, a truncated container, SEIPD v3.
    assert!(check_packets(&[&[0xc1, 0xe0][..], &pkesk].concat()).is_err());
    assert!(check_packets(&good[..good.len() - 1]).is_err());
    let mut v3 = good.clone();
    let at = good.len() - seipd.len();
    v3[at] = 3;
    assert!(check_packets(&v3).is_err());
}
