#!/usr/bin/env python3
"""Generate the sealgate e-mail test corpus.

Run from the repository root:

    python3 corpus/generate.py

Writes corpus/messages/NN-name.eml (pass-through test messages) and
corpus/smuggling/*.bin (raw LMTP DATA payloads for SMTP-smuggling tests).

The output is deterministic: every random byte comes from a
random.Random seeded with a fixed string, and every date is fixed.
Rules for messages/*.eml (checked before anything is written):
  * every line ends in CRLF; no bare CR, no bare LF
    (the only exception: 09-no-final-crlf.eml lacks the final CRLF);
  * no NUL bytes.
"""

import base64
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CRLF = b"\r\n"

# ---------------------------------------------------------------------------
# Small helpers.  A message is built as a list of lines (str or bytes, without
# line endings); join() turns it into bytes with CRLF after every line.
# ---------------------------------------------------------------------------


def to_bytes(line):
    return line if isinstance(line, bytes) else line.encode("utf-8")


def join(lines, final_crlf=True):
    data = CRLF.join(to_bytes(line) for line in lines)
    return data + CRLF if final_crlf else data


def message(headers, body):
    """Header lines, the empty separator line, body lines."""
    return join(list(headers) + [""] + list(body))


def headers_for(name, subject, extra=()):
    """The usual header block; the date is derived from the case number."""
    n = int(name[:2])
    return [
        "From: Alice Example <alice@example.com>",
        "To: Bob Example <bob@example.org>",
        f"Subject: {subject}",
        f"Date: Tue, 02 Jan 2024 09:{n:02d}:00 +0000",
        f"Message-ID: <corpus-{name}@example.com>",
        f"X-Corpus-Case: {name}",
        *extra,
    ]


def text_headers(charset="us-ascii", cte="7bit"):
    return [
        "MIME-Version: 1.0",
        f"Content-Type: text/plain; charset={charset}",
        f"Content-Transfer-Encoding: {cte}",
    ]


def rng(seed):
    """A deterministic random generator (str seeds are hashed with SHA-512)."""
    return random.Random("sealgate-corpus-" + seed)


def wrap(s, width):
    return [s[i : i + width] for i in range(0, len(s), width)]


def b64_lines(data, width=76):
    return wrap(base64.b64encode(data).decode("ascii"), width)


def exact_line(prefix, length):
    """A line of exactly `length` octets (CRLF not counted)."""
    digits = "0123456789" * (length // 10 + 1)
    line = prefix + digits[: length - len(prefix)]
    assert len(line.encode()) == length
    return line


def part(headers, body):
    """One MIME body part: headers, empty line, body."""
    return list(headers) + [""] + list(body)


def multipart(boundary, parts, preamble=(), epilogue=()):
    lines = list(preamble)
    for p in parts:
        lines.append("--" + boundary)
        lines += p
    lines.append("--" + boundary + "--")
    lines += epilogue
    return lines


def b_word(text, charset="UTF-8"):
    """RFC 2047 'B' encoded word."""
    data = base64.b64encode(text.encode(charset)).decode("ascii")
    return f"=?{charset}?B?{data}?="


def q_word(text, charset="UTF-8"):
    """RFC 2047 'Q' encoded word."""
    out = ""
    for b in text.encode(charset):
        c = chr(b)
        if c == " ":
            out += "_"
        elif b < 128 and (c.isalnum() or c in "!*+-/"):
            out += c
        else:
            out += f"={b:02X}"
    return f"=?{charset}?Q?{out}?="


def encoded_words(text, encode):
    """Split text into encoded words of at most 75 characters each,
    never splitting a character between two words."""
    words, chunk = [], ""
    for ch in text:
        if chunk and len(encode(chunk + ch)) > 75:
            words.append(encode(chunk))
            chunk = ""
        chunk += ch
    if chunk:
        words.append(encode(chunk))
    return words


def qp_encode(text, charset="utf-8"):
    """Quoted-printable (RFC 2045) with soft line breaks at 76 columns."""
    out = []
    for line in text.split("\n"):
        data = line.encode(charset)
        tokens = []
        for i, b in enumerate(data):
            at_end = i == len(data) - 1
            if (33 <= b <= 126 and b != ord("=")) or (b in (9, 32) and not at_end):
                tokens.append(chr(b))
            else:
                tokens.append(f"={b:02X}")
        current = ""
        for tok in tokens:
            if len(current) + len(tok) > 75:
                out.append(current + "=")  # soft line break
                current = ""
            current += tok
        out.append(current)
    return out


def crc24(data):
    """OpenPGP armor checksum (RFC 4880, section 6.1)."""
    crc = 0xB704CE
    for b in data:
        crc ^= b << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def pgp_armor(kind, data, armor_headers=()):
    """An ASCII-armored OpenPGP block around (fake) packet data."""
    crc = base64.b64encode(crc24(data).to_bytes(3, "big")).decode("ascii")
    return [
        f"-----BEGIN PGP {kind}-----",
        *armor_headers,
        "",
        *b64_lines(data, 64),
        "=" + crc,
        f"-----END PGP {kind}-----",
    ]


def fake_pgp_signature(seed):
    # 0x89 0x02 0x33: old-format signature packet header -> "iQIz..."
    return b"\x89\x02\x33\x04\x00\x01\x08\x00\x1d" + rng(seed).randbytes(554)


def fake_pgp_message(seed, size):
    # 0x85 0x01 0x0c: public-key encrypted session key packet -> "hQEM..."
    return b"\x85\x01\x0c\x03" + rng(seed).randbytes(size)


def fake_cms(content_type_oid_last, seed, size):
    """DER-looking CMS ContentInfo: SEQUENCE { OID 1.2.840.113549.1.7.x, ... }."""
    oid = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07" + bytes([content_type_oid_last])
    body = oid + rng(seed).randbytes(size)
    return b"\x30\x82" + len(body).to_bytes(2, "big") + body


# A 8x8 RGB PNG used as an inline image.
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAbUlEQVR42hXOUREAUQhCUaMY"
    "hShEMcqNQhSi7Fs/OQzjzLCDBg83MGToMLPsosXLLSxZug/ECgmLE4iI6oFZI2NzBhNTPzj2"
    "0OHjDo4cvQf/7Bt41Rf+F+h7YsIGBYfLHyc0D8oWFZfrX05p+QDeqGABtJu0bQAAAABJRU5E"
    "rkJggg=="
)

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima "
    "mike november oscar papa quebec romeo sierra tango uniform victor whiskey "
    "xray yankee zulu mail filter privacy relay queue header body envelope "
    "message stage crypto policy deliver"
).split()


