//! Entry points for the fuzz targets in `fuzz/`: each takes arbitrary bytes, drives the LMTP or
//! milter codecs and asserts their invariants, panicking on a violation. Hidden from the docs, no
//! stability promise.
//!
//! The checks are written against the codecs' documented contracts, not their code:
//! - framing never depends on how the input is split into reads;
//! - only `CRLF "." CRLF` (or "." CRLF as the very first line) ends DATA, and it always does;
//! - the bare-newline flag is set exactly when the data held a bare CR or LF (the Reject policy relies
//!   on it);
//! - dot-stuffing then decoding gives the message back, and stuffed data ends exactly at the
//!   terminator the stuffer wrote, whatever the message holds.

use std::panic;
use std::path::Path;

use bytes::{Buf, BytesMut};

use crate::milter::{Command as MilterCommand, FrameDecoder, MilterError};
use crate::{
    AfterError, BareNewline, Command, CommandError, DataDecoder, DotStuffer, LineDecoder,
    LineError, Reply, ReplyDecoder, ReplyError, decode_chunks, parse_command,
};

/// Every DATA policy, so each input is checked under all of them.
const POLICIES: [BareNewline; 3] = [
    BareNewline::Reject,
    BareNewline::Normalize,
    BareNewline::Allow,
];

/// Command line limits to frame with: a tiny one so that the too-long path is reached often, and
/// the server's default.
const LINE_LIMITS: [usize; 2] = [16, 4096];

/// The fuzzer's bytes are mapped onto these tokens for the second run of [`lmtp_codec`]: random bytes
/// rarely spell a verb, a path or a line ending, so without them most inputs stop at the lexer.
const ALPHABET: &[&[u8]] = &[
    b"MAIL FROM:<",
    b"RCPT TO:<",
    b"\r\n",
    b".",
    b"\r",
    b"\n",
    b"DATA",
    b"@",
    b">",
    b"LHLO ",
    b" ",
    b"x",
    b"<>",
    b"\r\n.\r\n",
    b"..",
    b"RSET",
    b"QUIT",
    b"NOOP",
    b"VRFY ",
    b"XFORWARD ",
    b"NAME=",
    b"ADDR=",
    b"+41",
    b"[UNAVAILABLE]",
    b" SIZE=",
    b"9",
    b" BODY=8BITMIME",
    b" SMTPUTF8",
    b" ORCPT=rfc822;",
    b"\"",
    b"\\",
    b":",
    b",",
    b"[",
    b"]",
    b"IPv6:",
    b"=",
    b"\t",
    b"\0",
    b"\xc3\xa9",
    b"\xff",
    b"250",
    b"-",
    b"2.0.0 ",
    b"550 5.1.1 ",
    b"example.org",
];

/// Fuzzes the LMTP codecs with `data`, then with `data` mapped onto [`ALPHABET`].
///
/// # Panics
///
/// When a codec breaks one of the invariants in the module documentation.
pub fn lmtp_codec(data: &[u8]) {
    lmtp_all(data);
    lmtp_all(&alphabet_mapped(data));
}

/// Fuzzes the milter codecs with `data`: the module's own round trips for commands and
/// responses, and command framing that does not depend on how the input is split into reads.
///
/// # Panics
///
/// When a decoded command or response does not survive encode + decode, or the read boundaries
/// change what is decoded.
pub fn milter_codec(data: &[u8]) {
    crate::milter::fuzzing::decode_all(data);
    crate::milter::fuzzing::decode_all_responses(data);
    let whole = decode_milter(&[data]);
    assert_eq!(
        whole,
        decode_milter(&pieces(data)),
        "milter commands depend on the read boundaries"
    );
}

/// Decodes milter commands until the input is used up or the first error (the session would end).
fn decode_milter(chunks: &[&[u8]]) -> Vec<Result<MilterCommand, MilterError>> {
    decode_chunks(FrameDecoder::default(), chunks, AfterError::Stop).items
}

/// Maps each byte of `data` onto one token of [`ALPHABET`].
pub fn alphabet_mapped(data: &[u8]) -> Vec<u8> {
    let mut mapped = Vec::with_capacity(data.len() * 2);
    for &byte in data {
        mapped.extend_from_slice(ALPHABET[usize::from(byte) % ALPHABET.len()]);
    }
    mapped
}

