//! Milter → MTA responses: the typed [`Response`], its encoder (the milter side) and its decoder
//! [`ResponseDecoder`] (the MTA side, for tests and fuzzing).

use bytes::{BufMut, Bytes, BytesMut};

use super::consts::{
    MILTER_CHUNK_SIZE, SMFIC_OPTNEG, SMFIR_ACCEPT, SMFIR_ADDHEADER, SMFIR_ADDRCPT, SMFIR_CHGFROM,
    SMFIR_CHGHEADER, SMFIR_CONTINUE, SMFIR_DELRCPT, SMFIR_DISCARD, SMFIR_INSHEADER, SMFIR_PROGRESS,
    SMFIR_QUARANTINE, SMFIR_REJECT, SMFIR_REPLBODY, SMFIR_REPLYCODE, SMFIR_SHUTDOWN, SMFIR_SKIP,
    SMFIR_TEMPFAIL,
};
use super::{
    BAD_REPLY, DEFAULT_MAX_FRAME, MilterError, NOT_UTF8, cstr, end, finish_frame, lossy_field,
    put_cstr, split_frame, start_frame, text_field, u32_field,
};
use crate::Decode;

/// Used when a [`Response::ReplyCode`] code is not a 4xx or 5xx failure.
const FALLBACK_REPLY_CODE: u16 = 451;

/// One response from the milter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `O`: the answer to the MTA's OPTNEG.
    OptNeg {
        /// Our protocol version; at most the MTA's.
        version: u32,
        /// The `SMFIF_*` actions we may take; a subset of the MTA's. Include `SMFIF_SETSYMLIST`
        /// when `macros` is not empty.
        actions: u32,
        /// The `SMFIP_*` flags we want (events not to send, replies we will not send).
        protocol: u32,
        /// Macro lists to request: (stage `SMFIM_*`, space-separated names such as
        /// `"{tls_version} {cipher}"`). Each replaces that stage's list in Postfix's main.cf.
        macros: Vec<(u32, String)>,
    },
    /// `c`: go on.
    Continue,
    /// `a`: accept; at CONNECT/HELO the whole connection, elsewhere this message.
    Accept,
    /// `r`: reject; Postfix answers `550 5.7.1 Command rejected`.
    Reject,
    /// `t`: temporary failure; Postfix answers `451 4.7.1 Service unavailable - try again later`.
    TempFail,
    /// `d`: accept and drop the message (not at CONNECT/HELO).
    Discard,
    /// `p`: still working; restarts the MTA's timer. Not a final reply.
    Progress,
    /// `s`: skip further events of this type (e.g. the rest of the body).
    Skip,
    /// `y`: reply with this SMTP code and text, e.g. `code: 550`, `text: "5.7.1 TLS required"`,
    /// encoded as `550 5.7.1 TLS required\0`.
    ///
    /// Encoding keeps Postfix from refusing the reply as malformed (which would fail the milter):
    /// - a code outside 400..=599 becomes 451;
    /// - a text that does not start with the code's first digit gets an enhanced code `X.0.0`
    ///   in front (Postfix requires the text to start with it);
    /// - `%` is doubled, since Postfix turns `%%` into `%` and drops a lone `%`;
    /// - `\n` (or `\r\n`) separates lines of a multi-line reply: they go out joined by `\r\n`, every
    ///   line but the last with a `550-` prefix, the last with `550 `. Give each line its own
    ///   enhanced code if clients should see it on every line;
    /// - any other CR, and any NUL, becomes a space.
    ReplyCode {
        /// The three-digit SMTP code, 4xx or 5xx.
        code: u16,
        /// The text, starting with an enhanced status code.
        text: String,
    },
    /// `q`: quarantine (hold) the message. Not a final reply.
    Quarantine {
        /// Why; Postfix does not use it.
        reason: String,
    },
    /// `h`: append a header (end of message only).
    AddHeader {
        /// The header name, without the colon.
        name: String,
        /// The value; continuation lines are separated by `\n` followed by a space or tab.
        value: String,
    },
    /// `i`: insert a header (end of message only). Index 0 puts it above Postfix's own Received.
    InsertHeader {
        /// Where: the number of headers (Postfix's Received included) to leave above it.
        index: u32,
        /// The header name, without the colon.
        name: String,
        /// The value; continuation lines are separated by `\n` followed by a space or tab.
        value: String,
    },
    /// `m`: change a header (end of message only); an empty value deletes it.
    ChangeHeader {
        /// Which occurrence of `name`, 1-based (0 counts as 1), not counting Postfix's Received.
        index: u32,
        /// The header name, without the colon.
        name: String,
        /// The new value; empty deletes the header.
        value: String,
    },
    /// `b`: the replacement body, raw with CRLF line ends (end of message only). Send all of it
    /// before any other edit's final reply; Postfix concatenates consecutive `b` packets.
    ReplaceBody(Bytes),
    /// `+`: add a recipient (end of message only).
    AddRcpt {
        /// The address, e.g. `<bob@example.com>`.
        rcpt: String,
    },
    /// `-`: delete a recipient (end of message only).
    DeleteRcpt {
        /// The address as the MTA sent it in RCPT.
        rcpt: String,
    },
    /// `e`: change the envelope sender (end of message only).
    ChangeFrom {
        /// The new sender address.
        from: String,
        /// ESMTP arguments (Postfix keeps only RET and ENVID).
        args: Option<String>,
    },
    /// `4`: shut down; Postfix answers 421 and disconnects.
    Shutdown,
}

