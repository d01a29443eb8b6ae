//! The key store fails closed (issue 11 §2), against the real sealgate binary and real GnuPG
//! keys: whatever keeps the store from telling whether a recipient has a key makes that
//! recipient `451 4.7.0` (at RCPT, and per recipient at DATA), never plaintext; a bad entry
//! keeps its last good certificate; each such state shows in /readyz, the metrics, the log and
//! `sealgate check-config`. Also: a relative SEALGATE_KEYSTORE as in README's demo,
//! `sealgate keys` reading the package's env file, and a second certificate for an address.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::lmtp::{Client, assert_codes};
use testkit::maildir;
use testkit::pgp::{Gpg, armored_part};
use testkit::sealgate::{Sealgate, ensure_manifest, keys_import_ok};

const WAIT: Duration = Duration::from_secs(30);

const MESSAGE: &[u8] =
    b"From: sender@example.net\r\nSubject: fail closed\r\n\r\nthe secret body line\r\n";

/// A GnuPG home with one Cv25519 key for `address`.
fn gpg_with_key(address: &str) -> Gpg {
    let gpg = Gpg::new();
    gpg.generate(&format!("Holder <{address}>"), "future-default", "default");
    gpg
}

/// The only cert-d entry of `store` (panics unless there is exactly one).
fn only_entry(store: &Path) -> PathBuf {
    let mut entries = Vec::new();
    for sub in fs::read_dir(store).expect("read store").flatten() {
        if sub.file_name().len() == 2 && sub.path().is_dir() {
            entries.extend(
                fs::read_dir(sub.path())
                    .expect("subdir")
                    .flatten()
                    .map(|e| e.path()),
            );
        }
    }
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.remove(0)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts `copy` is encrypted (no plaintext body) and that `gpg` decrypts it to the body.
fn assert_encrypted_for(copy: &[u8], gpg: &Gpg) {
    assert!(
        !contains(copy, b"the secret body line"),
        "plaintext stored:\n{}",
        String::from_utf8_lossy(copy)
    );
    let decrypted = gpg.decrypt(&armored_part(copy));
    assert!(decrypted.ok, "gpg could not decrypt: {}", decrypted.status);
    assert!(
        contains(&decrypted.plaintext, b"the secret body line"),
        "{}",
        String::from_utf8_lossy(&decrypted.plaintext)
    );
}

/// One metric's value from the exposition text (`name` with no labels).
fn metric(sealgate: &Sealgate, name: &str) -> f64 {
    let (status, text) = sealgate.http_get("/metrics");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

/// RCPT for `rcpt` in a fresh transaction: the reply.
fn rcpt_reply(sealgate: &Sealgate, rcpt: &str) -> sealgate_protocol::Reply {
    let mut client = Client::connect(sealgate.port());
    client.expect("LHLO client.example", "250");
    client.expect("MAIL FROM:<sender@example.net>", "250");
    client.command(&format!("RCPT TO:<{rcpt}>"))
}

fn assert_unknown(reply: &sealgate_protocol::Reply, rcpt: &str, names: &str) {
    assert_codes(reply, "451 4.7.0", rcpt);
    let text = reply.lines.join("\n");
    assert!(text.contains("key store cannot tell"), "{text}");
    assert!(text.contains(names), "reply should name {names}: {text}");
}

fn check_config(store: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .arg("check-config")
        .env("SEALGATE_KEYSTORE", store)
        .output()
        .expect("run check-config");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// README's "try it by hand": `sealgate keys import` with the default, relative
/// SEALGATE_KEYSTORE in the directory the server runs in; the server then encrypts. Both
/// resolve the path once, to the same absolute directory, and log it.
#[test]
fn relative_keystore_as_in_the_readme_demo() {
    if !testkit::require("gpg") {
        return;
    }
    let alice = gpg_with_key("alice@example.org");
    let mail = testkit::temp_dir("mail-");
    let next_hop = format!("maildir:{}", mail.path().display());
    let sealgate = Sealgate::spawn(&[
        ("SEALGATE_NEXT_HOP", &next_hop),
        ("SEALGATE_KEYSTORE_RELOAD", "100ms"),
    ]);
    let store = sealgate.dir.path().join("keys");
    let started = sealgate.wait_for_log("starting", WAIT);
    assert!(
        started.contains(&format!("keystore={}", store.display())),
        "the start line names the absolute store: {started}"
    );
    // As a user types it: in the same directory, no SEALGATE_KEYSTORE.
    let run = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sealgate"))
            .arg("keys")
            .args(args)
            .current_dir(sealgate.dir.path())
            .env_remove("SEALGATE_KEYSTORE")
            .env("SEALGATE_ENV_FILE", "/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sealgate keys");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), stdin).expect("stdin");
        let out = child.wait_with_output().expect("wait");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = run(&["import", "-"], &alice.export("alice@example.org"));
    assert!(ok, "{out}");
    let (ok, listed) = run(&["list"], b"");
    assert!(ok && listed.contains("<alice@example.org>"), "{listed}");

    testkit::wait_until("the server to see alice's key", WAIT, || {
        sealgate
            .log()
            .lines()
            .any(|l| l.contains("key store reloaded") && l.contains("certificates=1"))
    });
    let mut client = Client::connect(sealgate.port());
    let replies = client.deliver("sender@example.net", &["alice@example.org"], MESSAGE);
    assert_codes(&replies[0], "250", "alice");
    let copies = maildir::messages(&mail.path().join("alice@example.org"));
    assert_eq!(copies.len(), 1);
    assert_encrypted_for(&copies[0], &alice);
}

/// How an entry goes bad.
#[derive(Debug, Clone, Copy)]
enum Damage {
    Truncated,
    Garbage,
    /// Owned by root, mode 0600, while the service runs as another user.
    RootOnly,
}

fn damage(entry: &Path, how: Damage) {
    let data = fs::read(entry).expect("read entry");
    match how {
        Damage::Truncated => fs::write(entry, &data[..data.len() / 3]).expect("truncate"),
        Damage::Garbage => fs::write(entry, b"\x00\x01 this is not OpenPGP \xff").expect("write"),
        Damage::RootOnly => {
            fs::set_permissions(entry, fs::Permissions::from_mode(0o600)).expect("chmod")
        }
    }
}

/// A store whose only entry is unreadable or unparseable at start: nobody knows whose it is,
/// so every recipient without a usable key (here: everyone) gets 451 at RCPT; /readyz, the
/// metrics, the log and check-config name the file.
#[test]
fn a_bad_entry_at_start_tempfails_every_recipient() {
    if !testkit::require_all(&["gpg", "setpriv"]) {
        return;
    }
    let root = rustix_is_root();
    let alice = gpg_with_key("alice@example.org");
    for how in [Damage::Truncated, Damage::Garbage, Damage::RootOnly] {
        if matches!(how, Damage::RootOnly) && !root {
            eprintln!("note: not root, cannot make a root-only entry; case skipped");
            continue;
        }
        let base = testkit::temp_dir("bad-at-start-");
        fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let store = base.path().join("keys");
        let mail = base.path().join("mail");
        fs::create_dir(&mail).expect("mkdir");
        fs::set_permissions(&mail, fs::Permissions::from_mode(0o777)).expect("chmod");
        keys_import_ok(&store, &alice.export("alice@example.org"));
        let entry = only_entry(&store);
        // Readable by the service user except for the damage.
        for dir in [store.clone(), entry.parent().expect("parent").to_path_buf()] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        fs::set_permissions(
            store.join(".sealgate-manifest"),
            fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        fs::set_permissions(&entry, fs::Permissions::from_mode(0o644)).expect("chmod");
        damage(&entry, how);

        let keystore = store.display().to_string();
        let next_hop = format!("maildir:{}", mail.display());
        let env = [
            ("SEALGATE_KEYSTORE", keystore.as_str()),
            ("SEALGATE_NEXT_HOP", next_hop.as_str()),
        ];
        let sealgate = if root {
            Sealgate::spawn_as("nobody", "nogroup", &env)
        } else {
            Sealgate::spawn_with_store_as_is(&env)
        };
        let entry_name = entry.display().to_string();
        let warned = sealgate.wait_for_log("key store degraded", WAIT);
        assert!(
            warned.contains(&entry_name),
            "{how:?}: log names the file: {warned}"
        );

        for rcpt in ["alice@example.org", "bob@example.org"] {
            assert_unknown(&rcpt_reply(&sealgate, rcpt), rcpt, &entry_name);
        }
        let (status, body) = sealgate.http_get("/readyz");
        assert_eq!(status, 503, "{how:?}: {body}");
        assert!(body.contains(&entry_name), "{how:?}: {body}");
        assert_eq!(metric(&sealgate, "sealgate_keystore_blind"), 1.0, "{how:?}");
        assert!(
            metric(&sealgate, "sealgate_keystore_bad_entries") >= 1.0,
            "{how:?}"
        );
        assert!(
            metric(&sealgate, "sealgate_keystore_unknown_total") >= 2.0,
            "{how:?}"
        );
        assert!(maildir::messages(&mail.join("alice@example.org")).is_empty());
        assert!(maildir::messages(&mail.join("bob@example.org")).is_empty());

        if !matches!(how, Damage::RootOnly) {
            let (code, out) = check_config(&store);
            assert_eq!(code, Some(75), "{how:?}: {out}");
            assert!(out.contains(&entry_name), "{how:?}: {out}");
        }
        drop(sealgate);
    }
}

/// The same damage after a good start: the entry's last good certificate is still used
/// (copies for alice are encrypted to it); the store is degraded (readyz, metric, log) but
/// knows the entry is alice's, so bob (no key) is still answered.
#[test]
fn a_bad_entry_after_a_good_start_keeps_its_last_good_certificate() {
    if !testkit::require("gpg") {
        return;
    }
    let alice = gpg_with_key("alice@example.org");
    for how in [Damage::Truncated, Damage::Garbage] {
        let base = testkit::temp_dir("bad-later-");
        let store = base.path().join("keys");
        let mail = base.path().join("mail");
        keys_import_ok(&store, &alice.export("alice@example.org"));
        let entry = only_entry(&store);
        let keystore = store.display().to_string();
        let next_hop = format!("maildir:{}", mail.display());
        let sealgate = Sealgate::spawn(&[
            ("SEALGATE_KEYSTORE", keystore.as_str()),
            ("SEALGATE_NEXT_HOP", next_hop.as_str()),
            ("SEALGATE_KEYSTORE_RELOAD", "100ms"),
        ]);
        assert_eq!(sealgate.http_get("/readyz").0, 200);
        damage(&entry, how);
        testkit::wait_until("/readyz to report the bad entry", WAIT, || {
            let (status, body) = sealgate.http_get("/readyz");
            status == 503 && body.contains(&*entry.display().to_string())
        });
        assert_eq!(metric(&sealgate, "sealgate_keystore_blind"), 0.0);
        assert_eq!(metric(&sealgate, "sealgate_keystore_bad_entries"), 1.0);
        assert!(metric(&sealgate, "sealgate_keystore_reload_errors_total") >= 1.0);
        assert!(
            sealgate
                .log()
                .contains("last good certificate is still used")
        );

        let mut client = Client::connect(sealgate.port());
        let replies = client.deliver(
            "sender@example.net",
            &["alice@example.org", "bob@example.org"],
            MESSAGE,
        );
        assert_codes(&replies[0], "250", "alice");
        assert_codes(&replies[1], "250", "bob");
        let copies = maildir::messages(&mail.join("alice@example.org"));
        assert_eq!(copies.len(), 1, "{how:?}");
        assert_encrypted_for(&copies[0], &alice);
    }
}

/// A store that empties while sealgate runs (contents removed, or the directory replaced by
/// an empty one, as an unmounted volume looks): recipients without a key get 451 at RCPT,
/// and at DATA when it happens after their RCPT; alice's last good certificate is still used.
#[test]
fn an_emptied_store_tempfails_instead_of_plaintext() {
    if !testkit::require("gpg") {
        return;
    }
    let alice = gpg_with_key("alice@example.org");
    for replace_directory in [false, true] {
        let base = testkit::temp_dir("emptied-");
        let store = base.path().join("keys");
        let mail = base.path().join("mail");
        keys_import_ok(&store, &alice.export("alice@example.org"));
        let keystore = store.display().to_string();
        let next_hop = format!("maildir:{}", mail.display());
        let sealgate = Sealgate::spawn(&[
            ("SEALGATE_KEYSTORE", keystore.as_str()),
            ("SEALGATE_NEXT_HOP", next_hop.as_str()),
            ("SEALGATE_KEYSTORE_RELOAD", "100ms"),
        ]);
        let (code, out) = check_config(&store);
        assert_eq!(code, Some(0), "{out}");

        // A transaction with both recipients accepted before the store empties.
        let mut client = Client::connect(sealgate.port());
        client.expect("LHLO client.example", "250");
        client.expect("MAIL FROM:<sender@example.net>", "250");
        client.expect("RCPT TO:<alice@example.org>", "250");
        client.expect("RCPT TO:<bob@example.org>", "250");

        if replace_directory {
            fs::remove_dir_all(&store).expect("rm");
            fs::create_dir(&store).expect("mkdir");
        } else {
            for entry in fs::read_dir(&store).expect("read").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    fs::remove_dir_all(path).expect("rm");
                } else {
                    fs::remove_file(path).expect("rm");
                }
            }
        }
        // Wait for the blind state itself: while the files go one by one, a reload can see
        // the manifest still there but a certificate it lists gone, a problem whose text also
        // names the manifest (".sealgate-manifest but missing") and which is not blind.
        testkit::wait_until("/readyz to report the missing manifest", WAIT, || {
            let (status, body) = sealgate.http_get("/readyz");
            status == 503 && body.contains(".sealgate-manifest: missing")
        });

        client.expect("DATA", "354");
        client.send_message(MESSAGE);
        let alice_reply = client.reply();
        let bob_reply = client.reply();
        assert_codes(&alice_reply, "250", "alice (last good certificate)");
        assert_unknown(&bob_reply, "bob@example.org", ".sealgate-manifest");
        assert_encrypted_for(
            &maildir::messages(&mail.join("alice@example.org"))[0],
            &alice,
        );
        assert!(
            maildir::messages(&mail.join("bob@example.org")).is_empty(),
            "no plaintext for bob"
        );

        assert_unknown(
            &rcpt_reply(&sealgate, "carol@example.org"),
            "carol@example.org",
            ".sealgate-manifest",
        );
        assert_eq!(metric(&sealgate, "sealgate_keystore_blind"), 1.0);
        let (code, out) = check_config(&store);
        assert_eq!(code, Some(75), "{out}");
        assert!(out.contains(".sealgate-manifest"), "{out}");
    }
}

