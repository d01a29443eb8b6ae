//! A raw LMTP client for tests: sends exact bytes, reads exact replies (with the protocol
//! crate's reply decoder), so every assertion is about what went over the wire.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use sealgate_protocol::{DotStuffer, Reply, ReplyDecoder};

/// One client connection.
pub struct Client {
    stream: TcpStream,
    input: BytesMut,
    decoder: ReplyDecoder,
}

impl Client {
    /// Connects and reads the greeting, which must be 220.
    pub fn connect(port: u16) -> Client {
        let mut client = Client::connect_raw(port);
        let greeting = client.reply();
        assert_eq!(greeting.code, 220, "greeting: {greeting}");
        client
    }

    /// Connects without reading anything.
    pub fn connect_raw(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to sealgate");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set timeout");
        Client {
            stream,
            input: BytesMut::new(),
            decoder: ReplyDecoder::new(),
        }
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to sealgate");
    }

    /// Reads one complete reply; panics on EOF or timeout.
    pub fn reply(&mut self) -> Reply {
        self.try_reply().expect("connection closed before a reply")
    }

    /// Reads one complete reply; `None` when the server closed the connection.
    pub fn try_reply(&mut self) -> Option<Reply> {
        loop {
            if let Some(reply) = self
                .decoder
                .decode(&mut self.input)
                .expect("well-formed reply")
            {
                return Some(reply);
            }
            let mut buf = [0u8; 65536];
            let n = self.stream.read(&mut buf).expect("read from sealgate");
            if n == 0 {
                return None;
            }
            self.input.extend_from_slice(&buf[..n]);
        }
    }

    /// Sends a command line and returns its reply.
    pub fn command(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Asserts the reply's code and enhanced code, e.g. `expect("RCPT TO:<a@x>", "250 2.1.5")`.
    pub fn expect(&mut self, line: &str, code: &str) -> Reply {
        let reply = self.command(line);
        assert_codes(&reply, code, line);
        reply
    }

    /// LHLO, MAIL, RCPTs (each must get 250), DATA, the dot-stuffed message; returns the
    /// replies after the final dot (one per recipient).
    pub fn deliver(&mut self, from: &str, to: &[&str], message: &[u8]) -> Vec<Reply> {
        self.expect("LHLO client.example", "250");
        self.expect(&format!("MAIL FROM:<{from}>"), "250 2.1.0");
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), "250 2.1.5");
        }
        self.expect("DATA", "354");
        self.send_message(message);
        to.iter().map(|_| self.reply()).collect()
    }

    /// Sends message bytes dot-stuffed, with the end-of-data line.
    pub fn send_message(&mut self, message: &[u8]) {
        let mut wire = BytesMut::new();
        let mut stuffer = DotStuffer::new();
        stuffer.encode(message, &mut wire);
        stuffer.finish(&mut wire);
        self.send(&wire);
    }

    /// Reads one complete reply if it arrives within `wait`; `None` on timeout or EOF. The
    /// read timeout is back at 30 s afterwards. For "not answered (yet)" checks.
    pub fn reply_within(&mut self, wait: Duration) -> Option<Reply> {
        self.stream
            .set_read_timeout(Some(wait))
            .expect("set timeout");
        let mut reply = None;
        loop {
            if let Some(r) = self
                .decoder
                .decode(&mut self.input)
                .expect("well-formed reply")
            {
                reply = Some(r);
                break;
            }
            let mut buf = [0u8; 65536];
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
            }
        }
        self.stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set timeout");
        reply
    }

    /// Sets how long [`Client::reply`] waits (30 s unless changed).
    pub fn set_read_timeout(&mut self, wait: Duration) {
        self.stream
            .set_read_timeout(Some(wait))
            .expect("set timeout");
    }

    /// Writes bytes as they are; `false` when the write failed (e.g. the server closed).
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// A second handle on the connection, for writing from another thread while this one
    /// reads replies.
    pub fn writer(&self) -> TcpStream {
        self.stream.try_clone().expect("clone the connection")
    }

    /// True when the server has closed the connection (reads EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        matches!(self.stream.read(&mut buf), Ok(0))
    }
}

/// Asserts `reply` has the `"code"` or `"code x.y.z"` given.
pub fn assert_codes(reply: &Reply, expected: &str, context: &str) {
    let mut parts = expected.split(' ');
    let code: u16 = parts.next().and_then(|c| c.parse().ok()).expect("code");
    assert_eq!(reply.code, code, "{context}: got {reply}");
    if let Some(enhanced) = parts.next() {
        let got = reply.enhanced.map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(got, enhanced, "{context}: got {reply}");
    }
}
