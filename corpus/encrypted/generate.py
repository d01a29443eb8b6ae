#!/usr/bin/env python3
"""Generate the already-encrypted corpus for the encryption stage.

Run from the repository root:

    python3 corpus/encrypted/generate.py

Writes corpus/encrypted/NN-name.eml: one message per already-encrypted form of
openpgp.md section 3; each must be stored unchanged (classify PassThrough).
Writes corpus/encrypted/not/NN-name.eml: look-alikes that are not encrypted;
each must be encrypted (classify Encrypt).

Deterministic: every random byte comes from random.Random with a fixed string
seed, every date is fixed. Rules (checked before anything is written): every
line ends in CRLF, no bare CR or LF, no NUL.

The OpenPGP messages are structurally valid (PKESK v3 packets followed by one
SEIPD v1 packet, ASCII armor with CRC) but their key material is random: they
parse, nobody can decrypt them. The CMS blobs are DER ContentInfo structures of
the right shape with random key material.
"""

import base64
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT = HERE / "not"
CRLF = b"\r\n"


def rng(seed):
    return random.Random("sealgate-encrypted-" + seed)


def join(lines):
    return b"".join((l if isinstance(l, bytes) else l.encode()) + CRLF for l in lines)


def headers_for(name, subject, n, extra=()):
    return [
        "Return-Path: <alice@example.com>",
        "Received: from mail.example.com (mail.example.com [192.0.2.25])",
        "\tby mx.example.org (Postfix) with ESMTPS id 4Tq2Vh1xYzz9sQ",
        f"\tfor <bob@example.org>; Tue, 02 Jan 2024 10:{n:02d}:01 +0000 (UTC)",
        "From: Alice Example <alice@example.com>",
        "To: Bob Example <bob@example.org>",
        f"Subject: {subject}",
        f"Date: Tue, 02 Jan 2024 10:{n:02d}:00 +0000",
        f"Message-ID: <encrypted-{name}@example.com>",
        f"X-Corpus-Case: encrypted/{name}",
        *extra,
    ]


def part(headers, body):
    return list(headers) + [""] + list(body)


def multipart(boundary, parts, preamble=()):
    lines = list(preamble)
    for p in parts:
        lines += [f"--{boundary}"] + p
    lines += [f"--{boundary}--", ""]
    return lines


def wrap(s, width):
    return [s[i : i + width] for i in range(0, len(s), width)]


# --------------------------------------------------------------------------
# OpenPGP
# --------------------------------------------------------------------------


def crc24(data):
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def packet(tag, body):
    """New-format packet header with a definite length."""
    n = len(body)
    if n < 192:
        length = bytes([n])
    elif n < 8384:
        n -= 192
        length = bytes([(n >> 8) + 192, n & 0xFF])
    else:
        length = b"\xff" + n.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + length + body


def mpi(value_bytes):
    value = int.from_bytes(value_bytes, "big")
    return value.bit_length().to_bytes(2, "big") + value_bytes.lstrip(b"\0")


def pgp_message(seed, size, rsa=False):
    """PKESK v3 (RSA or ECDH/Cv25519) + SEIPD v1 with random contents."""
    r = rng(seed)
    keyid = bytes(r.getrandbits(8) for _ in range(8))
    if rsa:
        m = bytearray(r.getrandbits(8) for _ in range(384))
        m[0] |= 0x80
        pkesk = bytes([3]) + keyid + bytes([1]) + mpi(bytes(m))
    else:
        point = b"\x40" + bytes(r.getrandbits(8) for _ in range(32))
        wrapped = bytes(r.getrandbits(8) for _ in range(48))
        pkesk = bytes([3]) + keyid + bytes([18]) + mpi(point) + bytes([48]) + wrapped
    seipd = bytes([1]) + bytes(r.getrandbits(8) for _ in range(size))
    return packet(1, pkesk) + packet(18, seipd)


def packet_old(tag, body):
    """Old-format packet header (as GnuPG writes PKESK), two-octet length."""
    return bytes([0x80 | (tag << 2) | 1]) + len(body).to_bytes(2, "big") + body


def partial(tag, body, first=512):
    """New-format packet with partial body lengths: chunks of `first`, then the rest."""
    out = bytes([0xC0 | tag])
    exp = first.bit_length() - 1
    while len(body) > first:
        out += bytes([0xE0 | exp]) + body[:first]
        body = body[first:]
    return out + packet(tag, body)[1:]


def pkesk_v3(r):
    keyid = bytes(r.getrandbits(8) for _ in range(8))
    point = b"\x40" + bytes(r.getrandbits(8) for _ in range(32))
    wrapped = bytes(r.getrandbits(8) for _ in range(48))
    return bytes([3]) + keyid + bytes([18]) + mpi(point) + bytes([48]) + wrapped


