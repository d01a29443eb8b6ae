//! Configuration: `SEALGATE_*` environment variables parsed once, at start, into a validated
//! [`Config`]. Nothing else in the program reads the environment.

pub mod env_file;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use sealgate_protocol::BareNewline;

use crate::message::tls::TlsVersion;
use crate::net::Address;
use crate::ops::redact::AddressLog;

/// The next hop, in Postfix-like destination syntax (`SEALGATE_NEXT_HOP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHopAddr {
    /// `maildir:PATH`: `PATH/<recipient>/{tmp,new,cur}`.
    Maildir(PathBuf),
    /// `lmtp:HOST:PORT` or `lmtp:unix:PATH` (Dovecot).
    Lmtp(Address),
    /// `smtp:HOST:PORT` or `smtp:unix:PATH` (Postfix's content_filter return port).
    Smtp(Address),
}

impl fmt::Display for NextHopAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHopAddr::Maildir(path) => write!(f, "maildir:{}", path.display()),
            NextHopAddr::Lmtp(endpoint) => write!(f, "lmtp:{endpoint}"),
            NextHopAddr::Smtp(endpoint) => write!(f, "smtp:{endpoint}"),
        }
    }
}

/// What happens to a recipient whose certificate exists but cannot be used (expired, revoked,
/// no encryption subkey).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnusableKey {
    /// 450 4.7.1: Postfix retries until the key is fixed or the message expires.
    Tempfail,
    /// 550 5.7.1: the sender gets a bounce.
    Reject,
    /// Delivered unencrypted, logged and counted.
    Plaintext,
}

/// Which messages the scrub stage cleans (`SEALGATE_SCRUB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrubMode {
    /// Mail our own MTA received from an authenticated user (`with ESMTPA`/`ESMTPSA`).
    Authenticated,
    /// All mail.
    All,
    /// None.
    Off,
}

/// The client-revealing headers removed by default (`SEALGATE_SCRUB_HEADERS`).
pub const DEFAULT_SCRUB_HEADERS: &str = "X-Originating-IP,X-Forwarded-For,X-Real-IP,X-Client-IP,X-Sender-IP,X-Remote-IP,X-Remote-Addr,X-Originating-Client,User-Agent,X-Mailer,X-MimeOLE,X-Newsreader,X-MS-Exchange-Organization-OriginalClientIPAddress,X-Yahoo-Newman-Property";

/// The smallest `SEALGATE_MILTER_MAX_FRAME`: the milter codec's floor (one full body chunk from
/// Postfix plus the command byte must fit).
pub const MIN_MILTER_FRAME: usize = sealgate_protocol::milter::MAX_FRAME_FLOOR;

/// `sealgate keys` reads the service's env file from this variable (default
/// [`DEFAULT_ENV_FILE`] when it exists); not a setting of the service, which gets its
/// environment from systemd's `EnvironmentFile=`.
pub const ENV_FILE: &str = "SEALGATE_ENV_FILE";

/// The Debian package's env file (packaging/sealgate.env).
pub const DEFAULT_ENV_FILE: &str = "/etc/sealgate/sealgate.env";

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable `key=value` lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration. Every field has a default; see [`VARIABLES`] for the
/// documentation of each variable.
#[derive(Debug, Clone)]
pub struct Config {
    /// `SEALGATE_LMTP_LISTEN`; `None` (`off`) when only the milter runs.
    pub lmtp_listen: Option<Address>,
    /// `SEALGATE_LMTP_SOCKET_MODE`, applied to a unix socket.
    pub lmtp_socket_mode: u32,
    /// `SEALGATE_MILTER_LISTEN`; `None` (`off`, the default) when no milter runs.
    pub milter_listen: Option<Address>,
    /// `SEALGATE_MILTER_SOCKET_MODE`, applied to a unix socket.
    pub milter_socket_mode: u32,
    /// `SEALGATE_MILTER_MAX_FRAME`: the largest milter packet accepted, in octets.
    pub milter_max_frame: usize,
    /// `SEALGATE_MILTER_TIMEOUT`
    pub milter_timeout: Duration,
    /// `SEALGATE_NEXT_HOP`
    pub next_hop: NextHopAddr,
    /// `SEALGATE_HOSTNAME`: our name in the greeting, LHLO/EHLO to the next hop and Maildir
    /// file names.
    pub hostname: String,
    /// `SEALGATE_MAX_CONNECTIONS`
    pub max_connections: usize,
    /// `SEALGATE_MAX_LINE_LENGTH`
    pub max_line_length: usize,
    /// `SEALGATE_MAX_RECIPIENTS`
    pub max_recipients: usize,
    /// `SEALGATE_MAX_MESSAGE_SIZE`; `None` means unlimited.
    pub max_message_size: Option<u64>,
    /// `SEALGATE_MAX_HEADER_SIZE`
    pub max_header_size: usize,
    /// `SEALGATE_IDLE_TIMEOUT`
    pub idle_timeout: Duration,
    /// `SEALGATE_COMMAND_TIMEOUT`
    pub command_timeout: Duration,
    /// `SEALGATE_DATA_TIMEOUT`
    pub data_timeout: Duration,
    /// `SEALGATE_BARE_NEWLINE`
    pub bare_newline: BareNewline,
    /// `SEALGATE_NEXT_HOP_CONNECT_TIMEOUT`
    pub next_hop_connect_timeout: Duration,
    /// `SEALGATE_NEXT_HOP_TIMEOUT`
    pub next_hop_timeout: Duration,
    /// `SEALGATE_NEXT_HOP_POOL_SIZE`
    pub next_hop_pool_size: usize,
    /// `SEALGATE_SHUTDOWN_GRACE`
    pub shutdown_grace: Duration,
    /// `SEALGATE_CORE_DUMPS`: false (the default) disables core dumps at start.
    pub core_dumps: bool,
    /// `SEALGATE_KEYSTORE`: the cert-d directory of recipients' certificates.
    pub keystore: PathBuf,
    /// `SEALGATE_KEYSTORE_RELOAD`
    pub keystore_reload: Duration,
    /// `SEALGATE_UNUSABLE_KEY`
    pub unusable_key: UnusableKey,
    /// `SEALGATE_PROTECTED_HEADERS`
    pub protected_headers: bool,
    /// `SEALGATE_MAX_INSPECT_SIZE`
    pub max_inspect_size: usize,
    /// `SEALGATE_SECURE_DOMAINS`: secure domain → the domain its mailboxes live in (the same
    /// domain when no `=` was given).
    pub secure_domains: Vec<(String, String)>,
    /// `SEALGATE_SECURE_MAILBOXES`: a file of secure addresses, reloaded when it changes.
    pub secure_mailboxes: Option<PathBuf>,
    /// `SEALGATE_ENV_FILE`: the env file `sealgate keys` read (unused by the service).
    pub env_file: Option<PathBuf>,
    /// `SEALGATE_TLS_MIN_VERSION`
    pub tls_min_version: TlsVersion,
    /// `SEALGATE_TRUSTED_MTA`: host names whose Received header counts as evidence.
    pub trusted_mta: Vec<String>,
    /// `SEALGATE_SCRUB`
    pub scrub: ScrubMode,
    /// `SEALGATE_SCRUB_HEADERS`: header names (lower-case) removed by the scrub stage.
    pub scrub_headers: Vec<String>,
    /// `SEALGATE_LOG`
    pub log_filter: String,
    /// `SEALGATE_LOG_FORMAT`
    pub log_format: LogFormat,
    /// `SEALGATE_LOG_ADDRESSES`
    pub log_addresses: AddressLog,
    /// `SEALGATE_METRICS_LISTEN` (`HOST:PORT`); `None` (`off`) for no HTTP listener.
    pub metrics_listen: Option<String>,
}

