//! Private Postfix and Dovecot instances (reference §6.1), plus a `swaks` wrapper.
//!
//! Both peers need root (they switch to their own users), as in CI. Each instance lives in
//! its own temp dir under /tmp and listens on its own free ports on 127.0.0.1.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::{
    LOG_TAIL_LINES, STARTUP_TIMEOUT, bin_path, free_port, pid_alive, poll_until, port_accepts,
    read_lossy, run, signal, tail, temp_dir,
};

/// How often a start is retried with fresh ports when a port was taken by another process
/// between [`free_port`] and the peer's bind.
const START_ATTEMPTS: usize = 3;

/// How long `Drop` waits for a peer to exit after SIGTERM before it uses SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Password of every Dovecot user.
pub const DOVECOT_PASSWORD: &str = "pw";

/// Unix user that owns the Dovecot mail store and runs deliveries: a non-root user that
/// exists on every Debian system, even without Postfix (uid 8; `first_valid_uid = 1` admits
/// it).
const MAIL_USER: &str = "mail";

// ---------------------------------------------------------------------------------------------
// Dovecot
// ---------------------------------------------------------------------------------------------

/// A private Dovecot (LMTP + IMAP) on 127.0.0.1. Mail is stored as maildir in
/// `$dir/vmail/<domain>/<local part>`. Stopped on drop.
pub struct Dovecot {
    /// Instance dir: `dovecot.conf`, `dovecot.log`, `run/`, `state/`, `vmail/`.
    pub dir: tempfile::TempDir,
    /// LMTP listener (plain TCP, no TLS).
    pub lmtp_port: u16,
    /// IMAP listener (plain, `LOGIN user pw` allowed).
    pub imap_port: u16,
    /// Dovecot's SASL auth service on TCP (`service auth { inet_listener … }`), for Postfix's
    /// `smtpd_sasl_type = dovecot`, `smtpd_sasl_path = inet:127.0.0.1:<port>`. Only set by
    /// [`Dovecot::start_with_sasl`].
    pub auth_port: Option<u16>,
    /// The master process, run in the foreground (`-F`) so that it is our child: we learn
    /// about a failed start at once and can always reap it.
    master: Child,
}

impl Dovecot {
    /// Private Dovecot where every address in every domain is a mailbox with password
    /// [`DOVECOT_PASSWORD`] (static passdb/userdb, reference §6.1). Waits until the LMTP and
    /// IMAP ports accept connections.
    pub fn start() -> Dovecot {
        Self::start_inner(None, false)
    }

    /// Like [`Dovecot::start`], but only `users` (full addresses, e.g.
    /// `["alice@example.org"]`) exist, via a passwd-file passdb/userdb; LMTP answers
    /// `550 5.1.1 User doesn't exist` at RCPT for anybody else.
    pub fn start_with_users(users: &[&str]) -> Dovecot {
        Self::start_inner(Some(users), false)
    }

    /// Like [`Dovecot::start`] (every user exists, password [`DOVECOT_PASSWORD`]), plus the
    /// auth service on a TCP listener ([`Dovecot::auth_port`]) with mechanisms PLAIN and
    /// LOGIN, so a Postfix smtpd can authenticate SMTP clients against it
    /// ([`PostfixConfig::with_submission`]). Waits for that port too.
    pub fn start_with_sasl() -> Dovecot {
        Self::start_inner(None, true)
    }

