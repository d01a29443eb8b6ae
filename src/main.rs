//! The `sealgate` command: reads the configuration, binds the listener, serves until
//! SIGTERM/SIGINT.

use std::process::ExitCode;

use sealgate::config::{Config, LogFormat, VARIABLES};
use sealgate::keystore::KeyStore;
use sealgate::policy::SecureAddresses;
use sealgate::server::Listener;
use std::sync::Arc;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

/// sysexits(3): bad command line.
const EX_USAGE: u8 = 64;
/// sysexits(3): bad configuration.
const EX_CONFIG: u8 = 78;
/// sysexits(3): cannot bind or another OS-level failure.
const EX_OSERR: u8 = 71;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["run"] => run(),
        ["check-config"] => check_config(),
        ["keys", rest @ ..] => sealgate::keys_cli::main(rest),
        ["--help" | "-h" | "help"] => {
            print!("{}", help());
            ExitCode::SUCCESS
        }
        ["--version" | "-V"] => {
            println!(
                "sealgate {}\ncommit: {}\nrustc: {}\ncrypto backend: {}",
                env!("CARGO_PKG_VERSION"),
                sealgate::metrics::BUILD_COMMIT,
                sealgate::metrics::BUILD_RUSTC,
                sealgate::metrics::CRYPTO_BACKEND
            );
            ExitCode::SUCCESS
        }
        _ => {
            eprint!("sealgate: unknown arguments {args:?}\n\n{}", help());
            ExitCode::from(EX_USAGE)
        }
    }
}

fn help() -> String {
    let mut text = String::from(
        "sealgate: inbound-mail privacy filter for Postfix and Dovecot\n\n\
         Usage:\n  sealgate [run]        serve LMTP and/or the milter until SIGTERM/SIGINT\n  \
         sealgate check-config print the effective configuration, or the error\n  \
         sealgate --version\n\nEnvironment (default in brackets):\n",
    );
    for v in VARIABLES {
        text.push_str(&format!("  {} [{}]\n      {}\n", v.name, v.default, v.doc));
    }
    text
}

fn check_config() -> ExitCode {
    match Config::from_env() {
        Ok(config) => {
            print!("{}", config.describe());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("sealgate: invalid configuration: {err}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

fn run() -> ExitCode {
    // Invalid configuration stops us before any port is bound.
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("sealgate: invalid configuration: {err}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let filter = match EnvFilter::try_new(&config.log_filter) {
        Ok(filter) => filter,
        Err(err) => {
            eprintln!("sealgate: invalid configuration: SEALGATE_LOG: {err}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match config.log_format {
        LogFormat::Text => logs.init(),
        // Every line carries its spans' fields (the transaction's `queue_id`).
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("sealgate: cannot start the runtime: {err}");
            return ExitCode::from(EX_OSERR);
        }
    };
    // The key store is loaded before any port is bound: a broken one stops us here.
    let keys = match KeyStore::open(&config.keystore) {
        Ok(keys) => Arc::new(keys),
        Err(err) => {
            eprintln!(
                "sealgate: cannot open the key store {}: {}",
                config.keystore.display(),
                sealgate::keystore::error_chain(&err)
            );
            return ExitCode::from(EX_CONFIG);
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
                sealgate::keystore::error_chain(&err)
            );
            return ExitCode::from(EX_CONFIG);
        }
    };
    runtime.block_on(async move {
        let mut listeners = sealgate::Listeners {
            lmtp: None,
            milter: None,
            http: None,
        };
        if let Some(address) = &config.metrics_listen {
            match tokio::net::TcpListener::bind(address.as_str()).await {
                Ok(listener) => listeners.http = Some(listener),
                Err(err) => {
                    error!(%address, %err, "cannot listen");
                    return ExitCode::from(EX_OSERR);
                }
            }
        }
        let wanted = [
            (
                &config.lmtp_listen,
                config.lmtp_socket_mode,
                &mut listeners.lmtp,
            ),
            (
                &config.milter_listen,
                config.milter_socket_mode,
                &mut listeners.milter,
            ),
        ];
        for (address, mode, slot) in wanted {
            let Some(address) = address else { continue };
            match Listener::bind(address, mode).await {
                Ok(listener) => *slot = Some(listener),
                Err(err) => {
                    error!(%address, %err, "cannot listen");
                    return ExitCode::from(EX_OSERR);
                }
            }
        }
        info!(
            next_hop = %config.next_hop,
            keystore = %config.keystore.display(),
            certificates = keys.len(),
            "sealgate {} starting",
            env!("CARGO_PKG_VERSION")
        );
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(forward_sighup(reload_tx));
        let stores = sealgate::Stores { keys, secure };
        sealgate::run(config, stores, listeners, reload_rx, shutdown_signal()).await;
        info!("stopped");
        ExitCode::SUCCESS
    })
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
}
