//! The scrub stage: removes an authenticated user's IP address, host name, HELO and mail
//! program from the header block (README promise 3), so they never leave in the headers.
//!
//! Only our own MTA's submission Received field (the first one, if its `by` is a trusted MTA)
//! loses its `from` clause, and the configured fields (`X-Originating-IP`, `User-Agent`, ...)
//! go. A sender's `X-Sealgate-Encrypted` field goes from every message, scrubbed or not
//! ([`MARKER`]). Every other byte of the header block stays as it was, folding included; the body is
//! never touched. Received fields further down belong to other hops and stay.

use std::sync::Arc;

use bytes::BytesMut;
use sealgate_protocol::Reply;

use crate::config::ScrubMode;
use crate::message::header;
use crate::message::received::{self, Kind, Received, Tokens};
use crate::pipeline::{Envelope, Plan, Recipient, Rewrite, Stage};

/// The field the encryption stage adds to the copies it encrypts. A sender's own copy of it
/// would claim encryption on a copy sealgate did not encrypt: it is removed from every copy,
/// whatever `SEALGATE_SCRUB` says, before the encryption stage adds ours.
pub(crate) const MARKER: &str = "X-Sealgate-Encrypted";

/// The scrub stage (`SEALGATE_SCRUB`, `SEALGATE_SCRUB_HEADERS`, `SEALGATE_TRUSTED_MTA`).
pub(crate) struct ScrubStage {
    mode: ScrubMode,
    /// Lower-case names of the fields to remove.
    headers: Arc<[String]>,
    /// Host names of our own MTAs.
    trusted: Arc<[String]>,
}

impl ScrubStage {
    /// A stage that cleans the mail `mode` selects: it removes the fields named in `headers`
    /// (case-insensitive) and the `from` clause of the submission Received field, if its `by`
    /// is one of `trusted_mta`.
    pub(crate) fn new(mode: ScrubMode, headers: Vec<String>, trusted_mta: Vec<String>) -> Self {
        let headers = headers.iter().map(|h| h.to_ascii_lowercase()).collect();
        ScrubStage {
            mode,
            headers,
            trusted: trusted_mta.into(),
        }
    }

    /// Whether mail is scrubbed at all: all mail with [`ScrubMode::All`], an authenticated
    /// user's with [`ScrubMode::Authenticated`], none with [`ScrubMode::Off`]. After the queue
    /// `authenticated` is what the trusted first Received field says; the milter knows it from
    /// `{auth_authen}`.
    pub(crate) fn applies(&self, authenticated: bool) -> bool {
        match self.mode {
            ScrubMode::All => true,
            ScrubMode::Authenticated => authenticated,
            ScrubMode::Off => false,
        }
    }

    /// Whether a field called `name` goes from a message that is `scrubbed` ([`Self::applies`]):
    /// a sender's [`MARKER`] always, the configured fields from scrubbed mail. Received fields
    /// never go this way: those that reach the list belong to other hops.
    pub(crate) fn removes(&self, name: &[u8], scrubbed: bool) -> bool {
        is_marker(Some(name)) || (scrubbed && is_removed(Some(name), &self.headers))
    }
}

impl Stage for ScrubStage {
    fn name(&self) -> &'static str {
        "scrub"
    }

    fn plan(&self, _: &Envelope, headers: &[u8], _: &Recipient) -> Result<Plan, Reply> {
        if !changes(headers, self.mode, &self.headers, &self.trusted) {
            return Ok(Plan::Unchanged);
        }
        Ok(Plan::Rewrite(Box::new(ScrubRewrite {
            mode: self.mode,
            headers: Arc::clone(&self.headers),
            trusted: Arc::clone(&self.trusted),
        })))
    }
}

/// One copy's rewrite. It scrubs the header block it is given (the output of the stages
/// before it), so it stays right whatever those did; the result is the same for every
/// recipient.
struct ScrubRewrite {
    mode: ScrubMode,
    headers: Arc<[String]>,
    trusted: Arc<[String]>,
}

impl Rewrite for ScrubRewrite {
    fn variant(&self) -> String {
        "scrub".into()
    }

    fn headers(&mut self, headers: &[u8], out: &mut BytesMut) -> Result<(), Reply> {
        match scrub_headers(headers, self.mode, &self.headers, &self.trusted) {
            Some(scrubbed) => out.extend_from_slice(&scrubbed),
            None => out.extend_from_slice(headers),
        }
        Ok(())
    }

