//! MIME for the encryption stage: splits a header block into the fields that stay outside
//! and the `Content-*` fields that go inside, and recognises mail that is already encrypted
//! (openpgp.md §3). Pure functions, no I/O.
//!
//! Wrongly passing a message through stores plaintext; wrongly encrypting only costs the
//! reader a second decryption. So every check here answers "encrypt" when unsure.

use mail_parser::{ContentType, Message, MessageParser, MessagePart, MimeHeaders, PartType};
use memchr::memmem;
use sequoia_openpgp::Packet;
use sequoia_openpgp::armor;
use sequoia_openpgp::parse::{PacketParser, PacketParserResult, Parse};

/// The first line of an ASCII-armored OpenPGP message.
const BEGIN_MESSAGE: &str = "-----BEGIN PGP MESSAGE-----";
/// The last line of an ASCII-armored OpenPGP message.
const END_MESSAGE: &str = "-----END PGP MESSAGE-----";

/// DER of the CMS contentType OID `id-envelopedData` (1.2.840.113549.1.7.3), tag and length
/// included.
const OID_ENVELOPED_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03,
];
/// DER of the CMS contentType OID `id-ct-authEnvelopedData` (1.2.840.113549.1.9.16.1.23).
const OID_AUTH_ENVELOPED_DATA: &[u8] = &[
    0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17,
];
/// Decoded octets of a `.p7m` body that decide its contentType: the SEQUENCE tag, at most
/// five length octets, the longer OID and the `[0]` tag that follows it.
const CMS_PEEK: usize = 1 + 5 + OID_AUTH_ENVELOPED_DATA.len() + 1;

/// One header field of a header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The name as written, without the colon and any white space before it; empty for a
    /// line that is not a well-formed field (no colon, or bytes outside printable ASCII).
    pub name: &'a [u8],
    /// The whole field byte for byte: its folded lines and its CRLF (absent only when the
    /// block ends without one).
    pub raw: &'a [u8],
}

impl Field<'_> {
    /// Whether the field is called `name` (ASCII case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// A header block split for PGP/MIME: what stays outside, what goes inside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderSplit<'a> {
    /// Every field that is not `Content-*`, in original order (MIME-Version and junk lines
    /// included).
    pub outer: Vec<Field<'a>>,
    /// The `Content-*` fields, in original order.
    pub content: Vec<Field<'a>>,
    /// Whether `outer` holds a MIME-Version field.
    pub has_mime_version: bool,
    /// Whether the block ends with its empty line.
    pub ends_with_blank_line: bool,
    /// What follows the empty line: empty for a header block as the pipeline hands it over,
    /// the body when the input is a whole message.
    pub body: &'a [u8],
}

impl<'a> HeaderSplit<'a> {
    /// The header block itself (everything before `body`) of `input`, the slice this split
    /// was made from.
    fn header_block(&self, input: &'a [u8]) -> &'a [u8] {
        &input[..input.len() - self.body.len()]
    }

    /// How many Content-Type fields the block has.
    fn content_types(&self) -> usize {
        self.content.iter().filter(|f| f.is("Content-Type")).count()
    }
}

/// Splits a header block (or a whole message) into its fields. A field ends at a CRLF not
/// followed by SP or HT; the block ends at the first empty line or at the end of the input.
/// Never fails: a line that is not a well-formed field stays in `outer`.
pub fn split_header_block(block: &[u8]) -> HeaderSplit<'_> {
    let mut split = HeaderSplit::default();
    let mut pos = 0;
    while pos < block.len() {
        let rest = &block[pos..];
        if rest.starts_with(b"\r\n") {
            split.ends_with_blank_line = true;
            split.body = &rest[2..];
            return split;
        }
        let end = pos + field_len(rest);
        let raw = &block[pos..end];
        let field = Field {
            name: field_name(raw),
            raw,
        };
        if is_content_field(field.name) {
            split.content.push(field);
        } else {
            split.has_mime_version |= field.is("MIME-Version");
            split.outer.push(field);
        }
        pos = end;
    }
    split
}

/// Length of the field that starts `rest`: up to and including the CRLF that is not
/// followed by SP or HT, or all of `rest`.
fn field_len(rest: &[u8]) -> usize {
    let mut from = 0;
    loop {
        let Some(crlf) = memmem::find(&rest[from..], b"\r\n") else {
            return rest.len();
        };
        let next = from + crlf + 2;
        match rest.get(next) {
            Some(b' ' | b'\t') => from = next,
            _ => return next,
        }
    }
}

/// The field name (before the colon, trailing WSP trimmed), or empty when the first line is
/// not `name:` with a name of printable ASCII.
fn field_name(raw: &[u8]) -> &[u8] {
    let first_line = memmem::find(raw, b"\r\n").map_or(raw, |end| &raw[..end]);
    let Some(colon) = memchr::memchr(b':', first_line) else {
        return b"";
    };
    let name = first_line[..colon].trim_ascii_end();
    if !name.is_empty() && name.iter().all(|b| (0x21..=0x7e).contains(b)) {
        name
    } else {
        b""
    }
}

fn is_content_field(name: &[u8]) -> bool {
    name.get(..8)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"Content-"))
}

/// What the encryption stage does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Not (recognisably) encrypted: encrypt it.
    Encrypt,
    /// Already encrypted to its reader: store it unchanged.
    PassThrough,
    /// The header block cannot tell; [`classify_message`] decides once the body is known.
    NeedBody,
}

/// Classifies a message by its header block (openpgp.md §3): `multipart/encrypted` and
/// enveloped S/MIME pass through; `text/*`, `multipart/alternative`, `multipart/mixed` and
/// S/MIME without `smime-type` need the body; everything else is encrypted.
pub fn classify_headers(headers: &[u8]) -> Treatment {
    inspect_headers(headers).0
}

