//! Verifies from content, not labels, that a message is already encrypted (issue 11 §1,
//! openpgp.md §3). Pure code, no I/O: [`Verifier`] is fed the message chunk by chunk, holds
//! at most its window, and answers [`Verdict::Verified`] only at the end of the message.
//!
//! # The rule
//!
//! A message passes through unencrypted only if everything in it that a mail client would
//! show, or a copied disk would reveal, is inside a verified encrypted container. Anything
//! else, or anything not decided when the window ends, is encrypted: wrongly encrypting costs
//! a second decryption, wrongly passing through stores plaintext.
//!
//! Common to every form:
//! - The whole message (header block included) fits the window (`SEALGATE_MAX_INSPECT_SIZE`).
//! - Top level and parts carry only `Content-Type`, `Content-Transfer-Encoding`,
//!   `Content-Description` and `Content-Disposition` (at most one each; parts no other field
//!   at all). Values a client shows are fixed: a description from [`DESCRIPTIONS`], a
//!   disposition `inline` or `attachment`, file names (`name`, `filename`) from
//!   [`FILE_NAMES`], a `charset` in which ASCII is ASCII (us-ascii, utf-8, iso-8859-N,
//!   windows-125N: not UTF-7), and each type only the parameters listed for it below. The
//!   boundary (at most 70 characters) stays readable like any header field outside.
//! - Multipart bodies are split strictly: a line that starts with `--boundary` but is no
//!   delimiter is refused, the closing delimiter must be there, the preamble is white space or
//!   one of [`PREAMBLES`], the epilogue white space. White space is SP, HT, CR, LF.
//! - No bare CR or LF anywhere in the message (readers disagree on where such a line ends).
//! - An armored block is `-----BEGIN PGP MESSAGE-----`, armor headers `Version` (a tool name
//!   from [`VERSION_TOOLS`] and a short version) or `Charset` (a charset name) only, an empty
//!   line, strict base64 (alphabet, padding only at the end, no stray bits), an optional
//!   CRC-24 line that must match, `-----END PGP MESSAGE-----`.
//! - Its packets (old and new format, partial lengths only for the container): one or more
//!   PKESK (v3/v6) and optionally SKESK (v4/v5/v6), each at most 2 KiB of key material that
//!   passes the randomness test, then exactly one SEIPD (v1/v2) or LibrePGP AEAD (tag 20, v1)
//!   and nothing after it. SKESK without PKESK, SED (tag 9), literal, compressed or any other
//!   packet: not verified.
//! - The ciphertext (SEIPD/AEAD body, CMS encryptedContent) looks random ([`Randomness`]):
//!   no run of [`PRINTABLE_RUN`] printable octets, and per [`BLOCK`] octets neither too many
//!   printable octets nor a byte distribution far from uniform (thresholds there).
//!
//! The forms:
//! - PGP/MIME (RFC 3156): `multipart/encrypted` (`protocol="application/pgp-encrypted"`,
//!   `boundary`), exactly two parts: `application/pgp-encrypted` whose body is `Version: 1`
//!   with white space around, and `application/octet-stream` (`name`) whose body is one
//!   armored block with white space around; both 7bit.
//! - Exchange's rewrite: `multipart/mixed` of exactly an empty (white space) `text/plain`,
//!   then the two PGP/MIME parts, which may be base64 here.
//! - S/MIME: `application/pkcs7-mime` or `x-pkcs7-mime` (`smime-type` enveloped-data or
//!   authEnveloped-data or absent, `name`), base64; the BER parsed in full (indefinite
//!   lengths allowed) is a ContentInfo of envelopedData or authEnvelopedData with at least one
//!   public-key recipient (ktri, kari, ori), no originatorInfo or attributes, an
//!   encryptedContent that passes the randomness test, and nothing after it. RecipientInfos
//!   are at most 4 KiB each without a run of 64 printable octets (the issuer's name is
//!   readable, as in any S/MIME message); algorithm identifiers and the MAC at most 128.
//! - Inline PGP: `text/plain` (`charset`, `format`, `delsp`) or no Content-Type, 7bit, 8bit
//!   or quoted-printable: one armored block, white space around.
//! - The text + HTML twin: `multipart/alternative` of exactly `text/plain` and `text/html`,
//!   the plain one inline PGP as above, the HTML one the same block once the wrappers in
//!   [`HTML_WRAPPERS`] (no attributes) are removed and character references decoded; any
//!   other markup, a comment, an attribute or an unterminated tag counts as text.
//! - Early answers (so ordinary mail is encrypted as it streams): a text body whose first
//!   non-white octets are not the armor line, and a multipart body with no armor marker in
//!   its first [`MULTIPART_PROBE`] octets, are not verified.

use std::borrow::Cow;
use std::fmt;

use mail_parser::{ContentType, MessageParser, MimeHeaders};

use crate::pipeline::encrypt::mime::{self, Field};

/// A run of this many printable octets in ciphertext means it is not ciphertext: random
/// octets are printable with p = 98/256, so a run of 64 has p ≈ 2e-27.
pub(crate) const PRINTABLE_RUN: usize = 64;

/// Ciphertext is judged in blocks of this many octets (the last one may be shorter).
pub(crate) const BLOCK: usize = 4096;

/// A block shorter than this is only held to the run test.
const MIN_JUDGED: usize = 16;

/// Blocks of at least this many octets also get the chi-square test.
const MIN_CHI_SQUARE: usize = 512;

/// Printable octets in a block may exceed the expectation by this many standard deviations
/// (p ≈ 6e-16 for random data).
const PRINTABLE_SIGMAS: f64 = 8.0;

/// The chi-square statistic over 256 byte values (255 degrees of freedom, mean 255, standard
/// deviation √510) may reach this; random data exceeds it with p ≈ 1e-20 (Wilson–Hilferty).
const CHI_SQUARE_LIMIT: f64 = 526.0;

/// How much of a multipart body must pass without an armor marker before it is encrypted.
pub(crate) const MULTIPART_PROBE: usize = 16 * 1024;

/// MIME preambles that known tools write before PGP/MIME (compared after trimming white
/// space, exactly): Thunderbird/Enigmail, Mutt/GPGTools/Enigmail on RFC 2440, and the
/// generic MIME notice.
pub(crate) const PREAMBLES: [&str; 4] = [
    "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)",
    "This is an OpenPGP/MIME encrypted message (RFC 2440 and 3156)",
    "This is an OpenPGP/MIME encrypted message",
    "This is a multi-part message in MIME format.",
];

/// `Content-Description` values a client may show (ASCII case-insensitive, white space
/// trimmed): what Thunderbird, Enigmail, GpgOL, Exchange and OpenSSL-based clients write.
pub(crate) const DESCRIPTIONS: [&str; 6] = [
    "PGP/MIME version identification",
    "PGP/MIME Versions Identification",
    "OpenPGP encrypted message",
    "OpenPGP encrypted message.asc",
    "S/MIME Encrypted Message",
    "S/MIME Encrypted Content",
];

