//! MIME for the encryption stage: splits a header block into the fields that stay outside
//! and the `Content-*` fields that go inside. Pure functions, no I/O. Whether a message is
//! already encrypted is decided from its content by [`crate::pipeline::encrypt::verify`].

use crate::message::header;
pub(crate) use crate::message::header::Field;

/// A header block split for PGP/MIME: what stays outside, what goes inside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HeaderSplit<'a> {
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

/// Splits a header block (or a whole message) into its fields
/// ([`header::crlf_fields`]): a field ends at a CRLF not followed by SP or HT; the block ends
/// at the first empty line or at the end of the input. Never fails: a line that is not a
/// well-formed field stays in `outer`.
pub(crate) fn split_header_block(block: &[u8]) -> HeaderSplit<'_> {
    let mut split = HeaderSplit::default();
    let mut fields = header::crlf_fields(block);
    for field in fields.by_ref() {
        if is_content_field(field.name) {
            split.content.push(field);
        } else {
            split.has_mime_version |= field.is("MIME-Version");
            split.outer.push(field);
        }
    }
    if let Some(body) = block[fields.end()..].strip_prefix(b"\r\n") {
        split.ends_with_blank_line = true;
        split.body = body;
    }
    split
}

fn is_content_field(name: Option<&[u8]>) -> bool {
    name.and_then(|name| name.get(..8))
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"Content-"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
