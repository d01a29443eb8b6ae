//! MTA → milter commands: the typed [`Command`], its decoder [`FrameDecoder`] (the milter side) and
//! its encoder (the MTA side, for tests and fuzzing).

use bytes::{BufMut, Bytes, BytesMut};

use super::consts::{
    SMFIA_INET, SMFIA_INET6, SMFIA_UNIX, SMFIA_UNKNOWN, SMFIC_ABORT, SMFIC_BODY, SMFIC_BODYEOB,
    SMFIC_CONNECT, SMFIC_DATA, SMFIC_EOH, SMFIC_HEADER, SMFIC_HELO, SMFIC_MACRO, SMFIC_MAIL,
    SMFIC_OPTNEG, SMFIC_QUIT, SMFIC_QUIT_NC, SMFIC_RCPT, SMFIC_UNKNOWN,
};
use super::{
    BAD_FAMILY, DEFAULT_MAX_FRAME, EMPTY_ARGV, MISSING_STAGE, MilterError, UNPAIRED_MACRO, end,
    finish_frame, lossy_field, put_cstr, split_frame, start_frame, text_field, u16_field,
    u32_field,
};
use crate::Decode;

/// The address family of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    /// `U`: unknown; no port or address follows.
    Unknown,
    /// `L`: a Unix-domain socket; Postfix sends port 0 and the socket's address.
    Unix,
    /// `4`: IPv4.
    Inet,
    /// `6`: IPv6.
    Inet6,
}

impl Family {
    fn from_wire(byte: u8) -> Option<Self> {
        match byte {
            SMFIA_UNKNOWN => Some(Family::Unknown),
            SMFIA_UNIX => Some(Family::Unix),
            SMFIA_INET => Some(Family::Inet),
            SMFIA_INET6 => Some(Family::Inet6),
            _ => None,
        }
    }

    fn wire(&self) -> u8 {
        match self {
            Family::Unknown => SMFIA_UNKNOWN,
            Family::Unix => SMFIA_UNIX,
            Family::Inet => SMFIA_INET,
            Family::Inet6 => SMFIA_INET6,
        }
    }
}

/// One command from the MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `O`: option negotiation, the first packet. Postfix sends version 6, actions `0x1FF` and
    /// protocol `0x1FFFFF`.
    OptNeg {
        /// The MTA's protocol version.
        version: u32,
        /// The `SMFIF_*` actions the MTA allows.
        actions: u32,
        /// The `SMFIP_*` protocol flags the MTA understands.
        protocol: u32,
    },
    /// `D`: macros for the command that follows; sent even when a `SMFIP_NO*` flag suppresses that
    /// command. No reply.
    Macros {
        /// The command byte the macros belong to: `b'C'`, `b'H'`, `b'M'`, `b'R'`, `b'T'`, `b'N'`,
        /// `b'E'`, ...
        stage: u8,
        /// (name, value) pairs in the order sent. Names lose their braces: `{tls_version}` becomes
        /// `tls_version`, `i` stays `i`.
        macros: Vec<(String, String)>,
    },
    /// `C`: the SMTP client's connection.
    Connect {
        /// The client's host name, or `[address]` when it has none.
        hostname: String,
        /// The address family.
        family: Family,
        /// The client's port; `None` exactly when the family is [`Family::Unknown`].
        port: Option<u16>,
        /// The client's address; `None` exactly when the family is [`Family::Unknown`].
        address: Option<String>,
    },
    /// `H`: the HELO/EHLO name; sent again for the EHLO after STARTTLS.
    Helo {
        /// The name as the client sent it.
        name: String,
    },
    /// `M`: MAIL FROM.
    Mail {
        /// `args[0]` is `<address>` with its brackets, then the ESMTP arguments as typed
        /// (`SIZE=117`). Never empty.
        args: Vec<String>,
    },
    /// `R`: RCPT TO.
    Rcpt {
        /// `args[0]` is `<address>` with its brackets, then the ESMTP arguments as typed. Never empty.
        args: Vec<String>,
    },
    /// `T`: the DATA command.
    Data,
    /// `L`: one message header.
    Header {
        /// The header name, without the colon.
        name: String,
        /// The value as sent: Postfix removes one leading space (unless `SMFIP_HDR_LEADSPC`) and
        /// joins folded lines with `\n`. Bytes outside UTF-8 are decoded as U+FFFD.
        value: String,
    },
    /// `N`: end of headers.
    EndOfHeaders,
    /// `B`: one body chunk (Postfix: at most 65535 bytes, CRLF line ends).
    Body(Bytes),
    /// `E`: end of the message; the filter now sends its edits and a final reply. Data in the
    /// packet (a last body chunk, which Postfix never sends) is ignored.
    EndOfMessage,
    /// `A`: abort the current message; the connection goes on. No reply.
    Abort,
    /// `Q`: quit; the MTA closes the connection. No reply.
    Quit,
    /// `K`: quit, and a new connection starts on the same socket (Postfix never sends it).
    QuitNewConnection,
    /// `U`: an SMTP command the MTA did not recognise.
    Unknown {
        /// The command line as the client typed it; bytes outside UTF-8 are decoded as U+FFFD.
        command: String,
    },
}

