//! Binary-only code: the exit codes, the log set-up, serving (`run`), the listeners, the `sealgate keys`
//! commands and the systemd integration.

use std::process::ExitCode;

use sealgate::config::LogFormat;
use tracing_subscriber::EnvFilter;

pub(crate) mod keys;
pub(crate) mod listen;
pub(crate) mod run;
pub(crate) mod systemd;

/// How the process ends other than with success: sysexits(3) codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 64: bad command line.
    Usage = 64,
    /// 70: an internal error (e.g. the metrics could not be registered).
    Software = 70,
    /// 71: cannot bind, or another OS-level failure.
    OsErr = 71,
    /// 74: an input or store file could not be read or written.
    IoErr = 74,
    /// 75: the configuration is valid but the key store is degraded; try again after fixing
    /// it.
    TempFail = 75,
    /// 78: bad configuration.
    Config = 78,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// The service's logs: `SEALGATE_LOG`'s filter in `SEALGATE_LOG_FORMAT`, on stderr, without
/// colours.
pub(crate) fn init_service_logs(filter: EnvFilter, format: LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match format {
        // logfmt: a value with spaces (a reply text) is quoted, so fields stay fields.
        LogFormat::Text => logs.fmt_fields(sealgate::Logfmt).init(),
        // Every line carries its spans' fields (the transaction's `queue_id`).
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

/// A command's logs (`sealgate keys`): warnings only (e.g. skipped files), short lines on
/// stderr.
pub(crate) fn init_command_logs() {
    // A second initialisation (tests calling `main` in-process) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .try_init();
}
