//! The integration-test harness of sealgate, used by `tests/` and `benches/`: private peer
//! instances (Postfix, Dovecot, GnuPG, sq, rnp), the real sealgate binary, an LMTP client that
//! asserts on the wire, the Maildir next hop's folders, a fault-injecting proxy, a tmpfs that
//! fills up, and small polling helpers.
//!
//! - [`sealgate`]: the sealgate process ([`Sealgate`]) and `sealgate keys import`.
//! - [`lmtp`]: a raw LMTP client.
//! - [`maildir`]: what the embedded Maildir next hop stored ([`Maildir`]).
//! - [`peers`]: private Postfix and Dovecot instances, `swaks`.
//! - [`pgp`]: GnuPG, sq and rnp in private homes; taking a PGP/MIME message apart.
//! - [`fault_proxy`]: an LMTP/SMTP proxy that injects next-hop faults.
//! - [`tmpfs`]: a small file system that can fill up (root only).
//!
//! Ground rules (see also `/work/shared/reference/postfix-lmtp-milter.md` §6.1 and §9):
//! - Every peer is a private instance on 127.0.0.1 with its own temp dir and its own ports, so
//!   tests can run in parallel (cargo's test threads).
//! - Nothing synchronises by sleeping: we poll for a condition with a short interval and a
//!   deadline, and panic with the relevant log tail when the deadline passes.
//! - Every process is stopped on `Drop`, which also runs while a failed test unwinds.
//! - A missing peer binary skips the test (note on stderr), or fails it when `CI=true`:
//!   see [`require`].
#![allow(
    clippy::disallowed_methods,
    reason = "test code reads its own knobs (CI, TEST_*) and the harness environment; .clippy.toml guards the service code"
)]
// `new()` here makes a private instance (a home directory, a temporary root), not a neutral
// value, so `Default` would read wrong.
#![allow(clippy::new_without_default)]

pub mod fault_proxy;
pub mod lmtp;
pub mod maildir;
pub mod peers;
pub mod pgp;
pub mod postgres;
pub mod sealgate;
pub mod tmpfs;

pub use maildir::Maildir;
pub use sealgate::Sealgate;

use std::collections::HashSet;
use std::fs;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Interval between two checks of a polled condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Default deadline for a peer to come up (ports accepting, log line seen).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Number of log lines quoted in panic messages.
pub const LOG_TAIL_LINES: usize = 40;

/// True when running under CI (`CI=true`, as GitHub Actions and most CI systems set it; `1`
/// is accepted too). Then a missing peer binary is a failure, not a skip.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Looks for an executable named `bin` in `$PATH` and, because the Postfix and Dovecot
/// commands live there and a non-root `$PATH` often lacks them, in the sbin directories.
/// A `bin` containing `/` is taken as a path.
pub fn find_bin(bin: &str) -> Option<PathBuf> {
    fn is_executable(p: &Path) -> bool {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    if bin.contains('/') {
        let p = PathBuf::from(bin);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(bin))
        .find(|p| is_executable(p))
}

/// Full path of a peer binary; panics when it is missing. Start functions use this, so a test
/// that forgot [`require`] still fails with a clear message.
pub fn bin_path(bin: &str) -> PathBuf {
    find_bin(bin).unwrap_or_else(|| {
        panic!("peer binary `{bin}` not found in $PATH or sbin dirs (call testkit::require first)")
    })
}

/// Checks that a peer binary is available. Returns `true` when it is. When it is missing:
/// with `CI=true` panics (CI must install every peer); otherwise prints a note to stderr and
/// returns `false` so the test can `return` early:
/// ```ignore
/// if !testkit::require("dovecot") { return; }
/// ```
pub fn require(bin: &str) -> bool {
    require_all(&[bin])
}

/// [`require`] for several binaries: checks all of them (so the note or the panic names every
/// missing one), and returns `true` only if all are there.
pub fn require_all(bins: &[&str]) -> bool {
    let missing: Vec<&str> = bins
        .iter()
        .copied()
        .filter(|b| find_bin(b).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let names = format!("`{}`", missing.join("`, `"));
    peer_missing(&format!(
        "missing peer binaries: {names}; install the peers (postfix dovecot-lmtpd \
         dovecot-imapd swaks python3, see reference §6.1)"
    ))
}

/// A peer the test needs is missing (`what` says which and how to get it): with `CI=true` a
/// failure, otherwise a note and `false`, so the test returns early.
pub fn peer_missing(what: &str) -> bool {
    if is_ci() {
        panic!("{what}; CI=true makes this a failure");
    }
    // Straight to the stderr handle: libtest captures `eprintln!`, which would hide the note
    // for a test that "passes" by returning early.
    let _ = writeln!(
        std::io::stderr(),
        "note: skipping test, {what} (with CI=true this fails)"
    );
    false
}

/// Ports handed out by [`free_port`] in this process, so two parallel tests never get the same
/// one. This matters more than it seems: Postfix's master binds its inet listeners with
/// `SO_REUSEPORT`, so two Postfix instances on the same port both start *successfully* and
/// the kernel load-balances connections between them.
fn handed_out_ports() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A free TCP port on 127.0.0.1: binds port 0, notes the port and releases it. Never returns
/// the same port twice within one test process. Another process may still take it before the
/// peer binds it; the peer start functions retry with new ports on "Address already in use".
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("local_addr of bound listener")
            .port();
        let mut ports = handed_out_ports()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if ports.insert(port) {
            return port;
        }
        // Already given to another test: drop this listener and ask the kernel again.
    }
}

