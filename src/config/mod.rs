//! Configuration: `SEALGATE_*` environment variables parsed once, at start, into a validated
//! [`Config`]. Nothing else in the program reads the environment.
//!
//! Each variable is declared once, in `vars.rs` (name, default, doc, parser, display); this
//! module adds the rules that tie several together. `parse.rs` holds the value syntaxes and
//! [`Keyword`], the one word ↔ enum mapping of the keyword settings.

pub mod env_file;
mod parse;
mod sections;
mod vars;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use sealgate_protocol::BareNewline;

use crate::net::Address;

pub use parse::Keyword;
pub use sections::{
    KeyStoreSettings, Listen, LmtpLimits, LogSettings, MilterLimits, NextHopClient, ScrubSettings,
    SecureSettings,
};
pub use vars::{Config, VARIABLES, Variable};

/// Where recipients' keys are (`SEALGATE_KEYSTORE`).
#[derive(Clone, PartialEq, Eq)]
pub enum KeyStoreLocation {
    /// A cert-d directory, absolute.
    Directory(PathBuf),
    /// A PostgreSQL URL, as configured: it may hold a password, so it is shown (Display,
    /// Debug) with the password replaced.
    Database(String),
}

impl fmt::Display for KeyStoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyStoreLocation::Directory(path) => write!(f, "{}", path.display()),
            KeyStoreLocation::Database(url) => {
                f.write_str(&crate::store::postgres::connect::redact(url))
            }
        }
    }
}

impl fmt::Debug for KeyStoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

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

impl ConfigError {
    fn new(variable: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            variable: variable.to_string(),
            problem: problem.into(),
        }
    }
}

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

    /// Builds the configuration from a map of variables (tests pass their own): each
    /// variable as [`VARIABLES`] declares it, then the rules that tie several together.
    ///
    /// # Errors
    /// The first invalid or unknown `SEALGATE_*` variable.
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        // A typo in a variable name would silently fall back to a default: refuse instead.
        for name in vars.keys() {
            if name.starts_with("SEALGATE_") && !VARIABLES.iter().any(|v| v.name == name) {
                return Err(ConfigError::new(
                    name,
                    "unknown variable (see `sealgate --help`)",
                ));
            }
        }
        let raw = Raw(vars);
        let mut config = Config::parse_each(&raw)?;
        if config.lmtp_listen.is_none() && config.milter_listen.is_none() {
            return Err(ConfigError::new(
                "SEALGATE_LMTP_LISTEN",
                "off, and SEALGATE_MILTER_LISTEN is off too: nothing to listen on",
            ));
        }
        if config.keystore_password_file.is_some()
            && matches!(config.keystore, KeyStoreLocation::Directory(_))
        {
            return Err(ConfigError::new(
                "SEALGATE_KEYSTORE_PASSWORD_FILE",
                "set, but SEALGATE_KEYSTORE is a directory, not a postgresql:// URL",
            ));
        }
        if raw.get("SEALGATE_TRUSTED_MTA").is_none() {
            // The system host name is rarely Postfix's myhostname: with secure addresses or
            // an explicit scrub setting, guessing would refuse TLS mail and leave submitted
            // mail unscrubbed without a word. Only the LMTP stage reads Received headers.
            if config.lmtp_listen.is_some()
                && (!config.secure_domains.is_empty()
                    || config.secure_mailboxes.is_some()
                    || (raw.get("SEALGATE_SCRUB").is_some() && config.scrub != ScrubMode::Off))
            {
                return Err(ConfigError::new(
                    "SEALGATE_TRUSTED_MTA",
                    "unset: name your Postfix's myhostname (`postconf -h myhostname`); only a \
                     first Received header written by it counts as TLS and authentication \
                     evidence for secure addresses and scrubbing",
                ));
            }
            config.trusted_mta = vec![config.hostname.to_ascii_lowercase()];
        }
        // tracing's own variable, as the filter's fallback.
        if raw.get("SEALGATE_LOG").is_none()
            && let Some(filter) = raw.get("RUST_LOG")
        {
            config.log_filter =
                parse::log_filter(filter).map_err(|p| ConfigError::new("RUST_LOG", p))?;
        }
        Ok(config)
    }
}

/// The variables as given; a value is trimmed, and an empty one counts as unset.
struct Raw<'a>(&'a BTreeMap<String, String>);

impl Raw<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
    }
}

impl Keyword for BareNewline {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("reject", BareNewline::Reject),
        ("normalize", BareNewline::Normalize),
        ("allow", BareNewline::Allow),
    ];
}

impl Keyword for UnusableKey {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("tempfail", UnusableKey::Tempfail),
        ("reject", UnusableKey::Reject),
        ("plaintext", UnusableKey::Plaintext),
    ];
}

impl Keyword for ScrubMode {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("authenticated", ScrubMode::Authenticated),
        ("all", ScrubMode::All),
        ("off", ScrubMode::Off),
    ];
}

