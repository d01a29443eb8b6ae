//! systemd integration, without libsystemd: listening sockets handed over by socket activation
//! (sd_listen_fds(3): `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`, descriptors from 3 on)
//! and readiness notification (sd_notify(3): a datagram to `$NOTIFY_SOCKET`).
//!
//! A module of the binary, not the library: only `main` reads the process environment.

use std::ffi::OsString;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs as _};
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{self, UnixDatagram, UnixListener};
use std::path::Path;

use sealgate::net::Address;

/// A listener sealgate has, and what systemd may hand it.
pub(crate) struct Role<'a> {
    /// The descriptor name that selects it (`FileDescriptorName=` in the socket unit).
    pub(crate) name: &'static str,
    /// The variable that configures it, for messages.
    pub(crate) variable: &'static str,
    /// The configured address; `None` when the listener is off.
    pub(crate) address: Option<&'a Address>,
}

/// A listening socket inherited from systemd.
#[derive(Debug)]
pub(crate) enum Inherited {
    /// A TCP socket (`ListenStream=HOST:PORT`).
    Tcp(TcpListener),
    /// A unix stream socket (`ListenStream=/path`); its file belongs to systemd.
    Unix(UnixListener),
}

/// Takes the sockets systemd passed to this process and assigns them to `roles`: a descriptor
/// named like a role goes to it; the others, in order, to the roles still without one. Each
/// must be bound to the address its role's variable names.
///
/// Returns one entry per role, `None` where systemd passed nothing (sealgate binds it then).
/// Not socket-activated (no `LISTEN_PID` for this process): all `None`.
///
/// # Errors
/// A malformed environment, more sockets than roles, a socket for a role that is off, one
/// that is not a TCP or unix stream socket, or one bound elsewhere than configured: a message
/// for the operator (exit status 78).
pub(crate) fn take_listeners(roles: &[Role<'_>]) -> Result<Vec<Option<Inherited>>, String> {
    let passed = sd_listen_fds::get()
        .map_err(|err| format!("socket activation: {err} (LISTEN_PID, LISTEN_FDS)"))?;
    let names: Vec<Option<&str>> = passed.iter().map(|(name, _)| name.as_deref()).collect();
    let role_names: Vec<&str> = roles.iter().map(|r| r.name).collect();
    let assigned = assign(&names, &role_names)?;
    let mut out: Vec<Option<Inherited>> = roles.iter().map(|_| None).collect();
    for ((name, fd), role_index) in passed.into_iter().zip(assigned) {
        let role = &roles[role_index];
        let fd: OwnedFd = fd.into_std();
        let number = {
            use std::os::fd::AsRawFd as _;
            fd.as_raw_fd()
        };
        let what = match &name {
            Some(name) => format!("the socket systemd passed as fd {number} (named {name:?})"),
            None => format!("the socket systemd passed as fd {number}"),
        };
        let Some(address) = role.address else {
            return Err(format!(
                "{what} is for the {} listener, but {} is off: set it to the socket's address, \
                 or disable the socket unit",
                role.name, role.variable
            ));
        };
        let inherited = classify(fd).map_err(|err| format!("{what}: {err}"))?;
        let actual = match &inherited {
            Inherited::Tcp(l) => l.local_addr().map(|a| a.to_string()),
            Inherited::Unix(l) => l.local_addr().map(|a| {
                a.as_pathname()
                    .map_or("(unnamed)".into(), |p| format!("unix:{}", p.display()))
            }),
        }
        .unwrap_or_else(|err| format!("(unknown: {err})"));
        if !same_socket(address, &inherited) {
            return Err(format!(
                "{what} is {actual}, but {}={address}: make the socket unit and {} name the \
                 same socket",
                role.variable, role.variable
            ));
        }
        out[role_index] = Some(inherited);
    }
    Ok(out)
}

/// Which role each passed descriptor goes to (by index into `roles`). Names first: a
/// descriptor named like a role takes it (twice the same name is an error); the unnamed ones
/// and those with other names (systemd's default is the socket unit's name) take the
/// remaining roles in order.
fn assign(names: &[Option<&str>], roles: &[&str]) -> Result<Vec<usize>, String> {
    let mut taken = vec![false; roles.len()];
    let mut out: Vec<Option<usize>> = vec![None; names.len()];
    for (fd, name) in names.iter().enumerate() {
        if let Some(role) = name.and_then(|n| roles.iter().position(|r| *r == n)) {
            if taken[role] {
                return Err(format!(
                    "systemd passed two sockets named {:?} (FileDescriptorName=)",
                    roles[role]
                ));
            }
            taken[role] = true;
            out[fd] = Some(role);
        }
    }
    for slot in out.iter_mut().filter(|slot| slot.is_none()) {
        let Some(role) = taken.iter().position(|t| !t) else {
            return Err(format!(
                "systemd passed {} sockets; sealgate has {} listeners ({})",
                names.len(),
                roles.len(),
                roles.join(", ")
            ));
        };
        taken[role] = true;
        *slot = Some(role);
    }
    Ok(out.into_iter().flatten().collect())
}

/// The socket behind `fd`: TCP or unix, told apart by the address family `getsockname`
/// reports. The returned listener has its own descriptor, marked close-on-exec (systemd
/// passes them without the flag), and is in blocking mode as std creates them.
fn classify(fd: OwnedFd) -> io::Result<Inherited> {
    // try_clone duplicates with F_DUPFD_CLOEXEC; the original is closed when `fd` drops.
    let fd = fd.try_clone()?;
    let tcp = TcpListener::from(fd);
    if tcp.local_addr().is_ok() {
        return Ok(Inherited::Tcp(tcp));
    }
    let unix = UnixListener::from(OwnedFd::from(tcp));
    match unix.local_addr() {
        Ok(_) => Ok(Inherited::Unix(unix)),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither a TCP nor a unix socket",
        )),
    }
}

