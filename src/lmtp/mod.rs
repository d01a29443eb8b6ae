//! The LMTP wing: one session per connection from Postfix, and the fan-out of each message
//! into per-recipient copies for the next hop.

pub mod fanout;
pub mod session;
