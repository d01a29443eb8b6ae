//! The one declaration of every `SEALGATE_*` variable: name, default, documentation, parser
//! and display, side by side. [`variables!`] turns the table into the [`Config`] struct,
//! [`VARIABLES`] (`--help`, docs/configuration.md, the man page, packaging/sealgate.env),
//! the parsing of [`Config::from_vars`] and [`Config::describe`] (`check-config`), so a
//! default is written once and no listing can leave a variable out.

use std::path::PathBuf;
use std::time::Duration;

use sealgate_protocol::BareNewline;

use super::parse::{self, Keyword};
use super::{
    ConfigError, DEFAULT_SCRUB_HEADERS, KeyStoreLocation, LogFormat, MIN_MILTER_FRAME, NextHopAddr,
    Raw, ScrubMode, UnusableKey,
};
use crate::message::tls::TlsVersion;
use crate::net::Address;
use crate::ops::redact::AddressLog;

/// One documented variable: name, default (as written in the environment) and meaning.
#[derive(Debug)]
pub struct Variable {
    /// The environment variable's name.
    pub name: &'static str,
    /// Its default, in the syntax the variable takes; `(…)` describes a default that depends
    /// on the system or on other settings.
    pub default: &'static str,
    /// What it controls and what happens at the limit.
    pub doc: &'static str,
}