fn lmtp_all(data: &[u8]) {
    let pieces = pieces(data);
    // One line limit and policy per input, picked by its length, so that every input costs one
    // session (the fuzzer varies the length anyway); `data_phase` runs all policies.
    let max_len = LINE_LIMITS[data.len() % LINE_LIMITS.len()];
    let policy = POLICIES[data.len() / LINE_LIMITS.len() % POLICIES.len()];
    let whole = session(&[data], max_len, policy);
    let split = session(&pieces, max_len, policy);
    assert_eq!(
        whole, split,
        "session depends on the read boundaries: {max_len} {policy:?} {pieces:?}"
    );
    data_phase(data, &pieces);
    stuffing_round_trip(data);
    replies(data, &pieces);
}

/// Splits `data` into pieces of 1 to 16 bytes, chosen by a generator seeded from the data, so a
/// crashing input reproduces exactly.
fn pieces(data: &[u8]) -> Vec<&[u8]> {
    // FNV-1a; only needs to vary with the input.
    let seed = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut state = seed | 1;
    let mut pieces = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // At most 16, so the cast cannot truncate.
        let len = ((state % 16) as usize + 1).min(rest.len());
        let (piece, tail) = rest.split_at(len);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// One observable outcome of a simulated server session.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Command(Result<Command, CommandError>),
    TooLong,
    /// A DATA phase: the message as output, whether it ended, whether a bare newline was seen.
    Message {
        out: Vec<u8>,
        done: bool,
        bare: bool,
    },
}

/// Plays the server side of a session: command lines until DATA, then the DATA phase, then command
/// lines again (pipelined bytes after the end of data stay in the buffer), as the session does.
fn session(chunks: &[&[u8]], max_len: usize, policy: BareNewline) -> Vec<Event> {
    let mut lines = LineDecoder::new(max_len);
    let mut buf = BytesMut::new();
    let mut data: Option<DataRun> = None;
    let mut events = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            if let Some(run) = &mut data {
                let consumed = run.feed(&buf);
                buf.advance(consumed);
                if !run.dec.is_done() {
                    break;
                }
                events.push(run.event());
                data = None;
                continue;
            }
            match lines.decode(&mut buf) {
                Ok(Some(line)) => {
                    assert!(line.len() <= max_len, "line over the limit: {line:?}");
                    assert!(!line.contains(&b'\n'), "LF inside a line: {line:?}");
                    let command = parse_command(&line);
                    if command == Ok(Command::Data) {
                        data = Some(DataRun::new(policy));
                    }
                    events.push(Event::Command(command));
                }
                Ok(None) => {
                    assert!(
                        buf.len() < max_len.saturating_add(2),
                        "{} bytes buffered without a line",
                        buf.len()
                    );
                    break;
                }
                Err(LineError::TooLong) => events.push(Event::TooLong),
            }
        }
    }
    if let Some(run) = data {
        events.push(run.event());
    }
    events
}

/// One DATA decoder plus everything fed to it, checking its invariants after every call. The
/// checks look only at what each call added, so they stay linear in the input.
struct DataRun {
    dec: DataDecoder,
    policy: BareNewline,
    /// The input the decoder consumed so far.
    fed: Vec<u8>,
    out: BytesMut,
    /// Where RFC 5321 ends the data in `fed`, once it does.
    end: Option<usize>,
    /// `fed` holds a bare CR or LF (not counting a CR at its very end: an LF may follow).
    bare: bool,
}

impl DataRun {
    fn new(policy: BareNewline) -> Self {
        Self {
            dec: DataDecoder::new(policy),
            policy,
            fed: Vec::new(),
            out: BytesMut::new(),
            end: None,
            bare: false,
        }
    }

    /// Decodes `input`, returns how much of it was consumed.
    fn feed(&mut self, input: &[u8]) -> usize {
        let was_done = self.dec.is_done();
        let (fed_before, out_before) = (self.fed.len(), self.out.len());
        let progress = self.dec.decode(input, &mut self.out);
        assert!(progress.consumed <= input.len());
        assert_eq!(progress.done, self.dec.is_done());
        if was_done {
            assert_eq!(progress.consumed, 0, "consumed input after the end");
        }
        if !progress.done {
            assert_eq!(
                progress.consumed,
                input.len(),
                "stopped early without the end"
            );
        }
        self.fed.extend_from_slice(&input[..progress.consumed]);
        self.check(fed_before, out_before);
        progress.consumed
    }