/// File names (`name`, `filename`) a client may show, exactly (ASCII case-insensitive).
pub(crate) const FILE_NAMES: [&str; 6] = [
    "encrypted.asc",
    "msg.asc",
    "OpenPGP_encrypted_message.asc",
    "PGPMIME version identification",
    "PGPMIME Versions Identification",
    "smime.p7m",
];

/// The only markup allowed around an armored block in the HTML twin (ASCII
/// case-insensitive, exactly as written: no attributes, no comments).
pub(crate) const HTML_WRAPPERS: [&str; 15] = [
    "<html>", "</html>", "<head>", "</head>", "<body>", "</body>", "<pre>", "</pre>", "<p>",
    "</p>", "<div>", "</div>", "<br>", "<br/>", "<br />",
];

/// Tool names an armor `Version` header may start with (what OpenPGP implementations write).
pub(crate) const VERSION_TOOLS: [&str; 16] = [
    "GnuPG",
    "GPG",
    "PGP",
    "OpenPGP",
    "BCPG",
    "Mailvelope",
    "Keybase",
    "ProtonMail",
    "GopenPGP",
    "Encryption Desktop",
    "FlowCrypt",
    "RNP",
    "rnp",
    "Sequoia",
    "OpenKeychain",
    "EnigMail",
];

/// Octets allowed after the tool name in an armor `Version` header.
const VERSION_TAIL: usize = 24;

/// A key packet (PKESK, SKESK) is at most this large: RSA-8192 needs about 1040 octets.
const MAX_KEY_PACKET: usize = 2048;

/// At most this many key packets (recipients) before the container.
const MAX_KEY_PACKETS: usize = 256;

/// A CMS RecipientInfo is at most this large (RSA-4096 with a long issuer name: ~1 KiB).
const MAX_RECIPIENT_INFO: usize = 4096;

/// At most this many CMS recipients.
const MAX_RECIPIENT_INFOS: usize = 256;

/// CMS algorithm identifiers and MACs are at most this large (an IV or a GCM nonce).
const MAX_CMS_SMALL: usize = 128;

const BEGIN_MESSAGE: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END_MESSAGE: &[u8] = b"-----END PGP MESSAGE-----";

/// Room after [`MULTIPART_PROBE`] for a marker that starts inside it (longer than any marker).
const MARKER_SLACK: usize = 32;

/// Markers of an armored block in a multipart body: the armor line, and its start in base64
/// (Exchange's base64 payload part).
const ARMOR_MARKERS: [&[u8]; 2] = [b"BEGIN PGP MESSAGE", b"LS0tLS1CRUdJTiBQR1Ag"];

/// Contents (without tag and length) of the CMS contentType OIDs.
const OID_ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
const OID_AUTH_ENVELOPED_DATA: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17,
];

/// The only Content-* fields an encrypted entity may carry.
const PART_FIELDS: [&str; 4] = [
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Description",
    "Content-Disposition",
];

/// Nesting deeper than this in BER is refused (the structures we accept need about 8).
const MAX_BER_DEPTH: usize = 32;

/// A verified encrypted form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    PgpMime,
    Exchange,
    Smime,
    InlinePgp,
    Alternative,
}

impl Form {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Form::PgpMime => "pgp/mime",
            Form::Exchange => "exchange pgp/mime",
            Form::Smime => "s/mime",
            Form::InlinePgp => "inline pgp",
            Form::Alternative => "inline pgp text+html",
        }
    }
}

