//! The LMTP endpoint against a raw client: commands, replies, limits, bad input, smuggling,
//! timeouts, connection limit and graceful shutdown. sealgate runs as the real binary,
//! delivering into a Maildir in a temporary directory.

use std::path::Path;
use std::time::Duration;

use testkit::lmtp::{Client, assert_codes};
use testkit::{Maildir, Sealgate};

struct Server {
    sealgate: Sealgate,
    mail: Maildir,
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Server {
        let mail = Maildir::new();
        let next_hop = mail.next_hop();
        let mut all = vec![("SEALGATE_NEXT_HOP", next_hop.as_str())];
        all.extend_from_slice(env);
        Server {
            sealgate: Sealgate::spawn(&all),
            mail,
        }
    }

    fn client(&self) -> Client {
        Client::connect(self.sealgate.port())
    }

    /// The messages stored for `rcpt`, in file name order.
    fn stored(&self, rcpt: &str) -> Vec<Vec<u8>> {
        self.mail.messages(rcpt)
    }
}

const MESSAGE: &[u8] = b"From: a@example.net\r\nSubject: hi\r\n\r\nhello\r\n";

#[test]
fn lhlo_announces_the_extensions() {
    let server = Server::start(&[("SEALGATE_MAX_MESSAGE_SIZE", "20M")]);
    let mut client = server.client();
    let reply = client.expect("LHLO mx.example.org", "250");
    for keyword in [
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "SIZE 20971520",
    ] {
        assert!(
            reply.lines.iter().any(|l| l == keyword),
            "{keyword} missing from {reply:?}"
        );
    }
    assert!(
        !reply
            .lines
            .iter()
            .any(|l| l.starts_with("CHUNKING") || l == "DSN")
    );
}

#[test]
fn helo_and_ehlo_are_refused_in_lmtp() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.expect("HELO x.example", "500 5.5.1");
    client.expect("EHLO x.example", "500 5.5.1");
    client.expect("LHLO x.example", "250");
}

#[test]
fn command_sequence_and_syntax_errors() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.expect("MAIL FROM:<a@example.net>", "503 5.5.1");
    client.expect("LHLO x.example", "250");
    client.expect("RCPT TO:<b@example.org>", "503 5.5.1");
    client.expect("DATA", "503 5.5.1");
    client.expect("FROBNICATE", "500 5.5.1");
    client.expect("MAIL FROM:a@example.net", "501 5.5.4");
    client.expect("MAIL FROM:<a@example.net> BODY=BINARYMIME", "501 5.5.4");
    client.expect(
        "MAIL FROM:<a@example.net> SIZE=12 BODY=8BITMIME",
        "250 2.1.0",
    );
    client.expect("MAIL FROM:<c@example.net>", "503 5.5.1");
    client.expect("RCPT TO:<>", "501 5.5.4");
    client.expect("DATA", "503 5.5.1");
    client.expect("VRFY someone", "252 2.5.0");
    client.expect("NOOP", "250 2.0.0");
    client.expect("RSET", "250 2.0.0");
    client.expect("RCPT TO:<b@example.org>", "503 5.5.1");
    client.expect("BDAT 10 LAST", "502 5.5.1");
    client.expect("STARTTLS", "502 5.5.1");
    client.expect("QUIT", "221 2.0.0");
    assert!(client.is_closed());
}

#[test]
fn one_reply_per_recipient_in_order_with_duplicates() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let replies = client.deliver(
        "a@example.net",
        &["b@example.org", "c@example.org", "b@example.org"],
        MESSAGE,
    );
    assert_eq!(replies.len(), 3);
    for reply in &replies {
        assert_codes(reply, "250 2.0.0", "final reply");
    }
    // The duplicate is acknowledged twice but stored once.
    assert_eq!(server.stored("b@example.org").len(), 1);
    assert_eq!(server.stored("c@example.org").len(), 1);
    let stored = &server.stored("c@example.org")[0];
    assert!(stored.ends_with(MESSAGE));
    assert!(stored.starts_with(b"Return-Path: <a@example.net>\r\nDelivered-To: c@example.org\r\n"));
}

