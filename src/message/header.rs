//! The one header-block tokenizer: a block is a sequence of fields, each possibly folded, ended
//! by an empty line or by the end of the input. Pure functions, no I/O, never fails: a line
//! that is not a well-formed field is still a field (with no name), so every byte of the block
//! belongs to exactly one field, the empty line or what follows it.
//!
//! Two line-ending rules, each where it is right (the fuzz target `mime` holds them to it):
//! - [`fields`]: a line ends at LF, CRLF or bare. For what is *removed or trusted* (scrub,
//!   the Received evidence, the Message-ID of the logs): the next hop (Dovecot) also ends a
//!   line at a bare LF, so a field hidden behind one must not escape the scrub.
//! - [`crlf_fields`] and [`end`]: a line ends at CRLF only, a bare LF is a byte inside it. For
//!   what is *cut* at the wire's line ends: the header block the fan-out hands the stages ends
//!   at the first CRLF CRLF, and the PGP/MIME split copies fields byte for byte at the same
//!   boundaries, so both agree on where the block ends.

/// One field of a header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    /// Offset of the field in the block.
    pub start: usize,
    /// The field byte for byte: its folded lines and its final line ending (absent only when
    /// the block ends without one).
    pub raw: &'a [u8],
    /// The name (white space before the colon trimmed), or `None` for a line that is not a
    /// well-formed field (no colon, or a name outside printable ASCII).
    pub name: Option<&'a [u8]>,
}

impl Field<'_> {
    /// Whether the field is called `name` (ASCII case-insensitive).
    pub(crate) fn is(&self, name: &str) -> bool {
        self.name
            .is_some_and(|own| own.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Where a line ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineEnd {
    /// At LF, after CR or not.
    Lf,
    /// At CRLF only.
    Crlf,
}

/// The fields of a header block, up to its empty line.
pub(crate) struct Fields<'a> {
    block: &'a [u8],
    pos: usize,
    done: bool,
    lines: LineEnd,
}

impl Fields<'_> {
    /// Where the fields end: the empty line that ends the block, or the end of the input.
    /// Meaningful once the iterator returned `None`.
    pub(crate) fn end(&self) -> usize {
        self.pos
    }
}

/// The fields of `block`; a line ends at LF (CRLF or bare LF), a field at a line end not
/// followed by SP or HT, the block at the first empty line (`LF`, `CRLF`, or a `CR` that ends
/// the input) or at the end of the input.
pub(crate) fn fields(block: &[u8]) -> Fields<'_> {
    Fields {
        block,
        pos: 0,
        done: false,
        lines: LineEnd::Lf,
    }
}

/// The fields of `block`; a line ends at CRLF only, a field at a CRLF not followed by SP or
/// HT, the block at the first empty line (`CRLF`) or at the end of the input.
pub(crate) fn crlf_fields(block: &[u8]) -> Fields<'_> {
    Fields {
        lines: LineEnd::Crlf,
        ..fields(block)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        let block = self.block;
        let start = self.pos;
        if self.done || start >= block.len() {
            return None;
        }
        let first_end = self.line_end(start);
        let blank = match self.lines {
            LineEnd::Lf => matches!(&block[start..first_end], b"\n" | b"\r\n" | b"\r"),
            LineEnd::Crlf => &block[start..first_end] == b"\r\n",
        };
        if blank {
            self.done = true;
            return None;
        }
        let mut end = first_end;
        while matches!(block.get(end), Some(b' ' | b'\t')) {
            end = self.line_end(end);
        }
        self.pos = end;
        Some(Field {
            start,
            raw: &block[start..end],
            name: field_name(&block[start..first_end]),
        })
    }
}

impl Fields<'_> {
    /// The offset just past the line end that ends the line starting at `from`, or the end
    /// of the block.
    fn line_end(&self, from: usize) -> usize {
        let rest = &self.block[from..];
        match self.lines {
            LineEnd::Lf => memchr::memchr(b'\n', rest).map(|lf| lf + 1),
            LineEnd::Crlf => memchr::memmem::find(rest, b"\r\n").map(|cr| cr + 2),
        }
        .map_or(self.block.len(), |len| from + len)
    }
}

/// A header block tokenized once (the LF rule of [`fields`]), for a caller that asks it
/// several questions (the fan-out: the Received evidence, the queue ID, the Message-ID).
#[derive(Debug, Clone)]
pub(crate) struct Head<'a> {
    fields: Vec<Field<'a>>,
}