/// One documented variable: name, default (as written in the environment) and meaning.
#[derive(Debug)]
pub struct Variable {
    /// The environment variable's name.
    pub name: &'static str,
    /// Its default, in the syntax the variable takes.
    pub default: &'static str,
    /// What it controls and what happens at the limit.
    pub doc: &'static str,
}

/// Every variable sealgate reads. docs/configuration.md's reference table mirrors this list.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "SEALGATE_LMTP_LISTEN",
        default: "127.0.0.1:10024",
        doc: "LMTP listener: HOST:PORT, unix:PATH, or off (then the milter must be on).",
    },
    Variable {
        name: "SEALGATE_LMTP_SOCKET_MODE",
        default: "0660",
        doc: "Octal file mode of the LMTP unix socket.",
    },
    Variable {
        name: "SEALGATE_MILTER_LISTEN",
        default: "off",
        doc: "Milter listener for Postfix's smtpd_milters (refuses at RCPT time, scrubs headers): HOST:PORT, unix:PATH, or off.",
    },
    Variable {
        name: "SEALGATE_MILTER_SOCKET_MODE",
        default: "0660",
        doc: "Octal file mode of the milter unix socket.",
    },
    Variable {
        name: "SEALGATE_MILTER_MAX_FRAME",
        default: "1048576",
        doc: "Largest milter packet in octets (K/M suffixes; Postfix sends at most 65535 octets of body per packet); a larger one ends that milter connection.",
    },
    Variable {
        name: "SEALGATE_MILTER_TIMEOUT",
        default: "300s",
        doc: "Wait for the next packet from Postfix on a milter connection; then it is closed. Keep it at least Postfix's smtpd_timeout (300s).",
    },
    Variable {
        name: "SEALGATE_NEXT_HOP",
        default: "maildir:./mail",
        doc: "Where mail goes: maildir:PATH, lmtp:HOST:PORT, lmtp:unix:PATH, smtp:HOST:PORT, smtp:unix:PATH.",
    },
    Variable {
        name: "SEALGATE_HOSTNAME",
        default: "(the system host name)",
        doc: "Name used in the greeting, in LHLO/EHLO to the next hop and in Maildir file names.",
    },
    Variable {
        name: "SEALGATE_MAX_CONNECTIONS",
        default: "100",
        doc: "Concurrent connections per listener (LMTP and milter each); at the limit sealgate stops accepting until one ends.",
    },
    Variable {
        name: "SEALGATE_MAX_LINE_LENGTH",
        default: "4096",
        doc: "Longest command line in octets (without CRLF); longer gets 500 5.5.2 and is discarded.",
    },
    Variable {
        name: "SEALGATE_MAX_RECIPIENTS",
        default: "1000",
        doc: "Recipients per transaction; each further RCPT gets 452 4.5.3.",
    },
    Variable {
        name: "SEALGATE_MAX_MESSAGE_SIZE",
        default: "104857600",
        doc: "Largest message in octets (K/M/G suffixes, 0 = unlimited); announced as SIZE. MAIL with a larger SIZE= gets 552 5.3.4; a larger DATA is drained and every recipient gets 552 5.3.4.",
    },
    Variable {
        name: "SEALGATE_MAX_HEADER_SIZE",
        default: "1048576",
        doc: "Largest header block in octets, the per-transaction buffer; a larger one is drained and every recipient gets 552 5.3.4.",
    },
    Variable {
        name: "SEALGATE_IDLE_TIMEOUT",
        default: "300s",
        doc: "Wait for a command outside a transaction; then 421 4.4.2 and close.",
    },
    Variable {
        name: "SEALGATE_COMMAND_TIMEOUT",
        default: "300s",
        doc: "Wait for the next command inside a transaction; then 421 4.4.2 and close.",
    },
    Variable {
        name: "SEALGATE_DATA_TIMEOUT",
        default: "300s",
        doc: "Wait for more DATA bytes; then the transaction is aborted, 421 4.4.2 and close.",
    },
    Variable {
        name: "SEALGATE_BARE_NEWLINE",
        default: "reject",
        doc: "Bare LF or bare CR in DATA: reject (550 5.5.2 per recipient), normalize (to CRLF) or allow. Only CRLF.CRLF ever ends DATA.",
    },
    Variable {
        name: "SEALGATE_NEXT_HOP_CONNECT_TIMEOUT",
        default: "10s",
        doc: "Connecting to the next hop; then 451 4.4.1.",
    },
    Variable {
        name: "SEALGATE_NEXT_HOP_TIMEOUT",
        default: "300s",
        doc: "Each read or write to the next hop; then 451 4.4.2. Keep it below Postfix's lmtp_data_done_timeout (600s).",
    },
    Variable {
        name: "SEALGATE_NEXT_HOP_POOL_SIZE",
        default: "16",
        doc: "Idle next-hop connections kept for reuse (0 = a new connection per message).",
    },
    Variable {
        name: "SEALGATE_SHUTDOWN_GRACE",
        default: "30s",
        doc: "On SIGTERM/SIGINT: how long in-flight transactions may finish; then they are cut (never acknowledged).",
    },
    Variable {
        name: "SEALGATE_CORE_DUMPS",
        default: "off",
        doc: "off: at start sealgate sets its core file size limit to 0 and makes itself non-dumpable, so a crash writes no message content to disk (and other processes of its user cannot read its memory). on: core dumps follow the system's settings (for debugging).",
    },
    Variable {
        name: "SEALGATE_KEYSTORE",
        default: "./keys",
        doc: "Directory of recipients' OpenPGP certificates (cert-d format, as sq uses) with its manifest; `sealgate keys init` or `keys import` creates it. A relative path is resolved at start. Manage it with `sealgate keys`.",
    },
    Variable {
        name: "SEALGATE_KEYSTORE_RELOAD",
        default: "10s",
        doc: "How often the key store and the secure mailbox file are checked for changes on disk (SIGHUP checks at once).",
    },
    Variable {
        name: "SEALGATE_UNUSABLE_KEY",
        default: "tempfail",
        doc: "A recipient whose certificate is expired, revoked or has no encryption subkey: tempfail (450 4.7.1), reject (550 5.7.1) or plaintext (delivered unencrypted, logged). Applied at RCPT and again at end of DATA.",
    },
    Variable {
        name: "SEALGATE_PROTECTED_HEADERS",
        default: "off",
        doc: "on: copy Subject and friends into the encrypted part (RFC 9788 style) and show the outer Subject as `...`.",
    },
    Variable {
        name: "SEALGATE_MAX_INSPECT_SIZE",
        default: "1048576",
        doc: "The verification window: how much of a message that may be already encrypted is held back (header block included) to verify that it is; a larger one is encrypted.",
    },
    Variable {
        name: "SEALGATE_SECURE_DOMAINS",
        default: "(none)",
        doc: "Secure domains, comma-separated: `secure.example.org=example.org` makes user@secure.example.org the TLS-only twin of user@example.org (delivered there); a bare domain makes all its addresses TLS-only.",
    },
    Variable {
        name: "SEALGATE_SECURE_MAILBOXES",
        default: "(none)",
        doc: "File of single TLS-only addresses, one per line (# comments); re-read when it changes (see SEALGATE_KEYSTORE_RELOAD) and on SIGHUP.",
    },
    Variable {
        name: "SEALGATE_TLS_MIN_VERSION",
        default: "TLSv1.2",
        doc: "Lowest TLS version a secure address accepts (TLSv1, TLSv1.1, TLSv1.2, TLSv1.3); lower or none gets 550 5.7.1.",
    },
    Variable {
        name: "SEALGATE_TRUSTED_MTA",
        default: "(SEALGATE_HOSTNAME)",
        doc: "Host names (comma-separated) of our own MTAs, i.e. Postfix's myhostname: only the first Received header, and only if its `by` is one of these, counts as TLS and authentication evidence. Required (no default) when the LMTP listener is on and secure addresses or SEALGATE_SCRUB are set.",
    },
    Variable {
        name: "SEALGATE_SCRUB",
        default: "authenticated",
        doc: "Remove the client's IP, name, HELO and mail program from: authenticated (mail of logged-in users), all, or off.",
    },
    Variable {
        name: "SEALGATE_SCRUB_HEADERS",
        default: "X-Originating-IP,X-Forwarded-For,X-Real-IP,X-Client-IP,X-Sender-IP,X-Remote-IP,X-Remote-Addr,X-Originating-Client,User-Agent,X-Mailer,X-MimeOLE,X-Newsreader,X-MS-Exchange-Organization-OriginalClientIPAddress,X-Yahoo-Newman-Property",
        doc: "Header fields the scrub stage removes, comma-separated, case-insensitive.",
    },
    Variable {
        name: "SEALGATE_LOG",
        default: "info",
        doc: "Log filter, RUST_LOG syntax (e.g. info,sealgate=debug). RUST_LOG is used when this is unset.",
    },
    Variable {
        name: "SEALGATE_LOG_FORMAT",
        default: "text",
        doc: "Log lines as text or json.",
    },
    Variable {
        name: "SEALGATE_LOG_ADDRESSES",
        default: "full",
        doc: "How e-mail addresses appear in logs: full, hash (first 16 hex digits of the SHA-256 of the canonical address) or none.",
    },
    Variable {
        name: "SEALGATE_METRICS_LISTEN",
        default: "127.0.0.1:9925",
        doc: "HTTP listener for /metrics (Prometheus), /healthz and /readyz: HOST:PORT, or off.",
    },
    Variable {
        name: ENV_FILE,
        default: "(the package's)",
        doc: "Read by `sealgate keys` only, not by the service: the env file (systemd EnvironmentFile= syntax) whose settings it uses under the environment's; default /etc/sealgate/sealgate.env when it exists.",
    },
];

