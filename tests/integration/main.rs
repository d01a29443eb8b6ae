//! The integration tests: one binary, one module per topic, so the suite links once
//! (`cargo test --test integration deploy::` runs one topic). Each test drives the real
//! sealgate binary and real peers (Postfix, Dovecot, GnuPG, sq, ...); with `CI=true` a missing
//! peer fails the test instead of skipping it. The harness (peers, the sealgate process,
//! Maildir reading) is the `testkit` crate, shared with `benches/`.
//!
//! `tests/abuse.rs` stays a binary of its own: see the note at its [[test]] entry in Cargo.toml.
#![allow(
    clippy::disallowed_methods,
    reason = "test code reads its own knobs (CI, TEST_*) and the harness environment; .clippy.toml guards the service code"
)]

// The harness itself
mod harness_selftest; // real Postfix and Dovecot without sealgate: fix these first

// The two endpoints and the next hop
mod lmtp_session; // LMTP against a raw client: commands, limits, smuggling, timeouts, shutdown
mod milter; // the milter against Postfix's smtpd_milters and miltertest
mod next_hop; // next-hop failures end as the right reply to Postfix
mod postfix; // sealgate between a real Postfix and Dovecot or the Maildir

// The three promises
mod address; // every spelling of a key holder's address finds her key and her folder
mod already_encrypted; // genuine GnuPG, sq and openssl output passes through byte-exact
mod encryption; // GnuPG, sq and rnp decrypt what sealgate stores
mod passthrough_corpus; // corpus/messages passes byte-exact
mod scrub; // authenticated submissions lose their tracking headers
mod secure; // secure addresses only over TLS
mod thunderbird; // Thunderbird's own librnp decrypts what sealgate stores

// Keys and the key store
mod keys; // `sealgate keys` against real GnuPG and sq keys
mod keystore_fail_closed; // an unreadable store tempfails, never plaintext
mod keystore_postgres; // the PostgreSQL key store against a private PostgreSQL server

// Robustness
mod at_rest; // no plaintext outside the next hop: files, logs, core dumps
mod faults; // zero loss while peers fail and sealgate is killed

// Operations and the shipped files
mod deploy; // the shipped packaging applied verbatim
mod logs; // the summary line and next-hop state changes in sealgate's log
mod metrics; // every outcome moves its counter; /readyz follows the next hop
mod packaging; // packaging/ agrees with the code and passes its tools' checks
mod readme; // README's configuration table agrees with the code
