//! LMTP conversations in-process: a session over an in-memory duplex, with the wiring
//! `app::run` builds ([`crate::testing`]) and a Maildir next hop; timeouts under paused time.
//! What needs a process (signals, sockets, Postfix) stays in `tests/integration/lmtp_session.rs`.

#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use prometheus::{Encoder, TextEncoder};
use sealgate_protocol::{EnhancedCode, Reply, ReplyDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::lmtp::session::serve;
use crate::testing::{self, Wiring};

const MESSAGE: &str = "From: sender@example.net\r\nSubject: in-process\r\n\r\nHello.\r\n";

/// The client's end of an in-memory connection to a running session.
struct Client {
    io: DuplexStream,
    input: BytesMut,
    replies: ReplyDecoder,
    session: JoinHandle<()>,
    stop: watch::Sender<bool>,
    wiring: Wiring,
    maildir: testkit::Maildir,
    _keys: tempfile::TempDir,
}

impl Client {
    /// A session with `vars` on top of a Maildir next hop and an empty key store.
    fn start(vars: &[(&str, &str)]) -> Client {
        let maildir = testkit::Maildir::new();
        let keys = tempfile::tempdir().unwrap();
        crate::store::certd::init(keys.path()).unwrap();
        let next_hop = maildir.next_hop();
        let mut all = vec![
            ("SEALGATE_NEXT_HOP", next_hop.as_str()),
            ("SEALGATE_HOSTNAME", "lmtp.test.example"),
        ];
        all.extend_from_slice(vars);
        let wiring = testing::context(&all, keys.path());
        let (io, server) = duplex(1 << 20);
        let (stop, shutdown) = watch::channel(false);
        let session = tokio::spawn(serve(server, "test".into(), wiring.lmtp(), shutdown));
        Client {
            io,
            input: BytesMut::new(),
            replies: ReplyDecoder::new(),
            session,
            stop,
            wiring,
            maildir,
            _keys: keys,
        }
    }

    async fn send(&mut self, line: &str) {
        self.io.write_all(line.as_bytes()).await.unwrap();
    }

    /// The next reply; panics if the session closes first.
    async fn reply(&mut self) -> Reply {
        loop {
            if let Some(reply) = self.replies.decode(&mut self.input).unwrap() {
                return reply;
            }
            let n = self.io.read_buf(&mut self.input).await.unwrap();
            assert!(n > 0, "the session closed");
        }
    }

    async fn ask(&mut self, line: &str) -> Reply {
        self.send(line).await;
        self.reply().await
    }

    /// Asks `line` and checks the reply's code and enhanced code.
    async fn expect(&mut self, line: &str, code: u16, enhanced: (u8, u16, u16)) -> Reply {
        let reply = self.ask(line).await;
        let (class, subject, detail) = enhanced;
        assert_eq!(
            (reply.code, reply.enhanced),
            (code, Some(EnhancedCode::new(class, subject, detail))),
            "{line:?}: {reply}"
        );
        reply
    }

    /// The session ended: EOF, and the task finished.
    async fn closed(mut self) {
        let mut rest = Vec::new();
        self.io.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "unexpected output {rest:?}");
        self.session.await.unwrap();
    }

    fn metrics(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.wiring.registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }
}

#[tokio::test]
async fn a_transaction_stores_a_copy_per_recipient_and_answers_each() {
    let mut lmtp = Client::start(&[]);
    let greeting = lmtp.reply().await;
    assert_eq!(greeting.code, 220);
    assert_eq!(greeting.lines, ["lmtp.test.example sealgate LMTP ready"]);
    let lhlo = lmtp.ask("LHLO mx.test.example\r\n").await;
    assert_eq!(lhlo.code, 250);
    for extension in ["PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SIZE"] {
        let offered = |line: &String| line.split(' ').next() == Some(extension);
        assert!(lhlo.lines.iter().any(offered), "{extension}: {lhlo}");
    }
    lmtp.expect("MAIL FROM:<sender@example.net>\r\n", 250, (2, 1, 0))
        .await;
    lmtp.expect("RCPT TO:<alice@example.org>\r\n", 250, (2, 1, 5))
        .await;
    lmtp.expect("RCPT TO:<bob@example.org>\r\n", 250, (2, 1, 5))
        .await;
    assert_eq!(lmtp.ask("DATA\r\n").await.code, 354);
    lmtp.send(&format!("{MESSAGE}.\r\n")).await;
    for _ in ["alice", "bob"] {
        let stored = lmtp.reply().await;
        assert_eq!(stored.code, 250, "{stored}");
    }
    lmtp.expect("QUIT\r\n", 221, (2, 0, 0)).await;
    let metrics = lmtp.metrics();
    assert!(
        metrics.contains("sealgate_recipients_total{outcome=\"delivered_plain\"} 2\n"),
        "{metrics}"
    );
    assert!(metrics.contains("sealgate_messages_total{outcome=\"accepted\"} 1\n"));
    for rcpt in ["alice@example.org", "bob@example.org"] {
        let stored = lmtp.maildir.only_message(rcpt);
        assert!(stored.ends_with(MESSAGE.as_bytes()), "{rcpt}");
    }
    lmtp.closed().await;
}

