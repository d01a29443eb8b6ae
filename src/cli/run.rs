//! `sealgate run` and `sealgate check-config`: the checks made before binding (shared by
//! both), the process limits, the listeners, the signals, and `app::run`.

use std::process::ExitCode;
use std::sync::Arc;

use sealgate::Keys;
use sealgate::config::{Config, KeyStoreLocation};
use sealgate::net::Address;
use sealgate::store::keys::KeyStore;
use sealgate::store::postgres::{Location, PgError, PgKeyStore};
use sealgate::store::secure::SecureAddresses;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use super::listen::{CannotListen, Plan};
use super::{Exit, systemd};

/// Prints the configuration, then checks the key store it names: exit 75 with each problem
/// on stderr when the store cannot vouch for its contents (recipients would get 451).
pub(crate) fn check_config() -> ExitCode {
    let checked = Config::from_env()
        .map_err(|err| err.to_string())
        .and_then(|config| preflight(&config).map(|()| config));
    match checked {
        Ok(config) => {
            print!("{}", config.describe());
            match &config.keystore {
                KeyStoreLocation::Directory(dir) => check_directory(dir),
                KeyStoreLocation::Database(url) => check_database(&config, url),
            }
        }
        Err(err) => {
            eprintln!("sealgate: invalid configuration: {err}");
            ExitCode::from(Exit::Config)
        }
    }
}

/// A cert-d store that cannot vouch for its contents: exit 75 with each problem.
fn check_directory(dir: &std::path::Path) -> ExitCode {
    let problems = match KeyStore::open(dir) {
        Ok(keys) => keys.problems(),
        Err(err) => {
            eprintln!(
                "sealgate: key store {}: {}",
                dir.display(),
                sealgate::error::error_chain(&err)
            );
            return ExitCode::from(Exit::TempFail);
        }
    };
    for problem in &problems {
        eprintln!("sealgate: key store degraded: {problem}");
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(Exit::TempFail)
    }
}

/// A key database: connect and check the schema. A schema this binary does not know is a
/// configuration error (78: run `sealgate keys migrate`, or upgrade); a database that does not
/// answer is 75, as a degraded directory is.
fn check_database(config: &Config, url: &str) -> ExitCode {
    let location = match database_location(config, url) {
        Ok(location) => location,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("sealgate: cannot start the runtime: {err}");
            return ExitCode::from(Exit::OsErr);
        }
    };
    match runtime.block_on(PgKeyStore::preflight(&location)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err @ PgError::Schema(_)) => {
            eprintln!("sealgate: key store {location}: {err}");
            ExitCode::from(Exit::Config)
        }
        Err(err) => {
            eprintln!("sealgate: key store {location}: {err}");
            ExitCode::from(Exit::TempFail)
        }
    }
}

fn database_location(config: &Config, url: &str) -> Result<Location, ExitCode> {
    Location::parse(url, config.keystore_password_file.as_deref()).map_err(|err| {
        eprintln!("sealgate: invalid configuration: SEALGATE_KEYSTORE: {err}");
        ExitCode::from(Exit::Config)
    })
}

/// The checks beyond the variables' syntax that `check-config` and `run` share, so that
/// check-config (the unit's ExecStartPre) refuses what the service would: the secure mailbox
/// file must be readable, the key store a directory or creatable, and each unix listener's
/// directory must exist, with nothing but a socket at its path. Binds and creates nothing
/// (under systemd the sockets are systemd's while ExecStartPre runs).
///
/// # Errors
/// The first problem, with its variable.
fn preflight(config: &Config) -> Result<(), String> {
    SecureAddresses::new(
        config.secure_domains.clone(),
        config.secure_mailboxes.clone(),
    )
    .map_err(|err| {
        format!(
            "SEALGATE_SECURE_MAILBOXES: {}",
            sealgate::error::error_chain(&err)
        )
    })?;
    if let KeyStoreLocation::Directory(dir) = &config.keystore {
        keystore_can_exist(dir).map_err(|err| format!("SEALGATE_KEYSTORE: {err}"))?;
    }
    let listeners = [
        ("SEALGATE_LMTP_LISTEN", &config.lmtp_listen),
        ("SEALGATE_MILTER_LISTEN", &config.milter_listen),
    ];
    for (variable, address) in listeners {
        if let Some(Address::Unix(path)) = address {
            unix_path_usable(path).map_err(|err| format!("{variable}: {err}"))?;
        }
    }
    Ok(())
}

