//! Parses `Received:` header fields (RFC 5321 §4.4, RFC 5322 §3.6.7): the evidence our own
//! MTA leaves about TLS and authentication. Pure functions, no I/O.
//!
//! The parser keeps byte positions (the scrub stage cuts the `from` clause out of the field)
//! and is built for hostile input: it never panics, never recurses, and allocates at most a
//! few strings no longer than the field. Junk yields a [`Received`] with whatever clauses it
//! could find.
//!
//! Only the first Received field of a message, and only when its `by` host is one of our own
//! MTAs, is evidence ([`first_trusted`]): everything below it came from the sender and can be
//! forged.

use std::ops::Range;

use crate::message::header::{self, Field, Head, value_start};
use crate::message::tls::{TlsInfo, TlsVersion};

/// One parsed Received field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Received<'a> {
    /// The whole field as given: name, colon, folded value and final line ending (if any).
    pub raw: &'a [u8],
    /// The `from` clause: the client's name as it said it (HELO) and the comments after it,
    /// such as `(unknown [192.0.2.1])`.
    pub from: Option<Clause<'a>>,
    /// The receiving host, lower-cased, as written (a trailing dot is kept).
    pub by: Option<String>,
    /// The first word of the protocol, upper-cased: ESMTP, ESMTPS, ESMTPSA, LMTP, SMTP,
    /// UTF8SMTPS, MICROSOFT (for `with Microsoft SMTP Server`), ...
    pub with: Option<String>,
    /// The `id` word.
    pub id: Option<String>,
    /// The `for` word, without its angle brackets: `user@example.org`.
    pub for_addr: Option<String>,
    /// TLS details from the first comment that gives them, anywhere in the field: Postfix's
    /// `(using TLSv1.3 with cipher ...)`, Sendmail's and Google's `(version=TLS1_3
    /// cipher=...)`, Exim's `(TLS1.3) tls CIPHER` or `(TLS1.2:CIPHER:256)`; the last such comment
    /// in the field.
    pub tls: Option<TlsInfo>,
    /// What follows the last `;` outside comments, surrounding white space trimmed; `None`
    /// when there is no `;` or nothing after it.
    pub date: Option<&'a [u8]>,
}

/// A clause of a Received field, by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clause<'a> {
    /// Byte range in [`Received::raw`]: from the clause keyword up to (not including) the next
    /// clause keyword, the `;` before the date, or the final line ending. Comments and folding
    /// white space in between belong to the clause.
    pub range: Range<usize>,
    /// `&raw[range]`.
    pub text: &'a [u8],
}

impl Received<'_> {
    /// Whether the protocol word says TLS (RFC 3848, RFC 6531): ESMTPS, ESMTPSA, LMTPS,
    /// LMTPSA, UTF8SMTPS, UTF8SMTPSA, UTF8LMTPS, UTF8LMTPSA.
    pub(crate) fn with_tls(&self) -> bool {
        self.protocol().is_some_and(|p| p.tls)
    }

    /// Whether the protocol word says the client authenticated (RFC 3848, RFC 6531): ESMTPA,
    /// ESMTPSA, LMTPA, LMTPSA, UTF8SMTPA, UTF8SMTPSA, UTF8LMTPA, UTF8LMTPSA.
    pub(crate) fn authenticated(&self) -> bool {
        self.protocol().is_some_and(|p| p.auth)
    }

    fn protocol(&self) -> Option<Protocol> {
        self.with.as_deref().and_then(Protocol::parse)
    }

    /// Whether `by` names one of `trusted` (ASCII case-insensitive, trailing dots ignored).
    fn is_by(&self, trusted: &[String]) -> bool {
        let Some(by) = self.by.as_deref() else {
            return false;
        };
        let by = by.trim_end_matches('.');
        !by.is_empty()
            && trusted
                .iter()
                .any(|host| host.trim_end_matches('.').eq_ignore_ascii_case(by))
    }
}

/// The meaning of an RFC 3848 / RFC 6531 protocol word.
#[derive(Debug, Clone, Copy)]
struct Protocol {
    tls: bool,
    auth: bool,
}

impl Protocol {
    /// `word` is upper-case. Only the registered words count: `SMTPS` or `HTTPSA` are not.
    fn parse(word: &str) -> Option<Protocol> {
        // Plain SMTP has no S/A variants in the registry.
        if word == "SMTP" {
            return Some(Protocol {
                tls: false,
                auth: false,
            });
        }
        let suffix = ["UTF8SMTP", "UTF8LMTP", "ESMTP", "LMTP"]
            .iter()
            .find_map(|base| word.strip_prefix(base))?;
        let (tls, auth) = match suffix {
            "" => (false, false),
            "S" => (true, false),
            "A" => (false, true),
            "SA" => (true, true),
            _ => return None,
        };
        Some(Protocol { tls, auth })
    }
}

/// Parses one Received field: `raw` is `Received: ...`, possibly folded (CRLF or bare LF
/// followed by SP or HT), with or without its final line ending. Without a well-formed
/// `name:` on the first line, all of `raw` is read as the value. Never fails: junk gives the
/// clauses that could be found, all `None` at worst.
///
/// The field is read by its structure (RFC 5321 §4.4: `from` clause with its comments, then
/// `by`, `via`, `with`, `id`, `for`, `;` date), not by the first keyword met: the client
/// controls the `from` clause (its HELO, which MTAs that do not sanitise it copy with spaces
/// and parentheses), so a HELO such as `x by mx.example.org with ESMTPS (using TLSv1.3 ...)`
/// must not pose as the receiving MTA's own clauses. The receiving MTA writes `by` last of
/// all that a client can influence, so the *last* `by` outside comments and quoted strings
/// starts its clauses; `via`, `with`, `id` and `for` count only after it. A TLS comment before that `by` is marked as such ([`TlsInfo::in_from_clause`]).
pub(crate) fn parse(raw: &[u8]) -> Received<'_> {
    let value_start = value_start(raw);
    let value_end = raw.len() - line_ending_len(raw);

    // The date follows the last `;` that is not inside a comment.
    let last_semicolon = Tokens::new(raw, value_start, value_end)
        .filter(|t| t.kind == Kind::Semicolon)
        .last()
        .map(|t| t.range.start);
    let clauses_end = last_semicolon.unwrap_or(value_end);
    let date = last_semicolon
        .map(|semicolon| raw[semicolon + 1..value_end].trim_ascii())
        .filter(|date| !date.is_empty());

    let mut received = Received {
        raw,
        date,
        ..Received::default()
    };
    let last_by = Tokens::new(raw, value_start, clauses_end)
        .filter(|t| {
            t.kind == Kind::Word && Keyword::parse(&raw[t.range.clone()]) == Some(Keyword::By)
        })
        .last()
        .map(|t| t.range.start);
    match last_by {
        Some(by) => {
            // Before `by`: the `from` clause (from its keyword on) and nothing else.
            let from = Tokens::new(raw, value_start, by).find(|t| {
                t.kind == Kind::Word && Keyword::parse(&raw[t.range.clone()]) == Some(Keyword::From)
            });
            if let Some(from) = from {
                received.close(Keyword::From, from.range.start..by);
            }
            received.scan(value_start, by, Part::Head);
            received.scan(by, clauses_end, Part::Tail);
        }
        // No `by` (never trusted): the clauses in the order they come.
        None => received.scan(value_start, clauses_end, Part::Whole),
    }
    received
}