    fn body(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), Reply> {
        out.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(&mut self, _: &mut BytesMut) -> Result<(), Reply> {
        Ok(())
    }
}

/// The scrubbed header block, or `None` when nothing changes.
///
/// Scrubbing applies to mail whose first Received field is by one of `trusted` and says the
/// client authenticated (`with ESMTPA`/`ESMTPSA`, [`Received::authenticated`]), or to all mail
/// with [`ScrubMode::All`]; never with [`ScrubMode::Off`]. Then:
/// 1. that first Received field, if trusted, loses its `from` clause (the keyword, the HELO
///    name, stray words and every comment that names the client: an IP address, the HELO,
///    `helo=`, a client certificate), keeping the TLS and authentication comments and the
///    rest of the field byte for byte;
/// 2. the fields named in `remove` (case-insensitive) go, folded lines included. Received
///    fields are never removed this way.
///
/// In every mode, a sender-supplied [`MARKER`] field goes too.
///
/// Everything else, the empty line that ends the block and anything after it stay byte for
/// byte.
pub(crate) fn scrub_headers(
    headers: &[u8],
    mode: ScrubMode,
    remove: &[String],
    trusted: &[String],
) -> Option<Vec<u8>> {
    let (submission, remove) = match scope(headers, mode, trusted) {
        // The marker still goes (below).
        Scope::Nothing => (None, &[][..]),
        Scope::FieldsOnly => (None, remove),
        Scope::Submission(start, received) => (Some((start, received)), remove),
    };
    let mut out = Vec::with_capacity(headers.len());
    let mut changed = false;
    let mut fields = header::fields(headers);
    for field in fields.by_ref() {
        let scrubbed = submission
            .as_ref()
            .filter(|(start, _)| field.start == *start)
            .and_then(|(_, received)| scrub_from_clause(received));
        if let Some(scrubbed) = scrubbed {
            out.extend_from_slice(&scrubbed);
            changed = true;
        } else if is_removed(field.name, remove) || is_marker(field.name) {
            changed = true;
        } else {
            out.extend_from_slice(field.raw);
        }
    }
    out.extend_from_slice(&headers[fields.end()..]);
    changed.then_some(out)
}

/// Whether [`scrub_headers`] would change anything, without building the result.
fn changes(headers: &[u8], mode: ScrubMode, remove: &[String], trusted: &[String]) -> bool {
    if header::fields(headers).any(|field| is_marker(field.name)) {
        return true;
    }
    match scope(headers, mode, trusted) {
        Scope::Nothing => false,
        Scope::Submission(_, received) if received.from.is_some() => true,
        Scope::FieldsOnly | Scope::Submission(..) => {
            header::fields(headers).any(|field| is_removed(field.name, remove))
        }
    }
}

/// What the scrub stage touches in a header block.
// A short-lived stack value, one per call: boxing the large variant would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
enum Scope<'a> {
    /// Nothing: scrubbing is off, or the mail is not an authenticated user's.
    Nothing,
    /// Only the fields to remove: [`ScrubMode::All`] without a trusted first Received field.
    FieldsOnly,
    /// The fields to remove and the trusted first Received field, at this offset.
    Submission(usize, Received<'a>),
}

fn scope<'a>(headers: &'a [u8], mode: ScrubMode, trusted: &[String]) -> Scope<'a> {
    let submission = match mode {
        ScrubMode::Off => return Scope::Nothing,
        ScrubMode::All => received::first_trusted_field(headers, trusted),
        ScrubMode::Authenticated => received::first_trusted_field(headers, trusted)
            .filter(|(_, received)| received.authenticated()),
    };
    match (mode, submission) {
        (_, Some((start, received))) => Scope::Submission(start, received),
        (ScrubMode::All, None) => Scope::FieldsOnly,
        _ => Scope::Nothing,
    }
}

/// Whether a field is sealgate's encryption marker ([`MARKER`]).
fn is_marker(name: Option<&[u8]>) -> bool {
    name.is_some_and(|name| name.eq_ignore_ascii_case(MARKER.as_bytes()))
}

fn is_removed(name: Option<&[u8]>, remove: &[String]) -> bool {
    name.is_some_and(|name| {
        !name.eq_ignore_ascii_case(b"Received")
            && remove
                .iter()
                .any(|r| name.eq_ignore_ascii_case(r.as_bytes()))
    })
}