impl Command {
    /// The command byte (`SMFIC_*`), e.g. for logging.
    pub fn code(&self) -> u8 {
        match self {
            Command::OptNeg { .. } => SMFIC_OPTNEG,
            Command::Macros { .. } => SMFIC_MACRO,
            Command::Connect { .. } => SMFIC_CONNECT,
            Command::Helo { .. } => SMFIC_HELO,
            Command::Mail { .. } => SMFIC_MAIL,
            Command::Rcpt { .. } => SMFIC_RCPT,
            Command::Data => SMFIC_DATA,
            Command::Header { .. } => SMFIC_HEADER,
            Command::EndOfHeaders => SMFIC_EOH,
            Command::Body(_) => SMFIC_BODY,
            Command::EndOfMessage => SMFIC_BODYEOB,
            Command::Abort => SMFIC_ABORT,
            Command::Quit => SMFIC_QUIT,
            Command::QuitNewConnection => SMFIC_QUIT_NC,
            Command::Unknown { .. } => SMFIC_UNKNOWN,
        }
    }

    /// Appends the packet as the MTA would send it (for tests and fuzzing); [`FrameDecoder`] decodes
    /// it back to an equal command.
    ///
    /// Macro names of one character go out bare, longer ones in braces (`i`, `{mail_addr}`), as
    /// Postfix sends them. A CONNECT of a known family without port or address sends 0 and `""`;
    /// for [`Family::Unknown`] port and address are left out. A NUL inside a string is sent as a
    /// space. [`Command::EndOfMessage`] goes out empty.
    ///
    /// # Panics
    ///
    /// If the packet would be longer than `u32::MAX` bytes.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = start_frame(out, self.code());
        match self {
            Command::OptNeg {
                version,
                actions,
                protocol,
            } => {
                out.put_u32(*version);
                out.put_u32(*actions);
                out.put_u32(*protocol);
            }
            Command::Macros { stage, macros } => {
                out.put_u8(*stage);
                for (name, value) in macros {
                    let mut chars = name.chars();
                    if chars.next().is_some() && chars.next().is_none() {
                        put_cstr(out, name);
                    } else {
                        put_cstr(out, &format!("{{{name}}}"));
                    }
                    put_cstr(out, value);
                }
            }
            Command::Connect {
                hostname,
                family,
                port,
                address,
            } => {
                put_cstr(out, hostname);
                out.put_u8(family.wire());
                if *family != Family::Unknown {
                    out.put_u16(port.unwrap_or(0));
                    put_cstr(out, address.as_deref().unwrap_or(""));
                }
            }
            Command::Helo { name } => put_cstr(out, name),
            Command::Mail { args } | Command::Rcpt { args } => {
                for arg in args {
                    put_cstr(out, arg);
                }
            }
            Command::Header { name, value } => {
                put_cstr(out, name);
                put_cstr(out, value);
            }
            Command::Body(chunk) => out.extend_from_slice(chunk),
            Command::Unknown { command } => put_cstr(out, command),
            Command::Data
            | Command::EndOfHeaders
            | Command::EndOfMessage
            | Command::Abort
            | Command::Quit
            | Command::QuitNewConnection => {}
        }
        finish_frame(out, start);
    }
}

