//! Real OpenPGP peers for tests: GnuPG 2.2, sq and rnp from Debian, each in a private home
//! directory, generating their own keys and decrypting what sealgate stored. Plus helpers to
//! take a stored PGP/MIME message apart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{bin_path, temp_dir};

/// Runs `cmd` with `stdin` fed in; returns (success, stdout, stderr).
fn run_with_input(cmd: &mut Command, stdin: &[u8]) -> (bool, Vec<u8>, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn OpenPGP tool");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = child.wait_with_output().expect("wait for OpenPGP tool");
    let _ = writer.join();
    (
        output.status.success(),
        output.stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// GnuPG with a private GNUPGHOME.
pub struct Gpg {
    home: tempfile::TempDir,
}

/// What `gpg --decrypt` said.
pub struct GpgDecryption {
    pub ok: bool,
    pub plaintext: Vec<u8>,
    /// The `[GNUPG:]` status lines.
    pub status: String,
}

impl Gpg {
    pub fn new() -> Gpg {
        let home = temp_dir("sealgate-gpg-");
        std::fs::set_permissions(
            home.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod GNUPGHOME");
        Gpg { home }
    }

    /// Its GNUPGHOME, for commands a test runs as written (README's blocks).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(bin_path("gpg"));
        cmd.env("GNUPGHOME", self.home.path()).args([
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        cmd
    }

    /// `--quick-gen-key 'Name <address>' ALGO default never` (algo: `future-default` for
    /// Cv25519, `default` for RSA-3072 with gpg 2.2, `rsa3072` with `usage` "sign" for a key
    /// without an encryption subkey).
    pub fn generate(&self, uid: &str, algo: &str, usage: &str) {
        let (ok, _, err) = run_with_input(
            self.command()
                .args(["--quick-gen-key", uid, algo, usage, "never"]),
            b"",
        );
        assert!(ok, "gpg --quick-gen-key {uid}: {err}");
    }

    /// The public certificate of `who`, armored.
    pub fn export(&self, who: &str) -> Vec<u8> {
        let (ok, out, err) = run_with_input(self.command().args(["--armor", "--export", who]), b"");
        assert!(ok && !out.is_empty(), "gpg --export {who}: {err}");
        out
    }

    /// The secret key of `who`, armored.
    pub fn export_secret(&self, who: &str) -> Vec<u8> {
        let (ok, out, err) = run_with_input(
            self.command()
                .args(["--armor", "--export-secret-keys", who]),
            b"",
        );
        assert!(
            ok && !out.is_empty(),
            "gpg --export-secret-keys {who}: {err}"
        );
        out
    }

    /// Imports keys (public or secret).
    pub fn import(&self, data: &[u8]) {
        let (ok, _, err) = run_with_input(self.command().arg("--import"), data);
        assert!(ok, "gpg --import: {err}");
    }

    pub fn decrypt(&self, armored: &[u8]) -> GpgDecryption {
        let (ok, out, err) = run_with_input(
            self.command().args(["--status-fd", "2", "--decrypt"]),
            armored,
        );
        GpgDecryption {
            ok,
            plaintext: out,
            status: err,
        }
    }

    /// `gpg --encrypt --armor` of `data` to `who` (trusted without a web of trust), as gpg
    /// writes it (LF line ends).
    pub fn encrypt(&self, who: &str, data: &[u8]) -> Vec<u8> {
        let (ok, out, err) = run_with_input(
            self.command().args([
                "--trust-model",
                "always",
                "--armor",
                "--encrypt",
                "--recipient",
                who,
            ]),
            data,
        );
        assert!(ok && !out.is_empty(), "gpg --encrypt to {who}: {err}");
        out
    }

    /// `gpg --list-packets`: shows every PKESK's key ID and the packet versions.
    pub fn list_packets(&self, armored: &[u8]) -> String {
        let (_, out, err) = run_with_input(self.command().arg("--list-packets"), armored);
        format!("{}{err}", String::from_utf8_lossy(&out))
    }

    /// `(algorithm id, bits)` of each subkey of `who` (`--with-colons` `sub` lines): 1 is RSA,
    /// 18 is ECDH (Cv25519).
    pub fn subkeys(&self, who: &str) -> Vec<(u32, u32)> {
        let (ok, out, err) = run_with_input(
            self.command().args(["--with-colons", "--list-keys", who]),
            b"",
        );
        assert!(ok, "gpg --list-keys: {err}");
        String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| l.starts_with("sub:"))
            .map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f[3].parse().unwrap_or(0), f[2].parse().unwrap_or(0))
            })
            .collect()
    }

    /// The fingerprint of `who`'s primary key.
    pub fn fingerprint(&self, who: &str) -> String {
        let (ok, out, err) = run_with_input(
            self.command().args(["--with-colons", "--fingerprint", who]),
            b"",
        );
        assert!(ok, "gpg --fingerprint: {err}");
        String::from_utf8_lossy(&out)
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("fingerprint line")
            .to_string()
    }
}

/// Debian's sq 0.27 (old command line).
pub struct Sq {
    dir: tempfile::TempDir,
}

impl Sq {
    pub fn new() -> Sq {
        Sq {
            dir: temp_dir("sealgate-sq-"),
        }
    }

    /// Generates a key (`cipher_suite`: `cv25519` or `rsa3k`); returns the certificate.
    pub fn generate(&self, name: &str, uid: &str, cipher_suite: &str) -> Vec<u8> {
        let key = self.key_path(name);
        let (ok, _, err) = run_with_input(
            Command::new(bin_path("sq")).args([
                "key",
                "generate",
                "--userid",
                uid,
                "--cipher-suite",
                cipher_suite,
                "--export",
                key.to_str().expect("utf-8 path"),
            ]),
            b"",
        );
        assert!(ok, "sq key generate: {err}");
        let (ok, cert, err) = run_with_input(
            Command::new(bin_path("sq")).args(["key", "extract-cert", key.to_str().expect("path")]),
            b"",
        );
        assert!(ok, "sq key extract-cert: {err}");
        cert
    }

