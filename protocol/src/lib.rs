//! Sans-IO LMTP/SMTP wire codecs for sealgate. This crate does no I/O: callers own the sockets and feed bytes in.
//!
//! Every decoder follows "frame first, then parse": the line ending is found by hand (so partial input
//! simply means "need more bytes"), and only the finished line is handed to `nom`'s *complete* parsers.
//! `nom::Err::Incomplete` therefore never escapes this crate.
//!
//! The stream decoders (lines, replies, milter commands and responses) share one shape, [`Decode`]:
//! split an item off the front of a buffer, or `Ok(None)` for "need more bytes".

mod decode;
#[doc(hidden)]
pub mod fuzzing;
pub mod line;
pub mod lmtp;
pub mod milter;

pub use decode::Decode;
#[doc(hidden)]
pub use decode::{AfterError, Decoded, decode_chunks};
pub use line::{LineDecoder, LineError};
pub use lmtp::command::{Body, Command, CommandError, MailParams, parse_command};
pub use lmtp::data::{BareNewline, DataDecoder, DataProgress, DotStuffer};
pub use lmtp::reply::{EnhancedCode, Reply, ReplyDecoder, ReplyError};