/// Which part of a field [`Received::scan`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Before the last `by`: only TLS comments are looked at.
    Head,
    /// From the last `by` on: every clause (a `from` here is out of order, but it is still
    /// the client's clause, for the scrub stage to cut).
    Tail,
    /// A field without `by`: every clause.
    Whole,
}

impl<'a> Received<'a> {
    /// Reads the clauses and TLS comments of `raw[start..end]`.
    fn scan(&mut self, start: usize, end: usize, part: Part) {
        let raw = self.raw;
        let mut clause: Option<(Keyword, usize)> = None;
        let mut expect_value = false;
        let mut after_tls_word = false;
        let mut exim_cipher = None;
        for token in Tokens::new(raw, start, end) {
            let text = &raw[token.range.clone()];
            match token.kind {
                Kind::Semicolon => {}
                Kind::Comment => {
                    // The last TLS comment wins: what a client can put in (its HELO, in the
                    // `from` clause) always comes before what our MTA writes.
                    if let Some(mut tls) = tls_from_comment(comment_content(text)) {
                        tls.in_from_clause = part == Part::Head;
                        self.tls = Some(tls);
                    }
                }
                _ if part == Part::Head => {}
                Kind::Word if expect_value => {
                    expect_value = false;
                    if let Some((keyword, _)) = clause {
                        self.set(keyword, text);
                    }
                }
                Kind::Word => match Keyword::parse(text) {
                    Some(keyword) => {
                        if let Some((previous, start)) = clause {
                            self.close(previous, start..token.range.start);
                        }
                        clause = Some((keyword, token.range.start));
                        expect_value = true;
                        after_tls_word = false;
                    }
                    None => {
                        // Exim: `with esmtps (TLS1.3) tls TLS_AES_256_GCM_SHA384`.
                        if after_tls_word && exim_cipher.is_none() {
                            exim_cipher = Some(text);
                        }
                        after_tls_word = text.eq_ignore_ascii_case(b"tls");
                    }
                },
            }
        }
        if let Some((keyword, start)) = clause {
            self.close(keyword, start..end);
        }
        if let (Some(tls), Some(cipher)) = (self.tls.as_mut(), exim_cipher) {
            tls.cipher.get_or_insert_with(|| lossy(cipher));
        }
    }

    /// Records a clause's value; the first clause of each kind wins.
    fn set(&mut self, keyword: Keyword, word: &[u8]) {
        let slot = match keyword {
            Keyword::By => &mut self.by,
            Keyword::With => &mut self.with,
            Keyword::Id => &mut self.id,
            Keyword::For => &mut self.for_addr,
            Keyword::From | Keyword::Via => return,
        };
        if slot.is_some() {
            return;
        }
        let mut value = lossy(word);
        match keyword {
            Keyword::By => value.make_ascii_lowercase(),
            Keyword::With => value.make_ascii_uppercase(),
            Keyword::For => {
                if let Some(inner) = value.strip_prefix('<').and_then(|v| v.strip_suffix('>')) {
                    value = inner.to_string();
                }
            }
            _ => {}
        }
        *slot = Some(value);
    }

    /// A clause ends: keeps the first `from` clause's position.
    fn close(&mut self, keyword: Keyword, range: Range<usize>) {
        if keyword == Keyword::From && self.from.is_none() {
            self.from = Some(Clause {
                text: &self.raw[range.clone()],
                range,
            });
        }
    }
}

/// The first `Received:` field of a header block, or `None`. It need not be the first field:
/// a milter may insert fields above it. The block is a sequence of fields, each possibly
/// folded (CRLF or bare LF followed by SP or HT), optionally ended by an empty line; the name
/// matches case-insensitively, also with white space before the colon (`Received :`).
pub(crate) fn first(headers: &[u8]) -> Option<Received<'_>> {
    first_field(headers).map(|field| parse(field.raw))
}

/// [`first`]`(headers)` if and only if its `by` host is one of `trusted` (ASCII
/// case-insensitive, trailing dots ignored), else `None`. A Received field further down never
/// counts, even when the first one is not trusted: a sender can forge it.
pub(crate) fn first_trusted<'a>(headers: &'a [u8], trusted: &[String]) -> Option<Received<'a>> {
    first(headers).filter(|received| received.is_by(trusted))
}

/// [`first`] of a header block already tokenized.
pub(crate) fn first_in<'a>(head: &Head<'a>) -> Option<Received<'a>> {
    head.first("Received").map(|field| parse(field.raw))
}

/// [`first_trusted`] of a header block already tokenized.
pub(crate) fn first_trusted_in<'a>(head: &Head<'a>, trusted: &[String]) -> Option<Received<'a>> {
    first_in(head).filter(|received| received.is_by(trusted))
}

/// Like [`first_trusted`], with the field's offset in `headers`.
pub(crate) fn first_trusted_field<'a>(
    headers: &'a [u8],
    trusted: &[String],
) -> Option<(usize, Received<'a>)> {
    let field = first_field(headers)?;
    let received = parse(field.raw);
    received.is_by(trusted).then_some((field.start, received))
}