/// Why a message was not verified; the detail names the first rule it broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Ordinary mail: the top-level type is none of the encrypted forms, or the body does not
    /// start like one.
    NotAnEncryptedForm(&'static str),
    /// The message did not end within the window.
    BeyondWindow,
    /// MIME structure or a field outside what the form allows.
    Mime(&'static str),
    /// The armored block.
    Armor(&'static str),
    /// The OpenPGP packet sequence.
    Packets(&'static str),
    /// The CMS structure.
    Cms(&'static str),
    /// The "ciphertext" does not look random.
    NotRandom(&'static str),
}

impl Reason {
    /// A short label for metrics.
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Reason::NotAnEncryptedForm(_) => "not_an_encrypted_form",
            Reason::BeyondWindow => "beyond_window",
            Reason::Mime(_) => "mime",
            Reason::Armor(_) => "armor",
            Reason::Packets(_) => "packets",
            Reason::Cms(_) => "cms",
            Reason::NotRandom(_) => "not_random",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotAnEncryptedForm(d) => write!(f, "not an encrypted form: {d}"),
            Reason::BeyondWindow => f.write_str("larger than the inspection window"),
            Reason::Mime(d) => write!(f, "MIME: {d}"),
            Reason::Armor(d) => write!(f, "armor: {d}"),
            Reason::Packets(d) => write!(f, "OpenPGP packets: {d}"),
            Reason::Cms(d) => write!(f, "CMS: {d}"),
            Reason::NotRandom(d) => write!(f, "ciphertext not random: {d}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Verified(Form),
    NotVerified(Reason),
}

type Check<T> = Result<T, Reason>;

/// What the top-level header block lets the start of the body decide early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Header block not complete yet.
    Unknown,
    /// Inline PGP candidate: the body must start with the armor line.
    Text,
    /// A multipart candidate: an armor marker must come early.
    Multipart,
    /// S/MIME candidate: only the whole message decides.
    Whole,
}

/// The streaming verifier: fed the message (header block first) chunk by chunk, holding at
/// most `window` octets.
#[derive(Debug)]
pub(crate) struct Verifier {
    window: usize,
    held: Vec<u8>,
    header_len: usize,
    shape: Shape,
    /// Body octets already found to be white space (text shape), so no octet is scanned twice
    /// however small the chunks.
    white: usize,
    /// The early rule has passed for good: nothing more to check before the end.
    early_passed: bool,
    decided: Option<Reason>,
}

impl Verifier {
    pub(crate) fn new(window: usize) -> Verifier {
        Verifier {
            window,
            held: Vec::new(),
            header_len: 0,
            shape: Shape::Unknown,
            white: 0,
            early_passed: false,
            decided: None,
        }
    }

    /// Takes the next chunk. `Some(reason)` once the message can no longer be verified; with
    /// [`Reason::BeyondWindow`] this chunk was not kept (the caller still has it), with any
    /// other reason it was.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Option<Reason> {
        if self.decided.is_none() {
            if self.held.len() + chunk.len() > self.window {
                self.decided = Some(Reason::BeyondWindow);
            } else {
                self.held.extend_from_slice(chunk);
                self.decided = self.early(false).err();
            }
        }
        self.decided
    }

    /// What has been kept so far: the message from its first octet.
    pub(crate) fn held(&self) -> &[u8] {
        &self.held
    }

    /// Gives the held octets back.
    pub(crate) fn into_held(self) -> Vec<u8> {
        self.held
    }

    /// The verdict on the complete message.
    pub(crate) fn finish(&mut self) -> Verdict {
        if self.decided.is_none() {
            self.decided = self.early(true).err();
        }
        match self.decided {
            Some(reason) => Verdict::NotVerified(reason),
            None => verify_message(&self.held),
        }
    }

    /// The early rules on what is held: monotone in the prefix, so every split of the same
    /// message gives the same answer.
    fn early(&mut self, complete: bool) -> Check<()> {
        if self.shape == Shape::Unknown {
            let split = mime::split_header_block(&self.held);
            if !split.ends_with_blank_line {
                return if complete {
                    Err(Reason::Mime("no body"))
                } else {
                    Ok(())
                };
            }
            self.header_len = self.held.len() - split.body.len();
            self.shape = shape(&split.content)?;
        }
        if self.early_passed {
            return Ok(());
        }
        let body = &self.held[self.header_len..];
        match self.shape {
            Shape::Text => {
                let start = body[self.white..]
                    .iter()
                    .position(|b| !is_white(*b))
                    .map_or(body.len(), |i| self.white + i);
                self.white = start;
                let text = &body[start..];
                let shared = text.len().min(BEGIN_MESSAGE.len());
                if text[..shared] != BEGIN_MESSAGE[..shared] {
                    return Err(Reason::NotAnEncryptedForm("text does not start with armor"));
                }
                self.early_passed = shared == BEGIN_MESSAGE.len();
            }
            // Judged on exactly the same octets whatever the chunking: a marker that starts
            // within the probe ends within the slack.
            Shape::Multipart if body.len() >= MULTIPART_PROBE + MARKER_SLACK => {
                let probe = &body[..MULTIPART_PROBE + MARKER_SLACK];
                if !ARMOR_MARKERS
                    .iter()
                    .any(|m| memchr::memmem::find(probe, m).is_some())
                {
                    return Err(Reason::NotAnEncryptedForm(
                        "no armor early in the multipart body",
                    ));
                }
                self.early_passed = true;
            }
            Shape::Whole => self.early_passed = true,
            _ => {}
        }
        Ok(())
    }
}

/// The candidate shape of the top-level Content-* fields, or why it is none.
fn shape(content: &[Field<'_>]) -> Check<Shape> {
    let headers = Headers::parse(content)?;
    match &headers.media {
        None => Ok(Shape::Text),
        Some(m) if m.is("text", "plain") => Ok(Shape::Text),
        Some(m)
            if m.is("multipart", "encrypted")
                || m.is("multipart", "mixed")
                || m.is("multipart", "alternative") =>
        {
            Ok(Shape::Multipart)
        }
        Some(m) if is_pkcs7(m) => Ok(Shape::Whole),
        Some(_) => Err(Reason::NotAnEncryptedForm("content type")),
    }
}

/// Verifies a whole message held in memory.
pub(crate) fn verify_message(message: &[u8]) -> Verdict {
    match check_message(message) {
        Ok(form) => Verdict::Verified(form),
        Err(reason) => Verdict::NotVerified(reason),
    }
}

fn check_message(message: &[u8]) -> Check<Form> {
    // Readers disagree on where a bare CR or LF ends a line (and so where a field or a
    // delimiter is): a message that has one is not judged, it is encrypted.
    if has_bare_line_break(message) {
        return Err(Reason::Mime("bare CR or LF"));
    }
    let split = mime::split_header_block(message);
    if !split.ends_with_blank_line {
        return Err(Reason::Mime("no body"));
    }
    let headers = Headers::parse(&split.content)?;
    let body = split.body;
    let Some(media) = &headers.media else {
        check_inline(&headers, body)?;
        return Ok(Form::InlinePgp);
    };
    if media.is("text", "plain") {
        check_inline(&headers, body)?;
        Ok(Form::InlinePgp)
    } else if media.is("multipart", "encrypted") {
        check_pgp_mime(&headers, body)?;
        Ok(Form::PgpMime)
    } else if media.is("multipart", "mixed") {
        check_exchange(&headers, body)?;
        Ok(Form::Exchange)
    } else if media.is("multipart", "alternative") {
        check_alternative(&headers, body)?;
        Ok(Form::Alternative)
    } else if is_pkcs7(media) {
        check_smime(&headers, body)?;
        Ok(Form::Smime)
    } else {
        Err(Reason::NotAnEncryptedForm("content type"))
    }
}

// ------------------------------------------------------------------------------------------
// Header fields

/// A media type as parsed: type and subtype lower-cased, parameters as mail-parser gives them
/// (names lower-cased, RFC 2231 decoded).
#[derive(Debug)]
struct Media {
    kind: String,
    sub: String,
    params: Vec<(String, String)>,
}

impl Media {
    fn from_parsed(ct: &ContentType<'_>) -> Media {
        Media {
            kind: ct.ctype().to_ascii_lowercase(),
            sub: ct.subtype().unwrap_or("").to_ascii_lowercase(),
            params: ct
                .attributes()
                .unwrap_or_default()
                .iter()
                .map(|a| (a.name.to_ascii_lowercase(), a.value.to_string()))
                .collect(),
        }
    }

    fn is(&self, kind: &str, sub: &str) -> bool {
        self.kind == kind && self.sub == sub
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Only parameters in `allowed`, each at most once, and file names from [`FILE_NAMES`].
    fn only(&self, allowed: &[&str]) -> Check<()> {
        for (i, (name, value)) in self.params.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                return Err(Reason::Mime("parameter not allowed"));
            }
            if self.params[..i].iter().any(|(n, _)| n == name) {
                return Err(Reason::Mime("repeated parameter"));
            }
            if (name == "name" || name == "filename") && !is_listed(&FILE_NAMES, value) {
                return Err(Reason::Mime("file name not allowed"));
            }
            if name == "charset" && !is_ascii_charset(value) {
                return Err(Reason::Mime("charset not allowed"));
            }
        }
        Ok(())
    }
}

/// A charset in which the armor's ASCII reads as itself: not UTF-7 (whose `+...-` would turn
/// base64 into other text), UTF-16 or the like.
fn is_ascii_charset(value: &str) -> bool {
    let value = value.trim().to_ascii_lowercase();
    let numbered = |prefix: &str| {
        value
            .strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.len() <= 2 && n.bytes().all(|b| b.is_ascii_digit()))
    };
    value == "us-ascii" || value == "utf-8" || numbered("iso-8859-") || numbered("windows-125")
}

fn is_listed(list: &[&str], value: &str) -> bool {
    let value = value.trim();
    list.iter().any(|v| v.eq_ignore_ascii_case(value))
}

fn is_pkcs7(media: &Media) -> bool {
    media.is("application", "pkcs7-mime") || media.is("application", "x-pkcs7-mime")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// 7bit, 8bit or binary: the octets as they are.
    Identity,
    QuotedPrintable,
    Base64,
}

/// The Content-* fields of an entity, checked against the common rules.
#[derive(Debug)]
struct Headers {
    /// `None` without Content-Type (text/plain).
    media: Option<Media>,
    /// `None` without Content-Transfer-Encoding (7bit).
    encoding: Option<Encoding>,
}

impl Headers {
    fn parse(content: &[Field<'_>]) -> Check<Headers> {
        let mut headers = Headers {
            media: None,
            encoding: None,
        };
        let mut seen = [false; 4];
        for field in content {
            let index = PART_FIELDS
                .iter()
                .position(|name| field.is(name))
                .ok_or(Reason::Mime("Content-* field not allowed"))?;
            if std::mem::replace(&mut seen[index], true) {
                return Err(Reason::Mime("repeated Content-* field"));
            }
            let value = field_value(field.raw)?;
            match index {
                0 => {
                    let parsed =
                        parse_field(field.raw, |m| m.content_type().map(Media::from_parsed))
                            .ok_or(Reason::Mime("unparseable Content-Type"))?;
                    headers.media = Some(parsed);
                }
                1 => {
                    headers.encoding = Some(match value.to_ascii_lowercase().as_str() {
                        "7bit" | "8bit" | "binary" => Encoding::Identity,
                        "quoted-printable" => Encoding::QuotedPrintable,
                        "base64" => Encoding::Base64,
                        _ => return Err(Reason::Mime("unknown transfer encoding")),
                    });
                }
                2 => {
                    if !is_listed(&DESCRIPTIONS, &value) {
                        return Err(Reason::Mime("Content-Description not allowed"));
                    }
                }
                _ => {
                    let disposition = parse_field(field.raw, |m| {
                        m.content_disposition().map(Media::from_parsed)
                    })
                    .ok_or(Reason::Mime("unparseable Content-Disposition"))?;
                    if !(disposition.kind == "inline" || disposition.kind == "attachment")
                        || !disposition.sub.is_empty()
                    {
                        return Err(Reason::Mime("Content-Disposition not allowed"));
                    }
                    disposition.only(&["filename"])?;
                }
            }
        }
        Ok(headers)
    }

    /// The media type, `text/plain` when absent.
    fn is(&self, kind: &str, sub: &str) -> bool {
        match &self.media {
            Some(m) => m.is(kind, sub),
            None => kind == "text" && sub == "plain",
        }
    }

    fn only(&self, allowed: &[&str]) -> Check<()> {
        self.media.as_ref().map_or(Ok(()), |m| m.only(allowed))
    }

    fn encoding_in(&self, allowed: &[Encoding]) -> Check<Encoding> {
        let encoding = self.encoding.unwrap_or(Encoding::Identity);
        if allowed.contains(&encoding) {
            Ok(encoding)
        } else {
            Err(Reason::Mime("transfer encoding not allowed here"))
        }
    }
}

/// The unfolded value of a field, white space trimmed; it must be ASCII.
fn field_value(raw: &[u8]) -> Check<String> {
    let colon = memchr::memchr(b':', raw).ok_or(Reason::Mime("malformed field"))?;
    let value = std::str::from_utf8(&raw[colon + 1..])
        .ok()
        .filter(|v| v.is_ascii())
        .ok_or(Reason::Mime("field value not ASCII"))?;
    Ok(value
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" "))
}

/// mail-parser's reading of one field on its own.
fn parse_field<R>(
    raw: &[u8],
    read: impl FnOnce(&mail_parser::Message<'_>) -> Option<R>,
) -> Option<R> {
    let mut block = raw.to_vec();
    if !block.ends_with(b"\r\n") {
        block.extend_from_slice(b"\r\n");
    }
    block.extend_from_slice(b"\r\n");
    MessageParser::default()
        .parse_headers(&block)
        .as_ref()
        .and_then(read)
}

/// A body part: its checked Content-* fields and its body. A part may hold no other field.
fn part(raw: &[u8]) -> Check<(Headers, &[u8])> {
    let split = mime::split_header_block(raw);
    if !split.ends_with_blank_line {
        return Err(Reason::Mime("part without header end"));
    }
    if !split.outer.is_empty() {
        return Err(Reason::Mime("part field not allowed"));
    }
    Ok((Headers::parse(&split.content)?, split.body))
}

/// A part's body after its transfer encoding.
fn decode(encoding: Encoding, body: &[u8]) -> Check<Cow<'_, [u8]>> {
    match encoding {
        Encoding::Identity => Ok(Cow::Borrowed(body)),
        Encoding::QuotedPrintable => quoted_printable(body).map(Cow::Owned),
        Encoding::Base64 => base64_lines(body, Reason::Mime("bad base64")).map(Cow::Owned),
    }
}

// ------------------------------------------------------------------------------------------
// Forms

fn check_inline(headers: &Headers, body: &[u8]) -> Check<()> {
    headers.only(&["charset", "format", "delsp"])?;
    let encoding = headers.encoding_in(&[Encoding::Identity, Encoding::QuotedPrintable])?;
    check_armored_text(&decode(encoding, body)?)?;
    Ok(())
}

fn check_pgp_mime(headers: &Headers, body: &[u8]) -> Check<()> {
    headers.only(&["protocol", "boundary"])?;
    headers.encoding_in(&[Encoding::Identity])?;
    let media = headers
        .media
        .as_ref()
        .ok_or(Reason::Mime("no Content-Type"))?;
    if !media
        .param("protocol")
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("application/pgp-encrypted"))
    {
        return Err(Reason::Mime("protocol is not application/pgp-encrypted"));
    }
    let parts = multipart(media, body)?;
    let [version, payload] = parts.as_slice() else {
        return Err(Reason::Mime("not exactly two parts"));
    };
    check_version_part(version, &[Encoding::Identity])?;
    check_payload_part(payload, &[Encoding::Identity])
}

fn check_exchange(headers: &Headers, body: &[u8]) -> Check<()> {
    headers.only(&["boundary"])?;
    headers.encoding_in(&[Encoding::Identity])?;
    let media = headers
        .media
        .as_ref()
        .ok_or(Reason::Mime("no Content-Type"))?;
    let parts = multipart(media, body)?;
    let [text, version, payload] = parts.as_slice() else {
        return Err(Reason::Mime("not exactly three parts"));
    };
    let (text_headers, text_body) = part(text)?;
    if !text_headers.is("text", "plain") {
        return Err(Reason::Mime("first part is not text/plain"));
    }
    text_headers.only(&["charset"])?;
    let encoding = text_headers.encoding_in(&[
        Encoding::Identity,
        Encoding::QuotedPrintable,
        Encoding::Base64,
    ])?;
    if !decode(encoding, text_body)?.iter().all(|b| is_white(*b)) {
        return Err(Reason::Mime("first part is not empty"));
    }
    let either = [Encoding::Identity, Encoding::Base64];
    check_version_part(version, &either)?;
    check_payload_part(payload, &either)
}

fn check_version_part(raw: &[u8], encodings: &[Encoding]) -> Check<()> {
    let (headers, body) = part(raw)?;
    if !headers.is("application", "pgp-encrypted") || headers.media.is_none() {
        return Err(Reason::Mime("first part is not application/pgp-encrypted"));
    }
    headers.only(&["name"])?;
    let body = decode(headers.encoding_in(encodings)?, body)?;
    if trim_white(&body) != b"Version: 1" {
        return Err(Reason::Mime("version part is not just \"Version: 1\""));
    }
    Ok(())
}

fn check_payload_part(raw: &[u8], encodings: &[Encoding]) -> Check<()> {
    let (headers, body) = part(raw)?;
    if !headers.is("application", "octet-stream") || headers.media.is_none() {
        return Err(Reason::Mime("payload part is not application/octet-stream"));
    }
    headers.only(&["name"])?;
    check_armored_text(&decode(headers.encoding_in(encodings)?, body)?)?;
    Ok(())
}

fn check_alternative(headers: &Headers, body: &[u8]) -> Check<()> {
    headers.only(&["boundary"])?;
    headers.encoding_in(&[Encoding::Identity])?;
    let media = headers
        .media
        .as_ref()
        .ok_or(Reason::Mime("no Content-Type"))?;
    let parts = multipart(media, body)?;
    let [first, second] = parts.as_slice() else {
        return Err(Reason::Mime("not exactly two alternatives"));
    };
    let (first, second) = (part(first)?, part(second)?);
    let (plain, html) = match (first.0.is("text", "plain"), second.0.is("text", "html")) {
        (true, true) if first.0.media.is_some() => (first, second),
        _ if second.0.is("text", "plain")
            && second.0.media.is_some()
            && first.0.is("text", "html") =>
        {
            (second, first)
        }
        _ => {
            return Err(Reason::Mime(
                "alternatives are not text/plain and text/html",
            ));
        }
    };
    let text_encodings = [Encoding::Identity, Encoding::QuotedPrintable];
    plain.0.only(&["charset", "format", "delsp"])?;
    html.0.only(&["charset"])?;
    let plain_text = decode(plain.0.encoding_in(&text_encodings)?, plain.1)?;
    let block = check_armored_text(&plain_text)?;
    let html_text = decode(html.0.encoding_in(&text_encodings)?, html.1)?;
    let html_text = std::str::from_utf8(&html_text).map_err(|_| Reason::Mime("HTML not UTF-8"))?;
    let shown = html_visible_text(html_text);
    let without_white =
        |s: &[u8]| -> Vec<u8> { s.iter().copied().filter(|b| !is_white(*b)).collect() };
    if without_white(shown.as_bytes()) != without_white(block) {
        return Err(Reason::Mime("HTML twin holds more than the armored block"));
    }
    Ok(())
}

fn check_smime(headers: &Headers, body: &[u8]) -> Check<()> {
    headers.only(&["smime-type", "name"])?;
    let media = headers
        .media
        .as_ref()
        .ok_or(Reason::Mime("no Content-Type"))?;
    if let Some(kind) = media.param("smime-type") {
        let kind = kind.trim();
        if !kind.eq_ignore_ascii_case("enveloped-data")
            && !kind.eq_ignore_ascii_case("authEnveloped-data")
        {
            return Err(Reason::Cms("smime-type is not enveloped"));
        }
    }
    headers.encoding_in(&[Encoding::Base64])?;
    check_cms(&base64_lines(body, Reason::Cms("bad base64"))?)
}

/// Splits a multipart body strictly: white-space preamble (or one of [`PREAMBLES`]), parts,
/// closing delimiter, white-space epilogue. Returns each part's octets (header and body).
fn multipart<'a>(media: &Media, body: &'a [u8]) -> Check<Vec<&'a [u8]>> {
    let boundary = media
        .param("boundary")
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or(Reason::Mime("no usable boundary"))?;
    let dash = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut preamble: Option<&[u8]> = None;
    let mut part_start = 0;
    let mut pos = 0;
    while pos < body.len() {
        let line_end = memchr::memchr(b'\n', &body[pos..]).map_or(body.len(), |i| pos + i + 1);
        let line = trim_line_end(&body[pos..line_end]);
        if line.starts_with(dash.as_bytes()) {
            let rest = trim_end_white(&line[dash.len()..]);
            let closing = rest == b"--";
            if !rest.is_empty() && !closing {
                return Err(Reason::Mime(
                    "line starts with the boundary but is no delimiter",
                ));
            }
            // The CRLF before a delimiter belongs to it.
            let content_end = before_line_break(body, pos).max(part_start);
            match preamble {
                None => preamble = Some(&body[..content_end]),
                Some(_) => parts.push(&body[part_start..content_end]),
            }
            if closing {
                let epilogue = &body[line_end..];
                if !epilogue.iter().all(|b| is_white(*b)) {
                    return Err(Reason::Mime("text in the epilogue"));
                }
                let preamble = trim_white(preamble.unwrap_or_default());
                let known = std::str::from_utf8(preamble).is_ok_and(|p| PREAMBLES.contains(&p));
                if !preamble.is_empty() && !known {
                    return Err(Reason::Mime("text in the preamble"));
                }
                return Ok(parts);
            }
            part_start = line_end;
        }
        pos = line_end;
    }
    Err(Reason::Mime("no closing delimiter"))
}

