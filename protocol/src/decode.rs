//! The one shape every stream decoder of this crate has ([`Decode`]), and the helper that tests and
//! the fuzzing entry points use to drive any of them over a byte string cut into reads.

use std::fmt::Debug;

use bytes::BytesMut;

/// A decoder that splits items off the front of a receive buffer: command lines
/// ([`LineDecoder`](crate::LineDecoder)), replies ([`ReplyDecoder`](crate::ReplyDecoder)), milter
/// commands ([`FrameDecoder`](crate::milter::FrameDecoder)) and milter responses
/// ([`ResponseDecoder`](crate::milter::ResponseDecoder)).
///
/// Each decoder also has `decode` as an inherent method with the same contract, so callers that
/// hold a concrete decoder need not import this trait; the trait is for code that works with any of
/// them.
pub trait Decode {
    /// What one call decodes: a line, a reply, a command or a response.
    type Item;
    /// Why the buffered bytes could not be decoded.
    type Error;

    /// Decodes one item off the front of `buf`, consuming its bytes; later bytes stay in `buf`.
    /// `Ok(None)` means "need more bytes": append the next read to `buf` and call again.
    ///
    /// # Errors
    ///
    /// When the buffered bytes cannot be an item. Whether the caller may go on decoding after an
    /// error is part of each decoder's contract (see [`AfterError`]).
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error>;
}

/// What [`decode_chunks`] does after the decoder returns an error, as the decoder's contract says.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterError {
    /// Stop feeding: the connection would close (replies, milter packets), so later bytes are
    /// never looked at.
    Stop,
    /// Keep decoding: the decoder has skipped the bad input (over-long command lines).
    Resume,
}

/// Everything [`decode_chunks`] got out of a byte string.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<I, E> {
    /// Every result in order, up to the first error under [`AfterError::Stop`].
    pub items: Vec<Result<I, E>>,
    /// The bytes left in the buffer: an incomplete item, or what followed a stopping error.
    pub rest: Vec<u8>,
}

/// Feeds `chunks` to `decoder` one after another, as successive reads, and decodes after each until
/// the decoder needs more bytes. For tests and the fuzzing entry points; no stability promise.
///
/// # Panics
///
/// Under [`AfterError::Resume`], when an error consumed nothing: decoding again would return the
/// same error forever.
#[doc(hidden)]
pub fn decode_chunks<D: Decode>(
    mut decoder: D,
    chunks: &[&[u8]],
    after_error: AfterError,
) -> Decoded<D::Item, D::Error> {
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let buffered = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(item)) => items.push(Ok(item)),
                Ok(None) => break,
                Err(err) => {
                    items.push(Err(err));
                    match after_error {
                        AfterError::Stop => {
                            return Decoded {
                                items,
                                rest: buf.to_vec(),
                            };
                        }
                        AfterError::Resume => assert!(
                            buf.len() < buffered,
                            "an error consumed none of {buffered} bytes; resuming would loop"
                        ),
                    }
                }
            }
        }
    }
    Decoded {
        items,
        rest: buf.to_vec(),
    }
}

/// Runs `run` on `input` whole, split in two at every offset, and byte by byte, and asserts that
/// every way of cutting the input into reads gives the same outcome. Returns that outcome.
///
/// # Panics
///
/// When one cut gives a different outcome than the whole input.
#[cfg(test)]
pub(crate) fn same_at_every_split<T: PartialEq + Debug>(
    input: &[u8],
    run: impl Fn(&[&[u8]]) -> T,
) -> T {
    let whole = run(&[input]);
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(run(&[a, b]), whole, "split at {at} of {input:?}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(&bytes), whole, "byte by byte: {input:?}");
    whole
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Splits single bytes off the buffer; `!` is an error that consumes its byte, `?` one that
    /// consumes nothing.
    struct Bytewise;

    impl Decode for Bytewise {
        type Item = u8;
        type Error = char;

        fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<u8>, char> {
            match buf.first().copied() {
                None => Ok(None),
                Some(b'?') => Err('?'),
                Some(byte) => {
                    let _ = buf.split_to(1);
                    if byte == b'!' {
                        Err('!')
                    } else {
                        Ok(Some(byte))
                    }
                }
            }
        }
    }

    #[test]
    fn chunks_are_decoded_in_order() {
        assert_eq!(
            decode_chunks(Bytewise, &[b"ab", b"", b"c"], AfterError::Stop),
            Decoded {
                items: vec![Ok(b'a'), Ok(b'b'), Ok(b'c')],
                rest: vec![],
            }
        );
    }

    #[test]
    fn stop_keeps_what_follows_the_error() {
        assert_eq!(
            decode_chunks(Bytewise, &[b"a!b", b"c"], AfterError::Stop),
            Decoded {
                items: vec![Ok(b'a'), Err('!')],
                rest: b"b".to_vec(),
            }
        );
    }

    #[test]
    fn resume_decodes_past_the_error() {
        assert_eq!(
            decode_chunks(Bytewise, &[b"a!b", b"c"], AfterError::Resume),
            Decoded {
                items: vec![Ok(b'a'), Err('!'), Ok(b'b'), Ok(b'c')],
                rest: vec![],
            }
        );
    }

    #[test]
    #[should_panic(expected = "resuming would loop")]
    fn resume_refuses_an_error_that_consumes_nothing() {
        let _ = decode_chunks(Bytewise, &[b"a?"], AfterError::Resume);
    }

    #[test]
    fn every_split_agrees_for_a_split_invariant_run() {
        let outcome = same_at_every_split(b"a!bc", |chunks| {
            decode_chunks(Bytewise, chunks, AfterError::Resume)
        });
        assert_eq!(outcome.items.len(), 4);
    }

    #[test]
    #[should_panic(expected = "split at 0")]
    fn every_split_catches_a_run_that_depends_on_the_reads() {
        same_at_every_split(b"ab", |chunks| chunks.len());
    }
}