#[test]
fn several_transactions_per_connection_and_pipelining() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.expect("LHLO x.example", "250");
    // Everything in one write, as Postfix pipelines it.
    let mut batch = Vec::new();
    for n in 0..5 {
        batch.extend_from_slice(
            format!("MAIL FROM:<a@example.net>\r\nRCPT TO:<p{n}@example.org>\r\nDATA\r\n")
                .as_bytes(),
        );
        batch.extend_from_slice(format!("Subject: {n}\r\n\r\nbody {n}\r\n.\r\n").as_bytes());
    }
    batch.extend_from_slice(b"QUIT\r\n");
    client.send(&batch);
    for n in 0..5 {
        assert_codes(&client.reply(), "250 2.1.0", "MAIL");
        assert_codes(&client.reply(), "250 2.1.5", "RCPT");
        assert_codes(&client.reply(), "354", "DATA");
        assert_codes(&client.reply(), "250 2.0.0", "end of data");
        let stored = server.stored(&format!("p{n}@example.org"));
        assert_eq!(stored.len(), 1);
        assert!(stored[0].ends_with(format!("body {n}\r\n").as_bytes()));
    }
    assert_codes(&client.reply(), "221", "QUIT");
}

#[test]
fn dot_stuffing_and_first_line_dot() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let message = b".leading dot on the first line\r\n..two\r\n.\r\n\r\n";
    let replies = client.deliver("a@example.net", &["d@example.org"], message);
    assert_codes(&replies[0], "250", "final");
    assert!(server.stored("d@example.org")[0].ends_with(message));
}

#[test]
fn recipient_limit() {
    let server = Server::start(&[("SEALGATE_MAX_RECIPIENTS", "2")]);
    let mut client = server.client();
    client.expect("LHLO x.example", "250");
    client.expect("MAIL FROM:<a@example.net>", "250");
    client.expect("RCPT TO:<r1@example.org>", "250 2.1.5");
    client.expect("RCPT TO:<r2@example.org>", "250 2.1.5");
    client.expect("RCPT TO:<r3@example.org>", "452 4.5.3");
    client.expect("DATA", "354");
    client.send_message(MESSAGE);
    // Exactly two replies: one per accepted recipient.
    assert_codes(&client.reply(), "250", "r1");
    assert_codes(&client.reply(), "250", "r2");
    client.expect("NOOP", "250");
    assert!(server.stored("r3@example.org").is_empty());
}

#[test]
fn line_length_limit() {
    let server = Server::start(&[("SEALGATE_MAX_LINE_LENGTH", "512")]);
    let mut client = server.client();
    client.expect("LHLO x.example", "250");
    let long = format!("MAIL FROM:<{}@example.net>", "a".repeat(600));
    client.expect(&long, "500 5.5.2");
    // A line of a megabyte is discarded without harm, and the session goes on.
    client.send(&vec![b'x'; 1 << 20]);
    client.send(b"\r\n");
    assert_codes(&client.reply(), "500 5.5.2", "1 MiB line");
    client.expect("NOOP", "250");
}

#[test]
fn size_parameter_over_the_limit() {
    let server = Server::start(&[("SEALGATE_MAX_MESSAGE_SIZE", "1000")]);
    let mut client = server.client();
    client.expect("LHLO x.example", "250");
    client.expect("MAIL FROM:<a@example.net> SIZE=1001", "552 5.3.4");
    client.expect("MAIL FROM:<a@example.net> SIZE=1000", "250");
}

#[test]
fn oversize_message_is_drained_then_refused() {
    let server = Server::start(&[("SEALGATE_MAX_MESSAGE_SIZE", "10K")]);
    let mut client = server.client();
    client.expect("LHLO x.example", "250");
    client.expect("MAIL FROM:<a@example.net>", "250");
    client.expect("RCPT TO:<big@example.org>", "250");
    client.expect("RCPT TO:<big2@example.org>", "250");
    client.expect("DATA", "354");
    let mut message = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..2000 {
        message.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    client.send_message(&message);
    assert_codes(&client.reply(), "552 5.3.4", "first recipient");
    assert_codes(&client.reply(), "552 5.3.4", "second recipient");
    // The session survives and nothing was stored, not even a temporary file.
    client.expect("NOOP", "250");
    assert!(server.stored("big@example.org").is_empty());
    assert!(server.mail.tmp_is_empty("big@example.org"));
}

#[test]
fn oversize_header_block_is_refused() {
    let server = Server::start(&[("SEALGATE_MAX_HEADER_SIZE", "4K")]);
    let mut client = server.client();
    let mut message = Vec::new();
    for n in 0..200 {
        message.extend_from_slice(format!("X-Filler-{n}: {}\r\n", "y".repeat(40)).as_bytes());
    }
    message.extend_from_slice(b"\r\nbody\r\n");
    let replies = client.deliver("a@example.net", &["h@example.org"], &message);
    assert_codes(&replies[0], "552 5.3.4", "header block");
    assert!(server.stored("h@example.org").is_empty());
    // A header block just under the limit goes through.
    let replies = client.deliver("a@example.net", &["h@example.org"], MESSAGE);
    assert_codes(&replies[0], "250", "small header block");
}

/// Every published SMTP-smuggling end-of-data variant: none ends DATA, so the smuggled
/// commands are message content, and the message with its bare CR/LF is refused.
#[test]
fn smuggling_variants_are_refused_by_default() {
    let server = Server::start(&[]);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/smuggling");
    let mut cases = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus/smuggling") {
        let path = entry.expect("entry").path();
        let payload = std::fs::read(&path).expect("payload");
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let mut client = server.client();
        client.expect("LHLO x.example", "250");
        client.expect("MAIL FROM:<a@example.net>", "250");
        client.expect("RCPT TO:<victim@example.org>", "250");
        client.expect("DATA", "354");
        client.send(&payload);
        client.send(b"\r\n.\r\n");
        assert_codes(&client.reply(), "550 5.5.2", &name);
        // No reply for any smuggled command: the next reply is our NOOP's.
        assert_codes(&client.command("NOOP"), "250 2.0.0", &name);
        cases += 1;
    }
    assert!(cases >= 5, "only {cases} smuggling payloads found");
    assert!(server.stored("victim@example.org").is_empty());
    assert!(server.stored("evil@attacker.example").is_empty());
}