fn has_bare_line_break(message: &[u8]) -> bool {
    memchr::memchr2_iter(b'\r', b'\n', message).any(|i| match message[i] {
        b'\r' => message.get(i + 1) != Some(&b'\n'),
        _ => i == 0 || message[i - 1] != b'\r',
    })
}

/// `at` is the start of a line: the position of the line break that ends the previous one
/// (CRLF or LF), or `at` itself at the start.
fn before_line_break(body: &[u8], at: usize) -> usize {
    if at >= 2 && &body[at - 2..at] == b"\r\n" {
        at - 2
    } else if at >= 1 && body[at - 1] == b'\n' {
        at - 1
    } else {
        at
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn is_white(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim_white(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !is_white(*b)).unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !is_white(*b))
        .map_or(start, |i| i + 1);
    &s[start..end]
}

fn trim_end_white(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|b| !is_white(*b)).map_or(0, |i| i + 1);
    &s[..end]
}

// ------------------------------------------------------------------------------------------
// HTML

/// What a reader sees of the HTML twin: the wrappers of [`HTML_WRAPPERS`] removed, character
/// references decoded, every other `<...>` (comments, attributes, unknown tags) and an
/// unterminated tag kept as text, so that it makes the twin differ from the block.
fn html_visible_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(at) = rest.find(['<', '&']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if rest.starts_with('<') {
            let tag_len = rest.find('>').map_or(rest.len(), |end| end + 1);
            let tag = &rest[..tag_len];
            if !HTML_WRAPPERS.iter().any(|w| w.eq_ignore_ascii_case(tag)) {
                out.push_str(tag);
            }
            rest = &rest[tag_len..];
        } else {
            let (text, used) = character_reference(rest);
            out.push_str(&text);
            rest = &rest[used..];
        }
    }
    out.push_str(rest);
    out
}

