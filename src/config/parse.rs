//! The value syntaxes of the `SEALGATE_*` variables: sizes, durations, addresses, host names,
//! lists and keywords. Each parser returns the problem as a message; [`super::vars`] adds the
//! variable's name.

use std::path::PathBuf;
use std::time::Duration;

use crate::message::tls::TlsVersion;
use crate::net::Address;

use super::NextHopAddr;

/// An enum spelt as one of a closed set of words in the environment. [`Keyword::NAMES`] is
/// the one mapping: parsing, `check-config`, the "expected a, b or c" message and metric labels
/// all read it.
pub trait Keyword: Sized + Copy + PartialEq + 'static {
    /// Every value with its spelling, in the order the documentation lists them.
    const NAMES: &'static [(&'static str, Self)];

    /// The value spelt exactly `raw`.
    ///
    /// # Errors
    /// Any other word, as a message naming the expected ones.
    fn parse(raw: &str) -> Result<Self, String> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == raw)
            .map(|&(_, value)| value)
            .ok_or_else(|| format!("{raw:?}: expected {}", Self::expected()))
    }

    /// The spelling of `self` (also its metric label).
    fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, value)| *value == self)
            .map_or("", |(name, _)| name)
    }

    /// The spellings as a sentence: `a, b or c`.
    fn expected() -> String {
        let names: Vec<&str> = Self::NAMES.iter().map(|(name, _)| *name).collect();
        match names.split_last() {
            Some((last, [])) => (*last).to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

/// A whole number of at least `min`.
pub(super) fn count(raw: &str, min: usize) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        Ok(_) => Err(format!("must be at least {min}")),
        Err(_) => Err(format!("{raw:?} is not a whole number")),
    }
}

/// A size (see [`size`]) of at least `min` octets that fits in memory.
pub(super) fn size_at_least(raw: &str, min: usize) -> Result<usize, String> {
    usize::try_from(size(raw)?)
        .ok()
        .filter(|&n| n >= min)
        .ok_or_else(|| format!("must be at least {min}"))
}