def prose(seed, lines, width=72):
    """Deterministic filler text: `lines` lines of roughly `width` characters."""
    r = rng(seed)
    out = []
    for _ in range(lines):
        line = r.choice(WORDS).capitalize()
        while len(line) < width - 12:
            line += " " + r.choice(WORDS)
        out.append(line + ".")
    return out


# ---------------------------------------------------------------------------
# The messages.  Each function returns the complete file content as bytes.
# ---------------------------------------------------------------------------

MESSAGES = {}


def case(name):
    def register(fn):
        MESSAGES[name] = fn
        return fn

    return register


@case("01-plain-ascii")
def plain_ascii(name):
    body = [
        "Hi Bob,",
        "",
        "This is a plain US-ASCII text message with nothing special in it.",
        "",
        *prose(name, 8),
        "",
        "Cheers,",
        "Alice",
    ]
    return message(headers_for(name, "Plain ASCII message") + text_headers(), body)


@case("02-utf8-8bit-body")
def utf8_body(name):
    body = [
        "Deutsch: Grüße aus Köln, schöne Straße.",
        "Français: À bientôt, ça va très bien, cœur.",
        "Ελληνικά: Καλημέρα κόσμε.",
        "Русский: Привет, мир!",
        "日本語: こんにちは世界",
        "中文: 你好，世界",
        "한국어: 안녕하세요",
        "עברית: שלום עולם",
        "العربية: مرحبا بالعالم",
        "Emoji: 📬 🔐 ✉️ 👩‍💻 🇩🇪",
        "Combining: e\u0301 a\u0308 n\u0303 (decomposed)",
        "Zero-width: a\u200bb\u200cc\u200dd\ufeffe",
        "Unicode line/paragraph separators: [\u2028] [\u2029]",
        "NEL (C2 85) inside a line: [\u0085]",
        "Max code point: \U0010fffd",
    ]
    return message(
        headers_for(name, "UTF-8 8bit body") + text_headers("utf-8", "8bit"), body
    )


@case("03-latin1-8bit-body")
def latin1_body(name):
    text = [
        "Grüße aus Köln, ça va? Ñandú, smørrebrød, Þórr, Ægir.",
        "Symbols: ½ ¼ ¾ £ ¥ © ® ° ± µ ¶ § ¿ ¡ « » ÷ ×",
        "No-break space here:[\u00a0] soft hyphen:[\u00ad] y-diaeresis: ÿ",
        "All high octets A0-FF: " + "".join(chr(c) for c in range(0xA0, 0x100)),
    ]
    body = [line.encode("latin-1") for line in text]
    return message(
        headers_for(name, "Latin-1 8bit body") + text_headers("iso-8859-1", "8bit"),
        body,
    )


@case("04-long-lines")
def long_lines(name):
    body = [
        "The next line is 998 octets, the one after 5000 octets (CRLF not counted).",
        exact_line("L998:", 998),
        exact_line("L5000:", 5000),
        "End.",
    ]
    return message(headers_for(name, "Long lines (998 and 5000 octets)") + text_headers(), body)


@case("05-line-1000-1001")
def lines_1000_1001(name):
    body = [
        "Lines of 998, 999, 1000 and 1001 octets, CRLF not counted",
        "(so 1000 and 1001 octets when counted with CRLF are covered too).",
        exact_line("L998:", 998),
        exact_line("L999:", 999),
        exact_line("L1000:", 1000),
        exact_line("L1001:", 1001),
        exact_line(".L1000-leading-dot:", 1000),
        exact_line(".L1001-leading-dot:", 1001),
        "End.",
    ]
    return message(headers_for(name, "Lines of 1000 and 1001 octets") + text_headers(), body)


