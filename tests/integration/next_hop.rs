//! Next-hop failures end as the right reply to Postfix: the next hop's own 4xx/5xx relayed per
//! recipient, and 4xx for anything sealgate cannot finish (down, connection lost), so Postfix
//! keeps the message and retries. The next hop is Postfix's smtp-sink with fault options.

use std::process::{Child, Command, Stdio};

use testkit::lmtp::{Client, assert_codes};
use testkit::sealgate::Sealgate;

const MESSAGE: &[u8] = b"Subject: next hop\r\n\r\nbody\r\n";

/// A private smtp-sink, killed on drop.
struct Sink {
    child: Child,
    port: u16,
}

impl Sink {
    /// `smtp-sink [args] 127.0.0.1:PORT 10`, waited for until it accepts.
    fn start(args: &[&str]) -> Sink {
        let port = testkit::free_port();
        let child = Command::new(testkit::bin_path("smtp-sink"))
            .args(["-u", "postfix"])
            .args(args)
            .arg(format!("127.0.0.1:{port}"))
            .arg("10")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start smtp-sink");
        testkit::wait_for_port(port);
        Sink { child, port }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sealgate_to(next_hop: &str) -> Sealgate {
    Sealgate::spawn(&[
        ("SEALGATE_NEXT_HOP", next_hop),
        ("SEALGATE_NEXT_HOP_TIMEOUT", "20s"),
    ])
}

#[test]
fn next_hop_down_is_a_temporary_failure() {
    let closed = testkit::free_port();
    let sealgate = sealgate_to(&format!("lmtp:127.0.0.1:{closed}"));
    let mut client = Client::connect(sealgate.port());
    let replies = client.deliver(
        "a@example.net",
        &["x@example.org", "y@example.org"],
        MESSAGE,
    );
    for reply in &replies {
        assert_codes(reply, "451 4.4.1", "next hop down");
    }
    // The session is still usable.
    client.expect("NOOP", "250");
}

#[test]
fn lmtp_permanent_failure_at_end_of_data_is_relayed() {
    if !testkit::require("smtp-sink") {
        return;
    }
    let sink = Sink::start(&["-L", "-f", "."]);
    let sealgate = sealgate_to(&format!("lmtp:127.0.0.1:{}", sink.port));
    let mut client = Client::connect(sealgate.port());
    let replies = client.deliver(
        "a@example.net",
        &["x@example.org", "y@example.org"],
        MESSAGE,
    );
    for reply in &replies {
        assert_codes(reply, "500 5.3.0", "relayed hard failure");
        assert!(reply.text().contains("command failed"), "{reply}");
    }
}

#[test]
fn lmtp_temporary_failure_at_rcpt_is_relayed() {
    if !testkit::require("smtp-sink") {
        return;
    }
    let sink = Sink::start(&["-L", "-r", "RCPT"]);
    let sealgate = sealgate_to(&format!("lmtp:127.0.0.1:{}", sink.port));
    let mut client = Client::connect(sealgate.port());
    let replies = client.deliver("a@example.net", &["x@example.org"], MESSAGE);
    assert_codes(&replies[0], "450 4.3.0", "relayed soft failure");
    client.expect("NOOP", "250");
}

#[test]
fn next_hop_closing_before_its_reply_is_a_temporary_failure() {
    if !testkit::require("smtp-sink") {
        return;
    }
    let sink = Sink::start(&["-L", "-q", "."]);
    let sealgate = sealgate_to(&format!("lmtp:127.0.0.1:{}", sink.port));
    let mut client = Client::connect(sealgate.port());
    let replies = client.deliver("a@example.net", &["x@example.org"], MESSAGE);
    assert_codes(&replies[0], "451 4.4.2", "lost connection");
}

#[test]
fn lmtp_success_through_smtp_sink_with_pipelining() {
    if !testkit::require("smtp-sink") {
        return;
    }
    let sink = Sink::start(&["-L"]);
    let sealgate = sealgate_to(&format!("lmtp:127.0.0.1:{}", sink.port));
    let mut client = Client::connect(sealgate.port());
    // Several messages on one connection: the pooled next-hop connection is reused.
    for n in 0..5 {
        let rcpt = format!("p{n}@example.org");
        let replies = client.deliver("a@example.net", &[&rcpt, "q@example.org"], MESSAGE);
        for reply in &replies {
            assert_codes(reply, "250", "sink accepted");
        }
        client.expect("RSET", "250");
    }
}

#[test]
fn smtp_next_hop_gives_every_recipient_the_single_reply() {
    if !testkit::require("smtp-sink") {
        return;
    }
    let sink = Sink::start(&["-f", "."]);
    let sealgate = sealgate_to(&format!("smtp:127.0.0.1:{}", sink.port));
    let mut client = Client::connect(sealgate.port());
    let replies = client.deliver(
        "a@example.net",
        &["x@example.org", "y@example.org"],
        MESSAGE,
    );
    assert_eq!(replies.len(), 2);
    for reply in &replies {
        assert_codes(reply, "500 5.3.0", "SMTP reply for all");
    }
    let ok_sink = Sink::start(&[]);
    let sealgate = sealgate_to(&format!("smtp:127.0.0.1:{}", ok_sink.port));
    let mut client = Client::connect(sealgate.port());
    let replies = client.deliver(
        "a@example.net",
        &["x@example.org", "y@example.org"],
        MESSAGE,
    );
    for reply in &replies {
        assert_codes(reply, "250", "SMTP success for all");
    }
}