impl Response {
    /// The response byte (`SMFIR_*`, or `SMFIC_OPTNEG` for the OPTNEG answer), e.g. for logging.
    pub fn code(&self) -> u8 {
        match self {
            Response::OptNeg { .. } => SMFIC_OPTNEG,
            Response::Continue => SMFIR_CONTINUE,
            Response::Accept => SMFIR_ACCEPT,
            Response::Reject => SMFIR_REJECT,
            Response::TempFail => SMFIR_TEMPFAIL,
            Response::Discard => SMFIR_DISCARD,
            Response::Progress => SMFIR_PROGRESS,
            Response::Skip => SMFIR_SKIP,
            Response::ReplyCode { .. } => SMFIR_REPLYCODE,
            Response::Quarantine { .. } => SMFIR_QUARANTINE,
            Response::AddHeader { .. } => SMFIR_ADDHEADER,
            Response::InsertHeader { .. } => SMFIR_INSHEADER,
            Response::ChangeHeader { .. } => SMFIR_CHGHEADER,
            Response::ReplaceBody(_) => SMFIR_REPLBODY,
            Response::AddRcpt { .. } => SMFIR_ADDRCPT,
            Response::DeleteRcpt { .. } => SMFIR_DELRCPT,
            Response::ChangeFrom { .. } => SMFIR_CHGFROM,
            Response::Shutdown => SMFIR_SHUTDOWN,
        }
    }

    /// Appends the packet(s) to send. A NUL inside a string is sent as a space (it would end the
    /// string early); [`Response::ReplyCode`] is sanitised as its documentation says.
    /// [`Response::ReplaceBody`] longer than [`MILTER_CHUNK_SIZE`] goes out as several consecutive
    /// `b` packets of at most that size; an empty one as one empty packet.
    ///
    /// # Panics
    ///
    /// If one packet would be longer than `u32::MAX` bytes (a string over 4 GiB).
    pub fn encode(&self, out: &mut BytesMut) {
        if let Response::ReplaceBody(body) = self {
            if body.is_empty() {
                let start = start_frame(out, SMFIR_REPLBODY);
                finish_frame(out, start);
            }
            for chunk in body.chunks(MILTER_CHUNK_SIZE) {
                let start = start_frame(out, SMFIR_REPLBODY);
                out.extend_from_slice(chunk);
                finish_frame(out, start);
            }
            return;
        }
        let start = start_frame(out, self.code());
        match self {
            Response::OptNeg {
                version,
                actions,
                protocol,
                macros,
            } => {
                out.put_u32(*version);
                out.put_u32(*actions);
                out.put_u32(*protocol);
                for (stage, names) in macros {
                    out.put_u32(*stage);
                    put_cstr(out, names);
                }
            }
            Response::ReplyCode { code, text } => put_reply(out, *code, text),
            Response::Quarantine { reason } => put_cstr(out, reason),
            Response::AddHeader { name, value } => {
                put_cstr(out, name);
                put_cstr(out, value);
            }
            Response::InsertHeader { index, name, value }
            | Response::ChangeHeader { index, name, value } => {
                out.put_u32(*index);
                put_cstr(out, name);
                put_cstr(out, value);
            }
            Response::AddRcpt { rcpt } | Response::DeleteRcpt { rcpt } => put_cstr(out, rcpt),
            Response::ChangeFrom { from, args } => {
                put_cstr(out, from);
                if let Some(args) = args {
                    put_cstr(out, args);
                }
            }
            Response::Continue
            | Response::Accept
            | Response::Reject
            | Response::TempFail
            | Response::Discard
            | Response::Progress
            | Response::Skip
            | Response::Shutdown
            | Response::ReplaceBody(_) => {}
        }
        finish_frame(out, start);
    }
}

