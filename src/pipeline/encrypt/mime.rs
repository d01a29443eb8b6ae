//! MIME for the encryption stage: splits a header block into the fields that stay outside
//! and the `Content-*` fields that go inside. Pure functions, no I/O. Whether a message is
//! already encrypted is decided from its content by [`crate::pipeline::encrypt::verify`].

use memchr::memmem;

/// One header field of a header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The name as written, without the colon and any white space before it; empty for a
    /// line that is not a well-formed field (no colon, or bytes outside printable ASCII).
    pub name: &'a [u8],
    /// The whole field byte for byte: its folded lines and its CRLF (absent only when the
    /// block ends without one).
    pub raw: &'a [u8],
}

impl Field<'_> {
    /// Whether the field is called `name` (ASCII case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// A header block split for PGP/MIME: what stays outside, what goes inside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderSplit<'a> {
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

/// Splits a header block (or a whole message) into its fields. A field ends at a CRLF not
/// followed by SP or HT; the block ends at the first empty line or at the end of the input.
/// Never fails: a line that is not a well-formed field stays in `outer`.
pub fn split_header_block(block: &[u8]) -> HeaderSplit<'_> {
    let mut split = HeaderSplit::default();
    let mut pos = 0;
    while pos < block.len() {
        let rest = &block[pos..];
        if rest.starts_with(b"\r\n") {
            split.ends_with_blank_line = true;
            split.body = &rest[2..];
            return split;
        }
        let end = pos + field_len(rest);
        let raw = &block[pos..end];
        let field = Field {
            name: field_name(raw),
            raw,
        };
        if is_content_field(field.name) {
            split.content.push(field);
        } else {
            split.has_mime_version |= field.is("MIME-Version");
            split.outer.push(field);
        }
        pos = end;
    }
    split
}

/// Length of the field that starts `rest`: up to and including the CRLF that is not
/// followed by SP or HT, or all of `rest`.
fn field_len(rest: &[u8]) -> usize {
    let mut from = 0;
    loop {
        let Some(crlf) = memmem::find(&rest[from..], b"\r\n") else {
            return rest.len();
        };
        let next = from + crlf + 2;
        match rest.get(next) {
            Some(b' ' | b'\t') => from = next,
            _ => return next,
        }
    }
}

/// The field name (before the colon, trailing WSP trimmed), or empty when the first line is
/// not `name:` with a name of printable ASCII.
fn field_name(raw: &[u8]) -> &[u8] {
    let first_line = memmem::find(raw, b"\r\n").map_or(raw, |end| &raw[..end]);
    let Some(colon) = memchr::memchr(b':', first_line) else {
        return b"";
    };
    let name = first_line[..colon].trim_ascii_end();
    if !name.is_empty() && name.iter().all(|b| (0x21..=0x7e).contains(b)) {
        name
    } else {
        b""
    }
}

fn is_content_field(name: &[u8]) -> bool {
    name.get(..8)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"Content-"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