/// [`classify_headers`] and [`probe`] at once: one split, one parse.
pub fn inspect_headers(headers: &[u8]) -> (Treatment, Probe) {
    let split = split_header_block(headers);
    let content_types = split.content_types();
    parse_content_fields(&split, |parsed| {
        let treatment = match (content_types, parsed) {
            // No Content-Type: text/plain.
            (0, _) => Treatment::NeedBody,
            (1, Some(message)) => classify_type(message.content_type()),
            // Unparseable, or several Content-Types, on which readers disagree: unsure.
            _ => Treatment::Encrypt,
        };
        let probe = match parsed {
            Some(message) => {
                probe_fields(message.content_type(), message.content_transfer_encoding())
            }
            // No Content-* field at all: text/plain in 7bit.
            None if split.content.is_empty() => probe_fields(None, None),
            None => Probe::None,
        };
        (treatment, probe)
    })
}

/// Runs `read` on mail-parser's reading of the block's `Content-*` fields alone: no other
/// field changes what they say, and parsing a handful of fields instead of the whole block
/// (dates, address lists) is several times cheaper.
fn parse_content_fields<R>(
    split: &HeaderSplit<'_>,
    read: impl FnOnce(Option<&Message<'_>>) -> R,
) -> R {
    let mut block =
        Vec::with_capacity(split.content.iter().map(|f| f.raw.len() + 2).sum::<usize>() + 2);
    for field in &split.content {
        block.extend_from_slice(field.raw);
        if !field.raw.ends_with(b"\n") {
            block.extend_from_slice(b"\r\n");
        }
    }
    block.extend_from_slice(b"\r\n");
    read(MessageParser::default().parse_headers(&block).as_ref())
}

fn classify_type(content_type: Option<&ContentType<'_>>) -> Treatment {
    let Some(ct) = content_type else {
        return Treatment::NeedBody;
    };
    if is_type(ct, "multipart", "encrypted") {
        Treatment::PassThrough
    } else if is_pkcs7_mime(ct) {
        match ct.attribute("smime-type") {
            Some(kind)
                if kind.eq_ignore_ascii_case("enveloped-data")
                    || kind.eq_ignore_ascii_case("authEnveloped-data") =>
            {
                Treatment::PassThrough
            }
            // signed-data, compressed-data, certs-only: readable by anyone.
            Some(_) => Treatment::Encrypt,
            None => Treatment::NeedBody,
        }
    } else if ct.ctype().eq_ignore_ascii_case("text")
        || is_type(ct, "multipart", "alternative")
        || is_type(ct, "multipart", "mixed")
    {
        Treatment::NeedBody
    } else {
        Treatment::Encrypt
    }
}

/// Classifies a whole message held in memory: [`Treatment::PassThrough`] only for the
/// already-encrypted forms of openpgp.md §3, else [`Treatment::Encrypt`].
///
/// Armored blocks must also be what they claim: an OpenPGP message made of key packets
/// (PKESK/SKESK) and one encrypted container, so a pasted template or a broken block is
/// encrypted all the same.
pub fn classify_message(message: &[u8]) -> Treatment {
    let split = split_header_block(message);
    let headers = split.header_block(message);
    match classify_headers(headers) {
        Treatment::NeedBody => {}
        decided => return decided,
    }
    if pkcs7_without_type(headers) {
        return cms_verdict(headers, split.body, true).unwrap_or(Treatment::Encrypt);
    }
    let Some(parsed) = MessageParser::default().parse(message) else {
        return Treatment::Encrypt;
    };
    let root = parsed.root_part();
    let encrypted = match effective_type(root) {
        (t, _) if t.eq_ignore_ascii_case("text") => {
            text_body(root).and_then(armored_message).is_some()
        }
        (t, s) if t.eq_ignore_ascii_case("multipart") && s.eq_ignore_ascii_case("alternative") => {
            armored_alternatives(&parsed, root)
        }
        (t, s) if t.eq_ignore_ascii_case("multipart") && s.eq_ignore_ascii_case("mixed") => {
            exchange_mangled(&parsed, root)
        }
        _ => false,
    };
    if encrypted {
        Treatment::PassThrough
    } else {
        Treatment::Encrypt
    }
}

/// An early verdict from the start of a message: a legacy `.p7m` (no `smime-type`) is
/// decided by its first decoded octets, so it need not fit the peek limit. `None` when the
/// prefix cannot decide (not such a message, or not enough of it yet).
pub fn classify_prefix(prefix: &[u8]) -> Option<Treatment> {
    let split = split_header_block(prefix);
    if !split.ends_with_blank_line {
        return None;
    }
    let headers = split.header_block(prefix);
    if !is_legacy_p7m(headers) {
        return None;
    }
    cms_verdict(headers, split.body, false)
}

/// The armor line a text part that is one OpenPGP message starts with.
const ARMOR_BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";

/// Markers of an armored OpenPGP message somewhere in a multipart body: the armor line, and
/// its start base64-encoded (a base64 part that begins with the armor).
const ARMOR_MARKERS: [&[u8]; 2] = [b"BEGIN PGP MESSAGE", b"LS0tLS1CRUdJTiBQR1Ag"];

/// How much of a multipart body must pass without any armor marker before it is encrypted
/// without waiting for the whole message.
pub const MULTIPART_PROBE: usize = 16 * 1024;

/// How the start of a held message can settle its verdict before the message is complete,
/// so that ordinary mail (the great majority) is encrypted as it streams in instead of being
/// held to the end and parsed whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Nothing to learn early: hold and parse the whole message.
    None,
    /// A `.p7m` without `smime-type`: its first decoded octets decide.
    LegacyP7m,
    /// A single text part not in base64: unless its first non-blank octets are the armor
    /// line, it is not one armored message.
    Text,
    /// multipart/alternative or mixed: without any armor marker it cannot be one of the
    /// encrypted forms.
    Multipart,
}

/// The probe for a header block that [`classify_headers`] found `NeedBody`.
pub fn probe(headers: &[u8]) -> Probe {
    inspect_headers(headers).1
}

fn probe_fields(content_type: Option<&ContentType<'_>>, encoding: Option<&str>) -> Probe {
    let base64 = encoding.is_some_and(|e| e.eq_ignore_ascii_case("base64"));
    match content_type {
        Some(ct) if is_pkcs7_mime(ct) => Probe::LegacyP7m,
        Some(ct) if ct.ctype().eq_ignore_ascii_case("multipart") => Probe::Multipart,
        Some(ct) if ct.ctype().eq_ignore_ascii_case("text") && !base64 => Probe::Text,
        None if !base64 => Probe::Text,
        _ => Probe::None,
    }
}