    /// Checks the state after `fed[fed_before..]` came in and `out[out_before..]` went out.
    fn check(&mut self, fed_before: usize, out_before: usize) {
        let fed = &self.fed;
        let out = &self.out;
        // Only CRLF "." CRLF ends the data, and the first one does. A new one ends in the new
        // bytes, so it starts at most four bytes before them.
        if self.end.is_none() {
            self.end = if fed.starts_with(b".\r\n") {
                Some(3)
            } else {
                let from = fed_before.saturating_sub(4);
                memchr::memmem::find(&fed[from..], b"\r\n.\r\n").map(|at| from + at + 5)
            };
        }
        match self.end {
            Some(end) => {
                assert!(
                    self.dec.is_done(),
                    "missed the end of data at {end}: {fed:?}"
                );
                assert_eq!(end, fed.len(), "consumed past the end of data: {fed:?}");
                assert!(fed.ends_with(b"\r\n.\r\n") || fed.as_slice() == b".\r\n");
            }
            None => assert!(!self.dec.is_done(), "ended without CRLF.CRLF: {fed:?}"),
        }
        // Unstuffing only removes bytes; Normalize turns one byte into at most two.
        assert!(
            out.len() <= fed.len() * 2,
            "output {} > 2 * {}",
            out.len(),
            fed.len()
        );
        if self.policy != BareNewline::Normalize {
            assert!(
                out.len() <= fed.len(),
                "output {} > input {}",
                out.len(),
                fed.len()
            );
        }
        // The flag the Reject policy relies on: set exactly when a bare CR or LF came in. The
        // byte before the new ones is looked at again: it may be a CR that was at the end.
        let settled = fed.len() - usize::from(!self.dec.is_done() && fed.ends_with(b"\r"));
        self.bare |= any_bare(fed, fed_before.saturating_sub(1), settled);
        assert_eq!(
            self.dec.saw_bare_newline(),
            self.bare,
            "bare-newline flag wrong for {fed:?}"
        );
        if self.policy == BareNewline::Normalize {
            // A CR at the end of the output counts: the decoder holds a pending CR back.
            assert!(
                !any_bare(out, out_before.saturating_sub(1), out.len()),
                "bare newline in normalized output {out:?}"
            );
        }
    }

    fn event(&self) -> Event {
        Event::Message {
            out: self.out.to_vec(),
            done: self.dec.is_done(),
            bare: self.dec.saw_bare_newline(),
        }
    }
}

/// Whether `bytes[from..to]` holds a byte that [`is_bare`] (looking beyond the range).
fn any_bare(bytes: &[u8], from: usize, to: usize) -> bool {
    memchr::memchr2_iter(b'\r', b'\n', &bytes[from..to]).any(|at| is_bare(bytes, from + at))
}

/// Whether `bytes[i]` is an LF without a CR before it, or a CR without an LF after it (a CR at
/// the very end counts).
fn is_bare(bytes: &[u8], i: usize) -> bool {
    match bytes[i] {
        b'\n' => i == 0 || bytes[i - 1] != b'\r',
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        _ => false,
    }
}

/// `data` with every bare CR and bare LF turned into CRLF.
fn normalized(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 2);
    for (i, &b) in data.iter().enumerate() {
        match b {
            b'\n' if i == 0 || data[i - 1] != b'\r' => out.extend_from_slice(b"\r\n"),
            b'\r' if data.get(i + 1) != Some(&b'\n') => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
    }
    out
}

