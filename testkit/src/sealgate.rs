//! Runs the real sealgate binary built by cargo for this test run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use crate::{LOG_TAIL_LINES, STARTUP_TIMEOUT, poll_until, signal, tail, temp_dir};

/// The sealgate executable cargo built for this test or bench run. Cargo names it in
/// `CARGO_BIN_EXE_sealgate` when it runs a test or bench target; a test binary started by hand
/// looks where cargo puts it, beside its own `deps/` directory (`target/<profile>/sealgate`).
/// Panics when neither exists.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_sealgate") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the path of this test binary");
    let mut dir = exe
        .parent()
        .expect("the test binary's directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("sealgate");
    assert!(
        path.is_file(),
        "no sealgate binary at {} (run the tests with cargo, which builds it)",
        path.display()
    );
    path
}

/// A command running [`binary`], hermetic: without the `SEALGATE_*` variables of the test's own
/// environment (a developer's shell cannot change the test) and with `SEALGATE_ENV_FILE` at
/// /dev/null (`sealgate keys` would otherwise read the host's /etc/sealgate/sealgate.env).
pub fn command() -> Command {
    let mut cmd = Command::new(binary());
    remove_sealgate_env(&mut cmd);
    cmd.env("SEALGATE_ENV_FILE", "/dev/null");
    cmd
}

/// Removes every `SEALGATE_*` variable of this process's environment from `cmd`'s.
fn remove_sealgate_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SEALGATE_") {
            cmd.env_remove(&key);
        }
    }
}

/// How long [`Sealgate::terminate`] waits for a graceful exit after SIGTERM.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(20);

/// A running sealgate process. Its stdout and stderr are collected line by line (ANSI colour
/// codes stripped) by background threads; the process is killed on drop if still running.
pub struct Sealgate {
    /// The process.
    pub child: Child,
    /// Bound LMTP address from the `listening … protocol=lmtp address=…` log line, e.g.
    /// `127.0.0.1:40123`; `unix:/path` only when sealgate listens on a unix socket alone;
    /// empty with `SEALGATE_LMTP_LISTEN=off`.
    pub lmtp_addr: String,
    /// Bound milter address from the `listening … protocol=milter address=…` log line, when
    /// `SEALGATE_MILTER_LISTEN` is set (and not `off`).
    pub milter_addr: Option<String>,
    /// Bound HTTP (metrics, health) address from the `listening … protocol=http address=…`
    /// log line, e.g. `127.0.0.1:40124`; `None` with `SEALGATE_METRICS_LISTEN=off`.
    pub metrics_addr: Option<String>,
    /// Private working directory of the process (its cwd); tests may put files here.
    pub dir: tempfile::TempDir,
    /// Log lines from stdout and stderr, in arrival order.
    lines: Arc<Mutex<Vec<String>>>,
    /// Number of output streams still open; 0 once the process and its pipes are gone.
    open_streams: Arc<AtomicUsize>,
}

impl Sealgate {
    /// Spawns the sealgate binary ([`binary`]) with `env` added to the test's
    /// environment, and waits (up to 20 s) until it logs that its LMTP listener (unless
    /// `SEALGATE_LMTP_LISTEN=off`) and its milter listener (if `SEALGATE_MILTER_LISTEN` is set)
    /// are bound.
    ///
    /// Defaults, each unless `env` sets it: `RUST_LOG=info`,
    /// `SEALGATE_LMTP_LISTEN=127.0.0.1:0`, `SEALGATE_METRICS_LISTEN=127.0.0.1:0` (the
    /// default port 9925 would clash between parallel tests; its line is waited for too),
    /// `SEALGATE_TRUSTED_MTA=mx.example.org` (the private Postfix's myhostname; sealgate
    /// requires it with secure addresses or an explicit `SEALGATE_SCRUB`),
    /// `NO_COLOR=1` (tracing's ANSI codes would split `address=` in the log line). Every other `SEALGATE_*` variable of the test's own
    /// environment is removed, so a developer's shell cannot change the test.
    ///
    /// The key store (`SEALGATE_KEYSTORE`, default `keys` in the working directory) gets an
    /// empty manifest if it has none, as `sealgate keys init` would make it: without one
    /// sealgate cannot tell a new store from one that lost its contents, and tempfails every
    /// recipient without a key. [`Sealgate::spawn_with_store_as_is`] leaves the store alone.
    pub fn spawn(env: &[(&str, &str)]) -> Sealgate {
        Sealgate::start(env, true, None)
    }