/// An early verdict on a held message (`header_len` octets of header block, then what has
/// arrived of the body), or `None` to keep holding. With `complete`, the whole message is
/// there. Only ever answers [`Treatment::Encrypt`] early, except for a legacy `.p7m`.
pub fn early_verdict(
    probe: Probe,
    message: &[u8],
    header_len: usize,
    complete: bool,
) -> Option<Treatment> {
    let body = message.get(header_len..).unwrap_or_default();
    match probe {
        Probe::None => None,
        Probe::LegacyP7m => classify_prefix(message),
        Probe::Text => {
            let start = body
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(body.len());
            let text = &body[start..];
            let shared = text.len().min(ARMOR_BEGIN.len());
            if text[..shared] != ARMOR_BEGIN[..shared] {
                Some(Treatment::Encrypt)
            } else if complete && text.is_empty() {
                // An empty or blank text message is not an encrypted one.
                Some(Treatment::Encrypt)
            } else {
                None
            }
        }
        Probe::Multipart => {
            let marked = ARMOR_MARKERS
                .iter()
                .any(|m| memchr::memmem::find(body, m).is_some());
            (!marked && (complete || body.len() >= MULTIPART_PROBE)).then_some(Treatment::Encrypt)
        }
    }
}

/// Whether the header block announces S/MIME without `smime-type` (a legacy `.p7m`), which
/// [`classify_prefix`] decides from the first body octets.
pub fn is_legacy_p7m(headers: &[u8]) -> bool {
    classify_headers(headers) == Treatment::NeedBody && pkcs7_without_type(headers)
}

/// Whether the top-level type is S/MIME without `smime-type` (headers already classified
/// `NeedBody`, so there is exactly one Content-Type).
fn pkcs7_without_type(headers: &[u8]) -> bool {
    MessageParser::default()
        .parse_headers(headers)
        .is_some_and(|m| m.content_type().is_some_and(is_pkcs7_mime))
}

/// The verdict on a `.p7m` body: pass through only if its DER contentType is enveloped or
/// authEnveloped data. `None` when `complete` is false and too little is decoded yet.
fn cms_verdict(headers: &[u8], body: &[u8], complete: bool) -> Option<Treatment> {
    let encoding = MessageParser::default()
        .parse_headers(headers)
        .and_then(|m| m.content_transfer_encoding().map(str::to_ascii_lowercase));
    let der = match encoding.as_deref() {
        Some("base64") => match base64_prefix(body, CMS_PEEK) {
            Some(der) => der,
            None => return Some(Treatment::Encrypt),
        },
        None | Some("7bit" | "8bit" | "binary") => body.iter().take(CMS_PEEK).copied().collect(),
        // Quoted-printable DER or an unknown encoding: nobody sends that. Unsure.
        Some(_) => return Some(Treatment::Encrypt),
    };
    if der.len() < CMS_PEEK && !complete {
        return None;
    }
    Some(if cms_enveloped(&der) {
        Treatment::PassThrough
    } else {
        Treatment::Encrypt
    })
}

/// Whether DER (or BER) starts a CMS ContentInfo whose contentType is enveloped or
/// authEnveloped data: `SEQUENCE { OID, [0] ... }`.
fn cms_enveloped(der: &[u8]) -> bool {
    let Some((&0x30, rest)) = der.split_first() else {
        return false;
    };
    let Some(rest) = skip_length(rest) else {
        return false;
    };
    [OID_ENVELOPED_DATA, OID_AUTH_ENVELOPED_DATA]
        .iter()
        .any(|oid| {
            rest.strip_prefix(*oid)
                .is_some_and(|after| after.first() == Some(&0xa0))
        })
}

/// Skips a DER/BER length: short form, long form of up to four octets, or indefinite.
fn skip_length(der: &[u8]) -> Option<&[u8]> {
    let (&first, rest) = der.split_first()?;
    match first {
        0x00..=0x80 => Some(rest),
        0x81..=0x84 => rest.get(usize::from(first & 0x7f)..),
        _ => None,
    }
}

/// Decodes base64 until `want` octets are out, the padding, or the end; line breaks and
/// spaces are skipped. `None` on a character outside the alphabet.
fn base64_prefix(text: &[u8], want: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(want);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'\r' | b'\n' | b' ' | b'\t' => continue,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            // Masked to one octet, so the cast keeps every bit.
            out.push(((acc >> bits) & 0xff) as u8);
            if out.len() >= want {
                break;
            }
        }
    }
    Some(out)
}

fn is_type(ct: &ContentType<'_>, ctype: &str, subtype: &str) -> bool {
    ct.ctype().eq_ignore_ascii_case(ctype)
        && ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case(subtype))
}

fn is_pkcs7_mime(ct: &ContentType<'_>) -> bool {
    is_type(ct, "application", "pkcs7-mime") || is_type(ct, "application", "x-pkcs7-mime")
}

/// A part's type and subtype; no Content-Type is `text/plain`.
fn effective_type<'p>(part: &'p MessagePart<'_>) -> (&'p str, &'p str) {
    match part.content_type() {
        Some(ct) => (ct.ctype(), ct.subtype().unwrap_or("")),
        None => ("text", "plain"),
    }
}

/// The decoded text of a leaf text part.
fn text_body<'p>(part: &'p MessagePart<'_>) -> Option<&'p str> {
    match &part.body {
        PartType::Text(text) | PartType::Html(text) => Some(text),
        _ => None,
    }
}

/// The direct children of a multipart part.
fn children<'m>(message: &'m Message<'_>, part: &MessagePart<'_>) -> Vec<&'m MessagePart<'m>> {
    part.sub_parts()
        .unwrap_or_default()
        .iter()
        .filter_map(|&id| message.part(id))
        .collect()
}