def skesk_v4(r):
    return bytes([4, 9, 3, 8]) + r.randbytes(8) + bytes([0x60])


def readable(n):
    """n octets of readable English, what a forger hides in a container."""
    text = b"Meeting moved to Tuesday 3pm, the new door code is 4711, do not tell anyone. "
    return (text * (n // len(text) + 1))[:n]


def armor(data, headers=(), width=64, crc=None):
    lines = ["-----BEGIN PGP MESSAGE-----"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines += [""]
    lines += wrap(base64.b64encode(data).decode(), width)
    crc = crc24(data) if crc is None else crc
    lines += ["=" + base64.b64encode(crc.to_bytes(3, "big")).decode()]
    lines += ["-----END PGP MESSAGE-----"]
    return lines


def armor_signed(text):
    return [
        "-----BEGIN PGP SIGNED MESSAGE-----",
        "Hash: SHA512",
        "",
        *text,
        "-----BEGIN PGP SIGNATURE-----",
        "",
        *wrap(base64.b64encode(rng("sig").randbytes(119)).decode(), 64),
        "=" + base64.b64encode(b"\x12\x34\x56").decode(),
        "-----END PGP SIGNATURE-----",
    ]


def qp(line):
    """Quoted-printable for one armor line: '=' becomes =3D, soft breaks at 40."""
    enc = line.replace("=", "=3D")
    out = []
    while len(enc) > 40:
        cut = 39
        while enc[cut - 1] == "=" or enc[cut - 2] == "=":
            cut -= 1
        out.append(enc[:cut] + "=")
        enc = enc[cut:]
    return out + [enc]


# --------------------------------------------------------------------------
# CMS (DER)
# --------------------------------------------------------------------------


def der(tag, content):
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    elif n < 0x100:
        length = bytes([0x81, n])
    else:
        length = bytes([0x82]) + n.to_bytes(2, "big")
    return bytes([tag]) + length + content


def oid(dotted):
    parts = [int(p) for p in dotted.split(".")]
    out = bytes([parts[0] * 40 + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        out += bytes(reversed(chunk))
    return der(0x06, out)


def seq(*items):
    return der(0x30, b"".join(items))


def integer(n):
    return der(0x02, n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big"))


OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED = "1.2.840.113549.1.7.2"
OID_ENVELOPED = "1.2.840.113549.1.7.3"
OID_AUTH_ENVELOPED = "1.2.840.113549.1.9.16.1.23"


def recipient_info(r):
    issuer = seq(der(0x31, seq(oid("2.5.4.3"), der(0x0C, b"Bob Example"))))
    return seq(
        integer(0),
        seq(issuer, integer(r.getrandbits(64))),
        seq(oid("1.2.840.113549.1.1.1"), der(0x05, b"")),
        der(0x04, r.randbytes(256)),
    )


def cms(kind, seed, size):
    r = rng(seed)
    if kind == OID_ENVELOPED:
        content = seq(
            integer(0),
            der(0x31, recipient_info(r)),
            seq(
                oid(OID_DATA),
                seq(oid("2.16.840.1.101.3.4.1.42"), der(0x04, r.randbytes(16))),
                der(0x80, r.randbytes(size)),
            ),
        )
    elif kind == OID_AUTH_ENVELOPED:
        gcm = seq(der(0x04, r.randbytes(12)), integer(16))
        content = seq(
            integer(0),
            der(0x31, recipient_info(r)),
            seq(
                oid(OID_DATA),
                seq(oid("2.16.840.1.101.3.4.1.46"), gcm),
                der(0x80, r.randbytes(size)),
            ),
            der(0x04, r.randbytes(16)),
        )
    else:  # signed-data with the signed text inside: readable by anyone
        content = seq(
            integer(1),
            der(0x31, seq(oid("2.16.840.1.101.3.4.2.1"), der(0x05, b""))),
            seq(oid(OID_DATA), der(0xA0, der(0x04, b"Opaque-signed, not encrypted.\r\n"))),
            der(0x31, seq(integer(1), der(0x04, r.randbytes(size)))),
        )
    return seq(oid(kind), der(0xA0, content))


def b64_lines(data, width=76):
    return wrap(base64.b64encode(data).decode(), width)


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------

CASES = []


def case(folder, name, subject):
    def register(fn):
        CASES.append((folder, name, subject, fn))
        return fn

    return register


PASS = HERE


@case(PASS, "01-pgp-mime", "PGP/MIME (Thunderbird layout)")
def pgp_mime(h):
    b = "------------enigB3A5F0C1D2E3F4A5B6C7D8E9"
    return h + [
        "MIME-Version: 1.0",
        "Content-Type: multipart/encrypted;",
        ' protocol="application/pgp-encrypted";',
        f' boundary="{b}"',
        "",
    ] + multipart(
        b,
        [
            part(
                [
                    "Content-Type: application/pgp-encrypted",
                    "Content-Description: PGP/MIME version identification",
                ],
                ["Version: 1", ""],
            ),
            part(
                [
                    'Content-Type: application/octet-stream; name="encrypted.asc"',
                    "Content-Description: OpenPGP encrypted message",
                    'Content-Disposition: inline; filename="encrypted.asc"',
                ],
                armor(pgp_message("01", 900)) + [""],
            ),
        ],
        preamble=["This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)"],
    )


@case(PASS, "02-smime-enveloped", "S/MIME enveloped-data")
def smime_enveloped(h):
    return h + [
        "MIME-Version: 1.0",
        'Content-Type: application/pkcs7-mime; smime-type=enveloped-data;',
        '\tname="smime.p7m"',
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="smime.p7m"',
        "Content-Description: S/MIME Encrypted Message",
        "",
    ] + b64_lines(cms(OID_ENVELOPED, "02", 700))


@case(PASS, "03-smime-authenveloped", "S/MIME authEnveloped-data (AES-GCM)")
def smime_auth_enveloped(h):
    return h + [
        "MIME-Version: 1.0",
        'Content-Type: application/pkcs7-mime; name="smime.p7m";',
        " smime-type=authEnveloped-data",
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="smime.p7m"',
        "",
    ] + b64_lines(cms(OID_AUTH_ENVELOPED, "03", 650))


@case(PASS, "04-smime-legacy-p7m", "Legacy smime.p7m without smime-type")
def smime_legacy(h):
    return h + [
        "MIME-Version: 1.0",
        'Content-Type: application/x-pkcs7-mime; name="smime.p7m"',
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="smime.p7m"',
        "",
    ] + b64_lines(cms(OID_ENVELOPED, "04", 3000), 64)


@case(PASS, "05-smime-legacy-p7m-authenveloped", "Legacy p7m, authEnveloped inside")
def smime_legacy_auth(h):
    return h + [
        "MIME-Version: 1.0",
        "Content-Type: application/pkcs7-mime",
        "Content-Transfer-Encoding: BASE64",
        "",
    ] + b64_lines(cms(OID_AUTH_ENVELOPED, "05", 400))


@case(PASS, "06-inline-pgp", "Inline PGP message")
def inline_pgp(h):
    return h + [
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Transfer-Encoding: 7bit",
        "",
        "",
    ] + armor(pgp_message("06", 1200, rsa=True), [("Version", "GnuPG v2")]) + ["", ""]


@case(PASS, "07-inline-pgp-quoted-printable", "Inline PGP message, quoted-printable")
def inline_pgp_qp(h):
    body = []
    for line in armor(pgp_message("07", 500), [("Charset", "UTF-8")]):
        body += qp(line)
    return h + [
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8; format=flowed",
        "Content-Transfer-Encoding: quoted-printable",
        "",
    ] + body


@case(PASS, "08-inline-pgp-no-content-type", "Inline PGP message, no MIME at all")
def inline_pgp_plain(h):
    return h + [""] + armor(pgp_message("08", 300))


@case(PASS, "09-alternative-armored", "Inline PGP message as text and HTML")
def alternative(h):
    b = "b1_4f3c2d1e0a9b8c7d6e5f"
    block = armor(pgp_message("09", 800))
    html_lines = ["<html><head>", "</head><body>", "<pre>"]
    html_lines += [l.replace("+", "&#43;").replace("=", "&#61;") + "<br>" for l in block]
    html_lines += ["</pre>", "</body></html>"]
    return h + [
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{b}"',
        "",
    ] + multipart(
        b,
        [
            part(["Content-Type: text/plain; charset=us-ascii"], block),
            part(["Content-Type: text/html; charset=us-ascii"], html_lines),
        ],
    )


@case(PASS, "10-exchange-mangled", "PGP/MIME after Exchange")
def exchange(h):
    b = "_003_AM0PR01MB1234567890ABCDEFAMxPRO1prodoutlookcom_"
    return h + [
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{b}"',
        "",
    ] + multipart(
        b,
        [
            part(
                ['Content-Type: text/plain; charset="us-ascii"', "Content-Transfer-Encoding: quoted-printable"],
                [""],
            ),
            part(
                [
                    "Content-Type: application/pgp-encrypted",
                    'Content-Description: PGP/MIME version identification',
                    'Content-Disposition: attachment; filename="PGPMIME version identification"',
                    "Content-Transfer-Encoding: base64",
                ],
                [base64.b64encode(b"Version: 1\r\n").decode(), ""],
            ),
            part(
                [
                    'Content-Type: application/octet-stream; name="encrypted.asc"',
                    "Content-Description: OpenPGP encrypted message.asc",
                    'Content-Disposition: attachment; filename="encrypted.asc"',
                    "Content-Transfer-Encoding: base64",
                ],
                b64_lines(join(armor(pgp_message("10", 700)))) + [""],
            ),
        ],
    )


# ------------------------------------------------------------------ not/


@case(NOT, "01-multipart-signed", "PGP/MIME signed, not encrypted")
def signed(h):
    b = "------------sig9C8B7A6F5E4D3C2B1A0"
    return h + [
        "MIME-Version: 1.0",
        "Content-Type: multipart/signed; micalg=pgp-sha512;",
        ' protocol="application/pgp-signature";',
        f' boundary="{b}"',
        "",
    ] + multipart(
        b,
        [
            part(["Content-Type: text/plain; charset=us-ascii"], ["Signed, readable by anyone.", ""]),
            part(
                ['Content-Type: application/pgp-signature; name="OpenPGP_signature.asc"'],
                ["-----BEGIN PGP SIGNATURE-----", "", *wrap(base64.b64encode(rng("s1").randbytes(119)).decode(), 64),
                 "-----END PGP SIGNATURE-----", ""],
            ),
        ],
        preamble=["This is an OpenPGP/MIME signed message (RFC 4880 and 3156)"],
    )


@case(NOT, "02-smime-opaque-signed", "S/MIME opaque signed-data")
def opaque_signed(h):
    return h + [
        "MIME-Version: 1.0",
        'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"',
        "Content-Transfer-Encoding: base64",
        "",
    ] + b64_lines(cms(OID_SIGNED, "n02", 256))


@case(NOT, "03-smime-legacy-p7m-signed", "Legacy p7m holding signed-data")
def legacy_signed(h):
    return h + [
        "MIME-Version: 1.0",
        'Content-Type: application/x-pkcs7-mime; name="smime.p7m"',
        "Content-Transfer-Encoding: base64",
        "",
    ] + b64_lines(cms(OID_SIGNED, "n03", 256))


@case(NOT, "04-smime-compressed", "S/MIME compressed-data")
def compressed(h):
    data = seq(oid("1.2.840.113549.1.9.16.1.9"), der(0xA0, seq(integer(0), der(0x04, rng("n04").randbytes(90)))))
    return h + [
        "MIME-Version: 1.0",
        'Content-Type: application/pkcs7-mime; smime-type=compressed-data; name="smime.p7z"',
        "Content-Transfer-Encoding: base64",
        "",
    ] + b64_lines(data)


@case(NOT, "05-inline-pgp-signed", "Inline clear-signed message")
def inline_signed(h):
    return h + [
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
    ] + armor_signed(["Clear-signed text is readable.", "- -- dash-escaped line"])


@case(NOT, "06-text-around-armor", "Text around an armored block")
def text_around(h):
    return h + [
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "Hi Bob, the secret is below, and the plan is in clear right here.",
        "",
    ] + armor(pgp_message("n06", 300)) + ["", "-- ", "Alice"]


@case(NOT, "07-mixed-with-encrypted-attachment", "Encrypted attachment, clear text")
def mixed_attachment(h):
    b = "mixed-7d6c5b4a39281706"
    return h + [
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{b}"',
        "",
    ] + multipart(
        b,
        [
            part(["Content-Type: text/plain; charset=us-ascii"], ["The attachment is encrypted, this text is not.", ""]),
            part(
                [
                    'Content-Type: application/pgp-encrypted; name="report.pdf.asc"',
                    'Content-Disposition: attachment; filename="report.pdf.asc"',
                ],
                armor(pgp_message("n07", 400)) + [""],
            ),
        ],
    )


@case(NOT, "08-mixed-with-p7m-attachment", "S/MIME file attached to a clear message")
def mixed_p7m(h):
    b = "mixed-p7m-0a1b2c3d4e5f"
    return h + [
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{b}"',
        "",
    ] + multipart(
        b,
        [
            part(["Content-Type: text/plain; charset=us-ascii"], ["Forwarding the encrypted file.", ""]),
            part(
                [
                    'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"',
                    "Content-Transfer-Encoding: base64",
                    'Content-Disposition: attachment; filename="smime.p7m"',
                ],
                b64_lines(cms(OID_ENVELOPED, "n08", 200)) + [""],
            ),
        ],
    )


@case(NOT, "09-alternative-html-differs", "Armored text, HTML with more")
def alternative_differs(h):
    b = "alt-html-differs-1234"
    block = armor(pgp_message("n09", 300))
    return h + [
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{b}"',
        "",
    ] + multipart(
        b,
        [
            part(["Content-Type: text/plain; charset=us-ascii"], block),
            part(
                ["Content-Type: text/html; charset=us-ascii"],
                ["<html><body><p>Meeting moved to 3pm.</p><pre>"] + [l + "<br>" for l in block] + ["</pre></body></html>"],
            ),
        ],
    )


@case(NOT, "10-exchange-text-not-empty", "Exchange layout with a text part")
def exchange_text(h):
    b = "_004_exchange_text_"
    return h + [
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{b}"',
        "",
    ] + multipart(
        b,
        [
            part(["Content-Type: text/plain; charset=us-ascii"], ["See the attachment.", ""]),
            part(["Content-Type: application/pgp-encrypted"], ["Version: 1", ""]),
            part(
                ['Content-Type: application/octet-stream; name="encrypted.asc"'],
                armor(pgp_message("n10", 300)) + [""],
            ),
        ],
    )


@case(NOT, "11-fake-armored-block", "Armor around text, not OpenPGP")
def fake_block(h):
    return h + [
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "-----BEGIN PGP MESSAGE-----",
        "",
        *b64_lines(b"This is plain text pretending to be an OpenPGP message.", 64),
        "-----END PGP MESSAGE-----",
    ]


@case(NOT, "12-two-armored-blocks", "Two armored blocks")
def two_blocks(h):
    return h + [
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
    ] + armor(pgp_message("n12a", 200)) + ["", "and here is the plaintext between", ""] + armor(pgp_message("n12b", 200))


@case(NOT, "13-plain-text", "Ordinary plain text")
def plain(h):
    return h + [
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        "Grüße aus Köln. Nothing is encrypted here.",
    ]


@case(NOT, "14-octet-stream-asc", "Top-level armored octet-stream")
def octet_stream(h):
    return h + [
        "MIME-Version: 1.0",
        'Content-Type: application/octet-stream; name="message.asc"',
        "",
    ] + armor(pgp_message("n14", 300))


# ------------------------------------------------------------------ more genuine forms


@case(PASS, "11-pgp-mime-old-format-partial", "PGP/MIME, old-format PKESK, partial-length SEIPD")
def pgp_mime_partial(h):
    r = rng("11")
    data = packet_old(1, pkesk_v3(r)) + packet(3, skesk_v4(r)) + partial(18, bytes([1]) + r.randbytes(5000))
    return pgp_mime_with(h, "------------partialA1B2C3D4E5F6", armor(data))


# ------------------------------------------------------------------ forged forms, issue 11 §1


def pgp_mime_with(h, b, payload_lines, version=("Version: 1", ""), preamble=None, epilogue=(),
                  protocol="application/pgp-encrypted", version_headers=None, payload_headers=None, extra=()):
    if preamble is None:
        preamble = ["This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)"]
    if version_headers is None:
        version_headers = ["Content-Type: application/pgp-encrypted",
                           "Content-Description: PGP/MIME version identification"]
    if payload_headers is None:
        payload_headers = ['Content-Type: application/octet-stream; name="encrypted.asc"',
                           "Content-Description: OpenPGP encrypted message",
                           'Content-Disposition: inline; filename="encrypted.asc"']
    parts = [part(version_headers, list(version)), part(payload_headers, list(payload_lines) + [""])]
    parts += list(extra)
    body = multipart(b, parts, preamble=preamble)
    if epilogue:
        body = body[:-1] + list(epilogue)
    return h + [
        "MIME-Version: 1.0",
        "Content-Type: multipart/encrypted;",
        f' protocol="{protocol}";',
        f' boundary="{b}"',
        "",
    ] + body


def genuine(seed, size=600):
    return armor(pgp_message(seed, size))


def inline_with(h, lines):
    return h + ["MIME-Version: 1.0", "Content-Type: text/plain; charset=us-ascii", ""] + list(lines)


def smime_with(h, data, smime_type="enveloped-data"):
    return h + [
        "MIME-Version: 1.0",
        f'Content-Type: application/pkcs7-mime; smime-type={smime_type}; name="smime.p7m"',
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="smime.p7m"',
        "",
    ] + b64_lines(data)


def alternative_with(h, b, plain, html):
    return h + [
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{b}"',
        "",
    ] + multipart(b, [part(["Content-Type: text/plain; charset=us-ascii"], plain),
                      part(["Content-Type: text/html; charset=us-ascii"], html)])


def html_of(block, before=(), after=(), pre="<pre>"):
    return ["<html><body>", *before, pre] + [l + "<br>" for l in block] + ["</pre>", *after, "</body></html>"]


def exchange_with(h, b, text_lines, version_b64):
    return h + [
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{b}"',
        "",
    ] + multipart(b, [
        part(["Content-Type: text/plain; charset=us-ascii"], list(text_lines)),
        part(["Content-Type: application/pgp-encrypted", "Content-Transfer-Encoding: base64"],
             [base64.b64encode(version_b64).decode(), ""]),
        part(['Content-Type: application/octet-stream; name="encrypted.asc"', "Content-Transfer-Encoding: base64"],
             b64_lines(join(genuine(b))) + [""]),
    ])


def cms_enveloped_with(seed, encrypted_content, recipients=None, tail=b""):
    r = rng(seed)
    ris = recipient_info(r) if recipients is None else recipients
    content = seq(
        integer(0),
        der(0x31, ris),
        seq(oid(OID_DATA), seq(oid("2.16.840.1.101.3.4.1.42"), der(0x04, r.randbytes(16))), encrypted_content),
    )
    return seq(oid(OID_ENVELOPED), der(0xA0, content)) + tail


SECRET = "Hi Bob, the plan is readable right here: meet at the harbour at six."


@case(NOT, "15-encrypted-label-text-part", "multipart/encrypted whose only part is text")
def n15(h):
    b = "b15"
    return h + ["MIME-Version: 1.0", f"Content-Type: multipart/encrypted; boundary={b}", ""] + multipart(
        b, [part(["Content-Type: text/plain"], [SECRET, ""])])


@case(NOT, "16-pkcs7-label-over-plaintext", "enveloped-data label over base64 plaintext")
def n16(h):
    return smime_with(h, (SECRET + "\r\n").encode() * 3)


@case(NOT, "17-pgp-mime-extra-part", "PGP/MIME plus a third, readable part")
def n17(h):
    return pgp_mime_with(h, "b17", genuine("n17"), extra=[part(["Content-Type: text/plain"], [SECRET, ""])])


@case(NOT, "18-pgp-mime-preamble-text", "PGP/MIME with text in the preamble")
def n18(h):
    return pgp_mime_with(h, "b18", genuine("n18"), preamble=[SECRET])


@case(NOT, "19-pgp-mime-epilogue-text", "PGP/MIME with text in the epilogue")
def n19(h):
    return pgp_mime_with(h, "b19", genuine("n19"), epilogue=[SECRET])


@case(NOT, "20-pgp-mime-text-in-version-part", "PGP/MIME with text in the Version part")
def n20(h):
    return pgp_mime_with(h, "b20", genuine("n20"), version=["Version: 1", SECRET, ""])


@case(NOT, "21-armor-comment-header", "Inline PGP with text in an armor Comment")
def n21(h):
    return inline_with(h, armor(pgp_message("n21", 300), [("Comment", SECRET)]))


@case(NOT, "22-armor-hash-header", "PGP/MIME with an armor Hash header")
def n22(h):
    return pgp_mime_with(h, "b22", armor(pgp_message("n22", 300), [("Hash", "SHA256")]))


@case(NOT, "23-armor-unknown-header", "Inline PGP with an unknown armor header")
def n23(h):
    return inline_with(h, armor(pgp_message("n23", 300), [("Version", "GnuPG v2"), ("Note", SECRET)]))


@case(NOT, "24-html-twin-comment", "HTML twin hiding text in a comment")
def n24(h):
    block = genuine("n24")
    return alternative_with(h, "b24", block, html_of(block, before=[f"<!-- {SECRET} -->"]))


@case(NOT, "25-html-twin-attribute", "HTML twin hiding text in an attribute")
def n25(h):
    block = genuine("n25")
    return alternative_with(h, "b25", block, html_of(block, pre=f'<pre title="{SECRET}">'))


@case(NOT, "26-html-twin-unterminated-tag", "HTML twin hiding text in an unterminated tag")
def n26(h):
    block = genuine("n26")
    return alternative_with(h, "b26", block, html_of(block) + [f"<x {SECRET}"])


@case(NOT, "27-exchange-version-part-text", "Exchange layout with text in the version part")
def n27(h):
    return exchange_with(h, "b27", [""], b"Version: 1\r\n" + SECRET.encode() + b"\r\n")


@case(NOT, "28-exchange-first-part-base64-text", "Exchange layout, base64 text in the first part")
def n28(h):
    b = "b28"
    return h + ["MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{b}"', ""] + multipart(b, [
        part(["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: base64"],
             [base64.b64encode(SECRET.encode()).decode(), ""]),
        part(["Content-Type: application/pgp-encrypted"], ["Version: 1", ""]),
        part(['Content-Type: application/octet-stream; name="encrypted.asc"'], genuine("n28") + [""]),
    ])


@case(NOT, "29-skesk-only", "Passphrase-only message (SKESK, no PKESK)")
def n29(h):
    r = rng("n29")
    return inline_with(h, armor(packet(3, skesk_v4(r)) + packet(18, bytes([1]) + r.randbytes(400))))


@case(NOT, "30-sed-packet", "PKESK then SED (no integrity protection)")
def n30(h):
    r = rng("n30")
    return pgp_mime_with(h, "b30", armor(packet(1, pkesk_v3(r)) + packet(9, r.randbytes(400))))


@case(NOT, "31-packet-after-seipd", "A literal packet after the SEIPD")
def n31(h):
    r = rng("n31")
    data = pgp_message("n31", 400) + packet(11, b"b\x00\x00\x00\x00\x00" + SECRET.encode())
    return pgp_mime_with(h, "b31", armor(data))


@case(NOT, "32-literal-data-packet", "Armored literal data, not encrypted")
def n32(h):
    return inline_with(h, armor(packet(11, b"b\x00\x00\x00\x00\x00" + SECRET.encode() * 3)))


@case(NOT, "33-seipd-printable-body", "SEIPD whose body is readable text")
def n33(h):
    r = rng("n33")
    return pgp_mime_with(h, "b33", armor(packet(1, pkesk_v3(r)) + packet(18, bytes([1]) + readable(900))))


@case(NOT, "34-cms-trailing-bytes", "CMS enveloped-data with readable bytes after it")
def n34(h):
    r = rng("n34")
    return smime_with(h, cms_enveloped_with("n34", der(0x80, r.randbytes(400)), tail=SECRET.encode()))


@case(NOT, "35-cms-truncated", "CMS enveloped-data cut short")
def n35(h):
    data = cms(OID_ENVELOPED, "n35", 600)
    return smime_with(h, data[: len(data) - 100])


@case(NOT, "36-cms-signed-labelled-enveloped", "signed-data labelled enveloped-data")
def n36(h):
    return smime_with(h, cms(OID_SIGNED, "n36", 256))


@case(NOT, "37-cms-plaintext-content", "CMS enveloped-data whose encryptedContent is text")
def n37(h):
    return smime_with(h, cms_enveloped_with("n37", der(0x80, readable(700))))


@case(NOT, "38-armor-bad-crc", "Armored message with a wrong checksum")
def n38(h):
    data = pgp_message("n38", 300)
    return inline_with(h, armor(data, crc=crc24(data) ^ 1))


@case(NOT, "39-armor-bad-base64", "Armored message with a character outside base64")
def n39(h):
    lines = genuine("n39")
    lines[3] = lines[3][:10] + "!" + lines[3][11:]
    return inline_with(h, lines)


@case(NOT, "40-pgp-mime-wrong-protocol", "multipart/encrypted with another protocol")
def n40(h):
    return pgp_mime_with(h, "b40", genuine("n40"), protocol="application/x-secret")


@case(NOT, "41-pgp-mime-version-part-text-plain", "PGP/MIME whose version part is text/plain")
def n41(h):
    return pgp_mime_with(h, "b41", genuine("n41"), version_headers=["Content-Type: text/plain"])


@case(NOT, "42-pgp-mime-description-text", "PGP/MIME payload with a Content-Description of text")
def n42(h):
    return pgp_mime_with(h, "b42", genuine("n42"), payload_headers=[
        "Content-Type: application/octet-stream", f"Content-Description: {SECRET}"])


@case(NOT, "43-pgp-mime-filename-text", "PGP/MIME payload whose file name is text")
def n43(h):
    return pgp_mime_with(h, "b43", genuine("n43"), payload_headers=[
        'Content-Type: application/octet-stream; name="door code 4711.asc"'])


@case(NOT, "44-seipd-text-interleaved", "SEIPD: text with a non-printable octet every 40")
def n44(h):
    r = rng("n44")
    text = readable(6000)
    body = b"".join(text[i:i + 40] + b"\x9f" for i in range(0, len(text), 40))
    return pgp_mime_with(h, "b44", armor(packet(1, pkesk_v3(r)) + packet(18, bytes([1]) + body)))


@case(NOT, "45-cms-password-recipient-only", "CMS enveloped-data for a password only (pwri)")
def n45(h):
    r = rng("n45")
    pwri = der(0xA3, integer(0) + seq(oid("1.2.840.113549.1.9.16.3.9")) + der(0x04, r.randbytes(40)))
    return smime_with(h, cms_enveloped_with("n45", der(0x80, r.randbytes(400)), recipients=pwri))


@case(NOT, "46-pgp-mime-part-extra-field", "PGP/MIME part with another header field")
def n46(h):
    return pgp_mime_with(h, "b46", genuine("n46"), payload_headers=[
        "Content-Type: application/octet-stream", f"X-Note: {SECRET}"])


@case(NOT, "47-pgp-mime-no-closing-delimiter", "PGP/MIME without its closing delimiter")
def n47(h):
    lines = pgp_mime_with(h, "b47", genuine("n47"))
    return lines[:-2] + [SECRET]


@case(NOT, "48-pgp-mime-partial-printable", "Partial-length SEIPD whose body is text")
def n48(h):
    r = rng("n48")
    return pgp_mime_with(h, "b48", armor(packet_old(1, pkesk_v3(r)) + partial(18, bytes([1]) + readable(3000))))


@case(NOT, "49-pkesk-without-container", "Armored PKESK with no encrypted container")
def n49(h):
    return inline_with(h, armor(packet(1, pkesk_v3(rng("n49")))))


@case(NOT, "50-cms-detached-content", "CMS enveloped-data without encryptedContent")
def n50(h):
    r = rng("n50")
    content = seq(integer(0), der(0x31, recipient_info(r)),
                  seq(oid(OID_DATA), seq(oid("2.16.840.1.101.3.4.1.42"), der(0x04, r.randbytes(16)))))
    return smime_with(h, seq(oid(OID_ENVELOPED), der(0xA0, content)))


@case(NOT, "51-html-twin-title", "HTML twin with a title")
def n51(h):
    block = genuine("n51")
    html = ["<html><head><title>" + SECRET + "</title></head><body><pre>"] + block + ["</pre></body></html>"]
    return alternative_with(h, "b51", block, html)


@case(NOT, "52-pgp-mime-payload-text-after-armor", "PGP/MIME payload with text after the armor")
def n52(h):
    return pgp_mime_with(h, "b52", genuine("n52") + ["", SECRET])


@case(NOT, "53-inline-base64-text-after", "Inline PGP in base64 with text after the block")
def n53(h):
    body = join(genuine("n53")) + SECRET.encode() + b"\r\n"
    return h + ["MIME-Version: 1.0", "Content-Type: text/plain", "Content-Transfer-Encoding: base64", ""] + b64_lines(body)


@case(NOT, "54-cms-with-unprotected-attributes", "CMS enveloped-data carrying attributes")
def n54(h):
    r = rng("n54")
    attrs = der(0xA1, seq(oid("1.2.840.113549.1.9.2"), der(0x31, der(0x0C, SECRET.encode()))))
    content = seq(integer(2), der(0x31, recipient_info(r)),
                  seq(oid(OID_DATA), seq(oid("2.16.840.1.101.3.4.1.42"), der(0x04, r.randbytes(16))),
                      der(0x80, r.randbytes(400))), attrs)
    return smime_with(h, seq(oid(OID_ENVELOPED), der(0xA0, content)))



@case(NOT, "55-pkesk-carrying-text", "A PKESK whose key material is readable text")
def n55(h):
    r = rng("n55")
    fake = bytes([3]) + r.randbytes(8) + bytes([1]) + readable(600)
    return pgp_mime_with(h, "b55", armor(packet(1, fake) + packet(18, bytes([1]) + r.randbytes(500))))


@case(NOT, "56-cms-recipient-carrying-text", "CMS RecipientInfo holding readable text")
def n56(h):
    r = rng("n56")
    ri = seq(integer(0), seq(seq(der(0x31, seq(oid("2.5.4.3"), der(0x0C, readable(500))))), integer(7)),
             seq(oid("1.2.840.113549.1.1.1"), der(0x05, b"")), der(0x04, r.randbytes(256)))
    return smime_with(h, cms_enveloped_with("n56", der(0x80, r.randbytes(400)), recipients=ri))


@case(NOT, "57-armor-version-text", "Armor Version header carrying a sentence")
def n57(h):
    return inline_with(h, armor(pgp_message("n57", 300), [("Version", "GnuPG v2 " + SECRET)]))


@case(NOT, "58-bare-lf-content-type", "PGP/MIME with a second Content-Type behind a bare LF")
def n58(h):
    lines = pgp_mime_with(h, "b58", genuine("n58"))
    at = lines.index("MIME-Version: 1.0")
    lines[at] = b"MIME-Version: 1.0\nContent-Type: text/plain"
    return lines


@case(NOT, "59-inline-utf7-charset", "Inline PGP declared UTF-7 (its + sequences decode to text)")
def n59(h):
    return h + ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-7", ""] + genuine("n59")


def check(name, data):
    assert b"\0" not in data, name
    stripped = data.replace(CRLF, b"")
    if "bare-lf" not in name:
        assert b"\r" not in stripped and b"\n" not in stripped, f"{name}: bare CR or LF"
    assert data.endswith(CRLF), name


def main():
    out = []
    for n, (folder, name, subject, fn) in enumerate(CASES):
        data = join(fn(headers_for(name, subject, n)))
        check(name, data)
        out.append((folder / f"{name}.eml", data))
    NOT.mkdir(exist_ok=True)
    for folder in (HERE, NOT):
        for old in folder.glob("*.eml"):
            old.unlink()
    for path, data in out:
        path.write_bytes(data)
    print(f"wrote {len(out)} messages", file=sys.stderr)


if __name__ == "__main__":
    main()
