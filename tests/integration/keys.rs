//! `sealgate keys ...` against real GnuPG 2.2 and sq 0.27 keys, and against certificates
//! generated with sequoia in the test (expired, revoked, no e-mail user ID).
//!
//! Each test has its own key store (`SEALGATE_KEYSTORE`) and its own `GNUPGHOME`, so they
//! run in parallel.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use sequoia_openpgp::Cert;
use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::serialize::SerializeInto;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The outcome of one `sealgate keys ...` run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A private key store and the sealgate binary pointed at it.
struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    fn new() -> Store {
        Store {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealgate"));
        cmd.arg("keys")
            .args(args)
            .env("SEALGATE_KEYSTORE", self.path())
            // Hermetic: not the host's /etc/sealgate/sealgate.env.
            .env("SEALGATE_ENV_FILE", "/dev/null")
            .env_remove("SEALGATE_LOG")
            .env_remove("RUST_LOG");
        cmd
    }

    fn keys(&self, args: &[&str]) -> Run {
        Run::from(
            self.command(args)
                .stdin(Stdio::null())
                .output()
                .expect("run sealgate"),
        )
    }

    /// `sealgate keys import FILE` with `data` written to a file first.
    fn import(&self, data: &[u8]) -> Run {
        let file = self.dir.path().join("import.pgp");
        fs::write(&file, data).expect("write import file");
        self.keys(&["import", file.to_str().expect("utf-8 path")])
    }

    /// `sealgate keys import -` with `data` on stdin.
    fn import_stdin(&self, data: &[u8]) -> Run {
        let mut child = self
            .command(&["import", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sealgate");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(data)
            .expect("write stdin");
        Run::from(child.wait_with_output().expect("wait"))
    }

    /// Files in the cert-d (fingerprint-named), as `(name, bytes)`.
    fn stored(&self) -> Vec<PathBuf> {
        let Ok(subdirs) = fs::read_dir(self.path()) else {
            return Vec::new();
        };
        let mut files = Vec::new();
        for subdir in subdirs.flatten() {
            if subdir.file_name().len() == 2 && subdir.path().is_dir() {
                for file in fs::read_dir(subdir.path()).expect("read subdir").flatten() {
                    files.push(file.path());
                }
            }
        }
        files
    }
}

/// A private GnuPG home (mode 0700); its agent is stopped on drop.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        // Short path under /tmp: gpg-agent's socket path is limited to 107 bytes.
        let home = testkit::temp_dir("sg-gpg-");
        fs::set_permissions(home.path(), fs::Permissions::from_mode(0o700)).expect("chmod 700");
        Gpg { home }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", self.home.path())
            .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
            .args(["--passphrase", ""])
            .args(args);
        cmd
    }

    #[track_caller]
    fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run gpg");
        assert!(
            out.status.success(),
            "gpg {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `gpg --quick-gen-key USERID ALGO USAGE EXPIRE`; returns the fingerprint.
    fn generate(&self, userid: &str, algo: &str, usage: &str, expire: &str) -> String {
        self.generate_with(&[], userid, algo, usage, expire)
    }

    fn generate_with(
        &self,
        options: &[&str],
        userid: &str,
        algo: &str,
        usage: &str,
        expire: &str,
    ) -> String {
        let mut args = options.to_vec();
        args.extend(["--quick-gen-key", userid, algo, usage, expire]);
        self.run(&args);
        self.fingerprint(userid)
    }

    fn fingerprint(&self, who: &str) -> String {
        let listing = self.run(&["--with-colons", "--list-keys", who]);
        String::from_utf8_lossy(&listing)
            .lines()
            .find_map(|line| line.strip_prefix("fpr:"))
            .and_then(|rest| rest.split(':').nth(8))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no fingerprint for {who}"))
    }

    fn export(&self, who: &[&str]) -> Vec<u8> {
        let mut args = vec!["--armor", "--export"];
        args.extend(who);
        self.run(&args)
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "all"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A sequoia certificate shaped like GnuPG's (primary + encryption subkey), armored, public.
fn sequoia_cert(builder: CertBuilder<'_>) -> (Cert, Vec<u8>) {
    let (cert, _) = builder.generate().expect("generate");
    let armored = cert.armored().to_vec().expect("armor");
    (cert, armored)
}

fn with_encryption(userid: &str) -> CertBuilder<'static> {
    CertBuilder::new()
        .add_userid(userid)
        .set_cipher_suite(CipherSuite::Cv25519)
        .add_storage_encryption_subkey()
        .add_transport_encryption_subkey()
}

fn assert_one_line(stderr: &str) {
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line:\n{stderr}");
}

#[test]
fn gnupg_keys_import_list_show_remove() {
    if !testkit::require_all(&["gpg", "gpgconf"]) {
        return;
    }
    let gpg = Gpg::new();
    let alice = gpg.generate(
        "Alice <alice@example.org>",
        "future-default",
        "default",
        "never",
    );
    let carol = gpg.generate("Carol <carol@example.org>", "default", "default", "never");
    let store = Store::new();

    // Both in one armored file.
    let run = store
        .import(&gpg.export(&["alice@example.org", "carol@example.org"]))
        .expect(0);
    assert!(
        run.stdout
            .contains(&format!("imported {alice} <alice@example.org>")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("imported {carol} <carol@example.org>")),
        "{}",
        run.stdout
    );
    assert_eq!(store.stored().len(), 2);

    let run = store.keys(&["list"]).expect(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    for (fpr, address) in [
        (&alice, "<alice@example.org>"),
        (&carol, "<carol@example.org>"),
    ] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(fpr.as_str()))
            .unwrap_or_else(|| panic!("{fpr} listed:\n{}", run.stdout));
        assert!(line.contains("  usable  "), "{line}");
        assert!(line.contains(address), "{line}");
        assert!(!line.contains("expires"), "no expiry: {line}");
    }

    for address in ["alice@example.org", "ALICE+tag@Example.ORG"] {
        let run = store.keys(&["show", address]).expect(0);
        assert!(
            run.stdout
                .starts_with(&format!("{address} resolves to {alice} (usable)")),
            "{}",
            run.stdout
        );
        // gpg's future-default: an ed25519 primary with a cv25519 encryption subkey.
        assert!(run.stdout.contains("encryption subkey "), "{}", run.stdout);
        assert!(run.stdout.contains("ECDH Curve25519"), "{}", run.stdout);
    }
    let run = store.keys(&["show", "carol@example.org"]).expect(0);
    assert!(run.stdout.contains(&carol), "{}", run.stdout);
    assert!(
        run.stdout.contains("RSA 3072  expires never"),
        "{}",
        run.stdout
    );

    // Importing the same keys again merges (no change) and succeeds.
    store
        .import_stdin(&gpg.export(&["alice@example.org"]))
        .expect(0);
    assert_eq!(store.stored().len(), 2);

    // Remove takes lower case with spaces.
    let spaced: String = alice
        .to_lowercase()
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let run = store.keys(&["remove", &spaced]).expect(0);
    assert!(
        run.stdout.contains(&format!("removed {alice}")),
        "{}",
        run.stdout
    );
    let run = store.keys(&["show", "alice@example.org"]).expect(1);
    assert!(run.stderr.contains("no certificate"), "{}", run.stderr);
    let run = store.keys(&["remove", &alice]).expect(1);
    assert!(run.stderr.contains("no certificate"), "{}", run.stderr);
    assert_eq!(store.keys(&["list"]).expect(0).stdout.lines().count(), 1);
}

#[test]
fn gnupg_secret_keys_are_refused() {
    if !testkit::require_all(&["gpg", "gpgconf"]) {
        return;
    }
    let gpg = Gpg::new();
    gpg.generate(
        "Alice <alice@example.org>",
        "future-default",
        "default",
        "never",
    );
    let secret = gpg.run(&["--armor", "--export-secret-keys", "alice@example.org"]);
    let store = Store::new();
    let run = store.import(&secret).expect(1);
    assert!(run.stderr.contains("secret key material"), "{}", run.stderr);
    assert!(run.stderr.contains("gpg --export"), "{}", run.stderr);
    assert_one_line(&run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(store.stored().is_empty(), "nothing written");
}

#[test]
fn gnupg_primary_only_key_is_refused() {
    if !testkit::require_all(&["gpg", "gpgconf"]) {
        return;
    }
    let gpg = Gpg::new();
    let dave = gpg.generate("Dave <dave@example.org>", "rsa3072", "sign", "never");
    let store = Store::new();
    let run = store.import(&gpg.export(&["dave@example.org"])).expect(1);
    assert!(
        run.stderr.contains(&format!("refused {dave}")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("no encryption-capable subkey"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("gpg --quick-add-key {dave} cv25519 encr")),
        "{}",
        run.stderr
    );
    assert_one_line(&run.stderr);
    assert!(store.stored().is_empty(), "nothing written");
}

#[test]
fn gnupg_sha1_bound_key_is_refused_until_re_signed() {
    if !testkit::require_all(&["gpg", "gpgconf"]) {
        return;
    }
    let gpg = Gpg::new();
    let sha1 = ["--cert-digest-algo", "SHA1"];
    let erin = gpg.generate_with(
        &sha1,
        "Erin <erin@example.org>",
        "rsa3072",
        "default",
        "never",
    );
    let mut add = sha1.to_vec();
    add.extend(["--quick-add-key", &erin, "rsa2048", "encr", "never"]);
    gpg.run(&add);
    let store = Store::new();
    let run = store.import(&gpg.export(&["erin@example.org"])).expect(1);
    assert!(run.stderr.contains("rejected by policy"), "{}", run.stderr);
    assert!(run.stderr.contains("SHA-1"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("gpg --quick-set-expire {erin} 2y '*'")),
        "{}",
        run.stderr
    );
    assert_one_line(&run.stderr);
    assert!(store.stored().is_empty(), "nothing written");

    // The fix the message names works: re-signed with SHA-512, the key is accepted.
    gpg.run(&["--quick-set-expire", &erin, "2y"]);
    gpg.run(&["--quick-set-expire", &erin, "2y", "*"]);
    let run = store.import(&gpg.export(&["erin@example.org"])).expect(0);
    assert!(
        run.stdout.contains(&format!("imported {erin}")),
        "{}",
        run.stdout
    );
    let run = store.keys(&["list"]).expect(0);
    assert!(run.stdout.contains("  usable  "), "{}", run.stdout);
    assert!(run.stdout.contains("expires "), "{}", run.stdout);
}

#[test]
fn gnupg_elgamal_key_is_refused() {
    if !testkit::require_all(&["gpg", "gpgconf"]) {
        return;
    }
    let gpg = Gpg::new();
    let fay = gpg.generate("Fay <fay@example.org>", "dsa2048", "default", "never");
    gpg.run(&["--quick-add-key", &fay, "elg2048", "encr", "never"]);
    let store = Store::new();
    let run = store.import(&gpg.export(&["fay@example.org"])).expect(1);
    assert!(run.stderr.contains("ElGamal"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("gpg --quick-add-key {fay} cv25519 encr")),
        "{}",
        run.stderr
    );
    assert_one_line(&run.stderr);
    assert!(store.stored().is_empty(), "nothing written");
}

#[test]
fn sq_generated_cert_is_accepted() {
    if !testkit::require("sq") {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let key = work.path().join("bob.pgp");
    let sq = |args: &[&str]| -> Vec<u8> {
        let out = Command::new("sq")
            .env("HOME", work.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run sq");
        assert!(
            out.status.success(),
            "sq {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let key_path = key.to_str().expect("utf-8 path");
    sq(&[
        "key",
        "generate",
        "--userid",
        "<bob@example.org>",
        "--export",
        key_path,
    ]);
    let cert = sq(&["key", "extract-cert", key_path]);
    let store = Store::new();
    // The whole key is refused (secret material); its certificate is accepted, although
    // sequoia-generated certificates advertise SEIPDv2.
    store.import(&fs::read(&key).expect("read key")).expect(1);
    let run = store.import(&cert).expect(0);
    assert!(run.stdout.contains("<bob@example.org>"), "{}", run.stdout);
    let run = store.keys(&["show", "Bob@Example.org"]).expect(0);
    assert!(run.stdout.contains("(usable)"), "{}", run.stdout);
}

#[test]
fn expired_and_revoked_certs_are_refused() {
    let store = Store::new();
    let now = SystemTime::now();
    let (expired, expired_armor) = sequoia_cert(
        with_encryption("<old@example.org>")
            .set_creation_time(now - 730 * DAY)
            .set_validity_period(365 * DAY),
    );
    let run = store.import(&expired_armor).expect(1);
    assert!(
        run.stderr
            .contains(&format!("refused {}: expired on ", expired.fingerprint())),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--quick-set-expire"), "{}", run.stderr);
    assert_one_line(&run.stderr);

    let (good, good_armor) = sequoia_cert(with_encryption("<good@example.org>"));
    let (revoked, revocation) = with_encryption("<gone@example.org>")
        .generate()
        .expect("generate");
    let (revoked, _) = revoked.insert_packets(revocation).expect("revoke");
    let revoked_armor = revoked.armored().to_vec().expect("armor");
    let run = store.import(&revoked_armor).expect(1);
    assert!(run.stderr.contains("revoked"), "{}", run.stderr);
    assert!(store.stored().is_empty(), "nothing written");

    // Several in one file: the good one is imported, the bad ones reported, exit 1.
    let mut bundle = expired_armor.clone();
    bundle.extend(&good_armor);
    bundle.extend(&revoked_armor);
    let run = store.import(&bundle).expect(1);
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "imported {} <good@example.org>",
            good.fingerprint()
        )),
        "{}",
        run.stdout
    );
    assert_eq!(run.stderr.lines().count(), 2, "{}", run.stderr);
    assert_eq!(store.stored().len(), 1);
}

#[test]
fn revocation_of_a_stored_cert_is_merged_in() {
    let store = Store::new();
    let (cert, revocation) = with_encryption("<ivy@example.org>")
        .generate()
        .expect("generate");
    store
        .import(&cert.armored().to_vec().expect("armor"))
        .expect(0);
    let (revoked, _) = cert.clone().insert_packets(revocation).expect("revoke");
    let run = store
        .import(&revoked.armored().to_vec().expect("armor"))
        .expect(1);
    assert!(run.stderr.contains("revoked"), "{}", run.stderr);
    assert!(run.stderr.contains("no longer used"), "{}", run.stderr);
    // The stored copy now carries the revocation: the address no longer resolves to a
    // usable certificate.
    let run = store.keys(&["show", "ivy@example.org"]).expect(1);
    assert!(run.stdout.contains("unusable: revoked"), "{}", run.stdout);
    let run = store.keys(&["list"]).expect(0);
    assert!(run.stdout.contains("unusable:revoked"), "{}", run.stdout);
}

#[test]
fn cert_without_email_user_id_is_refused() {
    let store = Store::new();
    let (_, armor) = sequoia_cert(with_encryption("Just A Name"));
    let run = store.import(&armor).expect(1);
    assert!(run.stderr.contains("e-mail address"), "{}", run.stderr);
    assert_one_line(&run.stderr);
    assert!(store.stored().is_empty(), "nothing written");
}

#[test]
fn garbage_is_refused() {
    let store = Store::new();
    for garbage in [
        &b"this is not an OpenPGP certificate\n"[..],
        b"",
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm9wZQ==\n-----END PGP PUBLIC KEY BLOCK-----\n",
        &[0x99, 0x01, 0x0d, 0x04, 0xff, 0x00],
    ] {
        let run = store.import(garbage).expect(1);
        assert!(run.stderr.contains("refused"), "{}", run.stderr);
        assert_one_line(&run.stderr);
    }
    let missing = store.dir.path().join("missing.pgp");
    let run = store
        .keys(&["import", missing.to_str().expect("utf-8")])
        .expect(74);
    assert!(run.stderr.contains("cannot read"), "{}", run.stderr);
    assert!(store.stored().is_empty(), "nothing written");
}

#[test]
fn usage_errors_exit_64() {
    let store = Store::new();
    for args in [
        &[][..],
        &["frob"],
        &["import"],
        &["import", "a", "b"],
        &["show"],
        &["list", "extra"],
        &["remove"],
        &["remove", "not-hex"],
    ] {
        let run = store.keys(args).expect(64);
        assert!(run.stderr.contains("Usage:"), "{args:?}: {}", run.stderr);
    }
    store.keys(&["help"]).expect(0);
}

#[test]
fn list_of_empty_store_and_show_of_unknown_address() {
    let store = Store::new();
    // A store that does not exist is not an empty one: it may be a wrong path or a volume
    // that did not mount. list says so and fails; it does not create it.
    let run = store.keys(&["list"]).expect(75);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr.contains("cannot read the key store directory"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&*store.path().display().to_string()),
        "{}",
        run.stderr
    );
    assert!(!Path::new(&store.path()).exists(), "store not created");
    let run = store.keys(&["show", "nobody@example.org"]).expect(75);
    assert!(run.stderr.contains("cannot tell"), "{}", run.stderr);

    // init makes the empty store; then list is empty and succeeds.
    let run = store.keys(&["init"]).expect(0);
    assert!(run.stdout.contains("ready"), "{}", run.stdout);
    assert!(store.path().join(".sealgate-manifest").is_file());
    let run = store.keys(&["list"]).expect(0);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    let run = store.keys(&["show", "nobody@example.org"]).expect(1);
    assert!(run.stderr.contains("no certificate"), "{}", run.stderr);
}

#[test]
fn invalid_configuration_exits_78() {
    let store = Store::new();
    let out = store
        .command(&["list"])
        .env("SEALGATE_KEYSTORE_RELOAD", "soon")
        .stdin(Stdio::null())
        .output()
        .expect("run sealgate");
    let run = Run::from(out).expect(78);
    assert!(
        run.stderr.contains("SEALGATE_KEYSTORE_RELOAD"),
        "{}",
        run.stderr
    );
    assert!(!store.path().exists(), "nothing created");
}