/// A configuration problem, reported before any port is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending variable.
    pub variable: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// The process environment as UTF-8 pairs (others are skipped: no setting is non-UTF-8).
/// The one place that reads it (.clippy.toml bans the std::env readers elsewhere).
#[allow(
    clippy::disallowed_methods,
    reason = "the one reader of the environment"
)]
pub fn environment() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

impl Config {
    /// Reads the process environment.
    ///
    /// # Errors
    /// The first invalid or unknown `SEALGATE_*` variable.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(&environment())
    }

    /// Builds the configuration from a map of variables (tests pass their own).
    ///
    /// # Errors
    /// The first invalid or unknown `SEALGATE_*` variable.
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        // A typo in a variable name would silently fall back to a default: refuse instead.
        for name in vars.keys() {
            if name.starts_with("SEALGATE_") && !VARIABLES.iter().any(|v| v.name == name) {
                return Err(ConfigError {
                    variable: name.clone(),
                    problem: "unknown variable (see `sealgate --help`)".into(),
                });
            }
        }
        let get = |name: &str| -> Option<&str> {
            vars.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
        };
        let read = |name: &'static str| Value {
            name,
            raw: get(name),
        };

        let max_message_size = read("SEALGATE_MAX_MESSAGE_SIZE").size(104_857_600)?;
        let max_header_size = read("SEALGATE_MAX_HEADER_SIZE").size(1_048_576)?;
        let config = Config {
            lmtp_listen: read("SEALGATE_LMTP_LISTEN")
                .parse(parse_listen_or_off, "127.0.0.1:10024")?,
            lmtp_socket_mode: read("SEALGATE_LMTP_SOCKET_MODE").parse(parse_mode, "0660")?,
            milter_listen: read("SEALGATE_MILTER_LISTEN").parse(parse_listen_or_off, "off")?,
            milter_socket_mode: read("SEALGATE_MILTER_SOCKET_MODE").parse(parse_mode, "0660")?,
            milter_max_frame: usize::try_from(read("SEALGATE_MILTER_MAX_FRAME").size(1 << 20)?)
                .ok()
                .filter(|&n| n >= MIN_MILTER_FRAME)
                .ok_or_else(|| {
                    read("SEALGATE_MILTER_MAX_FRAME")
                        .err(format!("must be at least {MIN_MILTER_FRAME}"))
                })?,
            milter_timeout: read("SEALGATE_MILTER_TIMEOUT").duration("300s")?,
            next_hop: read("SEALGATE_NEXT_HOP").parse(parse_next_hop, "maildir:./mail")?,
            hostname: match get("SEALGATE_HOSTNAME") {
                Some(name) => parse_hostname(name).map_err(|p| read("SEALGATE_HOSTNAME").err(p))?,
                None => system_hostname(),
            },
            max_connections: read("SEALGATE_MAX_CONNECTIONS").count(100, 1)?,
            max_line_length: read("SEALGATE_MAX_LINE_LENGTH").count(4096, 512)?,
            max_recipients: read("SEALGATE_MAX_RECIPIENTS").count(1000, 1)?,
            max_message_size: (max_message_size != 0).then_some(max_message_size),
            max_header_size: usize::try_from(max_header_size)
                .ok()
                .filter(|&n| n >= 1024)
                .ok_or_else(|| read("SEALGATE_MAX_HEADER_SIZE").err("must be at least 1024"))?,
            idle_timeout: read("SEALGATE_IDLE_TIMEOUT").duration("300s")?,
            command_timeout: read("SEALGATE_COMMAND_TIMEOUT").duration("300s")?,
            data_timeout: read("SEALGATE_DATA_TIMEOUT").duration("300s")?,
            bare_newline: read("SEALGATE_BARE_NEWLINE").parse(parse_bare_newline, "reject")?,
            next_hop_connect_timeout: read("SEALGATE_NEXT_HOP_CONNECT_TIMEOUT").duration("10s")?,
            next_hop_timeout: read("SEALGATE_NEXT_HOP_TIMEOUT").duration("300s")?,
            next_hop_pool_size: read("SEALGATE_NEXT_HOP_POOL_SIZE").count(16, 0)?,
            shutdown_grace: read("SEALGATE_SHUTDOWN_GRACE").duration("30s")?,
            core_dumps: read("SEALGATE_CORE_DUMPS").parse(parse_on_off, "off")?,
            // Absolute: the cert-d iterator finds nothing under a relative base directory
            // (README's `./keys` default listed and loaded no certificate).
            keystore: read("SEALGATE_KEYSTORE")
                .parse(parse_path, "./keys")
                .map(|path| std::path::absolute(&path).unwrap_or(path))?,
            keystore_reload: read("SEALGATE_KEYSTORE_RELOAD").duration("10s")?,
            unusable_key: read("SEALGATE_UNUSABLE_KEY").parse(parse_unusable_key, "tempfail")?,
            protected_headers: read("SEALGATE_PROTECTED_HEADERS").parse(parse_on_off, "off")?,
            secure_domains: read("SEALGATE_SECURE_DOMAINS").parse(parse_secure_domains, "")?,
            secure_mailboxes: get("SEALGATE_SECURE_MAILBOXES")
                .map(parse_path)
                .transpose()
                .map_err(|p| read("SEALGATE_SECURE_MAILBOXES").err(p))?,
            env_file: get(ENV_FILE)
                .map(parse_path)
                .transpose()
                .map_err(|p| read(ENV_FILE).err(p))?,
            tls_min_version: read("SEALGATE_TLS_MIN_VERSION")
                .parse(parse_tls_version, "TLSv1.2")?,
            trusted_mta: Vec::new(),
            scrub: read("SEALGATE_SCRUB").parse(parse_scrub, "authenticated")?,
            scrub_headers: read("SEALGATE_SCRUB_HEADERS")
                .parse(parse_header_list, DEFAULT_SCRUB_HEADERS)?,
            max_inspect_size: usize::try_from(read("SEALGATE_MAX_INSPECT_SIZE").size(1_048_576)?)
                .map_err(|_| read("SEALGATE_MAX_INSPECT_SIZE").err("too large"))?,
            log_filter: get("SEALGATE_LOG")
                .or_else(|| get("RUST_LOG"))
                .unwrap_or("info")
                .to_string(),
            log_format: read("SEALGATE_LOG_FORMAT").parse(parse_log_format, "text")?,
            log_addresses: read("SEALGATE_LOG_ADDRESSES").parse(AddressLog::parse, "full")?,
            metrics_listen: read("SEALGATE_METRICS_LISTEN")
                .parse(parse_host_port_or_off, "127.0.0.1:9925")?,
        };
        if config.lmtp_listen.is_none() && config.milter_listen.is_none() {
            return Err(read("SEALGATE_LMTP_LISTEN")
                .err("off, and SEALGATE_MILTER_LISTEN is off too: nothing to listen on"));
        }
        let mut config = config;
        config.trusted_mta = match get("SEALGATE_TRUSTED_MTA") {
            Some(raw) => parse_host_list(raw).map_err(|p| read("SEALGATE_TRUSTED_MTA").err(p))?,
            // The system host name is rarely Postfix's myhostname: with secure addresses or
            // an explicit scrub setting, guessing would refuse TLS mail and leave submitted
            // mail unscrubbed without a word. Only the LMTP stage reads Received headers.
            None if config.lmtp_listen.is_some()
                && (!config.secure_domains.is_empty()
                    || config.secure_mailboxes.is_some()
                    || (get("SEALGATE_SCRUB").is_some() && config.scrub != ScrubMode::Off)) =>
            {
                return Err(read("SEALGATE_TRUSTED_MTA").err(
                    "unset: name your Postfix's myhostname (`postconf -h myhostname`); only a \
                     first Received header written by it counts as TLS and authentication \
                     evidence for secure addresses and scrubbing",
                ));
            }
            None => vec![config.hostname.to_ascii_lowercase()],
        };
        // The same check the service makes when it installs the filter, so that
        // `check-config` refuses what `run` would.
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&config.log_filter) {
            let name = if get("SEALGATE_LOG").is_some() {
                "SEALGATE_LOG"
            } else {
                "RUST_LOG"
            };
            return Err(ConfigError {
                variable: name.to_string(),
                problem: format!("{:?}: {err}", config.log_filter),
            });
        }
        Ok(config)
    }

    /// The effective configuration as `NAME=value` lines, for `sealgate check-config`.
    pub fn describe(&self) -> String {
        let size = |n: Option<u64>| n.map_or("0".to_string(), |n| n.to_string());
        let secs = |d: Duration| format!("{}s", d.as_secs_f64());
        let bare = match self.bare_newline {
            BareNewline::Reject => "reject",
            BareNewline::Normalize => "normalize",
            BareNewline::Allow => "allow",
        };
        let lines = [
            (
                "SEALGATE_LMTP_LISTEN",
                listen_or_off(self.lmtp_listen.as_ref()),
            ),
            (
                "SEALGATE_LMTP_SOCKET_MODE",
                format!("{:04o}", self.lmtp_socket_mode),
            ),
            (
                "SEALGATE_MILTER_LISTEN",
                listen_or_off(self.milter_listen.as_ref()),
            ),
            (
                "SEALGATE_MILTER_SOCKET_MODE",
                format!("{:04o}", self.milter_socket_mode),
            ),
            (
                "SEALGATE_MILTER_MAX_FRAME",
                self.milter_max_frame.to_string(),
            ),
            ("SEALGATE_MILTER_TIMEOUT", secs(self.milter_timeout)),
            ("SEALGATE_NEXT_HOP", self.next_hop.to_string()),
            ("SEALGATE_HOSTNAME", self.hostname.clone()),
            ("SEALGATE_MAX_CONNECTIONS", self.max_connections.to_string()),
            ("SEALGATE_MAX_LINE_LENGTH", self.max_line_length.to_string()),
            ("SEALGATE_MAX_RECIPIENTS", self.max_recipients.to_string()),
            ("SEALGATE_MAX_MESSAGE_SIZE", size(self.max_message_size)),
            ("SEALGATE_MAX_HEADER_SIZE", self.max_header_size.to_string()),
            ("SEALGATE_IDLE_TIMEOUT", secs(self.idle_timeout)),
            ("SEALGATE_COMMAND_TIMEOUT", secs(self.command_timeout)),
            ("SEALGATE_DATA_TIMEOUT", secs(self.data_timeout)),
            ("SEALGATE_BARE_NEWLINE", bare.to_string()),
            (
                "SEALGATE_NEXT_HOP_CONNECT_TIMEOUT",
                secs(self.next_hop_connect_timeout),
            ),
            ("SEALGATE_NEXT_HOP_TIMEOUT", secs(self.next_hop_timeout)),
            (
                "SEALGATE_NEXT_HOP_POOL_SIZE",
                self.next_hop_pool_size.to_string(),
            ),
            ("SEALGATE_SHUTDOWN_GRACE", secs(self.shutdown_grace)),
            (
                "SEALGATE_CORE_DUMPS",
                if self.core_dumps { "on" } else { "off" }.to_string(),
            ),
            ("SEALGATE_KEYSTORE", self.keystore.display().to_string()),
            ("SEALGATE_KEYSTORE_RELOAD", secs(self.keystore_reload)),
            (
                "SEALGATE_UNUSABLE_KEY",
                match self.unusable_key {
                    UnusableKey::Tempfail => "tempfail",
                    UnusableKey::Reject => "reject",
                    UnusableKey::Plaintext => "plaintext",
                }
                .to_string(),
            ),
            (
                "SEALGATE_PROTECTED_HEADERS",
                if self.protected_headers { "on" } else { "off" }.to_string(),
            ),
            (
                "SEALGATE_MAX_INSPECT_SIZE",
                self.max_inspect_size.to_string(),
            ),
            (
                "SEALGATE_SECURE_DOMAINS",
                self.secure_domains
                    .iter()
                    .map(|(secure, real)| format!("{secure}={real}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "SEALGATE_SECURE_MAILBOXES",
                self.secure_mailboxes
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ("SEALGATE_TLS_MIN_VERSION", self.tls_min_version.to_string()),
            ("SEALGATE_TRUSTED_MTA", self.trusted_mta.join(",")),
            (
                "SEALGATE_SCRUB",
                match self.scrub {
                    ScrubMode::Authenticated => "authenticated",
                    ScrubMode::All => "all",
                    ScrubMode::Off => "off",
                }
                .to_string(),
            ),
            ("SEALGATE_SCRUB_HEADERS", self.scrub_headers.join(",")),
            ("SEALGATE_LOG", self.log_filter.clone()),
            (
                "SEALGATE_LOG_FORMAT",
                match self.log_format {
                    LogFormat::Text => "text",
                    LogFormat::Json => "json",
                }
                .to_string(),
            ),
            (
                "SEALGATE_LOG_ADDRESSES",
                self.log_addresses.as_str().to_string(),
            ),
            (
                "SEALGATE_METRICS_LISTEN",
                self.metrics_listen.clone().unwrap_or_else(|| "off".into()),
            ),
            (
                ENV_FILE,
                self.env_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
        ];
        lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }
}

/// One variable's raw value on its way to a typed one.
struct Value<'a> {
    name: &'static str,
    raw: Option<&'a str>,
}

impl Value<'_> {
    fn err(&self, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            variable: self.name.to_string(),
            problem: problem.into(),
        }
    }

    fn parse<T>(
        &self,
        parser: fn(&str) -> Result<T, String>,
        default: &str,
    ) -> Result<T, ConfigError> {
        parser(self.raw.unwrap_or(default)).map_err(|p| self.err(p))
    }

    fn count(&self, default: usize, min: usize) -> Result<usize, ConfigError> {
        let Some(raw) = self.raw else {
            return Ok(default);
        };
        match raw.parse::<usize>() {
            Ok(n) if n >= min => Ok(n),
            Ok(_) => Err(self.err(format!("must be at least {min}"))),
            Err(_) => Err(self.err(format!("{raw:?} is not a whole number"))),
        }
    }

    fn size(&self, default: u64) -> Result<u64, ConfigError> {
        self.raw
            .map_or(Ok(default), |raw| parse_size(raw).map_err(|p| self.err(p)))
    }

    fn duration(&self, default: &str) -> Result<Duration, ConfigError> {
        let duration = parse_duration(self.raw.unwrap_or(default)).map_err(|p| self.err(p))?;
        if duration.is_zero() {
            return Err(self.err("must be longer than 0"));
        }
        Ok(duration)
    }
}