/// Writes the REPLYCODE data: the sanitised reply and its NUL.
fn put_reply(out: &mut BytesMut, code: u16, text: &str) {
    let code = if (400..=599).contains(&code) {
        code
    } else {
        FALLBACK_REPLY_CODE
    };
    // Each quotient is below 10 (code ≤ 599), so the casts cannot truncate.
    let digits = [
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ];
    let class = digits[0];
    let mut lines = text.split('\n').peekable();
    let mut first = true;
    while let Some(line) = lines.next() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if !first {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(&digits);
        out.put_u8(if lines.peek().is_some() { b'-' } else { b' ' });
        // Postfix refuses a reply whose text does not start with the code's first digit.
        if first && line.as_bytes().first() != Some(&class) {
            out.put_u8(class);
            out.extend_from_slice(b".0.0");
            if !line.is_empty() {
                out.put_u8(b' ');
            }
        }
        for &byte in line.as_bytes() {
            match byte {
                b'%' => out.extend_from_slice(b"%%"),
                b'\r' | 0 => out.put_u8(b' '),
                _ => out.put_u8(byte),
            }
        }
        first = false;
    }
    out.put_u8(0);
}

/// The MTA side's decoder (for tests and fuzzing): splits packets off the buffer and parses each
/// into a [`Response`].
#[derive(Debug, Clone)]
pub struct ResponseDecoder {
    /// Largest packet (response byte plus data) accepted.
    max_len: usize,
}

impl Default for ResponseDecoder {
    /// A decoder limited to [`DEFAULT_MAX_FRAME`].
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl ResponseDecoder {
    /// `max_len`: largest packet (response byte plus data) accepted; a larger one is
    /// [`MilterError::FrameTooLarge`].
    pub fn new(max_len: usize) -> Self {
        Self { max_len }
    }

    /// Decodes one response off the front of `buf`. `Ok(None)`: need more bytes (nothing is
    /// consumed). On `Ok(Some)` the packet's bytes are consumed from `buf`.
    ///
    /// Each `b` packet is its own [`Response::ReplaceBody`]. A REPLYCODE must pass Postfix's check
    /// (`[45]dd[ -]` followed by the code's first digit), and each of its lines must carry the
    /// code, with `-` on all but the last; the text comes back with `%%` undone and lines joined by
    /// `\n`. `2` (ADDRCPT_PAR), `f` and `l` have no [`Response`] and are
    /// [`MilterError::UnknownCommand`].
    ///
    /// # Errors
    ///
    /// A [`MilterError`] when the packet is too large, empty, of an unknown type or malformed,
    /// including replies `c a r t d s p 4` that carry data (Postfix refuses those too).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Response>, MilterError> {
        let Some((code, data)) = split_frame(buf, self.max_len)? else {
            return Ok(None);
        };
        parse(code, data).map(Some)
    }
}

impl Decode for ResponseDecoder {
    type Item = Response;
    type Error = MilterError;

    /// See [`ResponseDecoder::decode`]; after an error, end the session.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Response>, MilterError> {
        // The inherent method, which callers use without importing the trait.
        ResponseDecoder::decode(self, buf)
    }
}

/// Parses a complete packet's data according to its response byte.
fn parse(code: u8, data: Bytes) -> Result<Response, MilterError> {
    let response = match code {
        SMFIC_OPTNEG => optneg(&data),
        SMFIR_CONTINUE => end(&data).map(|()| Response::Continue),
        SMFIR_ACCEPT => end(&data).map(|()| Response::Accept),
        SMFIR_REJECT => end(&data).map(|()| Response::Reject),
        SMFIR_TEMPFAIL => end(&data).map(|()| Response::TempFail),
        SMFIR_DISCARD => end(&data).map(|()| Response::Discard),
        SMFIR_PROGRESS => end(&data).map(|()| Response::Progress),
        SMFIR_SKIP => end(&data).map(|()| Response::Skip),
        SMFIR_SHUTDOWN => end(&data).map(|()| Response::Shutdown),
        SMFIR_REPLYCODE => reply_code(&data),
        SMFIR_QUARANTINE => single_text(&data).map(|reason| Response::Quarantine { reason }),
        SMFIR_ADDHEADER => add_header(&data),
        SMFIR_INSHEADER => indexed_header(&data)
            .map(|(index, name, value)| Response::InsertHeader { index, name, value }),
        SMFIR_CHGHEADER => indexed_header(&data)
            .map(|(index, name, value)| Response::ChangeHeader { index, name, value }),
        SMFIR_REPLBODY => Ok(Response::ReplaceBody(data)),
        SMFIR_ADDRCPT => single_text(&data).map(|rcpt| Response::AddRcpt { rcpt }),
        SMFIR_DELRCPT => single_text(&data).map(|rcpt| Response::DeleteRcpt { rcpt }),
        SMFIR_CHGFROM => change_from(&data),
        other => return Err(MilterError::UnknownCommand(other)),
    };
    response.map_err(|what| MilterError::Malformed {
        command: code,
        what,
    })
}

fn optneg(i: &[u8]) -> Result<Response, &'static str> {
    let (i, version) = u32_field(i)?;
    let (i, actions) = u32_field(i)?;
    let (mut i, protocol) = u32_field(i)?;
    let mut macros = Vec::new();
    while !i.is_empty() {
        let (rest, stage) = u32_field(i)?;
        let (rest, names) = text_field(rest)?;
        macros.push((stage, names));
        i = rest;
    }
    Ok(Response::OptNeg {
        version,
        actions,
        protocol,
        macros,
    })
}

