//! The one canonical form of an e-mail address, used wherever sealgate compares addresses:
//! key lookup, secure mailboxes and domains, the milter's RCPT, the address hash in logs and
//! Maildir folder names. Pure, no I/O.
//!
//! The rule ([`Address::parse`], [`canonical`]):
//! - the RFC 5321 path is unwrapped: white space, `<...>` and a source route (`@a,@b:`) go;
//! - a quoted local part is dequoted (`"al\ice"` → `alice`); the result is quoted again, with
//!   only `"` and `\` escaped, when it is not a valid dot-atom (`"a b"`, `"a..b"`), so the
//!   quoted and unquoted spellings of one mailbox give one string;
//! - the local part is lower-cased (Unicode): mailbox names are case-insensitive here, as in
//!   the key store and in most mail systems, so `Alice@` and `alice@` are one mailbox, with
//!   one key, one secure-mailbox entry and one Maildir folder;
//! - the domain is IDNA-normalised to A-labels (UTS-46: lower-cased, `bücher.example` →
//!   `xn--bcher-kva.example`) and loses a trailing dot; an address literal (`[192.0.2.1]`) is
//!   kept, ASCII-lower-cased. A domain IDNA refuses is lower-cased as it is, so both sides of
//!   a comparison still map it the same way;
//! - `user+tag@domain` also matches `user@domain` ([`without_subaddress`]); the tag stays in
//!   the canonical form.
//!
//! What is delivered is not rewritten: the next hop still gets the address as Postfix sent it.

use std::fmt;

/// An address in canonical form: `local@domain`, or a bare local part (`postmaster`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Address {
    /// Dequoted, lower-cased, quoted again if it is not a dot-atom.
    local: String,
    /// A-labels or an address literal, lower-case; `None` for a bare local part.
    domain: Option<String>,
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AddressError {
    /// Nothing before the `@`, or nothing at all.
    #[error("empty local part")]
    EmptyLocal,
    /// `@` with nothing after it.
    #[error("empty domain")]
    EmptyDomain,
    /// A quoted local part without its closing quote, or text between it and the `@`.
    #[error("malformed quoted local part")]
    BadQuote,
}

impl Address {
    /// Parses an RFC 5321 path or mailbox (`<"Al\ice"@Bücher.example>`, `alice@example.org`,
    /// `postmaster`) into its canonical form.
    ///
    /// # Errors
    /// The text has no local part, an empty domain or a broken quoted string.
    pub(crate) fn parse(text: &str) -> Result<Address, AddressError> {
        let mailbox = path_mailbox(text);
        let (local, domain) = split(mailbox)?;
        if local.is_empty() && !mailbox.starts_with('"') {
            return Err(AddressError::EmptyLocal);
        }
        let domain = match domain {
            None => None,
            Some(domain) => Some(canonical_domain(domain).ok_or(AddressError::EmptyDomain)?),
        };
        Ok(Address {
            local: quote_if_needed(&local.to_lowercase()),
            domain,
        })
    }

    /// The canonical domain, if the address has one.
    pub(crate) fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.domain {
            Some(domain) => write!(f, "{}@{domain}", self.local),
            None => f.write_str(&self.local),
        }
    }
}

/// The canonical form of `text` as a string, for comparisons. Never fails: what
/// [`Address::parse`] refuses is trimmed and lower-cased, so a malformed address still equals
/// itself (and only itself) however it is cased.
pub(crate) fn canonical(text: &str) -> String {
    match Address::parse(text) {
        Ok(address) => address.to_string(),
        Err(_) => text.trim().to_lowercase(),
    }
}

/// `user+tag@domain` → `user@domain` for a canonical address; `None` when there is no `+tag`,
/// nothing before it, or the local part is quoted (a `+` inside quotes is no subaddress).
pub(crate) fn without_subaddress(canonical: &str) -> Option<String> {
    let (local, domain) = canonical.rsplit_once('@')?;
    if local.starts_with('"') {
        return None;
    }
    let (user, _tag) = local.split_once('+')?;
    (!user.is_empty()).then(|| format!("{user}@{domain}"))
}

/// The canonical form of a domain name or address literal; `None` when it is empty.
pub(crate) fn canonical_domain(domain: &str) -> Option<String> {
    let domain = domain.trim();
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return None;
    }
    if domain.starts_with('[') {
        return Some(domain.to_ascii_lowercase());
    }
    Some(idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_lowercase()))
}

/// The mailbox inside an RFC 5321 path: `<@a,@b:user@example.org>` → `user@example.org`. Text
/// without angle brackets is taken as the mailbox itself (trimmed).
pub(crate) fn path_mailbox(path: &str) -> &str {
    let path = path.trim();
    let inner = path
        .strip_prefix('<')
        .and_then(|p| p.strip_suffix('>'))
        .unwrap_or(path);
    match inner.strip_prefix('@') {
        Some(routed) => routed.split_once(':').map_or(inner, |(_, mailbox)| mailbox),
        None => inner,
    }
}

