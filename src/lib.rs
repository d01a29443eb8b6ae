//! sealgate: an inbound-mail privacy filter between Postfix and Dovecot.
//!
//! The house, by wing (CONTRIBUTING.md has the same map with each module's one job):
//! - inbound: [`lmtp`] (the LMTP session and the per-recipient fan-out) and [`milter`];
//!   [`server`] accepts for both and for HTTP;
//! - [`message`]: facts about a message with no I/O (envelope, addresses, the header tokenizer,
//!   Received, TLS evidence, outcomes, canned replies);
//! - [`pipeline`]: the stages scrub, require-TLS and encrypt ([`pipeline::encrypt`] decides
//!   what is already encrypted and seals the rest);
//! - [`delivery`]: the next hop (Dovecot LMTP, SMTP reinjection or Maildir);
//! - [`store`]: recipients' keys and the secure addresses behind one lookup contract, kept in
//!   memory and reloaded by one watcher;
//! - [`ops`]: metrics, the HTTP probes, how addresses appear in logs;
//! - [`net`]: socket addresses, the listener, the connector; [`conn`]: one session's byte
//!   I/O with timeouts; [`shutdown`]: "are we stopping?";
//! - [`config`]: the `SEALGATE_*` settings, each declared once (`config/vars.rs`) and parsed
//!   once, with a section per component (`config.lmtp()`); [`app`] wires it all together;
//! - [`openpgp`]: the one place that decides "usable"; [`error`]: error chains for logs.
//!
//! The library exists for the binary, the integration tests and the benchmarks; it makes no
//! stability promise.

pub mod app;
pub mod config;
pub mod conn;
pub mod delivery;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod lmtp;
pub mod message;
pub mod milter;
pub mod net;
pub mod openpgp;
pub mod ops;
pub mod pipeline;
pub mod server;
pub mod shutdown;
pub mod store;
#[cfg(test)]
mod testing;

pub use app::{AppError, Listeners, Stores, pipeline, run};