/// `text` is exactly one armored OpenPGP message with only white space around it, and that
/// message is encrypted. Returns the block.
fn armored_message(text: &str) -> Option<&str> {
    let block = text.trim();
    let single = block.starts_with(BEGIN_MESSAGE)
        && block.ends_with(END_MESSAGE)
        && block.matches("-----BEGIN PGP").count() == 1
        && block.matches("-----END PGP").count() == 1;
    (single && is_encrypted_openpgp(block.as_bytes())).then_some(block)
}

/// `multipart/alternative` of exactly `text/plain` and `text/html` (either order), each
/// nothing but the same armored encrypted message.
fn armored_alternatives(message: &Message<'_>, root: &MessagePart<'_>) -> bool {
    let parts = children(message, root);
    let [first, second] = parts.as_slice() else {
        return false;
    };
    let (plain, html) = match (effective_type(first), effective_type(second)) {
        (("text", "plain"), ("text", "html")) => (first, second),
        (("text", "html"), ("text", "plain")) => (second, first),
        _ => return false,
    };
    let Some(block) = text_body(plain).and_then(armored_message) else {
        return false;
    };
    text_body(html)
        .is_some_and(|html| without_white_space(&html_text(html)) == without_white_space(block))
}

/// Exchange's mangled PGP/MIME: `multipart/mixed` of exactly an empty `text/plain`, the
/// `application/pgp-encrypted` version part and an `application/octet-stream` that is an
/// encrypted OpenPGP message.
fn exchange_mangled(message: &Message<'_>, root: &MessagePart<'_>) -> bool {
    let parts = children(message, root);
    let [text, version, payload] = parts.as_slice() else {
        return false;
    };
    effective_type(text) == ("text", "plain")
        && text_body(text).is_some_and(|t| t.trim().is_empty())
        && effective_type(version) == ("application", "pgp-encrypted")
        && effective_type(payload) == ("application", "octet-stream")
        && is_encrypted_openpgp(payload.contents().trim_ascii())
}

/// Whether `data` (armored or binary) is an OpenPGP message of one or more PKESK/SKESK
/// packets followed by exactly one encrypted container (SEIP), and nothing else.
fn is_encrypted_openpgp(data: &[u8]) -> bool {
    let parser = if data.starts_with(BEGIN_MESSAGE.as_bytes()) {
        let reader = armor::Reader::from_bytes(
            data,
            armor::ReaderMode::Tolerant(Some(armor::Kind::Message)),
        );
        PacketParser::from_reader(reader)
    } else {
        PacketParser::from_bytes(data)
    };
    let Ok(mut ppr) = parser else {
        return false;
    };
    let (mut keys, mut containers) = (0, 0);
    while let PacketParserResult::Some(pp) = ppr {
        if containers > 0 || pp.recursion_depth() != 0 {
            return false;
        }
        match pp.packet {
            Packet::PKESK(_) | Packet::SKESK(_) => keys += 1,
            Packet::SEIP(_) => containers += 1,
            _ => return false,
        }
        ppr = match pp.next() {
            Ok((_, next)) => next,
            Err(_) => return false,
        };
    }
    keys > 0 && containers == 1
}

/// The text of an HTML body: tags and comments removed, character references decoded.
/// Element contents all count as text (a `<style>` or `<title>` is more than the block, so
/// such a message is encrypted).
fn html_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(at) = rest.find(['<', '&']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
        } else if rest.starts_with('<') {
            rest = rest.find('>').map_or("", |end| &rest[end + 1..]);
        } else {
            let (text, used) = character_reference(rest);
            out.push_str(&text);
            rest = &rest[used..];
        }
    }
    out.push_str(rest);
    out
}

/// Decodes the character reference at the start of `s` (which starts with `&`). Returns the
/// text and how many bytes it used; an unknown reference stays as written.
fn character_reference(s: &str) -> (String, usize) {
    let literal = ("&".to_owned(), 1);
    let Some(end) = s.get(..12).unwrap_or(s).find(';') else {
        return literal;
    };
    let name = &s[1..end];
    let decoded = match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some('\u{a0}'),
        _ => name
            .strip_prefix("#x")
            .or_else(|| name.strip_prefix("#X"))
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .or_else(|| name.strip_prefix('#').and_then(|dec| dec.parse().ok()))
            .and_then(char::from_u32),
    };
    match decoded {
        Some(c) => (c.to_string(), end + 1),
        None => literal,
    }
}