    /// [`Sealgate::spawn`] without touching the key store (tests of a store without manifest).
    pub fn spawn_with_store_as_is(env: &[(&str, &str)]) -> Sealgate {
        Sealgate::start(env, false, None)
    }

    /// [`Sealgate::spawn_with_store_as_is`] as `user` (and group `group`, no supplementary
    /// groups) through `setpriv`, when the test runs as root: how a packaged service runs.
    /// Its working directory is made world-accessible.
    pub fn spawn_as(user: &str, group: &str, env: &[(&str, &str)]) -> Sealgate {
        Sealgate::start(env, false, Some((user, group)))
    }

    fn start(env: &[(&str, &str)], prepare_store: bool, user: Option<(&str, &str)>) -> Sealgate {
        let dir = temp_dir("sealgate-run-");
        if prepare_store {
            let store = env
                .iter()
                .find(|(k, _)| *k == "SEALGATE_KEYSTORE")
                .map_or_else(|| dir.path().join("keys"), |(_, v)| dir.path().join(v));
            ensure_manifest(&store);
        }
        let mut cmd = match user {
            None => Command::new(binary()),
            Some((user, group)) => {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                    .expect("chmod the working directory");
                let mut cmd = Command::new(crate::bin_path("setpriv"));
                cmd.args([
                    &format!("--reuid={user}"),
                    &format!("--regid={group}"),
                    "--clear-groups",
                    "--",
                ]);
                cmd.arg(binary());
                cmd
            }
        };
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        remove_sealgate_env(&mut cmd);
        let defaults = [
            ("RUST_LOG", "info"),
            ("SEALGATE_LMTP_LISTEN", "127.0.0.1:0"),
            ("SEALGATE_METRICS_LISTEN", "127.0.0.1:0"),
            ("SEALGATE_TRUSTED_MTA", "mx.example.org"),
            ("NO_COLOR", "1"),
        ];
        for (key, value) in defaults {
            if !env.iter().any(|(k, _)| *k == key) {
                cmd.env(key, value);
            }
        }
        cmd.envs(env.iter().copied());
        let listen = env
            .iter()
            .find(|(k, _)| *k == "SEALGATE_LMTP_LISTEN")
            .map_or("127.0.0.1:0", |(_, v)| *v);
        let want_lmtp = !listen.trim().eq_ignore_ascii_case("off");
        let want_milter = env
            .iter()
            .find(|(k, _)| *k == "SEALGATE_MILTER_LISTEN")
            .is_some_and(|(_, v)| !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("off"));
        let want_http = !env
            .iter()
            .find(|(k, _)| *k == "SEALGATE_METRICS_LISTEN")
            .is_some_and(|(_, v)| v.trim().eq_ignore_ascii_case("off"));

        let mut child = cmd.spawn().expect("spawn the sealgate binary");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let open_streams = Arc::new(AtomicUsize::new(2));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        collect_lines(stdout, Arc::clone(&lines), Arc::clone(&open_streams));
        collect_lines(stderr, Arc::clone(&lines), Arc::clone(&open_streams));

        let mut sealgate = Sealgate {
            child,
            lmtp_addr: String::new(),
            milter_addr: None,
            metrics_addr: None,
            dir,
            lines,
            open_streams,
        };

        // A unix socket address alone is enough only if no TCP listener was asked for.
        let unix_only = listen.trim_start().starts_with("unix:") && !listen.contains([',', ' ']);
        let mut exited = false;
        let done = poll_until(STARTUP_TIMEOUT, || {
            let lines = sealgate.snapshot();
            let addrs: Vec<String> = lines
                .iter()
                .filter_map(|l| listen_addr(l, "lmtp"))
                .collect();
            let pick = addrs
                .iter()
                .find(|a| a.parse::<SocketAddr>().is_ok())
                .or_else(|| addrs.iter().find(|_| unix_only));
            if let Some(addr) = pick {
                sealgate.lmtp_addr.clone_from(addr);
            }
            if want_milter && sealgate.milter_addr.is_none() {
                sealgate.milter_addr = lines.iter().find_map(|l| listen_addr(l, "milter"));
            }
            if want_http && sealgate.metrics_addr.is_none() {
                sealgate.metrics_addr = lines.iter().find_map(|l| listen_addr(l, "http"));
            }
            if (!want_lmtp || pick.is_some())
                && (!want_milter || sealgate.milter_addr.is_some())
                && (!want_http || sealgate.metrics_addr.is_some())
            {
                return true;
            }
            exited = sealgate.has_exited();
            exited
        });
        if !done || exited {
            if exited {
                // Let the reader threads drain what the process wrote before exiting.
                poll_until(Duration::from_secs(2), || {
                    sealgate.open_streams.load(Ordering::Acquire) == 0
                });
            }
            let why = if exited {
                "sealgate exited during startup"
            } else {
                "timed out"
            };
            panic!(
                "{why} waiting for the `listening … protocol=lmtp|milter|http address=…` log \
                 lines (SEALGATE_LMTP_LISTEN={listen}); log tail:\n{}",
                tail(&sealgate.log(), LOG_TAIL_LINES)
            );
        }
        sealgate
    }

