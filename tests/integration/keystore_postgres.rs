//! The PostgreSQL key store against a real, private PostgreSQL server: migrations, imports in
//! one transaction, the index constraint, lookups kept current across hosts by NOTIFY, and
//! failing closed while the database is away.

use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

use sealgate::store::Lookup;
use sealgate::store::postgres::admin::{Admin, Imported};
use sealgate::store::postgres::{Location, PgError, PgKeyStore, schema};
use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;
use testkit::pgp::Gpg;
use testkit::postgres::{self, Postgres};

/// What a lookup said, in a comparable word.
fn word(lookup: &Lookup) -> String {
    match lookup {
        Lookup::None => "none".into(),
        Lookup::Usable(certs) => format!("usable {}", certs.len()),
        Lookup::Unusable { reason, .. } => format!("unusable {reason}"),
        Lookup::Unknown { reason } => format!("unknown: {reason}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn password_file(pg: &Postgres) -> std::path::PathBuf {
    let path = pg.dir.path().join("sealgate.pw");
    std::fs::write(&path, format!("{}\n", postgres::PASSWORD)).expect("write password file");
    path
}

fn location(pg: &Postgres) -> Location {
    Location::parse(&pg.url(), Some(&password_file(pg))).expect("valid URL")
}

/// A migrated database.
fn migrated() -> Option<Postgres> {
    if !postgres::require() {
        return None;
    }
    let pg = Postgres::start();
    let rt = runtime();
    rt.block_on(async {
        let mut admin = Admin::connect_unchecked(&location(&pg))
            .await
            .expect("connect");
        assert_eq!(admin.migrate().await.expect("migrate"), vec![1]);
        admin.close().await;
    });
    Some(pg)
}

fn cert_of(gpg: &Gpg, address: &str) -> Cert {
    gpg.generate(&format!("Test <{address}>"), "future-default", "default");
    Cert::from_bytes(&gpg.export(address)).expect("gpg's export parses")
}

fn judge(cert: &Cert) -> Option<String> {
    sealgate::openpgp::check(cert)
        .err()
        .map(|why| why.to_string())
}

async fn import(pg: &Postgres, cert: &Cert) {
    let mut admin = Admin::connect(&location(pg)).await.expect("connect");
    match admin
        .import(cert, "test@host", judge)
        .await
        .expect("import")
    {
        Imported::Stored(_) => {}
        other => panic!("not stored: {other:?}"),
    }
    admin.close().await;
}

/// Polls `store` until `address`'s answer is `want`, for up to `limit`; returns the time it
/// took, or panics with the last answer.
async fn answer_becomes(
    store: &PgKeyStore,
    address: &str,
    want: &str,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = word(&store.lookup_many(&[address]).await[0]);
        if got.starts_with(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{address}: still {got:?} after {limit:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn migrations_apply_once_and_the_service_refuses_unknown_schemas() {
    if !postgres::require() {
        return;
    }
    let pg = Postgres::start();
    let rt = runtime();
    rt.block_on(async {
        let location = location(&pg);
        let err = PgKeyStore::preflight(&location)
            .await
            .expect_err("no schema yet");
        assert!(
            err.to_string().contains("run `sealgate keys migrate`"),
            "{err}"
        );
        let mut admin = Admin::connect_unchecked(&location).await.expect("connect");
        assert_eq!(admin.migrate().await.expect("migrate"), vec![1]);
        assert_eq!(admin.migrate().await.expect("again"), Vec::<i32>::new());
        assert_eq!(
            admin.schema_version().await.expect("version"),
            Some(schema::CURRENT)
        );
        admin.close().await;
        PgKeyStore::preflight(&location)
            .await
            .expect("current schema");
    });
    pg.psql("INSERT INTO sealgate.schema_version (version) VALUES (99)");
    rt.block_on(async {
        let err = PgKeyStore::preflight(&location(&pg))
            .await
            .expect_err("newer schema");
        assert!(matches!(err, PgError::Schema(_)), "{err:?}");
        assert!(
            err.to_string().contains("newer than this sealgate knows"),
            "{err}"
        );
    });
}

#[test]
fn imported_keys_are_found_with_every_key_of_a_user() {
    let Some(pg) = migrated() else { return };
    let gpg = Gpg::new();
    let laptop = cert_of(&gpg, "nina@example.org");
    let gpg2 = Gpg::new();
    let phone = cert_of(&gpg2, "nina@example.org");
    let rt = runtime();
    rt.block_on(async {
        import(&pg, &laptop).await;
        import(&pg, &phone).await;
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let store = PgKeyStore::new(location(&pg), Duration::from_secs(300));
        store.start(shutdown);
        answer_becomes(
            &store,
            "Nina@Example.org",
            "usable 2",
            Duration::from_secs(10),
        )
        .await;
        // The subaddress falls back to the address; another address has no key.
        let answers = store
            .lookup_many(&["nina+lists@example.org", "otto@example.org"])
            .await;
        assert_eq!(word(&answers[0]), "usable 2");
        assert_eq!(word(&answers[1]), "none");
        let mut admin = Admin::connect(&location(&pg)).await.expect("connect");
        assert_eq!(
            admin
                .certificates_for("nina@example.org")
                .await
                .expect("show")
                .len(),
            2
        );
        // Removing one key leaves the other; the change reaches the running store.
        assert!(
            admin
                .remove(&phone.fingerprint().to_hex())
                .await
                .expect("remove")
        );
        assert!(
            !admin
                .remove(&phone.fingerprint().to_hex())
                .await
                .expect("again")
        );
        answer_becomes(
            &store,
            "nina@example.org",
            "usable 1",
            Duration::from_secs(1),
        )
        .await;
        // Re-importing the same certificate merges (no second row).
        match admin
            .import(&laptop, "test@host", judge)
            .await
            .expect("import")
        {
            Imported::Stored(_) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(admin.certificates().await.expect("list").len(), 1);
        admin.close().await;
    });
}

#[test]
fn a_key_imported_on_one_host_is_used_by_another_within_a_second() {
    let Some(pg) = migrated() else { return };
    let gpg = Gpg::new();
    let cert = cert_of(&gpg, "kai@example.org");
    let rt = runtime();
    rt.block_on(async {
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let host_b = PgKeyStore::new(location(&pg), Duration::from_secs(300));
        host_b.start(shutdown);
        // Host B has the negative answer cached and current.
        answer_becomes(&host_b, "kai@example.org", "none", Duration::from_secs(10)).await;
        let imported = Instant::now();
        import(&pg, &cert).await; // host A: `sealgate keys import`
        answer_becomes(
            &host_b,
            "kai@example.org",
            "usable 1",
            Duration::from_secs(1),
        )
        .await;
        assert!(imported.elapsed() < Duration::from_secs(2));
        assert!(
            host_b
                .counters
                .notifications
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
    });
}

#[test]
fn the_index_only_points_at_certificates_that_carry_the_address() {
    let Some(pg) = migrated() else { return };
    let gpg = Gpg::new();
    let cert = cert_of(&gpg, "lea@example.org");
    let fingerprint = cert.fingerprint().to_hex();
    let rt = runtime();
    rt.block_on(import(&pg, &cert));
    // A control panel pointing mallory's mail at lea's key is refused by the database.
    let (ok, out) = pg.try_psql(&format!(
        "INSERT INTO sealgate.addresses (address, fingerprint) VALUES ('mallory@example.org', '{fingerprint}')"
    ));
    assert!(!ok && out.contains("foreign key"), "{out}");
    let (ok, out) = pg.try_psql(&format!(
        "INSERT INTO sealgate.addresses (address, fingerprint) VALUES ('Lea@Example.org', '{fingerprint}')"
    ));
    assert!(!ok && out.contains("check constraint"), "{out}");
    // A row the certificate does not back (written around the constraint) is a doubt.
    pg.psql(&format!(
        "INSERT INTO sealgate.certificate_addresses VALUES ('{fingerprint}', 'mallory@example.org');
         INSERT INTO sealgate.addresses (address, fingerprint) VALUES ('mallory@example.org', '{fingerprint}')"
    ));
    rt.block_on(async {
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let store = PgKeyStore::new(location(&pg), Duration::from_secs(300));
        store.start(shutdown);
        answer_becomes(&store, "lea@example.org", "usable 1", Duration::from_secs(10)).await;
        let answer = word(&store.lookup_many(&["mallory@example.org"]).await[0]);
        assert!(answer.contains("no user ID for the address"), "{answer}");
        // Damaged certificate bytes: unknown for that address, never "no key".
        pg.psql(&format!(
            "UPDATE sealgate.certificates SET certificate = '\\x00ff' WHERE fingerprint = '{fingerprint}'"
        ));
        let took = answer_becomes(&store, "lea@example.org", "unknown", Duration::from_secs(1)).await;
        assert!(took < Duration::from_secs(1));
        let answer = word(&store.lookup_many(&["lea@example.org"]).await[0]);
        assert!(answer.contains("cannot be read"), "{answer}");
    });
}

#[test]
fn while_the_database_is_away_cached_answers_last_max_stale_then_unknown() {
    let Some(mut pg) = migrated() else { return };
    let gpg = Gpg::new();
    let cert = cert_of(&gpg, "ida@example.org");
    let rt = runtime();
    rt.block_on(import(&pg, &cert));
    let max_stale = Duration::from_secs(2);
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let store = PgKeyStore::new(location(&pg), max_stale);
    rt.block_on(async {
        store.start(shutdown);
        answer_becomes(
            &store,
            "ida@example.org",
            "usable 1",
            Duration::from_secs(10),
        )
        .await;
        answer_becomes(&store, "ivo@example.org", "none", Duration::from_secs(1)).await;
    });
    pg.stop();
    rt.block_on(async {
        // The link is noticed down (the next ping, or the next lookup's error).
        let start = Instant::now();
        while store.health().up {
            assert!(start.elapsed() < Duration::from_secs(10), "link still up");
            let _ = store.lookup_many(&["new@example.org"]).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(store.health().error.is_some());
        // Never seen before: unknown at once.
        let answer = word(&store.lookup_many(&["new@example.org"]).await[0]);
        assert!(answer.starts_with("unknown"), "{answer}");
        // Cached: still used, then unknown once max_stale has passed.
        let cached = word(&store.lookup_many(&["ida@example.org"]).await[0]);
        assert!(
            cached == "usable 1" || cached.starts_with("unknown"),
            "{cached}"
        );
        answer_becomes(
            &store,
            "ida@example.org",
            "unknown",
            Duration::from_secs(10),
        )
        .await;
        answer_becomes(&store, "ivo@example.org", "unknown", Duration::from_secs(1)).await;
        assert!(
            store
                .counters
                .unknown_answers
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
    });
    pg.restart();
    rt.block_on(async {
        answer_becomes(
            &store,
            "ida@example.org",
            "usable 1",
            Duration::from_secs(40),
        )
        .await;
        assert!(store.health().up);
        assert_eq!(store.health().error, None);
    });
}

#[test]
fn tls_and_unix_sockets_and_passwords_as_the_url_says() {
    if !postgres::require() || !testkit::require("openssl") {
        return;
    }
    let pg = Postgres::start_with_tls();
    let rt = runtime();
    let pw = password_file(&pg);
    let connects = |url: String| {
        rt.block_on(async {
            let location = Location::parse(&url, Some(&pw)).expect("valid URL");
            Admin::connect_unchecked(&location).await.map(|_| ())
        })
    };
    connects(format!("{}?sslmode=require", pg.url())).expect("sslmode=require");
    let root = pg.dir.path().join("tls").join("server.crt");
    let verified = format!(
        "postgresql://{}@localhost:{}/{}?sslmode=verify-full&sslrootcert={}",
        postgres::ROLE,
        pg.port,
        postgres::DATABASE,
        root.display()
    );
    connects(verified).expect("verify-full with the right root and name");
    let wrong_name = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(),
        root.display()
    );
    let err = connects(wrong_name).expect_err("127.0.0.1 is not the certificate's name");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    let err = connects(format!("{}?sslmode=verify-ca", pg.url())).expect_err("untrusted root");
    assert!(err.to_string().contains("certificate"), "{err}");
    // The unix socket, trusted locally (no password needed).
    rt.block_on(async {
        let location = Location::parse(&pg.socket_url(), None).expect("socket URL");
        Admin::connect_unchecked(&location)
            .await
            .expect("unix socket")
            .close()
            .await;
    });
    // A wrong password fails without showing it.
    let err = rt
        .block_on(async {
            let url = format!(
                "postgresql://{}:wrong-pw-1234@127.0.0.1:{}/{}",
                postgres::ROLE,
                pg.port,
                postgres::DATABASE
            );
            let location = Location::parse(&url, None).expect("valid");
            Admin::connect_unchecked(&location).await.map(|_| ())
        })
        .expect_err("wrong password");
    let text = err.to_string();
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("wrong-pw-1234"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// The service and `sealgate keys` with SEALGATE_KEYSTORE=postgresql://…, as an operator runs them
// ---------------------------------------------------------------------------------------------

const MESSAGE: &[u8] =
    b"From: sender@example.net\r\nSubject: fleet\r\n\r\nthe secret body line\r\n";

/// The variables an operator sets for a database key store.
fn database_env(pg: &Postgres) -> Vec<(String, String)> {
    vec![
        ("SEALGATE_KEYSTORE".into(), pg.url()),
        (
            "SEALGATE_KEYSTORE_PASSWORD_FILE".into(),
            password_file(pg).display().to_string(),
        ),
    ]
}

/// `sealgate ARGS` with `env` (and the input on stdin): exit code and stdout+stderr.
fn sealgate_cli(env: &[(String, String)], args: &[&str], input: &[u8]) -> (Option<i32>, String) {
    use std::io::Write as _;
    let mut command = testkit::sealgate::command();
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("run sealgate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    let out = child.wait_with_output().expect("sealgate output");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A sealgate serving LMTP into a Maildir with the database key store.
fn serve(pg: &Postgres, mail: &std::path::Path, extra: &[(&str, &str)]) -> testkit::Sealgate {
    let env = database_env(pg);
    let next_hop = format!("maildir:{}", mail.display());
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    vars.push(("SEALGATE_NEXT_HOP", &next_hop));
    vars.extend_from_slice(extra);
    testkit::Sealgate::spawn_with_store_as_is(&vars)
}

#[test]
fn the_service_encrypts_to_every_key_in_the_database_and_the_cli_manages_them() {
    if !postgres::require() || !testkit::require("gpg") {
        return;
    }
    let pg = Postgres::start();
    let env = database_env(&pg);
    // Before migrate: check-config says what to do, and so does the service.
    let (code, out) = sealgate_cli(&env, &["check-config"], b"");
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("run `sealgate keys migrate`"), "{out}");
    assert!(!out.contains(postgres::PASSWORD), "{out}");
    let (code, out) = sealgate_cli(&env, &["keys", "migrate"], b"");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("applied schema version(s) 1"), "{out}");
    let (code, out) = sealgate_cli(&env, &["keys", "migrate"], b"");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("up to date"), "{out}");
    let (code, out) = sealgate_cli(&env, &["check-config"], b"");
    assert_eq!(code, Some(0), "{out}");

    // Two keys for one user (laptop and phone), imported with the same refusals as cert-d.
    let laptop = Gpg::new();
    laptop.generate("Nina <nina@example.org>", "future-default", "default");
    let phone = Gpg::new();
    phone.generate("Nina <nina@example.org>", "default", "default");
    for gpg in [&laptop, &phone] {
        let (code, out) = sealgate_cli(
            &env,
            &["keys", "import", "-"],
            &gpg.export("nina@example.org"),
        );
        assert_eq!(code, Some(0), "{out}");
        assert!(
            out.contains("imported ") && out.contains("<nina@example.org>"),
            "{out}"
        );
    }
    let (code, out) = sealgate_cli(
        &env,
        &["keys", "import", "-"],
        &laptop.export_secret("nina@example.org"),
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("contains secret key material"), "{out}");
    let (code, out) = sealgate_cli(&env, &["keys", "show", "nina@example.org"], b"");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("copies are encrypted to each"), "{out}");
    assert_eq!(
        out.matches("  usable  <nina@example.org>").count(),
        2,
        "{out}"
    );
    let (code, out) = sealgate_cli(&env, &["keys", "list"], b"");
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains("usable")).count(),
        2,
        "{out}"
    );

    // The service: one copy, readable with either key; a keyless recipient gets plaintext.
    let mail = testkit::temp_dir("mail-");
    let sealgate = serve(&pg, mail.path(), &[]);
    let mut client = testkit::lmtp::Client::connect(sealgate.port());
    client.expect("LHLO client.example", "250");
    client.expect("MAIL FROM:<sender@example.net>", "250");
    client.expect("RCPT TO:<nina@example.org>", "250");
    client.expect("RCPT TO:<otto@example.org>", "250");
    client.expect("DATA", "354");
    client.send_message(MESSAGE);
    testkit::lmtp::assert_codes(&client.reply(), "250", "nina");
    testkit::lmtp::assert_codes(&client.reply(), "250", "otto");
    let stored = testkit::maildir::messages(&mail.path().join("nina@example.org"));
    assert_eq!(stored.len(), 1);
    assert!(
        !contains(&stored[0], b"the secret body line"),
        "plaintext stored for nina"
    );
    for gpg in [&laptop, &phone] {
        let decrypted = gpg.decrypt(&testkit::pgp::armored_part(&stored[0]));
        assert!(decrypted.ok, "{}", decrypted.status);
        assert!(contains(&decrypted.plaintext, b"the secret body line"));
    }
    let otto = testkit::maildir::messages(&mail.path().join("otto@example.org"));
    assert!(contains(&otto[0], b"the secret body line"));
    let (status, metrics) = sealgate.http_get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("sealgate_keystore_database_up 1"),
        "{metrics}"
    );
    assert!(!metrics.contains(postgres::PASSWORD));

    // Recipients the cache has not seen, pipelined as Postfix's LMTP client sends them: one
    // round trip for the whole batch.
    let fetches = |sealgate: &testkit::Sealgate| -> u64 {
        let (_, text) = sealgate.http_get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix("sealgate_keystore_database_fetches_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no fetches metric in:\n{text}"))
    };
    let before = fetches(&sealgate);
    let mut client = testkit::lmtp::Client::connect(sealgate.port());
    client.expect("LHLO client.example", "250");
    let batch: String = std::iter::once("MAIL FROM:<sender@example.net>\r\n".to_string())
        .chain((1..=5).map(|i| format!("RCPT TO:<batch{i}@example.org>\r\n")))
        .collect();
    client.send(batch.as_bytes());
    for i in 0..6 {
        testkit::lmtp::assert_codes(&client.reply(), "250", &format!("pipelined reply {i}"));
    }
    assert_eq!(
        fetches(&sealgate),
        before + 1,
        "one round trip for five new recipients"
    );

    // Remove one key: the next copy names only the other.
    let fingerprint = phone.fingerprint("nina@example.org");
    let (code, out) = sealgate_cli(&env, &["keys", "remove", &fingerprint], b"");
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = sealgate_cli(&env, &["keys", "show", "nina@example.org"], b"");
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("copies are encrypted to each"), "{out}");
    assert!(
        !sealgate.log().contains(postgres::PASSWORD),
        "the password reached the log"
    );
}

#[test]
fn the_service_tempfails_once_the_database_has_been_away_too_long() {
    if !postgres::require() || !testkit::require("gpg") {
        return;
    }
    let mut pg = Postgres::start();
    let env = database_env(&pg);
    let (code, out) = sealgate_cli(&env, &["keys", "migrate"], b"");
    assert_eq!(code, Some(0), "{out}");
    let ida = Gpg::new();
    ida.generate("Ida <ida@example.org>", "future-default", "default");
    let (code, out) = sealgate_cli(
        &env,
        &["keys", "import", "-"],
        &ida.export("ida@example.org"),
    );
    assert_eq!(code, Some(0), "{out}");
    let mail = testkit::temp_dir("mail-");
    let sealgate = serve(&pg, mail.path(), &[("SEALGATE_KEYSTORE_MAX_STALE", "2s")]);
    let rcpt = |address: &str| {
        let mut client = testkit::lmtp::Client::connect(sealgate.port());
        client.expect("LHLO client.example", "250");
        client.expect("MAIL FROM:<sender@example.net>", "250");
        client.command(&format!("RCPT TO:<{address}>"))
    };
    testkit::lmtp::assert_codes(&rcpt("ida@example.org"), "250", "ida, database up");
    pg.stop();
    testkit::wait_until("/readyz to report the key database", WAIT, || {
        let (status, body) = sealgate.http_get("/readyz");
        status == 503 && body.contains("key database")
    });
    // Never seen: 451 at once. Seen: 451 once max_stale has passed, never plaintext.
    testkit::lmtp::assert_codes(
        &rcpt("new@example.org"),
        "451 4.7.0",
        "unseen, database away",
    );
    testkit::wait_until("ida's cached answer to expire", WAIT, || {
        rcpt("ida@example.org").code == 451
    });
    let (code, out) = sealgate_cli(&env, &["check-config"], b"");
    assert_eq!(code, Some(75), "{out}");
    pg.restart();
    testkit::wait_until(
        "the database to be used again",
        Duration::from_secs(60),
        || rcpt("ida@example.org").code == 250,
    );
    assert!(
        sealgate.log().contains("key database reachable again"),
        "{}",
        sealgate.log()
    );
}

#[test]
fn keys_copy_moves_a_directory_store_into_the_database_and_back() {
    if !postgres::require() || !testkit::require("gpg") {
        return;
    }
    let pg = Postgres::start();
    let env = database_env(&pg);
    assert_eq!(sealgate_cli(&env, &["keys", "migrate"], b"").0, Some(0));
    let gpg = Gpg::new();
    gpg.generate("Kim <kim@example.org>", "future-default", "default");
    let dir = testkit::temp_dir("certd-");
    let store = dir.path().join("keys");
    testkit::sealgate::keys_import_ok(&store, &gpg.export("kim@example.org"));
    let store_text = store.display().to_string();
    let url = pg.url();
    let (code, out) = sealgate_cli(
        &env,
        &["keys", "copy", "--from", &store_text, "--to", &url],
        b"",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("copied 1 certificate(s)"), "{out}");
    let (code, out) = sealgate_cli(&env, &["keys", "show", "kim@example.org"], b"");
    assert_eq!(code, Some(0), "{out}");
    let back = dir.path().join("back");
    let back_text = back.display().to_string();
    let (code, out) = sealgate_cli(
        &env,
        &["keys", "copy", "--from", &url, "--to", &back_text],
        b"",
    );
    assert_eq!(code, Some(0), "{out}");
    let dir_env = vec![("SEALGATE_KEYSTORE".to_string(), back_text.clone())];
    let (code, out) = sealgate_cli(&dir_env, &["keys", "show", "kim@example.org"], b"");
    assert_eq!(code, Some(0), "{out}");
}

/// The server's reply to the client line containing `sent` in a swaks transcript.
fn swaks_reply(transcript: &str, sent: &str) -> String {
    let lines: Vec<&str> = transcript.lines().map(str::trim_start).collect();
    let Some(at) = lines
        .iter()
        .position(|l| (l.starts_with("->") || l.starts_with("~>")) && l.contains(sent))
    else {
        return String::new();
    };
    lines[at + 1..]
        .iter()
        .skip_while(|l| !(l.starts_with("<-") || l.starts_with("<~") || l.starts_with("<**")))
        .take_while(|l| l.starts_with("<-") || l.starts_with("<~") || l.starts_with("<**"))
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

/// `sealgate.mailbox_flags.tls_required` makes a mailbox TLS-only: the milter refuses it at
/// RCPT without STARTTLS (550), the LMTP side refuses a plaintext copy at the end of DATA, a
/// change reaches the service at once, and while the database is away too long the answer is
/// 451, never a bounce and never a plaintext delivery.
#[test]
fn the_tls_only_flag_in_the_database_is_honoured_by_lmtp_and_the_milter() {
    use testkit::peers::{Postfix, PostfixConfig, TestCert, swaks};
    if !postgres::require() || !testkit::require_all(&["postfix", "swaks", "openssl"]) {
        return;
    }
    let Some(mut pg) = migrated() else { return };
    pg.psql("INSERT INTO sealgate.mailbox_flags (address, tls_required) VALUES ('vera@example.org', true)");
    let mail = testkit::temp_dir("mail-");
    let sealgate = serve(
        &pg,
        mail.path(),
        &[
            ("SEALGATE_MILTER_LISTEN", "127.0.0.1:0"),
            ("SEALGATE_TRUSTED_MTA", "mx.example.org"),
            ("SEALGATE_KEYSTORE_MAX_STALE", "1s"),
        ],
    );
    let cert = TestCert::generate("mx.example.org");
    let postfix = Postfix::start(
        PostfixConfig::default()
            .with_main_cf(format!(
                "smtpd_milters = inet:127.0.0.1:{}",
                sealgate.milter_port()
            ))
            .with_main_cf("milter_default_action = tempfail")
            .with_main_cf("milter_protocol = 6")
            .with_lmtp_transport(sealgate.port())
            .with_starttls(&cert),
    );
    let port = postfix.smtp_port.to_string();
    let send = |to: &str, tls: bool, body: &str| {
        let mut args = vec![
            "--server",
            "127.0.0.1",
            "--port",
            &port,
            "--from",
            "sender@example.net",
            "--to",
            to,
            "--helo",
            "client.example.net",
            "--body",
            body,
        ];
        if tls {
            args.push("--tls");
        }
        let (_, out) = swaks(&args);
        (swaks_reply(&out, &format!("RCPT TO:<{to}>")), out)
    };
    let stored = |mailbox: &str| testkit::maildir::messages(&mail.path().join(mailbox));

    // The milter, at RCPT.
    let (reply, out) = send("vera@example.org", false, "token-plain-vera");
    assert!(
        reply.contains("550 5.7.1 <vera@example.org>: TLS required for this address"),
        "{reply}\n{out}"
    );
    let (reply, out) = send("Vera+lists@Example.org", false, "token-plain-vera-tag");
    assert!(reply.contains("550 5.7.1"), "a subaddress: {reply}\n{out}");
    let (reply, out) = send("vera@example.org", true, "token-tls-vera");
    assert!(reply.contains(" 250 "), "{reply}\n{out}");
    let (reply, out) = send("ulla@example.org", false, "token-plain-ulla");
    assert!(reply.contains(" 250 "), "{reply}\n{out}");
    testkit::wait_until("both accepted messages stored", WAIT, || {
        stored("vera@example.org").len() == 1 && stored("ulla@example.org").len() == 1
    });
    assert!(contains(&stored("vera@example.org")[0], b"token-tls-vera"));

    // The LMTP side: a copy whose trusted Received field shows no TLS.
    let plain_received = "Received: from client.example.net (client.example.net [192.0.2.1])\r\n\
        \tby mx.example.org (Postfix) with ESMTP id 3D78AC876E\r\n\
        \tfor <vera@example.org>; Sun, 22 Nov 2026 12:41:13 +0000 (UTC)\r\n";
    let message = format!("{plain_received}From: sender@example.net\r\nSubject: x\r\n\r\nbody\r\n");
    let mut client = testkit::lmtp::Client::connect(sealgate.port());
    client.expect("LHLO client.example", "250");
    let replies = client.deliver(
        "sender@example.net",
        &["vera@example.org"],
        message.as_bytes(),
    );
    testkit::lmtp::assert_codes(
        replies.last().expect("a reply"),
        "550 5.7.1",
        "LMTP, plaintext",
    );
    assert_eq!(stored("vera@example.org").len(), 1);

    // The flag removed: plaintext is accepted again, promptly (NOTIFY, not the full check).
    pg.psql("DELETE FROM sealgate.mailbox_flags WHERE address = 'vera@example.org'");
    let removed = Instant::now();
    testkit::wait_until("the removed flag to reach the service", WAIT, || {
        send("vera@example.org", false, "token-plain-vera-2")
            .0
            .contains(" 250 ")
    });
    assert!(
        removed.elapsed() < Duration::from_secs(10),
        "{:?}",
        removed.elapsed()
    );
    pg.psql("INSERT INTO sealgate.mailbox_flags (address, tls_required) VALUES ('vera@example.org', true)");
    testkit::wait_until("the flag set again to reach the service", WAIT, || {
        send("vera@example.org", false, "token-plain-vera-3")
            .0
            .contains("550 5.7.1")
    });

    // The database away beyond the staleness limit: whether a mailbox is TLS-only is unknown,
    // so plaintext gets 451 (Postfix's client retries), for a flagged and an unflagged one.
    pg.stop();
    for to in ["vera@example.org", "ulla@example.org"] {
        let mut last = String::new();
        testkit::wait_until("a tempfail while the database is away", WAIT, || {
            last = send(to, false, "token-away").0;
            last.contains("451 4.7.0")
        });
        assert!(
            last.contains("cannot tell whether this address requires TLS"),
            "{to}: {last}"
        );
    }
    assert!(
        !stored("ulla@example.org")
            .iter()
            .any(|m| contains(m, b"token-away"))
    );
    pg.restart();
    testkit::wait_until("plaintext to ulla accepted again", WAIT, || {
        send("ulla@example.org", false, "token-back")
            .0
            .contains(" 250 ")
    });
}