/// Splits a mailbox into its dequoted local part and its domain (if any).
fn split(mailbox: &str) -> Result<(String, Option<&str>), AddressError> {
    if let Some(quoted) = mailbox.strip_prefix('"') {
        let mut local = String::with_capacity(quoted.len());
        let mut chars = quoted.char_indices();
        let rest = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, c)) => local.push(c),
                    None => return Err(AddressError::BadQuote),
                },
                Some((i, '"')) => break &quoted[i + 1..],
                Some((_, c)) => local.push(c),
                None => return Err(AddressError::BadQuote),
            }
        };
        return match rest {
            "" => Ok((local, None)),
            rest => match rest.strip_prefix('@') {
                Some(domain) => Ok((local, Some(domain))),
                None => Err(AddressError::BadQuote),
            },
        };
    }
    match mailbox.rsplit_once('@') {
        Some((local, domain)) => Ok((local.to_string(), Some(domain))),
        None => Ok((mailbox.to_string(), None)),
    }
}

/// `local` as it is when it is a dot-atom, else as a quoted string (only `"` and `\` escaped).
fn quote_if_needed(local: &str) -> String {
    if is_dot_atom(local) {
        return local.to_string();
    }
    let mut quoted = String::with_capacity(local.len() + 2);
    quoted.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// RFC 5322 dot-atom with RFC 6531's non-ASCII atext: atoms separated by single dots.
fn is_dot_atom(local: &str) -> bool {
    !local.is_empty()
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_mailbox_are_one_address() {
        for spelling in [
            "alice@example.org",
            "<alice@example.org>",
            " <alice@example.org> ",
            "\"alice\"@example.org",
            "\"al\\ice\"@example.org",
            "Alice@EXAMPLE.org",
            "alice@example.org.",
            "<@relay.example,@b.example:ALICE@Example.Org>",
        ] {
            assert_eq!(canonical(spelling), "alice@example.org", "{spelling}");
        }
        assert_eq!(
            canonical("alice@bücher.example"),
            canonical("alice@xn--bcher-kva.example")
        );
        assert_eq!(
            canonical("alice@BÜCHER.example"),
            "alice@xn--bcher-kva.example"
        );
    }

    #[test]
    fn local_parts_that_need_quotes_keep_them() {
        let cases = [
            ("\"a b\"@x", "\"a b\"@x"),
            ("\"A\\ B\"@x", "\"a b\"@x"),
            ("\"a\\\"b\"@x", "\"a\\\"b\"@x"),
            ("\"a\\\\b\"@x", "\"a\\\\b\"@x"),
            ("a..b@x", "\"a..b\"@x"),
            ("\"a..b\"@x", "\"a..b\"@x"),
            (".a@x", "\".a\"@x"),
            ("\"\"@x", "\"\"@x"),
            ("\"a@b\"@x", "\"a@b\"@x"),
            ("jörg@x", "jörg@x"),
            ("Postmaster", "postmaster"),
        ];
        for (raw, expected) in cases {
            assert_eq!(canonical(raw), expected, "{raw}");
            // Canonical is a fixed point.
            assert_eq!(canonical(expected), expected, "{expected}");
        }
    }

    #[test]
    fn domains() {
        assert_eq!(canonical("a@[192.0.2.1]"), "a@[192.0.2.1]");
        assert_eq!(canonical("a@[IPv6:2001:DB8::1]"), "a@[ipv6:2001:db8::1]");
        assert_eq!(
            canonical_domain("Secure.Example.ORG."),
            Some("secure.example.org".into())
        );
        assert_eq!(canonical_domain("例え.jp"), Some("xn--r8jz45g.jp".into()));
        assert_eq!(canonical_domain(""), None);
        assert_eq!(canonical_domain("."), None);
    }

    #[test]
    fn malformed_input_is_refused_but_still_compares() {
        for raw in [
            "@example.org",
            "alice@",
            "\"alice@example.org",
            "\"a\"b@x",
            "",
        ] {
            assert!(Address::parse(raw).is_err(), "{raw}");
        }
        assert_eq!(canonical(" \"Alice@X "), "\"alice@x");
    }

    #[test]
    fn subaddresses() {
        assert_eq!(
            without_subaddress("alice+news@example.org").as_deref(),
            Some("alice@example.org")
        );
        assert_eq!(without_subaddress("alice@example.org"), None);
        assert_eq!(without_subaddress("+news@example.org"), None);
        assert_eq!(without_subaddress("\"a b+c\"@example.org"), None);
        assert_eq!(
            without_subaddress(&canonical("\"Alice+x\"@example.org")).as_deref(),
            Some("alice@example.org")
        );
    }

    #[test]
    fn paths() {
        assert_eq!(path_mailbox("<user@example.org>"), "user@example.org");
        assert_eq!(path_mailbox("user@example.org"), "user@example.org");
        assert_eq!(path_mailbox("<@a,@b:user@c>"), "user@c");
        assert_eq!(path_mailbox("<>"), "");
        assert_eq!(path_mailbox("<\"a b\"@example.org>"), "\"a b\"@example.org");
    }
}