impl Keyword for LogFormat {
    const NAMES: &'static [(&'static str, Self)] =
        &[("text", LogFormat::Text), ("json", LogFormat::Json)];
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::message::tls::TlsVersion;
    use crate::ops::redact::AddressLog;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// What the table alone cannot say: the defaults that involve the working directory and
    /// the protocol crate, and that `check-config`'s output reads back as the same settings.
    #[test]
    fn defaults_and_describe_read_back() {
        let config = Config::from_vars(&BTreeMap::new()).unwrap();
        assert_eq!(
            config.lmtp_listen,
            Some(Address::Tcp("127.0.0.1:10024".into()))
        );
        assert_eq!(config.milter_listen, None);
        assert_eq!(
            config.milter_max_frame,
            sealgate_protocol::milter::DEFAULT_MAX_FRAME
        );
        // Relative paths are resolved once, against the working directory at start.
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(config.next_hop, NextHopAddr::Maildir(cwd.join("mail")));
        assert_eq!(
            config.keystore,
            KeyStoreLocation::Directory(cwd.join("keys"))
        );
        assert_eq!(config.max_message_size, Some(104_857_600));
        assert_eq!(config.bare_newline, BareNewline::Reject);
        // check-config output names every variable, in order, in the syntax it is read in.
        let described = config.describe();
        let names: Vec<&str> = described
            .lines()
            .map(|l| l.split_once('=').unwrap().0)
            .collect();
        let declared: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
        assert_eq!(names, declared);
        assert!(declared.contains(&ENV_FILE));
        let again: BTreeMap<String, String> = described
            .lines()
            .map(|l| l.split_once('=').unwrap())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let again = Config::from_vars(&again).unwrap();
        assert_eq!(again.describe(), described);
    }

    /// `show` writes what `parse` reads, for settings far from the defaults too.
    #[test]
    fn describe_reads_back_for_other_settings() {
        let settings = [
            ("SEALGATE_LMTP_LISTEN", "off"),
            ("SEALGATE_MILTER_LISTEN", "unix:/run/sealgate/milter"),
            ("SEALGATE_MILTER_SOCKET_MODE", "0600"),
            ("SEALGATE_NEXT_HOP", "smtp:[::1]:10026"),
            ("SEALGATE_MAX_MESSAGE_SIZE", "0"),
            ("SEALGATE_IDLE_TIMEOUT", "5m"),
            ("SEALGATE_BARE_NEWLINE", "allow"),
            ("SEALGATE_CORE_DUMPS", "yes"),
            ("SEALGATE_UNUSABLE_KEY", "plaintext"),
            (
                "SEALGATE_SECURE_DOMAINS",
                "secure.example.org=example.org,vault.example.net",
            ),
            ("SEALGATE_SECURE_MAILBOXES", "/etc/sealgate/secure"),
            ("SEALGATE_TLS_MIN_VERSION", "tlsv1.3"),
            ("SEALGATE_TRUSTED_MTA", "mx1.example.org,MX2.example.org"),
            ("SEALGATE_SCRUB", "all"),
            ("SEALGATE_SCRUB_HEADERS", "X-Mailer"),
            ("SEALGATE_LOG_FORMAT", "json"),
            ("SEALGATE_LOG_ADDRESSES", "none"),
            ("SEALGATE_METRICS_LISTEN", "off"),
            ("SEALGATE_ENV_FILE", "/etc/sealgate/sealgate.env"),
        ];
        let described = Config::from_vars(&vars(&settings)).unwrap().describe();
        let again: BTreeMap<String, String> = described
            .lines()
            .map(|l| l.split_once('=').unwrap())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            Config::from_vars(&again).unwrap().describe(),
            described,
            "{settings:?}"
        );
        assert!(described.contains("SEALGATE_TLS_MIN_VERSION=TLSv1.3\n"));
        assert!(described.contains("SEALGATE_CORE_DUMPS=on\n"));
    }

    #[test]
    fn rust_log_is_the_log_filters_fallback() {
        let config = Config::from_vars(&vars(&[("RUST_LOG", "debug")])).unwrap();
        assert_eq!(config.log_filter, "debug");
        let config =
            Config::from_vars(&vars(&[("RUST_LOG", "debug"), ("SEALGATE_LOG", "warn")])).unwrap();
        assert_eq!(config.log_filter, "warn");
        let err = Config::from_vars(&vars(&[("RUST_LOG", "x=loud")])).unwrap_err();
        assert_eq!(err.variable, "RUST_LOG");
    }

    #[test]
    fn keyword_variables_document_every_keyword() {
        fn names<K: Keyword>() -> Vec<&'static str> {
            K::NAMES.iter().map(|(name, _)| *name).collect()
        }
        let cases = [
            ("SEALGATE_BARE_NEWLINE", names::<BareNewline>()),
            ("SEALGATE_UNUSABLE_KEY", names::<UnusableKey>()),
            ("SEALGATE_SCRUB", names::<ScrubMode>()),
            ("SEALGATE_LOG_FORMAT", names::<LogFormat>()),
            ("SEALGATE_LOG_ADDRESSES", names::<AddressLog>()),
        ];
        for (name, keywords) in cases {
            let variable = VARIABLES.iter().find(|v| v.name == name).unwrap();
            for keyword in keywords {
                assert!(variable.doc.contains(keyword), "{name}: {keyword}");
            }
        }
        assert_eq!(
            Config::from_vars(&vars(&[("SEALGATE_BARE_NEWLINE", "sometimes")]))
                .unwrap_err()
                .problem,
            "\"sometimes\": expected reject, normalize or allow"
        );
        assert_eq!(UnusableKey::Plaintext.as_str(), "plaintext");
        assert_eq!(AddressLog::Hidden.as_str(), "none");
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
