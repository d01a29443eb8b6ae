//! Sendmail milter protocol version 6, as Postfix's `milter8` client speaks it: framing, the MTA's
//! commands ([`Command`]) and the filter's responses ([`Response`]).
//!
//! Every packet is `u32 len` (big-endian, counting the command byte and the data), one command byte,
//! then `len - 1` bytes of data. Strings end in NUL; an argv is NUL-terminated strings back to back;
//! integers are big-endian.
//!
//! As elsewhere in this crate, the decoders frame first and parse second: the length word decides
//! when a packet is complete (`Ok(None)` until then), and only the finished packet is parsed. A
//! length above the decoder's limit is refused as soon as the length word is in, so a peer cannot make
//! the decoder wait for (or allocate) more than that limit.
//!
//! Strictness matches Postfix's own reader (`milter8_read_data`): a packet must hold exactly the
//! fields of its command, so trailing bytes after the last field are [`MilterError::Malformed`]
//! ("trailing data"), for fixed-size commands too. The one exception is `E` (BODYEOB), whose data
//! is a last body chunk in libmilter's definition; Postfix sends it empty and the decoder ignores it.
//!
//! Text must be UTF-8 (names, addresses, macro names and values, MAIL/RCPT arguments), with two
//! exceptions decoded with [`String::from_utf8_lossy`]: header values, which may carry raw 8-bit
//! bytes from the message, and the text of an unknown SMTP command, which is whatever the client
//! typed.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use memchr::memchr;
use nom::{
    IResult, Parser,
    bytes::complete::{tag, take_till},
    number::complete::{be_u16, be_u32},
    sequence::terminated,
};

mod command;
pub mod consts;
mod response;

pub use command::{Command, Family, FrameDecoder};
pub use response::{Response, ResponseDecoder};

/// Default largest packet (command byte plus data) a decoder accepts; larger ones end the session
/// with [`MilterError::FrameTooLarge`]. It is also the default of sealgate's
/// `SEALGATE_MILTER_MAX_FRAME` (its config tests check that), so a decoder made with `default()`
/// (tests, fuzzing, the MTA side) accepts what a deployed filter accepts. Postfix sends far less:
/// a body chunk of [`MILTER_CHUNK_SIZE`](consts::MILTER_CHUNK_SIZE) bytes, or one header at its
/// `header_size_limit` (102400 bytes).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// The smallest limit the milter side's decoder may be given: one full body chunk from Postfix
/// ([`MILTER_CHUNK_SIZE`](consts::MILTER_CHUNK_SIZE) bytes) plus the command byte. Below it, a
/// message whose body fills a chunk would end its session; sealgate refuses a
/// `SEALGATE_MILTER_MAX_FRAME` below it.
pub const MAX_FRAME_FLOOR: usize = consts::MILTER_CHUNK_SIZE + 1;

const _: () = assert!(
    MAX_FRAME_FLOOR <= DEFAULT_MAX_FRAME,
    "the default is below the floor"
);

/// Why a milter packet could not be decoded. After any of these the two sides are out of step:
/// end the session.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MilterError {
    /// The length word announces a packet larger than the decoder's limit. Nothing is consumed.
    FrameTooLarge {
        /// The announced length (command byte plus data).
        len: usize,
        /// The decoder's limit.
        max: usize,
    },
    /// The length word is 0, so there is not even a command byte. The length word is consumed.
    EmptyFrame,
    /// The command (or response) byte is not one this codec knows. The packet is consumed.
    UnknownCommand(u8),
    /// The packet's data does not fit its command. The packet is consumed.
    Malformed {
        /// The command (or response) byte.
        command: u8,
        /// What is wrong, e.g. `"missing NUL terminator"`.
        what: &'static str,
    },
}

impl fmt::Display for MilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MilterError::FrameTooLarge { len, max } => {
                write!(f, "milter packet too large: {len} > {max} bytes")
            }
            MilterError::EmptyFrame => f.write_str("empty milter packet"),
            MilterError::UnknownCommand(command) => {
                write!(f, "unknown milter packet type {}", ByteName(*command))
            }
            MilterError::Malformed { command, what } => {
                write!(f, "malformed milter packet {}: {what}", ByteName(*command))
            }
        }
    }
}

impl std::error::Error for MilterError {}

/// Shows a command byte as `'O'` when printable, else as `0x00`.
struct ByteName(u8);

impl fmt::Display for ByteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", char::from(self.0))
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

// `what` texts of `MilterError::Malformed`, shared by both directions and the tests.
const SHORT_INTEGER: &str = "short integer";
const MISSING_NUL: &str = "missing NUL terminator";
const NOT_UTF8: &str = "not UTF-8";
const TRAILING_DATA: &str = "trailing data";
const BAD_FAMILY: &str = "bad address family";
const MISSING_STAGE: &str = "missing macro stage";
const UNPAIRED_MACRO: &str = "macro name without value";
const EMPTY_ARGV: &str = "empty argument list";
const BAD_REPLY: &str = "bad reply code";

