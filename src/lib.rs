//! sealgate: an inbound-mail privacy filter between Postfix and Dovecot.
//!
//! The house, by wing (CONTRIBUTING.md has the same map with each module's one job):
//! - inbound: `lmtp` (the LMTP session and the per-recipient fan-out) and `milter`;
//!   `server` accepts for both and for HTTP;
//! - `message`: facts about a message with no I/O (envelope, addresses, the header tokenizer,
//!   Received, TLS evidence, outcomes, canned replies);
//! - `pipeline`: the stages scrub, require-TLS and encrypt (`pipeline::encrypt` decides
//!   what is already encrypted and seals the rest);
//! - `delivery`: the next hop (Dovecot LMTP, SMTP reinjection or Maildir);
//! - [`store`]: recipients' keys and the secure addresses behind one lookup contract, kept in
//!   memory and reloaded by one watcher;
//! - `ops`: metrics, the HTTP probes, how addresses appear in logs;
//! - [`net`]: socket addresses, the listener, the connector; `conn`: one session's byte
//!   I/O with timeouts; `shutdown`: "are we stopping?";
//! - [`config`]: the `SEALGATE_*` settings, each declared once (`config/vars.rs`) and parsed
//!   once, with a section per component (`config.lmtp()`); `app` wires it all together;
//! - [`openpgp`]: the one place that decides "usable"; [`error`]: error chains for logs.
//!
//! The library exists for the binary, the integration tests and the benchmarks; it makes no
//! stability promise.

// The facade: the binary (`src/main.rs`, `src/cli/`), the integration tests, the benchmark
// and the fuzz targets use only what is public here. Everything else is private, so
// `unreachable_pub` and dead-code warnings mean what they say.
#![warn(unreachable_pub)]

mod app;
mod conn;
mod delivery;
mod lmtp;
mod message;
mod milter;
mod ops;
mod pipeline;
mod server;
mod shutdown;
#[cfg(test)]
mod testing;

/// The settings: the binary prints them, the packaging tests check the documents against them.
pub mod config;
/// Error chains on one line, for logs and CLI messages.
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
/// Socket addresses and listeners: the binary binds or inherits them.
pub mod net;
/// What a certificate is good for: the keys CLI and the tests judge certificates the same way.
pub mod openpgp;
/// The key stores and the secure addresses: `sealgate keys` writes and shows them.
pub mod store;

pub use app::{AppError, Keys, Listeners, Stores, run};
pub use ops::metrics::{BUILD_COMMIT, BUILD_RUSTC, CRYPTO_BACKEND};
pub use ops::redact::{AddressLog, Logfmt, token};

/// What the benchmark's in-process rows drive: the encryption stage's rewrite alone.
#[doc(hidden)]
pub mod bench {
    pub use crate::ops::metrics::Metrics;
    pub use crate::pipeline::Rewrite;
    pub use crate::pipeline::encrypt::PgpMime;
}