/// Decodes the character reference at the start of `s` (which starts with `&`): the text and
/// how many bytes it used; an unknown one stays as written.
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
        "nbsp" => Some(' '),
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

// ------------------------------------------------------------------------------------------
// Transfer encodings

/// Quoted-printable: `=XX` and soft line breaks; a stray `=` is refused.
fn quoted_printable(body: &[u8]) -> Check<Vec<u8>> {
    let bad = Reason::Mime("bad quoted-printable");
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b != b'=' {
            out.push(b);
            i += 1;
            continue;
        }
        let rest = &body[i + 1..];
        if rest.starts_with(b"\r\n") {
            i += 3;
        } else if rest.starts_with(b"\n") {
            i += 2;
        } else {
            let hex = rest.get(..2).ok_or(bad)?;
            let text = std::str::from_utf8(hex).map_err(|_| bad)?;
            out.push(u8::from_str_radix(text, 16).map_err(|_| bad)?);
            i += 3;
        }
    }
    Ok(out)
}

fn base64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Strict base64 over lines: each line's trailing white space dropped, the alphabet only,
/// `=` padding only in the last quantum, a multiple of four characters, no stray bits, and
/// nothing but white space after the padding.
fn base64_lines(text: &[u8], bad: Reason) -> Check<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits, mut chars, mut pad) = (0u32, 0u32, 0usize, 0usize);
    for line in text.split(|&b| b == b'\n') {
        for &c in trim_end_white(trim_line_end(line)) {
            if c == b'=' {
                pad += 1;
                chars += 1;
                continue;
            }
            if pad > 0 {
                return Err(bad);
            }
            let value = base64_value(c).ok_or(bad)?;
            acc = (acc << 6) | u32::from(value);
            bits += 6;
            chars += 1;
            if bits >= 8 {
                bits -= 8;
                // Masked to one octet, so the cast keeps every bit.
                out.push(((acc >> bits) & 0xff) as u8);
                acc &= (1 << bits) - 1;
            }
        }
    }
    if chars % 4 != 0 || pad > 2 || acc != 0 {
        return Err(bad);
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// OpenPGP

/// `text` is white space, one armored block that holds an encrypted OpenPGP message, white
/// space. Returns the block.
fn check_armored_text(text: &[u8]) -> Check<&[u8]> {
    let block = trim_white(text);
    let mut lines = block
        .split(|&b| b == b'\n')
        .map(|l| trim_end_white(trim_line_end(l)));
    if lines.next() != Some(BEGIN_MESSAGE) {
        return Err(Reason::Armor("does not start with the armor line"));
    }
    for header in lines.by_ref() {
        if header.is_empty() {
            break;
        }
        if let Some(value) = header.strip_prefix(b"Version: ") {
            if !is_tool_version(value) {
                return Err(Reason::Armor("armor Version is not a known tool's"));
            }
        } else if let Some(value) = header.strip_prefix(b"Charset: ") {
            let token = |b: &u8| b.is_ascii_alphanumeric() || b"-_.:".contains(b);
            if value.is_empty() || value.len() > 32 || !value.iter().all(token) {
                return Err(Reason::Armor("armor Charset is not a charset name"));
            }
        } else {
            return Err(Reason::Armor("armor header not allowed"));
        }
    }
    let mut data = Vec::new();
    let mut crc = None;
    let mut ended = false;
    for line in lines.by_ref() {
        if line == END_MESSAGE {
            ended = true;
            break;
        }
        if crc.is_some() {
            return Err(Reason::Armor("line after the checksum"));
        }
        if line.len() == 5 && line[0] == b'=' {
            crc = Some(line[1..].to_vec());
            continue;
        }
        if line.len() > 76 || line.is_empty() {
            return Err(Reason::Armor("bad base64 line"));
        }
        data.extend_from_slice(line);
    }
    if !ended || lines.next().is_some() {
        return Err(Reason::Armor("text after the armored block"));
    }
    let packets = base64_lines(&data, Reason::Armor("bad base64"))?;
    if let Some(crc) = crc {
        let sum = base64_lines(&crc, Reason::Armor("bad checksum"))?;
        let want = crc24(&packets).to_be_bytes();
        if sum != want[1..] {
            return Err(Reason::Armor("checksum mismatch"));
        }
    }
    check_packets(&packets)?;
    Ok(block)
}

/// An armor `Version` value: a known tool's name, then at most [`VERSION_TAIL`] octets of a
/// version (letters, digits, ` .()_+/:#-`). What a sender can hide there is that short.
fn is_tool_version(value: &[u8]) -> bool {
    VERSION_TOOLS.iter().any(|tool| {
        value.strip_prefix(tool.as_bytes()).is_some_and(|tail| {
            tail.len() <= VERSION_TAIL
                && tail
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b" .()_+/:#-".contains(b))
        })
    })
}

fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0x00b7_04ce;
    for &b in data {
        crc ^= u32::from(b) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= 0x0186_4cfb;
            }
        }
    }
    crc & 0x00ff_ffff
}

/// One OpenPGP packet: its tag and its body in the pieces partial lengths cut it into.
struct Packet<'a> {
    tag: u8,
    body: Vec<&'a [u8]>,
}

/// Reads the packet at the start of `data`; returns it and the rest.
fn read_packet(data: &[u8]) -> Check<(Packet<'_>, &[u8])> {
    let short = Reason::Packets("truncated packet");
    let (&first, mut rest) = data.split_first().ok_or(short)?;
    if first & 0x80 == 0 {
        return Err(Reason::Packets("not a packet header"));
    }
    let take = |rest: &mut &[u8], n: usize| -> Check<usize> {
        let bytes = rest.get(..n).ok_or(short)?;
        *rest = &rest[n..];
        Ok(bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b)))
    };
    let mut body = Vec::new();
    if first & 0x40 == 0 {
        // Old format: tag in bits 5..2, length type in bits 1..0.
        let tag = (first >> 2) & 0x0f;
        let len = match first & 3 {
            0 => take(&mut rest, 1)?,
            1 => take(&mut rest, 2)?,
            2 => take(&mut rest, 4)?,
            _ => rest.len(),
        };
        let piece = rest.get(..len).ok_or(short)?;
        body.push(piece);
        return Ok((Packet { tag, body }, &rest[len..]));
    }
    let tag = first & 0x3f;
    loop {
        let octet = take(&mut rest, 1)?;
        let (len, partial) = match octet {
            0..=191 => (octet, false),
            192..=223 => ((octet - 192) * 256 + take(&mut rest, 1)? + 192, false),
            255 => (take(&mut rest, 4)?, false),
            _ => (1usize << (octet & 0x1f), true),
        };
        if partial && tag != 18 && tag != 20 {
            return Err(Reason::Packets("partial length outside the container"));
        }
        let piece = rest.get(..len).ok_or(short)?;
        body.push(piece);
        rest = &rest[len..];
        if !partial {
            return Ok((Packet { tag, body }, rest));
        }
    }
}

