//! The shipped deployments, applied as shipped: each test reads `packaging/postfix/*`,
//! `packaging/sealgate.env` and the units from the tree, applies them to a private Postfix and
//! Dovecot with only the mechanical rewrites listed in [`REWRITES`], loads the env file the way
//! systemd's `EnvironmentFile=` does, runs the unit's `ExecStartPre` and starts its `ExecStart`
//! as the unit's `User=`/`Group=` (created as `packaging/debian/postinst` creates it when
//! missing; `setpriv` changes to it as systemd does, without a new process), under
//! `systemd-socket-activate` with the sockets of `sealgate.socket` (and
//! `sealgate-milter.socket`) or binding its listener itself, imports keys the way README tells
//! an operator (as root, then the service user reads them), and checks what Postfix's log and
//! Dovecot's mailboxes say. The deployment tests need root (Postfix, Dovecot, the user); with
//! `CI=true` a run without root fails.

use std::fs;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sealgate::config::env_file;
use testkit::peers::{Dovecot, Postfix, PostfixConfig, status_of, swaks};
use testkit::pgp::{Gpg, armored_part};

const WAIT: Duration = Duration::from_secs(60);

/// Every change made to a shipped file before it is applied, in one place. Substitutions
/// (`from` → `to`, applied to every shipped file in this order) and the structural changes
/// the private instances need; nothing else is changed.
const REWRITES: &[(&str, &str, &str)] = &[
    (
        "/var/spool/postfix/",
        "<private Postfix's queue_directory>/",
        "the private Postfix's queue directory (sealgate.env, the socket units)",
    ),
    (
        "/var/run/dovecot/",
        "<private Dovecot's base_dir>/",
        "the private Dovecot's base_dir, where its stock LMTP socket `lmtp` is",
    ),
    (
        "/var/lib/sealgate/keys",
        "<temp dir>/keys",
        "the key store, made as postinst makes it (owner sealgate, mode 0700, `keys init`)",
    ),
    (
        "127.0.0.1:10026",
        "127.0.0.1:<free port>",
        "the content_filter reinjection port",
    ),
    (
        "/usr/bin/sealgate",
        "<CARGO_BIN_EXE_sealgate>",
        "the binary under test (the unit's ExecStartPre and ExecStart, postinst's keys init)",
    ),
    (
        "/etc/sealgate/sealgate.env",
        "<temp dir>/sealgate.env",
        "the env file (rewritten), which `sealgate keys` reads through SEALGATE_ENV_FILE",
    ),
    (
        "127.0.0.1:10024",
        "127.0.0.1:<free port>",
        "the TCP LMTP listener of content-filter.main.cf's TCP variant",
    ),
    (
        "master.cf chroot column y",
        "n",
        "a chroot would need copies of /etc in the private queue directory",
    ),
    (
        "master.cf `smtp inet ... smtpd` line",
        "the private instance's port-25 smtpd on 127.0.0.1:<free port>",
        "its `-o` lines continue that smtpd",
    ),
    (
        "SocketUser=, SocketGroup=, SocketMode=",
        "chown and chmod of the socket systemd-socket-activate created",
        "systemd-socket-activate cannot set them itself",
    ),
    (
        "SEALGATE_METRICS_LISTEN (unset: 127.0.0.1:9925)",
        "SEALGATE_METRICS_LISTEN=127.0.0.1:<free port>",
        "parallel tests would share port 9925",
    ),
    (
        "smtpd_tls_cert_file, smtpd_tls_key_file (unset)",
        "a throw-away certificate",
        "secure-domains.main.cf offers STARTTLS, which needs one (the site has its own)",
    ),
];

/// What Postfix must never log with a shipped deployment (issue 12's findings).
const FORBIDDEN_IN_MAILLOG: &[&str] = &[
    "malformed response",
    "transport unavailable",
    "Permission denied",
    "loops back to myself",
    "obsolete",
];

/// Where the private instances put what the shipped files name.
struct Places {
    queue: PathBuf,
    dovecot_run: PathBuf,
    keys: PathBuf,
    reinject_port: u16,
    env_file: PathBuf,
    lmtp_port: u16,
}

impl Places {
    /// The substitutions of [`REWRITES`] with this run's values.
    fn substitutions(&self) -> Vec<(String, String)> {
        let values = [
            format!("{}/", self.queue.display()),
            format!("{}/", self.dovecot_run.display()),
            self.keys.display().to_string(),
            format!("127.0.0.1:{}", self.reinject_port),
            env!("CARGO_BIN_EXE_sealgate").to_string(),
            self.env_file.display().to_string(),
            format!("127.0.0.1:{}", self.lmtp_port),
        ];
        REWRITES
            .iter()
            .zip(values)
            .map(|((from, _, _), to)| ((*from).to_string(), to))
            .collect()
    }

    fn apply(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (from, to) in self.substitutions() {
            text = text.replace(&from, &to);
        }
        text
    }
}

fn shipped(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The settings of a Postfix snippet: its lines without comments and blank lines.
fn postfix_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// A master.cf snippet for the private instance: chroot `n`, and the `smtp inet` service
/// line dropped so that its `-o` lines continue the instance's own port-25 smtpd.
fn master_lines(text: &str, reinject_port: u16) -> Vec<String> {
    let text = text.replace("127.0.0.1:10026", &format!("127.0.0.1:{reinject_port}"));
    postfix_lines(&text)
        .into_iter()
        .filter_map(|line| {
            if line.starts_with(char::is_whitespace) {
                return Some(line);
            }
            let mut fields: Vec<&str> = line.split_whitespace().collect();
            if fields.first() == Some(&"smtp") && fields.get(1) == Some(&"inet") {
                return None;
            }
            if fields.get(4) == Some(&"y") {
                fields[4] = "n";
            }
            Some(fields.join(" "))
        })
        .collect()
}

/// The sealgate settings a snippet's header tells the operator to set (`#   SEALGATE_X=v`).
fn snippet_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .filter(|l| l.starts_with("SEALGATE_") && !l.contains(' '))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `packaging/sealgate.env` as systemd loads it, rewritten, with `extra` settings (from a
/// snippet) replacing or adding to it.
fn environment(places: &Places, extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = env_file::parse(&places.apply(&shipped("packaging/sealgate.env")));
    for (key, value) in extra {
        env.retain(|(k, _)| k != key);
        env.push((key.clone(), places.apply(value)));
    }
    env.push((
        "SEALGATE_METRICS_LISTEN".into(),
        format!("127.0.0.1:{}", testkit::free_port()),
    ));
    env.push(("NO_COLOR".into(), "1".into()));
    env
}

/// One `[Socket]` of a shipped socket unit.
struct SocketUnit {
    listen: String,
    name: String,
    user: String,
    group: String,
    mode: u32,
}

fn socket_unit(path: &str, places: &Places) -> SocketUnit {
    let text = places.apply(&shipped(path));
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{path}: no {key}="))
            .to_string()
    };
    SocketUnit {
        listen: get("ListenStream"),
        name: get("FileDescriptorName"),
        user: get("SocketUser"),
        group: get("SocketGroup"),
        mode: u32::from_str_radix(&get("SocketMode"), 8).expect("octal SocketMode"),
    }
}

/// The unit's `ExecStart=` or `ExecStartPre=` command line, rewritten.
fn unit_command(key: &str, places: &Places) -> Vec<String> {
    let unit = places.apply(&shipped("packaging/sealgate.service"));
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("sealgate.service: no {key}="))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn id_of(flag: &str, name: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, name])
        .output()
        .expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no such user or group {name}"))
}