/// Splits one complete packet off the front of `buf`: `Ok(None)` until it is all there.
///
/// The limit is checked as soon as the length word is in; a packet within it gets its whole size
/// reserved in `buf` at once, so it arrives with at most one reallocation.
fn split_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<(u8, Bytes)>, MilterError> {
    let Some(header) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    // A u32 always fits a usize on the 32- and 64-bit targets sealgate builds for; saturate anyway.
    let len = usize::try_from(u32::from_be_bytes(*header)).unwrap_or(usize::MAX);
    if len == 0 {
        buf.advance(4);
        return Err(MilterError::EmptyFrame);
    }
    let too_large = MilterError::FrameTooLarge { len, max: max_len };
    if len > max_len {
        return Err(too_large);
    }
    let Some(total) = len.checked_add(4) else {
        return Err(too_large);
    };
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    frame.advance(4);
    let command = frame.get_u8();
    Ok(Some((command, frame)))
}

/// Writes a placeholder length word and the command byte; returns where the packet starts, for
/// [`finish_frame`].
fn start_frame(out: &mut BytesMut, command: u8) -> usize {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(command);
    start
}

/// Patches the length word of the packet started at `start` now that its data is written.
///
/// # Panics
///
/// If the packet is longer than `u32::MAX` bytes (a single string or body over 4 GiB).
fn finish_frame(out: &mut BytesMut, start: usize) {
    let len = out.len() - start - 4;
    let Ok(len) = u32::try_from(len) else {
        panic!("milter packet of {len} bytes does not fit its u32 length word");
    };
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Writes `s` and its NUL terminator. A NUL inside `s` would end the string early and shift every
/// later field, so it is written as a space.
fn put_cstr(out: &mut BytesMut, s: &str) {
    let mut rest = s.as_bytes();
    while let Some(at) = memchr(0, rest) {
        out.extend_from_slice(&rest[..at]);
        out.put_u8(b' ');
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out.put_u8(0);
}

/// The result of one field parser: the rest of the data and the field, or what is wrong.
type Field<'a, T> = Result<(&'a [u8], T), &'static str>;

fn u32_field(i: &[u8]) -> Field<'_, u32> {
    let parsed: IResult<&[u8], u32> = be_u32(i);
    parsed.map_err(|_| SHORT_INTEGER)
}

fn u16_field(i: &[u8]) -> Field<'_, u16> {
    let parsed: IResult<&[u8], u16> = be_u16(i);
    parsed.map_err(|_| SHORT_INTEGER)
}

/// A NUL-terminated string, without its NUL.
fn cstr(i: &[u8]) -> Field<'_, &[u8]> {
    let parsed: IResult<&[u8], &[u8]> = terminated(take_till(|b| b == 0), tag(&b"\0"[..])).parse(i);
    parsed.map_err(|_| MISSING_NUL)
}

/// A NUL-terminated string that must be UTF-8.
fn text_field(i: &[u8]) -> Field<'_, String> {
    let (rest, raw) = cstr(i)?;
    Ok((rest, utf8(raw)?))
}

/// A NUL-terminated string whose bytes outside UTF-8 become U+FFFD (header values only).
fn lossy_field(i: &[u8]) -> Field<'_, String> {
    let (rest, raw) = cstr(i)?;
    Ok((rest, String::from_utf8_lossy(raw).into_owned()))
}

fn utf8(raw: &[u8]) -> Result<String, &'static str> {
    std::str::from_utf8(raw)
        .map(str::to_owned)
        .map_err(|_| NOT_UTF8)
}

/// The packet must be used up.
fn end(i: &[u8]) -> Result<(), &'static str> {
    if i.is_empty() {
        Ok(())
    } else {
        Err(TRAILING_DATA)
    }
}

