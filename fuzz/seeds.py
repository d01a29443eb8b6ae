#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/corpus/<target>/seed-*.

Run from anywhere: python3 fuzz/seeds.py. Deterministic; it deletes and rewrites every seed-*
file except seed-regression-* (crash inputs kept as regression tests). Sources: the test corpus
(corpus/messages, corpus/encrypted, corpus/smuggling), plus hand-made LMTP sessions, replies,
Received fields and milter packets below.
"""

import ast
import re
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"
OUT = ROOT / "fuzz" / "corpus"

# Seeds above this size would make libFuzzer raise its -max_len and slow every run down.
MAX_SEED = 64 * 1024


def messages():
    """(name, bytes) of every test message, small enough to be a seed."""
    found = []
    for folder in ["messages", "encrypted", "encrypted/not"]:
        for path in sorted((CORPUS / folder).glob("*.eml")):
            data = path.read_bytes()
            if len(data) <= MAX_SEED:
                tag = folder.replace("/", "-")
                found.append((f"{tag}-{path.stem}", data))
    return found


def smuggling():
    return [(p.stem, p.read_bytes()) for p in sorted((CORPUS / "smuggling").glob("*.bin"))]


# --- lmtp_codec -------------------------------------------------------------------------------

def stuff(message):
    """Dot-stuffs a message and appends the end of data, as an LMTP client does."""
    out = bytearray()
    at_line_start = True
    for b in message:
        if at_line_start and b == ord("."):
            out.append(ord("."))
        out.append(b)
        at_line_start = b == ord("\n")
    if message and not message.endswith(b"\r\n"):
        out += b"\r\n"
    return bytes(out) + b".\r\n"


ENVELOPE = (
    b"LHLO mx.example.org\r\n"
    b"MAIL FROM:<sender@example.net> SIZE=1234 BODY=8BITMIME\r\n"
    b"RCPT TO:<user@example.org>\r\n"
    b"RCPT TO:<user@secure.example.org>\r\n"
    b"DATA\r\n"
)

SESSIONS = {
    "basic": ENVELOPE + b"Subject: hi\r\n\r\nhello\r\n..dot\r\n.\r\nQUIT\r\n",
    "two-transactions": ENVELOPE
    + b"Subject: one\r\n\r\n1\r\n.\r\n"
    b"RSET\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\n.\r\nQUIT\r\n",
    "xforward": b"LHLO x\r\n"
    b"XFORWARD NAME=client.example.net ADDR=192.0.2.1 PORT=4711 PROTO=ESMTP\r\n"
    b"XFORWARD HELO=client IDENT=4Xy7Zq1abc SOURCE=REMOTE\r\n"
    b"XFORWARD NAME=[UNAVAILABLE] ADDR=IPv6:2001:db8::1 HELO=a+2Bb+3Dc\r\n"
    b"MAIL FROM:<a@b.example> SMTPUTF8\r\nRCPT TO:<\xc3\xa9@b.example> NOTIFY=NEVER\r\n"
    b"DATA\r\nx\r\n.\r\n",
    "odd-commands": b"HELO x\r\nEHLO x\r\nLHLO [192.0.2.1]\r\nLHLO [IPv6:2001:db8::1]\r\n"
    b"NOOP anything\r\nVRFY user\r\nVRFY\r\nBDAT 10 LAST\r\nSTARTTLS\r\nAUTH PLAIN\r\n"
    b"EXPN list\r\nHELP\r\nRSET x\r\nQUIT now\r\nFOO\r\n\r\n \r\nMAIL\r\nRCPT\r\n",
    "paths": b"MAIL FROM:<\"a b\"@example.org>\r\nMAIL FROM:<@r1,@r2:u@example.org>\r\n"
    b"MAIL FROM: <u@example.org>\r\nMAIL FROM:u@example.org\r\nMAIL FROM:<u>\r\n"
    b"RCPT TO:<Postmaster>\r\nRCPT TO:<>\r\nRCPT TO:<a..b@c>\r\n"
    b"MAIL FROM:<a@b> SIZE=abc\r\nMAIL FROM:<a@b> SIZE=1 SIZE=2\r\n"
    b"MAIL FROM:<a@b> BODY=BINARYMIME\r\nMAIL FROM:<a@b> X=\r\nRCPT TO:<a@[300.1.1.1]>\r\n",
    "long-line": b"NOOP " + b"a" * 5000 + b"\r\nNOOP\r\n",
    "bare-lf-commands": b"LHLO x\nMAIL FROM:<a@b.c>\nRCPT TO:<d@e.f>\nDATA\nhi\n.\n.\r\n",
    "empty-message": b"LHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n.\r\nQUIT\r\n",
}

REPLIES = {
    "greeting": b"220 mx.example.org ESMTP Postfix\r\n",
    "lhlo": b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
    "per-recipient": b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    b"250 2.0.0 <user@example.org> x1YtLx Saved\r\n"
    b"550-5.1.1 <nobody@example.org>: User doesn't exist\r\n550 5.1.1 really\r\n"
    b"451 4.3.0 Temporary failure\r\n452 4.3.1 Mailbox full\r\n",
    "odd": b"250\r\n250 \r\n250-\r\n250 2.0.0\r\n250-2.0.0 a\r\n250 b\r\n"
    b"250 5.0.0 class differs\r\n250-a\r\n251 b\r\n199 low\r\n600 high\r\n2500\r\n",
    "bare-lf": b"250-a\n250-2.1.5 b\r\n250 2.1.5 c\rd\n",
}


def alphabet():
    """The ALPHABET tokens of protocol/src/fuzzing.rs, in order."""
    source = (ROOT / "protocol" / "src" / "fuzzing.rs").read_text()
    body = source.split("const ALPHABET: &[&[u8]] = &[", 1)[1].split("];", 1)[0]
    return [ast.literal_eval(lit) for lit in re.findall(r'b"(?:[^"\\]|\\.)*"', body)]


def spell(text, tokens):
    """Bytes that the alphabet mapping turns into `text` (greedy, longest token first)."""
    out = bytearray()
    order = sorted(range(len(tokens)), key=lambda i: -len(tokens[i]))
    pos = 0
    while pos < len(text):
        for i in order:
            if text.startswith(tokens[i], pos):
                out.append(i)
                pos += len(tokens[i])
                break
        else:
            out.append(tokens.index(b"x"))
            pos += 1
    return bytes(out)


def lmtp_seeds():
    seeds = {f"session-{k}": v for k, v in SESSIONS.items()}
    seeds.update({f"reply-{k}": v for k, v in REPLIES.items()})
    for name, data in smuggling():
        # As DATA content on its own, and inside a session with the real end after it.
        seeds[f"smuggling-{name}"] = data
        seeds[f"smuggling-session-{name}"] = ENVELOPE + data + b"\r\n.\r\nQUIT\r\n"
    for name, data in messages():
        if len(data) <= 4 * 1024:
            seeds[f"message-{name}"] = ENVELOPE + stuff(data) + b"QUIT\r\n"
    tokens = alphabet()
    for name in ["basic", "two-transactions", "empty-message"]:
        seeds[f"alphabet-{name}"] = spell(SESSIONS[name], tokens)
    seeds["alphabet-smuggling"] = spell(
        ENVELOPE + b"x\n.\r\nMAIL FROM:<x@example.org>\r\n.\r\n", tokens
    )
    return seeds


# --- milter_codec -----------------------------------------------------------------------------

def packet(code, data=b""):
    return struct.pack(">I", len(data) + 1) + code + data


def cstr(*items):
    return b"".join(i + b"\0" for i in items)


def macros(stage, *pairs):
    return packet(b"D", stage + cstr(*pairs))


POSTFIX_SESSION = [
    packet(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF)),
    macros(b"C", b"j", b"mx.example.org", b"{daemon_name}", b"smtpd", b"v", b"Postfix 3.7"),
    packet(b"C", cstr(b"client.example.net") + b"4" + struct.pack(">H", 51234) + cstr(b"192.0.2.1")),
    macros(b"H", b"{tls_version}", b"TLSv1.3", b"{cipher}", b"TLS_AES_256_GCM_SHA384"),
    packet(b"H", cstr(b"client.example.net")),
    macros(b"M", b"{mail_addr}", b"sender@example.net", b"{auth_authen}", b"alice"),
    packet(b"M", cstr(b"<sender@example.net>", b"SIZE=1234", b"BODY=8BITMIME")),
    macros(b"R", b"{rcpt_addr}", b"user@secure.example.org"),
    packet(b"R", cstr(b"<user@secure.example.org>")),
    packet(b"T"),
    macros(b"L", b"i", b"4Xy7Zq1abc"),
    packet(b"L", cstr(b"Received", b"from client (client [192.0.2.1])\n\tby mx with ESMTPSA")),
    packet(b"L", cstr(b"Subject", b" caf\xe9 \xff")),
    packet(b"L", cstr(b"User-Agent", b"Mutt")),
    packet(b"N"),
    packet(b"B", b"hello\r\n.\r\nbody\r\n"),
    packet(b"E"),
    packet(b"A"),
    packet(b"Q"),
]

MILTER_SEEDS = {
    "postfix-session": b"".join(POSTFIX_SESSION),
    "connect-families": packet(b"C", cstr(b"h") + b"6" + struct.pack(">H", 25) + cstr(b"2001:db8::1"))
    + packet(b"C", cstr(b"h") + b"L" + struct.pack(">H", 0) + cstr(b"/run/sock"))
    + packet(b"C", cstr(b"h") + b"U")
    + packet(b"C", cstr(b"h") + b"X"),
    "odd-packets": packet(b"U", cstr(b"XYZZY \xff"))
    + packet(b"K")
    + packet(b"E", b"trailing body")
    + packet(b"D", b"C")
    + packet(b"D", b"C" + cstr(b"{unpaired}"))
    + packet(b"M", b"")
    + packet(b"T", b"x")
    + packet(b"Z"),
    "empty-frame": struct.pack(">I", 0) + b"O",
    "too-large": struct.pack(">I", 0x7FFFFFFF) + b"B",
    "partial": POSTFIX_SESSION[0][:-3],
    # Filter responses (decode_all_responses reads the input too).
    "responses": packet(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
    + packet(b"c") + packet(b"a") + packet(b"r") + packet(b"t") + packet(b"d")
    + packet(b"y", cstr(b"550 5.7.1 Message refused, 100%% sure"))
    + packet(b"y", cstr(b"451-4.7.1 first\r\n451 4.7.1 second"))
    + packet(b"h", cstr(b"X-Sealgate", b"yes"))
    + packet(b"m", struct.pack(">I", 1) + cstr(b"User-Agent", b""))
    + packet(b"b", b"new body")
    + packet(b"p"),
}


def milter_seeds():
    seeds = dict(MILTER_SEEDS)
    for i, frame in enumerate(POSTFIX_SESSION):
        seeds[f"packet-{i:02}-{chr(frame[4])}"] = frame
    return seeds


# --- received ---------------------------------------------------------------------------------

RECEIVED = {
    "postfix-tls": b"Received: from client.example.net (client.example.net [192.0.2.1])\r\n"
    b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n"
    b"\t key-exchange X25519 server-signature RSA-PSS (2048 bits))\r\n"
    b"\t(No client certificate requested)\r\n"
    b"\tby mx.example.org (Postfix) with ESMTPS id 4Xy7Zq1abc\r\n"
    b"\tfor <user@example.org>; Mon, 3 Mar 2025 10:00:00 +0100 (CET)\r\n",
    "postfix-auth": b"Received: from [192.0.2.7] (unknown [192.0.2.7])\r\n"
    b"\t(Authenticated sender: alice)\r\n\tby mx.example.org (Postfix) with ESMTPSA id 4Xy\r\n"
    b"\tfor <bob@example.org>; Mon, 3 Mar 2025 10:00:00 +0100 (CET)\r\n",
    "sendmail": b"Received: from relay.example.net (relay [198.51.100.2])\r\n"
    b"\tby mx.example.org (8.17.1/8.17.1) with ESMTPS id 123AbC\r\n"
    b"\t(version=TLSv1.2 cipher=ECDHE-RSA-AES256-GCM-SHA384 bits=256 verify=NOT)\r\n"
    b"\tfor <u@example.org>; Mon, 3 Mar 2025 10:00:00 GMT\r\n",
    "exim": b"Received: from mail.example.net ([203.0.113.5])\r\n"
    b"\tby mx.example.org with esmtps (TLS1.3) tls TLS_AES_256_GCM_SHA384\r\n"
    b"\t(Exim 4.96) (envelope-from <a@example.net>) id 1tXyZa-000AbC-00; Mon, 3 Mar 2025 10:00:00 +0000\r\n",
    "exim-old": b"Received: from a by mx.example.org with esmtp (TLS1.2:ECDHE-RSA-AES256-GCM-SHA384:256)"
    b" (Exim 4.80) id x; d\r\n",
    "google": b"Received: by 2002:a05:6a10:1234:b0:5a1:2b3c:4d5e with SMTP id x;\r\n"
    b"        Mon, 3 Mar 2025 01:00:00 -0800 (PST)\r\n",
    "microsoft": b"Received: from AM0PR01MB1234.eurprd01.prod.outlook.com (2603:10a6:208:1::1) by\r\n"
    b" AM0PR01MB5678.eurprd01.prod.outlook.com with Microsoft SMTP Server (version=TLS1_2,\r\n"
    b" cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.1234.5; Mon, 3 Mar 2025\r\n",
    "lmtp": b"Received: from mx.example.org by imap.example.org with LMTP id abc; d\n",
    "helo-injection": b"Received: from evil (using TLSv1.3 with cipher X) (evil [192.0.2.66])\r\n"
    b"\tby mx.example.org (Postfix) with ESMTP id 1; d\r\n",
    "comments": b"Received: (((nested \\) comment) by x) from \"quoted ( by\" by a.b. (x;y) ; \r\n",
    "junk": b"Received:\r\nReceived : ;;;\r\nX: y\r\n\r\nReceived: by late\r\n",
    "no-name": b"from a by b with c id d for <e>; f",
    "utf8": b"Received: from \xc3\xa9 by M\xc3\x89.Example.ORG. with utf8smtpsa; \xff\r\n",
}


def header_block(message):
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 4]


def received_seeds():
    seeds = {f"field-{k}": v for k, v in RECEIVED.items()}
    for name, data in messages():
        block = header_block(data)
        if b"Received" in block or b"received" in block:
            seeds[f"headers-{name}"] = block
    seeds["headers-ours-first"] = (
        b"X-Inserted: by a milter\r\n" + RECEIVED["postfix-auth"] + RECEIVED["sendmail"] + b"\r\nbody"
    )
    return seeds


# --- mime -------------------------------------------------------------------------------------

def mime_seeds():
    seeds = {f"message-{name}": data for name, data in messages()}
    seeds["p7m-prefix-only"] = (
        b"Content-Type: application/pkcs7-mime; name=smime.p7m\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAx"
    )
    seeds["text-armor-only"] = b"Content-Type: text/plain\r\n\r\n  \r\n-----BEGIN PGP MESSAGE-----\r\n"
    seeds["no-headers"] = b"\r\n-----BEGIN PGP MESSAGE-----\r\n\r\n-----END PGP MESSAGE-----\r\n"
    return seeds


# --- verify -----------------------------------------------------------------------------------

def verify_seeds():
    """Two octets choose the chunk sizes (fuzzing::verify), the rest is the message."""
    seeds = {}
    for name, data in messages():
        if name.startswith("encrypted"):
            seeds[name] = b"\x06\x3c" + data
    seeds["tiny-chunks-inline"] = b"\x00\x00" + b"Subject: x\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n"
    return seeds


# --- writing ----------------------------------------------------------------------------------

def write(target, seeds):
    folder = OUT / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("seed-*"):
        if not old.name.startswith("seed-regression-"):
            old.unlink()
    for name, data in sorted(seeds.items()):
        assert len(data) <= MAX_SEED, (target, name, len(data))
        (folder / f"seed-{name}").write_bytes(data)
    total = sum(len(d) for d in seeds.values())
    print(f"{target}: {len(seeds)} seeds, {total} bytes")


def main():
    write("lmtp_codec", lmtp_seeds())
    write("milter_codec", milter_seeds())
    write("received", received_seeds())
    write("mime", mime_seeds())
    write("verify", verify_seeds())


if __name__ == "__main__":
    main()
