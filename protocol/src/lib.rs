//! Sans-IO LMTP/SMTP wire codecs for sealgate. This crate does no I/O: callers own the sockets and feed bytes in.
//!
//! Every decoder follows "frame first, then parse": the line ending is found by hand (so partial input
//! simply means "need more bytes"), and only the finished line is handed to `nom`'s *complete* parsers.
//! `nom::Err::Incomplete` therefore never escapes this crate.

#[doc(hidden)]
pub mod fuzzing;
pub mod line;
pub mod lmtp;
pub mod milter;

pub use line::{LineDecoder, LineError};
pub use lmtp::command::{Body, Command, CommandError, MailParams, parse_command};
pub use lmtp::data::{BareNewline, DataDecoder, DataProgress, DotStuffer};
pub use lmtp::reply::{EnhancedCode, Reply, ReplyDecoder, ReplyError};
