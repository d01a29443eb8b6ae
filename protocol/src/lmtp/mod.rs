//! LMTP (RFC 2033) / SMTP (RFC 5321) codecs: command lines, replies and the DATA phase.

pub mod command;
pub mod data;
pub mod reply;
