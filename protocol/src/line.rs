//! Command-line framing: splits CRLF (or bare LF) terminated lines off a byte buffer, with a hard length limit.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};
use memchr::memchr;

use crate::Decode;

/// Splits command lines off the front of a receive buffer.
///
/// The decoder is stateful only for over-long lines: after reporting [`LineError::TooLong`] it discards
/// input up to and including the next LF, even across calls, so the caller can answer the error once and
/// carry on with the next command.
#[derive(Debug, Clone)]
pub struct LineDecoder {
    /// Longest accepted line, not counting its line ending.
    max_len: usize,
    /// True while the rest of an over-long line is being thrown away.
    discarding: bool,
}

/// Errors from [`LineDecoder::decode`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// The line exceeds the decoder's limit; it has been (or is being) discarded.
    TooLong,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::TooLong => f.write_str("line too long"),
        }
    }
}

impl std::error::Error for LineError {}

impl LineDecoder {
    /// `max_len` counts the line without its line ending.
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            discarding: false,
        }
    }

    /// Splits one line off the front of `buf`. Returns the line without its ending (CRLF, or a bare LF;
    /// a CR right before the LF is stripped). `Ok(None)`: no complete line yet.
    ///
    /// If the buffered bytes hold no LF within `max_len + 2` bytes, or a complete line is longer than
    /// `max_len`, this returns `Err(LineError::TooLong)` once, discards the line, and keeps discarding
    /// (across calls) up to and including the next LF before it resumes normal framing. While discarding,
    /// consumed bytes are dropped from `buf`, so memory stays bounded by what the caller reads at once.
    ///
    /// # Errors
    ///
    /// [`LineError::TooLong`], once per over-long line; the caller answers "500 5.5.2 Line too long" and
    /// keeps calling `decode`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, LineError> {
        if self.discarding && !self.discard(buf) {
            return Ok(None);
        }
        // `max_len` content bytes plus CR LF is the longest acceptable frame, so looking further than
        // that is pointless: without an LF in this window the line is too long whatever follows.
        let window = self.max_len.saturating_add(2);
        let limit = buf.len().min(window);
        match memchr(b'\n', &buf[..limit]) {
            Some(lf) => {
                let line = buf.split_to(lf + 1).freeze();
                let mut end = lf;
                if end > 0 && line[end - 1] == b'\r' {
                    end -= 1;
                }
                if end > self.max_len {
                    // The whole line, ending included, is already gone from `buf`.
                    return Err(LineError::TooLong);
                }
                Ok(Some(line.slice(..end)))
            }
            None if buf.len() >= window => {
                self.discarding = true;
                self.discard(buf);
                Err(LineError::TooLong)
            }
            None => Ok(None),
        }
    }

    /// Drops bytes up to and including the next LF. Returns true when that LF was found and normal
    /// framing may resume.
    fn discard(&mut self, buf: &mut BytesMut) -> bool {
        match memchr(b'\n', buf) {
            Some(lf) => {
                buf.advance(lf + 1);
                self.discarding = false;
                true
            }
            None => {
                buf.clear();
                false
            }
        }
    }
}

impl Decode for LineDecoder {
    type Item = Bytes;
    type Error = LineError;

    /// See [`LineDecoder::decode`]; after an error, decoding goes on with the next line.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, LineError> {
        // The inherent method, which callers use without importing the trait.
        LineDecoder::decode(self, buf)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::decode::same_at_every_split;
    use crate::{AfterError, Decoded, decode_chunks};

    /// Every result of decoding an input: the lines and the over-long ones.
    type Outcome = Vec<Result<Bytes, LineError>>;

    /// Feeds `chunks` one after another, draining every result after each chunk; an over-long line
    /// is reported and skipped, as the session answers it and reads on.
    fn run(max_len: usize, chunks: &[&[u8]]) -> Decoded<Bytes, LineError> {
        decode_chunks(LineDecoder::new(max_len), chunks, AfterError::Resume)
    }

