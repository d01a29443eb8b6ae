//! A private PostgreSQL server for the key-store tests: its own data directory, socket
//! directory and port on 127.0.0.1, a `sealgate` role with a password and a `sealgate`
//! database, optionally TLS. Stopped on drop.
//!
//! PostgreSQL refuses to run as root: as root (CI) the server runs as Debian's `postgres`
//! user (through `setpriv`, so the server is our child and a signal reaches it directly);
//! otherwise as the current user.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::peers::TestCert;
use crate::{
    LOG_TAIL_LINES, STARTUP_TIMEOUT, find_bin, free_port, peer_missing, poll_until, port_accepts,
    read_lossy, run, signal, tail, temp_dir,
};

/// The role sealgate connects as.
pub const ROLE: &str = "sealgate";
/// Its password (scram-sha-256 over TCP).
pub const PASSWORD: &str = "sealgate-test-pw";
/// The database.
pub const DATABASE: &str = "sealgate";

/// How long a stop waits for the server before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The Unix user that runs the server when the tests run as root.
const SERVER_USER: &str = "postgres";

/// Finds a PostgreSQL server program (`initdb`, `postgres`, `psql`): `$PATH` first, then
/// Debian's versioned directory `/usr/lib/postgresql/<major>/bin` (the newest), which is where
/// the `postgresql` package puts them and which is not on `$PATH`.
pub fn postgres_bin(name: &str) -> Option<PathBuf> {
    if let Some(found) = find_bin(name) {
        return Some(found);
    }
    let mut majors: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin").join(name)))
        })
        .filter(|(_, path)| path.is_file())
        .collect();
    majors.sort();
    majors.pop().map(|(_, path)| path)
}

/// Whether the PostgreSQL server programs are installed: like [`crate::require`] (a failure
/// with `CI=true`, otherwise a note and `false`).
pub fn require() -> bool {
    let missing: Vec<&str> = ["initdb", "postgres", "psql"]
        .into_iter()
        .filter(|b| postgres_bin(b).is_none())
        .collect();
    missing.is_empty()
        || peer_missing(&format!(
            "missing PostgreSQL programs: {} (Debian package postgresql)",
            missing.join(", ")
        ))
}

/// A private PostgreSQL server.
pub struct Postgres {
    /// Instance dir: `data/`, `run/` (the unix socket), `server.log`, `tls/`.
    pub dir: tempfile::TempDir,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    tls: bool,
    server: Option<Child>,
}

impl Postgres {
    /// Starts a server without TLS and creates the role and database.
    pub fn start() -> Postgres {
        Self::start_inner(false)
    }

    /// Starts a server that also offers TLS (a self-signed certificate for `localhost`), for
    /// `sslmode=require`.
    pub fn start_with_tls() -> Postgres {
        Self::start_inner(true)
    }

