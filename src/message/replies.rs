//! Every canned SMTP/LMTP reply, once: what sealgate itself answers (the LMTP session, the
//! fan-out, the next hop's stand-ins and the stages' failures). Replies built from a stage's
//! decision (the TLS verdict, the unusable-key policy) stay with the rule that decides.

use sealgate_protocol::{CommandError, EnhancedCode, Reply};

/// `220`: the LMTP greeting.
pub(crate) fn greeting(hostname: &str) -> Reply {
    Reply::new(
        220,
        EnhancedCode::new(2, 0, 0),
        format!("{hostname} sealgate LMTP ready"),
    )
}

/// `250 2.0.0`: a command done.
pub(crate) fn ok(text: &str) -> Reply {
    Reply::new(250, EnhancedCode::new(2, 0, 0), text)
}

/// `250 2.1.0`: MAIL accepted.
pub(crate) fn sender_ok() -> Reply {
    Reply::new(250, EnhancedCode::new(2, 1, 0), "Ok")
}

/// `250 2.1.5`: RCPT accepted.
pub(crate) fn recipient_ok() -> Reply {
    Reply::new(250, EnhancedCode::new(2, 1, 5), "Ok")
}

/// `354`: send the message.
pub(crate) fn start_data() -> Reply {
    Reply::new(
        354,
        EnhancedCode::new(2, 0, 0),
        "Start mail input; end with <CRLF>.<CRLF>",
    )
}

/// `221`: QUIT.
pub(crate) fn bye() -> Reply {
    Reply::new(221, EnhancedCode::new(2, 0, 0), "Bye")
}

/// `252`: VRFY is not answered.
pub(crate) fn cannot_vrfy() -> Reply {
    Reply::new(
        252,
        EnhancedCode::new(2, 5, 0),
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}

/// `250 2.0.0`: a copy that reached the next hop and was stored.
pub(crate) fn stored(detail: &str) -> Reply {
    Reply::new(250, EnhancedCode::new(2, 0, 0), format!("Ok: {detail}"))
}

/// `421 4.4.2`: the client was silent too long.
pub(crate) fn timed_out(hostname: &str) -> Reply {
    Reply::new(
        421,
        EnhancedCode::new(4, 4, 2),
        format!("{hostname} Timeout, closing connection"),
    )
}

/// `421 4.3.2`: sealgate is stopping.
pub(crate) fn shutting_down(hostname: &str) -> Reply {
    Reply::new(
        421,
        EnhancedCode::new(4, 3, 2),
        format!("{hostname} Service shutting down, closing connection"),
    )
}

/// `451 4.3.0`: something failed here; Postfix retries.
pub(crate) fn local_error(text: impl Into<String>) -> Reply {
    Reply::new(451, EnhancedCode::new(4, 3, 0), text.into())
}

/// `451 4.3.0`: a failure with nothing more to say.
pub(crate) fn internal_error() -> Reply {
    local_error("Internal error, try again later")
}

/// `451 4.7.0`: the key store cannot tell whether `address` has a key (`reason`, shortened).
pub(crate) fn key_unknown(address: &str, reason: &str) -> Reply {
    Reply::new(
        451,
        EnhancedCode::new(4, 7, 0),
        format!(
            "<{address}> key store cannot tell whether this recipient has a key ({}), try \
             again later",
            short(reason)
        ),
    )
}

/// `451 4.7.0`: whether `address` requires TLS is unknown (`reason`, shortened), and the
/// message came without it.
pub(crate) fn tls_rule_unknown(address: &str, reason: &str) -> Reply {
    Reply::new(
        451,
        EnhancedCode::new(4, 7, 0),
        format!(
            "<{address}> cannot tell whether this address requires TLS ({}), try again later",
            short(reason)
        ),
    )
}

/// `reason` cut to fit a reply line (the log has it whole).
fn short(reason: &str) -> String {
    const MAX: usize = 160;
    let one_line: String = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &one_line[..at]),
        None => one_line,
    }
}

