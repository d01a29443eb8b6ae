//! The accept loop, once for every listener (LMTP, milter, HTTP): a connection limit, one task
//! per session, and at shutdown a grace period for what is open. What a session speaks is the
//! handler's business ([`crate::app`] picks it).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::net::{BoxStream, Listener};
use crate::shutdown::Shutdown;

/// What a listener allows and how its sessions end at shutdown.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The `protocol` field of the listener's log lines (`lmtp`, `milter`, `http`).
    pub protocol: &'static str,
    /// Sessions at once; at the limit the listener stops accepting until one ends.
    pub max_connections: usize,
    /// How long open sessions may go on after shutdown (each learns of it through its
    /// [`Shutdown`]); `None`: they are cut at once, without a word in the log.
    pub grace: Option<Duration>,
}

/// Accepts sessions on `listener` until `shutdown` completes, running `handler` for each
/// (with the stream, the peer and the shutdown signal); then lets them finish within the
/// grace period and cuts the rest.
pub async fn serve<H, F>(
    listener: Listener,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    handler: H,
) where
    H: Fn(BoxStream, String, Shutdown) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let name = limits.protocol;
    let limit = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sessions = JoinSet::new();
    info!(protocol = name, address = %listener.local_addr(), "listening");
    tokio::pin!(shutdown);
    loop {
        // Take the permit before accepting: at the limit we stop accepting instead of
        // accepting and refusing (the kernel's backlog holds the waiting clients).
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        while sessions.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let session = handler(stream, peer, Shutdown::new(stop_rx.clone()));
                sessions.spawn(async move {
                    session.await;
                    drop(permit);
                });
            }
            Err(err) => {
                // Typically EMFILE: back off instead of spinning.
                error!(protocol = name, %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    let Some(grace) = limits.grace else {
        sessions.shutdown().await;
        return;
    };
    // Finished sessions are only reaped at accept time: count the ones still running.
    while sessions.try_join_next().is_some() {}
    let open = sessions.len();
    info!(
        protocol = name,
        open_sessions = open,
        grace_secs = grace.as_secs(),
        "shutting down"
    );
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => info!(protocol = name, "all sessions finished"),
        Err(_) => {
            warn!(
                protocol = name,
                cut = sessions.len(),
                "grace period over, cutting sessions (their messages were not acknowledged)"
            );
            sessions.shutdown().await;
        }
    }
}
