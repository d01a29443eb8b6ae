//! Addresses and sockets: where sealgate listens and where it connects, one type for both.

use std::fmt;
use std::path::PathBuf;

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