/// The milter side's decoder: splits packets off the receive buffer, then parses each into a
/// [`Command`].
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    /// Largest packet (command byte plus data) accepted.
    max_len: usize,
}

impl Default for FrameDecoder {
    /// A decoder limited to [`DEFAULT_MAX_FRAME`].
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    /// `max_len`: largest packet (command byte plus data) accepted; a larger one is
    /// [`MilterError::FrameTooLarge`] (the session then ends). Postfix's body chunks need 65536.
    pub fn new(max_len: usize) -> Self {
        Self { max_len }
    }

    /// Decodes one command off the front of `buf`. `Ok(None)`: need more bytes (nothing is
    /// consumed). On `Ok(Some)` the packet's bytes are consumed from `buf`; later packets stay.
    ///
    /// # Errors
    ///
    /// A [`MilterError`] when the packet is too large, empty, of an unknown type or malformed; the
    /// session should end, since the peer can no longer be trusted to be in step.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, MilterError> {
        let Some((code, data)) = split_frame(buf, self.max_len)? else {
            return Ok(None);
        };
        parse(code, data).map(Some)
    }
}

impl Decode for FrameDecoder {
    type Item = Command;
    type Error = MilterError;

    /// See [`FrameDecoder::decode`]; after an error, end the session.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, MilterError> {
        // The inherent method, which callers use without importing the trait.
        FrameDecoder::decode(self, buf)
    }
}

/// Parses a complete packet's data according to its command byte.
fn parse(code: u8, data: Bytes) -> Result<Command, MilterError> {
    let command = match code {
        SMFIC_OPTNEG => optneg(&data),
        SMFIC_MACRO => macros(&data),
        SMFIC_CONNECT => connect(&data),
        SMFIC_HELO => single_text(&data).map(|name| Command::Helo { name }),
        SMFIC_MAIL => argv(&data).map(|args| Command::Mail { args }),
        SMFIC_RCPT => argv(&data).map(|args| Command::Rcpt { args }),
        SMFIC_DATA => end(&data).map(|()| Command::Data),
        SMFIC_HEADER => header(&data),
        SMFIC_EOH => end(&data).map(|()| Command::EndOfHeaders),
        SMFIC_BODY => Ok(Command::Body(data)),
        SMFIC_BODYEOB => Ok(Command::EndOfMessage),
        SMFIC_ABORT => end(&data).map(|()| Command::Abort),
        SMFIC_QUIT => end(&data).map(|()| Command::Quit),
        SMFIC_QUIT_NC => end(&data).map(|()| Command::QuitNewConnection),
        SMFIC_UNKNOWN => unknown(&data),
        other => return Err(MilterError::UnknownCommand(other)),
    };
    command.map_err(|what| MilterError::Malformed {
        command: code,
        what,
    })
}

fn optneg(i: &[u8]) -> Result<Command, &'static str> {
    let (i, version) = u32_field(i)?;
    let (i, actions) = u32_field(i)?;
    let (i, protocol) = u32_field(i)?;
    end(i)?;
    Ok(Command::OptNeg {
        version,
        actions,
        protocol,
    })
}

fn macros(i: &[u8]) -> Result<Command, &'static str> {
    let Some((&stage, mut i)) = i.split_first() else {
        return Err(MISSING_STAGE);
    };
    let mut macros = Vec::new();
    while !i.is_empty() {
        let (rest, name) = text_field(i)?;
        if rest.is_empty() {
            return Err(UNPAIRED_MACRO);
        }
        let (rest, value) = text_field(rest)?;
        macros.push((strip_braces(&name).to_owned(), value));
        i = rest;
    }
    Ok(Command::Macros { stage, macros })
}

/// `{name}` → `name`; anything else is kept as is.
fn strip_braces(name: &str) -> &str {
    name.strip_prefix('{')
        .and_then(|inner| inner.strip_suffix('}'))
        .unwrap_or(name)
}