/// The unit's `User=`, `Group=`, `NoNewPrivileges=` and `CapabilityBoundingSet=` as
/// `setpriv` arguments: what systemd applies before it executes `ExecStartPre` and
/// `ExecStart`. `setpriv` executes the command in its own process, so the PID stays the one
/// `systemd-socket-activate` announced in `LISTEN_PID`.
fn as_unit_user(user: &ServiceUser) -> Vec<String> {
    let mut args = vec![
        testkit::bin_path("setpriv").display().to_string(),
        format!("--reuid={}", user.name),
        format!("--regid={}", user.group),
        "--init-groups".to_string(),
    ];
    if unit_value("NoNewPrivileges") == "yes" {
        args.push("--no-new-privs".into());
    }
    if unit_value("CapabilityBoundingSet").is_empty() {
        args.push("--bounding-set=-all".into());
    }
    args.push("--".into());
    args
}

/// The user ID process `pid` runs as (its real and effective IDs must agree).
fn uid_of(pid: u32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let ids: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid: line")
        .split_whitespace()
        .filter_map(|id| id.parse().ok())
        .collect();
    assert!(ids.iter().all(|&id| id == ids[0]), "mixed uids {ids:?}");
    ids[0]
}

/// sealgate as `sealgate.service` with its socket units runs it: `ExecStartPre` must pass,
/// then `ExecStart` under `systemd-socket-activate`, which starts it at the first connection;
/// both as the unit's user. Without socket units sealgate binds its listeners itself.
struct Service {
    child: Child,
    log: PathBuf,
    sockets: Vec<PathBuf>,
}

impl Service {
    /// As the unit runs it: as its `User=`.
    fn start(places: &Places, env: &[(String, String)], units: &[SocketUnit]) -> Service {
        let user = service_user();
        let service = Service::start_with(places, env, units, &as_unit_user(&user));
        assert_eq!(
            uid_of(service.child.id()),
            user.uid,
            "sealgate does not run as the unit's User={}",
            user.name
        );
        service
    }

    /// As README's "without systemd" start: as root.
    fn start_as_root(places: &Places, env: &[(String, String)]) -> Service {
        Service::start_with(places, env, &[], &[])
    }

    /// `wrapper`: the command line that `ExecStartPre` and `ExecStart` run under.
    fn start_with(
        places: &Places,
        env: &[(String, String)],
        units: &[SocketUnit],
        wrapper: &[String],
    ) -> Service {
        let wrapped = |key: &str| -> Vec<String> {
            let mut command = wrapper.to_vec();
            command.extend(unit_command(key, places));
            command
        };
        let pre = wrapped("ExecStartPre");
        let (ok, out) = testkit::run(
            Command::new(&pre[0])
                .args(&pre[1..])
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .current_dir("/"),
        );
        assert!(
            ok,
            "ExecStartPre (check-config) refused the shipped settings:\n{out}"
        );

        let start = wrapped("ExecStart");
        let log = places
            .keys
            .with_file_name(format!("sealgate-{}.log", testkit::free_port()));
        let file = fs::File::create(&log).expect("create the sealgate log");
        if units.is_empty() {
            // No socket unit: sealgate binds its listeners itself.
            let child = Command::new(&start[0])
                .args(&start[1..])
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(file.try_clone().expect("dup log"))
                .stderr(file)
                .spawn()
                .expect("start sealgate");
            let service = Service {
                child,
                log,
                sockets: Vec::new(),
            };
            let ready = testkit::poll_until(testkit::STARTUP_TIMEOUT, || {
                service.log().contains("listening protocol=lmtp")
            });
            assert!(ready, "sealgate did not start:\n{}", service.log());
            return service;
        }
        let mut cmd = Command::new(testkit::bin_path("systemd-socket-activate"));
        for unit in units {
            // systemd unlinks a stale socket file before it binds; so does this.
            let _ = fs::remove_file(&unit.listen);
            cmd.arg("-l").arg(&unit.listen);
        }
        let names: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
        cmd.arg(format!("--fdname={}", names.join(":")));
        for (key, value) in env {
            cmd.arg(format!("--setenv={key}={value}"));
        }
        let child = cmd
            .args(&start)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .expect("start systemd-socket-activate");
        let service = Service {
            child,
            log,
            sockets: units.iter().map(|u| PathBuf::from(&u.listen)).collect(),
        };
        for unit in units {
            let path = Path::new(&unit.listen);
            assert!(
                testkit::poll_until(testkit::STARTUP_TIMEOUT, || fs::symlink_metadata(path)
                    .is_ok_and(|m| m.file_type().is_socket())),
                "systemd-socket-activate did not create {}",
                unit.listen
            );
            std::os::unix::fs::chown(
                path,
                Some(id_of("-u", &unit.user)),
                Some(id_of("-g", &unit.group)),
            )
            .expect("SocketUser/SocketGroup");
            fs::set_permissions(path, fs::Permissions::from_mode(unit.mode)).expect("SocketMode");
        }
        // The first connection starts sealgate (it binds before it listens: retry a refusal).
        let first = &units[0].listen;
        assert!(
            testkit::poll_until(testkit::STARTUP_TIMEOUT, || {
                std::os::unix::net::UnixStream::connect(first).is_ok()
            }),
            "{first} never accepted a connection"
        );
        let ready = testkit::poll_until(testkit::STARTUP_TIMEOUT, || {
            service.log().contains("sealgate ") && service.log().contains("starting")
        });
        assert!(ready, "sealgate did not start:\n{}", service.log());
        service
    }

    fn log(&self) -> String {
        testkit::read_lossy(&self.log)
    }

