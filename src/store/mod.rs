//! On-disk state kept in memory and reloaded: recipients' certificates (cert-d) and the
//! secure (TLS-only) mailbox list, each behind one lookup trait so a second backend (issue
//! 14: PostgreSQL) can stand beside the files.
//!
//! # The lookup contract
//!
//! - **Answers come from memory.** [`KeyLookup::lookup`] and [`SecureLookup::tls_rule`] are
//!   called on the protocol task, inside the synchronous pipeline stages: they never wait on
//!   the disk or the network. A backend whose answers need a round trip keeps them in memory
//!   and fetches them in [`KeyLookup::prefetch`] / [`SecureLookup::prefetch`].
//! - **Recipients are fetched together.** `prefetch` gets every address the protocol task
//!   knows of at once (the RCPTs of one pipelined batch, the recipients of one message), so
//!   a network backend makes one round trip for all of them; it never fails (what it could
//!   not fetch is answered "unknown" by the lookup), and the caller may bound it with a
//!   timeout. A backend that holds everything in memory (cert-d, the mailbox file) needs no
//!   prefetch: the default is ready at once. The LMTP and milter
//!   sessions await it (through `Pipeline::prefetch`) before their RCPT checks when a backend needs
//!   it.
//! - **"Cannot tell" is an answer.** [`Lookup::Unknown`] is distinct from [`Lookup::None`]:
//!   it tempfails the recipient (`451 4.7.0`), never turns it into a plaintext recipient. A
//!   backend answers it whenever it cannot vouch for "no key" (an unreadable entry, a store
//!   that shrank, a database away for longer than its staleness limit, an address never
//!   fetched). For the secure addresses it is [`TlsRule::Unknown`]: accepted over TLS,
//!   tempfailed without (never bounced, never let through in plaintext).
//! - **Usable is decided once** ([`crate::openpgp`]); a backend returns every usable
//!   certificate of the address, newest first, and the stage judges them again at plan time.
//! - **Reloading** is the backend's own business; the file backends implement
//!   [`watch::Reload`] and share the one poller and the SIGHUP path in [`watch`].

pub mod certd;
pub mod keys;
pub mod manifest;
pub mod postgres;
pub mod secure;
pub mod watch;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sequoia_openpgp::Cert;

use crate::openpgp::Unusable;

/// What a key store knows about an address.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// No certificate for this address.
    None,
    /// Usable certificates, newest first: encrypt to every one of them (one PKESK each), so
    /// each holder of a key for the address can read the copy.
    Usable(Vec<Arc<Cert>>),
    /// A certificate exists but can't be used now (the policy decides what happens).
    Unusable {
        /// Fingerprint (upper-case hex) of the newest certificate for the address.
        fingerprint: String,
        /// Why it cannot be used.
        reason: Unusable,
    },
    /// The store cannot tell whether the address has a usable certificate (an unreadable
    /// entry, a missing manifest, a store that shrank): tempfail, never plaintext.
    Unknown {
        /// A short cause naming the file, for the reply and the log.
        reason: String,
    },
}

/// A prefetch in progress: resolves once the answers are in memory (or known to be unknown).
pub type Prefetch<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Where recipients' certificates are found: the encryption stage (at RCPT time, for LMTP and
/// the milter alike, and at plan time) holds an `Arc<dyn KeyLookup>`. Dynamic, not generic:
/// the backend is chosen at start-up from the configuration, and one call through a vtable
/// per recipient is nothing beside the encryption. See the contract above.
pub trait KeyLookup: Send + Sync {
    /// What is known about `address` (a mailbox, as the pipeline routes it), from memory
    /// only.
    fn lookup(&self, address: &str) -> Lookup;

    /// Whether [`KeyLookup::prefetch`] does anything (a networked backend): the sessions then
    /// await it before their RCPT checks.
    fn needs_prefetch(&self) -> bool {
        false
    }

    /// Brings the answers for `addresses` into memory, in one round trip.
    fn prefetch<'a>(&'a self, addresses: &'a [&'a str]) -> Prefetch<'a> {
        let _ = addresses;
        Box::pin(std::future::ready(()))
    }
}

/// Whether a recipient requires TLS, as a store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsRule {
    /// Not a secure address.
    Optional,
    /// A secure address: accepted only over TLS, and its mail goes to `mailbox`.
    Required {
        /// Where the mail is delivered (the real mailbox of a secure twin).
        mailbox: String,
    },
    /// The store cannot tell (a database away too long, an address never fetched): the
    /// recipient is accepted over TLS, as addressed, and tempfailed (`451 4.7.0`) without
    /// it. Never a bounce: the mailbox may well not be a secure one.
    Unknown {
        /// A short cause, for the reply and the log.
        reason: String,
    },
}

/// Which recipients require TLS, and where their mail goes: the require-TLS stage (at RCPT
/// time for LMTP and the milter alike, and at plan time) asks each configured lookup (the
/// domains and mailbox file; the key database's `mailbox_flags`). Same contract as
/// [`KeyLookup`].
pub trait SecureLookup: Send + Sync {
    /// What is known about `address` (as the client gave it), from memory only.
    fn tls_rule(&self, address: &str) -> TlsRule;

    /// Whether [`SecureLookup::prefetch`] does anything (a networked backend).
    fn needs_prefetch(&self) -> bool {
        false
    }

    /// Brings the answers for `addresses` into memory, in one round trip.
    fn prefetch<'a>(&'a self, addresses: &'a [&'a str]) -> Prefetch<'a> {
        let _ = addresses;
        Box::pin(std::future::ready(()))
    }
}