fn connect(i: &[u8]) -> Result<Command, &'static str> {
    let (i, hostname) = text_field(i)?;
    let Some((&family, i)) = i.split_first() else {
        return Err(BAD_FAMILY);
    };
    let family = Family::from_wire(family).ok_or(BAD_FAMILY)?;
    if family == Family::Unknown {
        end(i)?;
        return Ok(Command::Connect {
            hostname,
            family,
            port: None,
            address: None,
        });
    }
    let (i, port) = u16_field(i)?;
    let (i, address) = text_field(i)?;
    end(i)?;
    Ok(Command::Connect {
        hostname,
        family,
        port: Some(port),
        address: Some(address),
    })
}

/// Exactly one UTF-8 string.
fn single_text(i: &[u8]) -> Result<String, &'static str> {
    let (i, text) = text_field(i)?;
    end(i)?;
    Ok(text)
}

/// One or more UTF-8 strings back to back.
fn argv(mut i: &[u8]) -> Result<Vec<String>, &'static str> {
    if i.is_empty() {
        return Err(EMPTY_ARGV);
    }
    let mut args = Vec::new();
    while !i.is_empty() {
        let (rest, arg) = text_field(i)?;
        args.push(arg);
        i = rest;
    }
    Ok(args)
}

fn header(i: &[u8]) -> Result<Command, &'static str> {
    let (i, name) = text_field(i)?;
    let (i, value) = lossy_field(i)?;
    end(i)?;
    Ok(Command::Header { name, value })
}