/// Entry points for `cargo fuzz`; not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use bytes::BytesMut;

    use super::{DEFAULT_MAX_FRAME, FrameDecoder, ResponseDecoder};
    use crate::{AfterError, decode_chunks};

    /// Runs a [`FrameDecoder`] over `data` until it errors or needs more bytes. Every decoded command
    /// must encode to bytes that decode to the same command again.
    ///
    /// # Panics
    ///
    /// When that round trip fails: the bug a fuzzer is looking for.
    pub fn decode_all(data: &[u8]) {
        let decoded = decode_chunks(
            FrameDecoder::new(DEFAULT_MAX_FRAME),
            &[data],
            AfterError::Stop,
        );
        for command in decoded.items.iter().filter_map(|r| r.as_ref().ok()) {
            let mut wire = BytesMut::new();
            command.encode(&mut wire);
            // Lossy header values can grow when re-encoded, so the second decoder has no limit.
            let again = FrameDecoder::new(usize::MAX).decode(&mut wire);
            assert_eq!(
                again,
                Ok(Some(command.clone())),
                "round trip of {command:?}"
            );
            assert!(
                wire.is_empty(),
                "{command:?} encoded to more than one packet"
            );
        }
    }

    /// Runs a [`ResponseDecoder`] over `data` until it errors or needs more bytes, with the same
    /// round-trip check as [`decode_all`].
    ///
    /// # Panics
    ///
    /// When a decoded response does not survive encode → decode.
    pub fn decode_all_responses(data: &[u8]) {
        // Small enough that a decoded REPLBODY fits one packet when encoded again.
        let decoder = ResponseDecoder::new(super::consts::MILTER_CHUNK_SIZE + 1);
        let decoded = decode_chunks(decoder, &[data], AfterError::Stop);
        for response in decoded.items.iter().filter_map(|r| r.as_ref().ok()) {
            let mut wire = BytesMut::new();
            response.encode(&mut wire);
            let again = ResponseDecoder::new(usize::MAX).decode(&mut wire);
            assert_eq!(
                again,
                Ok(Some(response.clone())),
                "round trip of {response:?}"
            );
            assert!(
                wire.is_empty(),
                "{response:?} encoded to more than one packet"
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frame_limits() {
        // Exactly max_len is fine; one more is refused from the length word alone.
        let mut buf = BytesMut::from(&[0, 0, 0, 3, b'x', 1, 2][..]);
        assert_eq!(
            split_frame(&mut buf, 3).unwrap(),
            Some((b'x', Bytes::from_static(&[1, 2])))
        );
        assert!(buf.is_empty());
        let mut buf = BytesMut::from(&[0, 0, 0, 4][..]);
        assert_eq!(
            split_frame(&mut buf, 3),
            Err(MilterError::FrameTooLarge { len: 4, max: 3 })
        );
        assert_eq!(buf.len(), 4, "nothing consumed");
        let mut buf = BytesMut::from(&[0, 0, 0, 0, b'x'][..]);
        assert_eq!(split_frame(&mut buf, 3), Err(MilterError::EmptyFrame));
        assert_eq!(&buf[..], b"x", "length word consumed");
        for partial in [
            &[][..],
            &[0],
            &[0, 0, 0],
            &[0, 0, 0, 3],
            &[0, 0, 0, 3, b'x', 1],
        ] {
            let mut buf = BytesMut::from(partial);
            assert_eq!(split_frame(&mut buf, 3), Ok(None), "{partial:?}");
            assert_eq!(&buf[..], partial);
        }
        // usize::MAX as the limit must not overflow when the header size is added.
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(split_frame(&mut buf, usize::MAX), Ok(None));
    }

    #[test]
    fn four_gib_announcement_is_refused_without_allocating() {
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, b'B', 1, 2, 3]);
        assert_eq!(
            split_frame(&mut buf, DEFAULT_MAX_FRAME),
            Err(MilterError::FrameTooLarge {
                len: 0xffff_ffff,
                max: DEFAULT_MAX_FRAME
            })
        );
        assert!(buf.capacity() < 1024, "capacity {}", buf.capacity());
    }

    #[test]
    fn put_cstr_replaces_nul() {
        let mut out = BytesMut::new();
        put_cstr(&mut out, "a\0b");
        put_cstr(&mut out, "");
        assert_eq!(&out[..], b"a b\0\0");
    }

    #[test]
    fn field_parsers() {
        assert_eq!(u32_field(&[0, 0, 1, 0, 9]), Ok((&[9][..], 256)));
        assert_eq!(u32_field(&[0, 0, 1]), Err(SHORT_INTEGER));
        assert_eq!(u16_field(&[1]), Err(SHORT_INTEGER));
        assert_eq!(cstr(b"ab\0cd"), Ok((&b"cd"[..], &b"ab"[..])));
        assert_eq!(cstr(b"\0"), Ok((&b""[..], &b""[..])));
        assert_eq!(cstr(b"ab"), Err(MISSING_NUL));
        assert_eq!(cstr(b""), Err(MISSING_NUL));
        assert_eq!(text_field(b"\xff\0"), Err(NOT_UTF8));
        assert_eq!(
            lossy_field(b"a\xffb\0"),
            Ok((&b""[..], "a\u{fffd}b".to_owned()))
        );
        assert_eq!(end(b""), Ok(()));
        assert_eq!(end(b"x"), Err(TRAILING_DATA));
    }

    #[test]
    fn errors_display() {
        let cases = [
            (
                MilterError::FrameTooLarge { len: 10, max: 5 },
                "milter packet too large: 10 > 5 bytes",
            ),
            (MilterError::EmptyFrame, "empty milter packet"),
            (
                MilterError::UnknownCommand(b'Z'),
                "unknown milter packet type 'Z'",
            ),
            (
                MilterError::UnknownCommand(0),
                "unknown milter packet type 0x00",
            ),
            (
                MilterError::Malformed {
                    command: b'C',
                    what: BAD_FAMILY,
                },
                "malformed milter packet 'C': bad address family",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }
}