    fn start_inner(users: Option<&[&str]>, sasl: bool) -> Dovecot {
        let bin = bin_path("dovecot");
        for attempt in 1..=START_ATTEMPTS {
            let dir = temp_dir("sealgate-dovecot-");
            let (lmtp_port, imap_port) = (free_port(), free_port());
            let auth_port = sasl.then(free_port);
            write_dovecot_conf(dir.path(), lmtp_port, imap_port, users, auth_port);

            // Startup errors (bad config, port in use) go to stderr before the log is open.
            let stderr =
                fs::File::create(dir.path().join("dovecot.stderr")).expect("create dovecot.stderr");
            let master = Command::new(&bin)
                .arg("-F")
                .arg("-c")
                .arg(dir.path().join("dovecot.conf"))
                .stdin(Stdio::null())
                .stdout(stderr.try_clone().expect("dup dovecot.stderr"))
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            // From here on, Drop stops the master even if we panic.
            let mut dovecot = Dovecot {
                dir,
                lmtp_port,
                imap_port,
                auth_port,
                master,
            };

            let mut exited = false;
            let ready = poll_until(STARTUP_TIMEOUT, || {
                exited = !matches!(dovecot.master.try_wait(), Ok(None));
                exited
                    || (port_accepts(lmtp_port)
                        && port_accepts(imap_port)
                        && auth_port.is_none_or(port_accepts))
            });
            if ready && !exited {
                return dovecot;
            }
            let log = dovecot.log();
            if exited && log.contains("Address already in use") && attempt < START_ATTEMPTS {
                continue; // Another process took one of our ports; try fresh ones.
            }
            let why = if exited {
                "Dovecot exited during startup"
            } else {
                "timed out waiting for Dovecot's LMTP, IMAP (and auth) ports"
            };
            panic!(
                "{why} (lmtp 127.0.0.1:{lmtp_port}, imap 127.0.0.1:{imap_port}, auth \
                 {auth_port:?}); log tail:\n{}",
                tail(&log, LOG_TAIL_LINES)
            );
        }
        unreachable!("the last start attempt returns or panics")
    }

    /// All messages in `user`'s INBOX, read back over IMAP (`LOGIN user pw`, `EXAMINE INBOX`,
    /// `FETCH n BODY.PEEK[]`), in sequence order. Bytes are exactly what IMAP returns, which
    /// means CRLF line endings, plus the headers Dovecot added (`Return-Path`,
    /// `Delivered-To`, its own `Received`). Panics if the IMAP session fails.
    pub fn fetch_inbox(&self, user: &str) -> Vec<Vec<u8>> {
        let out = Command::new(bin_path("python3"))
            .arg("-c")
            .arg(IMAP_FETCH_PY)
            .arg(self.imap_port.to_string())
            .arg(user)
            .arg(DOVECOT_PASSWORD)
            .stdin(Stdio::null())
            .output()
            .expect("run python3 for the IMAP read-back");
        if !out.status.success() {
            panic!(
                "IMAP read-back of {user}'s INBOX failed:\n{}\nDovecot log tail:\n{}",
                String::from_utf8_lossy(&out.stderr),
                tail(&self.log(), LOG_TAIL_LINES)
            );
        }
        parse_length_prefixed(&out.stdout)
    }

    /// Polls until `user`'s INBOX holds at least `n` messages, then returns all of them
    /// (fetched over IMAP, see [`Dovecot::fetch_inbox`]). Between IMAP fetches it only counts
    /// the maildir's files (cheap, and no IMAP session noise in the log). Panics with the
    /// Dovecot log tail on timeout.
    pub fn wait_for_inbox(&self, user: &str, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let maildir = self.maildir(user);
        let mut messages = Vec::new();
        let done = poll_until(timeout, || {
            // Dovecot writes into tmp/ and renames into new/, so files there are complete.
            if count_files(&maildir.join("new")) + count_files(&maildir.join("cur")) < n {
                return false;
            }
            messages = self.fetch_inbox(user);
            messages.len() >= n
        });
        if !done {
            panic!(
                "timed out after {timeout:?} waiting for {n} message(s) in {user}'s INBOX \
                 ({} on disk in {}); Dovecot log tail:\n{}",
                count_files(&maildir.join("new")) + count_files(&maildir.join("cur")),
                maildir.display(),
                tail(&self.log(), LOG_TAIL_LINES)
            );
        }
        messages
    }

    /// Number of messages in `user`'s maildir on disk (new/ and cur/), without IMAP. Dovecot
    /// renames a message into new/ before it answers 250, and Postfix logs a recipient's
    /// outcome only after that answer: once the outcome is in Postfix's log, this is final,
    /// so a test can check that nothing was stored without waiting.
    pub fn stored_count(&self, user: &str) -> usize {
        let maildir = self.maildir(user);
        count_files(&maildir.join("new")) + count_files(&maildir.join("cur"))
    }

