//! The milter in-process: sessions over an in-memory duplex against a context built as
//! `app::run` builds it.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use sealgate_protocol::milter::consts::{
    SMFIC_HELO, SMFIC_MAIL, SMFIC_RCPT, SMFIF_ADDHDRS, SMFIF_CHGHDRS, SMFIF_SETSYMLIST,
    SMFIM_ENVFROM, SMFIM_ENVRCPT, SMFIP_NOBODY, SMFIP_NODATA, SMFIP_NOEOH, SMFIP_NOHDRS,
    SMFIP_NOUNKNOWN, SMFIP_NR_HDR,
};
use sealgate_protocol::milter::{Command, Family, ResponseDecoder};
use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::serialize::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::negotiate::{MAIL_MACROS, RCPT_MACROS};
use super::session::{bare_address, reply_code};
use super::*;
use crate::pipeline::{Envelope, Recipient};
use crate::testing;

const SECURE: &str = "user@secure.example.org";
const NORMAL: &str = "other@example.org";
const EXPIRED: &str = "expired@example.org";
const PLAINTEXT_REFUSAL: &str = "5.7.1 <user@secure.example.org>: TLS required for this \
    address; no TLS evidence from a trusted MTA";

/// A context like `sealgate::run` builds, from `vars` (the secure domains are set), with
/// a key store holding an expired certificate for [`EXPIRED`].
fn test_context(vars: &[(&str, &str)]) -> (Arc<Context>, tempfile::TempDir) {
    test_context_with(vars, true)
}