/// Polls `f` every [`POLL_INTERVAL`] until it returns `true` (→ `true`) or `timeout` passes
/// (→ `false`). `f` is always called at least once, and once more at the deadline. Use it
/// to build a panic message with a log tail; otherwise use [`wait_until`].
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

/// Polls `f` until it returns `true`; panics with "timed out … waiting for {what}" when
/// `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    if !poll_until(timeout, f) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// True when a TCP connection to 127.0.0.1:`port` is accepted right now.
pub fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Waits (up to [`STARTUP_TIMEOUT`]) until 127.0.0.1:`port` accepts TCP connections.
pub fn wait_for_port(port: u16) {
    wait_until(
        &format!("127.0.0.1:{port} to accept connections"),
        STARTUP_TIMEOUT,
        || port_accepts(port),
    );
}

/// The last `n` lines of `text`, for panic messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A fresh directory for one instance, under `/tmp` (not `$TMPDIR`): Postfix and Dovecot put
/// unix sockets in it and socket paths are limited to 107 bytes. Mode 0755, because the
/// daemons' unprivileged users (`postfix`, `mail`, `dovenull`) must traverse it. Removed on
/// drop.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("create temp dir under /tmp");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 temp dir");
    dir
}

/// Runs `cmd` to completion (stdin from /dev/null) and returns (exit success, stdout followed
/// by stderr, lossily decoded). Panics only if the command cannot be started.
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Sends signal `sig` (e.g. `"TERM"`, `"KILL"`) to `pid`, or to a process group when `pid`
/// is negative, with `kill(1)`: the crate forbids unsafe code, so no libc. Errors (e.g. the
/// process is already gone) are ignored.
pub fn signal(pid: i64, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// True while process `pid` exists and is not a zombie. Daemonized peers (Postfix's master)
/// are not our children, so we cannot `wait` for them; and if the machine's init does not
/// reap orphans, a dead daemon lingers as a zombie in /proc.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Lossy UTF-8 of a file's contents; empty if it does not exist (yet).
pub fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// True when `TEST_FULL_LOAD=1` asks the load and abuse tests for their full-size versions
/// (1,000 connections, a 2 GiB message, minutes of slow drip); otherwise they run reduced
/// versions that fit in a CI run. [`Sealgate::spawn`] strips every `SEALGATE_*`
/// variable from the child's environment, so sealgate never sees this one.
pub fn full_load() -> bool {
    std::env::var("TEST_FULL_LOAD").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// A field of `/proc/<pid>/status` given in kB (`VmRSS`, `VmHWM`, `VmSize`), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Prints one measured figure as `figure: <text>` straight to the process's stderr handle:
/// libtest captures `println!`/`eprintln!` of passing tests, not this, so figures show in
/// every `cargo test` run.
pub fn figure(text: &str) {
    let _ = writeln!(std::io::stderr(), "figure: {text}");
}

/// A random lower-case hex string of `bytes` random bytes (from /dev/urandom), for markers
/// that cannot occur anywhere by chance.
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read as _;
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