@case("06-leading-dots")
def leading_dots(name):
    body = [
        ".first body line starts with a dot",
        ".",
        "..",
        "...",
        "....",
        ". hidden",
        ".\t",
        ".\ttab after dot",
        ". ",
        "..double dot",
        ".. ",
        ".hidden-ish text",
        "normal line",
        "..",
        ".",
        "..last line is two dots",
        "..",
    ]
    return message(headers_for(name, "Many leading-dot lines") + text_headers(), body)


@case("07-lone-dot-line")
def lone_dot(name):
    body = [
        ".",
        "The first line of this body is a lone dot; so is the line below.",
        ".",
        "If dot-stuffing is broken, the message ends there.",
        "",
        ".",
        "",
        "The very last line is a lone dot too.",
        ".",
    ]
    return message(headers_for(name, "Lone dot lines") + text_headers(), body)


@case("08-dot-smtp-commands")
def dot_smtp_commands(name):
    body = [
        "The lines below look like an SMTP/LMTP session after an end-of-data dot.",
        "They are message content and must be delivered as such.",
        ".",
        "MAIL FROM:<x@y>",
        "RCPT TO:<victim@example.org>",
        "DATA",
        "From: Mallory <mallory@attacker.example>",
        "Subject: smuggled?",
        "",
        "This text must stay inside the original message.",
        ".",
        "RSET",
        "LHLO attacker.example",
        "BDAT 12 LAST",
        "NOOP",
        "QUIT",
        ".",
        "250 2.0.0 Ok: queued as FAKE123",
    ]
    return message(headers_for(name, "Body with SMTP commands after dots") + text_headers(), body)


@case("09-no-final-crlf")
def no_final_crlf(name):
    lines = headers_for(name, "No final CRLF") + text_headers() + [
        "",
        "The last line of this message has no line ending.",
        "this is the last line",
    ]
    return join(lines, final_crlf=False)


@case("10-empty-body")
def empty_body(name):
    return message(headers_for(name, "Empty body") + text_headers(), [])


@case("11-headers-only-no-blank-line")
def headers_only(name):
    # Header lines only: no empty separator line, no body.
    return join(headers_for(name, "Headers only, no blank line") + text_headers())


@case("12-huge-references-header")
def huge_references(name):
    r = rng(name)
    ids = []
    size = 0
    while size < 60 * 1024:
        mid = f"<{r.getrandbits(64):016x}.{len(ids)}@mail.example.net>"
        ids.append(mid)
        size += len(mid) + 3
    refs = ["References: " + ids[0]] + [" " + mid for mid in ids[1:]]
    extra = [*refs, "In-Reply-To: " + ids[-1]]
    body = [f"The References header above has {len(ids)} message IDs (over 60 KiB)."]
    return message(headers_for(name, "Re: huge References header", extra) + text_headers(), body)


@case("13-200-received-headers")
def many_received(name):
    received = []
    for hop in range(200, 0, -1):
        ip = f"192.0.2.{hop % 254 + 1}"
        received += [
            f"Received: from relay{hop:03d}.example.net (relay{hop:03d}.example.net [{ip}])",
            f"\tby relay{hop + 1:03d}.example.net (Postfix) with ESMTPS id Q{hop:05d}X",
            f"\tfor <bob@example.org>; Tue, 02 Jan 2024 08:{hop % 60:02d}:{hop % 59:02d} +0000",
        ]
    body = ["This message went through 200 relays."]
    return message(received + headers_for(name, "200 Received headers") + text_headers(), body)


@case("14-huge-encoded-subject")
def huge_encoded_subject(name):
    phrases = [
        "Grüße aus Köln – ",
        "Привет, мир! ",
        "こんにちは世界 ",
        "plain ascii words in between ",
        "emoji 📬🔐✉️ ",
    ]
    words = []
    size = len("Subject: ")
    i = 0
    while size < 10 * 1024:
        encode = b_word if i % 2 == 0 else q_word
        for w in encoded_words(phrases[i % len(phrases)], encode):
            words.append(w)
            size += len(w) + 3
        i += 1
    subject = ["Subject: " + words[0]] + [" " + w for w in words[1:]]
    hdrs = [h for h in headers_for(name, "") if not h.startswith("Subject:")]
    hdrs[2:2] = subject
    body = [f"The Subject header is one field of {len(words)} encoded words, over 10 KiB."]
    return message(hdrs + text_headers(), body)


@case("15-folded-headers")
def folded_headers(name):
    extra = [
        "Cc: Carol Example <carol@example.org>,",
        "\tDave Example <dave@example.org>,",
        "        Erin Example <erin@example.org>,",
        " \t Frank Example <frank@example.org>",
        "X-Folded-Tab:\tvalue after a tab,",
        "\tcontinued with a tab",
        "X-Folded-Spaces: value",
        "     continued with five spaces",
        "X-Trailing-Before-Fold: trailing space before the fold ",
        "\tand a tab-indented continuation",
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;",
        "\ts=sel2024; t=1704186000; h=from:to:subject:date:message-id;",
        "\tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;",
        "\tb=" + base64.b64encode(rng(name).randbytes(120)).decode()[:70],
        "\t " + base64.b64encode(rng(name + "2").randbytes(120)).decode()[:70],
    ]
    hdrs = headers_for(name, "", extra)
    hdrs[2:3] = [
        "Subject: This subject is folded",
        "\tacross a tab continuation,",
        "  a two-space continuation,",
        " \tand a space-tab continuation",
    ]
    body = ["Several header fields above are folded with tabs and spaces."]
    return message(hdrs + text_headers(), body)


