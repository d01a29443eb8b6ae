//! Entry points for the fuzz targets in `fuzz/`: the Received parser, the header split and
//! the already-encrypted verifier on arbitrary bytes, with their invariants asserted. Hidden
//! from the docs, no stability promise.
//!
//! All of them read what a sender wrote, so besides "no panic" the checks hold them to what
//! the pipeline relies on: byte positions that really point into the input, trust only for
//! the first Received field, and a verifier verdict that does not depend on how the message
//! was cut into chunks nor ever covers more than the window (either would store plaintext).

use crate::message::header;
use crate::message::received::{self, Received};
use crate::pipeline::encrypt::mime;
use crate::pipeline::encrypt::verify::{self, Verdict, Verifier};

/// A host name that is never trusted unless the input names it.
const OUR_MTA: &str = "mx.example.org";

/// Fuzzes [`received::parse`], [`received::first`] and [`received::first_trusted`] with
/// `data`, as one field and as a header block.
///
/// # Panics
///
/// When a result points outside the input or trust is decided inconsistently.
pub fn received(data: &[u8]) {
    let field = received::parse(data);
    check_field(data, &field);
    let _ = received::tls_version(data);
    check_fields(data);

    let first = received::first(data);
    let head = header::Head::parse(data);
    assert_eq!(
        received::first_in(&head),
        first,
        "the parsed head disagrees"
    );
    if let Some(first) = &first {
        assert!(is_within(first.raw, data), "first field outside the block");
        check_field(first.raw, first);
    }
    // Trust follows the first field's `by` and nothing else.
    let by = first.as_ref().and_then(|f| f.by.clone());
    let trusted: Vec<String> = by.iter().cloned().collect();
    let found = received::first_trusted(data, &trusted);
    match by.as_deref().map(|by| by.trim_end_matches('.')) {
        Some(by) if !by.is_empty() => {
            assert_eq!(
                found.as_ref(),
                first.as_ref(),
                "own `by` {by:?} not trusted"
            );
        }
        _ => assert!(found.is_none(), "trusted without a `by`: {found:?}"),
    }
    if let Some((offset, field)) = received::first_trusted_field(data, &trusted) {
        assert_eq!(data.get(offset..offset + field.raw.len()), Some(field.raw));
        assert_eq!(Some(&field), first.as_ref());
    }
    let ours = received::first_trusted(data, &[OUR_MTA.to_owned()]);
    if let Some(ours) = ours {
        assert_eq!(
            ours.by.as_deref().map(|b| b.trim_end_matches('.')),
            Some(OUR_MTA)
        );
    }
}

/// The fields of the LF rule cover the block from its start, without gap or overlap.
fn check_fields(data: &[u8]) {
    let mut fields = header::fields(data);
    let mut pos = 0;
    for field in fields.by_ref() {
        assert_eq!(field.start, pos, "gap or overlap");
        assert!(!field.raw.is_empty(), "empty field");
        assert_eq!(data.get(pos..pos + field.raw.len()), Some(field.raw));
        pos += field.raw.len();
    }
    assert_eq!(fields.end(), pos, "fields end elsewhere");
}

/// What every parsed field must satisfy: positions inside `raw`, normalised case.
fn check_field(raw: &[u8], field: &Received<'_>) {
    assert!(std::ptr::eq(field.raw, raw), "raw is not the input");
    if let Some(from) = &field.from {
        assert_eq!(
            raw.get(from.range.clone()),
            Some(from.text),
            "from clause range"
        );
    }
    if let Some(date) = field.date {
        assert!(is_within(date, raw), "date outside the field");
        assert!(!date.is_empty());
    }
    if let Some(by) = &field.by {
        assert!(
            !by.bytes().any(|b| b.is_ascii_uppercase()),
            "by not lower-cased: {by}"
        );
    }
    if let Some(with) = &field.with {
        assert!(
            !with.bytes().any(|b| b.is_ascii_lowercase()),
            "with not upper-cased: {with}"
        );
    }
    let _ = (field.with_tls(), field.authenticated());
}

/// Whether `part` is a sub-slice of `whole` (same memory, not just equal bytes).
fn is_within(part: &[u8], whole: &[u8]) -> bool {
    let range = whole.as_ptr_range();
    let start = part.as_ptr();
    range.start <= start && start as usize + part.len() <= range.end as usize
}