/// Exactly one UTF-8 string.
fn single_text(i: &[u8]) -> Result<String, &'static str> {
    let (i, text) = text_field(i)?;
    end(i)?;
    Ok(text)
}

fn add_header(i: &[u8]) -> Result<Response, &'static str> {
    let (i, name) = text_field(i)?;
    let (i, value) = lossy_field(i)?;
    end(i)?;
    Ok(Response::AddHeader { name, value })
}

fn indexed_header(i: &[u8]) -> Result<(u32, String, String), &'static str> {
    let (i, index) = u32_field(i)?;
    let (i, name) = text_field(i)?;
    let (i, value) = lossy_field(i)?;
    end(i)?;
    Ok((index, name, value))
}

fn change_from(i: &[u8]) -> Result<Response, &'static str> {
    let (i, from) = text_field(i)?;
    let args = if i.is_empty() {
        None
    } else {
        Some(single_text(i)?)
    };
    Ok(Response::ChangeFrom { from, args })
}

fn reply_code(i: &[u8]) -> Result<Response, &'static str> {
    let (rest, raw) = cstr(i)?;
    end(rest)?;
    // Postfix's check, made on the text before `%%` is undone.
    match raw {
        [class @ (b'4' | b'5'), d1, d2, b' ' | b'-', first, ..]
            if d1.is_ascii_digit() && d2.is_ascii_digit() && first == class => {}
        _ => return Err(BAD_REPLY),
    }
    let raw = std::str::from_utf8(raw).map_err(|_| NOT_UTF8)?;
    let unescaped = undouble_percent(raw);
    // The first five bytes hold no `%`, so they survived unescaping unchanged.
    let prefix = &unescaped.as_bytes()[..3];
    let code = prefix
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let lines: Vec<&str> = unescaped.split("\r\n").collect();
    let mut text = String::with_capacity(unescaped.len());
    for (n, line) in lines.iter().enumerate() {
        let separator = if n + 1 == lines.len() { b' ' } else { b'-' };
        let bytes = line.as_bytes();
        if bytes.len() < 4 || &bytes[..3] != prefix || bytes[3] != separator {
            return Err(BAD_REPLY);
        }
        // Byte 3 is ASCII, so byte 4 starts a character.
        let body = &line[4..];
        if body.contains(['\r', '\n']) {
            return Err(BAD_REPLY);
        }
        if n > 0 {
            text.push('\n');
        }
        text.push_str(body);
    }
    Ok(Response::ReplyCode { code, text })
}