#[test]
fn smuggling_variants_under_normalize_stay_one_message() {
    let server = Server::start(&[("SEALGATE_BARE_NEWLINE", "normalize")]);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/smuggling");
    let mut cases = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus/smuggling") {
        let path = entry.expect("entry").path();
        let payload = std::fs::read(&path).expect("payload");
        let rcpt = format!("n{cases}@example.org");
        let mut client = server.client();
        client.expect("LHLO x.example", "250");
        client.expect("MAIL FROM:<a@example.net>", "250");
        client.expect(&format!("RCPT TO:<{rcpt}>"), "250");
        client.expect("DATA", "354");
        client.send(&payload);
        client.send(b"\r\n.\r\n");
        assert_codes(&client.reply(), "250", &path.display().to_string());
        assert_codes(&client.command("NOOP"), "250 2.0.0", "after");
        let stored = server.stored(&rcpt);
        assert_eq!(stored.len(), 1);
        let text = String::from_utf8_lossy(&stored[0]);
        // The smuggled transaction is content of this one message, with CRLF line ends only.
        assert!(text.contains("MAIL FROM:<evil@attacker.example>"), "{text}");
        assert!(!text.replace("\r\n", "").contains(['\r', '\n']), "{text:?}");
        cases += 1;
    }
    assert!(cases >= 5);
    assert!(server.stored("victim@example.org").is_empty());
}

#[test]
fn idle_timeout_closes_with_421() {
    let server = Server::start(&[("SEALGATE_IDLE_TIMEOUT", "1s")]);
    let mut client = server.client();
    client.expect("LHLO x.example", "250");
    let reply = client.reply();
    assert_codes(&reply, "421 4.4.2", "idle timeout");
    assert!(client.is_closed());
}

#[test]
fn data_timeout_aborts_the_transaction() {
    let server = Server::start(&[("SEALGATE_DATA_TIMEOUT", "1s")]);
    let mut client = server.client();
    client.expect("LHLO x.example", "250");
    client.expect("MAIL FROM:<a@example.net>", "250");
    client.expect("RCPT TO:<slow@example.org>", "250");
    client.expect("DATA", "354");
    client.send(b"Subject: never finished\r\n\r\npartial");
    assert_codes(&client.reply(), "421 4.4.2", "data timeout");
    assert!(client.is_closed());
    assert!(server.stored("slow@example.org").is_empty());
    assert!(
        server.mail.tmp_is_empty("slow@example.org"),
        "a partial message was left in tmp/"
    );
}

#[test]
fn peer_closing_mid_data_stores_nothing_and_server_goes_on() {
    let server = Server::start(&[]);
    {
        let mut client = server.client();
        client.expect("LHLO x.example", "250");
        client.expect("MAIL FROM:<a@example.net>", "250");
        client.expect("RCPT TO:<cut@example.org>", "250");
        client.expect("DATA", "354");
        client.send(b"Subject: cut\r\n\r\nhalf a message");
    }
    // The next session is served normally, and the cut message is nowhere.
    let mut client = server.client();
    let replies = client.deliver("a@example.net", &["whole@example.org"], MESSAGE);
    assert_codes(&replies[0], "250", "after a cut session");
    server
        .sealgate
        .wait_for_log("DATA interrupted", Duration::from_secs(10));
    assert!(server.stored("cut@example.org").is_empty());
    assert!(server.mail.tmp_is_empty("cut@example.org"));
}