/// `with_manifest: false`: a store without manifest (the key store cannot vouch for it).
fn test_context_with(
    vars: &[(&str, &str)],
    with_manifest: bool,
) -> (Arc<Context>, tempfile::TempDir) {
    let mut all: BTreeMap<String, String> = [
        (
            "SEALGATE_SECURE_DOMAINS",
            "secure.example.org=example.org,vault.example.net",
        ),
        ("SEALGATE_TRUSTED_MTA", "mx.test.example"),
        ("SEALGATE_MILTER_LISTEN", "127.0.0.1:0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let dir = tempfile::tempdir().unwrap();
    // A store as `sealgate keys` makes it (with its manifest), then a planted entry.
    if with_manifest {
        crate::store::certd::init(dir.path()).unwrap();
    }
    plant_expired(dir.path(), EXPIRED);
    let vars: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    (testing::context(&vars, dir.path()).milter(), dir)
}

fn plant_expired(keys: &std::path::Path, address: &str) {
    let two_years = Duration::from_secs(2 * 365 * 24 * 3600);
    let (cert, _) = CertBuilder::new()
        .add_userid(format!("<{address}>"))
        .set_cipher_suite(CipherSuite::Cv25519)
        .add_transport_encryption_subkey()
        .set_creation_time(SystemTime::now() - two_years)
        .set_validity_period(Duration::from_secs(365 * 24 * 3600))
        .generate()
        .unwrap();
    let fpr = cert.fingerprint().to_hex().to_lowercase();
    let dir = keys.join(&fpr[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = Vec::new();
    cert.serialize(&mut bytes).unwrap();
    std::fs::write(dir.join(&fpr[2..]), bytes).unwrap();
}

/// The MTA's end of an in-memory connection to a running session.
struct Mta {
    io: DuplexStream,
    input: BytesMut,
    decoder: ResponseDecoder,
    session: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Mta {
    fn start(context: &Arc<Context>) -> Mta {
        let (io, server) = duplex(1 << 20);
        let (stop, shutdown) = watch::channel(false);
        let session = tokio::spawn(serve(server, "test".into(), Arc::clone(context), shutdown));
        Mta {
            io,
            input: BytesMut::new(),
            decoder: ResponseDecoder::new(1 << 20),
            session,
            stop,
        }
    }

    async fn send(&mut self, command: Command) {
        let mut out = BytesMut::new();
        command.encode(&mut out);
        self.io.write_all(&out).await.unwrap();
    }

    async fn response(&mut self) -> Response {
        loop {
            if let Some(response) = self.decoder.decode(&mut self.input).unwrap() {
                return response;
            }
            let n = timeout(Duration::from_secs(10), self.io.read_buf(&mut self.input))
                .await
                .expect("a response within 10 s")
                .unwrap();
            assert!(n > 0, "the session closed");
        }
    }

    async fn ask(&mut self, command: Command) -> Response {
        self.send(command).await;
        self.response().await
    }

    async fn ok(&mut self, command: Command) {
        let what = format!("{command:?}");
        assert_eq!(self.ask(command).await, Response::Continue, "{what}");
    }

    /// End of message: the header edits the milter answers with, up to its final Continue.
    async fn end_of_message_edits(&mut self) -> Vec<Response> {
        self.send(Command::EndOfMessage).await;
        let mut edits = Vec::new();
        loop {
            match self.response().await {
                Response::Continue => return edits,
                edit => edits.push(edit),
            }
        }
    }

    /// The edit that deletes the `index`th field called `name`.
    fn deletion(index: u32, name: &str) -> Response {
        Response::ChangeHeader {
            index,
            name: name.into(),
            value: String::new(),
        }
    }

    /// The session ended: EOF, and the task finished.
    async fn closed(mut self) {
        let mut rest = Vec::new();
        timeout(Duration::from_secs(10), self.io.read_to_end(&mut rest))
            .await
            .expect("the session closes within 10 s")
            .unwrap();
        assert!(rest.is_empty(), "unexpected output {rest:?}");
        timeout(Duration::from_secs(10), self.session)
            .await
            .unwrap()
            .unwrap();
    }

    async fn negotiate(&mut self) -> Response {
        self.ask(Command::OptNeg {
            version: 6,
            actions: 0x1FF,
            protocol: 0x1F_FFFF,
        })
        .await
    }

    /// OPTNEG, CONNECT and HELO, with TLS macros at HELO when `tls` names a version.
    async fn open(&mut self, tls: Option<&str>) {
        assert!(matches!(self.negotiate().await, Response::OptNeg { .. }));
        self.ok(Command::Connect {
            hostname: "client.example.net".into(),
            family: Family::Inet,
            port: Some(40000),
            address: Some("192.0.2.10".into()),
        })
        .await;
        self.helo(tls).await;
    }

    async fn helo(&mut self, tls: Option<&str>) {
        if let Some(version) = tls {
            self.send(Command::Macros {
                stage: SMFIC_HELO,
                macros: vec![
                    ("tls_version".into(), version.into()),
                    ("cipher".into(), "TLS_AES_256_GCM_SHA384".into()),
                    ("cipher_bits".into(), "256".into()),
                ],
            })
            .await;
        }
        self.ok(Command::Helo {
            name: "client.example.net".into(),
        })
        .await;
    }

    async fn mail(&mut self, macros: &[(&str, &str)]) {
        if !macros.is_empty() {
            self.send(Command::Macros {
                stage: SMFIC_MAIL,
                macros: macros
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            })
            .await;
        }
        self.ok(Command::Mail {
            args: vec!["<sender@example.net>".into(), "SIZE=100".into()],
        })
        .await;
    }

    async fn rcpt(&mut self, address: &str) -> Response {
        self.ask(Command::Rcpt {
            args: vec![format!("<{address}>")],
        })
        .await
    }
}

fn refusal(code: u16, text: &str) -> Response {
    Response::ReplyCode {
        code,
        text: text.into(),
    }
}

#[tokio::test]
async fn negotiation_asks_for_what_it_uses() {
    let (context, _keys) = test_context(&[]);
    let mut mta = Mta::start(&context);
    let Response::OptNeg {
        version,
        actions,
        protocol,
        macros,
    } = mta.negotiate().await
    else {
        panic!("no OPTNEG reply");
    };
    assert_eq!(version, 6);
    assert_eq!(actions, SMFIF_CHGHDRS | SMFIF_SETSYMLIST);
    assert_eq!(protocol, SMFIP_NOBODY | SMFIP_NOUNKNOWN | SMFIP_NODATA);
    assert_eq!(
        macros,
        vec![
            (SMFIM_ENVFROM, MAIL_MACROS.to_string()),
            (SMFIM_ENVRCPT, RCPT_MACROS.to_string())
        ]
    );
    mta.send(Command::Quit).await;
    mta.closed().await;

    // An older MTA that offers little: we answer its version, ask for no more than it
    // offers, and request no macros without SETSYMLIST.
    let mut mta = Mta::start(&context);
    let reply = mta
        .ask(Command::OptNeg {
            version: 2,
            actions: SMFIF_ADDHDRS | SMFIF_CHGHDRS,
            protocol: SMFIP_NOBODY | SMFIP_NR_HDR,
        })
        .await;
    assert_eq!(
        reply,
        Response::OptNeg {
            version: 2,
            actions: SMFIF_CHGHDRS,
            protocol: SMFIP_NOBODY,
            macros: Vec::new(),
        }
    );

    // No scrubbing: header rights and headers are still wanted, for the marker.
    let (context, _keys) = test_context(&[("SEALGATE_SCRUB", "off")]);
    let mut mta = Mta::start(&context);
    let Response::OptNeg {
        actions, protocol, ..
    } = mta.negotiate().await
    else {
        panic!("no OPTNEG reply");
    };
    assert_eq!(actions, SMFIF_SETSYMLIST | SMFIF_CHGHDRS);
    assert_eq!(protocol & (SMFIP_NOHDRS | SMFIP_NOEOH), 0);
}

#[tokio::test]
async fn tls_is_connection_state_and_survives_messages_but_not_quit_nc() {
    let (context, _keys) = test_context(&[]);
    let mut mta = Mta::start(&context);
    mta.open(None).await;
    mta.mail(&[]).await;
    assert_eq!(mta.rcpt(SECURE).await, refusal(550, PLAINTEXT_REFUSAL));
    assert_eq!(mta.rcpt(NORMAL).await, Response::Continue);
    mta.send(Command::Abort).await;
    // STARTTLS, then the second EHLO with the TLS macros.
    mta.helo(Some("TLSv1.3")).await;
    mta.mail(&[]).await;
    assert_eq!(mta.rcpt(SECURE).await, Response::Continue);
    mta.send(Command::Abort).await;
    // ABORT drops the message only: the next one is still TLS.
    mta.mail(&[]).await;
    assert_eq!(mta.rcpt(SECURE).await, Response::Continue);
    mta.send(Command::Abort).await;
    // QUIT_NC: a new SMTP client on the same milter connection, without TLS.
    mta.send(Command::QuitNewConnection).await;
    mta.ok(Command::Connect {
        hostname: "[192.0.2.99]".into(),
        family: Family::Inet,
        port: Some(40001),
        address: Some("192.0.2.99".into()),
    })
    .await;
    mta.helo(None).await;
    mta.mail(&[]).await;
    assert_eq!(mta.rcpt(SECURE).await, refusal(550, PLAINTEXT_REFUSAL));
    mta.send(Command::Quit).await;
    mta.closed().await;
}

#[tokio::test]
async fn tls_macros_at_mail_or_rcpt_count_and_the_minimum_applies() {
    let (context, _keys) = test_context(&[("SEALGATE_TLS_MIN_VERSION", "TLSv1.2")]);
    let mut mta = Mta::start(&context);
    mta.open(None).await;
    // No second EHLO after STARTTLS: the macros come with MAIL.
    mta.mail(&[
        ("tls_version", "TLSv1.2"),
        ("cipher", "ECDHE-RSA-AES256-GCM-SHA384"),
    ])
    .await;
    assert_eq!(mta.rcpt(SECURE).await, Response::Continue);
    mta.send(Command::Abort).await;
    mta.send(Command::QuitNewConnection).await;
    mta.ok(Command::Connect {
        hostname: "old.example.net".into(),
        family: Family::Inet6,
        port: Some(25),
        address: Some("2001:db8::1".into()),
    })
    .await;
    mta.helo(None).await;
    mta.mail(&[]).await;
    mta.send(Command::Macros {
        stage: SMFIC_RCPT,
        macros: vec![("tls_version".into(), "TLSv1.1".into())],
    })
    .await;
    assert_eq!(
        mta.rcpt("boss@Vault.example.net").await,
        refusal(
            550,
            "5.7.1 <boss@Vault.example.net>: TLS required for this address; received \
             with TLSv1.1, at least TLSv1.2 required"
        )
    );
}

#[tokio::test]
async fn unknown_key_state_tempfails_at_rcpt_like_lmtp() {
    // The store loses its manifest (a volume that did not mount): whether a recipient
    // has a key is unknown, and the milter tempfails it as LMTP would.
    let (context, _keys) = test_context_with(&[("SEALGATE_UNUSABLE_KEY", "plaintext")], false);
    let mut mta = Mta::start(&context);
    mta.open(Some("TLSv1.3")).await;
    mta.mail(&[]).await;
    let address = "nokey@example.org";
    let mut rcpt = Recipient::new(address.to_string());
    let lmtp = context
        .pipeline
        .check_recipient(&Envelope::default(), &mut rcpt)
        .unwrap_err()
        .reply;
    assert_eq!(lmtp.code, 451);
    let reply = mta.rcpt(address).await;
    assert_eq!(reply, reply_code(&lmtp));
    let Response::ReplyCode { text, .. } = reply else {
        unreachable!()
    };
    assert!(text.starts_with("4.7.0 "), "{text}");
    assert!(text.contains(crate::store::manifest::MANIFEST), "{text}");
}

#[tokio::test]
async fn unusable_key_follows_the_policy_with_the_lmtp_text() {
    for (policy, expected) in [
        ("tempfail", Some(450)),
        ("reject", Some(550)),
        ("plaintext", None),
    ] {
        let (context, _keys) = test_context(&[("SEALGATE_UNUSABLE_KEY", policy)]);
        let mut mta = Mta::start(&context);
        mta.open(Some("TLSv1.3")).await;
        mta.mail(&[]).await;
        for address in [EXPIRED, "expired@secure.example.org"] {
            // What an LMTP RCPT gets for the same recipient.
            let mut rcpt = Recipient::new(address.to_string());
            let lmtp = context
                .pipeline
                .check_recipient(&Envelope::default(), &mut rcpt);
            let reply = mta.rcpt(address).await;
            match expected {
                Some(code) => {
                    let lmtp = lmtp.unwrap_err().reply;
                    assert_eq!(lmtp.code, code);
                    assert_eq!(reply, reply_code(&lmtp), "{policy} {address}");
                    let Response::ReplyCode { text, .. } = reply else {
                        unreachable!()
                    };
                    assert!(text.contains("OpenPGP key is unusable"), "{text}");
                }
                None => assert_eq!(reply, Response::Continue, "{policy} {address}"),
            }
        }
    }
}

#[tokio::test]
async fn authenticated_mail_loses_listed_headers_last_occurrence_first() {
    let (context, _keys) = test_context(&[]);
    let mut mta = Mta::start(&context);
    mta.open(Some("TLSv1.3")).await;
    mta.mail(&[("auth_authen", "alice"), ("i", "4ABC")]).await;
    assert_eq!(mta.rcpt(NORMAL).await, Response::Continue);
    for (name, value) in [
        ("X-Mailer", "one"),
        ("Subject", "hi"),
        ("User-Agent", "two"),
        ("x-mailer", "three"),
        ("X-Mailer-Info", "stays"),
    ] {
        mta.ok(Command::Header {
            name: name.into(),
            value: value.into(),
        })
        .await;
    }
    mta.ok(Command::EndOfHeaders).await;
    mta.ok(Command::Body(bytes::Bytes::from_static(b"body\r\n")))
        .await;
    let edits = mta.end_of_message_edits().await;
    let delete = Mta::deletion;
    assert_eq!(
        edits,
        vec![
            delete(2, "x-mailer"),
            delete(1, "User-Agent"),
            delete(1, "X-Mailer")
        ]
    );

    // The next message of the connection, without {auth_authen}: untouched.
    mta.mail(&[]).await;
    assert_eq!(mta.rcpt(NORMAL).await, Response::Continue);
    mta.ok(Command::Header {
        name: "X-Mailer".into(),
        value: "kept".into(),
    })
    .await;
    mta.ok(Command::EndOfHeaders).await;
    assert_eq!(mta.ask(Command::EndOfMessage).await, Response::Continue);

    // SEALGATE_SCRUB=all scrubs without authentication; off never does.
    for (mode, deleted) in [("all", true), ("off", false)] {
        let (context, _keys) = test_context(&[("SEALGATE_SCRUB", mode)]);
        let mut mta = Mta::start(&context);
        mta.open(None).await;
        mta.mail(&[("auth_authen", "alice")]).await;
        mta.ok(Command::Header {
            name: "User-Agent".into(),
            value: "x".into(),
        })
        .await;
        mta.send(Command::EndOfMessage).await;
        let first = mta.response().await;
        assert_eq!(
            first == delete(1, "User-Agent"),
            deleted,
            "{mode}: {first:?}"
        );
    }
}

/// A sender's `X-Sealgate-Encrypted` goes from every message, scrubbed or not.
#[tokio::test]
async fn a_senders_encryption_marker_is_deleted_in_every_mode() {
    for mode in ["off", "authenticated", "all"] {
        let (context, _keys) = test_context(&[("SEALGATE_SCRUB", mode)]);
        let mut mta = Mta::start(&context);
        mta.open(None).await;
        mta.mail(&[]).await;
        assert_eq!(mta.rcpt(NORMAL).await, Response::Continue);
        for (name, value) in [
            ("X-Sealgate-Encrypted", "FORGED"),
            ("Subject", "hi"),
            ("x-sealgate-encrypted", "again"),
        ] {
            mta.ok(Command::Header {
                name: name.into(),
                value: value.into(),
            })
            .await;
        }
        mta.ok(Command::EndOfHeaders).await;
        let edits = mta.end_of_message_edits().await;
        let delete = Mta::deletion;
        assert_eq!(
            edits,
            vec![
                delete(2, "x-sealgate-encrypted"),
                delete(1, "X-Sealgate-Encrypted")
            ],
            "{mode}"
        );
    }
}

#[tokio::test]
async fn out_of_order_packets_end_the_session() {
    let (context, _keys) = test_context(&[]);
    let header = || Command::Header {
        name: "Subject".into(),
        value: "x".into(),
    };
    let mail = || Command::Mail {
        args: vec!["<a@example.net>".into()],
    };
    let rcpt = || Command::Rcpt {
        args: vec![format!("<{NORMAL}>")],
    };
    // (commands answered with CONTINUE, then the offending one)
    let cases: Vec<(Vec<Command>, Command)> = vec![
        (vec![], rcpt()),
        (vec![], Command::EndOfMessage),
        (vec![mail()], mail()),
        (vec![mail(), Command::EndOfHeaders], header()),
        (vec![mail(), Command::EndOfHeaders], rcpt()),
        (vec![mail(), header()], Command::Data),
        (
            vec![Command::Connect {
                hostname: "a".into(),
                family: Family::Unknown,
                port: None,
                address: None,
            }],
            Command::Connect {
                hostname: "b".into(),
                family: Family::Unknown,
                port: None,
                address: None,
            },
        ),
    ];
    for (before, offending) in cases {
        let what = format!("{before:?} then {offending:?}");
        let mut mta = Mta::start(&context);
        assert!(matches!(mta.negotiate().await, Response::OptNeg { .. }));
        for command in before {
            mta.ok(command).await;
        }
        mta.send(offending).await;
        eprintln!("{what}: expecting the session to end");
        mta.closed().await;
    }
    // Before OPTNEG, and a second OPTNEG.
    let mut mta = Mta::start(&context);
    mta.send(rcpt()).await;
    mta.closed().await;
    let mut mta = Mta::start(&context);
    mta.negotiate().await;
    mta.send(Command::OptNeg {
        version: 6,
        actions: 0,
        protocol: 0,
    })
    .await;
    mta.closed().await;
}

#[tokio::test]
async fn malformed_and_oversized_packets_end_the_session() {
    let (context, _keys) = test_context(&[("SEALGATE_MILTER_MAX_FRAME", "64K")]);
    for bytes in [
        vec![0, 0, 0, 0],
        vec![0xff, 0xff, 0xff, 0xff],
        vec![0, 1, 0, 1, b'B'],
        vec![0, 0, 0, 1, b'Z'],
        vec![0, 0, 0, 2, b'H', b'x'],
    ] {
        let mut mta = Mta::start(&context);
        mta.negotiate().await;
        mta.io.write_all(&bytes).await.unwrap();
        mta.closed().await;
    }
    // A truncated packet, then EOF.
    let mut mta = Mta::start(&context);
    mta.negotiate().await;
    mta.io.write_all(&[0, 0, 0, 9, b'H', b'x']).await.unwrap();
    mta.io.shutdown().await.unwrap();
    mta.closed().await;
}

#[tokio::test]
async fn silence_times_out() {
    let (context, _keys) = test_context(&[("SEALGATE_MILTER_TIMEOUT", "50ms")]);
    let mut mta = Mta::start(&context);
    mta.open(None).await;
    mta.closed().await;
}

#[tokio::test]
async fn shutdown_closes_idle_sessions_and_lets_a_message_finish() {
    let (context, _keys) = test_context(&[]);
    let idle = Mta::start(&context);
    idle.stop.send(true).unwrap();
    idle.closed().await;

    let mut busy = Mta::start(&context);
    busy.open(None).await;
    busy.mail(&[]).await;
    busy.stop.send(true).unwrap();
    assert_eq!(busy.rcpt(NORMAL).await, Response::Continue);
    busy.ok(Command::EndOfHeaders).await;
    assert_eq!(busy.ask(Command::EndOfMessage).await, Response::Continue);
    busy.closed().await;
}

#[test]
fn addresses_lose_brackets_and_routes() {
    let cases = [
        ("<user@example.org>", "user@example.org"),
        ("user@example.org", "user@example.org"),
        (
            "<@relay.example,@b.example:user@example.org>",
            "user@example.org",
        ),
        ("<>", ""),
        ("<\"a b\"@example.org>", "\"a b\"@example.org"),
    ];
    for (arg, expected) in cases {
        assert_eq!(bare_address(arg), expected, "{arg}");
    }
}