fn first_field(headers: &[u8]) -> Option<Field<'_>> {
    header::fields(headers).find(|field| field.is("Received"))
}

/// Length of the line ending at the end of `raw`: 2 for CRLF, 1 for LF or CR, else 0.
fn line_ending_len(raw: &[u8]) -> usize {
    if raw.ends_with(b"\r\n") {
        2
    } else if raw.ends_with(b"\n") || raw.ends_with(b"\r") {
        1
    } else {
        0
    }
}

/// The clause keywords (RFC 5321 §4.4), case-insensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    From,
    By,
    Via,
    With,
    Id,
    For,
}

impl Keyword {
    fn parse(word: &[u8]) -> Option<Keyword> {
        [
            (&b"from"[..], Keyword::From),
            (b"by", Keyword::By),
            (b"via", Keyword::Via),
            (b"with", Keyword::With),
            (b"id", Keyword::Id),
            (b"for", Keyword::For),
        ]
        .into_iter()
        .find_map(|(name, keyword)| word.eq_ignore_ascii_case(name).then_some(keyword))
    }
}

/// What a token of a field value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A run of bytes up to white space, `(` or `;`; quoted strings (`"a b"`) inside it may
    /// hold those.
    Word,
    /// A comment, parentheses included; comments nest and `\` escapes the next byte. An
    /// unbalanced one runs to the end of the range.
    Comment,
    /// `;` outside comments and quoted strings.
    Semicolon,
}

/// A token of a field value, by position in the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    pub(crate) range: Range<usize>,
}

/// The tokens of `raw[pos..end]`; white space (SP, HT, CR, LF) between them is skipped.
pub(crate) struct Tokens<'a> {
    raw: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Tokens<'a> {
    /// The tokens of `raw[start..end]`.
    pub(crate) fn new(raw: &'a [u8], start: usize, end: usize) -> Tokens<'a> {
        let end = end.min(raw.len());
        Tokens {
            raw,
            pos: start.min(end),
            end,
        }
    }
}

impl Iterator for Tokens<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let (raw, end) = (&self.raw[..self.end], self.end);
        let mut pos = self.pos;
        while pos < end && is_space(raw[pos]) {
            pos += 1;
        }
        if pos >= end {
            self.pos = end;
            return None;
        }
        let start = pos;
        let kind = match raw[pos] {
            b';' => {
                pos += 1;
                Kind::Semicolon
            }
            b'(' => {
                // Implementation note: a depth counter, not recursion, so a megabyte of `(`
                // costs one pass and no stack.
                let mut depth = 0usize;
                while pos < end {
                    match raw[pos] {
                        b'\\' => pos += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                pos += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    pos += 1;
                }
                Kind::Comment
            }
            _ => {
                let mut quoted = false;
                while pos < end {
                    match raw[pos] {
                        b'\\' if quoted => pos += 1,
                        b'"' => quoted = !quoted,
                        b if !quoted && (is_space(b) || b == b'(' || b == b';') => break,
                        _ => {}
                    }
                    pos += 1;
                }
                Kind::Word
            }
        };
        // An escape as the last byte steps one past the end.
        self.pos = pos.min(end);
        Some(Token {
            kind,
            range: start..self.pos,
        })
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// The inside of a comment token: without the outer `(` and, if present, `)`.
pub(crate) fn comment_content(comment: &[u8]) -> &[u8] {
    let inner = comment.strip_prefix(b"(").unwrap_or(comment);
    inner.strip_suffix(b")").unwrap_or(inner)
}

/// TLS details from a comment's content, recognised only at its start so that text a client
/// controls further inside a comment (a login name, say) cannot pose as them:
/// - Postfix: `using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) ...`
/// - Sendmail, Google, Microsoft: `version=TLSv1.3 cipher=... bits=...` (commas allowed)
/// - Exim: `TLS1.3` alone, or the older `TLS1.2:ECDHE-RSA-AES256-GCM-SHA384:256`
fn tls_from_comment(content: &[u8]) -> Option<TlsInfo> {
    let mut words = content
        .split(|b| is_space(*b) || matches!(b, b',' | b'(' | b')'))
        .filter(|w| !w.is_empty());
    let first = words.next()?;
    if first.eq_ignore_ascii_case(b"using") {
        let version = words.next().filter(|v| is_version_text(v))?;
        let cipher = words
            .by_ref()
            .skip_while(|w| !w.eq_ignore_ascii_case(b"cipher"))
            .nth(1);
        return Some(tls_info(version, cipher));
    }
    if let Some(version) = strip_prefix_ignore_case(first, b"version=") {
        if !is_version_text(version) {
            return None;
        }
        let cipher = words.find_map(|w| strip_prefix_ignore_case(w, b"cipher="));
        return Some(tls_info(version, cipher.filter(|c| !c.is_empty())));
    }
    if words.next().is_none() {
        let mut parts = first.split(|b| *b == b':');
        let version = parts.next().filter(|v| is_version_text(v))?;
        let cipher = parts.next().filter(|c| !c.is_empty());
        return Some(tls_info(version, cipher));
    }
    None
}

fn tls_info(version: &[u8], cipher: Option<&[u8]>) -> TlsInfo {
    TlsInfo {
        version: tls_version(version),
        version_text: lossy(version),
        cipher: cipher.map(lossy),
        in_from_clause: false,
    }
}

fn strip_prefix_ignore_case<'a>(word: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    word.get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .map(|_| &word[prefix.len()..])
}

/// Whether a word names a TLS or SSL version (`TLS...`, `SSL...`), known or not.
fn is_version_text(word: &[u8]) -> bool {
    strip_prefix_ignore_case(word, b"tls").is_some()
        || strip_prefix_ignore_case(word, b"ssl").is_some()
}