#[test]
fn connection_limit_waits_before_accepting() {
    let server = Server::start(&[("SEALGATE_MAX_CONNECTIONS", "1")]);
    let mut first = server.client();
    first.expect("LHLO x.example", "250");
    // The second connection is queued by the kernel, not greeted, while the first is open.
    let mut second = Client::connect_raw(server.sealgate.port());
    first.expect("NOOP", "250");
    first.expect("QUIT", "221");
    let greeting = second.reply();
    assert_codes(&greeting, "220", "second connection after the first closed");
    second.expect("LHLO x.example", "250");
}

#[test]
fn sigterm_lets_the_open_transaction_finish() {
    let server = Server::start(&[]);
    let mut idle = server.client();
    idle.expect("LHLO idle.example", "250");
    let mut busy = server.client();
    busy.expect("LHLO busy.example", "250");
    busy.expect("MAIL FROM:<a@example.net>", "250");
    busy.expect("RCPT TO:<inflight@example.org>", "250");
    busy.expect("DATA", "354");
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n");

    let pid = server.sealgate.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    // The idle session is told at once.
    assert_codes(&idle.reply(), "421 4.3.2", "idle session on shutdown");
    // The busy one finishes its message, which is stored, then is closed.
    busy.send(b"second half\r\n.\r\n");
    assert_codes(&busy.reply(), "250 2.0.0", "in-flight message");
    assert_codes(&busy.reply(), "421 4.3.2", "after the transaction");
    let stored = server.stored("inflight@example.org");
    assert_eq!(stored.len(), 1);
    assert!(stored[0].ends_with(b"first half\r\nsecond half\r\n"));
    server
        .sealgate
        .wait_for_log("all sessions finished", Duration::from_secs(10));
}

#[test]
fn unix_socket_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("lmtp.sock");
    let listen = format!("unix:{}", socket.display());
    let next_hop = format!("maildir:{}", dir.path().join("mail").display());
    let sealgate = Sealgate::spawn(&[
        ("SEALGATE_LMTP_LISTEN", &listen),
        ("SEALGATE_LMTP_SOCKET_MODE", "0600"),
        ("SEALGATE_NEXT_HOP", &next_hop),
    ]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (ok, out) = testkit::peers::swaks(&[
        "--protocol",
        "LMTP",
        "--socket",
        socket.to_str().expect("utf-8 path"),
        "--to",
        "u@example.org",
        "--from",
        "a@example.net",
    ]);
    assert!(ok, "{out}");
    assert_eq!(
        testkit::maildir::messages(&dir.path().join("mail/u@example.org")).len(),
        1
    );
    drop(sealgate);
}

/// A listen address another process holds stops the start with EX_OSERR (71) and one line
/// naming the address, even with the logs off.
#[test]
fn an_address_in_use_stops_the_start_with_71() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().expect("bound address").to_string();
    let work = testkit::temp_dir("address-in-use-");
    testkit::sealgate::ensure_manifest(&work.path().join("keys"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .current_dir(work.path())
        .env("SEALGATE_LMTP_LISTEN", &listen)
        .env("SEALGATE_METRICS_LISTEN", "off")
        .env("SEALGATE_LOG", "off")
        .output()
        .expect("run sealgate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(71), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("sealgate: cannot listen on {listen}: ")),
        "{stderr}"
    );
    drop(taken);
}

#[test]
fn invalid_configuration_stops_before_binding() {
    let port = testkit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .env("SEALGATE_LMTP_LISTEN", &listen)
        .env("SEALGATE_NEXT_HOP", "carrier-pigeon:coop")
        .output()
        .expect("run sealgate");
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SEALGATE_NEXT_HOP"), "{stderr}");
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());

    let check = std::process::Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .arg("check-config")
        .env("SEALGATE_MAX_RECIPIENTS", "lots")
        .output()
        .expect("run sealgate");
    assert_eq!(check.status.code(), Some(78));
    // In a directory of its own, with a key store made by `sealgate keys init`.
    let work = testkit::temp_dir("check-config-");
    testkit::sealgate::ensure_manifest(&work.path().join("keys"));
    let good = std::process::Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .arg("check-config")
        .current_dir(work.path())
        .env("SEALGATE_MAX_RECIPIENTS", "7")
        .output()
        .expect("run sealgate");
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(stdout.contains("SEALGATE_MAX_RECIPIENTS=7\n"), "{stdout}");
    // Relative paths are shown resolved, as the service uses them.
    let mail = work.path().canonicalize().expect("canonical").join("mail");
    assert!(
        stdout.contains(&format!("SEALGATE_NEXT_HOP=maildir:{}\n", mail.display()))
            || stdout.contains(&format!(
                "SEALGATE_NEXT_HOP=maildir:{}\n",
                work.path().join("mail").display()
            )),
        "{stdout}"
    );
}