/// `sealgate keys` reads the service's env file (systemd syntax: quotes, comments), and the
/// environment wins over it.
#[test]
fn keys_commands_read_the_env_file() {
    if !testkit::require("gpg") {
        return;
    }
    let dave = gpg_with_key("dave@example.org");
    let base = testkit::temp_dir("env-file-");
    let store = base.path().join("store from env file");
    let env_file = base.path().join("sealgate.env");
    fs::write(
        &env_file,
        format!(
            "# as /etc/sealgate/sealgate.env\n; another comment\nSEALGATE_KEYSTORE=\"{}\"\n\
             NOT_OURS=ignored\n",
            store.display()
        ),
    )
    .expect("write env file");
    let keys = |args: &[&str], keystore: Option<&Path>, stdin: &[u8]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealgate"));
        cmd.arg("keys")
            .args(args)
            .current_dir(base.path())
            .env("SEALGATE_ENV_FILE", &env_file)
            .env_remove("SEALGATE_KEYSTORE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(keystore) = keystore {
            cmd.env("SEALGATE_KEYSTORE", keystore);
        }
        let mut child = cmd.spawn().expect("run sealgate keys");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), stdin).expect("stdin");
        let out = child.wait_with_output().expect("wait");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = keys(&["import", "-"], None, &dave.export("dave@example.org"));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        store.join(".sealgate-manifest").is_file(),
        "imported where the file says"
    );
    let (code, listed, err) = keys(&["list"], None, b"");
    assert_eq!(code, Some(0), "{err}");
    assert!(listed.contains("<dave@example.org>"), "{listed}");

    // The environment overrides the file: another (empty) store.
    let other = base.path().join("other");
    ensure_manifest(&other);
    let (code, listed, err) = keys(&["list"], Some(&other), b"");
    assert_eq!(code, Some(0), "{err}");
    assert!(listed.is_empty(), "{listed}");

    // A named env file that does not exist is an error, not a silent default.
    let (code, _, err) = {
        let out = Command::new(env!("CARGO_BIN_EXE_sealgate"))
            .args(["keys", "list"])
            .env("SEALGATE_ENV_FILE", base.path().join("missing.env"))
            .output()
            .expect("run");
        (
            out.status.code(),
            (),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("missing.env"), "{err}");
}