/// The DATA decoder on its own, under every policy at once, whole and in pieces.
fn data_phase(data: &[u8], pieces: &[&[u8]]) {
    let mut runs = POLICIES.map(DataRun::new);
    for piece in pieces {
        let mut consumed = [0; POLICIES.len()];
        for (run, consumed) in runs.iter_mut().zip(consumed.iter_mut()) {
            *consumed = run.feed(piece);
        }
        // The end of data and the bare-newline flag do not depend on the policy.
        assert!(consumed.iter().all(|&c| c == consumed[0]), "{consumed:?}");
        if runs[0].dec.is_done() {
            break;
        }
    }
    let [reject, normalize, allow] = &runs;
    assert_eq!(
        reject.out, allow.out,
        "Reject and Allow must output the same"
    );
    assert_eq!(
        reject.dec.saw_bare_newline(),
        normalize.dec.saw_bare_newline()
    );
    assert_eq!(reject.dec.saw_bare_newline(), allow.dec.saw_bare_newline());
    if !normalize.dec.saw_bare_newline() {
        assert_eq!(
            normalize.out, allow.out,
            "Normalize changed data without bare newlines"
        );
    }
    // Whole input at once gives the same as the pieces.
    for run in &runs {
        let mut whole = DataRun::new(run.policy);
        whole.feed(data);
        assert_eq!(
            whole.event(),
            run.event(),
            "{:?} depends on the read boundaries",
            run.policy
        );
        assert_eq!(whole.fed, run.fed);
    }
}

/// The client side: dot-stuffing `data` and decoding it again.
fn stuffing_round_trip(data: &[u8]) {
    // Any message: the stuffed data ends exactly at the terminator the stuffer wrote, never earlier
    // (nothing in a message can end it), and never later (the next hop would wait forever).
    let wire = stuffed(&pieces(data));
    assert_eq!(
        wire,
        stuffed(&[data]),
        "stuffing depends on the write boundaries"
    );
    for policy in POLICIES {
        let mut run = DataRun::new(policy);
        let consumed = run.feed(&wire);
        assert!(
            run.dec.is_done(),
            "{policy:?}: stuffed data never ends: {wire:?}"
        );
        assert_eq!(
            consumed,
            wire.len(),
            "{policy:?}: stuffed data ends early: {wire:?}"
        );
        if policy == BareNewline::Normalize {
            // Normalize unstuffs after every LF, as the stuffer stuffs: the message comes back
            // with its bare newlines normalized.
            assert_eq!(
                run.out,
                with_final_line_end(&normalized(data), data),
                "{wire:?}"
            );
        }
    }

    // Messages without bare newlines come back unchanged (plus a missing final CRLF).
    let clean = normalized(data);
    let wire = stuffed(&pieces(&clean));
    for policy in POLICIES {
        let mut run = DataRun::new(policy);
        let consumed = run.feed(&wire);
        assert!(
            run.dec.is_done() && consumed == wire.len(),
            "{policy:?}: {wire:?}"
        );
        assert!(!run.dec.saw_bare_newline());
        assert_eq!(
            run.out,
            with_final_line_end(&clean, &clean),
            "{policy:?}: {wire:?}"
        );
    }
}

/// `message` plus the CRLF the stuffer adds before the terminator when `original` does not end
/// with CRLF.
fn with_final_line_end(message: &[u8], original: &[u8]) -> Vec<u8> {
    let mut expected = message.to_vec();
    if !original.is_empty() && !original.ends_with(b"\r\n") {
        expected.extend_from_slice(b"\r\n");
    }
    expected
}

fn stuffed(chunks: &[&[u8]]) -> Vec<u8> {
    let mut stuffer = DotStuffer::new();
    let mut out = BytesMut::new();
    for chunk in chunks {
        stuffer.encode(chunk, &mut out);
    }
    stuffer.finish(&mut out);
    out.to_vec()
}