#[tokio::test]
async fn commands_out_of_sequence_and_over_the_limit_get_their_replies() {
    let mut lmtp = Client::start(&[("SEALGATE_MAX_RECIPIENTS", "1")]);
    lmtp.reply().await;
    lmtp.expect("MAIL FROM:<a@example.net>\r\n", 503, (5, 5, 1))
        .await;
    lmtp.expect("EHLO mx.test.example\r\n", 500, (5, 5, 1))
        .await;
    lmtp.ask("LHLO mx.test.example\r\n").await;
    lmtp.expect("RCPT TO:<a@example.org>\r\n", 503, (5, 5, 1))
        .await;
    lmtp.expect("DATA\r\n", 503, (5, 5, 1)).await;
    lmtp.expect("VRFY a\r\n", 252, (2, 5, 0)).await;
    lmtp.expect("STARTTLS\r\n", 502, (5, 5, 1)).await;
    lmtp.expect("MAIL FROM:<a@example.net>\r\n", 250, (2, 1, 0))
        .await;
    lmtp.expect("MAIL FROM:<a@example.net>\r\n", 503, (5, 5, 1))
        .await;
    lmtp.expect("DATA\r\n", 503, (5, 5, 1)).await;
    lmtp.expect("RCPT TO:<a@example.org>\r\n", 250, (2, 1, 5))
        .await;
    let over = lmtp
        .expect("RCPT TO:<b@example.org>\r\n", 452, (4, 5, 3))
        .await;
    assert_eq!(over.lines, ["Too many recipients"]);
    lmtp.expect("RSET\r\n", 250, (2, 0, 0)).await;
    assert!(
        lmtp.metrics()
            .contains("sealgate_recipients_total{outcome=\"tempfailed\"} 1\n")
    );
    lmtp.expect("QUIT\r\n", 221, (2, 0, 0)).await;
    lmtp.closed().await;
}

/// An idle client is told `421 4.4.2` after SEALGATE_IDLE_TIMEOUT, however long that is: time
/// is paused, and the runtime skips ahead when every task waits.
#[tokio::test]
async fn an_idle_client_times_out() {
    tokio::time::pause();
    let mut lmtp = Client::start(&[("SEALGATE_IDLE_TIMEOUT", "300s")]);
    lmtp.reply().await;
    lmtp.ask("LHLO mx.test.example\r\n").await;
    let started = tokio::time::Instant::now();
    let timeout = lmtp.reply().await;
    assert_eq!(
        (timeout.code, timeout.enhanced),
        (421, Some(EnhancedCode::new(4, 4, 2)))
    );
    assert_eq!(
        timeout.lines,
        ["lmtp.test.example Timeout, closing connection"]
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(300));
    lmtp.closed().await;
}

/// Shutdown closes an idle session with `421 4.3.2`, and lets an open transaction finish first.
#[tokio::test]
async fn shutdown_closes_idle_sessions_and_lets_a_transaction_finish() {
    let mut idle = Client::start(&[]);
    idle.reply().await;
    idle.stop.send(true).unwrap();
    let bye = idle.reply().await;
    assert_eq!(
        (bye.code, bye.enhanced),
        (421, Some(EnhancedCode::new(4, 3, 2)))
    );
    idle.closed().await;

    let mut busy = Client::start(&[]);
    busy.reply().await;
    busy.ask("LHLO mx.test.example\r\n").await;
    busy.expect("MAIL FROM:<a@example.net>\r\n", 250, (2, 1, 0))
        .await;
    busy.stop.send(true).unwrap();
    busy.expect("RCPT TO:<a@example.org>\r\n", 250, (2, 1, 5))
        .await;
    assert_eq!(busy.ask("DATA\r\n").await.code, 354);
    busy.send(&format!("{MESSAGE}.\r\n")).await;
    assert_eq!(busy.reply().await.code, 250);
    let bye = busy.reply().await;
    assert_eq!(bye.code, 421, "{bye}");
    busy.closed().await;
}
