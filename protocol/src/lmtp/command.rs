//! Command parsing: one framed command line (without its CRLF) to a typed [`Command`].
//!
//! The line has already been framed by [`crate::LineDecoder`], so only `nom`'s *complete* parsers run
//! here: a short line is a syntax error, never "need more input".

use std::fmt;

use nom::{
    IResult, Parser,
    branch::alt,
    bytes::complete::{tag_no_case, take_till1, take_while, take_while1},
    character::complete::{char, satisfy, space1},
    combinator::{all_consuming, consumed, opt, recognize, success},
    multi::{many0, separated_list1},
    sequence::{delimited, preceded, terminated},
};

/// A parsed LMTP/SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `LHLO domain` (RFC 2033).
    Lhlo {
        /// The client's domain or address literal, as sent.
        domain: String,
    },
    /// `HELO domain`; an LMTP server answers 500, but it is parsed so that it can.
    Helo {
        /// The client's domain or address literal, as sent.
        domain: String,
    },
    /// `EHLO domain`; an LMTP server answers 500, but it is parsed so that it can.
    Ehlo {
        /// The client's domain or address literal, as sent.
        domain: String,
    },
    /// `MAIL FROM:<reverse-path> [parameters]`.
    Mail {
        /// The sender address without angle brackets or source route; `""` for `MAIL FROM:<>`.
        reverse_path: String,
        /// The ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<forward-path> [parameters]`.
    Rcpt {
        /// The recipient address without angle brackets or source route.
        forward_path: String,
        /// ESMTP parameters as (upper-case keyword, raw value), e.g. `ORCPT=rfc822;x` kept undecoded.
        params: Vec<(String, Option<String>)>,
    },
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP` (any argument is ignored).
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY argument`.
    Vrfy {
        /// The argument as sent.
        argument: String,
    },
    /// XFORWARD attributes as (upper-case name, value with xtext decoded). Names allowed: NAME ADDR PORT
    /// PROTO HELO IDENT SOURCE; the value `[UNAVAILABLE]` is kept as is.
    Xforward {
        /// The attributes in the order sent.
        attributes: Vec<(String, String)>,
    },
    /// `BDAT` (recognised, not offered: the server answers 502 5.5.1).
    Bdat,
    /// `STARTTLS` (recognised, not offered: the server answers 502 5.5.1).
    StartTls,
    /// `AUTH` (recognised, not offered: the server answers 502 5.5.1).
    Auth,
    /// `EXPN` (recognised, not offered: the server answers 502 5.5.1).
    Expn,
    /// `HELP` (recognised, not offered: the server answers 502 5.5.1).
    Help,
}

/// The ESMTP parameters of `MAIL FROM`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=7BIT|8BITMIME` (RFC 6152).
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531) was given.
    pub smtputf8: bool,
    /// Any other parameter as (upper-case keyword, raw value).
    pub other: Vec<(String, Option<String>)>,
}

