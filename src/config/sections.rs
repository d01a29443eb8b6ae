//! Per-component sections of [`Config`]: each component can take the few settings it uses
//! instead of the whole configuration (house.md habit 5). A section is built from the parsed
//! `Config` (`config.lmtp()`), so the variable table stays the one declaration. The accept
//! loop's limits (`server::Limits`) and the encrypt stage's (`EncryptConfig`) are defined by
//! their components. The LMTP and milter sessions and the next hop hold only their section.

use std::path::PathBuf;
use std::time::Duration;

use sealgate_protocol::BareNewline;

use super::{Config, KeyStoreLocation, ScrubMode};
use crate::message::tls::TlsVersion;
use crate::net::Address;
use crate::ops::redact::AddressLog;

/// Where sealgate listens (main.rs binds or inherits these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// `SEALGATE_LMTP_LISTEN`; `None` when only the milter runs.
    pub lmtp: Option<Address>,
    /// `SEALGATE_LMTP_SOCKET_MODE`, applied to a unix socket.
    pub lmtp_socket_mode: u32,
    /// `SEALGATE_MILTER_LISTEN`; `None` when no milter runs.
    pub milter: Option<Address>,
    /// `SEALGATE_MILTER_SOCKET_MODE`, applied to a unix socket.
    pub milter_socket_mode: u32,
    /// `SEALGATE_METRICS_LISTEN` (`HOST:PORT`); `None` for no HTTP listener.
    pub metrics: Option<String>,
}

/// What an LMTP session needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmtpLimits {
    /// `SEALGATE_HOSTNAME`, in the greeting.
    pub hostname: String,
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
    /// `SEALGATE_LOG_ADDRESSES`
    pub log_addresses: AddressLog,
    /// `SEALGATE_TRUSTED_MTA`: whose first Received field the fan-out reads (the queue ID).
    pub trusted_mta: Vec<String>,
}

/// What a milter session needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MilterLimits {
    /// `SEALGATE_MILTER_MAX_FRAME`
    pub max_frame: usize,
    /// `SEALGATE_TLS_MIN_VERSION`, named in the milter's refusal log line.
    pub tls_min_version: TlsVersion,
    /// `SEALGATE_MILTER_TIMEOUT`
    pub timeout: Duration,
    /// `SEALGATE_LOG_ADDRESSES`
    pub log_addresses: AddressLog,
}

/// The delivery client's settings (the next hop's address is `Config::next_hop`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHopClient {
    /// `SEALGATE_HOSTNAME`, in LHLO/EHLO and Maildir file names.
    pub hostname: String,
    /// `SEALGATE_NEXT_HOP_CONNECT_TIMEOUT`
    pub connect_timeout: Duration,
    /// `SEALGATE_NEXT_HOP_TIMEOUT`
    pub timeout: Duration,
    /// `SEALGATE_NEXT_HOP_POOL_SIZE`
    pub pool_size: usize,
}

/// The key store's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStoreSettings {
    /// `SEALGATE_KEYSTORE`: a directory (absolute) or a database.
    pub location: KeyStoreLocation,
    /// `SEALGATE_KEYSTORE_PASSWORD_FILE`
    pub password_file: Option<PathBuf>,
    /// `SEALGATE_KEYSTORE_MAX_STALE`
    pub max_stale: Duration,
    /// `SEALGATE_KEYSTORE_RELOAD`
    pub reload: Duration,
}

/// The scrub stage's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubSettings {
    /// `SEALGATE_SCRUB`
    pub mode: ScrubMode,
    /// `SEALGATE_SCRUB_HEADERS`, lower-cased.
    pub headers: Vec<String>,
    /// `SEALGATE_TRUSTED_MTA`: whose Received field tells an authenticated submission.
    pub trusted_mta: Vec<String>,
}

/// The secure (TLS-only) addresses and what counts as TLS for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureSettings {
    /// `SEALGATE_SECURE_DOMAINS`: secure domain → the domain its mailboxes live in.
    pub domains: Vec<(String, String)>,
    /// `SEALGATE_SECURE_MAILBOXES`
    pub mailboxes: Option<PathBuf>,
    /// `SEALGATE_KEYSTORE_RELOAD`: how often the mailbox file is checked.
    pub reload: Duration,
    /// `SEALGATE_TLS_MIN_VERSION`
    pub min_version: TlsVersion,
    /// `SEALGATE_TRUSTED_MTA`: whose Received field counts as TLS evidence.
    pub trusted_mta: Vec<String>,
}

