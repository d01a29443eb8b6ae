//! What logs may say about people: e-mail addresses appear in full, as a short hash, or not at
//! all (`SEALGATE_LOG_ADDRESSES`). Every log line that names an address goes through
//! [`AddressLog::show`]. Message content (headers or body) is never logged, at any level.
//! In text mode, fields are written as logfmt ([`Logfmt`]).

use std::fmt;

use sealgate_protocol::Reply;
use sequoia_openpgp::types::HashAlgorithm;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

use crate::config::Keyword;

/// How addresses appear in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressLog {
    /// As the client sent them.
    #[default]
    Full,
    /// The first 16 hex digits of the SHA-256 of the canonical address: the same mailbox
    /// always gives the same token, however it is spelt, so lines can still be correlated.
    Hash,
    /// Replaced by `-`.
    Hidden,
}

impl Keyword for AddressLog {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("full", AddressLog::Full),
        ("hash", AddressLog::Hash),
        ("none", AddressLog::Hidden),
    ];
}

impl AddressLog {
    /// `address` as this setting lets it appear in a log line:
    /// `info!(rcpt = %log.show(&rcpt.address), ...)`.
    pub fn show(self, address: &str) -> Shown<'_> {
        Shown {
            mode: self,
            address,
        }
    }

    /// A reply for a log line about `address`. Reply texts often name the recipient (ours
    /// and the next hop's: `550 5.1.1 <user@example.org> User doesn't exist`), so unless
    /// addresses are logged in full, `address` and every word containing `@` are shown as
    /// [`AddressLog::show`] would show an address.
    pub fn reply(self, reply: &Reply, address: &str) -> String {
        let text = reply.to_string();
        if self == AddressLog::Full {
            return text;
        }
        let text = replace_ignoring_ascii_case(&text, address, &self.show(address).to_string());
        text.split(' ')
            .map(|word| {
                if word.contains('@') {
                    let bare = word.trim_matches(|c: char| "<>()[]{}\"',;:.".contains(c));
                    self.show(bare).to_string()
                } else {
                    word.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `text` with every ASCII-case-insensitive occurrence of `needle` replaced by `with`.
fn replace_ignoring_ascii_case(text: &str, needle: &str, with: &str) -> String {
    if needle.is_empty() {
        return text.to_string();
    }
    let (bytes, pattern) = (text.as_bytes(), needle.as_bytes());
    let mut out = String::with_capacity(text.len());
    let (mut i, mut copied) = (0, 0);
    while i + pattern.len() <= bytes.len() {
        if bytes[i..i + pattern.len()].eq_ignore_ascii_case(pattern)
            && text.is_char_boundary(i)
            && text.is_char_boundary(i + pattern.len())
        {
            out.push_str(&text[copied..i]);
            out.push_str(with);
            i += pattern.len();
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// An address formatted for a log line; see [`AddressLog::show`].
pub struct Shown<'a> {
    mode: AddressLog,
    address: &'a str,
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mode {
            AddressLog::Full => f.write_str(self.address),
            AddressLog::Hash => match hash(self.address) {
                Some(token) => f.write_str(&token),
                // Without a hash there is nothing safe to print but the placeholder.
                None => f.write_str("-"),
            },
            AddressLog::Hidden => f.write_str("-"),
        }
    }
}

/// The first 16 hex digits of SHA-256 over the canonical address ([`crate::message::address`]), so
/// every spelling of one mailbox gives one token.
fn hash(address: &str) -> Option<String> {
    digest16(crate::message::address::canonical(address).as_bytes())
}

/// A log token for a value that may name people (a Message-ID holds a host name, often a
/// user's): the first 16 hex digits of its SHA-256, or `-` if hashing is unavailable.
pub fn token(value: &[u8]) -> String {
    digest16(value).unwrap_or_else(|| "-".into())
}

fn digest16(value: &[u8]) -> Option<String> {
    let mut context = HashAlgorithm::SHA256.context().ok()?.for_digest();
    context.update(value);
    let digest = context.into_digest().ok()?;
    Some(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// Text-mode field formatting in logfmt: `key=value`, the value in double quotes (with `"`,
/// `\` and control characters escaped) when it is empty or holds white space, `=`, `"`, `\`
/// or a control character, so that a reply text or a client's HELO cannot break a line
/// into fake fields. The message itself comes first, unquoted, as tracing writes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Logfmt;

impl<'writer> FormatFields<'writer> for Logfmt {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = LogfmtVisitor {
            writer: &mut writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct LogfmtVisitor<'a, 'writer> {
    writer: &'a mut Writer<'writer>,
    result: fmt::Result,
    first: bool,
}

impl LogfmtVisitor<'_, '_> {
    fn write(&mut self, name: &str, value: &str) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = if name == "message" {
            write!(self.writer, "{separator}{}", escape_controls(value))
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(self.writer, "{separator}{name}={}", logfmt_value(value))
        };
    }
}

impl Visit for LogfmtVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field.name(), &format!("{value:?}"));
    }
}

/// `value` as a logfmt value: bare when that is unambiguous, else quoted.
pub(crate) fn logfmt_value(value: &str) -> String {
    let bare = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '=' | '"' | '\\'));
    if bare {
        return value.to_string();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c if c.is_control() => quoted.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// A message text with line breaks and other control characters escaped: one event, one line.
fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| match c {
            '\n' => "\\n".to_string(),
            '\r' => "\\r".to_string(),
            c if c.is_control() => format!("\\u{{{:x}}}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hash_mode_never_prints_the_address() {
        let addresses = [
            "alice@example.org",
            "Alice@Example.ORG",
            "a@b",
            "\"quoted local\"@example.org",
            "bücher@例え.jp",
            "",
        ];
        for address in addresses {
            let shown = AddressLog::Hash.show(address).to_string();
            assert_eq!(shown.len(), 16, "{shown:?}");
            assert!(shown.bytes().all(|b| b.is_ascii_hexdigit()), "{shown:?}");
            if !address.is_empty() {
                assert!(!shown.contains(address), "{address} in {shown}");
                let local = address.split('@').next().unwrap_or_default();
                assert!(
                    local.len() < 3 || !shown.contains(local),
                    "{local} in {shown}"
                );
            }
            // In a tracing field, too.
            assert!(!format!("rcpt={}", AddressLog::Hash.show(address)).contains('@'));
            assert_eq!(AddressLog::Hidden.show(address).to_string(), "-");
            assert_eq!(AddressLog::Full.show(address).to_string(), address);
        }
    }

    #[test]
    fn replies_lose_their_addresses_unless_full() {
        use sealgate_protocol::EnhancedCode;
        let address = "\"john smith\"@Example.org";
        let reply = Reply::new(
            550,
            EnhancedCode::new(5, 1, 1),
            "<\"John Smith\"@example.org> unknown; also <other@example.net>, ok",
        );
        let hashed = AddressLog::Hash.reply(&reply, address);
        assert!(!hashed.contains('@'), "{hashed}");
        assert!(!hashed.to_lowercase().contains("smith"), "{hashed}");
        assert!(hashed.starts_with("550 5.1.1 "), "{hashed}");
        assert!(hashed.ends_with(" ok"), "{hashed}");
        assert!(hashed.contains(&AddressLog::Hash.show("other@example.net").to_string()));
        let hidden = AddressLog::Hidden.reply(&reply, address);
        assert!(
            !hidden.contains('@') && !hidden.contains("Smith"),
            "{hidden}"
        );
        assert_eq!(AddressLog::Full.reply(&reply, address), reply.to_string());
    }

    #[test]
    fn hash_is_stable_and_case_insensitive() {
        let a = AddressLog::Hash.show("alice@example.org").to_string();
        assert_eq!(a, AddressLog::Hash.show("ALICE@example.ORG").to_string());
        assert_eq!(
            a,
            AddressLog::Hash
                .show("<\"al\\ice\"@example.org>")
                .to_string()
        );
        let idn = AddressLog::Hash.show("alice@bücher.example").to_string();
        assert_eq!(
            idn,
            AddressLog::Hash
                .show("alice@xn--bcher-kva.example")
                .to_string()
        );
        assert_ne!(a, AddressLog::Hash.show("bob@example.org").to_string());
        // SHA-256("alice@example.org"), first 8 octets.
        assert_eq!(a, "7a64adf28737ea90");
    }

    #[test]
    fn logfmt_values_stay_one_field() {
        let cases = [
            ("plain", "plain"),
            ("a@b.example", "a@b.example"),
            ("", "\"\""),
            ("550 5.7.1 no", "\"550 5.7.1 no\""),
            ("x=1", "\"x=1\""),
            ("\"q\"@x", "\"\\\"q\\\"@x\""),
            ("a\\b", "\"a\\\\b\""),
            ("two\nlines", "\"two\\nlines\""),
            ("nul\u{0}", "\"nul\\u{0}\""),
        ];
        for (value, expected) in cases {
            assert_eq!(logfmt_value(value), expected, "{value:?}");
        }
    }

    #[test]
    fn text_lines_are_logfmt() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(data);
                Ok(data.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(Logfmt)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("txn", queue_id = tracing::field::Empty);
            span.record("queue_id", "4fX0");
            let _entered = span.enter();
            let reply = "550 5.7.1 x=y \"z\"";
            tracing::info!(code = 550, reply = %reply, helo = "a\nb", "recipient outcome");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("txn{queue_id=4fX0}"), "{text}");
        assert!(
            text.contains(
                "recipient outcome code=550 reply=\"550 5.7.1 x=y \\\"z\\\"\" helo=\"a\\nb\"\n"
            ),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn settings() {
        for mode in [AddressLog::Full, AddressLog::Hash, AddressLog::Hidden] {
            assert_eq!(AddressLog::parse(mode.as_str()), Ok(mode));
        }
        assert!(AddressLog::parse("partial").is_err());
    }
}
