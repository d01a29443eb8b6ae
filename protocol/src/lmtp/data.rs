//! DATA phase: dot-unstuffing and end-of-data detection on receive, dot-stuffing on send.
//!
//! This is the SMTP-smuggling defence: only `CRLF "." CRLF` ends the data. Every sloppier variant
//! (`LF . LF`, `CR . CR`, `CRLF . LF`, `LF . CRLF`, `CRLF . CR`, ...) stays message content, so a sender
//! cannot end a message early in our eyes while the next hop sees it continue, or the other way round.

use bytes::{BufMut, BytesMut};
use memchr::{memchr, memchr2};

/// What to do with a line ending that is not CRLF (bare LF, or bare CR) in DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareNewline {
    /// Pass the bytes through unchanged; the caller rejects the message if
    /// [`DataDecoder::saw_bare_newline`] is true.
    Reject,
    /// Output each bare LF or bare CR as CRLF. A bare LF also starts a line for dot-unstuffing, but it
    /// can never let a "." end the data.
    Normalize,
    /// Pass the bytes through unchanged.
    Allow,
}

/// The result of one [`DataDecoder::decode`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataProgress {
    /// Bytes of the input used. Less than the input only when `done`.
    pub consumed: usize,
    /// The end-of-data line has been consumed.
    pub done: bool,
}

/// Where the decoder stands. The states that follow a CR or a line-start "." stand for bytes that have
/// been consumed but not yet output, because their meaning depends on the next byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside a line.
    Text,
    /// At a line start. `crlf`: reached through CRLF (or the start of data), so a "." here may begin
    /// the end-of-data line; otherwise reached through a bare LF under `Normalize`, unstuffing only.
    LineStart { crlf: bool },
    /// A CR is pending: CRLF or bare CR?
    Cr,
    /// A line-start "." is pending: stuffing, content, or the start of the end-of-data line?
    Dot { crlf: bool },
    /// A "." CR is pending after CRLF: the end-of-data line if LF follows.
    DotCr,
    /// The end-of-data line has been consumed.
    Done,
}

/// Server side: decodes the DATA phase of one message.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    policy: BareNewline,
    state: State,
    saw_bare_newline: bool,
}

impl DataDecoder {
    /// A decoder positioned at the start of the data (right after the 354 reply).
    pub fn new(policy: BareNewline) -> Self {
        Self {
            policy,
            // The start of data counts as "after CRLF": a first line "." ends an empty message.
            state: State::LineStart { crlf: true },
            saw_bare_newline: false,
        }
    }