    /// Stops sealgate (SIGKILL: the worst case); the socket files stay, nobody listens.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for socket in &self.sockets {
            assert!(
                testkit::poll_until(testkit::STARTUP_TIMEOUT, || {
                    std::os::unix::net::UnixStream::connect(socket).is_err()
                }),
                "{} still accepts after sealgate was killed",
                socket.display()
            );
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Imports `cert` the way README tells an operator: `sudo sealgate keys import - <
/// alice.asc`, as root, which reads the store from the env file (see [`REWRITES`]) and hands
/// what it wrote to the service user; then every file of the store is that user's, for the
/// service to read.
fn import_key(places: &Places, cert: &[u8]) {
    let readme = shipped("README.md");
    let line = readme
        .lines()
        .find(|l| l.contains("sealgate keys import - <"))
        .expect("README's key import command");
    assert!(
        line.contains("sudo sealgate keys import - < alice.asc"),
        "README's import line is not the one this test runs: {line}"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .args(["keys", "import", "-"])
        .env_clear()
        .env("SEALGATE_ENV_FILE", &places.env_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sealgate keys import");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(cert)
        .expect("write the certificate");
    let out = child.wait_with_output().expect("wait for keys import");
    assert!(
        out.status.success(),
        "keys import: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let user = service_user();
    for path in files_under(&places.keys) {
        use std::os::unix::fs::MetadataExt as _;
        let meta = fs::symlink_metadata(&path).expect("stat a store file");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (user.uid, user.gid),
            "{} is not the service user's after keys import as root",
            path.display()
        );
    }
}

/// Every file and directory below `dir`, `dir` included.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < found.len() {
        if fs::symlink_metadata(&found[i]).is_ok_and(|m| m.is_dir()) {
            let entries = fs::read_dir(&found[i]).expect("read a store directory");
            found.extend(entries.map(|e| e.expect("directory entry").path()));
        }
        i += 1;
    }
    found
}

fn send(port: u16, to: &str, extra: &[&str]) -> (bool, String) {
    let port = port.to_string();
    let mut args = vec![
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--from",
        "sender@example.net",
        "--to",
        to,
    ];
    args.extend_from_slice(extra);
    swaks(&args)
}

/// Delivery lines for `rcpt` with `status`, waiting until there are `n`.
fn wait_for_count(postfix: &Postfix, rcpt: &str, status: &str, n: usize) -> Vec<String> {
    let to = format!("to=<{rcpt}>");
    let mut found = Vec::new();
    let done = testkit::poll_until(WAIT, || {
        found = postfix
            .log()
            .lines()
            .filter(|l| l.contains(&to) && status_of(l) == Some(status))
            .map(str::to_string)
            .collect();
        found.len() >= n
    });
    assert!(
        done,
        "waited for {n} status={status} lines for {rcpt}:\n{}",
        testkit::tail(&postfix.log(), testkit::LOG_TAIL_LINES)
    );
    found
}

fn assert_clean_maillog(postfix: &Postfix) {
    let log = postfix.log();
    for bad in FORBIDDEN_IN_MAILLOG {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(bad)).collect();
        assert!(
            lines.is_empty(),
            "Postfix logged {bad:?}:\n{}\n\nmaillog:\n{log}",
            lines.join("\n")
        );
    }
}

/// Where this run's private instances are, with the package installed as postinst installs
/// it (the service user, the key store with its manifest). `reinject_port` and `lmtp_port`:
/// what the content_filter's 127.0.0.1:10026 and 127.0.0.1:10024 become (0: unused).
fn places(
    postfix: &Postfix,
    dovecot: &Dovecot,
    dir: &Path,
    reinject_port: u16,
    lmtp_port: u16,
) -> Places {
    let places = Places {
        queue: postfix.dir.path().join("queue"),
        dovecot_run: dovecot.dir.path().join("run"),
        keys: dir.join("keys"),
        reinject_port,
        env_file: dir.join("sealgate.env"),
        lmtp_port,
    };
    // The operator's /etc/sealgate/sealgate.env, as the package ships it: `sealgate keys`
    // needs only the store from it (a snippet's settings reach the service by `environment`).
    fs::write(
        &places.env_file,
        places.apply(&shipped("packaging/sealgate.env")),
    )
    .expect("write the env file");
    install_as_postinst(&places);
    places
}

/// The unit's `User=` and `Group=`, by name and by ID.
struct ServiceUser {
    name: String,
    group: String,
    uid: u32,
    gid: u32,
}

/// The unit's `KEY=` value.
fn unit_value(key: &str) -> String {
    let unit = shipped("packaging/sealgate.service");
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("sealgate.service: no {key}="))
        .to_string()
}

/// The lines of postinst from the one starting with `first` (trimmed) to the first after it
/// that is `last` (trimmed), as one shell snippet.
fn postinst_block(first: &str, last: &str) -> String {
    let postinst = shipped("packaging/debian/postinst");
    let lines: Vec<&str> = postinst.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_start().starts_with(first))
        .unwrap_or_else(|| panic!("postinst: no line starting with {first:?}"));
    let len = lines[start..]
        .iter()
        .position(|l| l.trim() == last)
        .unwrap_or_else(|| panic!("postinst: no {last:?} after {first:?}"));
    lines[start..=start + len].join("\n")
}

/// The unit's user, created by postinst's own lines when missing (once per test process:
/// parallel tests must not race to create it).
fn service_user() -> ServiceUser {
    static CREATED: Mutex<()> = Mutex::new(());
    let name = unit_value("User");
    let group = unit_value("Group");
    {
        let _once = CREATED.lock().unwrap_or_else(PoisonError::into_inner);
        let block = postinst_block(&format!("if ! getent passwd {name}"), "fi");
        let (ok, out) = testkit::run(Command::new("sh").args(["-e", "-c", &block]));
        assert!(ok, "postinst's user creation:\n{block}\n{out}");
    }
    ServiceUser {
        uid: id_of("-u", &name),
        gid: id_of("-g", &group),
        name,
        group,
    }
}

/// The command of postinst that starts with `prefix` (trimmed), with its `\\` continuation
/// lines.
fn postinst_command(prefix: &str) -> String {
    let postinst = shipped("packaging/debian/postinst");
    let mut lines = postinst
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(prefix));
    let mut command = String::new();
    for line in lines.by_ref() {
        match line.trim().strip_suffix('\\') {
            Some(part) => command.push_str(part),
            None => {
                command.push_str(line.trim());
                break;
            }
        }
    }
    assert!(
        !command.is_empty(),
        "postinst: no command starting with {prefix:?}"
    );
    command
}

/// What postinst does for the key store: the directory owned by the service user, mode 0700
/// (its `install -d`, as systemd's StateDirectory= would), then its `keys init` command as
/// it stands there (rewritten), which runs as that user.
fn install_as_postinst(places: &Places) {
    let user = service_user();
    let install = postinst_command("install -d -o");
    assert!(
        install.contains(&format!("-o {} -g {} -m 0700", user.name, user.group)),
        "postinst creates the state directories otherwise than this test: {install}"
    );
    fs::create_dir(&places.keys).expect("create the key store");
    std::os::unix::fs::chown(&places.keys, Some(user.uid), Some(user.gid))
        .expect("chown the key store");
    fs::set_permissions(&places.keys, fs::Permissions::from_mode(0o700)).expect("chmod keys");
    let init = postinst_command("SEALGATE_ENV_FILE=/dev/null");
    let command = init
        .split(" >/dev/null")
        .next()
        .filter(|c| c.contains("runuser -u") && c.contains("keys init"))
        .unwrap_or_else(|| {
            panic!("postinst's keys init is not `... runuser -u ... keys init`: {init}")
        });
    let command = places.apply(command);
    let (ok, out) = testkit::run(Command::new("sh").args(["-e", "-c", &command]));
    assert!(ok, "postinst's keys init:\n{command}\n{out}");
}