/// The reply decoder (our client towards the next hop): no panic, the same replies however the
/// input is split, and every decoded reply survives encode + decode.
fn replies(data: &[u8], pieces: &[&[u8]]) {
    let whole = decode_replies(&[data]);
    assert_eq!(
        whole,
        decode_replies(pieces),
        "replies depend on the read boundaries"
    );
    for reply in whole.iter().filter_map(|r| r.as_ref().ok()) {
        assert!((200..=599).contains(&reply.code), "{reply:?}");
        assert!(
            !reply.lines.is_empty() && reply.lines.len() <= 100,
            "{reply:?}"
        );
        if let Some(enhanced) = reply.enhanced {
            assert_eq!(u16::from(enhanced.class), reply.code / 100, "{reply:?}");
        }
        let mut wire = BytesMut::new();
        reply.encode(&mut wire);
        // Encoding adds the enhanced code to lines that lacked it and turns a lossy byte into three:
        // a line pushed over the decoder's limit cannot come back.
        if wire[..]
            .split(|&b| b == b'\n')
            .any(|line| line.len() > 4096 + 1)
        {
            continue;
        }
        let again = decode_replies(&[&wire]);
        if reply.lines.iter().any(|line| line.contains('\r')) {
            // Encoding turns a CR inside a line into a space, which may change how the line reads
            // ("2.0.0\r" becomes an enhanced code), but never how many lines or replies there are.
            match again.as_slice() {
                [Ok(again)] => assert!(
                    again.code == reply.code && again.lines.len() == reply.lines.len(),
                    "{reply:?} came back as {again:?} via {wire:?}"
                ),
                _ => panic!("{reply:?} came back as {again:?} via {wire:?}"),
            }
        } else {
            assert_eq!(
                again,
                vec![Ok(reply.clone())],
                "round trip of {reply:?} via {wire:?}"
            );
        }
    }
}

/// Decodes replies until the input is used up or the first error (the connection would close).
fn decode_replies(chunks: &[&[u8]]) -> Vec<Result<Reply, ReplyError>> {
    decode_chunks(ReplyDecoder::new(), chunks, AfterError::Stop).items
}

/// Replays the committed seeds of one fuzz target, so that `cargo test` covers them (and any
/// crash input committed beside them) without cargo-fuzz: every file named `seed-*` in
/// `corpus/<target>/` goes through `run`. Used by this crate's tests and by the sealgate crate's,
/// for their own targets.
///
/// Only the committed seeds: a local fuzzing run may have added thousands of inputs there.
///
/// # Panics
///
/// When the target's directory cannot be read or holds no seed (the replay would pass without
/// testing anything), when a seed cannot be read, or when `run` panics on a seed; the last
/// message names the seed's file.
pub fn replay_seeds(corpus: &Path, target: &str, run: fn(&[u8])) {
    let dir = corpus.join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot read the seeds in {}: {err}", dir.display()));
    let mut seeds: Vec<_> = entries
        .map(|entry| entry.unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display())))
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("seed-"))
        .map(|entry| entry.path())
        .collect();
    assert!(!seeds.is_empty(), "no seed-* files in {}", dir.display());
    seeds.sort();
    for seed in seeds {
        let data = std::fs::read(&seed)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", seed.display()));
        if panic::catch_unwind(|| run(&data)).is_err() {
            panic!("fuzz target {target} failed on {}", seed.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed seeds of both fuzz targets of this crate.
    #[test]
    fn fuzz_corpus() {
        let corpus = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus"));
        replay_seeds(corpus, "lmtp_codec", lmtp_codec);
        replay_seeds(corpus, "milter_codec", milter_codec);
    }

    #[test]
    #[should_panic(expected = "cannot read the seeds")]
    fn replay_fails_without_seeds() {
        let corpus = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus"));
        replay_seeds(corpus, "no-such-target", milter_codec);
    }

    #[test]
    #[should_panic(expected = "fuzz target milter_codec failed on")]
    fn replay_names_the_target_that_failed() {
        let corpus = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus"));
        replay_seeds(corpus, "milter_codec", |_| panic!("a planted failure"));
    }

    #[test]
    fn hand_made_inputs() {
        for input in [
            &b""[..],
            b"\r",
            b"\n",
            b".",
            b".\r\n",
            b"LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
            b"DATA\r\na\n.\r\nMAIL FROM:<e@x>\r\n.\r\nQUIT\r\n",
            b"DATA\r\n.\r\r\n.\r\n",
            b"250-2.0.0 a\r\n250 2.0.0\r\n550 5.1.1 no\rsuch\r\n",
            // Found by the fuzzer (a harness bug): the CR that encoding turns into a space makes
            // "2.0.0" an enhanced code.
            b"250 2.0.0\r3\r\n",
            b"a\r\n.",
            b"a\n",
            b"..\n",
        ] {
            lmtp_codec(input);
        }
        assert_eq!(alphabet_mapped(&[0, 2, 6]), b"MAIL FROM:<\r\nDATA");
    }
}