    /// Runs `input` whole, split at every offset, and byte by byte; all must agree, on the lines
    /// and on the bytes left over.
    fn run_all_splits(max_len: usize, input: &[u8]) -> Outcome {
        same_at_every_split(input, |chunks| run(max_len, chunks)).items
    }

    fn line(s: &str) -> Result<Bytes, LineError> {
        Ok(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn table() {
        use LineError::TooLong;
        let cases: &[(usize, &str, Outcome)] = &[
            (10, "", vec![]),
            (10, "NOOP", vec![]),
            (10, "NOOP\r\n", vec![line("NOOP")]),
            (10, "NOOP\n", vec![line("NOOP")]),
            (10, "\r\n", vec![line("")]),
            (10, "\n\n", vec![line(""), line("")]),
            (10, "a\rb\r\n", vec![line("a\rb")]),
            (10, "a\r\r\n", vec![line("a\r")]),
            (10, "\r", vec![]),
            (10, "NOOP\r\nQUIT\r\nRS", vec![line("NOOP"), line("QUIT")]),
            // Exactly max_len content bytes, with either ending.
            (4, "abcd\r\n", vec![line("abcd")]),
            (4, "abcd\n", vec![line("abcd")]),
            // One byte more is too long, however it ends.
            (4, "abcde\r\nok\r\n", vec![Err(TooLong), line("ok")]),
            (4, "abcde\nok\n", vec![Err(TooLong), line("ok")]),
            // A CR as the 5th content byte before a CRLF: 5 content bytes.
            (4, "abcd\r\r\nok\r\n", vec![Err(TooLong), line("ok")]),
            // Far too long, split across many lines of garbage: one error per long line.
            (
                4,
                "abcdefghijklmnop\r\nx\r\nqrstuvwxyz\nyz\n",
                vec![Err(TooLong), line("x"), Err(TooLong), line("yz")],
            ),
            // Too long and not yet terminated: one error, the rest is swallowed.
            (4, "abcdefghij", vec![Err(TooLong)]),
            (4, "abcdefghij\r", vec![Err(TooLong)]),
            (0, "\r\n\n", vec![line(""), line("")]),
            (0, "a\r\n\n", vec![Err(TooLong), line("")]),
            (10, "caf\u{e9}\r\n", vec![line("caf\u{e9}")]),
            (10, "a\0b\r\n", vec![line("a\0b")]),
        ];
        for (max_len, input, expected) in cases {
            let got = run_all_splits(*max_len, input.as_bytes());
            assert_eq!(&got, expected, "input {input:?}");
        }
    }

    #[test]
    fn remaining_bytes_stay_in_buffer() {
        let mut dec = LineDecoder::new(100);
        let mut buf = BytesMut::from(&b"NOOP\r\nDATA\r\nhello"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap().unwrap(), &b"NOOP"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap().unwrap(), &b"DATA"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        // The DATA phase takes over here, so the bytes must still be there.
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn memory_stays_bounded_without_lf() {
        const PIECE: usize = 64 * 1024;
        let max_len = 2048;
        let mut dec = LineDecoder::new(max_len);
        let mut buf = BytesMut::new();
        let piece = vec![b'x'; PIECE];
        let mut too_long = 0;
        let mut largest = 0;
        for _ in 0..(10 * 1024 * 1024 / PIECE) {
            buf.extend_from_slice(&piece);
            largest = largest.max(buf.len());
            loop {
                match dec.decode(&mut buf) {
                    Ok(None) => break,
                    Ok(Some(line)) => panic!("unexpected line of {} bytes", line.len()),
                    Err(LineError::TooLong) => too_long += 1,
                }
            }
            assert!(buf.len() <= max_len + 2, "buffer grew to {}", buf.len());
        }
        assert_eq!(too_long, 1);
        assert!(largest <= PIECE + max_len + 2);
        buf.extend_from_slice(b"tail of the long line\r\nNOOP\r\n");
        assert_eq!(dec.decode(&mut buf).unwrap().unwrap(), &b"NOOP"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn error_display() {
        assert_eq!(LineError::TooLong.to_string(), "line too long");
    }
}