@case("16-rfc2047-encoded-words")
def rfc2047(name):
    hdrs = [
        "From: =?UTF-8?Q?Andr=C3=A9_Pirard?= <pirard@example.org>",
        "To: =?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@example.org>,",
        " =?US-ASCII*EN?Q?Keith_Moore?= <moore@example.org>",
        "Cc: =?utf-8?b?0JjQstCw0L0g0J/QtdGC0YDQvtCy?= <ivan@example.org>",
        "Subject: =?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=",
        " =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=",
        " plain " + q_word("Grüße 📬") + " " + b_word("日本語の件名"),
        "Date: Tue, 02 Jan 2024 09:16:00 +0000",
        f"Message-ID: <corpus-{name}@example.com>",
        f"X-Corpus-Case: {name}",
        "Comments: (=?ISO-8859-1?Q?a?=) adjacent: =?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=",
        "X-Malformed-Encoded-Word: =?UTF-8?B?not base64!?= and =?unknown?X?zzz?=",
        "MIME-Version: 1.0",
        "Content-Type: multipart/mixed; boundary=\"rfc2047-boundary\"",
    ]
    body = multipart(
        "rfc2047-boundary",
        [
            part(["Content-Type: text/plain; charset=us-ascii"],
                 ["Encoded words in From, To, Cc and Subject, and an RFC 2231 filename."]),
            part(
                [
                    "Content-Type: text/plain; charset=utf-8;",
                    " name=\"" + b_word("Übersicht.txt") + "\"",
                    "Content-Disposition: attachment;",
                    " filename*=UTF-8''%C3%9Cbersicht%20%E2%80%93%20Q1.txt",
                    "Content-Transfer-Encoding: base64",
                ],
                b64_lines("Inhalt der Übersicht.\r\n".encode()),
            ),
        ],
    )
    return message(hdrs, body)


@case("17-base64-binary-attachment")
def base64_attachment(name):
    data = rng(name).randbytes(200 * 1024)
    body = multipart(
        "b64-boundary-17",
        [
            part(["Content-Type: text/plain; charset=us-ascii"],
                 ["200 KiB of random bytes are attached, base64 encoded."]),
            part(
                [
                    "Content-Type: application/octet-stream; name=\"random.bin\"",
                    "Content-Disposition: attachment; filename=\"random.bin\"",
                    "Content-Transfer-Encoding: base64",
                ],
                b64_lines(data),
            ),
        ],
    )
    mime = ["MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=\"b64-boundary-17\""]
    return message(headers_for(name, "Base64 binary attachment") + mime, body)


@case("18-quoted-printable")
def quoted_printable(name):
    text = "\n".join([
        "Quoted-printable with UTF-8: Grüße, ça va, Привет, 📬.",
        "Equals signs: a=b, 1+1=2, ==== and =3D as literal text.",
        "Trailing space at the end of this line ",
        "Trailing tab at the end of this line\t",
        ".A line starting with a dot",
        "From the start of a line",
        "A very long line that has to be soft-wrapped: " + " ".join(WORDS * 3),
        "",
        "End.",
    ])
    hdrs = headers_for(name, "Quoted-printable part") + text_headers("utf-8", "quoted-printable")
    return message(hdrs, qp_encode(text))


@case("19-nested-multipart")
def nested_multipart(name):
    html = [
        "<html><body>",
        "<p>Hello Bob, here is our <b>logo</b>:</p>",
        "<p><img src=\"cid:logo.19@example.com\" alt=\"logo\"></p>",
        "</body></html>",
    ]
    related = multipart(
        "rel-19",
        [
            part(["Content-Type: text/html; charset=us-ascii"], html),
            part(
                [
                    "Content-Type: image/png; name=\"logo.png\"",
                    "Content-ID: <logo.19@example.com>",
                    "Content-Disposition: inline; filename=\"logo.png\"",
                    "Content-Transfer-Encoding: base64",
                ],
                b64_lines(TINY_PNG),
            ),
        ],
    )
    alternative = multipart(
        "alt-19",
        [
            part(["Content-Type: text/plain; charset=us-ascii"],
                 ["Hello Bob, here is our logo (see the HTML version)."]),
            part(["Content-Type: multipart/related; type=\"text/html\"; boundary=\"rel-19\""],
                 related),
        ],
    )
    mixed = multipart(
        "mixed-19",
        [
            part(["Content-Type: multipart/alternative; boundary=\"alt-19\""], alternative),
            part(
                [
                    "Content-Type: text/csv; charset=us-ascii; name=\"data.csv\"",
                    "Content-Disposition: attachment; filename=\"data.csv\"",
                ],
                ["id,name", "1,alpha", "2,bravo"],
            ),
        ],
        preamble=["This is a multi-part message in MIME format."],
    )
    mime = ["MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=\"mixed-19\""]
    return message(headers_for(name, "Nested multipart: mixed > alternative > related") + mime, mixed)