/// Normalises the spellings of OpenSSL/Postfix (`TLSv1.3`, `TLSv1`), Exim (`TLS1.3`),
/// Microsoft and Google (`TLS1_2`) and SSLv3 to a [`TlsVersion`].
pub(crate) fn tls_version(text: &[u8]) -> Option<TlsVersion> {
    let (tls, rest) = if let Some(rest) = strip_prefix_ignore_case(text, b"tls") {
        (true, rest)
    } else {
        (false, strip_prefix_ignore_case(text, b"ssl")?)
    };
    let rest = strip_prefix_ignore_case(rest, b"v").unwrap_or(rest);
    let number: Vec<u8> = rest
        .iter()
        .map(|b| if *b == b'_' { b'.' } else { *b })
        .collect();
    match (tls, number.as_slice()) {
        (false, b"3" | b"3.0") => Some(TlsVersion::Ssl3),
        (true, b"1" | b"1.0") => Some(TlsVersion::Tls1_0),
        (true, b"1.1") => Some(TlsVersion::Tls1_1),
        (true, b"1.2") => Some(TlsVersion::Tls1_2),
        (true, b"1.3") => Some(TlsVersion::Tls1_3),
        _ => None,
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Postfix with `smtpd_tls_received_header = yes` (reference §7.1, observed).
    const POSTFIX_TLS: &[u8] = b"Received: from client.example.net (unknown [127.0.0.1])\r\n\
        \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n\
        \t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\r\n\
        \t(No client certificate requested)\r\n\
        \tby mx.test.example (Postfix) with ESMTPS id 79C45C8770;\r\n\
        \tSun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n";

    /// A Postfix submission (mailroute.net, 2026).
    const POSTFIX_SUBMISSION: &[u8] =
        b"Received: from bvanassche.mtv.corp.google.com (unknown [104.135.180.219])\r\n\
        \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n\
        \t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\r\n\
        \t(No client certificate requested)\r\n\
        \t(Authenticated sender: bvanassche@acm.org)\r\n\
        \tby 013.lax.mailroute.net (Postfix) with ESMTPSA id 4fX0nb4Cymzlfl7l;\r\n\
        \tThu, 12 Mar 2026 21:17:39 +0000 (UTC)\r\n";

    struct Case {
        name: &'static str,
        raw: &'static [u8],
        from: Option<&'static str>,
        by: Option<&'static str>,
        with: Option<&'static str>,
        id: Option<&'static str>,
        for_addr: Option<&'static str>,
        tls: Option<(Option<TlsVersion>, &'static str, Option<&'static str>)>,
        date: Option<&'static str>,
    }

    const NONE: Case = Case {
        name: "",
        raw: b"",
        from: None,
        by: None,
        with: None,
        id: None,
        for_addr: None,
        tls: None,
        date: None,
    };

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "postfix tls (reference 7.1)",
                raw: POSTFIX_TLS,
                from: Some(
                    "from client.example.net (unknown [127.0.0.1])\r\n\
                    \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n\
                    \t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest \
                    SHA256)\r\n\t(No client certificate requested)\r\n\t",
                ),
                by: Some("mx.test.example"),
                with: Some("ESMTPS"),
                id: Some("79C45C8770"),
                tls: Some((
                    Some(TlsVersion::Tls1_3),
                    "TLSv1.3",
                    Some("TLS_AES_256_GCM_SHA384"),
                )),
                date: Some("Sun, 22 Nov 2026 12:41:13 +0000 (UTC)"),
                ..NONE
            },
            Case {
                name: "postfix plain with for",
                raw: b"Received: from client.example.net (client.example.net [192.0.2.7])\r\n\
                    \tby mx.test.example (Postfix) with ESMTP id 3D78AC876E\r\n\
                    \tfor <user@example.com>; Sun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n",
                from: Some("from client.example.net (client.example.net [192.0.2.7])\r\n\t"),
                by: Some("mx.test.example"),
                with: Some("ESMTP"),
                id: Some("3D78AC876E"),
                for_addr: Some("user@example.com"),
                date: Some("Sun, 22 Nov 2026 12:41:13 +0000 (UTC)"),
                ..NONE
            },
            Case {
                name: "postfix submission",
                raw: POSTFIX_SUBMISSION,
                by: Some("013.lax.mailroute.net"),
                with: Some("ESMTPSA"),
                id: Some("4fX0nb4Cymzlfl7l"),
                tls: Some((
                    Some(TlsVersion::Tls1_3),
                    "TLSv1.3",
                    Some("TLS_AES_256_GCM_SHA384"),
                )),
                date: Some("Thu, 12 Mar 2026 21:17:39 +0000 (UTC)"),
                ..NONE
            },
            Case {
                name: "postfix submission without from (smtpd_hide_client_session)",
                raw: b"Received: (Authenticated sender: miquel.raynal@bootlin.com)\n        \
                    by relay12.mail.gandi.net (Postfix) with ESMTPSA id 3A909200016;\n        \
                    Wed,  9 Jun 2021 08:01:44 +0000 (UTC)\n",
                by: Some("relay12.mail.gandi.net"),
                with: Some("ESMTPSA"),
                id: Some("3A909200016"),
                date: Some("Wed,  9 Jun 2021 08:01:44 +0000 (UTC)"),
                ..NONE
            },
            Case {
                name: "exim 4.98",
                raw: b"Received: from vps-58680c2d.vps.ovh.ca ([148.113.172.133]:46792 \
                    helo=mail.corridorconstructioniowa.cam)\r\n    \
                    by cpanel-003-fra.hostingww.com with esmtps (TLS1.3) tls \
                    TLS_AES_256_GCM_SHA384\r\n    (Exim 4.98)\r\n    \
                    (envelope-from <hr@corridorconstructioniowa.cam>)\r\n    \
                    id 1u8Jep-0000000FOHA-1KmS\r\n    for ceo@msolutions.com;\r\n    \
                    Fri, 25 Apr 2025 14:03:59 +0000\r\n",
                by: Some("cpanel-003-fra.hostingww.com"),
                with: Some("ESMTPS"),
                id: Some("1u8Jep-0000000FOHA-1KmS"),
                for_addr: Some("ceo@msolutions.com"),
                tls: Some((
                    Some(TlsVersion::Tls1_3),
                    "TLS1.3",
                    Some("TLS_AES_256_GCM_SHA384"),
                )),
                date: Some("Fri, 25 Apr 2025 14:03:59 +0000"),
                ..NONE
            },
            Case {
                name: "exim 4.8x",
                raw: b"Received: from [192.0.2.9] (helo=laptop)\n\
                    \tby mail.example.net with esmtpsa (TLS1.2:ECDHE-RSA-AES256-GCM-SHA384:256)\n\
                    \t(Exim 4.89)\n\t(envelope-from <a@example.net>)\n\
                    \tid 1abcDe-0001Xy-Qz; Tue, 01 Feb 2022 10:00:00 +0100\n",
                by: Some("mail.example.net"),
                with: Some("ESMTPSA"),
                id: Some("1abcDe-0001Xy-Qz"),
                tls: Some((
                    Some(TlsVersion::Tls1_2),
                    "TLS1.2",
                    Some("ECDHE-RSA-AES256-GCM-SHA384"),
                )),
                date: Some("Tue, 01 Feb 2022 10:00:00 +0100"),
                ..NONE
            },
            Case {
                name: "sendmail",
                raw: b"Received: from nalasex01a.na.qualcomm.com (nalasex01a.na.qualcomm.com\n \
                    [10.47.209.196])\n by NALASPPMTA01.qualcomm.com (8.18.1.2/8.18.1.2) with \
                    ESMTPS id 4APGXTVN025775\n (version=TLSv1.2 \
                    cipher=ECDHE-RSA-AES256-GCM-SHA384 bits=256 verify=NOT);\n \
                    Mon, 25 Nov 2024 16:33:29 GMT\n",
                by: Some("nalasppmta01.qualcomm.com"),
                with: Some("ESMTPS"),
                id: Some("4APGXTVN025775"),
                tls: Some((
                    Some(TlsVersion::Tls1_2),
                    "TLSv1.2",
                    Some("ECDHE-RSA-AES256-GCM-SHA384"),
                )),
                date: Some("Mon, 25 Nov 2024 16:33:29 GMT"),
                ..NONE
            },
            Case {
                name: "sendmail tls 1.3 with for",
                raw: b"Received: from host.example.com (host.example.com [192.0.2.1])\r\n\
                    \tby mx.example.org (8.15.2/8.15.2) with ESMTPS id 1AB2cD3e004567\r\n\
                    \t(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=NO)\r\n\
                    \tfor <r@example.org>; Mon, 1 Jan 2024 00:00:00 +0000",
                by: Some("mx.example.org"),
                with: Some("ESMTPS"),
                id: Some("1AB2cD3e004567"),
                for_addr: Some("r@example.org"),
                tls: Some((
                    Some(TlsVersion::Tls1_3),
                    "TLSv1.3",
                    Some("TLS_AES_256_GCM_SHA384"),
                )),
                date: Some("Mon, 1 Jan 2024 00:00:00 +0000"),
                ..NONE
            },
            Case {
                name: "microsoft",
                raw: b"Received: from DB3EUR04FT027.eop-eur04.prod.protection.outlook.com\r\n \
                    (2a01:111:e400:7e0c::35) by\r\n \
                    DB3EUR04HT134.eop-eur04.prod.protection.outlook.com \
                    (2a01:111:e400:7e0c::356)\r\n with Microsoft SMTP Server (version=TLS1_2,\r\n \
                    cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.2814.13; Fri, 20 Mar\r\n \
                    2020 20:27:45 +0000\r\n",
                by: Some("db3eur04ht134.eop-eur04.prod.protection.outlook.com"),
                with: Some("MICROSOFT"),
                id: Some("15.20.2814.13"),
                tls: Some((
                    Some(TlsVersion::Tls1_2),
                    "TLS1_2",
                    Some("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
                )),
                date: Some("Fri, 20 Mar\r\n 2020 20:27:45 +0000"),
                ..NONE
            },
            Case {
                name: "microsoft via frontend transport",
                raw: b"Received: from mail.nvidia.com (216.228.118.233) by\n \
                    SJ5PEPF000001F0.mail.protection.outlook.com (10.167.242.68) with Microsoft\n \
                    SMTP Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id\n \
                    15.20.8857.21 via Frontend Transport; Thu, 19 Jun 2025 11:56:03 +0000\n",
                by: Some("sj5pepf000001f0.mail.protection.outlook.com"),
                with: Some("MICROSOFT"),
                id: Some("15.20.8857.21"),
                tls: Some((
                    Some(TlsVersion::Tls1_2),
                    "TLS1_2",
                    Some("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
                )),
                date: Some("Thu, 19 Jun 2025 11:56:03 +0000"),
                ..NONE
            },
            Case {
                name: "gmail by only",
                raw: b"Received: by 2002:a05:6a20:3d8a:b0:1b3:e2c1:4d4f with SMTP id \
                    i10csp1180128pzh;\r\n        Fri, 13 Dec 2024 07:07:38 -0800 (PST)\r\n",
                by: Some("2002:a05:6a20:3d8a:b0:1b3:e2c1:4d4f"),
                with: Some("SMTP"),
                id: Some("i10csp1180128pzh"),
                date: Some("Fri, 13 Dec 2024 07:07:38 -0800 (PST)"),
                ..NONE
            },
            Case {
                name: "gmail submission",
                raw: b"Received: from [192.168.58.241] (078088045245.garwolin.vectranet.pl. \
                    [78.88.45.245])\r\n        by smtp.gmail.com with ESMTPSA id \
                    a640c23a62f3a-aa6260a3832sm1237814966b.166.2024.12.13.07.07.35\r\n        \
                    (version=TLS1_3 cipher=TLS_AES_128_GCM_SHA256 bits=128/128);\r\n        \
                    Fri, 13 Dec 2024 07:07:37 -0800 (PST)\r\n",
                by: Some("smtp.gmail.com"),
                with: Some("ESMTPSA"),
                id: Some("a640c23a62f3a-aa6260a3832sm1237814966b.166.2024.12.13.07.07.35"),
                tls: Some((
                    Some(TlsVersion::Tls1_3),
                    "TLS1_3",
                    Some("TLS_AES_128_GCM_SHA256"),
                )),
                date: Some("Fri, 13 Dec 2024 07:07:37 -0800 (PST)"),
                ..NONE
            },
            Case {
                name: "opensmtpd",
                raw: b"Received: \n\tby mail (OpenSMTPD) with ESMTPSA id 43f03150 \
                    (TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO);\n\tMon, 28 Sep 2026 06:50:09 +0000 (UTC)\n",
                by: Some("mail"),
                with: Some("ESMTPSA"),
                id: Some("43f03150"),
                tls: Some((
                    Some(TlsVersion::Tls1_3),
                    "TLSv1.3",
                    Some("TLS_AES_256_GCM_SHA384"),
                )),
                date: Some("Mon, 28 Sep 2026 06:50:09 +0000 (UTC)"),
                ..NONE
            },
            Case {
                name: "vger, quoted EHLO in a comment",
                raw: b"Received: from relay12.mail.gandi.net ([217.70.178.232]:40411 \"EHLO\n        \
                    relay12.mail.gandi.net\" rhost-flags-OK-OK-OK-OK) by vger.kernel.org\n        \
                    with ESMTP id S237467AbhFIIDl (ORCPT\n        \
                    <rfc822;linux-kernel@vger.kernel.org>);\n        Wed, 9 Jun 2021 04:03:41 -0400\n",
                by: Some("vger.kernel.org"),
                with: Some("ESMTP"),
                id: Some("S237467AbhFIIDl"),
                date: Some("Wed, 9 Jun 2021 04:03:41 -0400"),
                ..NONE
            },
            Case {
                name: "lower-case name, space before the colon, bare LF folding",
                raw: b"received :from a\n by MX.Example.ORG. with lmtpsa\n id 7; d",
                from: Some("from a\n "),
                by: Some("mx.example.org."),
                with: Some("LMTPSA"),
                id: Some("7"),
                date: Some("d"),
                ..NONE
            },
            Case {
                name: "keywords inside comments do not count",
                raw: b"Received: from x (by evil.example with ESMTPSA id 1 for <v@x>) \
                    by mx.example.org with ESMTP id 2; now\r\n",
                by: Some("mx.example.org"),
                with: Some("ESMTP"),
                id: Some("2"),
                date: Some("now"),
                ..NONE
            },
            Case {
                name: "two by clauses: the last counts (the first may be a HELO's)",
                raw: b"Received: by mx.example.org by evil.example with ESMTP with ESMTPSA; x",
                by: Some("evil.example"),
                with: Some("ESMTP"),
                date: Some("x"),
                ..NONE
            },
            Case {
                name: "nested comments and escaped parentheses",
                raw: b"Received: from a (b (c \\) by evil) \\( by evil) by mx with ESMTP; d",
                by: Some("mx"),
                with: Some("ESMTP"),
                date: Some("d"),
                ..NONE
            },
            Case {
                name: "a HELO holding by/with clauses and a TLS comment stays in the from clause",
                raw: b"Received: from x by mx.example.org with ESMTPS (using TLSv1.3 with cipher \
                    FAKE) (unknown [192.0.2.1])\r\n\tby mx.example.org (Postfix) with ESMTP id \
                    7A;\r\n\td\r\n",
                from: Some(
                    "from x by mx.example.org with ESMTPS (using TLSv1.3 with cipher FAKE) \
                    (unknown [192.0.2.1])\r\n\t",
                ),
                by: Some("mx.example.org"),
                with: Some("ESMTP"),
                id: Some("7A"),
                tls: Some((Some(TlsVersion::Tls1_3), "TLSv1.3", Some("FAKE"))),
                date: Some("d"),
                ..NONE
            },
            Case {
                name: "with before by does not count",
                raw: b"Received: from x with ESMTPS by mx.example.org id 1; d",
                from: Some("from x with ESMTPS "),
                by: Some("mx.example.org"),
                id: Some("1"),
                date: Some("d"),
                ..NONE
            },
            Case {
                name: "by missing",
                raw: b"Received: from [127.0.0.1] (localhost [127.0.0.1])\n        \
                    (Authenticated sender: ezequiel)\n        with ESMTPSA id 39C8F299F54\n",
                with: Some("ESMTPSA"),
                id: Some("39C8F299F54"),
                ..NONE
            },
            Case {
                name: "unbalanced comment swallows the rest",
                raw: b"Received: from x (y by mx.example.org with ESMTPSA id 1; date\r\n",
                from: Some("from x (y by mx.example.org with ESMTPSA id 1; date"),
                ..NONE
            },
            Case {
                name: "stray closing parenthesis is a word",
                raw: b"Received: from x) by mx with ESMTPS; d",
                from: Some("from x) "),
                by: Some("mx"),
                with: Some("ESMTPS"),
                date: Some("d"),
                ..NONE
            },
            Case {
                name: "quoted local part with semicolon and space",
                raw: b"Received: by mx with ESMTP for <\"a; b\"@x.example>; d",
                by: Some("mx"),
                with: Some("ESMTP"),
                for_addr: Some("\"a; b\"@x.example"),
                date: Some("d"),
                ..NONE
            },
            Case {
                name: "last semicolon starts the date",
                raw: b"Received: by mx; with ESMTPSA; d",
                by: Some("mx"),
                with: Some("ESMTPSA"),
                date: Some("d"),
                ..NONE
            },
            Case {
                name: "keyword only",
                raw: b"Received: by",
                ..NONE
            },
            Case {
                name: "keyword then semicolon",
                raw: b"Received: by ;",
                ..NONE
            },
            Case {
                name: "empty",
                raw: b"",
                ..NONE
            },
            Case {
                name: "name only",
                raw: b"Received:\r\n",
                ..NONE
            },
            Case {
                name: "no colon: all of it is the value",
                raw: b"Received from a by mx with ESMTP",
                from: Some("from a "),
                by: Some("mx"),
                with: Some("ESMTP"),
                ..NONE
            },
            Case {
                name: "NUL and 8-bit bytes",
                raw: b"Received: from \x00\xff (\xc3\xa9\xc3 [1.2.3.4]) by m\x00x with E\xffSMTP; \x80",
                from: Some("from \x00\u{fffd} (\u{e9}\u{fffd} [1.2.3.4]) "),
                by: Some("m\x00x"),
                with: Some("E\u{fffd}SMTP"),
                date: Some("\u{fffd}"),
                ..NONE
            },
            Case {
                name: "trailing backslash in a comment",
                raw: b"Received: by mx (\\",
                by: Some("mx"),
                ..NONE
            },
            Case {
                name: "unbalanced quote",
                raw: b"Received: by mx with ESMTP for \"a by evil; x",
                by: Some("mx"),
                with: Some("ESMTP"),
                for_addr: Some("\"a by evil; x"),
                ..NONE
            },
            Case {
                name: "TLS words a client controls inside a comment do not count",
                raw: b"Received: from x (Authenticated sender: version=TLSv1.3 using TLSv1.3)\
                    by mx with ESMTPA; d",
                from: Some("from x (Authenticated sender: version=TLSv1.3 using TLSv1.3)"),
                by: Some("mx"),
                with: Some("ESMTPA"),
                date: Some("d"),
                ..NONE
            },
            Case {
                name: "unknown TLS version",
                raw: b"Received: from x (using TLSv1.4 with cipher FUTURE) by mx with ESMTPS; d",
                by: Some("mx"),
                with: Some("ESMTPS"),
                tls: Some((None, "TLSv1.4", Some("FUTURE"))),
                date: Some("d"),
                ..NONE
            },
        ]
    }

    #[test]
    fn parses_real_and_hostile_fields() {
        for case in cases() {
            let received = parse(case.raw);
            let name = case.name;
            assert_eq!(received.raw, case.raw, "{name}");
            if let Some(from) = case.from {
                let clause = received.from.as_ref().expect(name);
                assert_eq!(String::from_utf8_lossy(clause.text), from, "{name}");
                assert_eq!(&case.raw[clause.range.clone()], clause.text, "{name}");
                assert!(clause.text.starts_with(b"from"), "{name}");
            }
            assert_eq!(received.by.as_deref(), case.by, "{name}: by");
            assert_eq!(received.with.as_deref(), case.with, "{name}: with");
            assert_eq!(received.id.as_deref(), case.id, "{name}: id");
            assert_eq!(received.for_addr.as_deref(), case.for_addr, "{name}: for");
            let tls = received
                .tls
                .as_ref()
                .map(|t| (t.version, t.version_text.as_str(), t.cipher.as_deref()));
            assert_eq!(tls, case.tls, "{name}: tls");
            let date = received.date.map(String::from_utf8_lossy);
            assert_eq!(date.as_deref(), case.date, "{name}: date");
        }
    }

    #[test]
    fn from_clause_is_found_where_expected() {
        let cases: [(&[u8], Option<&str>); 7] = [
            (
                POSTFIX_SUBMISSION,
                Some("from bvanassche.mtv.corp.google.com (unknown"),
            ),
            (b"Received: by mx from x (y); d", Some("from x (y)")),
            (b"Received: from x\r\n", Some("from x")),
            (b"Received: FROM x BY y", Some("FROM x ")),
            (b"Received: from from by y", Some("from from ")),
            (b"Received: (from x) by y", None),
            (b"Received: by y; from x", None),
        ];
        for (raw, expected) in cases {
            let received = parse(raw);
            let text = received
                .from
                .map(|c| String::from_utf8_lossy(c.text).into_owned());
            match expected {
                Some(prefix) => assert!(
                    text.as_deref().is_some_and(|t| t.starts_with(prefix)),
                    "{text:?} for {:?}",
                    String::from_utf8_lossy(raw)
                ),
                None => assert_eq!(text, None),
            }
        }
    }

    #[test]
    fn protocol_words_per_rfc_3848() {
        let cases = [
            ("ESMTP", false, false),
            ("ESMTPS", true, false),
            ("ESMTPA", false, true),
            ("ESMTPSA", true, true),
            ("esmtpsa", true, true),
            ("LMTP", false, false),
            ("LMTPS", true, false),
            ("LMTPA", false, true),
            ("LMTPSA", true, true),
            ("UTF8SMTP", false, false),
            ("UTF8SMTPS", true, false),
            ("UTF8SMTPA", false, true),
            ("UTF8SMTPSA", true, true),
            ("UTF8LMTPS", true, false),
            ("UTF8LMTPSA", true, true),
            ("SMTP", false, false),
            ("SMTPS", false, false),
            ("SMTPSA", false, false),
            ("ESMTPAS", false, false),
            ("ESMTPSS", false, false),
            ("HTTPSA", false, false),
            ("Microsoft", false, false),
            ("mapi", false, false),
            ("", false, false),
        ];
        for (word, tls, auth) in cases {
            let raw = format!("Received: by mx with {word} id 1; d");
            let received = parse(raw.as_bytes());
            assert_eq!(received.with_tls(), tls, "{word}");
            assert_eq!(received.authenticated(), auth, "{word}");
        }
        assert!(!parse(b"Received: by mx; d").with_tls());
        assert!(!parse(b"Received: by mx; d").authenticated());
    }

    #[test]
    fn tls_versions_normalise() {
        let cases: [(&[u8], Option<TlsVersion>); 16] = [
            (b"TLSv1.3", Some(TlsVersion::Tls1_3)),
            (b"TLS1.3", Some(TlsVersion::Tls1_3)),
            (b"TLS1_3", Some(TlsVersion::Tls1_3)),
            (b"tlsv1_3", Some(TlsVersion::Tls1_3)),
            (b"TLSv1.2", Some(TlsVersion::Tls1_2)),
            (b"TLS1_2", Some(TlsVersion::Tls1_2)),
            (b"TLSv1.1", Some(TlsVersion::Tls1_1)),
            (b"TLSv1", Some(TlsVersion::Tls1_0)),
            (b"TLS1.0", Some(TlsVersion::Tls1_0)),
            (b"TLS1_0", Some(TlsVersion::Tls1_0)),
            (b"SSLv3", Some(TlsVersion::Ssl3)),
            (b"SSLv1", None),
            (b"TLSv1.4", None),
            (b"TLSv13", None),
            (b"TLS", None),
            (b"ESMTPS", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                tls_version(text),
                expected,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn first_is_the_first_received_field_not_the_first_field() {
        let block = b"X-Milter: inserted above\r\n\
            X-Folded: a\r\n Received: by evil.example with ESMTPSA; d\r\n\
            Received: from x (x [192.0.2.1])\r\n\tby mx.example.org with ESMTP id 1;\r\n\td\r\n\
            Received: from y by evil.example with ESMTPSA id 2; d\r\n\
            \r\n\
            Received: by body.example with ESMTPSA; d\r\n";
        let received = first(block).unwrap();
        assert_eq!(received.by.as_deref(), Some("mx.example.org"));
        assert!(received.raw.starts_with(b"Received: from x"));
        assert!(received.raw.ends_with(b"\td\r\n"));

        let bare_lf = b"X-A: b\nreceived: by MX.example.org\n\twith ESMTPSA; d\nX-B: c\n\n";
        let received = first(bare_lf).unwrap();
        assert_eq!(
            received.raw,
            b"received: by MX.example.org\n\twith ESMTPSA; d\n"
        );
        assert!(received.authenticated());

        let spaced = b"Received : by mx.example.org with ESMTPSA; d\r\n";
        assert_eq!(first(spaced).unwrap().by.as_deref(), Some("mx.example.org"));

        // A Received after the empty line is body, not header.
        assert!(first(b"Subject: x\r\n\r\nReceived: by mx; d\r\n").is_none());
        assert!(first(b"").is_none());
        assert!(first(b"\r\n").is_none());
        assert!(first(b"X-Received: by mx; d\r\nReceived-SPF: pass\r\n").is_none());
        // A name with a space inside is not a field name.
        assert!(first(b"Re ceived: by mx; d\r\n").is_none());
    }

    #[test]
    fn first_trusted_only_believes_our_own_mta() {
        let trusted = vec![
            "mx.example.org".to_string(),
            "submit.example.org".to_string(),
        ];
        let ours = b"Received: from x by MX.Example.Org. with ESMTPSA; d\r\nSubject: s\r\n\r\n";
        let received = first_trusted(ours, &trusted).unwrap();
        assert_eq!(received.by.as_deref(), Some("mx.example.org."));
        assert!(received.authenticated());

        // A forged trusted-looking field below an untrusted first one never counts.
        let forged = b"Received: from x by relay.example.net with ESMTP; d\r\n\
            Received: from y by mx.example.org with ESMTPSA; d\r\n\r\n";
        assert!(first_trusted(forged, &trusted).is_none());
        assert!(first(forged).is_some());

        let no_by = b"Received: from x with ESMTPSA; d\r\n\r\n";
        assert!(first_trusted(no_by, &trusted).is_none());
        let by_in_comment = b"Received: from x (by mx.example.org) with ESMTPSA; d\r\n\r\n";
        assert!(first_trusted(by_in_comment, &trusted).is_none());
        let trailing_dot_trusted = vec!["mx.example.org.".to_string()];
        let plain = b"Received: by mx.example.org with ESMTPSA; d\r\n";
        assert!(first_trusted(plain, &trailing_dot_trusted).is_some());
        assert!(first_trusted(plain, &[]).is_none());
        assert!(first_trusted(b"Received: by . with ESMTPSA; d\r\n", &[".".into()]).is_none());
    }

    #[test]
    fn hostile_input_is_linear_and_never_panics() {
        const MIB: usize = 1 << 20;
        let mut huge = b"Received: from x ".to_vec();
        huge.resize(huge.len() + MIB, b'(');
        huge.extend_from_slice(b" by mx with ESMTPSA; d\r\n");
        let started = std::time::Instant::now();
        let received = parse(&huge);
        assert_eq!(received.by, None);
        assert!(received.from.is_some());
        let mut closing = b"Received: by mx ".to_vec();
        closing.resize(closing.len() + MIB, b')');
        assert_eq!(parse(&closing).by.as_deref(), Some("mx"));
        let mut escapes = b"Received: by mx (".to_vec();
        escapes.resize(escapes.len() + MIB, b'\\');
        assert_eq!(parse(&escapes).by.as_deref(), Some("mx"));
        let mut words = Vec::new();
        for _ in 0..MIB / 16 {
            words.extend_from_slice(b"by x with y id ");
        }
        assert_eq!(parse(&words).by.as_deref(), Some("x"));
        let mut lines = b"Received: by mx".to_vec();
        for _ in 0..MIB / 4 {
            lines.extend_from_slice(b"\r\n ;");
        }
        assert!(first(&lines).is_some());
        assert!(started.elapsed() < std::time::Duration::from_secs(20));

        // Every prefix of every sample, and every single-byte corruption of one.
        for case in cases() {
            for end in 0..=case.raw.len() {
                let received = parse(&case.raw[..end]);
                if let Some(from) = received.from {
                    assert_eq!(&case.raw[from.range], from.text);
                }
                let _ = first(&case.raw[..end]);
            }
        }
        for at in 0..POSTFIX_SUBMISSION.len() {
            for byte in [b'(', b')', b'\\', b'"', b';', b'\n', b'\r', b':', 0, 0xff] {
                let mut raw = POSTFIX_SUBMISSION.to_vec();
                raw[at] = byte;
                let _ = parse(&raw);
                let _ = first_trusted(&raw, &["013.lax.mailroute.net".into()]);
            }
        }
    }

    #[test]
    fn a_tls_comment_in_the_helo_position_does_not_override_the_real_one() {
        let raw = b"Received: from x (using TLSv1.3 with cipher FAKE) (unknown [192.0.2.1])\r\n\t(using TLSv1 with cipher ECDHE-RSA-AES256-SHA (256/256 bits))\r\n\tby mx.example.org (Postfix) with ESMTPS id 1;\r\n\tSun, 22 Nov 2026 12:00:00 +0000\r\n";
        let received = parse(raw);
        let tls = received.tls.expect("tls");
        assert_eq!(tls.version, Some(TlsVersion::Tls1_0));
        assert_eq!(tls.cipher.as_deref(), Some("ECDHE-RSA-AES256-SHA"));
        assert!(tls.in_from_clause);
    }

    #[test]
    fn tls_comments_after_by_are_the_mtas() {
        let sendmail = parse(
            b"Received: from h (h [192.0.2.1]) by mx (8.15.2) with ESMTPS id 1 \
            (version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=NO); d",
        );
        assert!(!sendmail.tls.expect("tls").in_from_clause);
    }
}