/// Whether the inherited socket is the one `address` names: the same unix path (or the same
/// file, through symlinked directories), or a TCP address `address` resolves to.
fn same_socket(address: &Address, inherited: &Inherited) -> bool {
    match (address, inherited) {
        (Address::Unix(path), Inherited::Unix(listener)) => listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            .is_some_and(|actual| same_path(path, &actual)),
        (Address::Tcp(spec), Inherited::Tcp(listener)) => {
            let Ok(actual) = listener.local_addr() else {
                return false;
            };
            spec.as_str()
                .to_socket_addrs()
                .is_ok_and(|mut addrs| addrs.any(|a| same_addr(a, actual)))
        }
        _ => false,
    }
}

/// Equal paths, or equal after resolving the directories (`/var/run` is `/run`).
fn same_path(configured: &Path, actual: &Path) -> bool {
    if configured == actual {
        return true;
    }
    let resolve = |p: &Path| {
        let dir = p.parent()?.canonicalize().ok()?;
        Some(dir.join(p.file_name()?))
    };
    resolve(configured).is_some_and(|c| Some(c) == resolve(actual))
}

/// Equal socket addresses, an IPv4 one also matching its IPv4-mapped IPv6 form.
fn same_addr(configured: SocketAddr, actual: SocketAddr) -> bool {
    let canonical = |a: SocketAddr| (a.ip().to_canonical(), a.port());
    canonical(configured) == canonical(actual)
}

/// Sends `state` (e.g. `READY=1`) to the service manager when it asked for notifications
/// (`$NOTIFY_SOCKET`, a path or an abstract name starting with `@`). Returns whether it did.
///
/// # Errors
/// The socket could not be created or the datagram not sent.
#[allow(
    clippy::disallowed_methods,
    reason = "NOTIFY_SOCKET is the service manager's protocol, not a setting"
)]
pub(crate) fn notify(state: &str) -> io::Result<bool> {
    notify_to(std::env::var_os("NOTIFY_SOCKET"), state)
}