/// The `BODY=` value of `MAIL FROM`. `BINARYMIME` is not offered, so it is a parameter error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// Why a command line was rejected. Each variant maps onto one reply the server sends.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Verb not known → "500 5.5.1 Command unrecognized"
    Unknown,
    /// Known verb, bad arguments; `expected` names the syntax, e.g. `"MAIL FROM:<address> [parameters]"` → `"501 5.5.4 Syntax: ..."`
    Syntax {
        /// The expected syntax, for the reply text.
        expected: &'static str,
    },
    /// Parameter with a bad value, e.g. SIZE=abc, BODY=BINARYMIME, duplicate SIZE → "501 5.5.4 Bad parameter: ..."
    BadParameter {
        /// The upper-cased parameter keyword.
        name: String,
    },
    /// The line is not valid UTF-8 (addresses and domains must be; SMTPUTF8 allows UTF-8 in addresses)
    NotUtf8,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown => f.write_str("command unrecognized"),
            CommandError::Syntax { expected } => write!(f, "syntax: {expected}"),
            CommandError::BadParameter { name } => write!(f, "bad parameter: {name}"),
            CommandError::NotUtf8 => f.write_str("command line is not valid UTF-8"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Expected-syntax texts, shared by the parser and the tests.
const SYNTAX_MAIL: &str = "MAIL FROM:<address> [parameters]";
const SYNTAX_RCPT: &str = "RCPT TO:<address> [parameters]";
const SYNTAX_LHLO: &str = "LHLO domain";
const SYNTAX_HELO: &str = "HELO domain";
const SYNTAX_EHLO: &str = "EHLO domain";
const SYNTAX_DATA: &str = "DATA";
const SYNTAX_RSET: &str = "RSET";
const SYNTAX_QUIT: &str = "QUIT";
const SYNTAX_VRFY: &str = "VRFY address";
const SYNTAX_XFORWARD: &str = "XFORWARD attribute=value ...";

/// RFC 5321 section 4.5.3.1.3 caps a path at 256 octets.
const MAX_ADDRESS_LEN: usize = 256;

/// The attribute names of Postfix's XFORWARD_README that we accept.
const XFORWARD_NAMES: &[&str] = &["NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE"];

/// Parses one command line (without CRLF).
///
/// # Errors
///
/// A [`CommandError`] naming the reply to send; the session goes on after it.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    // Clients (and humans on telnet) leave trailing blanks; they never carry meaning.
    let line = trim_trailing_blanks(line);
    let Ok((args, verb)) = verb_token(line) else {
        return Err(CommandError::Unknown);
    };
    // Several blanks between verb and argument are harmless, so they are tolerated.
    let args = trim_leading_spaces(args);
    let verb = verb.to_ascii_uppercase();
    match verb.as_slice() {
        // NOOP's argument is ignored, so it is not even checked for UTF-8.
        b"NOOP" => return Ok(Command::Noop),
        // Verbs we do not offer are answered 502 whatever their arguments.
        b"BDAT" => return Ok(Command::Bdat),
        b"STARTTLS" => return Ok(Command::StartTls),
        b"AUTH" => return Ok(Command::Auth),
        b"EXPN" => return Ok(Command::Expn),
        b"HELP" => return Ok(Command::Help),
        b"LHLO" | b"HELO" | b"EHLO" | b"MAIL" | b"RCPT" | b"DATA" | b"RSET" | b"QUIT" | b"VRFY"
        | b"XFORWARD" => {}
        _ => return Err(CommandError::Unknown),
    }
    let args = std::str::from_utf8(args).map_err(|_| CommandError::NotUtf8)?;
    match verb.as_slice() {
        b"LHLO" => hello(args, SYNTAX_LHLO).map(|domain| Command::Lhlo { domain }),
        b"HELO" => hello(args, SYNTAX_HELO).map(|domain| Command::Helo { domain }),
        b"EHLO" => hello(args, SYNTAX_EHLO).map(|domain| Command::Ehlo { domain }),
        b"MAIL" => mail(args),
        b"RCPT" => rcpt(args),
        b"DATA" => no_args(args, Command::Data, SYNTAX_DATA),
        b"RSET" => no_args(args, Command::Rset, SYNTAX_RSET),
        b"QUIT" => no_args(args, Command::Quit, SYNTAX_QUIT),
        b"VRFY" if !args.is_empty() => Ok(Command::Vrfy {
            argument: args.to_owned(),
        }),
        b"VRFY" => Err(CommandError::Syntax {
            expected: SYNTAX_VRFY,
        }),
        b"XFORWARD" => xforward(args),
        // The first match already returned for every other verb.
        _ => Err(CommandError::Unknown),
    }
}

fn trim_trailing_blanks(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = line {
        line = rest;
    }
    line
}

fn trim_leading_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    s
}

/// The verb runs up to the first space; a tab or other byte glued to it makes it unknown.
fn verb_token(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_till1(|b| b == b' ').parse(i)
}

fn no_args(args: &str, command: Command, expected: &'static str) -> Result<Command, CommandError> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(CommandError::Syntax { expected })
    }
}

fn hello(args: &str, expected: &'static str) -> Result<String, CommandError> {
    match all_consuming(domain).parse(args) {
        Ok((_, domain)) => Ok(domain.to_owned()),
        Err(_) => Err(CommandError::Syntax { expected }),
    }
}

fn mail(args: &str) -> Result<Command, CommandError> {
    let syntax = CommandError::Syntax {
        expected: SYNTAX_MAIL,
    };
    let (address, raw_params) = path_command("FROM:", args).map_err(|_| syntax.clone())?;
    let reverse_path = match address {
        None => String::new(),
        // `MAIL FROM:<postmaster>` is not a valid reverse path; only RCPT has that exception.
        Some(mailbox) if mailbox.has_domain => mailbox.address.to_owned(),
        Some(_) => return Err(syntax),
    };
    let params = mail_params(raw_params)?;
    Ok(Command::Mail {
        reverse_path,
        params,
    })
}