fn parse_listen(raw: &str) -> Result<Address, String> {
    if let Some(path) = raw.strip_prefix("unix:") {
        return parse_path(path).map(Address::Unix);
    }
    parse_host_port(raw).map(Address::Tcp)
}

/// A listener address, or `off` for none.
fn parse_listen_or_off(raw: &str) -> Result<Option<Address>, String> {
    if raw.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_listen(raw).map(Some)
}

fn listen_or_off(addr: Option<&Address>) -> String {
    addr.map_or_else(|| "off".to_string(), ToString::to_string)
}

fn parse_endpoint(raw: &str) -> Result<Address, String> {
    if let Some(path) = raw.strip_prefix("unix:") {
        return parse_path(path).map(Address::Unix);
    }
    parse_host_port(raw).map(Address::Tcp)
}

fn parse_next_hop(raw: &str) -> Result<NextHopAddr, String> {
    let (kind, rest) = raw
        .split_once(':')
        .ok_or_else(|| format!("{raw:?}: expected maildir:PATH, lmtp:DEST or smtp:DEST"))?;
    match kind {
        "maildir" => parse_path(rest).map(NextHopAddr::Maildir),
        "lmtp" => parse_endpoint(rest).map(NextHopAddr::Lmtp),
        "smtp" => parse_endpoint(rest).map(NextHopAddr::Smtp),
        other => Err(format!(
            "unknown next hop type {other:?}: expected maildir, lmtp or smtp"
        )),
    }
}