fn without_white_space(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;
    use std::path::Path;

    use sequoia_openpgp::armor;

    use super::*;

    fn raws<'a>(fields: &[Field<'a>]) -> Vec<&'a [u8]> {
        fields.iter().map(|f| f.raw).collect()
    }

    #[test]
    fn split_header_block_cases() {
        struct Case {
            name: &'static str,
            input: &'static [u8],
            outer: &'static [&'static [u8]],
            content: &'static [&'static [u8]],
            mime_version: bool,
            blank: bool,
            body: &'static [u8],
        }
        let cases = [
            Case {
                name: "simple",
                input: b"From: a\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\
                  Subject: s\r\n\r\n",
                outer: &[b"From: a\r\n", b"MIME-Version: 1.0\r\n", b"Subject: s\r\n"],
                content: &[b"Content-Type: text/plain\r\n"],
                mime_version: true,
                blank: true,
                body: b"",
            },
            Case {
                name: "folding kept, case-insensitive names",
                input: b"Subject: a\r\n b\r\n\tc\r\n\
                  content-TYPE: multipart/mixed;\r\n boundary=x\r\n\
                  CONTENT-transfer-encoding: 7bit\r\nmime-version: 1.0\r\n\r\n",
                outer: &[b"Subject: a\r\n b\r\n\tc\r\n", b"mime-version: 1.0\r\n"],
                content: &[
                    b"content-TYPE: multipart/mixed;\r\n boundary=x\r\n",
                    b"CONTENT-transfer-encoding: 7bit\r\n",
                ],
                mime_version: true,
                blank: true,
                body: b"",
            },
            Case {
                name: "no blank line, no final CRLF",
                input: b"From: a\r\nContent-Type: text/plain",
                outer: &[b"From: a\r\n"],
                content: &[b"Content-Type: text/plain"],
                mime_version: false,
                blank: false,
                body: b"",
            },
            Case {
                name: "no blank line, final CRLF",
                input: b"From: a\r\nContent-Id: <x>\r\n",
                outer: &[b"From: a\r\n"],
                content: &[b"Content-Id: <x>\r\n"],
                mime_version: false,
                blank: false,
                body: b"",
            },
            Case {
                name: "empty header block",
                input: b"\r\n",
                outer: &[],
                content: &[],
                mime_version: false,
                blank: true,
                body: b"",
            },
            Case {
                name: "nothing at all",
                input: b"",
                outer: &[],
                content: &[],
                mime_version: false,
                blank: false,
                body: b"",
            },
            Case {
                name: "junk lines stay outside",
                input: b"junk without colon\r\n leading: continuation\r\n\
                  Content-Type\r\n Content-X: y\r\n: empty name\r\n\
                  Content-Type : text/plain\r\n\r\n",
                outer: &[
                    b"junk without colon\r\n leading: continuation\r\n",
                    b"Content-Type\r\n Content-X: y\r\n",
                    b": empty name\r\n",
                ],
                content: &[b"Content-Type : text/plain\r\n"],
                mime_version: false,
                blank: true,
                body: b"",
            },
            Case {
                name: "leading continuation line",
                input: b" Content-Type: text/plain\r\nFrom: a\r\n\r\n",
                outer: &[b" Content-Type: text/plain\r\n", b"From: a\r\n"],
                content: &[],
                mime_version: false,
                blank: true,
                body: b"",
            },
            Case {
                name: "8-bit bytes",
                input: b"Subject: Gr\xc3\xbc\xc3\x9fe\r\nCont\xe9nt-Type: x\r\n\
                  Content-Description: \xff\xfe\r\n\r\n",
                outer: &[
                    b"Subject: Gr\xc3\xbc\xc3\x9fe\r\n",
                    b"Cont\xe9nt-Type: x\r\n",
                ],
                content: &[b"Content-Description: \xff\xfe\r\n"],
                mime_version: false,
                blank: true,
                body: b"",
            },
            Case {
                name: "bare LF is not a line end; whole message gives the body",
                input: b"A: b\nContent-Type: c\r\nContent-Type: d\r\n\r\nbody\r\n\r\nmore",
                outer: &[b"A: b\nContent-Type: c\r\n"],
                content: &[b"Content-Type: d\r\n"],
                mime_version: false,
                blank: true,
                body: b"body\r\n\r\nmore",
            },
            Case {
                name: "whitespace-only continuation is not the blank line",
                input: b"Subject: a\r\n \r\n b\r\n\r\n",
                outer: &[b"Subject: a\r\n \r\n b\r\n"],
                content: &[],
                mime_version: false,
                blank: true,
                body: b"",
            },
            Case {
                name: "lone CR",
                input: b"\r",
                outer: &[b"\r"],
                content: &[],
                mime_version: false,
                blank: false,
                body: b"",
            },
        ];
        for case in cases {
            let split = split_header_block(case.input);
            assert_eq!(raws(&split.outer), case.outer, "{}", case.name);
            assert_eq!(raws(&split.content), case.content, "{}", case.name);
            assert_eq!(split.has_mime_version, case.mime_version, "{}", case.name);
            assert_eq!(split.ends_with_blank_line, case.blank, "{}", case.name);
            assert_eq!(split.body, case.body, "{}", case.name);
            // Nothing is lost: the pieces add up to the input.
            let total: usize = split
                .outer
                .iter()
                .chain(&split.content)
                .map(|f| f.raw.len())
                .sum();
            let blank = if case.blank { 2 } else { 0 };
            assert_eq!(
                total + blank + split.body.len(),
                case.input.len(),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn split_never_panics_on_any_prefix() {
        let input = b"A: b\r\n c\r\nContent-Type: x;\r\n\ty\r\n\r\n\r\nbody\xff\r";
        for end in 0..=input.len() {
            for start in 0..=end {
                let _ = split_header_block(&input[start..end]);
                let _ = classify_headers(&input[start..end]);
                let _ = classify_message(&input[start..end]);
                let _ = classify_prefix(&input[start..end]);
            }
        }
    }

    #[test]
    fn classify_headers_cases() {
        use Treatment::*;
        let cases: &[(&str, Treatment)] = &[
            (
                "Content-Type: multipart/encrypted; \
                 protocol=\"application/pgp-encrypted\"; boundary=b",
                PassThrough,
            ),
            (
                "Content-Type: Multipart/Encrypted;\r\n boundary=b",
                PassThrough,
            ),
            (
                "Content-Type: multipart/encrypted; \
                 protocol=\"application/pkcs7-mime\"; boundary=b",
                PassThrough,
            ),
            (
                "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
                PassThrough,
            ),
            (
                "Content-Type: application/pkcs7-mime; smime-type=\"Enveloped-Data\"",
                PassThrough,
            ),
            (
                "Content-Type: application/x-pkcs7-mime; smime-type=authEnveloped-data",
                PassThrough,
            ),
            (
                "Content-Type: application/pkcs7-mime;\r\n SMIME-TYPE=AUTHENVELOPED-DATA",
                PassThrough,
            ),
            (
                "Content-Type: application/pkcs7-mime; smime-type=signed-data",
                Encrypt,
            ),
            (
                "Content-Type: application/x-pkcs7-mime; smime-type=compressed-data",
                Encrypt,
            ),
            (
                "Content-Type: application/pkcs7-mime; smime-type=certs-only",
                Encrypt,
            ),
            (
                "Content-Type: application/pkcs7-mime; smime-type=unknown",
                Encrypt,
            ),
            (
                "Content-Type: application/pkcs7-mime; name=smime.p7m",
                NeedBody,
            ),
            ("Content-Type: application/x-pkcs7-mime", NeedBody),
            ("Content-Type: text/plain; charset=us-ascii", NeedBody),
            ("Content-Type: TEXT/HTML", NeedBody),
            ("Subject: no content type", NeedBody),
            ("", NeedBody),
            ("Content-Type: multipart/alternative; boundary=b", NeedBody),
            ("Content-Type: multipart/mixed; boundary=b", NeedBody),
            (
                "Content-Type: multipart/signed; \
                 protocol=\"application/pgp-signature\"; boundary=b",
                Encrypt,
            ),
            ("Content-Type: multipart/related; boundary=b", Encrypt),
            ("Content-Type: application/octet-stream", Encrypt),
            ("Content-Type: application/pgp-encrypted", Encrypt),
            ("Content-Type: image/png", Encrypt),
            ("Content-Type: message/rfc822", Encrypt),
            // Two Content-Type fields: readers disagree which counts.
            (
                "Content-Type: multipart/encrypted; boundary=b\r\nContent-Type: text/plain",
                Encrypt,
            ),
        ];
        for (fields, want) in cases {
            let block = if fields.is_empty() {
                "\r\n".to_owned()
            } else {
                format!("From: a@example.org\r\n{fields}\r\n\r\n")
            };
            assert_eq!(classify_headers(block.as_bytes()), *want, "{fields:?}");
            // Without the empty line (a message that is all header) the answer is the same.
            let unterminated = &block[..block.len() - 2];
            if !unterminated.is_empty() {
                assert_eq!(
                    classify_headers(unterminated.as_bytes()),
                    *want,
                    "{fields:?}"
                );
            }
        }
    }

    /// A structurally valid encrypted OpenPGP message (a PKESK v3 for ECDH and a SEIPD v1)
    /// with random contents, armored with CRLF line ends.
    fn armored_message_block(seed: u8) -> String {
        let mut pkesk = vec![3];
        pkesk.extend([seed; 8]);
        pkesk.push(18);
        pkesk.extend([0x01, 0x07, 0x40]);
        pkesk.extend([seed ^ 0x5a; 32]);
        pkesk.push(48);
        pkesk.extend([seed ^ 0xa5; 48]);
        let mut seipd = vec![1];
        seipd.extend((0..150u8).map(|i| i.wrapping_mul(seed)));
        let mut packets = vec![0xc1, u8::try_from(pkesk.len()).unwrap()];
        packets.extend(pkesk);
        packets.extend([0xd2, u8::try_from(seipd.len()).unwrap()]);
        packets.extend(seipd);
        let mut writer = armor::Writer::new(Vec::new(), armor::Kind::Message).unwrap();
        writer.write_all(&packets).unwrap();
        let armored = String::from_utf8(writer.finalize().unwrap()).unwrap();
        armored.trim_end().replace('\n', "\r\n")
    }

    fn msg(fields: &str, body: &str) -> Vec<u8> {
        format!("From: a@example.org\r\nSubject: s\r\n{fields}\r\n{body}").into_bytes()
    }

    fn qp(text: &str) -> String {
        text.replace('=', "=3D")
            .split("\r\n")
            .map(|line| match line.len() {
                0..=30 => line.to_owned(),
                _ => format!("{}=\r\n{}", &line[..30], &line[30..]),
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    fn b64(data: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
                << (8 * (3 - chunk.len()));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out.as_bytes()
            .chunks(76)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    fn der_content_info(oid: &[u8]) -> Vec<u8> {
        let mut inner = oid.to_vec();
        inner.extend([0xa0, 0x03, 0x02, 0x01, 0x00]);
        let mut der = vec![0x30, u8::try_from(inner.len()).unwrap()];
        der.extend(inner);
        der
    }

    #[test]
    fn classify_message_cases() {
        use Treatment::*;
        let block = armored_message_block(7);
        let other = armored_message_block(9);
        let html = format!(
            "<html><body><pre>{}</pre></body></html>",
            block
                .replace("\r\n", "<br>\r\n")
                .replace('+', "&#43;")
                .replace('=', "&#x3D;")
        );
        let alt = |plain: &str, html: &str| {
            msg(
                "Content-Type: multipart/alternative; boundary=\"b\"\r\n",
                &format!(
                    "--b\r\nContent-Type: text/plain\r\n\r\n{plain}\r\n--b\r\n\
                      Content-Type: text/html\r\n\r\n{html}\r\n--b--\r\n"
                ),
            )
        };
        let exchange = |text: &str, version_type: &str, payload: &str| {
            msg(
                "Content-Type: multipart/mixed; boundary=\"x\"\r\n",
                &format!(
                    "--x\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}\r\n--x\r\n\
                      Content-Type: {version_type}\r\n\r\nVersion: 1\r\n--x\r\n\
                      Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n\
                      {payload}\r\n--x--\r\n"
                ),
            )
        };
        let p7m = |ctype: &str, cte: &str, der: &[u8]| {
            msg(
                &format!("Content-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n"),
                &format!("{}\r\n", b64(der)),
            )
        };
        let mut enveloped = der_content_info(OID_ENVELOPED_DATA);
        enveloped.extend([0u8; 40]);
        let signed_oid = [
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
        ];
        let cases: Vec<(&str, Vec<u8>, Treatment)> = vec![
            // Header-level answers hold for whole messages too.
            (
                "pgp/mime",
                msg("Content-Type: multipart/encrypted; boundary=b\r\n", "x"),
                PassThrough,
            ),
            (
                "multipart/signed",
                msg("Content-Type: multipart/signed; boundary=b\r\n", "x"),
                Encrypt,
            ),
            // Inline PGP.
            (
                "inline",
                msg("Content-Type: text/plain\r\n", &block),
                PassThrough,
            ),
            (
                "inline, whitespace around",
                msg("", &format!("\r\n \r\n\t{block}\r\n\r\n  \r\n")),
                PassThrough,
            ),
            (
                "inline, quoted-printable",
                msg(
                    "Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n",
                    &qp(&block),
                ),
                PassThrough,
            ),
            (
                "inline, base64",
                msg(
                    "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n",
                    &b64(block.as_bytes()),
                ),
                PassThrough,
            ),
            (
                "inline, text before",
                msg("", &format!("Hi!\r\n{block}")),
                Encrypt,
            ),
            (
                "inline, text after",
                msg("", &format!("{block}\r\n-- \r\nAlice")),
                Encrypt,
            ),
            (
                "two blocks",
                msg("", &format!("{block}\r\n\r\n{other}")),
                Encrypt,
            ),
            (
                "signed message",
                msg(
                    "",
                    "-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nhello\r\n\
                      -----BEGIN PGP SIGNATURE-----\r\n\r\nAAAA\r\n-----END PGP SIGNATURE-----\r\n",
                ),
                Encrypt,
            ),
            (
                "armor around plain base64",
                msg(
                    "",
                    "-----BEGIN PGP MESSAGE-----\r\n\r\nSGVsbG8gd29ybGQ=\r\n\
                      -----END PGP MESSAGE-----\r\n",
                ),
                Encrypt,
            ),
            ("empty text", msg("", ""), Encrypt),
            (
                "plain text",
                msg("Content-Type: text/plain\r\n", "hello\r\n"),
                Encrypt,
            ),
            // text/plain + text/html alternatives.
            ("alternative", alt(&block, &html), PassThrough),
            (
                "alternative, html is just the block",
                alt(&block, &block),
                PassThrough,
            ),
            (
                "alternative, html with text",
                alt(&block, &format!("<p>Hi</p>{html}")),
                Encrypt,
            ),
            (
                "alternative, different blocks",
                alt(&block, &other),
                Encrypt,
            ),
            (
                "alternative, plain with text",
                alt(&format!("Hi\r\n{block}"), &html),
                Encrypt,
            ),
            (
                "alternative, three parts",
                msg(
                    "Content-Type: multipart/alternative; boundary=\"b\"\r\n",
                    &format!(
                        "--b\r\nContent-Type: text/plain\r\n\r\n{block}\r\n--b\r\n\
                          Content-Type: text/html\r\n\r\n{html}\r\n--b\r\n\
                          Content-Type: text/plain\r\n\r\nhello\r\n--b--\r\n"
                    ),
                ),
                Encrypt,
            ),
            (
                "alternative, two plain",
                msg(
                    "Content-Type: multipart/alternative; boundary=\"b\"\r\n",
                    &format!(
                        "--b\r\nContent-Type: text/plain\r\n\r\n{block}\r\n--b\r\n\r\n\
                          {block}\r\n--b--\r\n"
                    ),
                ),
                Encrypt,
            ),
            // Exchange's mangled PGP/MIME.
            (
                "exchange",
                exchange("", "application/pgp-encrypted", &block),
                PassThrough,
            ),
            (
                "exchange, whitespace text",
                exchange(" \r\n", "application/pgp-encrypted", &block),
                PassThrough,
            ),
            (
                "exchange, text not empty",
                exchange("Hi", "application/pgp-encrypted", &block),
                Encrypt,
            ),
            (
                "exchange, wrong version type",
                exchange("", "text/plain", &block),
                Encrypt,
            ),
            (
                "exchange, payload not openpgp",
                exchange("", "application/pgp-encrypted", "hello"),
                Encrypt,
            ),
            (
                "mixed with an encrypted attachment",
                msg(
                    "Content-Type: multipart/mixed; boundary=\"x\"\r\n",
                    &format!(
                        "--x\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--x\r\n\
                          Content-Type: application/pgp-encrypted; name=a.asc\r\n\r\n\
                          {block}\r\n--x--\r\n"
                    ),
                ),
                Encrypt,
            ),
            // Legacy .p7m: the DER decides.
            (
                "p7m enveloped",
                p7m(
                    "application/pkcs7-mime; name=smime.p7m",
                    "base64",
                    &enveloped,
                ),
                PassThrough,
            ),
            (
                "p7m authEnveloped",
                p7m(
                    "application/x-pkcs7-mime",
                    "BASE64",
                    &der_content_info(OID_AUTH_ENVELOPED_DATA),
                ),
                PassThrough,
            ),
            (
                "p7m signed",
                p7m(
                    "application/pkcs7-mime",
                    "base64",
                    &der_content_info(&signed_oid),
                ),
                Encrypt,
            ),
            (
                "p7m truncated",
                p7m("application/pkcs7-mime", "base64", &enveloped[..6]),
                Encrypt,
            ),
            (
                "p7m not base64",
                msg(
                    "Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n",
                    "!!!!\r\n",
                ),
                Encrypt,
            ),
            (
                "p7m quoted-printable",
                p7m("application/pkcs7-mime", "quoted-printable", &enveloped),
                Encrypt,
            ),
        ];
        for (name, message, want) in cases {
            assert_eq!(classify_message(&message), want, "{name}");
        }
    }

    #[test]
    fn classify_prefix_decides_p7m_early() {
        let mut der = der_content_info(OID_ENVELOPED_DATA);
        der.extend([0u8; 300]);
        let message = msg(
            "Content-Type: application/pkcs7-mime; name=smime.p7m\r\n\
              Content-Transfer-Encoding: base64\r\n",
            &b64(&der),
        );
        let body_start = memmem::find(&message, b"\r\n\r\n").unwrap() + 4;
        assert_eq!(classify_prefix(&message[..body_start - 2]), None);
        assert_eq!(classify_prefix(&message[..body_start + 10]), None);
        assert_eq!(
            classify_prefix(&message[..body_start + 40]),
            Some(Treatment::PassThrough)
        );
        assert_eq!(classify_prefix(&message), Some(Treatment::PassThrough));
        let text = msg(
            "Content-Type: text/plain\r\n",
            "hello hello hello hello hello hello",
        );
        assert_eq!(classify_prefix(&text), None);
        let pgp = msg("Content-Type: multipart/encrypted; boundary=b\r\n", "x");
        assert_eq!(classify_prefix(&pgp), None);
    }

    #[test]
    fn html_text_strips_markup() {
        let cases = [
            ("<p>a</p>", "a"),
            ("a<br>b<br/>c", "abc"),
            (
                "&lt;&gt;&amp;&quot;&#39;&#x41;&#X42;&#67;&nbsp;",
                "<>&\"'ABC\u{a0}",
            ),
            ("&unknown; & &#xZZ;", "&unknown; & &#xZZ;"),
            ("<!-- hidden -->x<!-- open", "x"),
            (
                "<style>p { color: red }</style>y<SCRIPT>alert(1)</script>",
                "p { color: red }yalert(1)",
            ),
            ("<title>t</title>z", "tz"),
            ("<img alt=\"x\">y", "y"),
            ("<unclosed", ""),
        ];
        for (html, text) in cases {
            assert_eq!(html_text(html), text, "{html}");
        }
    }

    #[test]
    fn cms_content_types() {
        let cases: &[(&[u8], bool)] = &[
            (
                &[
                    0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03,
                    0xa0, 0x80,
                ],
                true,
            ),
            (
                &[
                    0x30, 0x82, 0x04, 0x00, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
                    0x07, 0x03, 0xa0,
                ],
                true,
            ),
            (
                &[
                    0x30, 0x82, 0x04, 0x00, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
                    0x07, 0x03, 0x04,
                ],
                false,
            ),
            (
                &[
                    0x30, 0x82, 0x04, 0x00, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
                    0x07, 0x02, 0xa0,
                ],
                false,
            ),
            (
                &[
                    0x31, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03,
                    0xa0,
                ],
                false,
            ),
            (&[0x30, 0x85, 0, 0, 0, 0, 0], false),
            (&[0x30], false),
            (&[], false),
        ];
        for (der, want) in cases {
            assert_eq!(cms_enveloped(der), *want, "{der:02x?}");
        }
    }

    /// Runs every message of a corpus folder through `check`; returns how many ran.
    fn walk(dir: &Path, mut check: impl FnMut(&Path, &[u8])) -> usize {
        let mut count = 0;
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        paths.sort();
        for path in paths {
            check(&path, &std::fs::read(&path).unwrap());
            count += 1;
        }
        count
    }

    #[test]
    fn corpus_encrypted_passes_through() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/encrypted");
        let ran = walk(&dir, |path, message| {
            assert_eq!(
                classify_message(message),
                Treatment::PassThrough,
                "{}",
                path.display()
            );
            // What the stage sees first: the header block alone never says Encrypt.
            let split = split_header_block(message);
            let headers = split.header_block(message);
            assert_ne!(
                classify_headers(headers),
                Treatment::Encrypt,
                "{}",
                path.display()
            );
        });
        assert!(ran >= 10, "only {ran} files in {}", dir.display());
    }

    #[test]
    fn corpus_not_encrypted_gets_encrypted() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/encrypted/not");
        let ran = walk(&dir, |path, message| {
            assert_eq!(
                classify_message(message),
                Treatment::Encrypt,
                "{}",
                path.display()
            );
        });
        assert!(ran >= 14, "only {ran} files in {}", dir.display());
    }

    #[test]
    fn early_verdicts_only_ever_say_encrypt_for_text_and_multipart() {
        use Treatment::*;
        let armored = "-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA...\r\n";
        let text = "Content-Type: text/plain\r\n\r\n";
        let alt = "Content-Type: multipart/alternative; boundary=b\r\n\r\n";
        let cases: &[(&str, &str, bool, Option<Treatment>)] = &[
            (text, "Hello, plain mail\r\n", false, Some(Encrypt)),
            (text, "  \r\n-----BEGIN PGP", false, None),
            (text, armored, false, None),
            (text, armored, true, None),
            (text, "\r\n\r\n", false, None),
            (text, "\r\n\r\n", true, Some(Encrypt)),
            (
                text,
                "-----BEGIN PGP SIGNED MESSAGE-----\r\n",
                false,
                Some(Encrypt),
            ),
            (
                "Subject: no content type\r\n\r\n",
                "hi\r\n",
                false,
                Some(Encrypt),
            ),
            (
                alt,
                "--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n",
                false,
                None,
            ),
            (
                alt,
                "--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n",
                true,
                Some(Encrypt),
            ),
            (alt, armored, true, None),
        ];
        for (headers, body, complete, expected) in cases {
            let message = format!("{headers}{body}");
            let probe = probe(headers.as_bytes());
            assert_eq!(
                early_verdict(probe, message.as_bytes(), headers.len(), *complete),
                *expected,
                "{headers:?} {body:?} complete={complete}"
            );
        }
        let long = format!("{alt}{}", "x".repeat(MULTIPART_PROBE + 1));
        assert_eq!(
            early_verdict(Probe::Multipart, long.as_bytes(), alt.len(), false),
            Some(Encrypt)
        );
        assert_eq!(
            probe(b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n"),
            Probe::None
        );
    }

    /// The early verdict never contradicts the whole-message one when it says Encrypt: every
    /// pass-through corpus message survives probing at every prefix.
    #[test]
    fn early_verdicts_never_encrypt_an_encrypted_corpus_message() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/encrypted");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "eml") {
                continue;
            }
            let message = std::fs::read(&path).unwrap();
            let split = split_header_block(&message);
            if !split.ends_with_blank_line {
                continue;
            }
            let header_len = message.len() - split.body.len();
            let headers = &message[..header_len];
            if classify_headers(headers) != Treatment::NeedBody {
                continue;
            }
            let probe = probe(headers);
            for end in header_len..=message.len() {
                let complete = end == message.len();
                if let Some(verdict) = early_verdict(probe, &message[..end], header_len, complete) {
                    assert_eq!(
                        verdict,
                        classify_message(&message),
                        "{} at {end}",
                        path.display()
                    );
                }
            }
            checked += 1;
        }
        assert!(
            checked >= 5,
            "only {checked} corpus messages needed the body"
        );
    }

    /// Found by the `mime` fuzz target: nested message/rfc822 parts trip a debug assertion in
    /// mail-parser 0.11.9 (switched off for it in Cargo.toml); the verdict must still come.
    #[test]
    fn nested_rfc822_parts_are_classified() {
        let message = b"Content-Type:multipart;boundary=outer-24\n\n--outer-24Content-Type:message/rfc822\n\nContent-Type:message/rfc822\n\n\n--outer-24--";
        assert_eq!(classify_message(message), Treatment::Encrypt);
    }
}