fn rcpt(args: &str) -> Result<Command, CommandError> {
    let syntax = CommandError::Syntax {
        expected: SYNTAX_RCPT,
    };
    let (address, raw_params) = path_command("TO:", args).map_err(|_| syntax.clone())?;
    let forward_path = match address {
        Some(mailbox)
            if mailbox.has_domain || mailbox.address.eq_ignore_ascii_case("postmaster") =>
        {
            mailbox.address.to_owned()
        }
        // `<>` and unqualified local parts other than postmaster.
        _ => return Err(syntax),
    };
    let mut params = Vec::with_capacity(raw_params.len());
    for (key, value) in raw_params {
        let name = key.to_ascii_uppercase();
        if value == Some("") || params.iter().any(|(seen, _)| *seen == name) {
            return Err(CommandError::BadParameter { name });
        }
        params.push((name, value.map(str::to_owned)));
    }
    Ok(Command::Rcpt {
        forward_path,
        params,
    })
}

/// A mailbox as found inside `<...>`, source route already removed.
#[derive(Clone, Copy)]
struct Mailbox<'a> {
    address: &'a str,
    has_domain: bool,
}

/// The raw parameters after a path: (keyword as sent, value as sent).
type RawParams<'a> = Vec<(&'a str, Option<&'a str>)>;

/// Parses `FROM:<path> params` / `TO:<path> params`. `None` is the null path `<>`.
fn path_command<'a>(
    keyword: &'static str,
    args: &'a str,
) -> Result<(Option<Mailbox<'a>>, RawParams<'a>), ()> {
    let parsed = all_consuming((
        tag_no_case(keyword),
        // Postfix tolerates exactly one space after the colon; so do we.
        opt(char(' ')),
        path,
        many0(preceded(space1, param)),
    ))
    .parse(args);
    match parsed {
        Ok((_, (_, _, address, params))) => {
            if address
                .as_ref()
                .is_some_and(|m| m.address.len() > MAX_ADDRESS_LEN)
            {
                return Err(());
            }
            Ok((address, params))
        }
        Err(_) => Err(()),
    }
}

fn mail_params(raw: RawParams<'_>) -> Result<MailParams, CommandError> {
    let mut params = MailParams::default();
    let mut seen: Vec<String> = Vec::with_capacity(raw.len());
    for (key, value) in raw {
        let name = key.to_ascii_uppercase();
        if value == Some("") || seen.contains(&name) {
            return Err(CommandError::BadParameter { name });
        }
        let bad = || CommandError::BadParameter { name: name.clone() };
        match name.as_str() {
            "SIZE" => {
                let value = value.ok_or_else(bad)?;
                // `u64::from_str` would also take a leading '+', which RFC 1870 does not allow.
                if !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                params.size = Some(value.parse().map_err(|_| bad())?);
            }
            "BODY" => {
                let value = value.ok_or_else(bad)?;
                params.body = Some(if value.eq_ignore_ascii_case("7BIT") {
                    Body::SevenBit
                } else if value.eq_ignore_ascii_case("8BITMIME") {
                    Body::EightBitMime
                } else {
                    return Err(bad());
                });
            }
            "SMTPUTF8" => {
                if value.is_some() {
                    return Err(bad());
                }
                params.smtputf8 = true;
            }
            _ => params.other.push((name.clone(), value.map(str::to_owned))),
        }
        seen.push(name);
    }
    Ok(params)
}

fn xforward(args: &str) -> Result<Command, CommandError> {
    let syntax = CommandError::Syntax {
        expected: SYNTAX_XFORWARD,
    };
    let raw = match all_consuming(separated_list1(space1, param)).parse(args) {
        Ok((_, raw)) => raw,
        Err(_) => return Err(syntax),
    };
    let mut attributes = Vec::with_capacity(raw.len());
    for (key, value) in raw {
        let name = key.to_ascii_uppercase();
        if !XFORWARD_NAMES.contains(&name.as_str()) {
            return Err(CommandError::BadParameter { name });
        }
        // Postfix's own XFORWARD server treats a missing or empty value as a syntax error.
        let value = match value {
            Some(v) if !v.is_empty() => v,
            _ => return Err(syntax),
        };
        let Some(value) = xtext_decode(value) else {
            return Err(CommandError::BadParameter { name });
        };
        attributes.push((name, value));
    }
    Ok(Command::Xforward { attributes })
}