/// Fuzzes the header split with `data` as a whole message.
///
/// # Panics
///
/// When the header split loses or invents bytes, or disagrees with the fanout on where the
/// header block ends.
pub fn mime(data: &[u8]) {
    let split = mime::split_header_block(data);
    check_split(data, &split);
    let header_len = data.len() - split.body.len();
    assert_eq!(
        header_len,
        header::end(data, 0).unwrap_or(data.len()),
        "the fanout and the MIME split disagree on the header block"
    );
}

/// Fuzzes the already-encrypted verifier: the first two octets of `data` choose chunk sizes,
/// the rest is the message, fed once whole and once in those chunks.
///
/// # Panics
///
/// When the verdict depends on how the message was cut into chunks, a verified message is
/// not the whole-message verdict, or the verifier holds more than its window.
pub fn verify(data: &[u8]) {
    let (sizes, message) = data.split_at(data.len().min(2));
    let window = message.len().max(1);
    let whole = feed_in_chunks(message, &[message.len().max(1)], window);
    let sizes: Vec<usize> = sizes.iter().map(|&s| usize::from(s % 61) + 1).collect();
    let chunked = feed_in_chunks(message, &sizes, window);
    assert_eq!(whole, chunked, "verdict depends on the chunking");
    if let Verdict::Verified(_) = whole {
        assert_eq!(verify::verify_message(message), whole);
    }
    // A smaller window never verifies what does not fit.
    if message.len() > 1 {
        let small = feed_in_chunks(message, &sizes, message.len() - 1);
        assert!(
            !matches!(small, Verdict::Verified(_)),
            "verified beyond the window"
        );
    }
}

/// Feeds `message` to a verifier in chunks of the `sizes` (cycled).
fn feed_in_chunks(message: &[u8], sizes: &[usize], window: usize) -> Verdict {
    let mut verifier = Verifier::new(window);
    let mut rest = message;
    let mut cut = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = cut.next().copied().unwrap_or(1).clamp(1, rest.len());
        let (chunk, after) = rest.split_at(n);
        rest = after;
        if let Some(reason) = verifier.feed(chunk) {
            assert!(verifier.held().len() <= window, "held beyond the window");
            return Verdict::NotVerified(reason);
        }
        assert!(verifier.held().len() <= window, "held beyond the window");
    }
    verifier.finish()
}

fn is_content(field: &header::Field<'_>) -> bool {
    field
        .name
        .is_some_and(|name| name.len() >= 8 && name[..8].eq_ignore_ascii_case(b"Content-"))
}

/// The split covers the input exactly once, in order, and sorts fields by name.
fn check_split(data: &[u8], split: &mime::HeaderSplit<'_>) {
    let mut fields: Vec<&mime::Field<'_>> = split.outer.iter().chain(&split.content).collect();
    fields.sort_by_key(|f| f.raw.as_ptr() as usize);
    let mut pos = 0;
    for field in &fields {
        assert!(is_within(field.raw, data));
        assert_eq!(
            field.raw.as_ptr() as usize - data.as_ptr() as usize,
            pos,
            "gap or overlap"
        );
        assert!(!field.raw.is_empty(), "empty field");
        pos += field.raw.len();
    }
    if split.ends_with_blank_line {
        assert_eq!(
            data.get(pos..pos + 2),
            Some(&b"\r\n"[..]),
            "no blank line at {pos}"
        );
        pos += 2;
    } else {
        assert!(split.body.is_empty());
    }
    assert_eq!(data.get(pos..), Some(split.body), "body is not the rest");
    for field in &split.content {
        assert!(is_content(field));
    }
    for field in &split.outer {
        assert!(!is_content(field));
    }
    assert_eq!(
        split.has_mime_version,
        split.outer.iter().any(|f| f.is("MIME-Version"))
    );
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sealgate_protocol::fuzzing::replay_seeds;

    use super::*;

    /// The committed seeds of the fuzz targets of this crate.
    #[test]
    fn fuzz_corpus() {
        let corpus = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus"));
        replay_seeds(corpus, "received", received);
        replay_seeds(corpus, "mime", mime);
        replay_seeds(corpus, "verify", verify);
    }

    #[test]
    fn hand_made_inputs() {
        for input in [
            &b""[..],
            b"\r\n",
            b"Received: from a by mx.example.org with ESMTPS; d\r\n\r\nbody",
            b"Received:(((\\",
            b"Content-Type: text/plain\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n",
            b"Content-Type: application/pkcs7-mime\r\n\r\nMIAG",
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
        ] {
            received(input);
            mime(input);
        }
    }
}