/// Octets, with an optional binary suffix: `512`, `64K`, `10M`, `2G`.
pub(super) fn size(raw: &str) -> Result<u64, String> {
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

/// A duration (see [`duration`]) longer than 0: every timeout and interval.
pub(super) fn timeout(raw: &str) -> Result<Duration, String> {
    let duration = duration(raw)?;
    if duration.is_zero() {
        return Err("must be longer than 0".into());
    }
    Ok(duration)
}

/// `300s`, `5m`, `1h`, `250ms`, or bare seconds.
pub(super) fn duration(raw: &str) -> Result<Duration, String> {
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

/// `on` or `off` (also `yes`/`no`, `true`/`false`).
pub(super) fn on_off(raw: &str) -> Result<bool, String> {
    match raw {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        other => Err(format!("{other:?}: expected on or off")),
    }
}

/// An octal file mode such as `0660`.
pub(super) fn mode(raw: &str) -> Result<u32, String> {
    match u32::from_str_radix(raw, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("{raw:?}: expected an octal mode such as 0660")),
    }
}

/// A path made absolute against the working directory at start, once: a relative path must
/// not mean something else to `sealgate keys` run elsewhere, nor change meaning later (the
/// cert-d iterator also finds nothing under a relative base directory).
pub(super) fn path(raw: &str) -> Result<PathBuf, String> {
    if raw.is_empty() {
        return Err("empty path".into());
    }
    std::path::absolute(raw).map_err(|err| format!("{raw:?}: cannot make it absolute: {err}"))
}

/// `SEALGATE_KEYSTORE`: a `postgresql://` URL (checked, kept as written) or a directory.
pub(super) fn keystore(raw: &str) -> Result<super::KeyStoreLocation, String> {
    if crate::store::postgres::connect::is_url(raw) {
        crate::store::postgres::Location::parse(raw, None)?;
        return Ok(super::KeyStoreLocation::Database(raw.to_string()));
    }
    path(raw).map(super::KeyStoreLocation::Directory)
}

/// `HOST:PORT`, kept as written.
pub(super) fn host_port(raw: &str) -> Result<String, String> {
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

/// `HOST:PORT`, or `off` for none.
pub(super) fn host_port_or_off(raw: &str) -> Result<Option<String>, String> {
    if raw.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    host_port(raw).map(Some)
}

/// `HOST:PORT` or `unix:PATH`: a listener or the next hop's address.
pub(super) fn address(raw: &str) -> Result<Address, String> {
    if let Some(unix) = raw.strip_prefix("unix:") {
        return path(unix).map(Address::Unix);
    }
    host_port(raw).map(Address::Tcp)
}

/// A listener address, or `off` for none.
pub(super) fn address_or_off(raw: &str) -> Result<Option<Address>, String> {
    if raw.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    address(raw).map(Some)
}

/// `maildir:PATH`, `lmtp:ADDRESS` or `smtp:ADDRESS`.
pub(super) fn next_hop(raw: &str) -> Result<NextHopAddr, String> {
    let (kind, rest) = raw
        .split_once(':')
        .ok_or_else(|| format!("{raw:?}: expected maildir:PATH, lmtp:DEST or smtp:DEST"))?;
    match kind {
        "maildir" => path(rest).map(NextHopAddr::Maildir),
        "lmtp" => address(rest).map(NextHopAddr::Lmtp),
        "smtp" => address(rest).map(NextHopAddr::Smtp),
        other => Err(format!(
            "unknown next hop type {other:?}: expected maildir, lmtp or smtp"
        )),
    }
}

pub(super) fn hostname(raw: &str) -> Result<String, String> {
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

/// Host names, comma-separated, lower-cased; at least one.
pub(super) fn host_list(raw: &str) -> Result<Vec<String>, String> {
    let hosts: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| hostname(h).map(|h| h.to_ascii_lowercase()))
        .collect::<Result<_, _>>()?;
    if hosts.is_empty() {
        return Err("name at least one host".into());
    }
    Ok(hosts)
}

/// `secure=real` pairs or bare domains, comma-separated, lower-cased.
pub(super) fn secure_domains(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut domains = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (secure, real) = item.split_once('=').unwrap_or((item, item));
        let (secure, real) = (secure.trim(), real.trim());
        for domain in [secure, real] {
            if hostname(domain).is_err() || !domain.contains('.') {
                return Err(format!("{domain:?} is not a domain"));
            }
        }
        domains.push((secure.to_ascii_lowercase(), real.to_ascii_lowercase()));
    }
    Ok(domains)
}

/// Header field names, comma-separated, lower-cased.
pub(super) fn header_list(raw: &str) -> Result<Vec<String>, String> {
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

/// Postfix's and OpenSSL's spelling, case-insensitive ([`TlsVersion::parse`]: it reads
/// Received headers and milter macros too, so it is not a [`Keyword`]).
pub(super) fn tls_version(raw: &str) -> Result<TlsVersion, String> {
    TlsVersion::parse(raw)
        .ok_or_else(|| format!("{raw:?}: expected TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3"))
}

/// A `tracing` filter, checked as the service installs it, so that `check-config` refuses
/// what `run` would.
pub(super) fn log_filter(raw: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(raw)
        .map(|_| raw.to_string())
        .map_err(|err| format!("{raw:?}: {err}"))
}

/// The kernel's host name, or `localhost` when it is not a usable one.
pub(super) fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| hostname(s).is_ok() && !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(next_hop(raw).map_err(|_| ()), expected, "{raw}");
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(size("10M"), Ok(10 << 20));
        assert_eq!(size("64KiB"), Ok(64 << 10));
        assert_eq!(size("123"), Ok(123));
        assert!(size("-1").is_err());
        assert!(size("99999999999G").is_err());
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("7"), Ok(Duration::from_secs(7)));
        assert!(duration("soon").is_err());
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Three {
        A,
        B,
        C,
    }

    impl Keyword for Three {
        const NAMES: &'static [(&'static str, Self)] =
            &[("a", Three::A), ("b", Three::B), ("c", Three::C)];
    }

    #[test]
    fn keywords_parse_show_and_explain_themselves() {
        for &(name, value) in Three::NAMES {
            assert_eq!(Three::parse(name), Ok(value));
            assert_eq!(value.as_str(), name);
        }
        assert_eq!(
            Three::parse("B"),
            Err("\"B\": expected a, b or c".to_string())
        );
        assert_eq!(Three::expected(), "a, b or c");
    }
}