/// Decodes RFC 3461 xtext (`+HH` hex escapes). `None` if an escape is malformed or the result is not
/// UTF-8 (the values end up in logs and headers as text).
fn xtext_decode(value: &str) -> Option<String> {
    if !value.contains('+') {
        return Some(value.to_owned());
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'+' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    // RFC 3461 asks for upper-case hex; accepting lower case costs nothing.
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

// ---- nom grammar (RFC 5321 section 4.1.2, relaxed where real mail needs it) ----

/// `<[source-route:]mailbox>` or `<>`. Spaces inside the brackets are only allowed within a quoted
/// local part.
fn path(i: &str) -> IResult<&str, Option<Mailbox<'_>>> {
    delimited(
        char('<'),
        alt((
            preceded(opt(source_route), mailbox).map(Some),
            success(None),
        )),
        char('>'),
    )
    .parse(i)
}

/// `@a,@b:` — obsolete, but RFC 5321 still requires servers to accept and ignore it.
fn source_route(i: &str) -> IResult<&str, &str> {
    recognize(terminated(
        separated_list1(char(','), preceded(char('@'), domain)),
        char(':'),
    ))
    .parse(i)
}

fn mailbox(i: &str) -> IResult<&str, Mailbox<'_>> {
    consumed((local_part, opt(preceded(char('@'), domain))))
        .map(|(address, (_, domain))| Mailbox {
            address,
            has_domain: domain.is_some(),
        })
        .parse(i)
}

fn local_part(i: &str) -> IResult<&str, &str> {
    alt((quoted_string, dot_string)).parse(i)
}

/// Atoms and dots, leniently: consecutive or leading dots occur in real addresses and harm nobody.
fn dot_string(i: &str) -> IResult<&str, &str> {
    take_while1(|c: char| is_atext(c) || c == '.').parse(i)
}

/// RFC 5322 atext, extended by RFC 6531 to any non-ASCII character.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// `"..."` with backslash escapes, kept verbatim including the quotes.
fn quoted_string(i: &str) -> IResult<&str, &str> {
    recognize(delimited(
        char('"'),
        many0(alt((
            take_while1(|c: char| c != '"' && c != '\\' && !c.is_control()),
            recognize((char('\\'), satisfy(|c| (' '..='~').contains(&c)))),
        ))),
        char('"'),
    ))
    .parse(i)
}

/// A domain name or an address literal such as `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
fn domain(i: &str) -> IResult<&str, &str> {
    alt((address_literal, domain_name)).parse(i)
}

/// Letters, digits, hyphens and dots; underscores (common in HELO names) and non-ASCII (IDN) too.
fn domain_name(i: &str) -> IResult<&str, &str> {
    take_while1(|c: char| c.is_ascii_alphanumeric() || "-._".contains(c) || !c.is_ascii()).parse(i)
}

fn address_literal(i: &str) -> IResult<&str, &str> {
    recognize(delimited(
        char('['),
        take_while1(|c: char| c.is_ascii_graphic() && !"[]\\".contains(c)),
        char(']'),
    ))
    .parse(i)
}

