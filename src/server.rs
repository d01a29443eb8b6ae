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
pub(crate) struct Limits {
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
pub(crate) async fn serve<H, F>(
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::AsyncWriteExt;
    use tokio::sync::oneshot;

    use super::*;
    use crate::net::Address;

    async fn listener() -> (Listener, String) {
        let listener = Listener::bind(&Address::Tcp("127.0.0.1:0".into()), 0)
            .await
            .unwrap();
        let addr = listener.local_addr();
        (listener, addr)
    }

    /// Sessions that wait for the shutdown signal finish within the grace period; a session
    /// that ignores it is cut when the period is over; without a grace period all are cut.
    #[tokio::test]
    async fn shutdown_lets_sessions_finish_within_the_grace_period() {
        for (grace, obedient, finished) in [
            (Some(Duration::from_secs(10)), true, 1),
            (Some(Duration::from_millis(50)), false, 0),
            (None, true, 0),
        ] {
            let (listener, addr) = listener().await;
            let (stop, stopped) = oneshot::channel::<()>();
            let (started_tx, started) = tokio::sync::mpsc::channel::<()>(1);
            let done = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&done);
            let limits = Limits {
                protocol: "test",
                max_connections: 4,
                grace,
            };
            let server = tokio::spawn(async move {
                let stopped = async {
                    let _ = stopped.await;
                };
                serve(
                    listener,
                    limits,
                    stopped,
                    move |mut stream, _, mut shutdown| {
                        let done = Arc::clone(&counted);
                        let started = started_tx.clone();
                        async move {
                            let _ = started.send(()).await;
                            if obedient {
                                shutdown.recv().await;
                            } else {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                            }
                            let _ = stream.write_all(b"bye").await;
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                    },
                )
                .await;
            });
            let _client = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let mut started = started;
            started.recv().await.unwrap();
            stop.send(()).unwrap();
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(done.load(Ordering::SeqCst), finished, "grace {grace:?}");
        }
    }
}