/// The Received field without the client's traces in its `from` clause, or `None` when it
/// has no `from` clause.
///
/// `Received: from x (unknown [192.0.2.1])\r\n\t(using TLSv1.3 ...)\r\n\tby mx ...` becomes
/// `Received: (using TLSv1.3 ...)\r\n\tby mx ...`: each kept comment keeps the white space
/// after it, so the folding stays as it was and no line is left blank.
fn scrub_from_clause(received: &Received<'_>) -> Option<Vec<u8>> {
    let from = received.from.as_ref()?;
    let raw = received.raw;
    // The first token is the keyword itself, the first word after it the HELO name.
    let helo = Tokens::new(raw, from.range.start, from.range.end)
        .skip(1)
        .find(|t| t.kind == Kind::Word)
        .map(|t| &raw[t.range]);
    let mut kept = Vec::new();
    let mut tokens = Tokens::new(raw, from.range.start, from.range.end).peekable();
    while let Some(token) = tokens.next() {
        let next = tokens.peek().map_or(from.range.end, |t| t.range.start);
        if token.kind == Kind::Comment && !names_client(&raw[token.range.clone()], helo) {
            kept.push(token.range.start..next);
        }
    }

    let mut prefix = &raw[..from.range.start];
    let rest = &raw[from.range.end..];
    if kept.is_empty() && matches!(rest.first(), None | Some(b'\r' | b'\n')) {
        // Nothing is left of the value: no white space before the line end.
        prefix = prefix.trim_ascii_end();
    }
    let mut out = Vec::with_capacity(raw.len());
    out.extend_from_slice(prefix);
    for range in kept {
        out.extend_from_slice(&raw[range]);
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// Whether a comment of the `from` clause tells something about the client: an address
/// literal or anything that looks like an IP address, the HELO name, Exim's `helo=`, or the
/// client's certificate (`Client CN ...`, `Client RPK ...`). TLS parameters, `(No client
/// certificate requested)` and `(Authenticated sender: login)` stay.
fn names_client(comment: &[u8], helo: Option<&[u8]>) -> bool {
    let content = received::comment_content(comment).trim_ascii_start();
    let starts_with = |prefix: &[u8]| {
        content
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    if comment.contains(&b'[') || starts_with(b"client cn") || starts_with(b"client rpk") {
        return true;
    }
    let helo = helo
        .map(|h| h.strip_prefix(b"[").unwrap_or(h))
        .map(|h| h.strip_suffix(b"]").unwrap_or(h))
        .map(|h| h.strip_suffix(b".").unwrap_or(h))
        .filter(|h| !h.is_empty());
    words(comment).any(|word| {
        let bare = word.strip_suffix(b".").unwrap_or(word);
        looks_like_ip(word)
            || helo.is_some_and(|helo| bare.eq_ignore_ascii_case(helo))
            || word
                .get(..5)
                .is_some_and(|head| head.eq_ignore_ascii_case(b"helo="))
    })
}

/// The words of a comment: runs between white space, parentheses, brackets, quotes, commas
/// and angle brackets (`helo=x` stays one word, so it can be recognised).
fn words(comment: &[u8]) -> impl Iterator<Item = &[u8]> {
    comment
        .split(|b| {
            matches!(
                b,
                b' ' | b'\t'
                    | b'\r'
                    | b'\n'
                    | b'('
                    | b')'
                    | b'['
                    | b']'
                    | b'"'
                    | b','
                    | b'<'
                    | b'>'
            )
        })
        .filter(|w| !w.is_empty())
}

/// Whether a word holds an IPv4 address (four dot-separated numbers, port or prefix after
/// it allowed) or looks like an IPv6 address (hex digits and at least two colons).
fn looks_like_ip(word: &[u8]) -> bool {
    let word = word.split(|b| *b == b'=').next_back().unwrap_or(word);
    let ipv4 = word.split(|b| *b == b':' || *b == b'/').any(|part| {
        let mut count = 0;
        let all_numbers = part.split(|b| *b == b'.').all(|n| {
            count += 1;
            !n.is_empty() && n.len() <= 3 && n.iter().all(u8::is_ascii_digit)
        });
        all_numbers && count == 4
    });
    let ipv6 = word.iter().filter(|b| **b == b':').count() >= 2
        && word
            .iter()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'%' | b'/'));
    ipv4 || ipv6
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The scope and the field list the milter asks: the same rules as the header-time scrub.
    #[test]
    fn applies_and_removes() {
        let listed = vec!["user-agent".to_string(), "received".to_string()];
        let stage = |mode| ScrubStage::new(mode, listed.clone(), vec!["mx.test.example".into()]);
        for (mode, plain, authenticated) in [
            (ScrubMode::All, true, true),
            (ScrubMode::Authenticated, false, true),
            (ScrubMode::Off, false, false),
        ] {
            assert_eq!(stage(mode).applies(false), plain, "{mode:?}");
            assert_eq!(stage(mode).applies(true), authenticated, "{mode:?}");
        }
        let stage = stage(ScrubMode::All);
        assert!(stage.removes(b"User-Agent", true));
        assert!(!stage.removes(b"User-Agent", false));
        assert!(!stage.removes(b"X-Mailer", true));
        assert!(!stage.removes(b"Received", true), "never a Received field");
        assert!(
            stage.removes(b"x-sealgate-encrypted", false),
            "the marker, always"
        );
    }
    use crate::config::{Config, DEFAULT_SCRUB_HEADERS};
    use crate::pipeline::Pipeline;

    const MX: &str = "mx.example.org";

    fn trusted() -> Vec<String> {
        vec![MX.to_string()]
    }

    fn remove() -> Vec<String> {
        DEFAULT_SCRUB_HEADERS
            .split(',')
            .map(str::to_ascii_lowercase)
            .collect()
    }

    /// The rest of a submitted message's header block: kept byte for byte.
    const REST: &[u8] = b"Date: Thu, 12 Mar 2026 22:17:36 +0100\r\n\
        From: =?UTF-8?Q?Ren=C3=A9e?= <renee@example.org>\r\n\
        To: bob@example.net\r\n\
        Subject: =?UTF-8?B?w6TDtsO8?=\r\n =?UTF-8?B?IGZvbGRlZA==?=\r\n\
        Message-ID: <1@laptop.example.org>\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: multipart/alternative;\r\n\tboundary=\"b1\"\r\n\
        Content-Transfer-Encoding: 7bit\r\n\
        \r\n";

    fn block(received: &[u8], extra: &[u8]) -> Vec<u8> {
        [received, extra, REST].concat()
    }

    /// Received fields of authenticated submissions by our MTA, and what the scrub leaves of
    /// them.
    const SUBMISSIONS: [(&str, &[u8], &[u8]); 11] = [
        (
            "postfix, TLS, authenticated-sender comment",
            b"Received: from laptop.example.org (unknown [192.0.2.1])\r\n\
            \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n\
            \t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\r\n\
            \t(No client certificate requested)\r\n\
            \t(Authenticated sender: alice@example.org)\r\n\
            \tby mx.example.org (Postfix) with ESMTPSA id 4fX0nb4Cymzlfl7l;\r\n\
            \tThu, 12 Mar 2026 21:17:39 +0000 (UTC)\r\n",
            b"Received: (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n\
            \t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\r\n\
            \t(No client certificate requested)\r\n\
            \t(Authenticated sender: alice@example.org)\r\n\
            \tby mx.example.org (Postfix) with ESMTPSA id 4fX0nb4Cymzlfl7l;\r\n\
            \tThu, 12 Mar 2026 21:17:39 +0000 (UTC)\r\n",
        ),
        (
            "postfix, no TLS comment, for",
            b"Received: from laptop (unknown [192.0.2.1])\r\n\
            \tby mx.example.org (Postfix) with ESMTPA id 3D78AC876E\r\n\
            \tfor <bob@example.net>; Sun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n",
            b"Received: by mx.example.org (Postfix) with ESMTPA id 3D78AC876E\r\n\
            \tfor <bob@example.net>; Sun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n",
        ),
        (
            "postfix, TLS, for",
            b"Received: from laptop (dsl-7.isp.example [198.51.100.7])\r\n\
            \t(using TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits))\r\n\
            \t(No client certificate requested)\r\n\
            \tby mx.example.org (Postfix) with ESMTPSA id 79C45C8770\r\n\
            \tfor <bob@example.net>; Sun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n",
            b"Received: (using TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits))\r\n\
            \t(No client certificate requested)\r\n\
            \tby mx.example.org (Postfix) with ESMTPSA id 79C45C8770\r\n\
            \tfor <bob@example.net>; Sun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n",
        ),
        (
            "postfix, two comments on one line, folded IPv6 literal",
            b"Received: from maud (unknown\r\n [IPv6:2600:8800:8c09:5500::19dc])\r\n \
            (using TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits))\r\n \
            (No client certificate requested) (Authenticated sender: alyssa)\r\n \
            by mx.example.org (Postfix) with ESMTPSA id 7CEEA1F43E05;\r\n \
            Thu, 27 May 2021 22:14:36 +0100 (BST)\r\n",
            b"Received: (using TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits))\r\n \
            (No client certificate requested) (Authenticated sender: alyssa)\r\n \
            by mx.example.org (Postfix) with ESMTPSA id 7CEEA1F43E05;\r\n \
            Thu, 27 May 2021 22:14:36 +0100 (BST)\r\n",
        ),
        (
            "postfix, address-literal HELO, bare LF",
            b"Received: from [192.168.1.100] (2-237-20-237.ip236.fastwebnet.it\n [2.237.20.237])\n \
            (using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits))\n \
            by mx.example.org (Postfix) with ESMTPSA id 6193B6607336;\n \
            Thu, 28 Sep 2023 10:24:37 +0100 (BST)\n",
            b"Received: (using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits))\n \
            by mx.example.org (Postfix) with ESMTPSA id 6193B6607336;\n \
            Thu, 28 Sep 2023 10:24:37 +0100 (BST)\n",
        ),
        (
            "a comment naming the HELO goes",
            b"Received: from alice-laptop (unknown [192.0.2.1])\r\n\
            \t(Authenticated sender: Alice-Laptop.)\r\n\
            \tby mx.example.org (Postfix) with ESMTPA id 1;\r\n\tdate\r\n",
            b"Received: by mx.example.org (Postfix) with ESMTPA id 1;\r\n\tdate\r\n",
        ),
        (
            "a client certificate goes, the TLS comment stays",
            b"Received: from laptop (unknown [192.0.2.1])\r\n\
            \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\
            \t(Client CN \"alice laptop\", Issuer \"Example CA\" (verified OK))\r\n\
            \tby mx.example.org (Postfix) with ESMTPSA id 1;\r\n\tdate\r\n",
            b"Received: (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\
            \tby mx.example.org (Postfix) with ESMTPSA id 1;\r\n\tdate\r\n",
        ),
        (
            "exim: helo= and the IP go",
            b"Received: from [192.0.2.9] (helo=laptop)\n\tby mx.example.org with esmtpsa \
            (TLS1.3) tls TLS_AES_256_GCM_SHA384\n\t(Exim 4.96)\n\
            \t(envelope-from <a@example.org>)\n\tid 1abc-000; Tue, 01 Feb 2022 10:00:00 +0100\n",
            b"Received: by mx.example.org with esmtpsa \
            (TLS1.3) tls TLS_AES_256_GCM_SHA384\n\t(Exim 4.96)\n\
            \t(envelope-from <a@example.org>)\n\tid 1abc-000; Tue, 01 Feb 2022 10:00:00 +0100\n",
        ),
        (
            "bare IP addresses in comments go",
            b"Received: from localhost (10.80.80.8) (2a01:111:e400:7e0c::35) by\r\n \
            mx.example.org (10.52.223.231) with ESMTPSA id 15.2.1544.9; d\r\n",
            b"Received: by\r\n mx.example.org (10.52.223.231) with ESMTPSA id 15.2.1544.9; d\r\n",
        ),
        (
            "from clause last, before the date",
            b"Received: by mx.example.org with ESMTPSA from x (x [192.0.2.1]); d\r\n",
            b"Received: by mx.example.org with ESMTPSA ; d\r\n",
        ),
        (
            "from clause is the whole value",
            b"Received: by mx.example.org with ESMTPSA id 1\r\n from x (x [192.0.2.1])\r\n",
            b"Received: by mx.example.org with ESMTPSA id 1\r\n",
        ),
    ];

    #[test]
    fn submission_received_loses_the_client_and_nothing_else() {
        for (name, received, expected) in SUBMISSIONS {
            let input = block(received, b"");
            let output = scrub_headers(&input, ScrubMode::Authenticated, &remove(), &trusted())
                .unwrap_or_else(|| panic!("{name}: unchanged"));
            assert_eq!(
                String::from_utf8_lossy(&output),
                String::from_utf8_lossy(&block(expected, b"")),
                "{name}"
            );
            // The evidence the other stages read is intact.
            let before = received::first(&input).unwrap();
            let after = received::first(&output).unwrap();
            assert_eq!(after.from, None, "{name}");
            assert_eq!(
                (
                    &after.by,
                    &after.with,
                    &after.id,
                    &after.for_addr,
                    &after.tls,
                    after.date
                ),
                (
                    &before.by,
                    &before.with,
                    &before.id,
                    &before.for_addr,
                    &before.tls,
                    before.date
                ),
                "{name}"
            );
            // No blank continuation line, no white space right after the colon.
            let field = after.raw;
            assert!(!field.starts_with(b"Received:  "), "{name}");
            assert!(!field.starts_with(b"Received: \r"), "{name}");
            // Scrubbing twice changes nothing more.
            assert_eq!(
                scrub_headers(&output, ScrubMode::Authenticated, &remove(), &trusted()),
                None,
                "{name}"
            );
        }
    }

    /// A whole header block from a mail client, as the scrub stage leaves it: the golden file
    /// shows at a glance what an authenticated user's recipients see (`TEST_BLESS=1`
    /// rewrites it).
    #[test]
    fn a_mail_clients_submission_as_its_recipients_see_it() {
        let input =
            b"Received: from [192.168.1.20] (dsl-203-0-113-7.example.net [203.0.113.7])\r\n\
            \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\
            \t(No client certificate requested)\r\n\
            \tby mx.example.org (Postfix) with ESMTPSA id 4ABCD1234;\r\n\
            \tTue,  1 Dec 2026 10:00:00 +0100 (CET)\r\n\
            Message-ID: <a1b2c3@example.org>\r\n\
            Date: Tue, 1 Dec 2026 10:00:00 +0100\r\n\
            MIME-Version: 1.0\r\n\
            User-Agent: Mozilla Thunderbird\r\n\
            X-Originating-IP: [203.0.113.7]\r\n\
            From: Alice <alice@example.org>\r\n\
            To: bob@example.net\r\n\
            Subject: hello\r\n\
            X-Mailer: Thunderbird 128.5\r\n\
            Content-Type: text/plain; charset=UTF-8\r\n\
            \r\n";
        let output = scrub_headers(input, ScrubMode::Authenticated, &remove(), &trusted())
            .expect("an authenticated submission is scrubbed");
        crate::testing::golden("corpus/skeleton/scrub-mail-client.eml", &output);
    }

    #[test]
    fn configured_fields_go_with_their_folded_lines() {
        let received = b"Received: from x (x [192.0.2.1])\r\n\tby mx.example.org with ESMTPSA \
            id 1; d\r\n";
        let input = [
            &received[..],
            b"X-Originating-IP: [192.0.2.1]\r\n",
            b"user-agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0)\r\n Gecko/20100101\r\n\
            \tThunderbird/128.5.0\r\n",
            b"X-MAILER : Apple Mail (2.3774)\r\n",
            b"X-Mailer-Version: kept, not in the list\r\n",
            b"X-Forwarded-For: 192.0.2.1,\n 198.51.100.2\n",
            b"Subject: about X-Mailer: it stays\r\n",
            b"X-MimeOLE: Produced By Microsoft MimeOLE\r\n",
            REST,
        ]
        .concat();
        let expected = [
            &b"Received: by mx.example.org with ESMTPSA id 1; d\r\n"[..],
            b"X-Mailer-Version: kept, not in the list\r\n",
            b"Subject: about X-Mailer: it stays\r\n",
            REST,
        ]
        .concat();
        let output = scrub_headers(&input, ScrubMode::Authenticated, &remove(), &trusted());
        assert_eq!(
            String::from_utf8_lossy(&output.unwrap()),
            String::from_utf8_lossy(&expected)
        );

        // Only the fields: a submission whose Received has no from clause.
        let hidden = b"Received: by mx.example.org (Postfix) with ESMTPSA id 1; d\r\n";
        let input = block(hidden, b"X-Mailer: git-send-email 2.43.0\r\n");
        let output = scrub_headers(&input, ScrubMode::Authenticated, &remove(), &trusted());
        assert_eq!(output.unwrap(), block(hidden, b""));

        // Received is never removed through the list, below or at the top.
        let list = vec!["received".to_string(), "x-mailer".to_string()];
        let input = block(
            hidden,
            b"Received: from y (y [192.0.2.2]) by z; d\r\nX-Mailer: m\r\n",
        );
        let output = scrub_headers(&input, ScrubMode::Authenticated, &list, &trusted());
        assert_eq!(
            output.unwrap(),
            block(hidden, b"Received: from y (y [192.0.2.2]) by z; d\r\n")
        );
    }

    /// Cases where the header block stays exactly as it is.
    #[test]
    fn unchanged_when_the_mail_is_not_an_authenticated_users() {
        let x_mailer = b"X-Mailer: m\r\nX-Originating-IP: [192.0.2.1]\r\n";
        let cases: [(&str, ScrubMode, &[u8]); 8] = [
            (
                "unauthenticated, TLS",
                ScrubMode::Authenticated,
                b"Received: from mail.example.net (mail.example.net [203.0.113.5])\r\n\
                \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\
                \tby mx.example.org (Postfix) with ESMTPS id 1\r\n\
                \tfor <alice@example.org>; d\r\n",
            ),
            (
                "unauthenticated, plain",
                ScrubMode::Authenticated,
                b"Received: from x (x [203.0.113.5]) by mx.example.org with ESMTP id 1; d\r\n",
            ),
            (
                "authenticated but not by our MTA",
                ScrubMode::Authenticated,
                b"Received: from x (x [203.0.113.5]) by smtp.gmail.com with ESMTPSA id 1; d\r\n",
            ),
            (
                "forged ESMTPSA below our real ESMTP one",
                ScrubMode::Authenticated,
                b"Received: from evil.example (evil.example [203.0.113.5])\r\n\
                \tby mx.example.org (Postfix) with ESMTP id 1; d\r\n\
                Received: from laptop (unknown [192.0.2.1])\r\n\
                \tby mx.example.org (Postfix) with ESMTPSA id 2; d\r\n",
            ),
            (
                "our by only inside a comment",
                ScrubMode::Authenticated,
                b"Received: from x (by mx.example.org) by relay.example.net with ESMTPSA; d\r\n",
            ),
            ("no Received at all", ScrubMode::Authenticated, b""),
            (
                "off",
                ScrubMode::Off,
                b"Received: from x (x [192.0.2.1]) by mx.example.org with ESMTPSA id 1; d\r\n",
            ),
            (
                "Received only after the empty line",
                ScrubMode::Authenticated,
                b"\r\nReceived: from x (x [192.0.2.1]) by mx.example.org with ESMTPSA; d\r\n",
            ),
        ];
        for (name, mode, received) in cases {
            let input = block(received, x_mailer);
            assert_eq!(
                scrub_headers(&input, mode, &remove(), &trusted()),
                None,
                "{name}"
            );
            assert!(!changes(&input, mode, &remove(), &trusted()), "{name}");
        }
    }

    #[test]
    fn all_mode_scrubs_every_message() {
        // Inbound mail through our MX: its client (the sending server) goes too.
        let inbound = b"Received: from mail.example.net (mail.example.net [203.0.113.5])\r\n\
            \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\
            \tby mx.example.org (Postfix) with ESMTPS id 1\r\n\
            \tfor <alice@example.org>; d\r\n";
        let scrubbed =
            b"Received: (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\
            \tby mx.example.org (Postfix) with ESMTPS id 1\r\n\
            \tfor <alice@example.org>; d\r\n";
        let output = scrub_headers(
            &block(inbound, b"User-Agent: u\r\n"),
            ScrubMode::All,
            &remove(),
            &trusted(),
        );
        assert_eq!(output.unwrap(), block(scrubbed, b""));

        // An untrusted first Received stays; the listed fields still go.
        let foreign = b"Received: from x (x [203.0.113.5]) by relay.example.net with ESMTP; d\r\n";
        let output = scrub_headers(
            &block(foreign, b"User-Agent: u\r\n"),
            ScrubMode::All,
            &remove(),
            &trusted(),
        );
        assert_eq!(output.unwrap(), block(foreign, b""));
        assert_eq!(
            scrub_headers(&block(foreign, b""), ScrubMode::All, &remove(), &trusted()),
            None
        );
    }

    #[test]
    fn a_senders_encryption_marker_goes_in_every_mode() {
        let input = block(
            b"Received: from x (x [192.0.2.1]) by elsewhere.example with ESMTP id 1; d\r\n",
            b"X-Sealgate-Encrypted: 0123456789ABCDEF\r\nx-sealgate-encrypted:\r\n forged\r\n",
        );
        let expected = block(
            b"Received: from x (x [192.0.2.1]) by elsewhere.example with ESMTP id 1; d\r\n",
            b"",
        );
        for mode in [ScrubMode::Off, ScrubMode::Authenticated, ScrubMode::All] {
            assert!(changes(&input, mode, &remove(), &trusted()), "{mode:?}");
            let output = scrub_headers(&input, mode, &remove(), &trusted()).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&output),
                String::from_utf8_lossy(&expected),
                "{mode:?}"
            );
        }
        // Without the marker, Off changes nothing.
        assert!(!changes(&expected, ScrubMode::Off, &remove(), &trusted()));
    }

    #[test]
    fn header_block_without_empty_line() {
        let input = b"Received: from laptop (unknown [192.0.2.1])\r\n\
            \tby mx.example.org (Postfix) with ESMTPSA id 1; d\r\n\
            Subject: s\r\n\
            X-Mailer: m";
        let output = scrub_headers(input, ScrubMode::Authenticated, &remove(), &trusted());
        assert_eq!(
            output.unwrap(),
            b"Received: by mx.example.org (Postfix) with ESMTPSA id 1; d\r\nSubject: s\r\n"
        );
        let input = b"Received: from laptop (unknown [192.0.2.1]) by mx.example.org with ESMTPA";
        let output = scrub_headers(input, ScrubMode::Authenticated, &remove(), &trusted());
        assert_eq!(output.unwrap(), b"Received: by mx.example.org with ESMTPA");
    }

    #[test]
    fn hostile_header_blocks_never_panic() {
        let (_, submission, _) = SUBMISSIONS[0];
        let sample = [
            submission,
            b"X-Mailer: m\r\n (folded)\r\nReceived: from ((( by mx.example.org\r\n",
            b"user-agent:\r\n\r\n",
            b"\xff\x00: \\\r\n\t(\r\n",
            REST,
        ]
        .concat();
        for mode in [ScrubMode::Authenticated, ScrubMode::All] {
            for end in 0..=sample.len() {
                let input = &sample[..end];
                let output = scrub_headers(input, mode, &remove(), &trusted());
                assert_eq!(
                    output.is_some(),
                    changes(input, mode, &remove(), &trusted())
                );
                if let Some(output) = output {
                    assert!(output.len() < input.len());
                    assert_eq!(scrub_headers(&output, mode, &remove(), &trusted()), None);
                }
            }
        }
        let mut parens = b"Received: from x ".to_vec();
        parens.resize(1 << 20, b'(');
        parens.extend_from_slice(b"\r\n by mx.example.org with ESMTPSA; d\r\n\r\n");
        assert_eq!(
            scrub_headers(&parens, ScrubMode::Authenticated, &remove(), &trusted()),
            None
        );
        let mut fields = Vec::new();
        for _ in 0..(1 << 14) {
            fields.extend_from_slice(b"X-Mailer: m\r\n\tn\r\n");
        }
        let output = scrub_headers(&fields, ScrubMode::All, &remove(), &trusted());
        assert_eq!(output.unwrap(), b"");
    }

    #[test]
    fn stage_rewrites_only_the_header_block() {
        let config = Config::from_vars(
            &[("SEALGATE_HOSTNAME".to_string(), MX.to_string())]
                .into_iter()
                .collect(),
        )
        .unwrap();
        let stage = ScrubStage::new(
            config.scrub,
            config.scrub_headers.clone(),
            config.trusted_mta.clone(),
        );
        assert_eq!(stage.name(), "scrub");
        let pipeline = Pipeline::new(vec![Box::new(stage)]);
        let envelope = Envelope::default();
        let rcpt = Recipient::new("bob@example.net".into());

        let (_, submission, scrubbed) = SUBMISSIONS[1];
        let input = block(submission, b"X-Mailer: m\r\n");
        let mut chain = pipeline.plan(&envelope, &input, &rcpt).unwrap();
        assert_eq!(chain.variant(), "scrub");
        assert_eq!(chain.headers(&input).unwrap(), block(scrubbed, b""));
        let body = b"X-Mailer: in the body\r\nfrom laptop (unknown [192.0.2.1])\r\n";
        assert_eq!(chain.body(body).unwrap(), body);
        assert_eq!(chain.finish().unwrap(), b"");

        let inbound = block(
            b"Received: from x (x [203.0.113.5]) by mx.example.org with ESMTPS; d\r\n",
            b"X-Mailer: m\r\n",
        );
        let chain = pipeline.plan(&envelope, &inbound, &rcpt).unwrap();
        assert!(chain.is_empty());

        let off = ScrubStage::new(ScrubMode::Off, remove(), trusted());
        let plan = off.plan(&envelope, &input, &rcpt).unwrap();
        assert!(matches!(plan, Plan::Unchanged));
    }
}
