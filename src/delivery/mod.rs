//! Delivery to the next hop: the mail store (Maildir), Dovecot over LMTP, or Postfix over SMTP
//! reinjection. A delivery never returns an error: every failure ends as a reply for the
//! recipients it concerns (4xx for anything transient, the next hop's own 5xx relayed).

mod client;
mod maildir;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealgate_protocol::Reply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use crate::config::{NextHopAddr, NextHopClient};
pub(crate) use crate::message::replies::{connection_lost, stored, unreachable};
use crate::net::{self, ConnectError};
use crate::ops::metrics::{Metrics, NextHopKind};
use crate::pipeline::{Envelope, Recipient};

pub(crate) use client::Client;
pub(crate) use maildir::Maildir;

/// The configured next hop, shared by all sessions.
pub(crate) enum NextHop {
    /// Files in a Maildir tree.
    Maildir(Maildir),
    /// An LMTP or SMTP server.
    Client(Arc<Client>),
}

impl NextHop {
    /// Builds the next hop named by the configuration; its failures are counted in
    /// `metrics`. Nothing is opened yet.
    pub(crate) fn new(
        address: &NextHopAddr,
        settings: NextHopClient,
        metrics: Arc<Metrics>,
    ) -> NextHop {
        match address {
            NextHopAddr::Maildir(root) => {
                NextHop::Maildir(Maildir::new(root, &settings.hostname, metrics))
            }
            NextHopAddr::Lmtp(endpoint) => {
                NextHop::Client(Arc::new(Client::new(endpoint, true, settings, metrics)))
            }
            NextHopAddr::Smtp(endpoint) => {
                NextHop::Client(Arc::new(Client::new(endpoint, false, settings, metrics)))
            }
        }
    }

    /// Maildir, LMTP or SMTP: the `kind` label of the next-hop metrics.
    pub(crate) fn kind(&self) -> NextHopKind {
        match self {
            NextHop::Maildir(_) => NextHopKind::Maildir,
            NextHop::Client(client) if client.is_lmtp() => NextHopKind::Lmtp,
            NextHop::Client(_) => NextHopKind::Smtp,
        }
    }

    /// Whether the next hop stores mail that needs SMTPUTF8, so we may announce it.
    pub(crate) fn supports_smtputf8(&self) -> bool {
        matches!(self, NextHop::Maildir(_))
    }

    /// Opens one delivery of one copy to `recipients`. Refusals by the next hop (e.g. Dovecot's
    /// `550 5.1.1` for an unknown user) are kept and reported by [`Delivery::finish`].
    pub(crate) async fn begin(&self, envelope: &Envelope, recipients: &[&Recipient]) -> Delivery {
        match self {
            NextHop::Maildir(maildir) => maildir.begin(envelope, recipients).await,
            NextHop::Client(client) => client.begin(envelope, recipients).await,
        }
    }
}

/// Whether `next_hop` could take a message now (the readiness probe): an LMTP/SMTP server
/// accepts a connection within `wait` (we then say QUIT), a Maildir root exists (or can be
/// created) and a file can be written in it.
///
/// # Errors
/// Why not, in a few words.
pub(crate) async fn probe(next_hop: &NextHopAddr, wait: Duration) -> Result<(), String> {
    match next_hop {
        NextHopAddr::Lmtp(endpoint) | NextHopAddr::Smtp(endpoint) => {
            let started = Instant::now();
            let mut stream = match net::connect(endpoint, wait).await {
                Ok(stream) => stream,
                Err(ConnectError::Failed(err)) => {
                    return Err(format!("cannot connect: {}", err.kind()));
                }
                Err(ConnectError::TimedOut) => {
                    return Err(format!("no connection within {wait:?}"));
                }
            };
            // Be polite: take the greeting (within what is left of the budget) and say QUIT,
            // so the server does not log a client that vanished. The verdict is already
            // "reachable".
            let left = wait.saturating_sub(started.elapsed());
            let mut greeting = [0u8; 512];
            let _ = timeout(left, stream.read(&mut greeting)).await;
            let _ = timeout(left, stream.write_all(b"QUIT\r\n")).await;
            Ok(())
        }
        NextHopAddr::Maildir(root) => {
            let root = root.clone();
            let check = tokio::task::spawn_blocking(move || writable(&root));
            match timeout(wait, check).await {
                Ok(Ok(result)) => result,
                Ok(Err(err)) => Err(format!("check failed: {err}")),
                Err(_) => Err("check timed out".to_string()),
            }
        }
    }
}

/// The Maildir root exists (created if missing, as the first delivery would) and takes a file.
fn writable(root: &Path) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(|e| format!("cannot create: {}", e.kind()))?;
    // A leading dot: recipient folders never start with one (it is %-escaped).
    let probe: PathBuf = root.join(format!(".sealgate-ready.{}", std::process::id()));
    let written = std::fs::write(&probe, b"");
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| format!("not writable: {}", e.kind()))
}

/// One copy on its way to the next hop.
pub(crate) enum Delivery {
    /// Maildir files being written.
    Maildir(maildir::Delivery),
    /// An LMTP/SMTP transaction in its DATA phase.
    Client(Box<client::Delivery>),
    /// Nothing to write to: every recipient already has its final reply.
    Done(Vec<Reply>),
}

impl Delivery {
    /// Appends message bytes (unstuffed, CRLF lines). After a failure this does nothing and the
    /// failure shows in [`Delivery::finish`].
    pub(crate) async fn write(&mut self, data: &[u8]) {
        match self {
            Delivery::Maildir(d) => d.write(data).await,
            Delivery::Client(d) => d.write(data).await,
            Delivery::Done(_) => {}
        }
    }

    /// False once nothing written can reach any recipient, so callers may skip work.
    pub(crate) fn is_open(&self) -> bool {
        match self {
            Delivery::Maildir(d) => d.is_open(),
            Delivery::Client(d) => d.is_open(),
            Delivery::Done(_) => false,
        }
    }

    /// Ends the message and waits until the next hop has stored it (or refused it): one final
    /// reply per recipient given to [`NextHop::begin`], in that order.
    pub(crate) async fn finish(self) -> Vec<Reply> {
        match self {
            Delivery::Maildir(d) => d.finish().await,
            Delivery::Client(d) => d.finish().await,
            Delivery::Done(replies) => replies,
        }
    }

    /// Abandons the copy: nothing is stored and nothing acknowledged.
    pub(crate) async fn abort(self) {
        match self {
            Delivery::Maildir(d) => d.abort().await,
            Delivery::Client(d) => d.abort(),
            Delivery::Done(_) => {}
        }
    }
}