/// Two certificates for one address (say, a new laptop's key before the old one is retired):
/// both are kept, `keys list` shows both, and each copy is encrypted to both, so either secret
/// key decrypts it.
#[test]
fn a_second_certificate_for_an_address_is_encrypted_to_as_well() {
    if !testkit::require("gpg") {
        return;
    }
    let old = gpg_with_key("erin@example.org");
    let new = gpg_with_key("erin@example.org");
    let base = testkit::temp_dir("second-cert-");
    let store = base.path().join("keys");
    let mail = base.path().join("mail");
    keys_import_ok(&store, &old.export("erin@example.org"));
    keys_import_ok(&store, &new.export("erin@example.org"));
    let out = Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .args(["keys", "list"])
        .env("SEALGATE_KEYSTORE", &store)
        .env("SEALGATE_ENV_FILE", "/dev/null")
        .output()
        .expect("run");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed}");
    for gpg in [&old, &new] {
        let fingerprint = gpg.fingerprint("erin@example.org");
        assert!(listed.contains(&fingerprint), "{fingerprint} in:\n{listed}");
    }
    assert_eq!(listed.matches("<erin@example.org>").count(), 2, "{listed}");

    let keystore = store.display().to_string();
    let next_hop = format!("maildir:{}", mail.display());
    let sealgate = Sealgate::spawn(&[
        ("SEALGATE_KEYSTORE", keystore.as_str()),
        ("SEALGATE_NEXT_HOP", next_hop.as_str()),
    ]);
    let mut client = Client::connect(sealgate.port());
    let replies = client.deliver("sender@example.net", &["erin@example.org"], MESSAGE);
    assert_codes(&replies[0], "250", "erin");
    let copies = maildir::messages(&mail.join("erin@example.org"));
    assert_eq!(copies.len(), 1);
    for gpg in [&old, &new] {
        assert_encrypted_for(&copies[0], gpg);
    }
}

fn rustix_is_root() -> bool {
    // `id -u` rather than a libc call: the tests have no libc dependency.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