fn assert_encrypted_for(gpg: &Gpg, stored: &[u8], token: &str) {
    let text = String::from_utf8_lossy(stored);
    assert!(text.contains("-----BEGIN PGP MESSAGE-----"), "{text}");
    assert!(!text.contains(token), "the body is stored in clear");
    let decrypted = gpg.decrypt(&armored_part(stored));
    assert!(decrypted.ok, "gpg: {}", decrypted.status);
    assert!(
        String::from_utf8_lossy(&decrypted.plaintext).contains(token),
        "the decrypted copy lacks the body"
    );
}

/// The peers, and root: Postfix and Dovecot switch to their users, and sealgate runs as the
/// unit's user, created as postinst creates it.
fn peers_present() -> bool {
    testkit::require_all(&[
        "postfix",
        "dovecot",
        "swaks",
        "gpg",
        "systemd-socket-activate",
        "setpriv",
        "runuser",
        "adduser",
    ]) && (is_root()
        || testkit::peer_missing(
            "root: the deployment tests run Postfix and Dovecot and start sealgate as the \
             unit's User=sealgate (created as postinst creates it when missing)",
        ))
}

/// The preferred deployment, verbatim: keyless delivered, keyed stored encrypted, unknown
/// user bounced with Dovecot's 5.1.1, sealgate down then up (deferred, then delivered).
#[test]
fn lmtp_transport_as_shipped() {
    if !peers_present() {
        return;
    }
    let dir = testkit::temp_dir("sealgate-deploy-");
    let gpg = Gpg::new();
    gpg.generate("bob@example.org", "rsa2048", "encrypt");
    let dovecot = Dovecot::start_with_users(&["alice@example.org", "bob@example.org"]);
    let postfix = Postfix::start(PostfixConfig {
        main_cf: postfix_lines(&shipped("packaging/postfix/lmtp-transport.main.cf")),
        master_cf: master_lines(&shipped("packaging/postfix/lmtp-transport.master.cf"), 0),
    });
    let places = places(&postfix, &dovecot, dir.path(), 0, 0);
    import_key(&places, &gpg.export("bob@example.org"));
    let env = environment(&places, &[]);
    let units = [socket_unit("packaging/sealgate.socket", &places)];
    let mut service = Service::start(&places, &env, &units);

    let (ok, out) = send(
        postfix.smtp_port,
        "alice@example.org,bob@example.org,nobody@example.org",
        &["--body", "token-deploy-lmtp-1"],
    );
    assert!(ok, "swaks: {out}");
    postfix.wait_for_status("alice@example.org", "sent", WAIT);
    postfix.wait_for_status("bob@example.org", "sent", WAIT);
    let nobody = postfix.wait_for_status("nobody@example.org", "bounced", WAIT);
    assert!(nobody.contains("5.1.1"), "{nobody}");
    let alice = dovecot.wait_for_inbox("alice@example.org", 1, WAIT);
    assert!(String::from_utf8_lossy(&alice[0]).contains("token-deploy-lmtp-1"));
    let bob = dovecot.wait_for_inbox("bob@example.org", 1, WAIT);
    assert_encrypted_for(&gpg, &bob[0], "token-deploy-lmtp-1");

    // Down: Postfix defers; up again: the deferred mail is delivered, nothing lost.
    service.kill();
    let (ok, out) = send(
        postfix.smtp_port,
        "alice@example.org",
        &["--body", "token-deploy-lmtp-2"],
    );
    assert!(ok, "swaks: {out}");
    wait_for_count(&postfix, "alice@example.org", "deferred", 1);
    let service = Service::start(&places, &env, &units);
    postfix.flush();
    wait_for_count(&postfix, "alice@example.org", "sent", 2);
    let alice = dovecot.wait_for_inbox("alice@example.org", 2, WAIT);
    assert!(
        alice
            .iter()
            .any(|m| String::from_utf8_lossy(m).contains("token-deploy-lmtp-2"))
    );
    assert!(
        testkit::poll_until(WAIT, || postfix.queue_is_empty()),
        "queue not empty"
    );
    assert_clean_maillog(&postfix);
    drop(service);
}