/// A path made absolute against the working directory at start, once: a relative path must
/// not mean something else to `sealgate keys` run elsewhere, nor change meaning later.
fn parse_path(raw: &str) -> Result<PathBuf, String> {
    if raw.is_empty() {
        return Err("empty path".into());
    }
    std::path::absolute(raw).map_err(|err| format!("{raw:?}: cannot make it absolute: {err}"))
}

fn parse_host_port(raw: &str) -> Result<String, String> {
    let (host, port) = raw
        .rsplit_once(':')
        .ok_or_else(|| format!("{raw:?}: expected HOST:PORT or unix:PATH"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{raw:?}: missing host"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("{raw:?}: port must be a number from 0 to 65535"))?;
    Ok(raw.to_string())
}

fn parse_mode(raw: &str) -> Result<u32, String> {
    match u32::from_str_radix(raw, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("{raw:?}: expected an octal mode such as 0660")),
    }
}

fn parse_hostname(raw: &str) -> Result<String, String> {
    let valid = raw.len() <= 253
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if valid {
        Ok(raw.to_string())
    } else {
        Err(format!("{raw:?} is not a host name"))
    }
}

fn parse_bare_newline(raw: &str) -> Result<BareNewline, String> {
    match raw {
        "reject" => Ok(BareNewline::Reject),
        "normalize" => Ok(BareNewline::Normalize),
        "allow" => Ok(BareNewline::Allow),
        other => Err(format!("{other:?}: expected reject, normalize or allow")),
    }
}

fn parse_secure_domains(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut domains = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (secure, real) = item.split_once('=').unwrap_or((item, item));
        let (secure, real) = (secure.trim(), real.trim());
        for domain in [secure, real] {
            if parse_hostname(domain).is_err() || !domain.contains('.') {
                return Err(format!("{domain:?} is not a domain"));
            }
        }
        domains.push((secure.to_ascii_lowercase(), real.to_ascii_lowercase()));
    }
    Ok(domains)
}