/// A key packet holds key material, which is random: bounded in size and count, and held to
/// the ciphertext test (its few structure octets do not trip it), so no text hides there.
fn check_key_packet(packet: &Packet<'_>, count: usize) -> Check<()> {
    let body = packet.body.first().copied().unwrap_or_default();
    if body.len() > MAX_KEY_PACKET || count > MAX_KEY_PACKETS {
        return Err(Reason::Packets("key packet too large or too many"));
    }
    let mut randomness = Randomness::default();
    randomness.feed(&body[1..]);
    randomness.finish()
}

/// Key packets (at least one PKESK), then exactly one encrypted container whose body looks
/// random, then nothing.
fn check_packets(mut data: &[u8]) -> Check<()> {
    let (mut pkesk, mut skesk) = (0, 0);
    while !data.is_empty() {
        let (packet, rest) = read_packet(data)?;
        data = rest;
        let version = packet.body.iter().find_map(|p| p.first().copied());
        let header = match (packet.tag, version) {
            (1, Some(3 | 6)) => {
                pkesk += 1;
                check_key_packet(&packet, pkesk + skesk)?;
                continue;
            }
            (3, Some(4..=6)) => {
                skesk += 1;
                check_key_packet(&packet, pkesk + skesk)?;
                continue;
            }
            (1 | 3, _) => return Err(Reason::Packets("unknown key packet version")),
            // Version octet (v1); version, cipher, AEAD, chunk size, 32 octets of salt (v2).
            (18, Some(1)) => 1,
            (18, Some(2)) => 36,
            // LibrePGP OCB/EAX: version, cipher, AEAD, chunk size; the IV is random too.
            (20, Some(1)) => 4,
            (18 | 20, _) => return Err(Reason::Packets("unknown container version")),
            (9, _) => return Err(Reason::Packets("SED packet without integrity protection")),
            (11, _) => return Err(Reason::Packets("literal data is not encrypted")),
            (8, _) => return Err(Reason::Packets("compressed data is not encrypted")),
            _ => return Err(Reason::Packets("packet not allowed")),
        };
        if pkesk == 0 {
            return Err(if skesk > 0 {
                Reason::Packets("only SKESK: a passphrase, not the recipient's key")
            } else {
                Reason::Packets("no key packet before the container")
            });
        }
        if !data.is_empty() {
            return Err(Reason::Packets("packet after the encrypted container"));
        }
        let mut randomness = Randomness::default();
        let mut skip = header;
        for piece in &packet.body {
            let cut = skip.min(piece.len());
            skip -= cut;
            randomness.feed(&piece[cut..]);
        }
        if skip > 0 {
            return Err(Reason::Packets("container header truncated"));
        }
        return randomness.finish();
    }
    Err(Reason::Packets("no encrypted container"))
}

// ------------------------------------------------------------------------------------------
// CMS

/// One BER element: tag octet and content (for an indefinite length, without the
/// end-of-contents octets).
#[derive(Debug, Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
}

fn read_tlv(input: &[u8], depth: usize) -> Check<(Tlv<'_>, &[u8])> {
    let short = Reason::Cms("truncated");
    if depth > MAX_BER_DEPTH {
        return Err(Reason::Cms("nested too deeply"));
    }
    let (&tag, rest) = input.split_first().ok_or(short)?;
    if tag & 0x1f == 0x1f {
        return Err(Reason::Cms("high tag number"));
    }
    let (&first, rest) = rest.split_first().ok_or(short)?;
    let len = match first {
        0x00..=0x7f => usize::from(first),
        0x80 => {
            if tag & 0x20 == 0 {
                return Err(Reason::Cms("indefinite length on a primitive"));
            }
            let mut inner = rest;
            loop {
                if inner.starts_with(&[0, 0]) {
                    let used = rest.len() - inner.len();
                    return Ok((
                        Tlv {
                            tag,
                            content: &rest[..used],
                        },
                        &inner[2..],
                    ));
                }
                inner = read_tlv(inner, depth + 1)?.1;
            }
        }
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            let bytes = rest.get(..n).ok_or(short)?;
            let len = bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            return finish_tlv(tag, len, &rest[n..]);
        }
        _ => return Err(Reason::Cms("bad length")),
    };
    finish_tlv(tag, len, rest)
}

fn finish_tlv(tag: u8, len: usize, rest: &[u8]) -> Check<(Tlv<'_>, &[u8])> {
    let content = rest.get(..len).ok_or(Reason::Cms("truncated"))?;
    Ok((Tlv { tag, content }, &rest[len..]))
}

/// The elements inside a constructed element.
fn children<'a>(tlv: &Tlv<'a>, depth: usize) -> Check<Vec<Tlv<'a>>> {
    if tlv.tag & 0x20 == 0 {
        return Err(Reason::Cms("primitive where constructed expected"));
    }
    let mut rest = tlv.content;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (child, after) = read_tlv(rest, depth + 1)?;
        out.push(child);
        rest = after;
    }
    Ok(out)
}

fn expect(tlv: Option<&Tlv<'_>>, tag: u8, what: &'static str) -> Check<()> {
    match tlv {
        Some(t) if t.tag == tag => Ok(()),
        _ => Err(Reason::Cms(what)),
    }
}

