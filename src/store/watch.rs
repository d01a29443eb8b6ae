//! The one reload watcher: a poller thread per on-disk store and the SIGHUP path, both calling
//! the store's [`Reload::reload_logged`], so a store is re-read and logged the same way
//! whatever asked. The racy-stamp rule every file store follows is here too.

use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, SystemTime};

use tracing::{error, warn};

/// A file or directory modified less than this before its stamp (or cert-d tag) was read may
/// change again within the same coarse file-system timestamp without changing the stamp; such
/// a reading is not trusted, and the next reload reads again even if the stamp looks
/// unchanged. See [`racy`].
pub const RACY_MARGIN: Duration = Duration::from_secs(2);

/// Shortest interval [`watch`] polls at; shorter requests are raised to this.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Whether a reading stamped with `modified` is too close to `sampled` (the clock, read before
/// the stamp) to be trusted.
///
/// Implementation note: file-system timestamps are coarse (one clock tick, up to a second on
/// some file systems). If something was modified within [`RACY_MARGIN`] before we sampled the
/// clock, a second change in the same tick would leave the stamp as it is, so we don't trust
/// this stamp (as git does with its "racily clean" index entries).
pub fn racy(modified: SystemTime, sampled: SystemTime) -> bool {
    modified + RACY_MARGIN > sampled
}

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The poller: re-read only what changed, log only changes and errors.
    Poll,
    /// SIGHUP: re-read everything, log the outcome either way.
    Signal,
}

/// A store kept in memory and re-read from disk.
pub trait Reload: Send + Sync + 'static {
    /// What the store is called in logs ("key store").
    fn what(&self) -> &'static str;

    /// The poller thread's name.
    fn thread_name(&self) -> &'static str;

    /// Whether there is anything on disk to poll (a store without a file has none).
    fn watched(&self) -> bool {
        true
    }

    /// Re-reads the store as `trigger` asks and logs the outcome; a failure keeps the
    /// previous contents. Blocking I/O: call it from a plain thread or `spawn_blocking`.
    fn reload_logged(&self, trigger: Trigger);
}

/// Starts a background thread that reloads `store` every `interval` (at least
/// [`MIN_WATCH_INTERVAL`]). Returns at once; the thread ends when the last other `Arc` to the
/// store is dropped. Does nothing for a store with nothing to watch.
pub fn watch(store: Arc<dyn Reload>, interval: Duration) {
    if !store.watched() {
        return;
    }
    let interval = interval.max(MIN_WATCH_INTERVAL);
    let what = store.what();
    let name = store.thread_name();
    let weak: Weak<dyn Reload> = Arc::downgrade(&store);
    drop(store);
    let spawned = thread::Builder::new().name(name.into()).spawn(move || {
        loop {
            thread::sleep(interval);
            let Some(store) = weak.upgrade() else {
                break;
            };
            store.reload_logged(Trigger::Poll);
        }
    });
    if let Err(err) = spawned {
        error!(%err, "cannot start the {what} watcher");
    }
}

/// The SIGHUP path: re-reads every one of `stores`, in order, off the protocol tasks.
pub async fn reload_all(stores: &[Arc<dyn Reload>]) {
    for store in stores {
        let what = store.what();
        let store = Arc::clone(store);
        if let Err(err) =
            tokio::task::spawn_blocking(move || store.reload_logged(Trigger::Signal)).await
        {
            warn!(%err, "{what} reload task failed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A store that records what asked it to reload.
    struct Recorder(&'static str, Arc<Mutex<Vec<(&'static str, Trigger)>>>);

    impl Reload for Recorder {
        fn what(&self) -> &'static str {
            self.0
        }

        fn thread_name(&self) -> &'static str {
            "sealgate-test"
        }

        fn reload_logged(&self, trigger: Trigger) {
            self.1.lock().unwrap().push((self.0, trigger));
        }
    }

    #[test]
    fn a_stamp_within_the_margin_is_racy() {
        let now = SystemTime::now();
        assert!(racy(now, now));
        assert!(racy(now - RACY_MARGIN / 2, now));
        assert!(!racy(now - RACY_MARGIN, now));
        assert!(!racy(now - 10 * RACY_MARGIN, now));
    }

    #[tokio::test]
    async fn sighup_reloads_every_store_in_order_as_a_signal() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stores: Vec<Arc<dyn Reload>> = vec![
            Arc::new(Recorder("first", Arc::clone(&seen))),
            Arc::new(Recorder("second", Arc::clone(&seen))),
        ];
        reload_all(&stores).await;
        assert_eq!(
            *seen.lock().unwrap(),
            [("first", Trigger::Signal), ("second", Trigger::Signal)]
        );
    }

    #[test]
    fn the_poller_reloads_and_ends_with_the_last_arc() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::new(Recorder("polled", Arc::clone(&seen)));
        watch(Arc::clone(&store) as _, MIN_WATCH_INTERVAL);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "no poll");
            thread::sleep(MIN_WATCH_INTERVAL / 2);
        }
        assert_eq!(seen.lock().unwrap()[0], ("polled", Trigger::Poll));
        let weak = Arc::downgrade(&store);
        drop(store);
        // The thread holds only a Weak between polls: the store goes with the last Arc (once a
        // poll in progress is over).
        while weak.upgrade().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the poller keeps the store"
            );
            thread::sleep(MIN_WATCH_INTERVAL / 2);
        }
    }
}