/// `KEYWORD[=value]`. Empty values parse (as `Some("")`) so the caller can name the bad parameter.
fn param(i: &str) -> IResult<&str, (&str, Option<&str>)> {
    (
        recognize((
            satisfy(|c| c.is_ascii_alphanumeric()),
            take_while(|c: char| c.is_ascii_alphanumeric() || c == '-'),
        )),
        opt(preceded(
            char('='),
            take_while(|c: char| c != ' ' && !c.is_control()),
        )),
    )
        .parse(i)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn syntax(expected: &'static str) -> Result<Command, CommandError> {
        Err(CommandError::Syntax { expected })
    }

    fn bad(name: &str) -> Result<Command, CommandError> {
        Err(CommandError::BadParameter {
            name: name.to_owned(),
        })
    }

    fn mail(reverse_path: &str, params: MailParams) -> Result<Command, CommandError> {
        Ok(Command::Mail {
            reverse_path: reverse_path.to_owned(),
            params,
        })
    }

    fn rcpt(forward_path: &str, params: &[(&str, Option<&str>)]) -> Result<Command, CommandError> {
        Ok(Command::Rcpt {
            forward_path: forward_path.to_owned(),
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
                .collect(),
        })
    }

    fn lhlo(domain: &str) -> Result<Command, CommandError> {
        Ok(Command::Lhlo {
            domain: domain.to_owned(),
        })
    }

    fn xforward(attributes: &[(&str, &str)]) -> Result<Command, CommandError> {
        Ok(Command::Xforward {
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        })
    }

    fn no_params() -> MailParams {
        MailParams::default()
    }

    #[test]
    fn table() {
        let long_local = "a".repeat(250);
        let at_limit_address = format!("{long_local}@bc.de"); // 256 octets
        let at_limit = format!("MAIL FROM:<{at_limit_address}>");
        let over_limit = format!("MAIL FROM:<{long_local}@bcd.ef>"); // 257 octets
        let rcpt_over_limit = format!("RCPT TO:<{long_local}@bcd.ef>");
        let cases: Vec<(&str, Result<Command, CommandError>)> = vec![
            // --- empty and unknown ---
            ("", Err(CommandError::Unknown)),
            ("   ", Err(CommandError::Unknown)),
            ("FOO", Err(CommandError::Unknown)),
            ("FOO bar", Err(CommandError::Unknown)),
            ("DATAX", Err(CommandError::Unknown)),
            (" DATA", Err(CommandError::Unknown)),
            ("MAIL\tFROM:<a@b>", Err(CommandError::Unknown)),
            ("MAILFROM:<a@b>", Err(CommandError::Unknown)),
            // --- LHLO / HELO / EHLO ---
            ("LHLO mx.example.org", lhlo("mx.example.org")),
            ("lhlo mx.example.org", lhlo("mx.example.org")),
            ("LhLo mx.example.org", lhlo("mx.example.org")),
            ("LHLO  mx.example.org  ", lhlo("mx.example.org")),
            ("LHLO [192.0.2.1]", lhlo("[192.0.2.1]")),
            ("LHLO [IPv6:2001:db8::1]", lhlo("[IPv6:2001:db8::1]")),
            ("LHLO my_host", lhlo("my_host")),
            ("LHLO bücher.example", lhlo("bücher.example")),
            ("LHLO", syntax(SYNTAX_LHLO)),
            ("LHLO ", syntax(SYNTAX_LHLO)),
            ("LHLO a b", syntax(SYNTAX_LHLO)),
            ("LHLO <a@b>", syntax(SYNTAX_LHLO)),
            ("LHLO [1.2.3.4", syntax(SYNTAX_LHLO)),
            (
                "HELO client.example",
                Ok(Command::Helo {
                    domain: "client.example".into(),
                }),
            ),
            ("helo", syntax(SYNTAX_HELO)),
            (
                "ehlo client.example",
                Ok(Command::Ehlo {
                    domain: "client.example".into(),
                }),
            ),
            ("EHLO a b", syntax(SYNTAX_EHLO)),
            // --- MAIL ---
            ("MAIL FROM:<a@b>", mail("a@b", no_params())),
            ("mail from:<a@b>", mail("a@b", no_params())),
            ("Mail From:<a@b>", mail("a@b", no_params())),
            ("MAIL FROM: <a@b>", mail("a@b", no_params())),
            ("MAIL FROM:<a@b>   ", mail("a@b", no_params())),
            ("MAIL FROM:<>", mail("", no_params())),
            ("MAIL FROM: <>", mail("", no_params())),
            ("MAIL FROM:<@a,@b:user@d>", mail("user@d", no_params())),
            ("MAIL FROM:<@a:user@d>", mail("user@d", no_params())),
            ("MAIL FROM:<\"a b\"@x>", mail("\"a b\"@x", no_params())),
            (
                "MAIL FROM:<\"a\\\"b\"@x>",
                mail("\"a\\\"b\"@x", no_params()),
            ),
            ("MAIL FROM:<\"a>b\"@x>", mail("\"a>b\"@x", no_params())),
            (
                "MAIL FROM:<a@[192.0.2.1]>",
                mail("a@[192.0.2.1]", no_params()),
            ),
            (
                "MAIL FROM:<first.last+tag@example.org>",
                mail("first.last+tag@example.org", no_params()),
            ),
            (
                "MAIL FROM:<用户@例子.广告>",
                mail("用户@例子.广告", no_params()),
            ),
            (at_limit.as_str(), mail(&at_limit_address, no_params())),
            (over_limit.as_str(), syntax(SYNTAX_MAIL)),
            ("MAIL FROM:a@b", syntax(SYNTAX_MAIL)),
            ("MAIL FROM:<a@b", syntax(SYNTAX_MAIL)),
            ("MAIL FROM:<a@b>>", syntax(SYNTAX_MAIL)),
            ("MAIL FROM:< a@b>", syntax(SYNTAX_MAIL)),
            ("MAIL FROM:<a@b >", syntax(SYNTAX_MAIL)),
            ("MAIL FROM:<a b@c>", syntax(SYNTAX_MAIL)),
            ("MAIL FROM:  <a@b>", syntax(SYNTAX_MAIL)),
            ("MAIL FROM :<a@b>", syntax(SYNTAX_MAIL)),
            ("MAIL FROM", syntax(SYNTAX_MAIL)),
            ("MAIL", syntax(SYNTAX_MAIL)),
            ("MAIL TO:<a@b>", syntax(SYNTAX_MAIL)),
            ("MAIL FROM:<a>", syntax(SYNTAX_MAIL)),
            ("MAIL FROM:<postmaster>", syntax(SYNTAX_MAIL)),
            ("MAIL FROM:<a@b@c>", syntax(SYNTAX_MAIL)),
            ("MAIL FROM:<@b>", syntax(SYNTAX_MAIL)),
            ("MAIL FROM:<a@>", syntax(SYNTAX_MAIL)),
            ("MAIL FROM:<@a:>", syntax(SYNTAX_MAIL)),
            ("MAIL FROM:<\"a b@x>", syntax(SYNTAX_MAIL)),
            ("MAIL FROM:<a@b>SIZE=10", syntax(SYNTAX_MAIL)),
            ("MAIL FROM:<a@b> =10", syntax(SYNTAX_MAIL)),
            ("MAIL FROM:<a@b> SIZE:10", syntax(SYNTAX_MAIL)),
            (
                "MAIL FROM:<a@b> SIZE=10 BODY=8BITMIME SMTPUTF8",
                mail(
                    "a@b",
                    MailParams {
                        size: Some(10),
                        body: Some(Body::EightBitMime),
                        smtputf8: true,
                        other: vec![],
                    },
                ),
            ),
            (
                "MAIL FROM:<a@b>  size=0 body=7bit smtputf8",
                mail(
                    "a@b",
                    MailParams {
                        size: Some(0),
                        body: Some(Body::SevenBit),
                        smtputf8: true,
                        other: vec![],
                    },
                ),
            ),
            (
                "MAIL FROM:<a@b> SIZE=18446744073709551615",
                mail(
                    "a@b",
                    MailParams {
                        size: Some(u64::MAX),
                        ..MailParams::default()
                    },
                ),
            ),
            (
                "MAIL FROM:<> RET=HDRS envid=QQ314159 X-Flag",
                mail(
                    "",
                    MailParams {
                        other: vec![
                            ("RET".into(), Some("HDRS".into())),
                            ("ENVID".into(), Some("QQ314159".into())),
                            ("X-FLAG".into(), None),
                        ],
                        ..MailParams::default()
                    },
                ),
            ),
            ("MAIL FROM:<a@b> SIZE=18446744073709551616", bad("SIZE")),
            ("MAIL FROM:<a@b> SIZE=abc", bad("SIZE")),
            ("MAIL FROM:<a@b> SIZE=+10", bad("SIZE")),
            ("MAIL FROM:<a@b> SIZE=-1", bad("SIZE")),
            ("MAIL FROM:<a@b> SIZE=", bad("SIZE")),
            ("MAIL FROM:<a@b> SIZE", bad("SIZE")),
            ("MAIL FROM:<a@b> SIZE=1 size=2", bad("SIZE")),
            ("MAIL FROM:<a@b> BODY=BINARYMIME", bad("BODY")),
            ("MAIL FROM:<a@b> BODY=8bit", bad("BODY")),
            ("MAIL FROM:<a@b> BODY", bad("BODY")),
            ("MAIL FROM:<a@b> BODY=7BIT BODY=7BIT", bad("BODY")),
            ("MAIL FROM:<a@b> SMTPUTF8=yes", bad("SMTPUTF8")),
            ("MAIL FROM:<a@b> SMTPUTF8 SMTPUTF8", bad("SMTPUTF8")),
            ("MAIL FROM:<a@b> RET=FULL ret=HDRS", bad("RET")),
            ("MAIL FROM:<a@b> ENVID=", bad("ENVID")),
            // --- RCPT ---
            ("RCPT TO:<u@d>", rcpt("u@d", &[])),
            ("rcpt to:<u@d>", rcpt("u@d", &[])),
            ("RCPT TO: <u@d>", rcpt("u@d", &[])),
            ("RCPT TO:<@relay.example:u@d>", rcpt("u@d", &[])),
            ("RCPT TO:<@r1,@r2:u@d>", rcpt("u@d", &[])),
            ("RCPT TO:<postmaster>", rcpt("postmaster", &[])),
            ("RCPT TO:<PostMaster>", rcpt("PostMaster", &[])),
            ("RCPT TO:<postmaster@d>", rcpt("postmaster@d", &[])),
            ("RCPT TO:<\"john smith\"@d>", rcpt("\"john smith\"@d", &[])),
            ("RCPT TO:<\"a@b\"@d>", rcpt("\"a@b\"@d", &[])),
            ("RCPT TO:<josé@exämple.org>", rcpt("josé@exämple.org", &[])),
            (
                "RCPT TO:<u@d> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u+40d",
                rcpt(
                    "u@d",
                    &[
                        ("NOTIFY", Some("SUCCESS,FAILURE")),
                        ("ORCPT", Some("rfc822;u+40d")),
                    ],
                ),
            ),
            (
                "RCPT TO:<u@d> orcpt=rfc822;x x-flag",
                rcpt("u@d", &[("ORCPT", Some("rfc822;x")), ("X-FLAG", None)]),
            ),
            ("RCPT TO:<>", syntax(SYNTAX_RCPT)),
            ("RCPT TO:<u>", syntax(SYNTAX_RCPT)),
            ("RCPT TO:<\"u\">", syntax(SYNTAX_RCPT)),
            ("RCPT TO:<u@d@e>", syntax(SYNTAX_RCPT)),
            ("RCPT TO:u@d", syntax(SYNTAX_RCPT)),
            ("RCPT TO:<u@d", syntax(SYNTAX_RCPT)),
            ("RCPT FROM:<u@d>", syntax(SYNTAX_RCPT)),
            ("RCPT TO:<@r1,r2:u@d>", syntax(SYNTAX_RCPT)),
            ("RCPT", syntax(SYNTAX_RCPT)),
            (rcpt_over_limit.as_str(), syntax(SYNTAX_RCPT)),
            ("RCPT TO:<u@d> NOTIFY=NEVER NOTIFY=NEVER", bad("NOTIFY")),
            ("RCPT TO:<u@d> ORCPT=", bad("ORCPT")),
            // --- argument-less verbs ---
            ("DATA", Ok(Command::Data)),
            ("data", Ok(Command::Data)),
            ("DATA  ", Ok(Command::Data)),
            ("DATA\t", Ok(Command::Data)),
            ("DATA x", syntax(SYNTAX_DATA)),
            ("RSET", Ok(Command::Rset)),
            ("rset x", syntax(SYNTAX_RSET)),
            ("QUIT", Ok(Command::Quit)),
            ("Quit now", syntax(SYNTAX_QUIT)),
            ("NOOP", Ok(Command::Noop)),
            ("noop anything at all", Ok(Command::Noop)),
            // --- VRFY ---
            (
                "VRFY postmaster",
                Ok(Command::Vrfy {
                    argument: "postmaster".into(),
                }),
            ),
            (
                "vrfy John Smith <js@d>",
                Ok(Command::Vrfy {
                    argument: "John Smith <js@d>".into(),
                }),
            ),
            ("VRFY", syntax(SYNTAX_VRFY)),
            ("VRFY   ", syntax(SYNTAX_VRFY)),
            // --- not offered ---
            ("BDAT 100 LAST", Ok(Command::Bdat)),
            ("STARTTLS", Ok(Command::StartTls)),
            ("starttls", Ok(Command::StartTls)),
            ("AUTH PLAIN AGFAAGI=", Ok(Command::Auth)),
            ("EXPN list", Ok(Command::Expn)),
            ("HELP", Ok(Command::Help)),
            ("help mail", Ok(Command::Help)),
            // --- XFORWARD ---
            (
                "XFORWARD NAME=spike.porcupine.org ADDR=168.100.189.2 PROTO=ESMTP",
                xforward(&[
                    ("NAME", "spike.porcupine.org"),
                    ("ADDR", "168.100.189.2"),
                    ("PROTO", "ESMTP"),
                ]),
            ),
            (
                "xforward name=[UNAVAILABLE] helo=x+20y+2Bz port=25 ident=abc source=REMOTE",
                xforward(&[
                    ("NAME", "[UNAVAILABLE]"),
                    ("HELO", "x y+z"),
                    ("PORT", "25"),
                    ("IDENT", "abc"),
                    ("SOURCE", "REMOTE"),
                ]),
            ),
            (
                "XFORWARD ADDR=IPV6:2001:db8::1",
                xforward(&[("ADDR", "IPV6:2001:db8::1")]),
            ),
            (
                "XFORWARD HELO=caf+C3+A9",
                xforward(&[("HELO", "caf\u{e9}")]),
            ),
            ("XFORWARD", syntax(SYNTAX_XFORWARD)),
            ("XFORWARD NAME", syntax(SYNTAX_XFORWARD)),
            ("XFORWARD NAME=", syntax(SYNTAX_XFORWARD)),
            ("XFORWARD NAME=a,ADDR=b", xforward(&[("NAME", "a,ADDR=b")])),
            ("XFORWARD =a", syntax(SYNTAX_XFORWARD)),
            ("XFORWARD LOGIN=joe", bad("LOGIN")),
            ("XFORWARD NAME=a bogus=b", bad("BOGUS")),
            ("XFORWARD HELO=a+2", bad("HELO")),
            ("XFORWARD HELO=a+ZZ", bad("HELO")),
            ("XFORWARD HELO=a+FF", bad("HELO")),
        ];
        for (line, expected) in &cases {
            assert_eq!(&parse_command(line.as_bytes()), expected, "line {line:?}");
        }
    }

    #[test]
    fn non_utf8() {
        let cases: &[(&[u8], Result<Command, CommandError>)] = &[
            (b"MAIL FROM:<\xff@b>", Err(CommandError::NotUtf8)),
            (b"RCPT TO:<a@\xc3>", Err(CommandError::NotUtf8)),
            (b"LHLO \xe9t\xe9", Err(CommandError::NotUtf8)),
            (b"XFORWARD NAME=\xff", Err(CommandError::NotUtf8)),
            (b"VRFY \xff", Err(CommandError::NotUtf8)),
            (b"DATA \xff", Err(CommandError::NotUtf8)),
            // An unknown verb stays unknown, whatever follows it.
            (b"\xffOO", Err(CommandError::Unknown)),
            (b"FOO \xff", Err(CommandError::Unknown)),
            // NOOP's argument is never looked at.
            (b"NOOP \xff", Ok(Command::Noop)),
            (b"AUTH \xff", Ok(Command::Auth)),
        ];
        for (line, expected) in cases {
            assert_eq!(&parse_command(line), expected, "line {line:?}");
        }
    }

    #[test]
    fn control_characters_in_addresses_are_rejected() {
        for line in [
            &b"MAIL FROM:<a\0@b>"[..],
            b"MAIL FROM:<a@b\0>",
            b"MAIL FROM:<\"a\0\"@b>",
            b"RCPT TO:<a\r@b>",
            b"RCPT TO:<a@b> NOTIFY=\x01",
        ] {
            assert!(
                matches!(parse_command(line), Err(CommandError::Syntax { .. })),
                "line {line:?}"
            );
        }
    }

    #[test]
    fn errors_display() {
        assert_eq!(CommandError::Unknown.to_string(), "command unrecognized");
        assert_eq!(
            CommandError::Syntax {
                expected: SYNTAX_MAIL
            }
            .to_string(),
            "syntax: MAIL FROM:<address> [parameters]"
        );
        assert_eq!(
            CommandError::BadParameter {
                name: "SIZE".into()
            }
            .to_string(),
            "bad parameter: SIZE"
        );
        assert_eq!(
            CommandError::NotUtf8.to_string(),
            "command line is not valid UTF-8"
        );
    }
}