/// ContentInfo { envelopedData | authEnvelopedData } parsed in full; see the module rule.
fn check_cms(der: &[u8]) -> Check<()> {
    let (info, rest) = read_tlv(der, 0)?;
    if !rest.is_empty() {
        return Err(Reason::Cms("octets after the ContentInfo"));
    }
    expect(Some(&info), 0x30, "ContentInfo is not a SEQUENCE")?;
    let fields = children(&info, 0)?;
    let [oid, explicit] = fields.as_slice() else {
        return Err(Reason::Cms("ContentInfo is not two elements"));
    };
    expect(Some(oid), 0x06, "no contentType")?;
    let auth = match oid.content {
        OID_ENVELOPED_DATA => false,
        OID_AUTH_ENVELOPED_DATA => true,
        _ => return Err(Reason::Cms("contentType is not (auth)envelopedData")),
    };
    expect(Some(explicit), 0xa0, "no [0] content")?;
    let inner = children(explicit, 1)?;
    let [enveloped] = inner.as_slice() else {
        return Err(Reason::Cms("[0] content is not one element"));
    };
    expect(Some(enveloped), 0x30, "content is not a SEQUENCE")?;
    let items = children(enveloped, 2)?;
    let mut items = items.iter();
    expect(items.next(), 0x02, "no version")?;
    let recipients = items.next();
    if recipients.is_some_and(|t| t.tag == 0xa0) {
        return Err(Reason::Cms("originatorInfo not allowed"));
    }
    expect(recipients, 0x31, "no recipientInfos")?;
    let recipients = recipients
        .map(|r| children(r, 3))
        .transpose()?
        .unwrap_or_default();
    let public = recipients
        .iter()
        .filter(|r| matches!(r.tag, 0x30 | 0xa1 | 0xa4))
        .count();
    if recipients
        .iter()
        .any(|r| !matches!(r.tag, 0x30 | 0xa1..=0xa4))
    {
        return Err(Reason::Cms("unknown RecipientInfo"));
    }
    if public == 0 {
        return Err(Reason::Cms("no public-key recipient"));
    }
    // Issuer names are readable, as in any S/MIME message; nothing longer hides there.
    if recipients.len() > MAX_RECIPIENT_INFOS
        || recipients.iter().any(|r| {
            r.content.len() > MAX_RECIPIENT_INFO
                || longest_printable_run(r.content) >= PRINTABLE_RUN
        })
    {
        return Err(Reason::Cms("RecipientInfo too large or holding text"));
    }
    let content_info = items.next();
    expect(content_info, 0x30, "no EncryptedContentInfo")?;
    let content = content_info
        .map(|c| children(c, 3))
        .transpose()?
        .unwrap_or_default();
    let [content_type, algorithm, encrypted] = content.as_slice() else {
        return Err(Reason::Cms("EncryptedContentInfo without encryptedContent"));
    };
    expect(Some(content_type), 0x06, "no content type")?;
    expect(Some(algorithm), 0x30, "no content encryption algorithm")?;
    if algorithm.content.len() > MAX_CMS_SMALL || content_type.content.len() > MAX_CMS_SMALL {
        return Err(Reason::Cms("algorithm identifier too large"));
    }
    let mut randomness = Randomness::default();
    match encrypted.tag {
        0x80 => randomness.feed(encrypted.content),
        0xa0 => feed_octet_strings(&mut randomness, encrypted, 4)?,
        _ => return Err(Reason::Cms("encryptedContent is not [0]")),
    }
    if auth {
        let mac = items.next();
        expect(mac, 0x04, "no mac")?;
        if mac.is_some_and(|m| m.content.len() > MAX_CMS_SMALL) {
            return Err(Reason::Cms("mac too large"));
        }
    }
    if items.next().is_some() {
        return Err(Reason::Cms("attributes or more after the content"));
    }
    randomness.finish()
}

/// The octets of a constructed OCTET STRING (BER chunks, possibly nested).
fn feed_octet_strings(randomness: &mut Randomness, tlv: &Tlv<'_>, depth: usize) -> Check<()> {
    for chunk in children(tlv, depth)? {
        match chunk.tag {
            0x04 => randomness.feed(chunk.content),
            0x24 => feed_octet_strings(randomness, &chunk, depth + 1)?,
            _ => return Err(Reason::Cms("encryptedContent chunk is not an OCTET STRING")),
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Randomness

/// The ciphertext test, fed piece by piece: no run of [`PRINTABLE_RUN`] printable octets
/// (SP..~, HT, CR, LF); per [`BLOCK`] octets (the last block if at least 16) at most
/// [`PRINTABLE_SIGMAS`] standard deviations more printable octets than random data has, and
/// for blocks of 512 octets or more a chi-square statistic of at most [`CHI_SQUARE_LIMIT`].
/// Genuine gpg, sq and OpenSSL output passes (tests use messages of several MiB).
#[derive(Debug, Clone)]
pub(crate) struct Randomness {
    counts: [u32; 256],
    in_block: usize,
    run: usize,
    total: usize,
    failed: Option<&'static str>,
}

impl Default for Randomness {
    fn default() -> Self {
        Randomness {
            counts: [0; 256],
            in_block: 0,
            run: 0,
            total: 0,
            failed: None,
        }
    }
}

fn is_printable(b: u8) -> bool {
    matches!(b, 0x20..=0x7e | b'\t' | b'\r' | b'\n')
}

fn longest_printable_run(data: &[u8]) -> usize {
    let (mut longest, mut run) = (0, 0);
    for &b in data {
        run = if is_printable(b) { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

impl Randomness {
    pub(crate) fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if self.failed.is_some() {
                return;
            }
            if is_printable(b) {
                self.run += 1;
                if self.run >= PRINTABLE_RUN {
                    self.failed = Some("a long run of printable text");
                }
            } else {
                self.run = 0;
            }
            self.counts[usize::from(b)] += 1;
            self.in_block += 1;
            self.total += 1;
            if self.in_block == BLOCK {
                self.judge_block();
            }
        }
    }

    fn judge_block(&mut self) {
        let n = self.in_block;
        if n >= MIN_JUDGED && self.failed.is_none() {
            let printable: u32 = (0..=255u8)
                .filter(|b| is_printable(*b))
                .map(|b| self.counts[usize::from(b)])
                .sum();
            // Sizes are at most BLOCK, exact in f64.
            let n_f = n as f64;
            let p = 98.0 / 256.0;
            let limit = n_f * p + PRINTABLE_SIGMAS * (n_f * p * (1.0 - p)).sqrt();
            if f64::from(printable) > limit {
                self.failed = Some("mostly printable octets");
            } else if n >= MIN_CHI_SQUARE {
                let expected = n_f / 256.0;
                let chi: f64 = self
                    .counts
                    .iter()
                    .map(|&c| {
                        let d = f64::from(c) - expected;
                        d * d / expected
                    })
                    .sum();
                if chi > CHI_SQUARE_LIMIT {
                    self.failed = Some("byte distribution far from uniform");
                }
            }
        }
        self.counts = [0; 256];
        self.in_block = 0;
    }

    fn finish(mut self) -> Check<()> {
        if self.in_block > 0 {
            self.judge_block();
        }
        if self.total == 0 {
            return Err(Reason::NotRandom("empty"));
        }
        match self.failed {
            Some(why) => Err(Reason::NotRandom(why)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

/// What the `verify` fuzz target checks, run here on the corpus and deterministic mutations of
/// it (flipped, dropped and inserted octets, truncations), so the invariants are tested without
/// cargo-fuzz too.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod mutations;