/// Each entry: `field: Type { name, default, [unset,] doc, parse, show }`. `parse` reads the
/// value, or the default when the variable is unset or empty; an entry whose default is a
/// `(description)` gives the value for "unset" as `unset` instead. `show` prints the value
/// in the syntax `parse` reads.
macro_rules! variables {
    (@read $raw:expr, $default:expr, $parse:expr) => {
        ($parse)($raw.unwrap_or($default))
    };
    (@read $raw:expr, $default:expr, $parse:expr, $unset:expr) => {
        match $raw {
            Some(raw) => ($parse)(raw),
            None => Ok($unset),
        }
    };
    ($(
        $(#[doc = $note:literal])*
        $field:ident: $ty:ty {
            name: $name:literal,
            default: $default:expr,
            $(unset: $unset:expr,)?
            doc: $doc:literal,
            parse: $parse:expr,
            show: $show:expr,
        }
    )*) => {
        /// The validated configuration: one field per entry of [`VARIABLES`], in its order.
        #[derive(Debug, Clone)]
        pub struct Config {
            $(
                #[doc = concat!("`", $name, "`: ", $doc)]
                $(#[doc = ""] #[doc = $note])*
                pub $field: $ty,
            )*
        }

        /// Every variable sealgate reads, in `--help` order. docs/configuration.md's table,
        /// the man page and packaging/sealgate.env are checked against it
        /// (tests/integration/readme.rs and packaging.rs).
        pub const VARIABLES: &[Variable] = &[
            $(Variable { name: $name, default: $default, doc: $doc },)*
        ];

        impl Config {
            /// Every variable parsed on its own, in table order; the first problem wins.
            pub(super) fn parse_each(vars: &Raw<'_>) -> Result<Config, ConfigError> {
                Ok(Config {
                    $(
                        $field: variables!(@read vars.get($name), $default, $parse $(, $unset)?)
                            .map_err(|problem| ConfigError::new($name, problem))?,
                    )*
                })
            }

            /// The effective configuration as `NAME=value` lines, in the syntax the variables
            /// take, for `sealgate check-config`.
            pub fn describe(&self) -> String {
                let mut out = String::new();
                $(
                    out.push_str($name);
                    out.push('=');
                    out.push_str(&($show)(&self.$field));
                    out.push('\n');
                )*
                out
            }
        }
    };
}

variables! {
    lmtp_listen: Option<Address> {
        name: "SEALGATE_LMTP_LISTEN",
        default: "127.0.0.1:10024",
        doc: "LMTP listener: HOST:PORT, unix:PATH, or off (then the milter must be on).",
        parse: parse::address_or_off,
        show: off_or,
    }
    lmtp_socket_mode: u32 {
        name: "SEALGATE_LMTP_SOCKET_MODE",
        default: "0660",
        doc: "Octal file mode of the LMTP unix socket.",
        parse: parse::mode,
        show: octal,
    }
    milter_listen: Option<Address> {
        name: "SEALGATE_MILTER_LISTEN",
        default: "off",
        doc: "Milter listener for Postfix's smtpd_milters (refuses at RCPT time, scrubs headers): HOST:PORT, unix:PATH, or off.",
        parse: parse::address_or_off,
        show: off_or,
    }
    milter_socket_mode: u32 {
        name: "SEALGATE_MILTER_SOCKET_MODE",
        default: "0660",
        doc: "Octal file mode of the milter unix socket.",
        parse: parse::mode,
        show: octal,
    }
    /// The protocol crate's `DEFAULT_MAX_FRAME`; at least [`MIN_MILTER_FRAME`].
    milter_max_frame: usize {
        name: "SEALGATE_MILTER_MAX_FRAME",
        default: "1048576",
        doc: "Largest milter packet in octets (K/M suffixes; Postfix sends at most 65535 octets of body per packet); a larger one ends that milter connection.",
        parse: |raw| parse::size_at_least(raw, MIN_MILTER_FRAME),
        show: ToString::to_string,
    }
    milter_timeout: Duration {
        name: "SEALGATE_MILTER_TIMEOUT",
        default: "300s",
        doc: "Wait for the next packet from Postfix on a milter connection; then it is closed. Keep it at least Postfix's smtpd_timeout (300s).",
        parse: parse::timeout,
        show: seconds,
    }
    next_hop: NextHopAddr {
        name: "SEALGATE_NEXT_HOP",
        default: "maildir:./mail",
        doc: "Where mail goes: maildir:PATH, lmtp:HOST:PORT, lmtp:unix:PATH, smtp:HOST:PORT, smtp:unix:PATH.",
        parse: parse::next_hop,
        show: ToString::to_string,
    }
    hostname: String {
        name: "SEALGATE_HOSTNAME",
        default: "(the system host name)",
        unset: parse::system_hostname(),
        doc: "Name used in the greeting, in LHLO/EHLO to the next hop and in Maildir file names.",
        parse: parse::hostname,
        show: ToString::to_string,
    }
    max_connections: usize {
        name: "SEALGATE_MAX_CONNECTIONS",
        default: "100",
        doc: "Concurrent connections per listener (LMTP and milter each); at the limit sealgate stops accepting until one ends.",
        parse: |raw| parse::count(raw, 1),
        show: ToString::to_string,
    }
    max_line_length: usize {
        name: "SEALGATE_MAX_LINE_LENGTH",
        default: "4096",
        doc: "Longest command line in octets (without CRLF); longer gets 500 5.5.2 and is discarded.",
        parse: |raw| parse::count(raw, 512),
        show: ToString::to_string,
    }
    max_recipients: usize {
        name: "SEALGATE_MAX_RECIPIENTS",
        default: "1000",
        doc: "Recipients per transaction; each further RCPT gets 452 4.5.3.",
        parse: |raw| parse::count(raw, 1),
        show: ToString::to_string,
    }
    /// `None` means unlimited.
    max_message_size: Option<u64> {
        name: "SEALGATE_MAX_MESSAGE_SIZE",
        default: "104857600",
        doc: "Largest message in octets (K/M/G suffixes, 0 = unlimited); announced as SIZE. MAIL with a larger SIZE= gets 552 5.3.4; a larger DATA is drained and every recipient gets 552 5.3.4.",
        parse: |raw| parse::size(raw).map(|n| (n != 0).then_some(n)),
        show: |n: &Option<u64>| n.unwrap_or(0).to_string(),
    }
    max_header_size: usize {
        name: "SEALGATE_MAX_HEADER_SIZE",
        default: "1048576",
        doc: "Largest header block in octets, the per-transaction buffer; a larger one is drained and every recipient gets 552 5.3.4.",
        parse: |raw| parse::size_at_least(raw, 1024),
        show: ToString::to_string,
    }
    idle_timeout: Duration {
        name: "SEALGATE_IDLE_TIMEOUT",
        default: "300s",
        doc: "Wait for a command outside a transaction; then 421 4.4.2 and close.",
        parse: parse::timeout,
        show: seconds,
    }
    command_timeout: Duration {
        name: "SEALGATE_COMMAND_TIMEOUT",
        default: "300s",
        doc: "Wait for the next command inside a transaction; then 421 4.4.2 and close.",
        parse: parse::timeout,
        show: seconds,
    }
    data_timeout: Duration {
        name: "SEALGATE_DATA_TIMEOUT",
        default: "300s",
        doc: "Wait for more DATA bytes; then the transaction is aborted, 421 4.4.2 and close.",
        parse: parse::timeout,
        show: seconds,
    }
    bare_newline: BareNewline {
        name: "SEALGATE_BARE_NEWLINE",
        default: "reject",
        doc: "Bare LF or bare CR in DATA: reject (550 5.5.2 per recipient), normalize (to CRLF) or allow. Only CRLF.CRLF ever ends DATA.",
        parse: BareNewline::parse,
        show: keyword,
    }
    next_hop_connect_timeout: Duration {
        name: "SEALGATE_NEXT_HOP_CONNECT_TIMEOUT",
        default: "10s",
        doc: "Connecting to the next hop; then 451 4.4.1.",
        parse: parse::timeout,
        show: seconds,
    }
    next_hop_timeout: Duration {
        name: "SEALGATE_NEXT_HOP_TIMEOUT",
        default: "300s",
        doc: "Each read or write to the next hop; then 451 4.4.2. Keep it below Postfix's lmtp_data_done_timeout (600s).",
        parse: parse::timeout,
        show: seconds,
    }
    next_hop_pool_size: usize {
        name: "SEALGATE_NEXT_HOP_POOL_SIZE",
        default: "16",
        doc: "Idle next-hop connections kept for reuse (0 = a new connection per message).",
        parse: |raw| parse::count(raw, 0),
        show: ToString::to_string,
    }
    shutdown_grace: Duration {
        name: "SEALGATE_SHUTDOWN_GRACE",
        default: "30s",
        doc: "On SIGTERM/SIGINT: how long in-flight transactions may finish; then they are cut (never acknowledged).",
        parse: parse::timeout,
        show: seconds,
    }
    core_dumps: bool {
        name: "SEALGATE_CORE_DUMPS",
        default: "off",
        doc: "off: at start sealgate sets its core file size limit to 0 and makes itself non-dumpable, so a crash writes no message content to disk (and other processes of its user cannot read its memory). on: core dumps follow the system's settings (for debugging).",
        parse: parse::on_off,
        show: on_off,
    }
    /// A directory is absolute, resolved once at start.
    keystore: KeyStoreLocation {
        name: "SEALGATE_KEYSTORE",
        default: "./keys",
        doc: "Where recipients' OpenPGP certificates are: a directory (cert-d format, as sq uses, with its manifest; `sealgate keys init` or `keys import` creates it; a relative path is resolved at start), or a PostgreSQL URL for a fleet, postgresql://USER@HOST/DBNAME (?host=/run/postgresql for a unix socket, ?sslmode=require or verify-full; docs/keystore-postgres.md). Manage it with `sealgate keys`.",
        parse: parse::keystore,
        show: ToString::to_string,
    }
    keystore_password_file: Option<PathBuf> {
        name: "SEALGATE_KEYSTORE_PASSWORD_FILE",
        default: "(none)",
        unset: None,
        doc: "With a PostgreSQL key store: a file whose first line is the database password (read at every connection, so a rotated password needs no restart). Never logged.",
        parse: |raw| parse::path(raw).map(Some),
        show: optional_path,
    }
    keystore_max_stale: Duration {
        name: "SEALGATE_KEYSTORE_MAX_STALE",
        default: "300s",
        doc: "With a PostgreSQL key store: how long after the database last answered its cached answers are still used; after that, and at once for an address not in the cache, the recipient gets 451 4.7.0 (never plaintext).",
        parse: parse::timeout,
        show: seconds,
    }
    keystore_reload: Duration {
        name: "SEALGATE_KEYSTORE_RELOAD",
        default: "10s",
        doc: "How often the key store and the secure mailbox file are checked for changes on disk (SIGHUP checks at once).",
        parse: parse::timeout,
        show: seconds,
    }
    unusable_key: UnusableKey {
        name: "SEALGATE_UNUSABLE_KEY",
        default: "tempfail",
        doc: "A recipient whose certificate is expired, revoked or has no encryption subkey: tempfail (450 4.7.1), reject (550 5.7.1) or plaintext (delivered unencrypted, logged). Applied at RCPT and again at end of DATA.",
        parse: UnusableKey::parse,
        show: keyword,
    }
    protected_headers: bool {
        name: "SEALGATE_PROTECTED_HEADERS",
        default: "off",
        doc: "on: copy Subject and friends into the encrypted part (RFC 9788 style) and show the outer Subject as `...`.",
        parse: parse::on_off,
        show: on_off,
    }
    max_inspect_size: usize {
        name: "SEALGATE_MAX_INSPECT_SIZE",
        default: "1048576",
        doc: "The verification window: how much of a message that may be already encrypted is held back (header block included) to verify that it is; a larger one is encrypted.",
        parse: |raw| usize::try_from(parse::size(raw)?).map_err(|_| "too large".to_string()),
        show: ToString::to_string,
    }
    /// Secure domain → the domain its mailboxes live in (the same domain when no `=` was given).
    secure_domains: Vec<(String, String)> {
        name: "SEALGATE_SECURE_DOMAINS",
        default: "(none)",
        unset: Vec::new(),
        doc: "Secure domains, comma-separated: `secure.example.org=example.org` makes user@secure.example.org the TLS-only twin of user@example.org (delivered there); a bare domain makes all its addresses TLS-only.",
        parse: parse::secure_domains,
        show: pairs,
    }
    secure_mailboxes: Option<PathBuf> {
        name: "SEALGATE_SECURE_MAILBOXES",
        default: "(none)",
        unset: None,
        doc: "File of single TLS-only addresses, one per line (# comments); re-read when it changes (see SEALGATE_KEYSTORE_RELOAD) and on SIGHUP. With a database key store, its mailbox_flags apply too.",
        parse: |raw| parse::path(raw).map(Some),
        show: optional_path,
    }
    tls_min_version: TlsVersion {
        name: "SEALGATE_TLS_MIN_VERSION",
        default: "TLSv1.2",
        doc: "Lowest TLS version a secure address accepts (TLSv1, TLSv1.1, TLSv1.2, TLSv1.3); lower or none gets 550 5.7.1.",
        parse: parse::tls_version,
        show: ToString::to_string,
    }
    /// Lower-cased; when unset, decided by [`Config::from_vars`] from the other settings.
    trusted_mta: Vec<String> {
        name: "SEALGATE_TRUSTED_MTA",
        default: "(SEALGATE_HOSTNAME)",
        unset: Vec::new(),
        doc: "Host names (comma-separated) of our own MTAs, i.e. Postfix's myhostname: only the first Received header, and only if its `by` is one of these, counts as TLS and authentication evidence. Required (no default) when the LMTP listener is on and secure addresses or SEALGATE_SCRUB are set.",
        parse: parse::host_list,
        show: |hosts: &Vec<String>| hosts.join(","),
    }
    scrub: ScrubMode {
        name: "SEALGATE_SCRUB",
        default: "authenticated",
        doc: "Remove the client's IP, name, HELO and mail program from: authenticated (mail of logged-in users), all, or off.",
        parse: ScrubMode::parse,
        show: keyword,
    }
    /// Lower-cased.
    scrub_headers: Vec<String> {
        name: "SEALGATE_SCRUB_HEADERS",
        default: DEFAULT_SCRUB_HEADERS,
        doc: "Header fields the scrub stage removes, comma-separated, case-insensitive.",
        parse: parse::header_list,
        show: |names: &Vec<String>| names.join(","),
    }
    /// `RUST_LOG` when unset: see [`Config::from_vars`].
    log_filter: String {
        name: "SEALGATE_LOG",
        default: "info",
        doc: "Log filter, RUST_LOG syntax (e.g. info,sealgate=debug). RUST_LOG is used when this is unset.",
        parse: parse::log_filter,
        show: ToString::to_string,
    }
    log_format: LogFormat {
        name: "SEALGATE_LOG_FORMAT",
        default: "text",
        doc: "Log lines as text or json.",
        parse: LogFormat::parse,
        show: keyword,
    }
    log_addresses: AddressLog {
        name: "SEALGATE_LOG_ADDRESSES",
        default: "full",
        doc: "How e-mail addresses appear in logs: full, hash (first 16 hex digits of the SHA-256 of the canonical address) or none.",
        parse: AddressLog::parse,
        show: keyword,
    }
    metrics_listen: Option<String> {
        name: "SEALGATE_METRICS_LISTEN",
        default: "127.0.0.1:9925",
        doc: "HTTP listener for /metrics (Prometheus), /healthz and /readyz: HOST:PORT, or off.",
        parse: parse::host_port_or_off,
        show: off_or,
    }
    env_file: Option<PathBuf> {
        name: "SEALGATE_ENV_FILE",
        default: "(the package's)",
        unset: None,
        doc: "Read by `sealgate keys` only, not by the service: the env file (systemd EnvironmentFile= syntax) whose settings it uses under the environment's; default /etc/sealgate/sealgate.env when it exists.",
        parse: |raw| parse::path(raw).map(Some),
        show: optional_path,
    }
}

/// `off` for none.
fn off_or<T: ToString>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map_or_else(|| "off".to_string(), ToString::to_string)
}

fn octal(mode: &u32) -> String {
    format!("{mode:04o}")
}

fn seconds(duration: &Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

fn on_off(on: &bool) -> String {
    if *on { "on" } else { "off" }.to_string()
}

fn keyword<K: Keyword>(value: &K) -> String {
    value.as_str().to_string()
}

/// Empty for none.
fn optional_path(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// `secure=real,…`, as [`parse::secure_domains`] reads them.
fn pairs(domains: &[(String, String)]) -> String {
    domains
        .iter()
        .map(|(secure, real)| format!("{secure}={real}"))
        .collect::<Vec<_>>()
        .join(",")
}