@case("20-pgp-mime-signed")
def pgp_mime_signed(name):
    signed = multipart(
        "sig-20",
        [
            part(
                ["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit"],
                ["This part is covered by the (fake) OpenPGP signature.", "", "-- ", "Alice"],
            ),
            part(
                [
                    "Content-Type: application/pgp-signature; name=\"signature.asc\"",
                    "Content-Description: OpenPGP digital signature",
                    "Content-Disposition: attachment; filename=\"signature.asc\"",
                ],
                pgp_armor("SIGNATURE", fake_pgp_signature(name)),
            ),
        ],
        preamble=["This is an OpenPGP/MIME signed message (RFC 4880 and 3156)"],
    )
    mime = [
        "MIME-Version: 1.0",
        "Content-Type: multipart/signed; micalg=pgp-sha256;",
        " protocol=\"application/pgp-signature\"; boundary=\"sig-20\"",
    ]
    return message(headers_for(name, "PGP/MIME signed") + mime, signed)


@case("21-pgp-mime-encrypted")
def pgp_mime_encrypted(name):
    encrypted = multipart(
        "enc-21",
        [
            part(
                ["Content-Type: application/pgp-encrypted",
                 "Content-Description: PGP/MIME version identification"],
                ["Version: 1"],
            ),
            part(
                [
                    "Content-Type: application/octet-stream; name=\"encrypted.asc\"",
                    "Content-Description: OpenPGP encrypted message",
                    "Content-Disposition: inline; filename=\"encrypted.asc\"",
                ],
                pgp_armor("MESSAGE", fake_pgp_message(name, 4096)),
            ),
        ],
        preamble=["This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)"],
    )
    mime = [
        "MIME-Version: 1.0",
        "Content-Type: multipart/encrypted;",
        " protocol=\"application/pgp-encrypted\"; boundary=\"enc-21\"",
    ]
    # "..." is what clients using protected headers put in the outer Subject.
    return message(headers_for(name, "...") + mime, encrypted)


@case("22-smime-pkcs7-mime")
def smime_enveloped(name):
    mime = [
        "MIME-Version: 1.0",
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data;",
        " name=\"smime.p7m\"",
        "Content-Disposition: attachment; filename=\"smime.p7m\"",
        "Content-Transfer-Encoding: base64",
        "Content-Description: S/MIME Encrypted Message",
    ]
    # OID 1.2.840.113549.1.7.3 = envelopedData
    return message(headers_for(name, "S/MIME encrypted") + mime, b64_lines(fake_cms(3, name, 3000), 64))


@case("23-inline-pgp-signed")
def inline_pgp_signed(name):
    body = [
        "-----BEGIN PGP SIGNED MESSAGE-----",
        "Hash: SHA256",
        "",
        "Hello Bob,",
        "",
        "this is a clear-signed message. The next line is dash-escaped:",
        "- -----BEGIN NOT REALLY A BLOCK-----",
        "- -- ",
        "Alice",
        *pgp_armor("SIGNATURE", fake_pgp_signature(name)),
    ]
    return message(headers_for(name, "Inline PGP clear-signed text") + text_headers(), body)


@case("24-message-rfc822-attachment")
def rfc822_attachment(name):
    inner_body = multipart(
        "inner-24",
        [
            part(["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable"],
                 qp_encode("Original message, with a non-ASCII word: Grüße.")),
            part(["Content-Type: text/html; charset=us-ascii"],
                 ["<p>Original message.</p>"]),
        ],
    )
    inner = message(
        [
            "From: Carol Example <carol@example.org>",
            "To: Alice Example <alice@example.com>",
            "Subject: The original message",
            "Date: Mon, 01 Jan 2024 18:00:00 +0100",
            "Message-ID: <inner-24@example.org>",
            "MIME-Version: 1.0",
            "Content-Type: multipart/alternative; boundary=\"inner-24\"",
        ],
        inner_body,
    )
    inner_lines = inner[:-2].split(CRLF)  # back to lines (drop the final CRLF)
    outer = multipart(
        "outer-24",
        [
            part(["Content-Type: text/plain; charset=us-ascii"], ["Forwarding the message below."]),
            part(
                [
                    "Content-Type: message/rfc822",
                    "Content-Disposition: attachment; filename=\"forwarded.eml\"",
                ],
                inner_lines,
            ),
        ],
    )
    mime = ["MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=\"outer-24\""]
    return message(headers_for(name, "Fwd: The original message") + mime, outer)


