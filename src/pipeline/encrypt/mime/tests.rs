use super::*;

fn raws<'a>(fields: &[Field<'a>]) -> Vec<&'a [u8]> {
    fields.iter().map(|f| f.raw).collect()
}

#[test]
fn split_header_block_cases() {
    struct Case {
        name: &'static str,
        input: &'static [u8],
        outer: &'static [&'static [u8]],
        content: &'static [&'static [u8]],
        mime_version: bool,
        blank: bool,
        body: &'static [u8],
    }
    let cases = [
        Case {
            name: "simple",
            input: b"From: a\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\
              Subject: s\r\n\r\n",
            outer: &[b"From: a\r\n", b"MIME-Version: 1.0\r\n", b"Subject: s\r\n"],
            content: &[b"Content-Type: text/plain\r\n"],
            mime_version: true,
            blank: true,
            body: b"",
        },
        Case {
            name: "folding kept, case-insensitive names",
            input: b"Subject: a\r\n b\r\n\tc\r\n\
              content-TYPE: multipart/mixed;\r\n boundary=x\r\n\
              CONTENT-transfer-encoding: 7bit\r\nmime-version: 1.0\r\n\r\n",
            outer: &[b"Subject: a\r\n b\r\n\tc\r\n", b"mime-version: 1.0\r\n"],
            content: &[
                b"content-TYPE: multipart/mixed;\r\n boundary=x\r\n",
                b"CONTENT-transfer-encoding: 7bit\r\n",
            ],
            mime_version: true,
            blank: true,
            body: b"",
        },
        Case {
            name: "no blank line, no final CRLF",
            input: b"From: a\r\nContent-Type: text/plain",
            outer: &[b"From: a\r\n"],
            content: &[b"Content-Type: text/plain"],
            mime_version: false,
            blank: false,
            body: b"",
        },
        Case {
            name: "no blank line, final CRLF",
            input: b"From: a\r\nContent-Id: <x>\r\n",
            outer: &[b"From: a\r\n"],
            content: &[b"Content-Id: <x>\r\n"],
            mime_version: false,
            blank: false,
            body: b"",
        },
        Case {
            name: "empty header block",
            input: b"\r\n",
            outer: &[],
            content: &[],
            mime_version: false,
            blank: true,
            body: b"",
        },
        Case {
            name: "nothing at all",
            input: b"",
            outer: &[],
            content: &[],
            mime_version: false,
            blank: false,
            body: b"",
        },
        Case {
            name: "junk lines stay outside",
            input: b"junk without colon\r\n leading: continuation\r\n\
              Content-Type\r\n Content-X: y\r\n: empty name\r\n\
              Content-Type : text/plain\r\n\r\n",
            outer: &[
                b"junk without colon\r\n leading: continuation\r\n",
                b"Content-Type\r\n Content-X: y\r\n",
                b": empty name\r\n",
            ],
            content: &[b"Content-Type : text/plain\r\n"],
            mime_version: false,
            blank: true,
            body: b"",
        },
        Case {
            name: "leading continuation line",
            input: b" Content-Type: text/plain\r\nFrom: a\r\n\r\n",
            outer: &[b" Content-Type: text/plain\r\n", b"From: a\r\n"],
            content: &[],
            mime_version: false,
            blank: true,
            body: b"",
        },
        Case {
            name: "8-bit bytes",
            input: b"Subject: Gr\xc3\xbc\xc3\x9fe\r\nCont\xe9nt-Type: x\r\n\
              Content-Description: \xff\xfe\r\n\r\n",
            outer: &[
                b"Subject: Gr\xc3\xbc\xc3\x9fe\r\n",
                b"Cont\xe9nt-Type: x\r\n",
            ],
            content: &[b"Content-Description: \xff\xfe\r\n"],
            mime_version: false,
            blank: true,
            body: b"",
        },
        Case {
            name: "bare LF is not a line end; whole message gives the body",
            input: b"A: b\nContent-Type: c\r\nContent-Type: d\r\n\r\nbody\r\n\r\nmore",
            outer: &[b"A: b\nContent-Type: c\r\n"],
            content: &[b"Content-Type: d\r\n"],
            mime_version: false,
            blank: true,
            body: b"body\r\n\r\nmore",
        },
        Case {
            name: "whitespace-only continuation is not the blank line",
            input: b"Subject: a\r\n \r\n b\r\n\r\n",
            outer: &[b"Subject: a\r\n \r\n b\r\n"],
            content: &[],
            mime_version: false,
            blank: true,
            body: b"",
        },
        Case {
            name: "lone CR",
            input: b"\r",
            outer: &[b"\r"],
            content: &[],
            mime_version: false,
            blank: false,
            body: b"",
        },
    ];
    for case in cases {
        let split = split_header_block(case.input);
        assert_eq!(raws(&split.outer), case.outer, "{}", case.name);
        assert_eq!(raws(&split.content), case.content, "{}", case.name);
        assert_eq!(split.has_mime_version, case.mime_version, "{}", case.name);
        assert_eq!(split.ends_with_blank_line, case.blank, "{}", case.name);
        assert_eq!(split.body, case.body, "{}", case.name);
        // Nothing is lost: the pieces add up to the input.
        let total: usize = split
            .outer
            .iter()
            .chain(&split.content)
            .map(|f| f.raw.len())
            .sum();
        let blank = if case.blank { 2 } else { 0 };
        assert_eq!(
            total + blank + split.body.len(),
            case.input.len(),
            "{}",
            case.name
        );
    }
}

#[test]
fn split_never_panics_on_any_prefix() {
    let input = b"A: b\r\n c\r\nContent-Type: x;\r\n\ty\r\n\r\n\r\nbody\xff\r";
    for end in 0..=input.len() {
        for start in 0..=end {
            let _ = split_header_block(&input[start..end]);
        }
    }
}