impl<'a> Head<'a> {
    /// Tokenizes `block`.
    pub(crate) fn parse(block: &'a [u8]) -> Head<'a> {
        Head {
            fields: fields(block).collect(),
        }
    }

    /// The first field called `name` (ASCII case-insensitive).
    pub(crate) fn first(&self, name: &str) -> Option<&Field<'a>> {
        self.fields.iter().find(|field| field.is(name))
    }
}

/// Where the header block in `buffer` ends under the CRLF rule (just past its empty line), or
/// `None` while it has not ended; the search starts near `scanned`, the length already known
/// not to hold the end. The same end as [`crlf_fields`]' empty line, found without splitting
/// fields: the fan-out asks this for every chunk of a header block.
pub(crate) fn end(buffer: &[u8], scanned: usize) -> Option<usize> {
    if buffer.starts_with(b"\r\n") {
        return Some(2);
    }
    let from = scanned.saturating_sub(3);
    memchr::memmem::find(&buffer[from..], b"\r\n\r\n").map(|i| from + i + 4)
}

/// Where the value of the field `raw` starts (under the LF rule): after the colon of a
/// well-formed `name:` on its first line, else at 0.
pub(crate) fn value_start(raw: &[u8]) -> usize {
    let first_line = &raw[..memchr::memchr(b'\n', raw).map_or(raw.len(), |lf| lf + 1)];
    match (field_name(first_line), memchr::memchr(b':', first_line)) {
        (Some(_), Some(colon)) => colon + 1,
        _ => 0,
    }
}

/// The name of a field whose first line is `line`: before the colon, trailing WSP trimmed,
/// printable ASCII only.
fn field_name(line: &[u8]) -> Option<&[u8]> {
    let colon = memchr::memchr(b':', line)?;
    let name = line[..colon].trim_ascii_end();
    (!name.is_empty() && name.iter().all(|b| (0x21..=0x7e).contains(b))).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raws<'a>(fields: Fields<'a>) -> Vec<&'a [u8]> {
        fields.map(|f| f.raw).collect()
    }

    #[test]
    fn header_block_end() {
        assert_eq!(end(b"\r\nbody", 0), Some(2));
        assert_eq!(end(b"A: b\r\n\r\nbody", 0), Some(8));
        assert_eq!(end(b"A: b\r\nC: d\r\n", 0), None);
        // The end straddles what was already scanned.
        assert_eq!(end(b"A: b\r\n\r\n", 6), Some(8));
        assert_eq!(end(b"A: b\n\nbody", 0), None);
    }

    #[test]
    fn the_two_line_ending_rules() {
        let block = b"A: b\nC: d\r\n e\r\n\nF: g\r\n\r\nbody";
        let mut lf = fields(block);
        assert_eq!(raws(fields(block)), [&b"A: b\n"[..], b"C: d\r\n e\r\n"]);
        lf.by_ref().for_each(drop);
        assert_eq!(&block[lf.end()..lf.end() + 1], b"\n");
        let mut crlf = crlf_fields(block);
        assert_eq!(
            raws(crlf_fields(block)),
            [&b"A: b\nC: d\r\n e\r\n"[..], b"\nF: g\r\n"]
        );
        crlf.by_ref().for_each(drop);
        assert_eq!(Some(crlf.end() + 2), end(block, 0));
        // A junk line is a field without a name; a name may have white space before the colon.
        let names: Vec<_> = fields(b"junk\r\nReceived : x\r\n")
            .map(|f| f.name)
            .collect();
        assert_eq!(names, [None, Some(&b"Received"[..])]);
        assert!(
            crlf_fields(b"Subject: x")
                .next()
                .is_some_and(|f| f.is("SUBJECT"))
        );
        assert_eq!(value_start(b"Received: x\r\n"), 9);
        assert_eq!(value_start(b"no colon\r\n"), 0);
    }

    #[test]
    fn a_head_is_its_fields() {
        let block = b"Subject: a\r\nReceived: x\r\n y\r\nreceived: z\r\n\r\nbody";
        let head = Head::parse(block);
        assert_eq!(head.fields, fields(block).collect::<Vec<_>>());
        assert_eq!(
            head.first("RECEIVED").map(|f| f.raw),
            Some(&b"Received: x\r\n y\r\n"[..])
        );
    }
}