@case("25-dsn-delivery-status")
def dsn(name):
    report = multipart(
        "dsn-25",
        [
            part(
                ["Content-Description: Notification", "Content-Type: text/plain; charset=us-ascii"],
                [
                    "This is the mail system at host mx.example.org.",
                    "",
                    "I'm sorry to have to inform you that your message could not",
                    "be delivered to one or more recipients.",
                    "",
                    "<nobody@example.org>: host mx.example.net[198.51.100.25] said: 550 5.1.1",
                    "    <nobody@example.org>: Recipient address rejected: User unknown",
                ],
            ),
            part(
                ["Content-Description: Delivery report", "Content-Type: message/delivery-status"],
                [
                    "Reporting-MTA: dns; mx.example.org",
                    "X-Postfix-Queue-ID: 4T3xYz1abcz9",
                    "X-Postfix-Sender: rfc822; alice@example.com",
                    "Arrival-Date: Tue,  2 Jan 2024 09:20:00 +0000 (UTC)",
                    "",
                    "Final-Recipient: rfc822; nobody@example.org",
                    "Original-Recipient: rfc822;nobody@example.org",
                    "Action: failed",
                    "Status: 5.1.1",
                    "Remote-MTA: dns; mx.example.net",
                    "Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.org>: Recipient address",
                    "    rejected: User unknown",
                ],
            ),
            part(
                ["Content-Description: Undelivered Message Headers", "Content-Type: text/rfc822-headers"],
                [
                    "From: Alice Example <alice@example.com>",
                    "To: <nobody@example.org>",
                    "Subject: Hello",
                    "Date: Tue, 02 Jan 2024 09:19:00 +0000",
                    "Message-ID: <original-25@example.com>",
                ],
            ),
        ],
    )
    hdrs = [
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)",
        "To: alice@example.com",
        "Subject: Undelivered Mail Returned to Sender",
        "Date: Tue, 02 Jan 2024 09:25:00 +0000",
        f"Message-ID: <corpus-{name}@mx.example.org>",
        f"X-Corpus-Case: {name}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        "\tboundary=\"dsn-25\"",
    ]
    return message(hdrs, report)


@case("26-one-mib")
def one_mib(name):
    target = 1024 * 1024
    head = message(headers_for(name, "Exactly 1 MiB") + text_headers(), [])
    r = rng(name)
    body = []
    size = len(head)
    n = 0
    while True:
        line = r.choice(WORDS).capitalize()
        while len(line) < 70:
            line += " " + r.choice(WORDS)
        if n % 997 == 0:
            line = "." + line  # a few dot lines spread across the file
        n += 1
        if target - (size + len(line) + 2) < 200:
            break
        body.append(line)
        size += len(line) + 2
    body.append(exact_line("PAD:", target - size - 2))  # last line fills up to 1 MiB
    data = head + join(body)
    assert len(data) == target
    return data


@case("27-smtputf8-raw-headers")
def smtputf8(name):
    hdrs = [
        "From: Jörg Müller <jörg@müller.example>",
        "To: 张伟 <张伟@例子.测试>",
        "Subject: Grüße — 你好 — Привет 📬",
        "Date: Tue, 02 Jan 2024 09:27:00 +0000",
        f"Message-ID: <corpus-{name}@example.com>",
        f"X-Corpus-Case: {name}",
        "X-Raw-UTF8: ünïcödé in an unstructured header",
    ]
    body = ["Raw UTF-8 in header fields, as allowed with SMTPUTF8 (RFC 6532).", "Grüße, Jörg"]
    return message(hdrs + text_headers("utf-8", "8bit"), body)


@case("28-500-mime-parts")
def many_parts(name):
    parts = []
    for i in range(1, 501):
        if i % 5 == 0:
            parts.append(part([], [f"part {i:03d} (no part headers)"]))
        elif i % 7 == 0:
            parts.append(part(["Content-Type: text/plain; charset=us-ascii"], []))
        else:
            parts.append(part(["Content-Type: text/plain; charset=us-ascii"], [f"part {i:03d}"]))
    mime = ["MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=\"p28\""]
    return message(headers_for(name, "500 tiny MIME parts") + mime, multipart("p28", parts))


def ics_fold(line):
    """Fold an iCalendar content line at 75 octets (RFC 5545, 3.1)."""
    out, current = [], ""
    for ch in line:
        limit = 75 if not out else 74  # continuation lines start with a space
        if len((current + ch).encode()) > limit:
            out.append(current)
            current = ""
        current += ch
    out.append(current)
    return [out[0]] + [" " + x for x in out[1:]]


@case("29-calendar-invite")
def calendar(name):
    ics = []
    for line in [
        "BEGIN:VCALENDAR",
        "PRODID:-//Example Corp//Corpus Generator//EN",
        "VERSION:2.0",
        "METHOD:REQUEST",
        "BEGIN:VTIMEZONE",
        "TZID:Europe/Berlin",
        "BEGIN:STANDARD",
        "DTSTART:19701025T030000",
        "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU",
        "TZOFFSETFROM:+0200",
        "TZOFFSETTO:+0100",
        "END:STANDARD",
        "END:VTIMEZONE",
        "BEGIN:VEVENT",
        "UID:corpus-29-4f1b2c@example.com",
        "DTSTAMP:20240102T092900Z",
        "DTSTART;TZID=Europe/Berlin:20240115T100000",
        "DTEND;TZID=Europe/Berlin:20240115T110000",
        "SUMMARY:Quarterly planning – Köln office",
        "LOCATION:Besprechungsraum „Rhein“\\, 3. Stock",
        "DESCRIPTION:Agenda:\\n1. Review of last quarter\\n2. Planning for the next "
        "quarter\\n3. Any other business\\nPlease bring your laptop and charger.",
        "ORGANIZER;CN=Alice Example:mailto:alice@example.com",
        "ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;"
        "RSVP=TRUE;CN=Bob Example:mailto:bob@example.org",
        "SEQUENCE:0",
        "STATUS:CONFIRMED",
        "END:VEVENT",
        "END:VCALENDAR",
    ]:
        ics += ics_fold(line)
    alternative = multipart(
        "cal-29",
        [
            part(["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"],
                 ["You are invited: Quarterly planning – Köln office, 15 Jan 2024 10:00."]),
            part(
                [
                    "Content-Type: text/calendar; charset=utf-8; method=REQUEST",
                    "Content-Transfer-Encoding: 8bit",
                ],
                ics,
            ),
        ],
    )
    mime = ["MIME-Version: 1.0", "Content-Type: multipart/alternative; boundary=\"cal-29\""]
    return message(headers_for(name, "Invitation: Quarterly planning") + mime, alternative)


