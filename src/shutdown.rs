//! "Are we stopping?": one session's view of the process-wide shutdown signal (the shape of
//! mini-redis' `Shutdown`).

use tokio::sync::watch;

/// Listens for the shutdown signal; remembers that it came.
#[derive(Debug)]
pub(crate) struct Shutdown {
    rx: watch::Receiver<bool>,
    /// The signal came: the session finishes what is open and then closes.
    draining: bool,
}

impl Shutdown {
    /// Watches `rx`, which becomes `true` (or whose sender is dropped) when the process stops.
    pub(crate) fn new(rx: watch::Receiver<bool>) -> Shutdown {
        Shutdown {
            rx,
            draining: false,
        }
    }

    /// The signal has been received (by [`Shutdown::recv`]).
    pub(crate) fn is_shutdown(&self) -> bool {
        self.draining
    }

    /// Waits for the signal (at once if it was already received).
    pub(crate) async fn recv(&mut self) {
        if self.draining {
            return;
        }
        // An error means the sender is gone, which is as final as the signal.
        let _ = self.rx.changed().await;
        self.draining = true;
    }
}

impl From<watch::Receiver<bool>> for Shutdown {
    fn from(rx: watch::Receiver<bool>) -> Shutdown {
        Shutdown::new(rx)
    }
}