    /// Dot-unstuffs `input`, appending message bytes to `out`, until input is used up or the end-of-data
    /// line is consumed. `consumed` = bytes of input used; when `done`, bytes after the terminating
    /// ".\r\n" are NOT consumed (they are the next pipelined command).
    ///
    /// The CRLF before the terminating "." belongs to the message. Input may be split anywhere: bytes
    /// whose meaning is not yet known (a trailing CR, a line-start ".", ".\r") are held in the decoder
    /// and output by a later call.
    pub fn decode(&mut self, input: &[u8], out: &mut BytesMut) -> DataProgress {
        out.reserve(input.len());
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Text => {
                    let rest = &input[i..];
                    let Some(at) = memchr2(b'\r', b'\n', rest) else {
                        out.extend_from_slice(rest);
                        i = input.len();
                        break;
                    };
                    if rest[at] == b'\n' {
                        out.extend_from_slice(&rest[..at]);
                        i += at + 1;
                        self.bare_lf(out);
                    } else if rest.get(at + 1) == Some(&b'\n') {
                        // CRLF, the common case: copy the line with its ending in one go and look at
                        // the next line's first byte right here instead of going round the loop.
                        out.extend_from_slice(&rest[..at + 2]);
                        i += at + 2;
                        match input.get(i) {
                            Some(b'.') => {
                                i += 1;
                                self.state = State::Dot { crlf: true };
                            }
                            Some(_) => {}
                            None => self.state = State::LineStart { crlf: true },
                        }
                    } else {
                        out.extend_from_slice(&rest[..at]);
                        i += at + 1;
                        self.state = State::Cr;
                    }
                }
                State::LineStart { crlf } => {
                    if input[i] == b'.' {
                        i += 1;
                        self.state = State::Dot { crlf };
                    } else {
                        self.state = State::Text;
                    }
                }
                State::Cr => {
                    if input[i] == b'\n' {
                        i += 1;
                        out.extend_from_slice(b"\r\n");
                        self.state = State::LineStart { crlf: true };
                    } else {
                        // The byte after a bare CR is looked at again in `Text`.
                        self.bare_cr(out);
                    }
                }
                State::Dot { crlf } => match input[i] {
                    // ".\n": a dot alone on a line ended by a bare LF was never stuffed; keep it. The
                    // LF itself is handled (as bare) in `Text`.
                    b'\n' => {
                        out.put_u8(b'.');
                        self.state = State::Text;
                    }
                    b'\r' if crlf => {
                        i += 1;
                        self.state = State::DotCr;
                    }
                    // Stuffing: drop the dot, the byte is looked at again in `Text`.
                    _ => self.state = State::Text,
                },
                State::DotCr => {
                    if input[i] == b'\n' {
                        i += 1;
                        self.state = State::Done;
                    } else {
                        // ".\r" + not LF: the dot was stuffing and the CR is bare. The byte after it
                        // is looked at again in `Text` (it may be a CR starting a real CRLF).
                        self.bare_cr(out);
                    }
                }
            }
        }
        DataProgress {
            consumed: i,
            done: self.state == State::Done,
        }
    }

    /// True once any bare LF or bare CR was seen (in every policy; for Reject the caller rejects the message).
    pub fn saw_bare_newline(&self) -> bool {
        self.saw_bare_newline
    }

    /// True once the end-of-data line has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Handles an LF not preceded by CR (already consumed).
    fn bare_lf(&mut self, out: &mut BytesMut) {
        self.saw_bare_newline = true;
        if self.policy == BareNewline::Normalize {
            out.extend_from_slice(b"\r\n");
            self.state = State::LineStart { crlf: false };
        } else {
            out.put_u8(b'\n');
            self.state = State::Text;
        }
    }

    /// Handles a CR not followed by LF (already consumed; the following byte is not).
    fn bare_cr(&mut self, out: &mut BytesMut) {
        self.saw_bare_newline = true;
        if self.policy == BareNewline::Normalize {
            out.extend_from_slice(b"\r\n");
        } else {
            out.put_u8(b'\r');
        }
        // Only a bare LF starts a line for unstuffing under `Normalize`; a bare CR does not.
        self.state = State::Text;
    }
}