/// What the log set-up needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `SEALGATE_LOG` (or `RUST_LOG`), already checked.
    pub filter: String,
    /// `SEALGATE_LOG_FORMAT`
    pub format: super::LogFormat,
    /// `SEALGATE_LOG_ADDRESSES`
    pub addresses: AddressLog,
}

impl Config {
    /// The listeners.
    pub fn listen(&self) -> Listen {
        Listen {
            lmtp: self.lmtp_listen.clone(),
            lmtp_socket_mode: self.lmtp_socket_mode,
            milter: self.milter_listen.clone(),
            milter_socket_mode: self.milter_socket_mode,
            metrics: self.metrics_listen.clone(),
        }
    }

    /// An LMTP session's limits.
    pub fn lmtp(&self) -> LmtpLimits {
        LmtpLimits {
            hostname: self.hostname.clone(),
            max_line_length: self.max_line_length,
            max_recipients: self.max_recipients,
            max_message_size: self.max_message_size,
            max_header_size: self.max_header_size,
            idle_timeout: self.idle_timeout,
            command_timeout: self.command_timeout,
            data_timeout: self.data_timeout,
            bare_newline: self.bare_newline,
            log_addresses: self.log_addresses,
            trusted_mta: self.trusted_mta.clone(),
        }
    }

    /// A milter session's limits.
    pub fn milter(&self) -> MilterLimits {
        MilterLimits {
            max_frame: self.milter_max_frame,
            tls_min_version: self.tls_min_version,
            timeout: self.milter_timeout,
            log_addresses: self.log_addresses,
        }
    }

    /// The delivery client's settings.
    pub fn next_hop_client(&self) -> NextHopClient {
        NextHopClient {
            hostname: self.hostname.clone(),
            connect_timeout: self.next_hop_connect_timeout,
            timeout: self.next_hop_timeout,
            pool_size: self.next_hop_pool_size,
        }
    }

    /// The key store's settings.
    pub fn key_store(&self) -> KeyStoreSettings {
        KeyStoreSettings {
            location: self.keystore.clone(),
            password_file: self.keystore_password_file.clone(),
            max_stale: self.keystore_max_stale,
            reload: self.keystore_reload,
        }
    }

    /// The scrub stage's settings (`scrubbing`: `scrub` is the mode's field).
    pub fn scrubbing(&self) -> ScrubSettings {
        ScrubSettings {
            mode: self.scrub,
            headers: self.scrub_headers.clone(),
            trusted_mta: self.trusted_mta.clone(),
        }
    }

    /// The secure addresses' settings.
    pub fn secure(&self) -> SecureSettings {
        SecureSettings {
            domains: self.secure_domains.clone(),
            mailboxes: self.secure_mailboxes.clone(),
            reload: self.keystore_reload,
            min_version: self.tls_min_version,
            trusted_mta: self.trusted_mta.clone(),
        }
    }

    /// The log set-up.
    pub fn logs(&self) -> LogSettings {
        LogSettings {
            filter: self.log_filter.clone(),
            format: self.log_format,
            addresses: self.log_addresses,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn sections_carry_the_settings() {
        let vars: BTreeMap<String, String> = [
            ("SEALGATE_MILTER_LISTEN", "unix:/run/sealgate/milter"),
            ("SEALGATE_MILTER_TIMEOUT", "7s"),
            ("SEALGATE_MAX_RECIPIENTS", "3"),
            ("SEALGATE_NEXT_HOP_POOL_SIZE", "0"),
            ("SEALGATE_HOSTNAME", "mx.example.org"),
            ("SEALGATE_SCRUB", "all"),
            ("SEALGATE_TRUSTED_MTA", "MX.example.org"),
            ("SEALGATE_LOG_ADDRESSES", "hash"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let config = Config::from_vars(&vars).unwrap();
        assert_eq!(
            config.listen().milter,
            Some(Address::Unix("/run/sealgate/milter".into()))
        );
        assert_eq!(config.milter().timeout, Duration::from_secs(7));
        assert_eq!(config.milter().log_addresses, AddressLog::Hash);
        assert_eq!(config.lmtp().max_recipients, 3);
        assert_eq!(config.lmtp().hostname, "mx.example.org");
        assert_eq!(config.next_hop_client().pool_size, 0);
        assert_eq!(config.scrubbing().mode, ScrubMode::All);
        assert_eq!(config.secure().trusted_mta, ["mx.example.org"]);
        assert_eq!(config.key_store().location, config.keystore);
        assert_eq!(config.logs().filter, "info");
    }
}
