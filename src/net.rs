//! Addresses and sockets: where sealgate listens and where it connects, one type for both;
//! the one listener type (LMTP, milter, HTTP), the one stream type sessions get, and the one
//! connector (the next hop, the readiness probe).

use std::fmt;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::time::timeout;

/// A socket address in the configuration's syntax: a listener binds it, a client connects to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `HOST:PORT`; a listener given port 0 asks the kernel for a free one (tests).
    Tcp(String),
    /// `unix:PATH`. A listener replaces a stale socket file (nothing listening) at start,
    /// refuses anything else there, and removes the socket at exit if it is still sealgate's.
    Unix(PathBuf),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(addr) => f.write_str(addr),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A connected stream, TCP or unix: what a session or a client talks over.
pub type BoxStream = Box<dyn Stream>;

/// What [`BoxStream`] can do.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Why [`connect`] brought no stream.
#[derive(Debug)]
pub enum ConnectError {
    /// No connection within the wait.
    TimedOut,
    /// The connection was refused or failed.
    Failed(io::Error),
}

/// Connects to `addr` within `wait` (TCP without Nagle's delay: commands and replies are
/// small).
///
/// # Errors
/// See [`ConnectError`].
pub async fn connect(addr: &Address, wait: Duration) -> Result<BoxStream, ConnectError> {
    let connected = match addr {
        Address::Tcp(addr) => timeout(wait, TcpStream::connect(addr.as_str()))
            .await
            .map(|r| {
                r.map(|stream| {
                    let _ = stream.set_nodelay(true);
                    Box::new(stream) as BoxStream
                })
            }),
        Address::Unix(path) => timeout(wait, UnixStream::connect(path))
            .await
            .map(|r| r.map(|stream| Box::new(stream) as BoxStream)),
    };
    match connected {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(err)) => Err(ConnectError::Failed(err)),
        Err(_) => Err(ConnectError::TimedOut),
    }
}

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

    /// Accepts one connection: the stream and the peer (`IP:PORT`, or `unix`).
    ///
    /// # Errors
    /// Accepting failed (typically EMFILE: out of file descriptors).
    pub async fn accept(&self) -> io::Result<(BoxStream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok((Box::new(stream), peer.to_string()))
            }
            Listener::Unix(l, _) | Listener::InheritedUnix(l, _) => {
                let (stream, _) = l.accept().await?;
                Ok((Box::new(stream), "unix".to_string()))
            }
        }
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