fn notify_to(socket: Option<OsString>, state: &str) -> io::Result<bool> {
    let Some(target) = socket.filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    let datagram = UnixDatagram::unbound()?;
    match target.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            let address = net::SocketAddr::from_abstract_name(name)?;
            datagram.send_to_addr(state.as_bytes(), &address)?;
        }
        None => {
            datagram.send_to(state.as_bytes(), Path::new(&target))?;
        }
    }
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ROLES: [&str; 2] = ["lmtp", "milter"];

    #[test]
    fn names_pick_their_listener_in_any_order() {
        assert_eq!(
            assign(&[Some("milter"), Some("lmtp")], &ROLES),
            Ok(vec![1, 0])
        );
        assert_eq!(assign(&[Some("lmtp")], &ROLES), Ok(vec![0]));
        assert_eq!(assign(&[Some("milter")], &ROLES), Ok(vec![1]));
    }

    #[test]
    fn unnamed_ones_go_to_lmtp_first_then_the_milter() {
        assert_eq!(assign(&[None], &ROLES), Ok(vec![0]));
        assert_eq!(assign(&[None, None], &ROLES), Ok(vec![0, 1]));
        // systemd's default name is the socket unit's.
        assert_eq!(
            assign(&[Some("sealgate.socket"), Some("sealgate.socket")], &ROLES),
            Ok(vec![0, 1])
        );
        // A named one takes its listener; the unnamed one gets what is left.
        assert_eq!(assign(&[None, Some("lmtp")], &ROLES), Ok(vec![1, 0]));
        assert_eq!(assign(&[], &ROLES), Ok(vec![]));
    }

    #[test]
    fn too_many_or_duplicate_names_are_errors() {
        assert!(assign(&[None, None, None], &ROLES).is_err());
        assert!(assign(&[Some("lmtp"), Some("lmtp")], &ROLES).is_err());
        assert!(assign(&[Some("lmtp"), Some("milter"), None], &ROLES).is_err());
    }

    #[test]
    fn sockets_match_their_configured_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lmtp");
        let unix = Inherited::Unix(UnixListener::bind(&path).unwrap());
        assert!(same_socket(&Address::Unix(path.clone()), &unix));
        assert!(same_socket(
            &Address::Unix(dir.path().join(".").join("lmtp")),
            &unix
        ));
        assert!(!same_socket(
            &Address::Unix(dir.path().join("other")),
            &unix
        ));
        assert!(!same_socket(&Address::Tcp("127.0.0.1:10024".into()), &unix));

        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        let tcp = Inherited::Tcp(tcp);
        assert!(same_socket(
            &Address::Tcp(format!("127.0.0.1:{port}")),
            &tcp
        ));
        assert!(same_socket(
            &Address::Tcp(format!("localhost:{port}")),
            &tcp
        ));
        assert!(!same_socket(
            &Address::Tcp(format!("127.0.0.1:{}", port ^ 1)),
            &tcp
        ));
        assert!(!same_socket(&Address::Unix(path), &tcp));
    }

    #[test]
    fn classify_tells_tcp_from_unix() {
        let dir = tempfile::tempdir().unwrap();
        let unix = UnixListener::bind(dir.path().join("s")).unwrap();
        assert!(matches!(
            classify(OwnedFd::from(unix)),
            Ok(Inherited::Unix(_))
        ));
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(matches!(
            classify(OwnedFd::from(tcp)),
            Ok(Inherited::Tcp(_))
        ));
        let datagram = UnixDatagram::unbound().unwrap();
        // An unbound datagram socket has an (unnamed) unix address: it passes as unix; systemd
        // only passes what a ListenStream= created.
        assert!(classify(OwnedFd::from(datagram)).is_ok());
    }

    #[test]
    fn notify_reaches_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        assert!(notify_to(Some(path.clone().into_os_string()), "READY=1").unwrap());
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("sealgate-test-{}", std::process::id());
        let abstract_addr = net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        assert!(notify_to(Some(format!("@{name}").into()), "STOPPING=1").unwrap());
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        assert!(!notify_to(None, "READY=1").unwrap());
        assert!(!notify_to(Some(OsString::new()), "READY=1").unwrap());
    }
}