/// The key store is a directory, or can be created: its nearest existing ancestor is one.
fn keystore_can_exist(path: &std::path::Path) -> Result<(), String> {
    let mut candidate = Some(path);
    while let Some(dir) = candidate {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(format!(
                    "{} is not a directory, so the key store {} cannot be created",
                    dir.display(),
                    path.display()
                ));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                candidate = dir.parent().filter(|p| !p.as_os_str().is_empty());
            }
            Err(err) => return Err(format!("{}: {err}", dir.display())),
        }
    }
    // A relative path whose every component is missing: created under the working directory.
    Ok(())
}

/// A unix listener's directory exists and its path holds nothing or a socket (a stale one is
/// replaced at bind; a live one is refused then, unless it is systemd's and passed to us).
fn unix_path_usable(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", dir.display())),
        Err(err) => return Err(format!("directory {}: {err}", dir.display())),
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => Err(format!(
            "{} exists and is not a socket; sealgate does not replace it",
            path.display()
        )),
        _ => Ok(()),
    }
}

pub(crate) fn run() -> ExitCode {
    // Invalid configuration stops us before any port is bound.
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("sealgate: invalid configuration: {err}");
            return ExitCode::from(Exit::Config);
        }
    };
    if let Err(err) = preflight(&config) {
        eprintln!("sealgate: invalid configuration: {err}");
        return ExitCode::from(Exit::Config);
    }
    let filter = match EnvFilter::try_new(&config.log_filter) {
        Ok(filter) => filter,
        Err(err) => {
            eprintln!("sealgate: invalid configuration: SEALGATE_LOG: {err}");
            return ExitCode::from(Exit::Config);
        }
    };
    super::init_service_logs(filter, config.log_format);
    // Before anything could hold message content in memory.
    if let Err(err) = process_limits(&config) {
        eprintln!("sealgate: {err}");
        return ExitCode::from(Exit::OsErr);
    }

    // Sockets from systemd (socket activation), each checked against its variable.
    let plan = Plan::new(&config);
    let inherited = match plan.inherited() {
        Ok(inherited) => inherited,
        Err(err) => {
            eprintln!("sealgate: invalid configuration: {err}");
            return ExitCode::from(Exit::Config);
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("sealgate: cannot start the runtime: {err}");
            return ExitCode::from(Exit::OsErr);
        }
    };
    // The key store is loaded before any port is bound: a broken one stops us here.
    let keys = match &config.keystore {
        KeyStoreLocation::Directory(dir) => match KeyStore::open(dir) {
            Ok(keys) => Keys::Directory(Arc::new(keys)),
            Err(err) => {
                eprintln!(
                    "sealgate: cannot open the key store {}: {}",
                    dir.display(),
                    sealgate::error::error_chain(&err)
                );
                return ExitCode::from(Exit::Config);
            }
        },
        KeyStoreLocation::Database(url) => {
            let location = match database_location(&config, url) {
                Ok(location) => location,
                Err(code) => return code,
            };
            // A schema this binary does not know stops the start; a database that does not
            // answer yet does not (its recipients get 451 until it does).
            match runtime.block_on(PgKeyStore::preflight(&location)) {
                Ok(()) => {}
                Err(err @ PgError::Schema(_)) => {
                    eprintln!("sealgate: key store {location}: {err}");
                    return ExitCode::from(Exit::Config);
                }
                Err(err) => warn!(
                    keystore = %location,
                    error = %err,
                    "key database unreachable at start; recipients get 451 until it answers"
                ),
            }
            Keys::Database(PgKeyStore::new(location, config.keystore_max_stale))
        }
    };
    let secure = match SecureAddresses::new(
        config.secure_domains.clone(),
        config.secure_mailboxes.clone(),
    ) {
        Ok(secure) => Arc::new(secure),
        Err(err) => {
            eprintln!(
                "sealgate: invalid configuration: SEALGATE_SECURE_MAILBOXES: {}",
                sealgate::error::error_chain(&err)
            );
            return ExitCode::from(Exit::Config);
        }
    };
    runtime.block_on(async move {
        let listeners = match plan.listen(inherited).await {
            Ok(listeners) => listeners,
            // On stderr like every fatal start-up error: one line, whatever SEALGATE_LOG says.
            Err(CannotListen { address, err }) => {
                eprintln!("sealgate: cannot listen on {address}: {err}");
                return ExitCode::from(Exit::OsErr);
            }
        };
        info!(
            next_hop = %config.next_hop,
            keystore = %config.keystore,
            keystore_id = %keystore_id(&keys),
            secure_mailboxes = %config
                .secure_mailboxes
                .as_ref()
                .map_or_else(|| "(none)".into(), |p| p.display().to_string()),
            certificates = %certificates(&keys),
            problems = problems(&keys),
            "sealgate {} starting",
            env!("CARGO_PKG_VERSION")
        );
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(forward_sighup(reload_tx));
        let stores = sealgate::Stores { keys, secure };
        // Type=notify: the key store is loaded and every listener bound.
        let status = format!(
            "READY=1\nSTATUS=serving; {} certificates; next hop {}",
            certificates(&stores.keys),
            config.next_hop
        );
        if let Err(err) = systemd::notify(&status) {
            warn!(%err, "cannot notify systemd (NOTIFY_SOCKET)");
        }
        match sealgate::run(config, stores, listeners, reload_rx, shutdown_signal()).await {
            Ok(()) => {
                info!("stopped");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("sealgate: cannot serve: {err}");
                ExitCode::from(Exit::Software)
            }
        }
    })
}

