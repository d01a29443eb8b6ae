//! Replies: encoding our server replies, and decoding the (multi-line) replies of the next hop.

use std::fmt;

use bytes::{BufMut, BytesMut};
use memchr::{memchr, memchr2};
use nom::{
    IResult, Parser,
    branch::alt,
    bytes::complete::{tag, take_while_m_n},
    character::complete::{char, one_of, satisfy},
    combinator::{eof, opt, rest},
    sequence::terminated,
};

use crate::Decode;

/// An RFC 3463 enhanced status code such as `2.1.5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedCode {
    /// 2, 4 or 5; matches the first digit of the reply code.
    pub class: u8,
    /// The subject (second number).
    pub subject: u16,
    /// The detail (third number).
    pub detail: u16,
}

impl EnhancedCode {
    /// Builds `class.subject.detail`.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    fn encode(&self, out: &mut BytesMut) {
        push_decimal(out, u16::from(self.class));
        out.put_u8(b'.');
        push_decimal(out, self.subject);
        out.put_u8(b'.');
        push_decimal(out, self.detail);
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A complete SMTP/LMTP reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code carried by every line, if any.
    pub enhanced: Option<EnhancedCode>,
    /// The text lines, without code, separator or enhanced code.
    pub lines: Vec<String>,
}

impl Reply {
    /// One-line reply with an enhanced code: `Reply::new(250, EnhancedCode::new(2,1,5), "Ok")`.
    pub fn new(code: u16, enhanced: EnhancedCode, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// Reply without enhanced code (greeting's extension lines, LHLO response): `lines[0]` first.
    pub fn plain(code: u16, lines: Vec<String>) -> Self {
        Self {
            code,
            enhanced: None,
            lines,
        }
    }

    /// True for 2xx replies.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// True for 4xx replies.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// True for 5xx replies.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// Appends the wire form: "250-line\r\n" ... "250 last\r\n". When `enhanced` is Some, EVERY line is
    /// prefixed "x.y.z " after the code (RFC 2034). Text is sanitised: CR/LF inside a line become spaces.
    /// An empty lines vec encodes as "250 \r\n" (with enhanced: "250 2.0.0\r\n").
    pub fn encode(&self, out: &mut BytesMut) {
        let count = self.lines.len().max(1);
        for index in 0..count {
            let text = self.lines.get(index).map_or("", String::as_str);
            push_decimal(out, self.code);
            out.put_u8(if index + 1 < count { b'-' } else { b' ' });
            if let Some(enhanced) = &self.enhanced {
                enhanced.encode(out);
                if !text.is_empty() {
                    out.put_u8(b' ');
                }
            }
            push_sanitised(out, text);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The text lines joined with a space, without the enhanced code (for logging).
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enhanced) = &self.enhanced {
            write!(f, " {enhanced}")?;
        }
        for (index, line) in self.lines.iter().enumerate() {
            f.write_str(if index == 0 { " " } else { " / " })?;
            // Replies end up in logs; a CR or LF there would forge log lines.
            for part in line.split(['\r', '\n']).enumerate() {
                if part.0 > 0 {
                    f.write_str(" ")?;
                }
                f.write_str(part.1)?;
            }
        }
        Ok(())
    }
}

/// Writes `n` in decimal without going through `fmt` (replies are encoded on every command).
fn push_decimal(out: &mut BytesMut, n: u16) {
    let mut digits = [0u8; 5];
    let mut start = digits.len();
    let mut n = n;
    loop {
        start -= 1;
        // `n % 10` is below 10, so the cast cannot truncate.
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Copies `text`, turning CR and LF into spaces so that a reply line can never be split or injected.
fn push_sanitised(out: &mut BytesMut, text: &str) {
    let mut rest = text.as_bytes();
    while let Some(at) = memchr2(b'\r', b'\n', rest) {
        out.extend_from_slice(&rest[..at]);
        out.put_u8(b' ');
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

/// Errors from [`ReplyDecoder::decode`]. After an error the peer is out of step; close the connection.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// A line is not `ddd[-| ]text` with a code in 200..=599, or a continuation line changed the code.
    Malformed,
    /// A line exceeds the line limit, or the reply has too many lines.
    TooLong,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Malformed => f.write_str("malformed reply"),
            ReplyError::TooLong => f.write_str("reply too long"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// Client side (our LMTP/SMTP client towards Dovecot/Postfix): reads one complete (multi-line) reply.
#[derive(Debug, Clone)]
pub struct ReplyDecoder {
    /// Longest accepted line, not counting its line ending.
    max_line: usize,
    /// Most lines accepted in one reply.
    max_lines: usize,
    /// Lines of a reply whose last line has not arrived yet; consumed lines are not kept in `buf`.
    partial: Option<Reply>,
}

impl Default for ReplyDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// One parsed reply line: code, whether it is the last line, raw text.
struct ReplyLine<'a> {
    code: u16,
    last: bool,
    text: &'a [u8],
}

impl ReplyDecoder {
    /// A decoder with a 4096-byte line limit and at most 100 lines per reply.
    pub fn new() -> Self {
        Self {
            max_line: 4096,
            max_lines: 100,
            partial: None,
        }
    }

    /// Ok(None) need more. Parses "ddd-text" continuation lines up to "ddd text" (also "ddd" with nothing
    /// after, and "250 " with empty text as smtp-sink sends). Lines end in CRLF or bare LF. The enhanced
    /// code is taken from the first line if its text starts with "c.s.d " (or is exactly "c.s.d") where c
    /// matches the first digit of the code; it is stripped from every line that carries it. Errors: code
    /// not 3 digits in 200..=599, continuation lines with a different code, line too long, too many lines.
    /// Complete lines are removed from `buf` as they are read.
    ///
    /// # Errors
    ///
    /// [`ReplyError`] when the peer's reply is unusable; the decoder forgets the partial reply, and the
    /// caller should close the connection since it can no longer tell which reply answers what.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ReplyError> {
        let result = self.decode_inner(buf);
        if result.is_err() {
            self.partial = None;
        }
        result
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ReplyError> {
        loop {
            let window = self.max_line.saturating_add(2);
            let Some(lf) = memchr(b'\n', &buf[..buf.len().min(window)]) else {
                return if buf.len() >= window {
                    Err(ReplyError::TooLong)
                } else {
                    Ok(None)
                };
            };
            let frame = buf.split_to(lf + 1);
            let line = match &frame[..lf] {
                [line @ .., b'\r'] => line,
                line => line,
            };
            if line.len() > self.max_line {
                return Err(ReplyError::TooLong);
            }
            let Ok((_, parsed)) = reply_line(line) else {
                return Err(ReplyError::Malformed);
            };
            if !(200..=599).contains(&parsed.code) {
                return Err(ReplyError::Malformed);
            }
            // The first line decides the code and the enhanced code for the whole reply.
            let reply = self.partial.get_or_insert_with(|| Reply {
                code: parsed.code,
                enhanced: leading_enhanced_code(parsed.code, parsed.text),
                lines: Vec::new(),
            });
            if reply.code != parsed.code {
                return Err(ReplyError::Malformed);
            }
            let mut text = parsed.text;
            if let Some(expected) = reply.enhanced
                && let Ok((rest, found)) = enhanced_prefix(text)
                && found == expected
            {
                text = rest;
            }
            if reply.lines.len() >= self.max_lines {
                return Err(ReplyError::TooLong);
            }
            reply.lines.push(String::from_utf8_lossy(text).into_owned());
            if parsed.last {
                return Ok(self.partial.take());
            }
        }
    }
}

impl Decode for ReplyDecoder {
    type Item = Reply;
    type Error = ReplyError;

    /// See [`ReplyDecoder::decode`]; after an error, close the connection.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ReplyError> {
        // The inherent method, which callers use without importing the trait.
        ReplyDecoder::decode(self, buf)
    }
}

/// The enhanced code at the start of a first line, if its class matches the reply code's first digit.
fn leading_enhanced_code(code: u16, text: &[u8]) -> Option<EnhancedCode> {
    let (_, enhanced) = enhanced_prefix(text).ok()?;
    (u16::from(enhanced.class) == code / 100).then_some(enhanced)
}

/// `ddd-text`, `ddd text`, `ddd ` or `ddd`.
fn reply_line(i: &[u8]) -> IResult<&[u8], ReplyLine<'_>> {
    (
        take_while_m_n(3, 3, |b: u8| b.is_ascii_digit()),
        opt(one_of("- ")),
        rest,
    )
        .map_opt(|(digits, separator, text): (&[u8], Option<char>, &[u8])| {
            // "250x" and "2500" have neither separator nor end after the code.
            if separator.is_none() && !text.is_empty() {
                return None;
            }
            Some(ReplyLine {
                code: digits_value(digits),
                last: separator != Some('-'),
                text,
            })
        })
        .parse(i)
}

/// `c.s.d` followed by a space (consumed) or the end of the text.
fn enhanced_prefix(i: &[u8]) -> IResult<&[u8], EnhancedCode> {
    terminated(
        (
            satisfy(|c| c.is_ascii_digit()),
            char('.'),
            take_while_m_n(1, 3, |b: u8| b.is_ascii_digit()),
            char('.'),
            take_while_m_n(1, 3, |b: u8| b.is_ascii_digit()),
        ),
        alt((tag(&b" "[..]), eof)),
    )
    .map(|(class, _, subject, _, detail)| EnhancedCode {
        // `satisfy` only let an ASCII digit through.
        class: (class as u8).wrapping_sub(b'0'),
        subject: digits_value(subject),
        detail: digits_value(detail),
    })
    .parse(i)
}

/// Value of at most three ASCII digits (the parsers above guarantee both).
fn digits_value(digits: &[u8]) -> u16 {
    digits
        .iter()
        .fold(0, |n, d| n * 10 + u16::from(d.wrapping_sub(b'0')))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decode::same_at_every_split;
    use crate::{AfterError, decode_chunks};

    fn encode(reply: &Reply) -> String {
        let mut out = BytesMut::new();
        reply.encode(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    /// Decodes `input` whole, split at every offset and byte by byte; all must agree. Decoding stops
    /// at the first error (the connection would close), so the rest of the input is never fed and
    /// only the results compare.
    fn decode_all_splits(input: &[u8]) -> Vec<Result<Reply, ReplyError>> {
        same_at_every_split(input, |chunks| {
            decode_chunks(ReplyDecoder::new(), chunks, AfterError::Stop).items
        })
    }

    fn plain(code: u16, lines: &[&str]) -> Reply {
        Reply::plain(code, lines.iter().map(|l| (*l).to_owned()).collect())
    }

    fn enhanced(code: u16, e: (u8, u16, u16), lines: &[&str]) -> Reply {
        Reply {
            code,
            enhanced: Some(EnhancedCode::new(e.0, e.1, e.2)),
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    #[test]
    fn encode_table() {
        let cases = [
            (
                Reply::new(250, EnhancedCode::new(2, 1, 5), "Ok"),
                "250 2.1.5 Ok\r\n",
            ),
            (
                enhanced(550, (5, 1, 1), &["No such user", "really"]),
                "550-5.1.1 No such user\r\n550 5.1.1 really\r\n",
            ),
            (
                plain(250, &["mx.example", "PIPELINING", "8BITMIME"]),
                "250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
            ),
            (plain(220, &["ready"]), "220 ready\r\n"),
            (plain(250, &[]), "250 \r\n"),
            (enhanced(250, (2, 0, 0), &[]), "250 2.0.0\r\n"),
            (enhanced(250, (2, 0, 0), &[""]), "250 2.0.0\r\n"),
            (plain(250, &[""]), "250 \r\n"),
            (
                Reply::new(451, EnhancedCode::new(4, 3, 0), "a\r\nb\rc\nd"),
                "451 4.3.0 a  b c d\r\n",
            ),
            (
                plain(354, &["End data with <CR><LF>.<CR><LF>"]),
                "354 End data with <CR><LF>.<CR><LF>\r\n",
            ),
        ];
        for (reply, wire) in &cases {
            assert_eq!(encode(reply), *wire, "{reply:?}");
        }
    }

    #[test]
    fn round_trip() {
        let cases = [
            Reply::new(250, EnhancedCode::new(2, 1, 5), "Ok"),
            Reply::new(250, EnhancedCode::new(2, 1, 5), ""),
            Reply::new(421, EnhancedCode::new(4, 4, 2), "Timeout"),
            Reply::new(554, EnhancedCode::new(5, 7, 1), "Rejected: 1.2.3 looks odd"),
            enhanced(550, (5, 1, 1), &["one", "two", "three"]),
            enhanced(250, (2, 100, 999), &["big numbers"]),
            plain(250, &["mx.example", "PIPELINING", "ENHANCEDSTATUSCODES"]),
            plain(220, &["mx ESMTP"]),
            plain(354, &["go ahead"]),
            plain(250, &["caf\u{e9} \u{2603}"]),
            plain(250, &[""]),
        ];
        for reply in &cases {
            let wire = encode(reply);
            assert_eq!(
                decode_all_splits(wire.as_bytes()),
                vec![Ok(reply.clone())],
                "{wire:?}"
            );
        }
    }

    #[test]
    fn decode_table() {
        use ReplyError::{Malformed, TooLong};
        let long_line = format!("250 {}\r\n", "x".repeat(4092)); // 4096 bytes of content
        let too_long_line = format!("250 {}\r\n", "x".repeat(4093));
        let unterminated_too_long = format!("250 {}", "x".repeat(5000));
        let hundred_lines = format!("{}250 last\r\n", "250-x\r\n".repeat(99));
        let too_many_lines = format!("{}250 last\r\n", "250-x\r\n".repeat(100));
        let cases: Vec<(&str, Vec<Result<Reply, ReplyError>>)> = vec![
            ("", vec![]),
            ("250 Ok", vec![]),
            ("250-a\r\n", vec![]),
            ("250 Ok\r\n", vec![Ok(plain(250, &["Ok"]))]),
            ("250 Ok\n", vec![Ok(plain(250, &["Ok"]))]),
            ("250\r\n", vec![Ok(plain(250, &[""]))]),
            // smtp-sink sends "250 " with an empty text.
            ("250 \r\n", vec![Ok(plain(250, &[""]))]),
            ("250-\r\n250 \r\n", vec![Ok(plain(250, &["", ""]))]),
            (
                "250-host\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 CHUNKING\r\n",
                vec![Ok(plain(
                    250,
                    &[
                        "host",
                        "PIPELINING",
                        "ENHANCEDSTATUSCODES",
                        "8BITMIME",
                        "CHUNKING",
                    ],
                ))],
            ),
            (
                "250 2.1.5 Ok\r\n",
                vec![Ok(enhanced(250, (2, 1, 5), &["Ok"]))],
            ),
            ("250 2.0.0\r\n", vec![Ok(enhanced(250, (2, 0, 0), &[""]))]),
            (
                "250 2.1.5  two spaces\r\n",
                vec![Ok(enhanced(250, (2, 1, 5), &[" two spaces"]))],
            ),
            // Class must match the code; otherwise the text is plain text.
            ("250 5.1.1 odd\r\n", vec![Ok(plain(250, &["5.1.1 odd"]))]),
            ("250 2.1.5x\r\n", vec![Ok(plain(250, &["2.1.5x"]))]),
            ("250 2.1.5000 x\r\n", vec![Ok(plain(250, &["2.1.5000 x"]))]),
            ("250 2.1 x\r\n", vec![Ok(plain(250, &["2.1 x"]))]),
            (
                "550-5.1.1 <u@d>: User unknown\r\n550-5.1.1 second\r\n550 5.1.1 third\r\n",
                vec![Ok(enhanced(
                    550,
                    (5, 1, 1),
                    &["<u@d>: User unknown", "second", "third"],
                ))],
            ),
            // Only lines carrying the same enhanced code lose it.
            (
                "550-5.1.1 a\r\n550-b\r\n550 5.7.1 c\r\n",
                vec![Ok(enhanced(550, (5, 1, 1), &["a", "b", "5.7.1 c"]))],
            ),
            (
                "354 End data with <CR><LF>.<CR><LF>\r\n",
                vec![Ok(plain(354, &["End data with <CR><LF>.<CR><LF>"]))],
            ),
            (
                "452 4.2.2 Mailbox full\r\n",
                vec![Ok(enhanced(452, (4, 2, 2), &["Mailbox full"]))],
            ),
            // Several pipelined replies (an LMTP DATA answer per recipient).
            (
                "250 2.0.0 <a@d> Saved\r\n550 5.2.2 <b@d> Quota\r\n",
                vec![
                    Ok(enhanced(250, (2, 0, 0), &["<a@d> Saved"])),
                    Ok(enhanced(550, (5, 2, 2), &["<b@d> Quota"])),
                ],
            ),
            ("250 caf\u{e9}\r\n", vec![Ok(plain(250, &["caf\u{e9}"]))]),
            (
                long_line.as_str(),
                vec![Ok(plain(250, &[&"x".repeat(4092)]))],
            ),
            (hundred_lines.as_str(), {
                let mut lines = vec!["x"; 99];
                lines.push("last");
                vec![Ok(plain(250, &lines))]
            }),
            // --- malformed ---
            ("\r\n", vec![Err(Malformed)]),
            ("25 Ok\r\n", vec![Err(Malformed)]),
            ("2500 Ok\r\n", vec![Err(Malformed)]),
            ("250x\r\n", vec![Err(Malformed)]),
            ("abc Ok\r\n", vec![Err(Malformed)]),
            (" 250 Ok\r\n", vec![Err(Malformed)]),
            ("199 Ok\r\n", vec![Err(Malformed)]),
            ("100 Continue\r\n", vec![Err(Malformed)]),
            ("600 Ok\r\n", vec![Err(Malformed)]),
            ("250-a\r\n251 b\r\n", vec![Err(Malformed)]),
            ("250-a\r\nx\r\n", vec![Err(Malformed)]),
            (
                "250 ok\r\n250-a\r\n550 b\r\n",
                vec![Ok(plain(250, &["ok"])), Err(Malformed)],
            ),
            (too_long_line.as_str(), vec![Err(TooLong)]),
            (unterminated_too_long.as_str(), vec![Err(TooLong)]),
            (too_many_lines.as_str(), vec![Err(TooLong)]),
        ];
        for (input, expected) in &cases {
            assert_eq!(
                &decode_all_splits(input.as_bytes()),
                expected,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn invalid_utf8_text_is_replaced() {
        assert_eq!(
            decode_all_splits(b"250 a\xffb\r\n"),
            vec![Ok(plain(250, &["a\u{fffd}b"]))]
        );
    }

    #[test]
    fn bytes_after_a_reply_stay_in_buffer() {
        let mut dec = ReplyDecoder::new();
        let mut buf = BytesMut::from(&b"250 ok\r\n354 go"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(plain(250, &["ok"])));
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], b"354 go");
    }

    #[test]
    fn decoder_recovers_after_error() {
        let mut dec = ReplyDecoder::default();
        let mut buf = BytesMut::from(&b"250-a\r\n999 b\r\n250 ok\r\n"[..]);
        assert_eq!(dec.decode(&mut buf), Err(ReplyError::Malformed));
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(plain(250, &["ok"])));
    }

    #[test]
    fn classes_and_text() {
        let ok = Reply::new(250, EnhancedCode::new(2, 1, 5), "Ok");
        assert!(ok.is_positive() && !ok.is_transient() && !ok.is_permanent());
        let temp = plain(451, &["later"]);
        assert!(!temp.is_positive() && temp.is_transient() && !temp.is_permanent());
        let perm = plain(554, &["no"]);
        assert!(!perm.is_positive() && !perm.is_transient() && perm.is_permanent());
        assert!(!plain(354, &[]).is_positive());

        let multi = enhanced(550, (5, 1, 1), &["a", "b"]);
        assert_eq!(multi.text(), "a b");
        assert_eq!(multi.to_string(), "550 5.1.1 a / b");
        assert_eq!(ok.to_string(), "250 2.1.5 Ok");
        assert_eq!(plain(250, &[]).to_string(), "250");
        assert_eq!(plain(250, &["x\r\ny"]).to_string(), "250 x  y");
        assert_eq!(EnhancedCode::new(2, 1, 5).to_string(), "2.1.5");
    }

    #[test]
    fn push_decimal_digits() {
        for n in [0u16, 7, 10, 99, 250, 1000, 65535] {
            let mut out = BytesMut::new();
            push_decimal(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
        }
    }

    #[test]
    fn errors_display() {
        assert_eq!(ReplyError::Malformed.to_string(), "malformed reply");
        assert_eq!(ReplyError::TooLong.to_string(), "reply too long");
    }
}
