//! One session's byte I/O, shared by LMTP and the milter: the stream, its input and output
//! buffers, reads that give up on a timeout or on shutdown, and writes with a timeout. What
//! the bytes mean is the session's business.

use std::fmt;
use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use crate::shutdown::Shutdown;

/// Bytes asked of the socket per read; also the size of one LMTP DATA chunk.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// What a session does after a command.
pub(crate) enum Next {
    /// Read the next command.
    Continue,
    /// Flush the replies and close.
    Close,
}

/// Why a read brought nothing.
#[derive(Debug)]
pub(crate) enum ReadEnd {
    /// The peer closed its end (whatever is still in the input buffer stays there).
    Closed,
    /// Reading failed.
    Failed(io::Error),
    /// Nothing came within the wait.
    TimedOut,
    /// Shutdown was requested and the read was interruptible.
    Shutdown,
}

/// Why the output could not be written.
#[derive(Debug)]
pub(crate) enum WriteEnd {
    /// Writing failed.
    Failed(io::Error),
    /// The peer did not take it within the wait.
    TimedOut,
}

impl fmt::Display for WriteEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteEnd::Failed(err) => write!(f, "{err}"),
            WriteEnd::TimedOut => f.write_str("write timed out"),
        }
    }
}

/// A session's connection: the stream, what was read and not yet consumed (`input`), what is
/// queued to be written (`output`), and the shutdown signal.
pub(crate) struct Conn<S> {
    stream: S,
    /// Bytes read and not yet consumed by the session's decoder.
    pub input: BytesMut,
    /// Bytes queued for the next [`Conn::flush`].
    pub output: BytesMut,
    shutdown: Shutdown,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// A connection over `stream` with an output buffer of `output_capacity` to start with.
    pub(crate) fn new(stream: S, shutdown: Shutdown, output_capacity: usize) -> Conn<S> {
        Conn {
            stream,
            input: BytesMut::with_capacity(READ_CHUNK),
            output: BytesMut::with_capacity(output_capacity),
            shutdown,
        }
    }

    /// Shutdown was requested (the session closes once what is open is finished).
    pub(crate) fn is_shutdown(&self) -> bool {
        self.shutdown.is_shutdown()
    }

    /// Reads more input, waiting at most `wait`. Shutdown ends the wait only if
    /// `interruptible` (between transactions); otherwise it is noted ([`Conn::is_shutdown`])
    /// and the read goes on, so that what is open may finish.
    ///
    /// # Errors
    /// Nothing was read: see [`ReadEnd`].
    pub(crate) async fn read_more(
        &mut self,
        wait: Duration,
        interruptible: bool,
    ) -> Result<(), ReadEnd> {
        self.input.reserve(READ_CHUNK);
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.recv(), if !self.shutdown.is_shutdown() => {
                    if interruptible {
                        return Err(ReadEnd::Shutdown);
                    }
                }
                read = timeout(wait, self.stream.read_buf(&mut self.input)) => return match read {
                    Ok(Ok(0)) => Err(ReadEnd::Closed),
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(err)) => Err(ReadEnd::Failed(err)),
                    Err(_) => Err(ReadEnd::TimedOut),
                },
            }
        }
    }

    /// Writes the queued output in one write (simple peers such as miltertest read a packet
    /// with one `read` for its header and one for its data) within `wait`. The queue is empty
    /// afterwards, written or not.
    ///
    /// # Errors
    /// The write failed or timed out.
    pub(crate) async fn flush(&mut self, wait: Duration) -> Result<(), WriteEnd> {
        if self.output.is_empty() {
            return Ok(());
        }
        let result = timeout(wait, async {
            self.stream.write_all(&self.output).await?;
            self.stream.flush().await
        })
        .await;
        self.output.clear();
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(WriteEnd::Failed(err)),
            Err(_) => Err(WriteEnd::TimedOut),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
    use tokio::sync::watch;

    use super::*;

    const SHORT: Duration = Duration::from_millis(50);
    const LONG: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn reads_until_the_peer_closes_or_a_timeout() {
        let (ours, mut theirs) = duplex(1024);
        let (_stop, rx) = watch::channel(false);
        let mut conn = Conn::new(ours, Shutdown::new(rx), 16);
        theirs.write_all(b"hello").await.unwrap();
        conn.read_more(LONG, true).await.unwrap();
        assert_eq!(&conn.input[..], b"hello");
        assert!(matches!(
            conn.read_more(SHORT, true).await,
            Err(ReadEnd::TimedOut)
        ));
        drop(theirs);
        assert!(matches!(
            conn.read_more(LONG, true).await,
            Err(ReadEnd::Closed)
        ));
        assert_eq!(&conn.input[..], b"hello", "what was read stays");
    }

    #[tokio::test]
    async fn shutdown_interrupts_only_an_interruptible_read() {
        let (ours, mut theirs) = duplex(1024);
        let (stop, rx) = watch::channel(false);
        let mut conn = Conn::new(ours, Shutdown::new(rx), 16);
        stop.send(true).unwrap();
        // Inside a transaction: noted, and the read goes on.
        let peer = tokio::spawn(async move {
            tokio::time::sleep(SHORT).await;
            theirs.write_all(b"more").await.unwrap();
            theirs
        });
        conn.read_more(LONG, false).await.unwrap();
        assert!(conn.is_shutdown());
        assert_eq!(&conn.input[..], b"more");
        let _theirs = peer.await.unwrap();
        // Noted once: a later idle read times out rather than seeing the signal again...
        assert!(matches!(
            conn.read_more(SHORT, false).await,
            Err(ReadEnd::TimedOut)
        ));
        // ...and the session, which asks is_shutdown(), closes between transactions.
        let (ours, _theirs) = duplex(1024);
        let (stop, rx) = watch::channel(false);
        let mut idle = Conn::new(ours, Shutdown::new(rx), 16);
        stop.send(true).unwrap();
        assert!(matches!(
            idle.read_more(LONG, true).await,
            Err(ReadEnd::Shutdown)
        ));
    }

    #[tokio::test]
    async fn flush_writes_the_queue_or_times_out_and_empties_it() {
        let (ours, mut theirs) = duplex(8);
        let (_stop, rx) = watch::channel(false);
        let mut conn = Conn::new(ours, Shutdown::new(rx), 16);
        conn.output.extend_from_slice(b"250 ok\r\n");
        conn.flush(LONG).await.unwrap();
        assert!(conn.output.is_empty());
        let mut got = [0u8; 8];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"250 ok\r\n");
        // A peer that does not read: the duplex holds 8 bytes.
        conn.output.extend_from_slice(&[b'x'; 64]);
        assert!(matches!(conn.flush(SHORT).await, Err(WriteEnd::TimedOut)));
        assert!(conn.output.is_empty());
    }
}