    /// The maildir of `user` on disk. Dovecot lowercases user names (`auth_username_format =
    /// %Lu`), so the path is lowercase too.
    pub fn maildir(&self, user: &str) -> PathBuf {
        let user = user.to_lowercase();
        let (local, domain) = user.rsplit_once('@').unwrap_or((&user, ""));
        self.dir.path().join("vmail").join(domain).join(local)
    }

    /// Dovecot's log (`$dir/dovecot.log`), preceded by anything the master printed on
    /// stdout/stderr (startup errors).
    pub fn log(&self) -> String {
        let mut log = read_lossy(&self.dir.path().join("dovecot.stderr"));
        log.push_str(&read_lossy(&self.dir.path().join("dovecot.log")));
        log
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if matches!(self.master.try_wait(), Ok(Some(_))) {
            return;
        }
        // SIGTERM lets the master stop its children (lmtp, imap, auth) before it exits.
        signal(i64::from(self.master.id()), "TERM");
        let exited = poll_until(STOP_TIMEOUT, || !matches!(self.master.try_wait(), Ok(None)));
        if !exited {
            let _ = self.master.kill();
            let _ = self.master.wait();
        }
    }
}

impl Dovecot {
    /// True while the master process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.master.try_wait(), Ok(None))
    }

    /// Stops the instance as `Drop` does (SIGTERM to the master, which stops lmtp, imap and
    /// auth; SIGKILL after 10 s), then waits until the LMTP and IMAP ports refuse
    /// connections. Sessions in flight are cut. The instance dir and its mail store stay;
    /// [`Dovecot::restart`] brings it back on the same ports. Does nothing when it is not
    /// running.
    pub fn stop(&mut self) {
        if self.is_running() {
            signal(i64::from(self.master.id()), "TERM");
            let exited = poll_until(STOP_TIMEOUT, || !self.is_running());
            if !exited {
                let _ = self.master.kill();
                let _ = self.master.wait();
            }
        }
        let (lmtp, imap) = (self.lmtp_port, self.imap_port);
        if !poll_until(STOP_TIMEOUT, || !port_accepts(lmtp) && !port_accepts(imap)) {
            panic!(
                "Dovecot's ports 127.0.0.1:{lmtp}/{imap} still accept connections after its \
                 master exited; log tail:\n{}",
                tail(&self.log(), LOG_TAIL_LINES)
            );
        }
    }

    /// Stops the instance if it runs ([`Dovecot::stop`]) and starts it again with the same
    /// configuration, ports and mail store, waiting until its ports accept connections.
    /// A bind that fails because a port is still held is retried until the startup timeout.
    /// Panics with the log tail when it does not come back.
    pub fn restart(&mut self) {
        self.stop();
        let bin = bin_path("dovecot");
        let conf = self.dir.path().join("dovecot.conf");
        let stderr_path = self.dir.path().join("dovecot.stderr");
        let ports = [Some(self.lmtp_port), Some(self.imap_port), self.auth_port];
        let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
        loop {
            // Append: the earlier runs' startup messages stay readable in `log()`.
            let stderr = fs::File::options()
                .create(true)
                .append(true)
                .open(&stderr_path)
                .expect("open dovecot.stderr");
            self.master = Command::new(&bin)
                .arg("-F")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(stderr.try_clone().expect("dup dovecot.stderr"))
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut exited = false;
            let ready = poll_until(
                deadline.saturating_duration_since(std::time::Instant::now()),
                || {
                    exited = !self.is_running();
                    exited || ports.iter().flatten().all(|&p| port_accepts(p))
                },
            );
            if ready && !exited {
                return;
            }
            if !exited {
                let _ = self.master.kill();
                let _ = self.master.wait();
            }
            if std::time::Instant::now() >= deadline {
                panic!(
                    "Dovecot did not come back on ports {ports:?}; log tail:\n{}",
                    tail(&self.log(), LOG_TAIL_LINES)
                );
            }
            // Exited at once (typically a port still held): try again shortly.
            std::thread::sleep(crate::POLL_INTERVAL);
        }
    }
}