    fn start_inner(tls: bool) -> Postgres {
        let dir = temp_dir("sealgate-postgres-");
        // The server user must be able to enter the instance dir and own data/ and run/.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");
        for sub in ["data", "run"] {
            fs::create_dir(dir.path().join(sub)).expect("create instance subdir");
        }
        if tls {
            let cert = TestCert::generate("localhost");
            let tls_dir = dir.path().join("tls");
            fs::create_dir(&tls_dir).expect("create tls dir");
            fs::copy(&cert.cert, tls_dir.join("server.crt")).expect("copy cert");
            fs::copy(&cert.key, tls_dir.join("server.key")).expect("copy key");
            fs::set_permissions(
                tls_dir.join("server.key"),
                fs::Permissions::from_mode(0o600),
            )
            .expect("chmod key");
        }
        if is_root() {
            let (ok, out) = run(Command::new("chown")
                .args(["-R", SERVER_USER])
                .arg(dir.path()));
            assert!(ok, "chown {SERVER_USER} {}: {out}", dir.path().display());
        }
        let pwfile = dir.path().join("superuser.pw");
        fs::write(&pwfile, "unused\n").expect("write pwfile");
        let (ok, out) = run(as_server_user(&bin("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display())));
        assert!(ok, "initdb failed:\n{out}");
        let mut postgres = Postgres {
            dir,
            port: free_port(),
            tls,
            server: None,
        };
        postgres.launch();
        // One statement per call: psql -c runs several in one transaction, which CREATE
        // DATABASE refuses.
        postgres.psql_as_superuser(&format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'"));
        postgres.psql_as_superuser(&format!("CREATE DATABASE {DATABASE} OWNER {ROLE}"));
        postgres
    }

    fn launch(&mut self) {
        let log = fs::File::create(self.dir.path().join("server.log")).expect("create log");
        let mut command = as_server_user(&bin("postgres"));
        command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path().join("run"))
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=50", "-c", "log_connections=on"]);
        if self.tls {
            let tls = self.dir.path().join("tls");
            command
                .args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!(
                    "ssl_cert_file={}",
                    tls.join("server.crt").display()
                ))
                .arg("-c")
                .arg(format!("ssl_key_file={}", tls.join("server.key").display()));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.server = Some(child);
        let port = self.port;
        let mut exited = false;
        let ready = poll_until(STARTUP_TIMEOUT, || {
            exited = !self.is_running();
            exited || (port_accepts(port) && self.socket().exists())
        });
        assert!(
            ready && !exited,
            "PostgreSQL did not start on 127.0.0.1:{port}; log tail:\n{}",
            tail(&self.log(), LOG_TAIL_LINES)
        );
    }

    /// The unix socket file.
    pub fn socket(&self) -> PathBuf {
        self.dir
            .path()
            .join("run")
            .join(format!(".s.PGSQL.{}", self.port))
    }

    /// `postgresql://sealgate@127.0.0.1:PORT/sealgate` (no password: give it in a password
    /// file or with [`Postgres::url_with_password`]).
    pub fn url(&self) -> String {
        format!("postgresql://{ROLE}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The URL with the password in it.
    pub fn url_with_password(&self) -> String {
        format!(
            "postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    /// The URL over the unix socket (`?host=DIR&port=PORT`), where local connections are
    /// trusted (no password).
    pub fn socket_url(&self) -> String {
        format!(
            "postgresql://{ROLE}@/{DATABASE}?host={}&port={}",
            self.dir.path().join("run").display(),
            self.port
        )
    }

    /// Runs `sql` with psql as the superuser over the unix socket; panics on error; returns
    /// psql's unaligned, tuples-only output.
    pub fn psql_as_superuser(&self, sql: &str) -> String {
        self.psql_as("postgres", "postgres", sql)
    }

    /// Runs `sql` with psql as the `sealgate` role in the `sealgate` database; panics on
    /// error; returns the unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_as(ROLE, DATABASE, sql)
    }

    /// Like [`Postgres::psql`], but returns psql's success and its output instead of
    /// panicking (for statements a constraint should refuse).
    pub fn try_psql(&self, sql: &str) -> (bool, String) {
        run(&mut self.psql_command(ROLE, DATABASE, sql))
    }

    fn psql_command(&self, user: &str, database: &str, sql: &str) -> Command {
        let mut command = Command::new(bin("psql"));
        command
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.dir.path().join("run"))
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", user, "-d", database, "-c", sql]);
        command
    }

    fn psql_as(&self, user: &str, database: &str, sql: &str) -> String {
        let (ok, out) = run(&mut self.psql_command(user, database, sql));
        assert!(ok, "psql -U {user} -c {sql:?} failed:\n{out}");
        out.trim().to_string()
    }

    /// The server log.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("server.log"))
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        self.server
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Stops the server (fast shutdown: SIGINT ends every session) and waits until the port
    /// refuses connections. The data stay; [`Postgres::restart`] brings it back.
    pub fn stop(&mut self) {
        if self.is_running()
            && let Some(child) = self.server.as_mut()
        {
            signal(i64::from(child.id()), "INT");
            let mut child = self.server.take().expect("server child");
            let exited = poll_until(STOP_TIMEOUT, || matches!(child.try_wait(), Ok(Some(_))));
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let port = self.port;
        assert!(
            poll_until(STOP_TIMEOUT, || !port_accepts(port)),
            "PostgreSQL still accepts on {port} after stopping"
        );
    }

    /// Kills the server as a crash would: SIGKILL to every backend and to the postmaster,
    /// no shutdown checkpoint. [`Postgres::restart`] then recovers from the WAL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            let pid = child.id().to_string();
            let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).status();
            let _ = child.kill();
            let _ = child.wait();
        }
        let port = self.port;
        assert!(
            poll_until(STOP_TIMEOUT, || !port_accepts(port)),
            "PostgreSQL still accepts on {port} after SIGKILL"
        );
    }

    /// psql as the `sealgate` role with its standard input open: what is written to it runs
    /// as it arrives, so a test can hold a transaction (and its locks) open while it acts.
    pub fn psql_session(&self) -> Child {
        let mut command = Command::new(bin("psql"));
        command
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.dir.path().join("run"))
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", ROLE, "-d", DATABASE])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        command.spawn().expect("start psql")
    }

    /// Starts the stopped server again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            signal(i64::from(child.id()), "INT");
            if !poll_until(STOP_TIMEOUT, || matches!(child.try_wait(), Ok(Some(_)))) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn bin(name: &str) -> PathBuf {
    postgres_bin(name).unwrap_or_else(|| panic!("PostgreSQL program {name} not found"))
}

fn is_root() -> bool {
    // The harness does not link libc; /proc says who we are.
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next().map(|uid| uid == "0"))
            .unwrap_or(false)
    })
}

/// `program` run as [`SERVER_USER`] when we are root, as ourselves otherwise.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={SERVER_USER}"))
            .arg(format!("--regid={SERVER_USER}"))
            .arg("--init-groups")
            .arg("--")
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}