    /// All output lines so far (stdout and stderr interleaved), joined by "\n".
    pub fn log(&self) -> String {
        self.snapshot().join("\n")
    }

    /// Waits until a log line contains `needle` and returns the first such line. Panics with
    /// the log tail on timeout, or as soon as the process has exited without logging it.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let mut found = None;
        let mut gone = false;
        poll_until(timeout, || {
            // Check "gone" before reading, so lines written just before exit are seen.
            gone = self.open_streams.load(Ordering::Acquire) == 0;
            found = self.snapshot().into_iter().find(|l| l.contains(needle));
            found.is_some() || gone
        });
        found.unwrap_or_else(|| {
            let why = if gone { "sealgate exited" } else { "timed out" };
            panic!(
                "{why} after {timeout:?} waiting for a log line containing {needle:?}; log tail:\n{}",
                tail(&self.log(), LOG_TAIL_LINES)
            )
        })
    }

    /// Port of [`Sealgate::milter_addr`]. Panics when there is no TCP milter listener.
    pub fn milter_port(&self) -> u16 {
        let addr = self.milter_addr.as_deref().expect("no milter listener");
        addr.parse::<SocketAddr>()
            .unwrap_or_else(|e| panic!("milter_addr {addr:?} is not a TCP address: {e}"))
            .port()
    }

    /// Port of [`Sealgate::metrics_addr`]. Panics when there is no HTTP listener.
    pub fn metrics_port(&self) -> u16 {
        let addr = self.metrics_addr.as_deref().expect("no metrics listener");
        addr.parse::<SocketAddr>()
            .unwrap_or_else(|e| panic!("metrics_addr {addr:?} is not a TCP address: {e}"))
            .port()
    }

    /// `GET path` from the HTTP listener ([`Sealgate::metrics_addr`]): the status code and
    /// the body. Panics when the request fails.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        use std::io::Write as _;
        let port = self.metrics_port();
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to the HTTP listener on port {port}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").expect("send the request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .unwrap_or_else(|e| panic!("read the response to GET {path}: {e}"));
        let (head, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of the response head: {response:?}"));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        (status, body.to_owned())
    }

    /// True while the sealgate process is running.
    pub fn is_running(&mut self) -> bool {
        !self.has_exited()
    }

    /// Port of [`Sealgate::lmtp_addr`]. Panics for a unix socket address.
    pub fn port(&self) -> u16 {
        self.lmtp_addr
            .parse::<SocketAddr>()
            .unwrap_or_else(|e| panic!("lmtp_addr {:?} is not a TCP address: {e}", self.lmtp_addr))
            .port()
    }

    /// Sends SIGTERM and waits (up to 20 s) for the process to exit; returns its exit status.
    /// Panics with the log tail if it does not exit in time (it is then killed).
    pub fn terminate(mut self) -> ExitStatus {
        self.stop()
    }

    /// [`Sealgate::terminate`] keeping the handle, so that [`Sealgate::log`] can be read
    /// afterwards: it then holds every line the process wrote (the output is read to its end,
    /// for up to 2 s after the exit).
    pub fn stop(&mut self) -> ExitStatus {
        signal(i64::from(self.child.id()), "TERM");
        let mut status = None;
        poll_until(TERMINATE_TIMEOUT, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        let Some(status) = status else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "sealgate did not exit within {TERMINATE_TIMEOUT:?} after SIGTERM; log tail:\n{}",
                tail(&self.log(), LOG_TAIL_LINES)
            )
        };
        poll_until(Duration::from_secs(2), || {
            self.open_streams.load(Ordering::Acquire) == 0
        });
        status
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Sealgate {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads `stream` line by line on a background thread into `lines`, and decrements
/// `open_streams` at EOF.
fn collect_lines(
    stream: impl Read + Send + 'static,
    lines: Arc<Mutex<Vec<String>>>,
    open_streams: Arc<AtomicUsize>,
) {
    thread::spawn(move || {
        for raw in BufReader::new(stream).split(b'\n') {
            let Ok(raw) = raw else { break };
            let line = strip_ansi(&String::from_utf8_lossy(&raw));
            lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line.trim_end_matches('\r').to_owned());
        }
        open_streams.fetch_sub(1, Ordering::Release);
    });
}