/// Writes `$dir/dovecot.conf` (reference §6.1) and creates the mail store. With `auth_port`,
/// the auth service also listens on 127.0.0.1:`auth_port` (for Postfix SASL).
fn write_dovecot_conf(
    dir: &Path,
    lmtp_port: u16,
    imap_port: u16,
    users: Option<&[&str]>,
    auth_port: Option<u16>,
) {
    let d = dir.display();
    let vmail = dir.join("vmail");
    fs::create_dir(&vmail).expect("create vmail dir");
    // Dovecot creates <domain>/<user> below it as the mail user, so that user must own it;
    // otherwise delivery fails with "mkdir(...) failed: Permission denied" (451 4.2.0).
    let (ok, out) = run(Command::new("chown")
        .arg(format!("{MAIL_USER}:{MAIL_USER}"))
        .arg(&vmail));
    assert!(ok, "chown {MAIL_USER} {}: {out}", vmail.display());

    let auth = match users {
        None => format!(
            "passdb {{\n  driver = static\n  args = password={DOVECOT_PASSWORD}\n}}\n\
             userdb {{\n  driver = static\n  args = uid={MAIL_USER} gid={MAIL_USER} home={d}/vmail/%d/%n\n}}\n"
        ),
        Some(users) => {
            // passwd-file: user:password:uid:gid:gecos:home:shell:extra; the userdb fields come
            // from default_fields so the file only needs names and passwords.
            let mut passwd = String::new();
            for user in users {
                writeln!(passwd, "{user}:{{PLAIN}}{DOVECOT_PASSWORD}::::::")
                    .expect("write to String");
            }
            fs::write(dir.join("users"), passwd).expect("write Dovecot users file");
            format!(
                "passdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
                 userdb {{\n  driver = passwd-file\n  args = {d}/users\n  \
                 default_fields = uid={MAIL_USER} gid={MAIL_USER} home={d}/vmail/%d/%n\n}}\n"
            )
        }
    };
    // Postfix's dovecot SASL client speaks Dovecot's auth protocol over this listener. The
    // mechanisms PLAIN and LOGIN are what Postfix offers to the SMTP client in EHLO.
    let sasl = auth_port.map_or_else(String::new, |port| {
        format!(
            "auth_mechanisms = plain login
service auth {{
  inet_listener postfix-sasl {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"
        )
    });
    let conf = format!(
        "# Generated by testkit/src/peers.rs (reference §6.1).
protocols = lmtp imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = no
# Allow our mail user (uid 8), else: Mail access for users with UID ... not permitted.
first_valid_uid = 1
disable_plaintext_auth = no
mail_location = maildir:{d}/vmail/%d/%n
default_internal_user = dovenull
default_login_user = dovenull
{auth}service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
{sasl}"
    );
    fs::write(dir.join("dovecot.conf"), conf).expect("write dovecot.conf");
}

/// IMAP read-back: argv = port user password. Prints, per message, its length in decimal,
/// a newline, then the raw bytes, so binary content survives unchanged.
const IMAP_FETCH_PY: &str = r#"
import imaplib, sys
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
imap = imaplib.IMAP4("127.0.0.1", port, timeout=20)
imap.login(user, password)
typ, data = imap.select("INBOX", readonly=True)
if typ != "OK":
    sys.exit("EXAMINE INBOX failed: %r" % data)
out = sys.stdout.buffer
for seq in range(1, int(data[0]) + 1):
    typ, resp = imap.fetch(str(seq), "(BODY.PEEK[])")
    if typ != "OK":
        sys.exit("FETCH %d failed: %r" % (seq, resp))
    body = next(part[1] for part in resp if isinstance(part, tuple))
    out.write(b"%d\n" % len(body))
    out.write(body)
imap.logout()
"#;

/// Splits the output of [`IMAP_FETCH_PY`] into messages.
fn parse_length_prefixed(mut buf: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    while !buf.is_empty() {
        let nl = buf
            .iter()
            .position(|&b| b == b'\n')
            .expect("length line from IMAP helper");
        let len: usize = std::str::from_utf8(&buf[..nl])
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("decimal length from IMAP helper");
        let body = &buf[nl + 1..];
        assert!(body.len() >= len, "IMAP helper output truncated");
        messages.push(body[..len].to_vec());
        buf = &body[len..];
    }
    messages
}

/// Number of entries in `dir` (0 if it does not exist yet).
fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, Iterator::count)
}

// ---------------------------------------------------------------------------------------------
// Postfix
// ---------------------------------------------------------------------------------------------

/// A private Postfix on 127.0.0.1 (reference §6.1). Stopped on drop.
pub struct Postfix {
    /// Instance dir: `conf/` (main.cf, master.cf), `queue/`, `data/`, `maillog`.
    pub dir: tempfile::TempDir,
    /// Port of the smtpd on 127.0.0.1.
    pub smtp_port: u16,
}

/// Test-specific additions to the generated Postfix configuration.
#[derive(Debug, Clone, Default)]
pub struct PostfixConfig {
    /// Extra main.cf lines, appended (a later setting overrides an earlier one), e.g.
    /// `"virtual_transport = lmtp:inet:127.0.0.1:1234"`.
    pub main_cf: Vec<String>,
    /// Extra master.cf lines, appended as full lines, e.g. a content_filter reinjection
    /// smtpd. Pick their ports with [`free_port`]; chroot must be `n`. `-o` lines before the
    /// first service line continue the port-25 smtpd (written last before them).
    pub master_cf: Vec<String>,
}

impl PostfixConfig {
    /// Adds `line` to main.cf (builder style).
    pub fn with_main_cf(mut self, line: impl Into<String>) -> PostfixConfig {
        self.main_cf.push(line.into());
        self
    }

    /// Hands every mailbox domain (`virtual_transport`) to an LMTP server on
    /// 127.0.0.1:`port` (sealgate).
    pub fn with_lmtp_transport(self, port: u16) -> PostfixConfig {
        self.with_main_cf(format!("virtual_transport = lmtp:inet:127.0.0.1:{port}"))
    }

    /// Offers STARTTLS (opportunistic: `smtpd_tls_security_level = may`) on every smtpd with
    /// `cert`, and writes the TLS details into the Received header
    /// (`smtpd_tls_received_header = yes`, reference §7.1). The smtpd processes read the files
    /// when a client connects, so `cert` must outlive the Postfix instance.
    pub fn with_starttls(self, cert: &TestCert) -> PostfixConfig {
        self.with_main_cf("smtpd_tls_security_level = may")
            .with_main_cf(format!("smtpd_tls_cert_file = {}", cert.cert.display()))
            .with_main_cf(format!("smtpd_tls_key_file = {}", cert.key.display()))
            .with_main_cf("smtpd_tls_received_header = yes")
            .with_main_cf("smtpd_tls_loglevel = 1")
    }

    /// Lets the smtpds negotiate TLS 1.0 and 1.1, which OpenSSL 3 refuses at its default
    /// security level (their handshake signatures use SHA-1): Postfix's cipher lists get
    /// `@SECLEVEL=0`. The client must lower its level too (swaks: `--tls-cipher
    /// DEFAULT:@SECLEVEL=0`). Postfix's own protocol floor is already `>=TLSv1`.
    pub fn with_legacy_tls(self) -> PostfixConfig {
        self.with_main_cf(
            "tls_medium_cipherlist = aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH:@SECLEVEL=0",
        )
        .with_main_cf("tls_high_cipherlist = aNULL:-aNULL:HIGH:@STRENGTH:@SECLEVEL=0")
        .with_main_cf("smtpd_tls_protocols = >=TLSv1")
        .with_main_cf("smtpd_tls_mandatory_protocols = >=TLSv1")
    }

    /// Adds a submission smtpd on 127.0.0.1:`port` that authenticates clients with SASL
    /// against Dovecot's auth listener on 127.0.0.1:`sasl_port` ([`Dovecot::start_with_sasl`])
    /// and accepts only authenticated clients (everybody else gets `554 5.7.1 … Relay access
    /// denied`-style rejections at RCPT). STARTTLS is offered there as on the main smtpd when
    /// [`PostfixConfig::with_starttls`] is used too. Its log lines say `postfix/submission`.
    pub fn with_submission(mut self, port: u16, sasl_port: u16) -> PostfixConfig {
        self.master_cf.extend([
            format!("127.0.0.1:{port} inet n - n - - smtpd"),
            "  -o syslog_name=postfix/submission".into(),
            "  -o smtpd_sasl_auth_enable=yes".into(),
            "  -o smtpd_sasl_type=dovecot".into(),
            format!("  -o smtpd_sasl_path=inet:127.0.0.1:{sasl_port}"),
            "  -o smtpd_tls_auth_only=no".into(),
            "  -o smtpd_client_restrictions=".into(),
            "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject".into(),
            "  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject".into(),
        ]);
        self
    }
}

/// A throw-away self-signed certificate and its unencrypted key (RSA 2048, valid two days),
/// made with `openssl req -x509` in its own temp dir (removed on drop). For STARTTLS tests:
/// [`PostfixConfig::with_starttls`]. Needs the `openssl` command (check with
/// [`crate::require`]).
pub struct TestCert {
    /// Holds `cert.pem` and `key.pem`.
    pub dir: tempfile::TempDir,
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PEM, unencrypted).
    pub key: PathBuf,
}