/// `451 4.4.1`: the next hop could not be reached.
pub(crate) fn unreachable(what: &str) -> Reply {
    Reply::new(
        451,
        EnhancedCode::new(4, 4, 1),
        format!("Next hop unavailable: {what}"),
    )
}

/// `451 4.4.2`: the conversation with the next hop broke off.
pub(crate) fn connection_lost(what: &str) -> Reply {
    Reply::new(
        451,
        EnhancedCode::new(4, 4, 2),
        format!("Next hop connection failed: {what}"),
    )
}

/// `452 4.3.1`: the disk (or the quota) is full.
pub(crate) fn insufficient_storage() -> Reply {
    Reply::new(
        452,
        EnhancedCode::new(4, 3, 1),
        "Insufficient system storage",
    )
}

/// `452 4.3.4`: the next hop refused an encrypted copy of `octets` for its size (encryption
/// made it larger than what the sender sent).
pub(crate) fn encrypted_copy_too_big(octets: u64) -> Reply {
    Reply::new(
        452,
        EnhancedCode::new(4, 3, 4),
        format!(
            "the next hop refused the encrypted copy ({octets} octets) for its size; try again \
             later"
        ),
    )
}

/// `452 4.5.3`: more RCPTs than `SEALGATE_MAX_RECIPIENTS`.
pub(crate) fn too_many_recipients() -> Reply {
    Reply::new(452, EnhancedCode::new(4, 5, 3), "Too many recipients")
}

/// `500 5.5.2`: a command line over the limit.
pub(crate) fn line_too_long(limit: usize) -> Reply {
    Reply::new(
        500,
        EnhancedCode::new(5, 5, 2),
        format!("Line too long (limit {limit} octets)"),
    )
}

/// `500 5.5.1`: HELO or EHLO on an LMTP socket.
pub(crate) fn use_lhlo() -> Reply {
    Reply::new(500, EnhancedCode::new(5, 5, 1), "This is LMTP: use LHLO")
}

/// `501 5.5.4`: a command's syntax.
pub(crate) fn syntax_error(text: &str) -> Reply {
    Reply::new(501, EnhancedCode::new(5, 5, 4), text)
}

/// `502 5.5.1`: a command sealgate does not implement.
pub(crate) fn not_implemented() -> Reply {
    Reply::new(502, EnhancedCode::new(5, 5, 1), "Command not implemented")
}

/// `503 5.5.1`: a command out of sequence.
pub(crate) fn bad_sequence(text: &str) -> Reply {
    Reply::new(503, EnhancedCode::new(5, 5, 1), text)
}

/// `550 5.5.2`: bare CR or LF under `SEALGATE_BARE_NEWLINE=reject`.
pub(crate) fn bare_newline() -> Reply {
    Reply::new(
        550,
        EnhancedCode::new(5, 5, 2),
        "Message contains bare CR or LF; lines must end in CRLF",
    )
}

/// `552 5.3.4`: a message over `SEALGATE_MAX_MESSAGE_SIZE`.
pub(crate) fn too_big(limit: u64) -> Reply {
    Reply::new(
        552,
        EnhancedCode::new(5, 3, 4),
        format!("Message size exceeds fixed limit of {limit} octets"),
    )
}

/// `552 5.3.4`: a header block over `SEALGATE_MAX_HEADER_SIZE`.
pub(crate) fn header_too_large(limit: usize) -> Reply {
    Reply::new(
        552,
        EnhancedCode::new(5, 3, 4),
        format!("Message header block exceeds {limit} octets"),
    )
}

/// The reply to a command line the parser refused.
pub(crate) fn command_error(err: &CommandError) -> Reply {
    match err {
        CommandError::Unknown => {
            Reply::new(500, EnhancedCode::new(5, 5, 1), "Command unrecognized")
        }
        CommandError::Syntax { expected } => syntax_error(&format!("Syntax: {expected}")),
        CommandError::BadParameter { name } => syntax_error(&format!("Bad parameter: {name}")),
        CommandError::NotUtf8 => syntax_error("Command is not valid UTF-8"),
        _ => syntax_error("Syntax error"),
    }
}