@case("30-whitespace-lines")
def whitespace_lines(name):
    hdrs = headers_for(name, "Trailing whitespace in header   ", ["X-Trailing-Tab: value\t"])
    body = [
        " ",
        "  ",
        "\t",
        " \t \t",
        "\t\t\t\t",
        "trailing space ",
        "trailing spaces     ",
        "trailing tab\t",
        "trailing mixed \t \t",
        "  leading spaces",
        "\tleading tab",
        "",
        " ",
        "last line is three spaces:",
        "   ",
    ]
    return message(hdrs + text_headers(), body)


@case("31-many-blank-lines")
def many_blank_lines(name):
    body = [""] * 50 + ["after 50 blank lines"] + [""] * 100 + ["after 100 more"] + [""] * 200
    return message(headers_for(name, "Many CRLF CRLF sequences") + text_headers(), body)


@case("32-header-name-case")
def header_name_case(name):
    hdrs = [
        "fRoM: Alice Example <alice@example.com>",
        "TO: Bob Example <bob@example.org>",
        "sUbJeCt: Header names in unusual case",
        "date: Tue, 02 Jan 2024 09:32:00 +0000",
        f"MESSAGE-ID: <corpus-{name}@example.com>",
        f"X-Corpus-Case: {name}",
        "X-Weird-Header: first",
        "x-weird-header: second, same name in lower case",
        "X-WEIRD-HEADER: third, same name in upper case",
        "X-Odd!#$%&'*+^_`{|}~Name: every special character allowed in a field name",
        "X-1234: digits",
        "mime-VERSION: 1.0",
        "content-TYPE: text/plain; CHARSET=US-ASCII",
    ]
    return message(hdrs, ["Header names above use unusual capitalisation."])


@case("33-empty-header-value")
def empty_header_value(name):
    hdrs = headers_for(name, "", [
        "X-Empty:",
        "X-Empty-Space: ",
        "X-Empty-Tab:\t",
        "Keywords:",
        "Comments: ",
    ])
    hdrs[2] = "Subject:"
    return message(hdrs + text_headers(), ["Several header fields above have empty values."])


@case("34-colon-space-continuation")
def colon_space_continuation(name):
    hdrs = headers_for(name, "", [
        "X-Colon-Space: ",
        " value that starts on the continuation line",
        "X-Colon-Only:",
        "\tvalue after a colon with nothing else on the first line",
        "X-Colon-Continuation: first",
        " : a continuation line that starts with colon-space",
    ])
    hdrs[2:3] = ["Subject: ", " subject entirely on the continuation line"]
    return message(hdrs + text_headers(), ["Header values above start on continuation lines."])


@case("35-smime-signed")
def smime_signed(name):
    signed = multipart(
        "smime-sig-35",
        [
            part(["Content-Type: text/plain; charset=us-ascii"],
                 ["This part is covered by a (fake) S/MIME detached signature."]),
            part(
                [
                    "Content-Type: application/pkcs7-signature; name=\"smime.p7s\"",
                    "Content-Transfer-Encoding: base64",
                    "Content-Disposition: attachment; filename=\"smime.p7s\"",
                    "Content-Description: S/MIME Cryptographic Signature",
                ],
                # OID 1.2.840.113549.1.7.2 = signedData
                b64_lines(fake_cms(2, name, 1800), 64),
            ),
        ],
        preamble=["This is an S/MIME signed message"],
    )
    mime = [
        "MIME-Version: 1.0",
        "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";",
        " micalg=sha-256; boundary=\"smime-sig-35\"",
    ]
    return message(headers_for(name, "S/MIME signed") + mime, signed)


@case("36-inline-pgp-encrypted")
def inline_pgp_encrypted(name):
    body = pgp_armor("MESSAGE", fake_pgp_message(name, 1500), ["Comment: inline, not PGP/MIME"])
    return message(headers_for(name, "Inline PGP encrypted text") + text_headers(), body)


@case("37-8bit-all-octets")
def all_octets(name):
    octets = bytes(b for b in range(1, 256) if b not in (0x0A, 0x0D))
    body = [octets[i : i + 64] for i in range(0, len(octets), 64)]
    body.insert(0, b"Every octet 01-FF except CR and LF, 64 per line:")
    mime = [
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=unknown-8bit",
        "Content-Transfer-Encoding: 8bit",
    ]
    return message(headers_for(name, "All 8-bit octets") + mime, body)


