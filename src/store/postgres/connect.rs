//! Where the key database is and how to reach it: the `SEALGATE_KEYSTORE` URL (libpq's URI
//! syntax), the password file, TLS as the URL asks (`sslmode`), and the URL as it may appear
//! in logs (never with the password).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config};

use super::PgError;

/// How long establishing a connection (TCP, TLS, authentication) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// TCP keepalive idle time: a database host that vanished without a FIN is noticed within
/// about a minute instead of two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// libpq's `sslmode` values. tokio-postgres knows only the first three; the verifying ones
/// are ours, built on OpenSSL's verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, unverified (libpq's default).
    Prefer,
    /// TLS or no connection; the certificate is not verified (as libpq without a root
    /// certificate).
    Require,
    /// TLS with a certificate that chains to a trusted root (`sslrootcert`, else the system's).
    VerifyCa,
    /// [`TlsMode::VerifyCa`] and the certificate names the host.
    VerifyFull,
}

impl TlsMode {
    fn parse(text: &str) -> Option<TlsMode> {
        Some(match text {
            "disable" => TlsMode::Disable,
            "prefer" | "allow" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => return None,
        })
    }
}

/// A validated key-database location. Built once from the configuration; the password file is
/// read at every connection, so a rotated password needs no restart.
#[derive(Clone)]
pub struct Location {
    /// The URL for tokio-postgres (our `sslmode`/`sslrootcert` removed).
    config: Config,
    /// The URL as configured with any password replaced by `***`.
    shown: String,
    tls: TlsMode,
    root_cert: Option<PathBuf>,
    password_file: Option<PathBuf>,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Display for Location {
    /// The URL without its password: safe for logs, `check-config` and errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Whether a `SEALGATE_KEYSTORE` value names a database rather than a directory.
pub fn is_url(text: &str) -> bool {
    text.starts_with("postgresql://") || text.starts_with("postgres://")
}

impl Location {
    /// Parses `postgresql://[user[:password]@][host][:port][/dbname][?param=value&...]`
    /// (libpq's URI syntax, `?host=/run/postgresql` for a unix socket), with `sslmode` one of
    /// disable, prefer (the default), require, verify-ca, verify-full, and `sslrootcert`.
    ///
    /// # Errors
    /// A one-line reason that never contains the password.
    pub fn parse(url: &str, password_file: Option<&Path>) -> Result<Location, String> {
        if !is_url(url) {
            return Err("not a postgresql:// URL".into());
        }
        let shown = redact(url);
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut tls = TlsMode::Prefer;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => {
                    tls = TlsMode::parse(value).ok_or_else(|| {
                        format!(
                            "sslmode={value}: expected disable, prefer, require, verify-ca or \
                             verify-full"
                        )
                    })?;
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(value)),
                "password" => {
                    return Err("give the password in the URL's user part or in \
                     SEALGATE_KEYSTORE_PASSWORD_FILE, not as ?password="
                        .into());
                }
                _ => kept.push(pair),
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config = Config::from_str(&rebuilt)
            .map_err(|err| format!("{shown}: {}", redact(&err.to_string())))?;
        if config.get_dbname().is_none() {
            return Err(format!(
                "{shown}: no database name (postgresql://HOST/DBNAME)"
            ));
        }
        if config.get_user().is_none() {
            return Err(format!(
                "{shown}: no user name (postgresql://USER@HOST/DBNAME)"
            ));
        }
        config.ssl_mode(match tls {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .application_name("sealgate");
        Ok(Location {
            config,
            shown,
            tls,
            root_cert,
            password_file: password_file.map(Path::to_path_buf),
        })
    }

    /// The TLS mode the URL asked for.
    pub fn tls(&self) -> TlsMode {
        self.tls
    }

    /// Opens one connection and returns the client and its connection (which the caller must
    /// drive: it carries every query's bytes and the notifications).
    ///
    /// # Errors
    /// Password file, TLS set-up, network, authentication: one line, without the password.
    pub async fn connect(
        &self,
    ) -> Result<
        (
            Client,
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                postgres_openssl::TlsStream<tokio_postgres::Socket>,
            >,
        ),
        PgError,
    > {
        let mut config = self.config.clone();
        if let Some(file) = &self.password_file {
            let text = std::fs::read_to_string(file).map_err(|err| {
                PgError::Connect(format!("password file {}: {err}", file.display()))
            })?;
            config.password(text.trim_end_matches(['\n', '\r']));
        }
        let tls = self.tls_connector()?;
        config
            .connect(tls)
            .await
            .map_err(|err| PgError::Connect(format!("{}: {}", self.shown, describe(&err))))
    }

    fn tls_connector(&self) -> Result<MakeTlsConnector, PgError> {
        let setup =
            |err: openssl::error::ErrorStack| PgError::Connect(format!("TLS set-up: {err}"));
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(setup)?;
        match self.tls {
            TlsMode::VerifyCa | TlsMode::VerifyFull => {
                builder.set_verify(SslVerifyMode::PEER);
                match &self.root_cert {
                    Some(path) => builder.set_ca_file(path).map_err(|err| {
                        PgError::Connect(format!("sslrootcert {}: {err}", path.display()))
                    })?,
                    None => builder.set_default_verify_paths().map_err(setup)?,
                }
            }
            _ => builder.set_verify(SslVerifyMode::NONE),
        }
        let mut connector = MakeTlsConnector::new(builder.build());
        let verify_host = self.tls == TlsMode::VerifyFull;
        connector.set_callback(move |config, _| {
            config.set_verify_hostname(verify_host);
            Ok(())
        });
        Ok(connector)
    }
}

/// The error with its source chain, on one line (tokio-postgres puts the server's message and
/// the I/O cause in the source).
fn describe(err: &tokio_postgres::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    redact(&text)
}

/// `text` with the password of any `scheme://user:password@` replaced by `***`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail.find(['/', '?', ' ']).unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgresql://sealgate:s3cret@db.example.org/keys"),
            "postgresql://sealgate:***@db.example.org/keys"
        );
        assert_eq!(
            redact("postgresql://sealgate@db/keys?host=/run/postgresql"),
            "postgresql://sealgate@db/keys?host=/run/postgresql"
        );
        let location = Location::parse("postgresql://u:p%40ss@db/keys", None).expect("valid");
        assert_eq!(location.to_string(), "postgresql://u:***@db/keys");
        assert!(!format!("{location:?}").contains("p%40ss"));
    }

    #[test]
    fn sslmode_is_ours_and_strict() {
        let parse = |url| Location::parse(url, None).map(|l| l.tls());
        assert_eq!(parse("postgresql://u@db/keys"), Ok(TlsMode::Prefer));
        assert_eq!(
            parse("postgresql://u@db/keys?sslmode=require"),
            Ok(TlsMode::Require)
        );
        assert_eq!(
            parse("postgresql://u@db/keys?sslmode=verify-full&sslrootcert=/etc/ca.pem"),
            Ok(TlsMode::VerifyFull)
        );
        assert!(
            parse("postgresql://u@db/keys?sslmode=sometimes")
                .expect_err("refused")
                .contains("expected disable, prefer, require, verify-ca or verify-full")
        );
        assert!(parse("postgresql://u@db/keys?password=x").is_err());
        assert!(
            parse("postgresql://u@db")
                .expect_err("refused")
                .contains("no database name")
        );
        assert!(
            parse("postgresql://db/keys")
                .expect_err("refused")
                .contains("no user name")
        );
        assert!(parse("/var/lib/sealgate/keys").is_err());
        assert!(is_url("postgres://u@db/keys") && !is_url("/var/lib/sealgate/keys"));
    }

    #[test]
    fn unix_socket_urls_parse() {
        let location =
            Location::parse("postgresql://sealgate@/sealgate?host=/run/postgresql", None)
                .expect("valid");
        assert_eq!(
            location.config.get_hosts(),
            &[tokio_postgres::config::Host::Unix("/run/postgresql".into())]
        );
    }
}