/// Client side: dot-stuffs message bytes for sending after DATA.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    /// The next byte starts a line (start of data, or after any LF).
    at_line_start: bool,
    /// The last byte written was a CR: a CRLF may be split across `encode` calls.
    after_cr: bool,
    /// The data is empty or ends with CRLF, so the end-of-data line can follow directly.
    after_crlf: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DotStuffer {
    /// A stuffer at the start of the data: a leading "." gets stuffed.
    pub fn new() -> Self {
        Self {
            at_line_start: true,
            after_cr: false,
            after_crlf: true,
        }
    }

    /// Appends `input` to `out`, doubling a "." at every line start (start of data, or after any LF).
    ///
    /// Stuffing after a bare LF too is deliberate: a next hop that treats bare LF as a line ending must
    /// not see an unstuffed dot there.
    pub fn encode(&mut self, input: &[u8], out: &mut BytesMut) {
        out.reserve(input.len() + 1);
        let mut rest = input;
        while !rest.is_empty() {
            if self.at_line_start && rest.first() == Some(&b'.') {
                out.put_u8(b'.');
            }
            match memchr(b'\n', rest) {
                Some(lf) => {
                    let (line, tail) = rest.split_at(lf + 1);
                    out.extend_from_slice(line);
                    self.after_crlf = match lf {
                        0 => self.after_cr,
                        _ => line[lf - 1] == b'\r',
                    };
                    rest = tail;
                    self.at_line_start = true;
                    self.after_cr = false;
                }
                None => {
                    out.extend_from_slice(rest);
                    self.at_line_start = false;
                    self.after_cr = rest.last() == Some(&b'\r');
                    self.after_crlf = false;
                    break;
                }
            }
        }
    }

    /// Appends the end-of-data: CRLF first unless the data is empty or ended with CRLF, then ".\r\n".
    /// The stuffer is then ready for the next message.
    ///
    /// The CRLF also follows a last line that ends in a bare LF: "\n.\r\n" is not an end of data
    /// (only CRLF.CRLF is), so without it a strict next hop would wait for more.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if !self.after_crlf {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = Self::new();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decode::same_at_every_split;

    /// What decoding one input produced: output, input offset after the end-of-data line, bare seen.
    type Outcome = (Vec<u8>, Option<usize>, bool);

    fn run(policy: BareNewline, chunks: &[&[u8]]) -> Outcome {
        let mut dec = DataDecoder::new(policy);
        let mut out = BytesMut::new();
        let mut pos = 0;
        for chunk in chunks {
            let progress = dec.decode(chunk, &mut out);
            pos += progress.consumed;
            if progress.done {
                assert!(dec.is_done());
                // Once done, nothing more is taken.
                let again = dec.decode(b"more", &mut out);
                assert_eq!(
                    again,
                    DataProgress {
                        consumed: 0,
                        done: true
                    }
                );
                return (out.to_vec(), Some(pos), dec.saw_bare_newline());
            }
            assert_eq!(
                progress.consumed,
                chunk.len(),
                "not done, so all is consumed"
            );
        }
        (out.to_vec(), None, dec.saw_bare_newline())
    }

    /// A small deterministic generator, so the tests need no extra dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Decodes `input` whole, split in two at every offset, byte by byte, and in random pieces; the
    /// output, the end point and the bare-newline flag must always be the same.
    fn decode_all_splits(policy: BareNewline, input: &[u8]) -> Outcome {
        let whole = same_at_every_split(input, |chunks| run(policy, chunks));
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ input.len() as u64);
        for _ in 0..20 {
            let mut chunks = Vec::new();
            let mut rest = input;
            while !rest.is_empty() {
                let (chunk, tail) = rest.split_at(rng.below(rest.len().min(5) + 1));
                chunks.push(chunk);
                rest = tail;
            }
            assert_eq!(run(policy, &chunks), whole, "{policy:?} pieces {chunks:?}");
        }
        whole
    }

    /// One input with its expected outcome under Reject/Allow (identical) and under Normalize.
    struct Case {
        input: &'static [u8],
        /// Output under Reject and Allow.
        raw: &'static [u8],
        /// Output under Normalize.
        normalized: &'static [u8],
        /// Bytes left unconsumed after the end-of-data line (the next pipelined commands); None if the
        /// data does not end.
        end: Option<usize>,
        bare: bool,
    }

    const fn same(input: &'static [u8], out: &'static [u8], end: Option<usize>) -> Case {
        Case {
            input,
            raw: out,
            normalized: out,
            end,
            bare: false,
        }
    }

    const fn bare(
        input: &'static [u8],
        raw: &'static [u8],
        normalized: &'static [u8],
        end: Option<usize>,
    ) -> Case {
        Case {
            input,
            raw,
            normalized,
            end,
            bare: true,
        }
    }

    fn cases() -> Vec<Case> {
        vec![
            // --- plain messages ---
            same(b".\r\n", b"", Some(0)),
            same(b".\r\nQUIT\r\n", b"", Some(6)),
            same(b"\r\n.\r\n", b"\r\n", Some(0)),
            same(b"\r\n\r\n.\r\n", b"\r\n\r\n", Some(0)),
            same(b"a\r\n.\r\n", b"a\r\n", Some(0)),
            same(
                b"Subject: x\r\n\r\nbody\r\n.\r\n",
                b"Subject: x\r\n\r\nbody\r\n",
                Some(0),
            ),
            // Pipelined commands after the end are not consumed.
            same(
                b"a\r\n.\r\nQUIT\r\n",
                b"a\r\n",
                Some(6),
            ),
            same(
                b"a\r\n.\r\nRSET\r\nMAIL FROM:<>\r\n",
                b"a\r\n",
                Some(20),
            ),
            // --- dot stuffing ---
            same(b"..hidden\r\n.\r\n", b".hidden\r\n", Some(0)),
            same(b".a\r\n.\r\n", b"a\r\n", Some(0)),
            same(b"a\r\n...b\r\n.\r\n", b"a\r\n..b\r\n", Some(0)),
            same(b"a\r\n..\r\nb\r\n.\r\n", b"a\r\n.\r\nb\r\n", Some(0)),
            same(b"..\r\n.\r\n", b".\r\n", Some(0)),
            same(b"a.b\r\n.x\r\n.\r\n", b"a.b\r\nx\r\n", Some(0)),
            same(b"a\r\n.\x00\r\nb\r\n.\r\n", b"a\r\n\x00\r\nb\r\n", Some(0)),
            same(b"a\r\n\x00.\r\nb\r\n.\r\n", b"a\r\n\x00.\r\nb\r\n", Some(0)),
            same(b"\x00\r\n.\r\n", b"\x00\r\n", Some(0)),
            // A message whose last line lacked its ending: the client adds CRLF before ".".
            same(b"abc.\r\n.\r\n", b"abc.\r\n", Some(0)),
            // Without the CRLF before it, "." CRLF is just the end of a line.
            same(b"abc.\r\n", b"abc.\r\n", None),
            same(b"abc\r\nx.\r\n", b"abc\r\nx.\r\n", None),
            // --- incomplete data: pending bytes are held, not output, not lost ---
            same(b"", b"", None),
            same(b"abc", b"abc", None),
            same(b"a\r", b"a", None),
            same(b"a\r\n", b"a\r\n", None),
            same(b"a\r\n.", b"a\r\n", None),
            same(b"a\r\n.\r", b"a\r\n", None),
            same(b".", b"", None),
            same(b".\r", b"", None),
            same(b"a\r\n..", b"a\r\n.", None),
            // --- smuggling variants: none of these ends the data ---
            bare(
                b"a\n.\nb\r\n.\r\n",
                b"a\n.\nb\r\n",
                b"a\r\n.\r\nb\r\n",
                Some(0),
            ),
            bare(
                b"a\r.\rb\r\n.\r\n",
                b"a\r.\rb\r\n",
                b"a\r\n.\r\nb\r\n",
                Some(0),
            ),
            bare(
                b"a\r\n.\nb\r\n.\r\n",
                b"a\r\n.\nb\r\n",
                b"a\r\n.\r\nb\r\n",
                Some(0),
            ),
            bare(
                b"a\n.\r\nb\r\n.\r\n",
                b"a\n.\r\nb\r\n",
                // Under Normalize the bare LF starts a line, so ".\r" there is unstuffed.
                b"a\r\n\r\nb\r\n",
                Some(0),
            ),
            bare(
                b"a\r\n.\rb\r\n.\r\n",
                b"a\r\n\rb\r\n",
                b"a\r\n\r\nb\r\n",
                Some(0),
            ),
            bare(
                b"a\r\n.\r\r\nb\r\n.\r\n",
                b"a\r\n\r\r\nb\r\n",
                b"a\r\n\r\n\r\nb\r\n",
                Some(0),
            ),
            bare(
                b"a\r\n.\r\x00\nb\r\n.\r\n",
                b"a\r\n\r\x00\nb\r\n",
                b"a\r\n\r\n\x00\r\nb\r\n",
                Some(0),
            ),
            bare(b"\n.\n.\r\n", b"\n.\n.\r\n", b"\r\n.\r\n\r\n", None),
            bare(b".\n.\r\n", b".\n.\r\n", b".\r\n\r\n", None),
            bare(b"\r.\r\n.\r\n", b"\r.\r\n", b"\r\n.\r\n", Some(0)),
            // The classic payload: a second transaction smuggled behind "\n.\r\n".
            bare(
                b"Hi\r\n\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nevil\r\n.\r\nQUIT\r\n",
                b"Hi\r\n\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nevil\r\n",
                b"Hi\r\n\r\n\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nevil\r\n",
                Some(6),
            ),
            bare(
                b"Hi\r\n.\nMAIL FROM:<evil@x>\r\n.\r\n",
                b"Hi\r\n.\nMAIL FROM:<evil@x>\r\n",
                b"Hi\r\n.\r\nMAIL FROM:<evil@x>\r\n",
                Some(0),
            ),
            // --- bare newlines outside of dots ---
            bare(b"a\nb\rc\r\n.\r\n", b"a\nb\rc\r\n", b"a\r\nb\r\nc\r\n", Some(0)),
            bare(b"a\r\r\n.\r\n", b"a\r\r\n", b"a\r\n\r\n", Some(0)),
            bare(b"a\n\r\n.\r\n", b"a\n\r\n", b"a\r\n\r\n", Some(0)),
            bare(b"a\n\n", b"a\n\n", b"a\r\n\r\n", None),
            bare(b"a\r\r", b"a\r", b"a\r\n", None),
            bare(b"\n", b"\n", b"\r\n", None),
            bare(b"\r\x00", b"\r\x00", b"\r\n\x00", None),
            // Under Normalize a bare LF starts a line for unstuffing; a bare CR does not.
            bare(b"a\n..b\r\n.\r\n", b"a\n..b\r\n", b"a\r\n.b\r\n", Some(0)),
            bare(b"a\r..b\r\n.\r\n", b"a\r..b\r\n", b"a\r\n..b\r\n", Some(0)),
        ]
    }

    #[test]
    fn table() {
        for case in cases() {
            for (policy, expected) in [
                (BareNewline::Reject, case.raw),
                (BareNewline::Allow, case.raw),
                (BareNewline::Normalize, case.normalized),
            ] {
                let (out, end, bare) = decode_all_splits(policy, case.input);
                assert_eq!(
                    (out.as_slice(), end, bare),
                    (
                        expected,
                        case.end.map(|tail| case.input.len() - tail),
                        case.bare
                    ),
                    "{policy:?} input {:?} gave {:?}",
                    case.input,
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }

    /// Messages without bare newlines, for the round-trip property.
    fn round_trip_inputs() -> Vec<Vec<u8>> {
        let mut inputs: Vec<Vec<u8>> = cases()
            .into_iter()
            .filter(|c| !c.bare && c.end.is_some())
            .map(|c| c.raw.to_vec())
            .collect();
        for fixed in [
            &b""[..],
            b".",
            b"..",
            b".\r\n",
            b"\r\n.\r\n",
            b"abc",
            b"a\r\n.",
            b"line\r\n.\r\n..\r\n...\r\n",
            b"\x00.\x00\r\n.\x00",
            b"\xff\xfe.\r\n",
        ] {
            inputs.push(fixed.to_vec());
        }
        // Random messages built from tokens that cannot form a bare CR or LF.
        let tokens: &[&[u8]] = &[b".", b"\r\n", b"a", b" ", b"\x00", b"\xff", b"..", b"x.y"];
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        for _ in 0..500 {
            let mut input = Vec::new();
            for _ in 0..rng.below(30) {
                input.extend_from_slice(tokens[rng.below(tokens.len())]);
            }
            inputs.push(input);
        }
        inputs
    }

    fn stuff(chunks: &[&[u8]]) -> Vec<u8> {
        let mut stuffer = DotStuffer::new();
        let mut out = BytesMut::new();
        for chunk in chunks {
            stuffer.encode(chunk, &mut out);
        }
        stuffer.finish(&mut out);
        out.to_vec()
    }

    #[test]
    fn dot_stuffer_round_trip() {
        for input in round_trip_inputs() {
            let wire = stuff(&[&input]);
            // Splitting the stuffer's input must not change its output.
            for at in 0..=input.len() {
                let (a, b) = input.split_at(at);
                assert_eq!(stuff(&[a, b]), wire, "split at {at}: {input:?}");
            }
            let mut expected = input.clone();
            if !input.is_empty() && !input.ends_with(b"\n") {
                expected.extend_from_slice(b"\r\n");
            }
            let (out, end, bare) = decode_all_splits(BareNewline::Allow, &wire);
            assert_eq!(out, expected, "input {input:?} wire {wire:?}");
            assert_eq!(end, Some(wire.len()), "input {input:?}");
            assert!(!bare);
        }
    }

    #[test]
    fn dot_stuffer_table() {
        let cases: &[(&[&[u8]], &[u8])] = &[
            (&[], b".\r\n"),
            (&[b""], b".\r\n"),
            (&[b"."], b"..\r\n.\r\n"),
            (&[b"a\r\n.b\r\n"], b"a\r\n..b\r\n.\r\n"),
            (&[b"a\r\n", b".b\r\n"], b"a\r\n..b\r\n.\r\n"),
            (&[b"a\r\n.", b".\r\n"], b"a\r\n...\r\n.\r\n"),
            (&[b"no newline"], b"no newline\r\n.\r\n"),
            (&[b"a.b\r\n"], b"a.b\r\n.\r\n"),
            // After any LF, bare or not; a final bare LF still gets the CRLF before the ".".
            (&[b"a\n.b\n"], b"a\n..b\n\r\n.\r\n"),
            // Found by the lmtp_codec fuzz target: "\n.\r\n" never ended the data.
            (&[b"\n"], b"\n\r\n.\r\n"),
            (&[b"a\r\n\n"], b"a\r\n\n\r\n.\r\n"),
            // A CRLF split across calls is still a CRLF.
            (&[b"a\r", b"\n"], b"a\r\n.\r\n"),
            (&[b"a\r", b"\n", b""], b"a\r\n.\r\n"),
            (&[b"a", b"\n"], b"a\n\r\n.\r\n"),
            // A trailing CR is not a line ending; the CRLF still follows.
            (&[b"a\r"], b"a\r\r\n.\r\n"),
        ];
        for (chunks, wire) in cases {
            assert_eq!(stuff(chunks), *wire, "{chunks:?}");
        }
    }

    #[test]
    fn stuffed_data_ends_exactly_at_its_terminator() {
        // Found by the lmtp_codec fuzz target (input "\n"): a message ending in a bare LF got
        // ".\r\n" right after it, and "\n.\r\n" does not end the data.
        for input in [
            &b"\n"[..],
            b"a\n",
            b"a\r\n\n",
            b"\r",
            b"a\n.",
            b".\n",
            b"\r\n.\n",
        ] {
            let wire = stuff(&[input]);
            for policy in [
                BareNewline::Reject,
                BareNewline::Normalize,
                BareNewline::Allow,
            ] {
                let (_, end, _) = decode_all_splits(policy, &wire);
                assert_eq!(end, Some(wire.len()), "{policy:?} {input:?} -> {wire:?}");
            }
        }
    }

    #[test]
    fn dot_stuffer_is_reusable_after_finish() {
        let mut stuffer = DotStuffer::default();
        let mut out = BytesMut::new();
        stuffer.encode(b"abc", &mut out);
        stuffer.finish(&mut out);
        stuffer.encode(b".x\r\n", &mut out);
        stuffer.finish(&mut out);
        assert_eq!(&out[..], b"abc\r\n.\r\n..x\r\n.\r\n");
    }

    #[test]
    fn large_message_in_odd_pieces() {
        // A big message through stuffer and decoder, in pieces that cut lines everywhere.
        let mut message = Vec::new();
        for n in 0..20_000u32 {
            if n % 7 == 0 {
                message.push(b'.');
            }
            message.extend_from_slice(format!("line {n} with some text").as_bytes());
            message.extend_from_slice(b"\r\n");
        }
        let wire = stuff(&[&message]);
        let mut dec = DataDecoder::new(BareNewline::Reject);
        let mut out = BytesMut::new();
        let mut pos = 0;
        let mut done = false;
        for chunk in wire.chunks(1021) {
            let progress = dec.decode(chunk, &mut out);
            pos += progress.consumed;
            if progress.done {
                done = true;
                break;
            }
        }
        assert!(done);
        assert_eq!(pos, wire.len());
        assert_eq!(out.as_ref(), message.as_slice());
        assert!(!dec.saw_bare_newline());
    }
}