/// The LMTP transport with sealgate binding its socket itself, started as root (no socket
/// unit): the socket in Postfix's private directory gets that directory's owner, so Postfix's
/// lmtp client (user postfix) can connect; SIGTERM removes it again.
#[test]
fn lmtp_transport_bound_by_sealgate_as_root() {
    if !peers_present() {
        return;
    }
    let dir = testkit::temp_dir("sealgate-deploy-");
    let dovecot = Dovecot::start_with_users(&["alice@example.org"]);
    let postfix = Postfix::start(PostfixConfig {
        main_cf: postfix_lines(&shipped("packaging/postfix/lmtp-transport.main.cf")),
        master_cf: master_lines(&shipped("packaging/postfix/lmtp-transport.master.cf"), 0),
    });
    let places = places(&postfix, &dovecot, dir.path(), 0, 0);
    let env = environment(&places, &[]);
    let service = Service::start_as_root(&places, &env);
    let socket = places.queue.join("private/sealgate-lmtp");
    let meta = fs::symlink_metadata(&socket).expect("sealgate's socket");
    let private = fs::metadata(places.queue.join("private")).expect("private/");
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!((meta.uid(), meta.gid()), (private.uid(), private.gid()));
    assert_eq!(meta.mode() & 0o777, 0o660);

    let (ok, out) = send(
        postfix.smtp_port,
        "alice@example.org",
        &["--body", "token-self"],
    );
    assert!(ok, "swaks: {out}");
    postfix.wait_for_status("alice@example.org", "sent", WAIT);
    dovecot.wait_for_inbox("alice@example.org", 1, WAIT);
    testkit::signal(i64::from(service.child.id()), "TERM");
    assert!(
        testkit::poll_until(WAIT, || !socket.exists()),
        "sealgate left its socket:\n{}",
        service.log()
    );
    assert_clean_maillog(&postfix);
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// An 8 MiB body of base64-like lines with `token` at the end.
fn big_body(dir: &Path, token: &str) -> PathBuf {
    let line = format!("{}\r\n", "QUJD".repeat(19));
    let mut body = String::with_capacity(8 << 20);
    while body.len() < 8 << 20 {
        body.push_str(&line);
    }
    body.push_str(token);
    body.push_str("\r\n");
    let path = dir.join("big-body.txt");
    fs::write(&path, body).expect("write the big body");
    path
}

/// The content_filter deployment, verbatim: keyless delivered once (no loop), and an 8 MiB
/// message for a keyed recipient delivered, though its encrypted copy exceeds main.cf's
/// message_size_limit (10 MB by default).
#[test]
fn content_filter_as_shipped() {
    if !peers_present() {
        return;
    }
    let dir = testkit::temp_dir("sealgate-deploy-");
    let gpg = Gpg::new();
    gpg.generate("carol@example.org", "rsa2048", "encrypt");
    let dovecot = Dovecot::start();
    let reinject_port = testkit::free_port();
    let filter_main = shipped("packaging/postfix/content-filter.main.cf");
    let mut main_cf = postfix_lines(&filter_main);
    // The site's existing delivery to Dovecot, which the content_filter sits before.
    main_cf.push(format!(
        "virtual_transport = lmtp:inet:127.0.0.1:{}",
        dovecot.lmtp_port
    ));
    let postfix = Postfix::start(PostfixConfig {
        main_cf,
        master_cf: master_lines(
            &shipped("packaging/postfix/content-filter.master.cf"),
            reinject_port,
        ),
    });
    let places = places(&postfix, &dovecot, dir.path(), reinject_port, 0);
    import_key(&places, &gpg.export("carol@example.org"));
    let env = environment(&places, &snippet_settings(&filter_main));
    let units = [socket_unit("packaging/sealgate.socket", &places)];
    let _service = Service::start(&places, &env, &units);

    let (ok, out) = send(
        postfix.smtp_port,
        "dave@example.org",
        &["--body", "token-deploy-filter-1"],
    );
    assert!(ok, "swaks: {out}");
    let dave = dovecot.wait_for_inbox("dave@example.org", 1, WAIT);
    assert!(String::from_utf8_lossy(&dave[0]).contains("token-deploy-filter-1"));

    let body = big_body(dir.path(), "token-deploy-filter-big");
    let body_arg = format!("@{}", body.display());
    let (ok, out) = send(
        postfix.smtp_port,
        "carol@example.org",
        &["--body", &body_arg],
    );
    assert!(ok, "swaks: {}", testkit::tail(&out, 10));
    // Once into sealgate, once (reinjected) into Dovecot; never bounced.
    wait_for_count(&postfix, "carol@example.org", "sent", 2);
    let carol = dovecot.wait_for_inbox("carol@example.org", 1, WAIT);
    assert!(carol[0].len() > 10_240_000, "{} octets", carol[0].len());
    assert_encrypted_for(&gpg, &carol[0], "token-deploy-filter-big");
    assert!(
        !postfix.log().contains("status=bounced"),
        "{}",
        postfix.log()
    );
    assert_eq!(
        postfix
            .log()
            .lines()
            .filter(|l| l.contains("to=<dave@example.org>") && l.contains("status=sent"))
            .count(),
        2,
        "dave's message passes sealgate exactly once"
    );
    assert_clean_maillog(&postfix);
}

/// The content_filter over TCP, as content-filter.main.cf's header tells the operator (its
/// SEALGATE_LMTP_LISTEN and content_filter lines for TCP, sealgate.socket disabled), with
/// sealgate binding its listener itself as the unit's user: Postfix delivers through it, a
/// keyed recipient's copy is encrypted with the key imported as root.
#[test]
fn content_filter_over_tcp_bound_by_sealgate_as_its_user() {
    if !peers_present() {
        return;
    }
    let dir = testkit::temp_dir("sealgate-deploy-");
    let gpg = Gpg::new();
    gpg.generate("carol@example.org", "rsa2048", "encrypt");
    let dovecot = Dovecot::start();
    let reinject_port = testkit::free_port();
    let lmtp_port = testkit::free_port();
    let filter_main = shipped("packaging/postfix/content-filter.main.cf");
    // The header's TCP variant, word for word (a line break may fall inside it).
    let header = filter_main
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .collect::<Vec<_>>()
        .join(" ");
    let header = header.split_whitespace().collect::<Vec<_>>().join(" ");
    let tcp_listen = "SEALGATE_LMTP_LISTEN=127.0.0.1:10024";
    let tcp_filter = "content_filter = sealgate:inet:127.0.0.1:10024";
    for variant in [tcp_listen, tcp_filter, "disable sealgate.socket"] {
        assert!(
            header.contains(variant),
            "content-filter.main.cf no longer says {variant:?}: {header}"
        );
    }
    let mut main_cf: Vec<String> = postfix_lines(&filter_main)
        .into_iter()
        .map(|l| {
            if l.starts_with("content_filter =") {
                tcp_filter.to_string()
            } else {
                l
            }
        })
        .collect();
    main_cf.push(format!(
        "virtual_transport = lmtp:inet:127.0.0.1:{}",
        dovecot.lmtp_port
    ));
    let postfix = Postfix::start(PostfixConfig {
        main_cf: main_cf
            .iter()
            .map(|l| l.replace("127.0.0.1:10024", &format!("127.0.0.1:{lmtp_port}")))
            .collect(),
        master_cf: master_lines(
            &shipped("packaging/postfix/content-filter.master.cf"),
            reinject_port,
        ),
    });
    let places = places(&postfix, &dovecot, dir.path(), reinject_port, lmtp_port);
    import_key(&places, &gpg.export("carol@example.org"));
    let mut settings = snippet_settings(&filter_main);
    let (key, value) = tcp_listen.split_once('=').expect("NAME=value");
    settings.push((key.to_string(), value.to_string()));
    let env = environment(&places, &settings);
    let _service = Service::start(&places, &env, &[]);

    let (ok, out) = send(
        postfix.smtp_port,
        "dave@example.org,carol@example.org",
        &["--body", "token-deploy-tcp"],
    );
    assert!(ok, "swaks: {out}");
    let dave = dovecot.wait_for_inbox("dave@example.org", 1, WAIT);
    assert!(String::from_utf8_lossy(&dave[0]).contains("token-deploy-tcp"));
    let carol = dovecot.wait_for_inbox("carol@example.org", 1, WAIT);
    assert_encrypted_for(&gpg, &carol[0], "token-deploy-tcp");
    assert_clean_maillog(&postfix);
}

/// The milter deployment, verbatim, beside the LMTP transport: with sealgate down, the
/// port-25 smtpd tempfails (milter_default_action) while the submission service still takes
/// mail, which is delivered once sealgate is back; then port 25 takes mail again.
#[test]
fn milter_as_shipped_port_25_only() {
    if !peers_present() {
        return;
    }
    let dir = testkit::temp_dir("sealgate-deploy-");
    let dovecot = Dovecot::start_with_sasl();
    let submission = testkit::free_port();
    let milter_main = shipped("packaging/postfix/milter.main.cf");
    let mut main_cf = postfix_lines(&milter_main);
    main_cf.extend(postfix_lines(&shipped(
        "packaging/postfix/lmtp-transport.main.cf",
    )));
    let mut master_cf = master_lines(&shipped("packaging/postfix/milter.master.cf"), 0);
    master_cf.extend(master_lines(
        &shipped("packaging/postfix/lmtp-transport.master.cf"),
        0,
    ));
    let config = PostfixConfig { main_cf, master_cf }
        .with_submission(submission, dovecot.auth_port.expect("SASL port"));
    let postfix = Postfix::start(config);
    // Postfix::start's port probe is an SMTP session too: let its milter attempt (nothing
    // listens yet) end before systemd-socket-activate creates the socket, whose owner and mode
    // are set a moment after its creation (see REWRITES).
    assert!(
        testkit::poll_until(WAIT, || postfix.log().contains("disconnect from")),
        "{}",
        postfix.log()
    );
    let places = places(&postfix, &dovecot, dir.path(), 0, 0);
    let env = environment(&places, &snippet_settings(&milter_main));
    let units = [
        socket_unit("packaging/sealgate.socket", &places),
        socket_unit("packaging/debian/sealgate-milter.socket", &places),
    ];
    let mut service = Service::start(&places, &env, &units);

    let (ok, out) = send(
        postfix.smtp_port,
        "alice@example.org",
        &["--body", "token-m-1"],
    );
    assert!(ok, "swaks: {out}");
    postfix.wait_for_status("alice@example.org", "sent", WAIT);

    service.kill();
    let (ok, out) = send(
        postfix.smtp_port,
        "alice@example.org",
        &["--body", "token-m-2"],
    );
    assert!(
        !ok && out.contains("451 4.7.1"),
        "port 25 with sealgate down: {out}"
    );
    let (ok, out) = send(
        submission,
        "alice@example.org",
        &[
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@example.org",
            "--auth-password",
            testkit::peers::DOVECOT_PASSWORD,
            "--body",
            "token-m-3",
        ],
    );
    assert!(ok, "submission with sealgate down: {out}");
    wait_for_count(&postfix, "alice@example.org", "deferred", 1);
    let _service = Service::start(&places, &env, &units);
    postfix.flush();
    wait_for_count(&postfix, "alice@example.org", "sent", 2);
    let inbox = dovecot.wait_for_inbox("alice@example.org", 2, WAIT);
    assert!(
        inbox
            .iter()
            .any(|m| String::from_utf8_lossy(m).contains("token-m-3"))
    );
    // Up again: port 25 takes mail again (its milter reconnects per session).
    let (ok, out) = send(
        postfix.smtp_port,
        "alice@example.org",
        &["--body", "token-m-4"],
    );
    assert!(ok, "port 25 with sealgate up again: {out}");
    wait_for_count(&postfix, "alice@example.org", "sent", 3);
    assert_clean_maillog(&postfix);
}

/// The secure-domains deployment (with the LMTP transport), verbatim: a secure twin over TLS
/// delivered to the real mailbox, without TLS bounced with sealgate's reason; and an
/// authenticated submission stored scrubbed (no HELO, client address or User-Agent).
#[test]
fn secure_domains_and_submission_as_shipped() {
    if !peers_present() || !testkit::require("openssl") {
        return;
    }
    let dir = testkit::temp_dir("sealgate-deploy-");
    let cert = testkit::peers::TestCert::generate("mx.example.org");
    let dovecot = Dovecot::start_with_sasl();
    let submission = testkit::free_port();
    let secure_main = shipped("packaging/postfix/secure-domains.main.cf");
    let mut main_cf = postfix_lines(&shipped("packaging/postfix/lmtp-transport.main.cf"));
    main_cf.extend(postfix_lines(&secure_main));
    main_cf.push(format!("smtpd_tls_cert_file = {}", cert.cert.display()));
    main_cf.push(format!("smtpd_tls_key_file = {}", cert.key.display()));
    let config = PostfixConfig {
        main_cf,
        master_cf: master_lines(&shipped("packaging/postfix/lmtp-transport.master.cf"), 0),
    }
    .with_submission(submission, dovecot.auth_port.expect("SASL port"));
    let postfix = Postfix::start(config);
    let places = places(&postfix, &dovecot, dir.path(), 0, 0);
    let env = environment(&places, &snippet_settings(&secure_main));
    let units = [socket_unit("packaging/sealgate.socket", &places)];
    let _service = Service::start(&places, &env, &units);

    let (ok, out) = send(
        postfix.smtp_port,
        "erin@secure.example.org",
        &["--tls", "--body", "token-secure-tls"],
    );
    assert!(ok, "swaks --tls: {out}");
    postfix.wait_for_status("erin@secure.example.org", "sent", WAIT);
    let erin = dovecot.wait_for_inbox("erin@example.org", 1, WAIT);
    let text = String::from_utf8_lossy(&erin[0]);
    assert!(text.contains("token-secure-tls"), "{text}");
    assert!(
        text.contains("X-Original-To: erin@secure.example.org"),
        "{text}"
    );

    let (ok, out) = send(
        postfix.smtp_port,
        "frank@secure.example.org",
        &["--body", "token-secure-plain"],
    );
    assert!(ok, "swaks: {out}");
    let bounced = postfix.wait_for_status("frank@secure.example.org", "bounced", WAIT);
    assert!(
        bounced.contains("5.7.1") && bounced.contains("no TLS evidence from a trusted MTA"),
        "{bounced}"
    );
    assert_eq!(dovecot.stored_count("frank@example.org"), 0);

    let (ok, out) = send(
        submission,
        "gina@example.org",
        &[
            "--ehlo",
            "helo-marker.example",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@example.org",
            "--auth-password",
            testkit::peers::DOVECOT_PASSWORD,
            "--header",
            "User-Agent: marker-agent/1.0",
            "--body",
            "token-submitted",
        ],
    );
    assert!(ok, "submission: {out}");
    let gina = dovecot.wait_for_inbox("gina@example.org", 1, WAIT);
    let text = String::from_utf8_lossy(&gina[0]);
    assert!(text.contains("token-submitted"), "{text}");
    assert!(!text.contains("helo-marker"), "HELO stored: {text}");
    assert!(!text.contains("marker-agent"), "User-Agent stored: {text}");
    assert!(
        text.contains("Received: by mx.example.org (Postfix) with ESMTPA"),
        "{text}"
    );
    assert_clean_maillog(&postfix);
}

/// The env file loads identically with systemd's rules and with a naive NAME=value split (so
/// sh and systemd agree), and no value carries an inline comment or blanks.
#[test]
fn env_file_reads_the_same_under_systemd() {
    let text = shipped("packaging/sealgate.env");
    let systemd = env_file::parse(&text);
    let naive: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(systemd, naive);
    for (key, value) in &systemd {
        assert!(
            !value.contains('#') && !value.contains(char::is_whitespace),
            "{key}={value:?}"
        );
    }
    assert!(systemd.iter().any(|(k, _)| k == "SEALGATE_TRUSTED_MTA"));
}

/// The documents' shell blocks set no variable with an inline comment (systemd would keep it).
#[test]
fn readme_env_examples_have_no_inline_comments() {
    let readme = documents();
    for line in readme.lines() {
        let line = line.trim_start();
        if line.starts_with("SEALGATE_") && line.contains('=') {
            assert!(!line.contains('#'), "README: {line}");
        }
    }
}

/// The documents an operator reads, one after another: README.md, SECURITY.md,
/// CONTRIBUTING.md and docs/*.md (the snippets and "try it by hand" blocks are in
/// docs/deployment.md; checking them all keeps every settings block tied to its file).
fn documents() -> String {
    let mut paths = vec![
        "README.md".to_string(),
        "SECURITY.md".to_string(),
        "CONTRIBUTING.md".to_string(),
    ];
    let mut docs: Vec<String> = fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs"))
        .expect("docs/")
        .map(|e| {
            e.expect("docs/ entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    assert!(docs.contains(&"docs/deployment.md".to_string()), "{docs:?}");
    paths.extend(docs);
    paths.iter().map(|p| shipped(p) + "\n").collect()
}

/// The code block after the documents' marker line `marker`.
fn readme_block(marker: &str) -> String {
    let readme = documents();
    let lines: Vec<&str> = readme.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == marker)
        .unwrap_or_else(|| panic!("README: no marker {marker}"));
    assert!(
        lines.get(at + 1).is_some_and(|l| l.starts_with("```")),
        "README: a code block must follow {marker}"
    );
    lines[at + 2..]
        .iter()
        .take_while(|l| !l.starts_with("```"))
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

/// The snippets the documents show (docs/deployment.md) are the shipped files: the block after
/// `<!-- packaging/X -->` has exactly the settings of packaging/X; the block after
/// `<!-- sealgate settings: packaging/X -->` has the sealgate settings that X's header names
/// (for sealgate.env: some of its settings, as they are there); the block after
/// `<!-- example settings -->` (another deployment's settings) has declared variables the
/// configuration accepts. Every Postfix or sealgate setting block in any document has a marker.
#[test]
fn readme_snippets_are_the_shipped_files() {
    let readme = documents();
    let markers: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("<!-- ") && l.ends_with(" -->"))
        .collect();
    let norm = |v: Vec<String>| -> Vec<String> {
        v.iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let mut files = 0;
    let mut settings = 0;
    for marker in &markers {
        let inner = &marker["<!-- ".len()..marker.len() - " -->".len()];
        if let Some(path) = inner.strip_prefix("sealgate settings: ") {
            let shown = env_file::parse(&readme_block(marker));
            if path == "packaging/sealgate.env" {
                let file = env_file::parse(&shipped(path));
                for setting in &shown {
                    assert!(
                        file.contains(setting),
                        "README shows {setting:?}, {path} does not"
                    );
                }
            } else {
                assert_eq!(
                    shown,
                    snippet_settings(&shipped(path)),
                    "README's settings for {path}"
                );
            }
            settings += 1;
        } else if inner == "example settings" {
            // Settings for a deployment other than the shipped one: declared variables whose
            // values the configuration accepts.
            let shown = env_file::parse(&readme_block(marker));
            assert!(!shown.is_empty(), "an empty example settings block");
            let vars: std::collections::BTreeMap<String, String> = shown
                .iter()
                .map(|(name, value)| {
                    assert!(
                        sealgate::config::VARIABLES.iter().any(|v| v.name == name),
                        "example settings: {name} is not a setting"
                    );
                    (name.clone(), value.clone())
                })
                .collect();
            if let Err(err) = sealgate::config::Config::from_vars(&vars) {
                panic!("example settings {shown:?}: {err}");
            }
            settings += 1;
        } else if inner.starts_with("packaging/") {
            let shown = postfix_lines(&readme_block(marker));
            assert_eq!(
                norm(shown),
                norm(postfix_lines(&shipped(inner))),
                "README's block for {inner}"
            );
            files += 1;
        }
    }
    assert!(
        files >= 7 && settings >= 4,
        "{files} file blocks, {settings} settings blocks"
    );
    // No untied snippet: a code block with a Postfix or sealgate setting follows a marker.
    let lines: Vec<&str> = readme.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].starts_with("```") {
            let body: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| !l.starts_with("```"))
                .copied()
                .collect();
            let sets = body.iter().any(|l| {
                let l = l.trim_start();
                (l.starts_with("SEALGATE_") && l.contains('='))
                    || l.starts_with("-o ")
                    || l.starts_with("virtual_transport")
                    || l.starts_with("content_filter")
                    || l.starts_with("milter_")
            });
            let tied = i > 0 && lines[i - 1].starts_with("<!-- ");
            assert!(
                !sets || tied,
                "README line {}: a settings block without a marker",
                i + 1
            );
            i += body.len() + 2;
        } else {
            i += 1;
        }
    }
}

/// The "try it by hand" blocks (docs/deployment.md), run as written in a fresh directory: the `scripts/run`
/// of the first is the binary (what `cargo run --release --` runs), sealgate started as
/// `scripts/run` starts it (no arguments, defaults), and the second block on its port.
#[test]
fn readme_try_it_by_hand_runs_as_written() {
    if !testkit::require_all(&["gpg", "swaks", "bash"]) {
        return;
    }
    let dir = testkit::temp_dir("sealgate-try-");
    let gpg = Gpg::new();
    gpg.generate("you@example.org", "rsa2048", "encrypt");
    let port = testkit::free_port();
    let bin = env!("CARGO_BIN_EXE_sealgate");
    let rewrite = |block: String| {
        block
            .replace("scripts/run", bin)
            .replace("127.0.0.1:10024", &format!("127.0.0.1:{port}"))
    };
    let gnupg_home = gpg.home().display().to_string();
    let shell = |script: &str| {
        testkit::run(
            Command::new("bash")
                .args(["-e", "-c", script])
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("GNUPGHOME", &gnupg_home),
        )
    };
    let (ok, out) = shell(&rewrite(readme_block("<!-- try-by-hand: keys -->")));
    assert!(ok, "the keys block: {out}");
    let log = dir.path().join("sealgate.log");
    let file = fs::File::create(&log).expect("log");
    let mut sealgate = Command::new(bin)
        .current_dir(dir.path())
        .env_clear()
        .env("SEALGATE_LMTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("SEALGATE_METRICS_LISTEN", "off")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup"))
        .stderr(file)
        .spawn()
        .expect("start sealgate");
    let up = testkit::poll_until(testkit::STARTUP_TIMEOUT, || testkit::port_accepts(port));
    let (ok, out) = shell(&rewrite(readme_block("<!-- try-by-hand: send -->")));
    let _ = sealgate.kill();
    let _ = sealgate.wait();
    assert!(up, "sealgate did not start: {}", testkit::read_lossy(&log));
    assert!(ok, "the send block: {out}\n{}", testkit::read_lossy(&log));
    let new = dir.path().join("mail/you@example.org/new");
    let stored: Vec<PathBuf> = fs::read_dir(&new)
        .expect("mail/you@example.org/new")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(stored.len(), 1, "{out}");
    let name = stored[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(out.contains(&name), "ls shows the stored file: {out}");
    let message = fs::read(&stored[0]).expect("read the stored message");
    let decrypted = gpg.decrypt(&armored_part(&message));
    assert!(
        decrypted.ok,
        "PGP/MIME for the imported key: {}",
        decrypted.status
    );
}

/// sealgate refuses to start over what is not its stale socket, and check-config says so
/// first (one validation path); the file stays.
#[test]
fn a_file_at_the_listen_path_stops_check_config_and_start() {
    let dir = testkit::temp_dir("sealgate-deploy-");
    let path = dir.path().join("lmtp");
    fs::write(&path, "precious").expect("write");
    let listen = format!("unix:{}", path.display());
    for verb in ["check-config", "run"] {
        let (ok, out) = testkit::run(
            Command::new(env!("CARGO_BIN_EXE_sealgate"))
                .arg(verb)
                .current_dir(dir.path())
                .env_clear()
                .env("SEALGATE_LMTP_LISTEN", &listen)
                .env("SEALGATE_METRICS_LISTEN", "off"),
        );
        assert!(
            !ok,
            "{verb} accepted a regular file at the listen path:\n{out}"
        );
        assert!(out.contains("is not a socket"), "{verb}: {out}");
        assert_eq!(fs::read_to_string(&path).expect("read"), "precious");
    }
}

/// check-config refuses what the service refuses: a garbage log filter, a missing secure
/// mailbox file, a key store that cannot be created, a secure domain without a trusted MTA.
#[test]
fn check_config_refuses_what_the_service_refuses() {
    let dir = testkit::temp_dir("sealgate-deploy-");
    let file = dir.path().join("file");
    fs::write(&file, "x").expect("write");
    let keystore_under_file = file.join("keys").display().to_string();
    let missing = dir.path().join("missing").display().to_string();
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("SEALGATE_LOG", "info,sealgate=loud")], "SEALGATE_LOG"),
        (
            &[
                ("SEALGATE_SECURE_MAILBOXES", &missing),
                ("SEALGATE_TRUSTED_MTA", "mx.example.org"),
            ],
            "SEALGATE_SECURE_MAILBOXES",
        ),
        (
            &[("SEALGATE_KEYSTORE", &keystore_under_file)],
            "SEALGATE_KEYSTORE",
        ),
        (
            &[("SEALGATE_SECURE_DOMAINS", "secure.example.org")],
            "SEALGATE_TRUSTED_MTA",
        ),
    ];
    for (vars, variable) in cases {
        for verb in ["check-config", "run"] {
            let output = Command::new(env!("CARGO_BIN_EXE_sealgate"))
                .arg(verb)
                .current_dir(dir.path())
                .env_clear()
                .env("SEALGATE_LMTP_LISTEN", "127.0.0.1:0")
                .env("SEALGATE_METRICS_LISTEN", "off")
                .envs(vars.iter().copied())
                .stdin(Stdio::null())
                .output()
                .expect("run sealgate");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(78), "{verb} {vars:?}: {stderr}");
            assert!(stderr.contains(variable), "{verb} {vars:?}: {stderr}");
        }
    }
}