    fn key_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pgp"))
    }

    /// `sq encrypt --recipient-cert` of `data` to the certificate `cert` (armored output).
    pub fn encrypt(&self, cert: &[u8], data: &[u8]) -> Vec<u8> {
        let path = self.dir.path().join("recipient.pgp");
        std::fs::write(&path, cert).expect("write recipient cert");
        let (ok, out, err) = run_with_input(
            Command::new(bin_path("sq")).args([
                "encrypt",
                "--recipient-cert",
                path.to_str().expect("path"),
            ]),
            data,
        );
        assert!(ok && !out.is_empty(), "sq encrypt: {err}");
        out
    }

    pub fn decrypt(&self, name: &str, armored: &[u8]) -> (bool, Vec<u8>, String) {
        let key = self.key_path(name);
        run_with_input(
            Command::new(bin_path("sq")).args([
                "decrypt",
                "--recipient-key",
                key.to_str().expect("path"),
            ]),
            armored,
        )
    }
}

/// rnp 0.16 with a private home directory.
pub struct Rnp {
    home: tempfile::TempDir,
}

impl Rnp {
    pub fn new() -> Rnp {
        Rnp {
            home: temp_dir("sealgate-rnp-"),
        }
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    /// Generates an RSA-3072 key with an encryption subkey; returns the certificate.
    pub fn generate_rsa(&self, uid: &str, address: &str) -> Vec<u8> {
        self.generate(&["--numbits", "3072", "--userid", uid], b"", address)
    }

    /// Generates an EdDSA key with a Curve25519 (ECDH) encryption subkey, answering the
    /// `--expert` prompt with 22 (EDDSA); returns the certificate.
    pub fn generate_cv25519(&self, uid: &str, address: &str) -> Vec<u8> {
        self.generate(&["--expert", "--userid", uid], b"22\n", address)
    }

    fn generate(&self, args: &[&str], answers: &[u8], address: &str) -> Vec<u8> {
        let home = self.home().to_str().expect("path");
        let (ok, _, err) = run_with_input(
            Command::new(bin_path("rnpkeys"))
                .args(["--homedir", home, "--generate-key", "--password", ""])
                .args(args),
            answers,
        );
        assert!(ok, "rnpkeys --generate-key: {err}");
        let (ok, cert, err) = run_with_input(
            Command::new(bin_path("rnpkeys")).args(["--homedir", home, "--export-key", address]),
            b"",
        );
        assert!(ok && !cert.is_empty(), "rnpkeys --export-key: {err}");
        cert
    }

    pub fn decrypt(&self, armored: &[u8]) -> (bool, Vec<u8>, String) {
        run_with_input(
            Command::new(bin_path("rnp")).args([
                "--homedir",
                self.home().to_str().expect("path"),
                "--password",
                "",
                "--decrypt",
                "--output",
                "-",
            ]),
            armored,
        )
    }
}

/// The ASCII-armored OpenPGP message inside a stored PGP/MIME message (part 2), CRLF as
/// stored.
pub fn armored_part(message: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(message);
    let start = text
        .find("-----BEGIN PGP MESSAGE-----")
        .unwrap_or_else(|| panic!("no armored block in:\n{text}"));
    let end_marker = "-----END PGP MESSAGE-----";
    let end = text[start..].find(end_marker).expect("armor end") + start + end_marker.len();
    text[start..end].as_bytes().to_vec()
}

/// The header block of a message (without its empty line) and its body.
pub fn split_message(message: &[u8]) -> (&[u8], &[u8]) {
    // No header fields at all: the empty line comes first.
    if let Some(body) = message.strip_prefix(b"\r\n") {
        return (b"", body);
    }
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (&message[..i + 2], &message[i + 4..]),
        None => (message, b""),
    }
}

/// The header fields of a header block, each with its folding, in order.
pub fn header_fields(block: &[u8]) -> Vec<Vec<u8>> {
    let mut fields: Vec<Vec<u8>> = Vec::new();
    for line in block.split_inclusive(|&b| b == b'\n') {
        if (line.starts_with(b" ") || line.starts_with(b"\t")) && !fields.is_empty() {
            if let Some(last) = fields.last_mut() {
                last.extend_from_slice(line);
            }
        } else {
            fields.push(line.to_vec());
        }
    }
    fields
}

/// True for a `Content-*` field.
pub fn is_content_field(field: &[u8]) -> bool {
    field.len() > 8 && field[..8].eq_ignore_ascii_case(b"content-")
}

/// What decrypting a PGP/MIME copy must give: the original's Content-* fields as received
/// (or RFC 2045's default), an empty line, the body byte for byte.
pub fn expected_inner(original: &[u8]) -> Vec<u8> {
    let (block, body) = split_message(original);
    let mut inner: Vec<u8> = header_fields(block)
        .into_iter()
        .filter(|f| is_content_field(f))
        .flatten()
        .collect();
    if inner.is_empty() {
        inner.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
    }
    inner.extend_from_slice(b"\r\n");
    inner.extend_from_slice(body);
    inner
}

/// The outer header fields of a stored copy, minus those the next hop added on top.
pub fn outer_fields(stored: &[u8]) -> Vec<Vec<u8>> {
    header_fields(split_message(stored).0)
}