fn parse_tls_version(raw: &str) -> Result<TlsVersion, String> {
    TlsVersion::parse(raw)
        .ok_or_else(|| format!("{raw:?}: expected TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3"))
}

fn parse_host_list(raw: &str) -> Result<Vec<String>, String> {
    let hosts: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| parse_hostname(h).map(|h| h.to_ascii_lowercase()))
        .collect::<Result<_, _>>()?;
    if hosts.is_empty() {
        return Err("name at least one host".into());
    }
    Ok(hosts)
}

fn parse_scrub(raw: &str) -> Result<ScrubMode, String> {
    match raw {
        "authenticated" => Ok(ScrubMode::Authenticated),
        "all" => Ok(ScrubMode::All),
        "off" => Ok(ScrubMode::Off),
        other => Err(format!("{other:?}: expected authenticated, all or off")),
    }
}

fn parse_header_list(raw: &str) -> Result<Vec<String>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| {
            if h.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                Ok(h.to_ascii_lowercase())
            } else {
                Err(format!("{h:?} is not a header field name"))
            }
        })
        .collect()
}

fn parse_unusable_key(raw: &str) -> Result<UnusableKey, String> {
    match raw {
        "tempfail" => Ok(UnusableKey::Tempfail),
        "reject" => Ok(UnusableKey::Reject),
        "plaintext" => Ok(UnusableKey::Plaintext),
        other => Err(format!("{other:?}: expected tempfail, reject or plaintext")),
    }
}