/// For the start line: the store's identity (a directory's manifest id).
fn keystore_id(keys: &Keys) -> String {
    match keys {
        Keys::Directory(store) => store
            .manifest_id()
            .unwrap_or_else(|| "(no manifest)".into()),
        Keys::Database(_) => "(database)".into(),
    }
}

/// For the start line and systemd's status: how many certificates a directory holds.
fn certificates(keys: &Keys) -> String {
    match keys {
        Keys::Directory(store) => store.len().to_string(),
        Keys::Database(_) => "(in the database)".into(),
    }
}

/// For the start line: what a directory cannot vouch for (a database reports through
/// /readyz and its metrics).
fn problems(keys: &Keys) -> usize {
    match keys {
        Keys::Directory(store) => store.problems().len(),
        Keys::Database(_) => 0,
    }
}

/// Process-wide limits, set once at start.
///
/// - Core dumps (unless `SEALGATE_CORE_DUMPS=on`): a core file would hold the plaintext of
///   every message in flight. RLIMIT_CORE 0 stops core files (and tells a core_pattern pipe
///   helper such as systemd-coredump to store nothing); non-dumpable stops the kernel from
///   dumping at all, whatever core_pattern says, and keeps other processes of our user from
///   reading our memory through ptrace or /proc/PID/mem.
/// - Open files: sealgate holds one descriptor per LMTP connection, per Maildir recipient of
///   every message in flight and per next-hop connection, so the usual soft limit of 1,024
///   runs out with, say, 1,000 recipients in one transaction. The soft limit is raised to the
///   hard one, as systemd advises for programs that do not use select(2).
///
/// # Errors
/// Core dumps could not be disabled.
fn process_limits(config: &Config) -> Result<(), String> {
    use rustix::process::{
        DumpableBehavior, Resource, Rlimit, getrlimit, set_dumpable_behavior, setrlimit,
    };
    if !config.core_dumps {
        let zero = Rlimit {
            current: Some(0),
            maximum: Some(0),
        };
        setrlimit(Resource::Core, zero)
            .map_err(|err| format!("cannot disable core dumps (RLIMIT_CORE): {err}"))?;
        set_dumpable_behavior(DumpableBehavior::NotDumpable)
            .map_err(|err| format!("cannot disable core dumps (PR_SET_DUMPABLE): {err}"))?;
    }
    let files = getrlimit(Resource::Nofile);
    if files.current != files.maximum {
        let raised = Rlimit {
            current: files.maximum,
            maximum: files.maximum,
        };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            warn!(%err, soft = ?files.current, hard = ?files.maximum, "cannot raise the open files limit");
        }
    }
    let open_files = getrlimit(Resource::Nofile)
        .current
        .map_or_else(|| "unlimited".to_string(), |n| n.to_string());
    info!(
        core_dumps = if config.core_dumps { "system" } else { "off" },
        %open_files,
        "process limits"
    );
    Ok(())
}

/// Turns each SIGHUP into a reload request (a burst of them collapses into one).
async fn forward_sighup(reload: tokio::sync::mpsc::Sender<()>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        error!("cannot install the SIGHUP handler; the key store reloads on its timer only");
        return;
    };
    while hup.recv().await.is_some() {
        let _ = reload.try_send(());
    }
}

/// Completes on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    if let Err(err) = systemd::notify("STOPPING=1\nSTATUS=shutting down") {
        warn!(%err, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}
