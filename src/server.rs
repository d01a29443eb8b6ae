//! The listeners (LMTP, milter): accept loop with a connection limit, one task per session,
//! graceful shutdown with a grace period.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::lmtp::{self, session};
use crate::milter;
use crate::net::Address;

/// A bound listening socket.
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A unix socket sealgate created; its file is removed when the listener is dropped, if
    /// it is still the same file.
    Unix(UnixListener, SocketFile),
    /// A unix socket inherited from systemd (socket activation): its file belongs to systemd,
    /// which keeps listening on it while sealgate restarts, so it stays.
    InheritedUnix(UnixListener, PathBuf),
}

/// The file of a unix socket sealgate bound: its path and identity (device, inode), so that
/// only this file is ever removed, not whatever someone put at the path since.
pub struct SocketFile {
    path: PathBuf,
    identity: (u64, u64),
}

impl SocketFile {
    fn identity(path: &Path) -> io::Result<(u64, u64)> {
        std::fs::symlink_metadata(path).map(|m| (m.dev(), m.ino()))
    }
}

impl Listener {
    /// Binds `addr`. For a unix socket: a stale socket at the path (nothing accepts on it) is
    /// replaced; a live socket or anything that is not a socket is an error and stays. The new
    /// socket gets `mode`, and when sealgate runs as root, the owner and group of its
    /// directory (Postfix's `private/` is owned by `postfix`, whose processes must connect).
    ///
    /// # Errors
    /// The path is taken, or the bind, chmod or chown failed.
    pub async fn bind(addr: &Address, mode: u32) -> io::Result<Listener> {
        match addr {
            Address::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr.as_str()).await?)),
            Address::Unix(path) => {
                remove_stale_socket(path)?;
                let listener = UnixListener::bind(path)?;
                let file = SocketFile {
                    identity: SocketFile::identity(path)?,
                    path: path.clone(),
                };
                // From here on, dropping `bound` removes the file again on an error.
                let bound = Listener::Unix(listener, file);
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
                if rustix::process::geteuid().is_root() {
                    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                    let dir = std::fs::metadata(dir.unwrap_or(Path::new(".")))?;
                    std::os::unix::fs::chown(path, Some(dir.uid()), Some(dir.gid()))?;
                }
                Ok(bound)
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
            Listener::Unix(_, SocketFile { path, .. }) | Listener::InheritedUnix(_, path) => {
                format!("unix:{}", path.display())
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, file) = self {
            // Someone may have replaced it since (another instance, Postfix): leave theirs.
            if SocketFile::identity(&file.path).ok() == Some(file.identity) {
                let _ = std::fs::remove_file(&file.path);
            }
        }
    }
}

/// Clears the way for a new unix socket at `path`: nothing there is fine; a socket nobody
/// accepts on (ECONNREFUSED: left over from a crash) is removed. Anything else stays, and the
/// error says what is in the way.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
        Ok(meta) => meta,
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; sealgate does not replace it",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{} is a socket another process listens on (another sealgate, or Postfix's \
                 master for a master.cf service of that name); sealgate does not replace it",
                path.display()
            ),
        )),
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(err) => Err(io::Error::new(
            err.kind(),
            format!(
                "{}: cannot tell whether it is in use: {err}",
                path.display()
            ),
        )),
    }
}

/// What a listener speaks, with what its sessions share.
#[derive(Clone)]
pub enum Protocol {
    /// LMTP sessions ([`session::serve`]).
    Lmtp(Arc<lmtp::Context>),
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
            Protocol::Milter(context) => &context.config,
        }
    }
}

/// Accepts LMTP sessions until `shutdown` completes, then lets open transactions finish
/// within the grace period; idle sessions get 421 at once.
pub async fn serve(
    listener: Listener,
    shared: Arc<lmtp::Context>,
    shutdown: impl Future<Output = ()>,
) {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn unix(path: &Path) -> Address {
        Address::Unix(path.to_path_buf())
    }

    #[tokio::test]
    async fn a_file_at_the_listen_path_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lmtp");
        std::fs::write(&path, "precious").unwrap();
        let err = Listener::bind(&unix(&path), 0o660).await.err().unwrap();
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    }

    #[tokio::test]
    async fn a_live_socket_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lmtp");
        let other = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = Listener::bind(&unix(&path), 0o660).await.err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        // Still the other process's socket: it still accepts.
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        drop(other);
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_removed_at_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lmtp");
        // A listener that is gone leaves its file behind: connect gets ECONNREFUSED.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let listener = Listener::bind(&unix(&path), 0o600).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        drop(listener);
        assert!(!path.exists(), "our own socket is removed on exit");
    }

    #[tokio::test]
    async fn exit_leaves_a_file_someone_else_put_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lmtp");
        let listener = Listener::bind(&unix(&path), 0o660).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        let theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(listener);
        assert!(path.exists(), "another process's socket must stay");
        drop(theirs);
    }
}