fn parse_on_off(raw: &str) -> Result<bool, String> {
    match raw {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        other => Err(format!("{other:?}: expected on or off")),
    }
}

/// `HOST:PORT`, or `off` for none.
fn parse_host_port_or_off(raw: &str) -> Result<Option<String>, String> {
    if raw.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_host_port(raw).map(Some)
}

fn parse_log_format(raw: &str) -> Result<LogFormat, String> {
    match raw {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("{other:?}: expected text or json")),
    }
}

/// Octets, with an optional binary suffix: `512`, `64K`, `10M`, `2G`.
fn parse_size(raw: &str) -> Result<u64, String> {
    let upper = raw.to_ascii_uppercase();
    let (digits, unit) = match upper.trim_end_matches('B').trim_end_matches('I') {
        s if s.ends_with('K') => (&s[..s.len() - 1], 1u64 << 10),
        s if s.ends_with('M') => (&s[..s.len() - 1], 1 << 20),
        s if s.ends_with('G') => (&s[..s.len() - 1], 1 << 30),
        s => (s, 1),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{raw:?}: expected a size such as 1048576, 512K, 10M or 1G"))
}

/// `300s`, `5m`, `1h`, `250ms`, or bare seconds.
fn parse_duration(raw: &str) -> Result<Duration, String> {
    let bad = || format!("{raw:?}: expected a duration such as 30s, 5m, 1h or 250ms");
    let (number, unit_ms) = if let Some(n) = raw.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = raw.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = raw.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = raw.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (raw, 1000)
    };
    let n: u64 = number.trim().parse().map_err(|_| bad())?;
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| parse_hostname(s).is_ok() && !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = Config::from_vars(&BTreeMap::new()).unwrap();
        assert_eq!(
            config.lmtp_listen,
            Some(Address::Tcp("127.0.0.1:10024".into()))
        );
        assert_eq!(config.milter_listen, None);
        assert_eq!(config.milter_max_frame, 1 << 20);
        assert_eq!(
            config.milter_max_frame,
            sealgate_protocol::milter::DEFAULT_MAX_FRAME
        );
        // Relative paths are resolved once, against the working directory at start.
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(config.next_hop, NextHopAddr::Maildir(cwd.join("mail")));
        assert_eq!(config.keystore, cwd.join("keys"));
        assert_eq!(config.max_message_size, Some(104_857_600));
        assert_eq!(config.bare_newline, BareNewline::Reject);
        // check-config output names every documented variable with its default value.
        let described = config.describe();
        for variable in VARIABLES {
            let line = described
                .lines()
                .find(|l| l.starts_with(&format!("{}=", variable.name)))
                .unwrap_or_else(|| panic!("{} missing from describe()", variable.name));
            if !variable.default.starts_with('(') {
                let value = &line[variable.name.len() + 1..];
                let absolute = variable
                    .default
                    .replace("./", &format!("{}/", cwd.display()));
                let same = value == variable.default
                    || value == absolute
                    || parse_duration(value).ok() == parse_duration(variable.default).ok();
                assert!(same, "{line} vs default {}", variable.default);
            }
        }
    }

    #[test]
    fn next_hop_syntax() {
        let cases = [
            (
                "maildir:/var/mail",
                Ok(NextHopAddr::Maildir("/var/mail".into())),
            ),
            (
                "lmtp:unix:/run/dovecot/lmtp",
                Ok(NextHopAddr::Lmtp(Address::Unix("/run/dovecot/lmtp".into()))),
            ),
            (
                "lmtp:127.0.0.1:24",
                Ok(NextHopAddr::Lmtp(Address::Tcp("127.0.0.1:24".into()))),
            ),
            (
                "smtp:[::1]:10026",
                Ok(NextHopAddr::Smtp(Address::Tcp("[::1]:10026".into()))),
            ),
            ("smtp:127.0.0.1", Err(())),
            ("lmtp:127.0.0.1:99999", Err(())),
            ("pop3:x:1", Err(())),
            ("maildir:", Err(())),
            ("nothing", Err(())),
        ];
        for (raw, expected) in cases {
            assert_eq!(parse_next_hop(raw).map_err(|_| ()), expected, "{raw}");
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999G").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let cases = [
            ("SEALGATE_LMTP_LISTEN", "localhost"),
            ("SEALGATE_MAX_RECIPIENTS", "0"),
            ("SEALGATE_MAX_LINE_LENGTH", "100"),
            ("SEALGATE_IDLE_TIMEOUT", "0s"),
            ("SEALGATE_BARE_NEWLINE", "sometimes"),
            ("SEALGATE_LMTP_SOCKET_MODE", "999"),
            ("SEALGATE_HOSTNAME", "bad host"),
            ("SEALGATE_UNUSABLE_KEY", "ignore"),
            ("SEALGATE_PROTECTED_HEADERS", "maybe"),
            ("SEALGATE_SECURE_DOMAINS", "secure.example.org=bad domain"),
            ("SEALGATE_TLS_MIN_VERSION", "TLSv9"),
            ("SEALGATE_SCRUB", "some"),
            ("SEALGATE_SCRUB_HEADERS", "X-Mailer:"),
            ("SEALGATE_TRUSTED_MTA", ","),
            ("SEALGATE_MAX_HEADER_SIZE", "10"),
            ("SEALGATE_NEXT_HOPP", "maildir:x"),
            ("SEALGATE_MILTER_LISTEN", "localhost"),
            ("SEALGATE_MILTER_SOCKET_MODE", "8"),
            ("SEALGATE_MILTER_MAX_FRAME", "1000"),
            ("SEALGATE_MILTER_TIMEOUT", "0"),
        ];
        for (name, value) in cases {
            let err = Config::from_vars(&vars(&[(name, value)])).unwrap_err();
            assert_eq!(err.variable, name);
        }
    }

    #[test]
    fn secure_domains_and_trusted_mtas() {
        let config = Config::from_vars(&vars(&[
            (
                "SEALGATE_SECURE_DOMAINS",
                "Secure.Example.org=example.org, vault.example.net",
            ),
            ("SEALGATE_HOSTNAME", "MX.example.org"),
            ("SEALGATE_TRUSTED_MTA", "MX.example.org"),
        ]))
        .unwrap();
        assert_eq!(
            config.secure_domains,
            vec![
                ("secure.example.org".into(), "example.org".into()),
                ("vault.example.net".into(), "vault.example.net".into())
            ]
        );
        assert_eq!(config.trusted_mta, vec!["mx.example.org".to_string()]);
        assert_eq!(config.tls_min_version, TlsVersion::Tls1_2);
        assert!(TlsVersion::Tls1_1 < TlsVersion::Tls1_2);
        assert!(config.scrub_headers.contains(&"user-agent".to_string()));
    }

    #[test]
    fn trusted_mta_is_required_where_received_headers_decide() {
        for (name, value) in [
            ("SEALGATE_SECURE_DOMAINS", "secure.example.org=example.org"),
            ("SEALGATE_SECURE_MAILBOXES", "/etc/sealgate/secure"),
            ("SEALGATE_SCRUB", "authenticated"),
            ("SEALGATE_SCRUB", "all"),
        ] {
            let err = Config::from_vars(&vars(&[(name, value)])).unwrap_err();
            assert_eq!(err.variable, "SEALGATE_TRUSTED_MTA", "{name}={value}");
            assert!(err.problem.contains("myhostname"), "{err}");
            let given = Config::from_vars(&vars(&[
                (name, value),
                ("SEALGATE_TRUSTED_MTA", "mx.example.org"),
            ]))
            .unwrap();
            assert_eq!(given.trusted_mta, vec!["mx.example.org".to_string()]);
        }
        // Nothing decided by Received headers: scrubbing off, or the milter alone.
        assert!(Config::from_vars(&vars(&[("SEALGATE_SCRUB", "off")])).is_ok());
        assert!(
            Config::from_vars(&vars(&[
                ("SEALGATE_LMTP_LISTEN", "off"),
                ("SEALGATE_MILTER_LISTEN", "127.0.0.1:10027"),
                ("SEALGATE_SECURE_DOMAINS", "secure.example.org"),
            ]))
            .is_ok()
        );
    }

    #[test]
    fn a_garbage_log_filter_is_a_configuration_error() {
        let err = Config::from_vars(&vars(&[("SEALGATE_LOG", "info,sealgate=loud")])).unwrap_err();
        assert_eq!(err.variable, "SEALGATE_LOG");
    }

    #[test]
    fn milter_beside_lmtp_or_alone_but_not_nothing() {
        let both = Config::from_vars(&vars(&[(
            "SEALGATE_MILTER_LISTEN",
            "unix:/run/sealgate/milter",
        )]))
        .unwrap();
        assert!(both.lmtp_listen.is_some());
        assert_eq!(
            both.milter_listen,
            Some(Address::Unix("/run/sealgate/milter".into()))
        );
        let alone = Config::from_vars(&vars(&[
            ("SEALGATE_LMTP_LISTEN", "off"),
            ("SEALGATE_MILTER_LISTEN", "127.0.0.1:8891"),
        ]))
        .unwrap();
        assert_eq!(alone.lmtp_listen, None);
        assert!(alone.describe().contains("SEALGATE_LMTP_LISTEN=off\n"));
        let err = Config::from_vars(&vars(&[("SEALGATE_LMTP_LISTEN", "OFF")])).unwrap_err();
        assert_eq!(err.variable, "SEALGATE_LMTP_LISTEN");
        assert!(err.problem.contains("SEALGATE_MILTER_LISTEN"), "{err}");
    }

    #[test]
    fn unlimited_message_size() {
        let config = Config::from_vars(&vars(&[("SEALGATE_MAX_MESSAGE_SIZE", "0")])).unwrap();
        assert_eq!(config.max_message_size, None);
    }
}