fn unknown(i: &[u8]) -> Result<Command, &'static str> {
    let (i, command) = lossy_field(i)?;
    end(i)?;
    Ok(Command::Unknown { command })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decode::same_at_every_split;
    use crate::milter::consts::{SMFI_V6_ACTS, SMFI_VERSION};
    use crate::milter::{MAX_FRAME_FLOOR, MISSING_NUL, NOT_UTF8, SHORT_INTEGER, TRAILING_DATA};
    use crate::{AfterError, Decoded, decode_chunks};

    /// Every result of decoding an input, up to the first error.
    type Outcome = Vec<Result<Command, MilterError>>;

    /// A packet built by hand: length word, command byte, data.
    fn frame(code: u8, data: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(data.len() + 1)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        out.push(code);
        out.extend_from_slice(data);
        out
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Feeds `chunks` one after another, collecting every result; stops at the first error (the
    /// session would end).
    fn run(max_len: usize, chunks: &[&[u8]]) -> Decoded<Command, MilterError> {
        decode_chunks(FrameDecoder::new(max_len), chunks, AfterError::Stop)
    }

    /// Decodes `input` whole, split at every offset and byte by byte; all must agree. After an error
    /// the rest of the input is never fed, so only the results compare.
    fn decode_all_splits(max_len: usize, input: &[u8]) -> Outcome {
        same_at_every_split(input, |chunks| run(max_len, chunks).items)
    }

    /// Every command with its exact wire form, built by hand from the protocol reference.
    fn valid_cases() -> Vec<(Command, Vec<u8>)> {
        vec![
            // Postfix's OPTNEG: version 6, every action, every v6 protocol flag.
            (
                Command::OptNeg {
                    version: SMFI_VERSION,
                    actions: SMFI_V6_ACTS,
                    protocol: 0x1F_FFFF,
                },
                b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff".to_vec(),
            ),
            // Postfix's default milter_mail_macros, as far as they are defined.
            (
                Command::Macros {
                    stage: b'M',
                    macros: pairs(&[
                        ("i", "4XyZ1234"),
                        ("auth_authen", "alice"),
                        ("mail_addr", "alice@example.org"),
                    ]),
                },
                frame(
                    b'D',
                    b"Mi\x004XyZ1234\x00{auth_authen}\x00alice\x00{mail_addr}\x00alice@example.org\x00",
                ),
            ),
            (
                Command::Macros {
                    stage: b'H',
                    macros: pairs(&[
                        ("tls_version", "TLSv1.3"),
                        ("cipher", "TLS_AES_256_GCM_SHA384"),
                        ("cipher_bits", "256"),
                    ]),
                },
                frame(
                    b'D',
                    b"H{tls_version}\0TLSv1.3\0{cipher}\0TLS_AES_256_GCM_SHA384\0{cipher_bits}\x00256\0",
                ),
            ),
            // Postfix sends a D even when no macro of the list is defined.
            (
                Command::Macros {
                    stage: b'C',
                    macros: vec![],
                },
                frame(b'D', b"C"),
            ),
            (
                Command::Macros {
                    stage: b'R',
                    macros: pairs(&[("rcpt_addr", ""), ("j", "mx.example.org")]),
                },
                frame(b'D', b"R{rcpt_addr}\0\0j\0mx.example.org\0"),
            ),
            (
                Command::Connect {
                    hostname: "mail.example.net".into(),
                    family: Family::Inet,
                    port: Some(41234),
                    address: Some("192.0.2.7".into()),
                },
                b"\x00\x00\x00\x1fCmail.example.net\x004\xa1\x12192.0.2.7\x00".to_vec(),
            ),
            (
                Command::Connect {
                    hostname: "[2001:db8::1]".into(),
                    family: Family::Inet6,
                    port: Some(25),
                    address: Some("2001:db8::1".into()),
                },
                frame(b'C', b"[2001:db8::1]\x006\x00\x192001:db8::1\x00"),
            ),
            (
                Command::Connect {
                    hostname: "localhost".into(),
                    family: Family::Unix,
                    port: Some(0),
                    address: Some("/var/run/x.sock".into()),
                },
                frame(b'C', b"localhost\0L\0\0/var/run/x.sock\0"),
            ),
            (
                Command::Connect {
                    hostname: "unknown".into(),
                    family: Family::Unknown,
                    port: None,
                    address: None,
                },
                frame(b'C', b"unknown\0U"),
            ),
            (
                Command::Helo {
                    name: "client.example.net".into(),
                },
                frame(b'H', b"client.example.net\0"),
            ),
            (Command::Helo { name: "".into() }, frame(b'H', b"\0")),
            (
                Command::Mail {
                    args: strings(&["<alice@example.org>", "SIZE=117", "BODY=8BITMIME"]),
                },
                frame(b'M', b"<alice@example.org>\0SIZE=117\0BODY=8BITMIME\0"),
            ),
            (
                Command::Mail {
                    args: strings(&["<>"]),
                },
                frame(b'M', b"<>\0"),
            ),
            (
                Command::Rcpt {
                    args: strings(&["<bob@example.com>"]),
                },
                frame(b'R', b"<bob@example.com>\0"),
            ),
            (
                Command::Rcpt {
                    args: strings(&["<b\u{f6}b@example.com>", "NOTIFY=NEVER"]),
                },
                frame(b'R', "<b\u{f6}b@example.com>\0NOTIFY=NEVER\0".as_bytes()),
            ),
            (Command::Data, frame(b'T', b"")),
            (
                Command::Header {
                    name: "Subject".into(),
                    value: "hello".into(),
                },
                frame(b'L', b"Subject\0hello\0"),
            ),
            // A folded header: Postfix joins its lines with \n.
            (
                Command::Header {
                    name: "X-Folded".into(),
                    value: "first line\n\tsecond line".into(),
                },
                frame(b'L', b"X-Folded\0first line\n\tsecond line\0"),
            ),
            (
                Command::Header {
                    name: "X-Empty".into(),
                    value: "".into(),
                },
                frame(b'L', b"X-Empty\0\0"),
            ),
            (Command::EndOfHeaders, frame(b'N', b"")),
            (
                Command::Body(Bytes::from_static(b"Hello\r\n\0binary\xff\r\n")),
                frame(b'B', b"Hello\r\n\0binary\xff\r\n"),
            ),
            (Command::Body(Bytes::new()), frame(b'B', b"")),
            (Command::EndOfMessage, frame(b'E', b"")),
            (Command::Abort, frame(b'A', b"")),
            (Command::Quit, b"\x00\x00\x00\x01Q".to_vec()),
            (Command::QuitNewConnection, frame(b'K', b"")),
            (
                Command::Unknown {
                    command: "XYZZY plugh".into(),
                },
                frame(b'U', b"XYZZY plugh\0"),
            ),
        ]
    }

    #[test]
    fn encode_matches_wire() {
        for (command, wire) in valid_cases() {
            let mut out = BytesMut::new();
            command.encode(&mut out);
            assert_eq!(&out[..], &wire[..], "{command:?}");
            assert_eq!(out[4], command.code());
        }
    }

    #[test]
    fn decode_every_split() {
        for (command, wire) in valid_cases() {
            assert_eq!(
                decode_all_splits(DEFAULT_MAX_FRAME, &wire),
                vec![Ok(command.clone())],
                "{command:?}"
            );
            // Every strict prefix is "need more bytes", never an error.
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
    fn a_whole_session_in_one_stream() {
        let cases = valid_cases();
        let mut stream = Vec::new();
        for (_, wire) in &cases {
            stream.extend_from_slice(wire);
        }
        let expected: Vec<_> = cases.into_iter().map(|(c, _)| Ok(c)).collect();
        assert_eq!(decode_all_splits(DEFAULT_MAX_FRAME, &stream), expected);
    }

    #[test]
    fn full_body_chunk() {
        let chunk: Vec<u8> = (0..65535u32).map(|n| (n % 251) as u8).collect();
        let command = Command::Body(Bytes::from(chunk.clone()));
        let wire = frame(b'B', &chunk);
        let mut out = BytesMut::new();
        command.encode(&mut out);
        assert_eq!(&out[..], &wire[..]);
        assert_eq!(&wire[..5], b"\x00\x01\x00\x00B");
        // The floor is exactly what a full chunk needs.
        assert_eq!(decode_all_splits(MAX_FRAME_FLOOR, &wire), vec![Ok(command)]);
        assert_eq!(
            run(MAX_FRAME_FLOOR - 1, &[&wire]).items,
            vec![Err(MilterError::FrameTooLarge {
                len: 65536,
                max: 65535
            })]
        );
    }

    #[test]
    fn round_trip_odd_values() {
        let cases = [
            // Names that are not single characters get braces on the wire and lose them again.
            Command::Macros {
                stage: b'E',
                macros: pairs(&[
                    ("", "empty name"),
                    ("{", "brace"),
                    ("\u{e9}", "x"),
                    ("ab", ""),
                ]),
            },
            Command::Macros {
                stage: 0,
                macros: pairs(&[("{nested}", "v")]),
            },
            Command::Header {
                name: "X-8bit".into(),
                value: "caf\u{e9} \u{fffd}".into(),
            },
            Command::Unknown { command: "".into() },
            Command::OptNeg {
                version: 2,
                actions: 0,
                protocol: u32::MAX,
            },
        ];
        for command in cases {
            let mut out = BytesMut::new();
            command.encode(&mut out);
            assert_eq!(
                decode_all_splits(DEFAULT_MAX_FRAME, &out),
                vec![Ok(command.clone())]
            );
        }
    }

    #[test]
    fn encode_normalises() {
        let cases = [
            (
                Command::Connect {
                    hostname: "h".into(),
                    family: Family::Inet,
                    port: None,
                    address: None,
                },
                frame(b'C', b"h\x004\0\0\0"),
            ),
            (
                Command::Connect {
                    hostname: "h".into(),
                    family: Family::Unknown,
                    port: Some(25),
                    address: Some("192.0.2.1".into()),
                },
                frame(b'C', b"h\0U"),
            ),
            (
                Command::Helo {
                    name: "a\0b".into(),
                },
                frame(b'H', b"a b\0"),
            ),
            (
                Command::Macros {
                    stage: b'C',
                    macros: pairs(&[("{j}", "x")]),
                },
                frame(b'D', b"C{{j}}\0x\0"),
            ),
        ];
        for (command, wire) in cases {
            let mut out = BytesMut::new();
            command.encode(&mut out);
            assert_eq!(&out[..], &wire[..], "{command:?}");
        }
    }

    #[test]
    fn lossy_and_ignored_data() {
        let cases: Vec<(Vec<u8>, Command)> = vec![
            (
                frame(b'L', b"Subject\0caf\xe9\0"),
                Command::Header {
                    name: "Subject".into(),
                    value: "caf\u{fffd}".into(),
                },
            ),
            (
                frame(b'U', b"\xff\xfe\0"),
                Command::Unknown {
                    command: "\u{fffd}\u{fffd}".into(),
                },
            ),
            (frame(b'E', b"last chunk\r\n"), Command::EndOfMessage),
            (
                frame(b'D', b"M{tls_version\0x\0"),
                Command::Macros {
                    stage: b'M',
                    macros: pairs(&[("{tls_version", "x")]),
                },
            ),
        ];
        for (wire, command) in cases {
            assert_eq!(
                decode_all_splits(DEFAULT_MAX_FRAME, &wire),
                vec![Ok(command)]
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
            // One byte over the limit, refused from the length word alone.
            (
                [
                    &u32::try_from(DEFAULT_MAX_FRAME + 1).unwrap().to_be_bytes()[..],
                    b"B",
                ]
                .concat(),
                vec![Err(FrameTooLarge {
                    len: DEFAULT_MAX_FRAME + 1,
                    max: DEFAULT_MAX_FRAME,
                })],
            ),
            (frame(b'Z', b""), vec![Err(UnknownCommand(b'Z'))]),
            (frame(b'o', b""), vec![Err(UnknownCommand(b'o'))]),
            (frame(0, b"xyz"), vec![Err(UnknownCommand(0))]),
            // Good packets before a bad one are still delivered.
            (
                [frame(b'T', b""), frame(b'?', b"")].concat(),
                vec![Ok(Command::Data), Err(UnknownCommand(b'?'))],
            ),
            // OPTNEG: exactly three u32.
            (frame(b'O', b""), vec![bad(b'O', SHORT_INTEGER)]),
            (
                frame(b'O', b"\0\0\0\x06\0\0\x01\xff\0\x1f\xff"),
                vec![bad(b'O', SHORT_INTEGER)],
            ),
            (
                frame(b'O', b"\0\0\0\x06\0\0\x01\xff\0\x1f\xff\xff\0"),
                vec![bad(b'O', TRAILING_DATA)],
            ),
            // MACRO
            (frame(b'D', b""), vec![bad(b'D', MISSING_STAGE)]),
            (frame(b'D', b"Mi"), vec![bad(b'D', MISSING_NUL)]),
            (frame(b'D', b"Mi\0"), vec![bad(b'D', UNPAIRED_MACRO)]),
            (frame(b'D', b"Mi\0x"), vec![bad(b'D', MISSING_NUL)]),
            (frame(b'D', b"M\xff\0x\0"), vec![bad(b'D', NOT_UTF8)]),
            (frame(b'D', b"Mi\0\xff\0"), vec![bad(b'D', NOT_UTF8)]),
            // CONNECT
            (frame(b'C', b""), vec![bad(b'C', MISSING_NUL)]),
            (frame(b'C', b"host"), vec![bad(b'C', MISSING_NUL)]),
            (frame(b'C', b"host\0"), vec![bad(b'C', BAD_FAMILY)]),
            (
                frame(b'C', b"host\0X\0\x19a\0"),
                vec![bad(b'C', BAD_FAMILY)],
            ),
            (frame(b'C', b"host\x004"), vec![bad(b'C', SHORT_INTEGER)]),
            (frame(b'C', b"host\x004\0"), vec![bad(b'C', SHORT_INTEGER)]),
            (
                frame(b'C', b"host\x004\0\x19"),
                vec![bad(b'C', MISSING_NUL)],
            ),
            (
                frame(b'C', b"host\x004\0\x19192.0.2.1"),
                vec![bad(b'C', MISSING_NUL)],
            ),
            (
                frame(b'C', b"host\x004\0\x19192.0.2.\xff\0"),
                vec![bad(b'C', NOT_UTF8)],
            ),
            (
                frame(b'C', b"h\xc3\x28\x004\0\x19192.0.2.1\0"),
                vec![bad(b'C', NOT_UTF8)],
            ),
            (
                frame(b'C', b"host\x004\0\x19192.0.2.1\0\0"),
                vec![bad(b'C', TRAILING_DATA)],
            ),
            (frame(b'C', b"host\0U\0"), vec![bad(b'C', TRAILING_DATA)]),
            // HELO
            (frame(b'H', b""), vec![bad(b'H', MISSING_NUL)]),
            (frame(b'H', b"name"), vec![bad(b'H', MISSING_NUL)]),
            (frame(b'H', b"name\0x\0"), vec![bad(b'H', TRAILING_DATA)]),
            (frame(b'H', b"n\xffme\0"), vec![bad(b'H', NOT_UTF8)]),
            // MAIL / RCPT
            (frame(b'M', b""), vec![bad(b'M', EMPTY_ARGV)]),
            (frame(b'M', b"<a@b>"), vec![bad(b'M', MISSING_NUL)]),
            (frame(b'M', b"<a@b>\0SIZE=1"), vec![bad(b'M', MISSING_NUL)]),
            (frame(b'R', b"<\xff@b>\0"), vec![bad(b'R', NOT_UTF8)]),
            (frame(b'R', b""), vec![bad(b'R', EMPTY_ARGV)]),
            // HEADER: the name must be UTF-8, both strings terminated, nothing after.
            (frame(b'L', b"Subject"), vec![bad(b'L', MISSING_NUL)]),
            (frame(b'L', b"Subject\0hello"), vec![bad(b'L', MISSING_NUL)]),
            (frame(b'L', b"Subject\0"), vec![bad(b'L', MISSING_NUL)]),
            (frame(b'L', b"S\xffbject\0x\0"), vec![bad(b'L', NOT_UTF8)]),
            (frame(b'L', b"a\0b\0c"), vec![bad(b'L', TRAILING_DATA)]),
            // Fixed-size commands with data: rejected, as Postfix rejects replies with stray data.
            (frame(b'T', b"x"), vec![bad(b'T', TRAILING_DATA)]),
            (frame(b'N', b"\0"), vec![bad(b'N', TRAILING_DATA)]),
            (frame(b'A', b"x"), vec![bad(b'A', TRAILING_DATA)]),
            (frame(b'Q', b"x"), vec![bad(b'Q', TRAILING_DATA)]),
            (frame(b'K', b"x"), vec![bad(b'K', TRAILING_DATA)]),
            // UNKNOWN
            (frame(b'U', b""), vec![bad(b'U', MISSING_NUL)]),
            (frame(b'U', b"HELP"), vec![bad(b'U', MISSING_NUL)]),
            (frame(b'U', b"HELP\0x"), vec![bad(b'U', TRAILING_DATA)]),
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
    fn bytes_after_a_packet_stay_in_buffer() {
        let mut dec = FrameDecoder::default();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(b'T', b""));
        buf.extend_from_slice(&frame(b'L', b"Subject\0")[..7]);
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(Command::Data));
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], &frame(b'L', b"Subject\0")[..7]);
    }

    #[test]
    fn memory_stays_bounded() {
        // A packet announcing 4 GiB is refused before any of it is buffered or reserved.
        let mut dec = FrameDecoder::new(1024);
        let mut buf = BytesMut::with_capacity(8);
        buf.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(MilterError::FrameTooLarge { .. })
        ));
        assert!(buf.capacity() < 1024);
        // A packet within the limit reserves at most its own size.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 4, 0, b'B']);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(buf.capacity() >= 1028 && buf.capacity() < 4096);
    }

    #[test]
    fn fuzz_entry_point_survives_garbage() {
        // Valid input goes through the round-trip assertions.
        let mut stream = Vec::new();
        for (_, wire) in valid_cases() {
            stream.extend_from_slice(&wire);
        }
        crate::milter::fuzzing::decode_all(&stream);
        // Pseudo-random garbage, biased towards small lengths and known command bytes.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
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
                let code = b"OCDHMRTLNBEAQKUZ"[(next() % 16) as usize];
                let data: Vec<u8> = (0..len.saturating_sub(1))
                    .map(|_| match next() % 5 {
                        0 => 0,
                        1 => b'4',
                        2 => 0xff,
                        _ => b'a' + (next() % 26) as u8,
                    })
                    .collect();
                input.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
                input.push(code);
                input.extend_from_slice(&data);
            }
            crate::milter::fuzzing::decode_all(&input);
        }
    }
}
