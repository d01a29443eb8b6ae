//! The listeners (LMTP, milter): accept loop with a connection limit, one task per session,
//! graceful shutdown with a grace period.

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::{Config, ListenAddr};
use crate::milter;
use crate::session::{self, Shared};

/// A bound listening socket.
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A unix socket; the file is removed when the listener is dropped.
    Unix(UnixListener, PathBuf),
    /// A unix socket inherited from systemd (socket activation): its file belongs to systemd,
    /// which keeps listening on it while sealgate restarts, so it stays.
    InheritedUnix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `addr`. A unix socket file left over from an earlier run is replaced and given
    /// `mode`.
    ///
    /// # Errors
    /// The bind (or chmod) failure.
    pub async fn bind(addr: &ListenAddr, mode: u32) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr.as_str()).await?)),
            ListenAddr::Unix(path) => {
                match std::fs::remove_file(path) {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                    _ => {}
                }
                let listener = UnixListener::bind(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
                Ok(Listener::Unix(listener, path.clone()))
            }
        }
    }

    /// Takes over a TCP listening socket inherited from systemd.
    ///
    /// # Errors
    /// Switching it to non-blocking mode or registering it with the runtime failed.
    pub fn inherited_tcp(listener: std::net::TcpListener) -> io::Result<Listener> {
        listener.set_nonblocking(true)?;
        Ok(Listener::Tcp(TcpListener::from_std(listener)?))
    }

    /// Takes over a unix listening socket inherited from systemd; its mode and its file are
    /// left alone.
    ///
    /// # Errors
    /// Switching it to non-blocking mode or registering it with the runtime failed.
    pub fn inherited_unix(listener: std::os::unix::net::UnixListener) -> io::Result<Listener> {
        let path = listener
            .local_addr()?
            .as_pathname()
            .map(PathBuf::from)
            .unwrap_or_default();
        listener.set_nonblocking(true)?;
        Ok(Listener::InheritedUnix(
            UnixListener::from_std(listener)?,
            path,
        ))
    }

    /// The bound address, as `HOST:PORT` or `unix:PATH` (the real port when 0 was asked for).
    pub fn local_addr(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "unknown".into(), |a| a.to_string()),
            Listener::Unix(_, path) | Listener::InheritedUnix(_, path) => {
                format!("unix:{}", path.display())
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What a listener speaks, with what its sessions share.
#[derive(Clone)]
pub enum Protocol {
    /// LMTP sessions ([`session::serve`]).
    Lmtp(Arc<Shared>),
    /// Milter sessions ([`milter::serve`]).
    Milter(Arc<milter::Context>),
}

impl Protocol {
    /// `lmtp` or `milter`, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Lmtp(_) => "lmtp",
            Protocol::Milter(_) => "milter",
        }
    }

    fn config(&self) -> &Config {
        match self {
            Protocol::Lmtp(shared) => &shared.config,
            Protocol::Milter(context) => &context.shared.config,
        }
    }
}

/// Accepts LMTP sessions until `shutdown` completes, then lets open transactions finish
/// within the grace period; idle sessions get 421 at once.
pub async fn serve(listener: Listener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    serve_protocol(listener, Protocol::Lmtp(shared), shutdown).await;
}

/// Accepts `protocol` sessions until `shutdown` completes, then lets open transactions (LMTP)
/// or messages (milter) finish within the grace period; idle sessions end at once.
pub async fn serve_protocol(
    listener: Listener,
    protocol: Protocol,
    shutdown: impl Future<Output = ()>,
) {
    let config = protocol.config();
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sessions = JoinSet::new();
    let grace = config.shutdown_grace;
    let name = protocol.name();
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
            accepted = accept(&listener) => accepted,
        };
        while sessions.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let protocol = protocol.clone();
                let stop = stop_rx.clone();
                sessions.spawn(async move {
                    match (protocol, stream) {
                        (Protocol::Lmtp(shared), Accepted::Tcp(s)) => {
                            session::serve(s, peer, shared, stop).await;
                        }
                        (Protocol::Lmtp(shared), Accepted::Unix(s)) => {
                            session::serve(s, peer, shared, stop).await;
                        }
                        (Protocol::Milter(context), Accepted::Tcp(s)) => {
                            milter::serve(s, peer, context, stop).await;
                        }
                        (Protocol::Milter(context), Accepted::Unix(s)) => {
                            milter::serve(s, peer, context, stop).await;
                        }
                    }
                    drop(permit);
                });
            }
            Err(err) => {
                // Typically EMFILE: back off instead of spinning.
                error!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
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

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<(Accepted, String)> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, peer) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok((Accepted::Tcp(stream), peer.to_string()))
        }
        Listener::Unix(l, _) | Listener::InheritedUnix(l, _) => {
            let (stream, _) = l.accept().await?;
            Ok((Accepted::Unix(stream), "unix".to_string()))
        }
    }
}