impl TestCert {
    /// Creates a certificate for `CN=<common_name>`. Panics with openssl's output if it fails.
    pub fn generate(common_name: &str) -> TestCert {
        let dir = temp_dir("sealgate-cert-");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let (ok, out) = run(Command::new(bin_path("openssl"))
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .arg("-subj")
            .arg(format!("/CN={common_name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        assert!(ok, "openssl req -x509 failed:\n{out}");
        TestCert { dir, cert, key }
    }
}

impl Postfix {
    /// Starts a private Postfix: own config dir, queue and data directory under `dir`,
    /// smtpd on 127.0.0.1:`smtp_port`, every service without chroot, log in `$dir/maillog`,
    /// `myhostname = mx.example.org`, `virtual_mailbox_domains = example.org
    /// secure.example.org`, relaying for 127.0.0.0/8 only, short retry times. Nothing leaves
    /// the machine: other domains use an error transport, so smtpd rejects such recipients
    /// at RCPT and bounces to outside senders fail at once (the queue drains, no DNS).
    ///
    /// Set `virtual_transport` in `config.main_cf`. The default is an error transport, so
    /// with a forgotten setting smtpd rejects the recipient at RCPT (`550 5.3.5 … test did
    /// not set virtual_transport`) instead of trying virtual(8). Runs `postfix check`
    /// (panics with its output and the log on error), `postfix start`, and waits for the
    /// smtpd port.
    pub fn start(config: PostfixConfig) -> Postfix {
        let bin = bin_path("postfix");
        for attempt in 1..=START_ATTEMPTS {
            let dir = temp_dir("sealgate-postfix-");
            let smtp_port = free_port();
            write_postfix_conf(dir.path(), smtp_port, &config);
            let conf = dir.path().join("conf");

            // `check` also creates the queue directories with the right owners and modes
            // (post-install create-missing), so no separate `set-permissions` is needed.
            let (ok, out) = run(Command::new(&bin).arg("-c").arg(&conf).arg("check"));
            if !ok {
                panic!(
                    "postfix check failed:\n{out}\nmaillog tail:\n{}",
                    tail(&read_lossy(&dir.path().join("maillog")), LOG_TAIL_LINES)
                );
            }
            // From here on, Drop stops Postfix even if we panic.
            let postfix = Postfix { dir, smtp_port };

            // `start` waits until the master has initialised (`master -w`), so a bind error
            // shows as a failed start. It prints nothing: errors are in the maillog.
            let (ok, out) = run(Command::new(&bin).arg("-c").arg(&conf).arg("start"));
            if !ok {
                let log = postfix.log();
                if log.contains("Address already in use") && attempt < START_ATTEMPTS {
                    continue; // Another process took our port; try a fresh one.
                }
                panic!(
                    "postfix start failed (smtpd 127.0.0.1:{smtp_port}):\n{out}\nmaillog tail:\n{}",
                    tail(&log, LOG_TAIL_LINES)
                );
            }
            if !poll_until(STARTUP_TIMEOUT, || port_accepts(smtp_port)) {
                panic!(
                    "timed out waiting for Postfix's smtpd on 127.0.0.1:{smtp_port}; maillog tail:\n{}",
                    tail(&postfix.log(), LOG_TAIL_LINES)
                );
            }
            return postfix;
        }
        unreachable!("the last start attempt returns or panics")
    }

    /// The config directory, for `-c` with Postfix commands (`postconf -c`, `postqueue -c`…).
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    /// The maillog so far. Postfix writes it through postlogd, so a line can show up a few
    /// milliseconds after the event: poll, don't read once.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("maillog"))
    }

    /// Waits until the maillog has a delivery line for `rcpt` (`to=<rcpt>`) with
    /// `status=<status>` (`sent`, `bounced`, `deferred`, `expired`), and returns the first
    /// such line. Panics on timeout, quoting every log line about `rcpt`.
    pub fn wait_for_status(&self, rcpt: &str, status: &str, timeout: Duration) -> String {
        let to = format!("to=<{rcpt}>");
        let status_field = format!(" status={status} ");
        let mut found = None;
        let done = poll_until(timeout, || {
            found = self
                .log()
                .lines()
                .find(|l| l.contains(&to) && l.contains(&status_field))
                .map(str::to_owned);
            found.is_some()
        });
        match found {
            Some(line) if done => line,
            _ => {
                let log = self.log();
                let mut about: Vec<&str> = log.lines().filter(|l| l.contains(&to)).collect();
                if about.is_empty() {
                    about.push("(none)");
                }
                panic!(
                    "timed out after {timeout:?} waiting for status={status} for {to}; lines \
                     about it:\n{}\nmaillog tail:\n{}",
                    about.join("\n"),
                    tail(&log, LOG_TAIL_LINES)
                );
            }
        }
    }

    /// Waits until the maillog has at least `n` delivery lines for `rcpt` (`to=<rcpt>` with
    /// any `status=`: sent, bounced, deferred, expired), and returns all of them in log order.
    /// Unlike [`Postfix::wait_for_status`], a wrong outcome shows at once instead of after the
    /// timeout: check the status of the returned lines with [`status_of`]. Panics on timeout,
    /// quoting every log line about `rcpt`.
    pub fn wait_for_outcomes(&self, rcpt: &str, n: usize, timeout: Duration) -> Vec<String> {
        let to = format!("to=<{rcpt}>");
        let mut found = Vec::new();
        let done = poll_until(timeout, || {
            found = self
                .log()
                .lines()
                .filter(|l| l.contains(&to) && status_of(l).is_some())
                .map(str::to_owned)
                .collect();
            found.len() >= n
        });
        if !done {
            let log = self.log();
            let mut about: Vec<&str> = log.lines().filter(|l| l.contains(&to)).collect();
            if about.is_empty() {
                about.push("(none)");
            }
            panic!(
                "timed out after {timeout:?} waiting for {n} delivery line(s) for {to}; lines \
                 about it:\n{}\nmaillog tail:\n{}",
                about.join("\n"),
                tail(&log, LOG_TAIL_LINES)
            );
        }
        found
    }

    /// `postqueue -f`: retries all deferred mail now.
    pub fn flush(&self) {
        let (ok, out) = run(Command::new(bin_path("postqueue"))
            .arg("-c")
            .arg(self.conf_dir())
            .arg("-f"));
        assert!(ok, "postqueue -f failed: {out}");
    }

    /// True when the queue is empty (`postqueue -j` lists nothing). Panics if the queue
    /// cannot be listed.
    pub fn queue_is_empty(&self) -> bool {
        let out = Command::new(bin_path("postqueue"))
            .arg("-c")
            .arg(self.conf_dir())
            .arg("-j")
            .stdin(Stdio::null())
            .output()
            .expect("run postqueue -j");
        assert!(
            out.status.success(),
            "postqueue -j failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout.iter().all(u8::is_ascii_whitespace)
    }

    /// PID of the master daemon, from `$queue/pid/master.pid` (None when not running).
    fn master_pid(&self) -> Option<u32> {
        fs::read_to_string(self.dir.path().join("queue/pid/master.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // Same as `postfix stop` (SIGTERM to the master, which stops its children), but
        // without its 1-second sleep loop: we poll for the master to be gone instead.
        let Some(pid) = self.master_pid() else { return };
        signal(i64::from(pid), "TERM");
        if !poll_until(STOP_TIMEOUT, || !pid_alive(pid)) {
            // Like `postfix stop` "with force": the master leads its process group.
            signal(-i64::from(pid), "KILL");
        }
    }
}

/// The `status=` word of a Postfix delivery log line (`sent`, `bounced`, `deferred`,
/// `expired`), or None for any other line.
pub fn status_of(line: &str) -> Option<&str> {
    let rest = &line[line.find(" status=")? + " status=".len()..];
    Some(rest.split(' ').next().unwrap_or(rest))
}

/// The daemons a private instance needs (Debian's master.cf minus local/virtual/pipe
/// services), all with chroot `n`: a chroot would need copies of /etc files in the queue dir.
const MASTER_CF_SERVICES: &str = "\
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
lmtp       unix  -       -       n       -       -       lmtp
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
";

/// Writes `$dir/conf/main.cf` and `master.cf` and creates the queue directory.
fn write_postfix_conf(dir: &Path, smtp_port: u16, config: &PostfixConfig) {
    let d = dir.display();
    // Postfix does not create queue_directory itself ("fatal: chdir(...): No such file").
    fs::create_dir(dir.join("queue")).expect("create Postfix queue dir");
    fs::create_dir(dir.join("conf")).expect("create Postfix conf dir");

    let mut main_cf = format!(
        "# Generated by testkit/src/peers.rs (reference §6.1).
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.example.org
mydomain = example.org
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks reject
virtual_mailbox_domains = example.org secure.example.org
virtual_transport = error:5.3.5 test did not set virtual_transport
# Nothing leaves the machine: no DNS lookups, bounces to outside senders fail at once.
default_transport = error:5.7.1 test instance does not relay to other domains
relay_transport = error:5.7.1 test instance does not relay to other domains
# Debian's default alias_maps (hash:/etc/aliases) logs errors when /etc/aliases.db is absent.
alias_maps =
alias_database =
# Log to a file: without syslog, Postfix's fatal errors are otherwise invisible.
# maillog_file must start with one of maillog_file_prefixes.
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
# Retry deferred mail quickly.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"
    );
    if !config.main_cf.is_empty() {
        main_cf.push_str("# Test-specific settings.\n");
        for line in &config.main_cf {
            main_cf.push_str(line);
            main_cf.push('\n');
        }
    }
    fs::write(dir.join("conf/main.cf"), main_cf).expect("write main.cf");

    // The port-25 smtpd last, so that `-o` lines at the start of `config.master_cf` continue
    // it (a shipped snippet that changes the `smtp inet` service).
    let mut master_cf = format!(
        "# Generated by testkit/src/peers.rs.\n{MASTER_CF_SERVICES}\
         127.0.0.1:{smtp_port} inet n - n - - smtpd\n"
    );
    for line in &config.master_cf {
        master_cf.push_str(line);
        master_cf.push('\n');
    }
    fs::write(dir.join("conf/master.cf"), master_cf).expect("write master.cf");

    // Postfix does not trust a config file modified in the last ~2 seconds (it may still be
    // being edited): every command re-reads it every 300 ms until it is old enough, which
    // makes `postfix check` take 2 s. Backdate both files.
    for file in ["conf/main.cf", "conf/master.cf"] {
        fs::File::options()
            .write(true)
            .open(dir.join(file))
            .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(60)))
            .unwrap_or_else(|e| panic!("backdate {file}: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// swaks
// ---------------------------------------------------------------------------------------------

/// Runs `swaks` with `args` and returns (exit status success, stdout followed by stderr).
/// Panics only if swaks cannot be run. swaks exits non-zero when the server rejects
/// something (e.g. 24 for a rejected RCPT), so a rejection test checks the text.
pub fn swaks(args: &[&str]) -> (bool, String) {
    run(Command::new(bin_path("swaks")).args(args))
}