/// A usage error is a short message with a hint, and --help lists `keys`.
#[test]
fn usage_error_is_short_and_help_lists_keys() {
    let output = Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .arg("--bogus")
        .output()
        .expect("run sealgate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr.lines().count() <= 4, "{stderr}");
    assert!(stderr.contains("--help"), "{stderr}");
    let help = Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .arg("--help")
        .output()
        .expect("run sealgate --help");
    assert!(String::from_utf8_lossy(&help.stdout).contains("sealgate keys"));
}

/// A first Received header from a host that is not `SEALGATE_TRUSTED_MTA` (the usual sign of
/// a wrong setting) is counted per message and logged once per host.
#[test]
fn untrusted_first_received_is_counted_and_logged_once_per_host() {
    let mail = testkit::temp_dir("sealgate-deploy-");
    let next_hop = format!("maildir:{}", mail.path().display());
    let sealgate = testkit::sealgate::Sealgate::spawn(&[
        ("SEALGATE_NEXT_HOP", &next_hop),
        ("SEALGATE_TRUSTED_MTA", "mx.example.org"),
    ]);
    let message = |by: &str| {
        format!(
            "Received: from client.example.net (client.example.net [192.0.2.1])\r\n\
             \tby {by} (Postfix) with ESMTPS id 4AbCdE; Wed, 2 Dec 2026 08:00:00 +0000\r\n\
             Subject: trust\r\n\r\nbody\r\n"
        )
    };
    for by in [
        "other.example.org",
        "OTHER.example.org",
        "third.example.org",
        "mx.example.org",
    ] {
        let mut client = testkit::lmtp::Client::connect(sealgate.port());
        let replies = client.deliver("a@example.net", &["u@example.org"], message(by).as_bytes());
        assert!(replies.iter().all(|r| r.code == 250), "{replies:?}");
    }
    let (_, metrics) = sealgate.http_get("/metrics");
    assert!(
        metrics.contains("\nsealgate_untrusted_received_total 3\n"),
        "{metrics}"
    );
    let warned: Vec<String> = sealgate
        .log()
        .lines()
        .filter(|l| l.contains("not written by a SEALGATE_TRUSTED_MTA host"))
        .map(str::to_string)
        .collect();
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(warned[0].contains("other.example.org") && warned[1].contains("third.example.org"));
}

/// `sealgate keys list | head`: a reader that is gone ends the listing quietly (the status of
/// a SIGPIPE death), not with a panic.
#[test]
fn keys_list_into_a_closed_pipe_exits_quietly() {
    if !testkit::require("gpg") {
        return;
    }
    let dir = testkit::temp_dir("sealgate-deploy-");
    let keys = dir.path().join("keys");
    let gpg = Gpg::new();
    gpg.generate("pipe@example.org", "rsa2048", "encrypt");
    testkit::sealgate::keys_import_ok(&keys, &gpg.export("pipe@example.org"));
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .args(["keys", "list"])
        .env_clear()
        .env("SEALGATE_KEYSTORE", &keys)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run sealgate keys list");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(141), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// sealgate's reading of systemd's EnvironmentFile= rules (src/config/env_file.rs), the one the
/// service's `sealgate keys` and these deployment tests share.
#[test]
fn env_file_parser_follows_systemd() {
    let parsed = env_file::parse(
        "# comment\n; also\n\nA=1\n  B = two words  \nC=0660   # not a comment\n\
         D=\"quoted \\\"x\\\"\"\nE='single'\nF=long\\\nline\n",
    );
    let expect = [
        ("A", "1"),
        ("B", "two words"),
        ("C", "0660   # not a comment"),
        ("D", "quoted \"x\""),
        ("E", "single"),
        ("F", "longline"),
    ];
    let expect: Vec<(String, String)> = expect
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(parsed, expect);
    // systemd ignores a line without `=` (with a warning).
    assert!(env_file::parse("no equals sign\n").is_empty());
}