/// Undoes Postfix's view of `%`: `%x` becomes `x` (so `%%` becomes `%`), a final lone `%` goes.
fn undouble_percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decode::same_at_every_split;
    use crate::milter::consts::{
        SMFI_VERSION, SMFIF_ADDHDRS, SMFIF_CHGBODY, SMFIF_SETSYMLIST, SMFIM_ENVFROM, SMFIM_ENVRCPT,
        SMFIP_NOUNKNOWN, SMFIP_SKIP,
    };
    use crate::milter::{MISSING_NUL, SHORT_INTEGER, TRAILING_DATA};
    use crate::{AfterError, Decoded, decode_chunks};

    /// Every result of decoding an input, up to the first error.
    type Outcome = Vec<Result<Response, MilterError>>;

    /// A packet built by hand: length word, response byte, data.
    fn frame(code: u8, data: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(data.len() + 1)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        out.push(code);
        out.extend_from_slice(data);
        out
    }

    fn encode(response: &Response) -> Vec<u8> {
        let mut out = BytesMut::new();
        response.encode(&mut out);
        out.to_vec()
    }

    fn reply(code: u16, text: &str) -> Response {
        Response::ReplyCode {
            code,
            text: text.to_owned(),
        }
    }

    /// Feeds `chunks` one after another, collecting every result; stops at the first error (the
    /// session would end).
    fn run(max_len: usize, chunks: &[&[u8]]) -> Decoded<Response, MilterError> {
        decode_chunks(ResponseDecoder::new(max_len), chunks, AfterError::Stop)
    }

    /// Decodes `input` whole, split at every offset and byte by byte; all must agree. After an error
    /// the rest of the input is never fed, so only the results compare.
    fn decode_all_splits(max_len: usize, input: &[u8]) -> Outcome {
        same_at_every_split(input, |chunks| run(max_len, chunks).items)
    }

    /// Every response with its exact wire form, built by hand from the protocol reference.
    fn valid_cases() -> Vec<(Response, Vec<u8>)> {
        vec![
            // Sealgate's negotiation: macro lists for MAIL and RCPT.
            (
                Response::OptNeg {
                    version: SMFI_VERSION,
                    actions: SMFIF_ADDHDRS | SMFIF_CHGBODY | SMFIF_SETSYMLIST,
                    protocol: SMFIP_NOUNKNOWN | SMFIP_SKIP,
                    macros: vec![
                        (
                            SMFIM_ENVFROM,
                            "i {mail_addr} {tls_version} {cipher} {cipher_bits}".into(),
                        ),
                        (
                            SMFIM_ENVRCPT,
                            "i {rcpt_addr} {tls_version} {cipher} {cipher_bits}".into(),
                        ),
                    ],
                },
                [
                    &b"\x00\x00\x00\x7bO\x00\x00\x00\x06\x00\x00\x01\x03\x00\x00\x05\x00"[..],
                    b"\x00\x00\x00\x02i {mail_addr} {tls_version} {cipher} {cipher_bits}\x00",
                    b"\x00\x00\x00\x03i {rcpt_addr} {tls_version} {cipher} {cipher_bits}\x00",
                ]
                .concat(),
            ),
            (
                Response::OptNeg {
                    version: 6,
                    actions: 0,
                    protocol: 0,
                    macros: vec![],
                },
                frame(b'O', &[0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]),
            ),
            (Response::Continue, b"\x00\x00\x00\x01c".to_vec()),
            (Response::Accept, frame(b'a', b"")),
            (Response::Reject, frame(b'r', b"")),
            (Response::TempFail, frame(b't', b"")),
            (Response::Discard, frame(b'd', b"")),
            (Response::Progress, frame(b'p', b"")),
            (Response::Skip, frame(b's', b"")),
            (Response::Shutdown, frame(b'4', b"")),
            (
                reply(550, "5.7.1 TLS required for this recipient"),
                frame(b'y', b"550 5.7.1 TLS required for this recipient\0"),
            ),
            (
                reply(451, "4.7.1 Try again"),
                frame(b'y', b"451 4.7.1 Try again\0"),
            ),
            (
                reply(550, "5.7.1 first line\n5.7.1 second line"),
                frame(b'y', b"550-5.7.1 first line\r\n550 5.7.1 second line\0"),
            ),
            (
                reply(554, "5.7.0 100% sure"),
                frame(b'y', b"554 5.7.0 100%% sure\0"),
            ),
            (
                Response::Quarantine {
                    reason: "suspicious".into(),
                },
                frame(b'q', b"suspicious\0"),
            ),
            (
                Response::AddHeader {
                    name: "X-Sealgate".into(),
                    value: "encrypted".into(),
                },
                frame(b'h', b"X-Sealgate\0encrypted\0"),
            ),
            (
                Response::AddHeader {
                    name: "X-Folded".into(),
                    value: "a\n\tb".into(),
                },
                frame(b'h', b"X-Folded\0a\n\tb\0"),
            ),
            (
                Response::InsertHeader {
                    index: 0,
                    name: "X-First".into(),
                    value: "1".into(),
                },
                frame(b'i', b"\0\0\0\0X-First\x001\0"),
            ),
            (
                Response::ChangeHeader {
                    index: 1,
                    name: "Subject".into(),
                    value: "...".into(),
                },
                frame(b'm', b"\0\0\0\x01Subject\0...\0"),
            ),
            (
                Response::ChangeHeader {
                    index: 258,
                    name: "Received".into(),
                    value: "".into(),
                },
                frame(b'm', b"\0\0\x01\x02Received\0\0"),
            ),
            (
                Response::ReplaceBody(Bytes::from_static(b"-----BEGIN PGP MESSAGE-----\r\n")),
                frame(b'b', b"-----BEGIN PGP MESSAGE-----\r\n"),
            ),
            (Response::ReplaceBody(Bytes::new()), frame(b'b', b"")),
            (
                Response::AddRcpt {
                    rcpt: "<copy@example.org>".into(),
                },
                frame(b'+', b"<copy@example.org>\0"),
            ),
            (
                Response::DeleteRcpt {
                    rcpt: "<bob@example.com>".into(),
                },
                frame(b'-', b"<bob@example.com>\0"),
            ),
            (
                Response::ChangeFrom {
                    from: "<>".into(),
                    args: None,
                },
                frame(b'e', b"<>\0"),
            ),
            (
                Response::ChangeFrom {
                    from: "<a@example.org>".into(),
                    args: Some("RET=HDRS ENVID=x".into()),
                },
                frame(b'e', b"<a@example.org>\0RET=HDRS ENVID=x\0"),
            ),
            (
                Response::ChangeFrom {
                    from: "<a@example.org>".into(),
                    args: Some("".into()),
                },
                frame(b'e', b"<a@example.org>\0\0"),
            ),
        ]
    }

    #[test]
    fn encode_matches_wire() {
        for (response, wire) in valid_cases() {
            assert_eq!(encode(&response), wire, "{response:?}");
            assert_eq!(wire[4], response.code());
        }
    }

    #[test]
    fn decode_every_split() {
        for (response, wire) in valid_cases() {
            assert_eq!(
                decode_all_splits(DEFAULT_MAX_FRAME, &wire),
                vec![Ok(response.clone())],
                "{response:?}"
            );
            for at in 0..wire.len() {
                assert_eq!(
                    run(DEFAULT_MAX_FRAME, &[&wire[..at]]),
                    Decoded {
                        items: vec![],
                        rest: wire[..at].to_vec()
                    }
                );
            }
        }
    }

    #[test]
    fn all_responses_in_one_stream() {
        let cases = valid_cases();
        let stream: Vec<u8> = cases.iter().flat_map(|(_, wire)| wire.clone()).collect();
        let expected: Vec<_> = cases.into_iter().map(|(r, _)| Ok(r)).collect();
        assert_eq!(decode_all_splits(DEFAULT_MAX_FRAME, &stream), expected);
    }

    #[test]
    fn reply_code_sanitising() {
        let cases = [
            // No enhanced code: Postfix would refuse "550 TLS required", so one is added.
            (reply(550, "TLS required"), "550 5.0.0 TLS required"),
            (reply(550, ""), "550 5.0.0"),
            (reply(421, "4.3.2 Bye"), "421 4.3.2 Bye"),
            // A class that does not match the code's first digit is text, not a code.
            (reply(450, "5.7.1 x"), "450 4.0.0 5.7.1 x"),
            // Not a failure code.
            (reply(250, "2.0.0 ok"), "451 4.0.0 2.0.0 ok"),
            (reply(600, "6.0.0 x"), "451 4.0.0 6.0.0 x"),
            (reply(399, "x"), "451 4.0.0 x"),
            // % is doubled; \r\n and \n separate lines; other CR and NUL become spaces.
            (reply(550, "5.7.1 50%%"), "550 5.7.1 50%%%%"),
            (reply(550, "5.7.1 a\r\nb"), "550-5.7.1 a\r\n550 b"),
            (reply(550, "5.7.1 a\rb\0c"), "550 5.7.1 a b c"),
            (reply(550, "5.7.1 a\r\r\nb"), "550-5.7.1 a \r\n550 b"),
            (reply(550, "5.7.1 a\n"), "550-5.7.1 a\r\n550 "),
            (reply(550, "\n5.7.1 b"), "550-5.0.0\r\n550 5.7.1 b"),
            (reply(550, "5.7.1 a\n\nc"), "550-5.7.1 a\r\n550-\r\n550 c"),
            (reply(550, "5"), "550 5"),
        ];
        for (response, text) in cases {
            let mut data = text.as_bytes().to_vec();
            data.push(0);
            assert_eq!(encode(&response), frame(b'y', &data), "{response:?}");
        }
    }

    #[test]
    fn sanitised_replies_pass_the_decoder() {
        // Whatever the text, the encoded reply passes Postfix's check (mirrored by the decoder).
        let texts = [
            "",
            "\n",
            "\r",
            "%",
            "%%",
            "\0",
            "x\r\n\r\ny",
            "5.7.1",
            "\u{e9}t\u{e9}",
            "4",
        ];
        for code in [0, 250, 421, 450, 550, 554, 599, 600, u16::MAX] {
            for text in texts {
                let wire = encode(&reply(code, text));
                let decoded = run(DEFAULT_MAX_FRAME, &[&wire]).items;
                assert!(
                    matches!(decoded.as_slice(), [Ok(Response::ReplyCode { .. })]),
                    "{code} {text:?}: {decoded:?}"
                );
            }
        }
    }

    #[test]
    fn replace_body_is_chunked() {
        let body: Vec<u8> = (0..2 * MILTER_CHUNK_SIZE + 3)
            .map(|n| (n % 253) as u8)
            .collect();
        let wire = encode(&Response::ReplaceBody(Bytes::from(body.clone())));
        let decoded = run(MILTER_CHUNK_SIZE + 1, &[&wire]).items;
        let chunks: Vec<Bytes> = decoded
            .into_iter()
            .map(|r| match r {
                Ok(Response::ReplaceBody(chunk)) => chunk,
                other => panic!("{other:?}"),
            })
            .collect();
        let sizes: Vec<usize> = chunks.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [MILTER_CHUNK_SIZE, MILTER_CHUNK_SIZE, 3]);
        assert_eq!(chunks.concat(), body);
        // Exactly one chunk's worth stays one packet.
        let one = vec![b'x'; MILTER_CHUNK_SIZE];
        let wire = encode(&Response::ReplaceBody(Bytes::from(one.clone())));
        assert_eq!(wire, frame(b'b', &one));
        assert_eq!(
            decode_all_splits(MILTER_CHUNK_SIZE + 1, &wire),
            vec![Ok(Response::ReplaceBody(Bytes::from(one)))]
        );
    }

    #[test]
    fn nul_in_strings_becomes_space() {
        let cases = [
            (
                Response::AddHeader {
                    name: "X\0Y".into(),
                    value: "a\0b".into(),
                },
                frame(b'h', b"X Y\0a b\0"),
            ),
            (
                Response::OptNeg {
                    version: 6,
                    actions: 0,
                    protocol: 0,
                    macros: vec![(2, "i\0j".into())],
                },
                frame(b'O', b"\0\0\0\x06\0\0\0\0\0\0\0\0\0\0\0\x02i j\0"),
            ),
        ];
        for (response, wire) in cases {
            assert_eq!(encode(&response), wire);
        }
    }

    #[test]
    fn decode_lenient_parts() {
        let cases: Vec<(Vec<u8>, Response)> = vec![
            // A lone % is dropped, as Postfix does.
            (frame(b'y', b"550 5.7.1 a%b%\0"), reply(550, "5.7.1 ab")),
            (frame(b'y', b"550 5\0"), reply(550, "5")),
            (
                frame(b'h', b"X-8bit\0caf\xe9\0"),
                Response::AddHeader {
                    name: "X-8bit".into(),
                    value: "caf\u{fffd}".into(),
                },
            ),
        ];
        for (wire, response) in cases {
            assert_eq!(
                decode_all_splits(DEFAULT_MAX_FRAME, &wire),
                vec![Ok(response)]
            );
        }
    }

    #[test]
    fn malformed() {
        use MilterError::{EmptyFrame, FrameTooLarge, Malformed, UnknownCommand};
        let bad = |command: u8, what: &'static str| Err(Malformed { command, what });
        let cases: Vec<(Vec<u8>, Outcome)> = vec![
            (vec![0, 0, 0, 0], vec![Err(EmptyFrame)]),
            (
                vec![0xff, 0xff, 0xff, 0xff],
                vec![Err(FrameTooLarge {
                    len: 0xffff_ffff,
                    max: DEFAULT_MAX_FRAME,
                })],
            ),
            // Not valid replies to Postfix, or not representable.
            (frame(b'f', b""), vec![Err(UnknownCommand(b'f'))]),
            (frame(b'l', b""), vec![Err(UnknownCommand(b'l'))]),
            (frame(b'2', b"<a@b>\0\0"), vec![Err(UnknownCommand(b'2'))]),
            (frame(b'C', b""), vec![Err(UnknownCommand(b'C'))]),
            // Replies without data must have none.
            (frame(b'c', b"x"), vec![bad(b'c', TRAILING_DATA)]),
            (frame(b'a', b"\0"), vec![bad(b'a', TRAILING_DATA)]),
            (frame(b'r', b"x"), vec![bad(b'r', TRAILING_DATA)]),
            (frame(b't', b"x"), vec![bad(b't', TRAILING_DATA)]),
            (frame(b'd', b"x"), vec![bad(b'd', TRAILING_DATA)]),
            (frame(b's', b"x"), vec![bad(b's', TRAILING_DATA)]),
            (frame(b'p', b"x"), vec![bad(b'p', TRAILING_DATA)]),
            (frame(b'4', b"x"), vec![bad(b'4', TRAILING_DATA)]),
            // OPTNEG
            (
                frame(b'O', b"\0\0\0\x06\0\0\0"),
                vec![bad(b'O', SHORT_INTEGER)],
            ),
            (
                frame(b'O', b"\0\0\0\x06\0\0\0\0\0\0\0\0\0\0"),
                vec![bad(b'O', SHORT_INTEGER)],
            ),
            (
                frame(b'O', b"\0\0\0\x06\0\0\0\0\0\0\0\0\0\0\0\x02i"),
                vec![bad(b'O', MISSING_NUL)],
            ),
            (
                frame(b'O', b"\0\0\0\x06\0\0\0\0\0\0\0\0\0\0\0\x02\xff\0"),
                vec![bad(b'O', NOT_UTF8)],
            ),
            // REPLYCODE
            (frame(b'y', b""), vec![bad(b'y', MISSING_NUL)]),
            (frame(b'y', b"550 5.7.1 x"), vec![bad(b'y', MISSING_NUL)]),
            (
                frame(b'y', b"550 5.7.1 x\0y"),
                vec![bad(b'y', TRAILING_DATA)],
            ),
            (frame(b'y', b"250 2.0.0 ok\0"), vec![bad(b'y', BAD_REPLY)]),
            (frame(b'y', b"550 4.7.1 x\0"), vec![bad(b'y', BAD_REPLY)]),
            (frame(b'y', b"550 TLS\0"), vec![bad(b'y', BAD_REPLY)]),
            (frame(b'y', b"550\0"), vec![bad(b'y', BAD_REPLY)]),
            (frame(b'y', b"550 \0"), vec![bad(b'y', BAD_REPLY)]),
            (frame(b'y', b"5x0 5.7.1 x\0"), vec![bad(b'y', BAD_REPLY)]),
            (frame(b'y', b"550_5.7.1 x\0"), vec![bad(b'y', BAD_REPLY)]),
            (frame(b'y', b"550 %5.7.1 x\0"), vec![bad(b'y', BAD_REPLY)]),
            (frame(b'y', b"550-5.7.1 x\0"), vec![bad(b'y', BAD_REPLY)]),
            (
                frame(b'y', b"550-5.7.1 x\r\n551 y\0"),
                vec![bad(b'y', BAD_REPLY)],
            ),
            (
                frame(b'y', b"550 5.7.1 x\r\n550 y\0"),
                vec![bad(b'y', BAD_REPLY)],
            ),
            (
                frame(b'y', b"550-5.7.1 x\r\n55\0"),
                vec![bad(b'y', BAD_REPLY)],
            ),
            (frame(b'y', b"550 5.7.1 a\nb\0"), vec![bad(b'y', BAD_REPLY)]),
            (frame(b'y', b"550 5.7.1 a\rb\0"), vec![bad(b'y', BAD_REPLY)]),
            (frame(b'y', b"550 5.7.1 \xff\0"), vec![bad(b'y', NOT_UTF8)]),
            // Strings
            (frame(b'q', b"why"), vec![bad(b'q', MISSING_NUL)]),
            (frame(b'q', b"why\0x"), vec![bad(b'q', TRAILING_DATA)]),
            (frame(b'h', b"X-A"), vec![bad(b'h', MISSING_NUL)]),
            (frame(b'h', b"X-A\0v"), vec![bad(b'h', MISSING_NUL)]),
            (frame(b'h', b"X\xff\0v\0"), vec![bad(b'h', NOT_UTF8)]),
            (frame(b'h', b"X\0v\0\0"), vec![bad(b'h', TRAILING_DATA)]),
            (frame(b'i', b"\0\0\0"), vec![bad(b'i', SHORT_INTEGER)]),
            (frame(b'i', b"\0\0\0\x01X\0"), vec![bad(b'i', MISSING_NUL)]),
            (frame(b'm', b""), vec![bad(b'm', SHORT_INTEGER)]),
            (
                frame(b'm', b"\0\0\0\x01X\0v\0z"),
                vec![bad(b'm', TRAILING_DATA)],
            ),
            (frame(b'+', b""), vec![bad(b'+', MISSING_NUL)]),
            (frame(b'+', b"<\xff>\0"), vec![bad(b'+', NOT_UTF8)]),
            (
                frame(b'-', b"<a@b>\0<c@d>\0"),
                vec![bad(b'-', TRAILING_DATA)],
            ),
            (frame(b'e', b""), vec![bad(b'e', MISSING_NUL)]),
            (frame(b'e', b"<a@b>\0RET"), vec![bad(b'e', MISSING_NUL)]),
            (
                frame(b'e', b"<a@b>\0a\0b\0"),
                vec![bad(b'e', TRAILING_DATA)],
            ),
        ];
        for (wire, expected) in &cases {
            assert_eq!(
                &decode_all_splits(DEFAULT_MAX_FRAME, wire),
                expected,
                "{wire:?}"
            );
        }
    }

    #[test]
    fn undouble() {
        let cases = [
            ("", ""),
            ("%", ""),
            ("%%", "%"),
            ("a%b", "ab"),
            ("%%%%", "%%"),
            ("%\u{e9}", "\u{e9}"),
        ];
        for (input, output) in cases {
            assert_eq!(undouble_percent(input), output, "{input:?}");
        }
    }

    #[test]
    fn fuzz_entry_point_survives_garbage() {
        let stream: Vec<u8> = valid_cases()
            .into_iter()
            .flat_map(|(_, wire)| wire)
            .collect();
        crate::milter::fuzzing::decode_all_responses(&stream);
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let mut input = Vec::new();
            for _ in 0..(next() % 6) {
                let len = (next() % 24) as usize;
                let code = b"Ocartdsp4yqhimb+-e2"[(next() % 19) as usize];
                let mut data: Vec<u8> = (0..len.saturating_sub(1))
                    .map(|_| match next() % 7 {
                        0 => 0,
                        1 => b'%',
                        2 => b'\r',
                        3 => b'\n',
                        4 => 0xff,
                        _ => b'0' + (next() % 10) as u8,
                    })
                    .collect();
                // Give REPLYCODE a fair chance to pass the first check.
                if code == b'y' && data.len() >= 5 && next() % 2 == 0 {
                    data[..5].copy_from_slice(b"550 5");
                }
                input.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
                input.push(code);
                input.extend_from_slice(&data);
            }
            crate::milter::fuzzing::decode_all_responses(&input);
        }
    }
}