@case("38-mime-preamble-epilogue")
def preamble_epilogue(name):
    boundary = "simple boundary'()+_,-./:=?"
    parts = [
        part(["Content-Type: text/plain; charset=us-ascii"],
             ["Lines that look a bit like boundaries but are not:", "--", "----", "-- ",
              "--not-the-boundary", "--simple", ""]),
        part([], ["Part without headers, after a delimiter line with transport padding."]),
    ]
    lines = multipart(
        boundary,
        parts,
        preamble=["This is the preamble.  It is to be ignored.", ""],
        epilogue=["This is the epilogue.  It is also to be ignored.", "--" + "x"],
    )
    # RFC 2046 allows whitespace after a delimiter ("transport padding").
    lines[lines.index("--" + boundary, 3)] = "--" + boundary + "  \t"
    mime = ["MIME-Version: 1.0", f"Content-Type: multipart/mixed; boundary=\"{boundary}\""]
    return message(headers_for(name, "MIME preamble and epilogue") + mime, lines)


@case("39-from-lines-in-body")
def from_lines(name):
    body = [
        "From alice@example.com Tue Jan  2 09:39:00 2024",
        "From here on, lines look like mbox separators.",
        ">From an already-escaped line",
        ">>From a doubly-escaped line",
        "From: a header-looking line",
        "from lower case",
        " From with a leading space",
    ]
    return message(headers_for(name, "From lines in the body") + text_headers(), body)


@case("40-long-unfolded-header")
def long_unfolded_header(name):
    extra = [
        exact_line("X-Exactly-998: ", 998),
        exact_line("X-Exactly-1000: ", 1000),
        exact_line("X-Long-Unfolded-8192: ", 8192),
    ]
    return message(headers_for(name, "Long unfolded header lines", extra) + text_headers(),
                   ["Three header lines above are 998, 1000 and 8192 octets long, unfolded."])


@case("41-obs-header-syntax")
def obs_header_syntax(name):
    extra = [
        "X-Space-Before-Colon : obsolete syntax (RFC 5322 4.5)",
        "X-Whitespace-Only-Continuation: first",
        " ",
        "\tsecond, after a whitespace-only continuation line (obs-FWS)",
    ]
    return message(headers_for(name, "Obsolete header syntax", extra) + text_headers(),
                   ["Header fields above use obsolete but parseable syntax."])


@case("42-no-headers-body-only")
def no_headers(name):
    # The message starts with the empty line: an empty header section.
    return message([], ["This message has no header fields at all.", "Only a body."])


@case("43-html-only")
def html_only(name):
    cells = "".join(f"<td style=\"padding:4px;color:#333\">{w}</td>" for w in WORDS * 2)
    body = [
        "<!DOCTYPE html>",
        "<html><head><meta charset=\"utf-8\"><style>p { margin: 0 }</style></head>",
        "<body>",
        "<p>Grüße! An HTML-only newsletter with one long table row:</p>",
        f"<table><tr>{cells}</tr></table>",
        "</body></html>",
    ]
    mime = ["MIME-Version: 1.0", "Content-Type: text/html; charset=utf-8",
            "Content-Transfer-Encoding: 8bit"]
    return message(headers_for(name, "HTML-only newsletter") + mime, body)


# ---------------------------------------------------------------------------
# SMTP-smuggling payloads: raw LMTP DATA content, NOT CRLF-clean on purpose.
# The test sends them as-is (no dot-stuffing) and appends "\r\n.\r\n".
# ---------------------------------------------------------------------------

SMUGGLING_VARIANTS = {
    "lf-dot-lf": b"\n.\n",
    "cr-dot-cr": b"\r.\r",
    "crlf-dot-lf": b"\r\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "crlf-dot-cr": b"\r\n.\r",
    "cr-dot-crlf": b"\r.\r\n",
}


def smuggling_payload(fake_end_of_data):
    return (
        b"Subject: x\r\n\r\nhello"
        + fake_end_of_data
        + b"MAIL FROM:<evil@attacker.example>\r\n"
        b"RCPT TO:<victim@example.org>\r\n"
        b"DATA\r\n"
        b"Subject: smuggled\r\n"
        b"\r\n"
        b"smuggled\r\n"
    )


# ---------------------------------------------------------------------------


def check_message(name, data):
    """Enforce the corpus rules for messages/*.eml."""
    assert b"\0" not in data, f"{name}: NUL byte"
    if name.endswith("no-final-crlf"):
        assert not data.endswith(b"\n"), f"{name}: must not end with a line ending"
        data += CRLF
    assert data.endswith(CRLF), f"{name}: does not end with CRLF"
    rest = data.replace(CRLF, b"")
    assert b"\r" not in rest, f"{name}: bare CR"
    assert b"\n" not in rest, f"{name}: bare LF"


def main():
    msg_dir = HERE / "messages"
    smug_dir = HERE / "smuggling"
    msg_dir.mkdir(exist_ok=True)
    smug_dir.mkdir(exist_ok=True)

    # Remove stale output so that renamed cases do not linger.
    for old in msg_dir.glob("*.eml"):
        old.unlink()
    for old in smug_dir.glob("*.bin"):
        old.unlink()

    for name, build in MESSAGES.items():
        data = build(name)
        check_message(name, data)
        (msg_dir / f"{name}.eml").write_bytes(data)

    for name, fake_end in SMUGGLING_VARIANTS.items():
        (smug_dir / f"{name}.bin").write_bytes(smuggling_payload(fake_end))

    print(f"wrote {len(MESSAGES)} messages and {len(SMUGGLING_VARIANTS)} smuggling payloads",
          file=sys.stderr)


if __name__ == "__main__":
    main()