/// Removes ANSI CSI escape sequences (`ESC [ … final-byte`), in case colours are on anyway.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameter and intermediate bytes, then one final byte in 0x40..=0x7e.
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address of a `listening … protocol=<protocol> … address=…` log line (`lmtp` or
/// `milter`), or None for any other line. Text format: fields in any order, the value runs to
/// the next space, quotes stripped (tracing prints `&str` fields quoted: `protocol="lmtp"`).
/// JSON format (`SEALGATE_LOG_FORMAT=json`): `"protocol":"lmtp"` and `"address":"…"`.
fn listen_addr(line: &str, protocol: &str) -> Option<String> {
    if !line.contains("listening") {
        return None;
    }
    if line.trim_start().starts_with('{') {
        if !line.contains(&format!(r#""protocol":"{protocol}""#)) {
            return None;
        }
        let rest = &line[line.find(r#""address":""#)? + r#""address":""#.len()..];
        return Some(rest[..rest.find('"')?].to_owned());
    }
    let mut tokens = line.split_whitespace().map(|t| t.trim_end_matches(','));
    let (plain, quoted) = (
        format!("protocol={protocol}"),
        format!(r#"protocol="{protocol}""#),
    );
    if !tokens.clone().any(|t| t == plain || t == quoted) {
        return None;
    }
    tokens
        .find_map(|t| t.strip_prefix("address="))
        .map(|v| v.trim_matches('"').to_owned())
}

/// Gives the key store `store` (created if missing) an empty manifest unless it has one
/// (entries planted directly stay unlisted: a store may grow behind `sealgate keys`' back).
pub fn ensure_manifest(store: &Path) {
    std::fs::create_dir_all(store).expect("key store directory");
    let manifest = store.join(".sealgate-manifest");
    if !manifest.exists() {
        std::fs::write(
            manifest,
            "sealgate-keystore 1\nid 0123456789abcdef0123456789abcdef\n",
        )
        .expect("key store manifest");
    }
}

/// Runs `sealgate keys import -` with `cert` on stdin into the key store `store`, with the
/// inherited `SEALGATE_*` variables removed; `configure` may add to the command (working
/// directory, environment). Returns whether it succeeded and its stdout + stderr.
pub fn keys_import_with(
    store: &Path,
    cert: &[u8],
    configure: impl FnOnce(&mut Command),
) -> (bool, String) {
    let mut cmd = command();
    cmd.args(["keys", "import", "-"])
        .env("SEALGATE_KEYSTORE", store)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    configure(&mut cmd);
    let mut child = cmd.spawn().expect("run sealgate keys import");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(cert)
        .expect("write the certificate");
    let out = child
        .wait_with_output()
        .expect("wait for sealgate keys import");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// [`keys_import_with`] without extra settings.
pub fn keys_import(store: &Path, cert: &[u8]) -> (bool, String) {
    keys_import_with(store, cert, |_| {})
}

/// [`keys_import`], panicking unless the certificate was accepted.
pub fn keys_import_ok(store: &Path, cert: &[u8]) {
    let (ok, out) = keys_import(store, cert);
    assert!(ok, "sealgate keys import refused a good certificate: {out}");
}
