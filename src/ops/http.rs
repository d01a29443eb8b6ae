//! The operations endpoint (`SEALGATE_METRICS_LISTEN`): a minimal HTTP/1.1 server for
//! Prometheus scrapes (`/metrics`) and health probes (`/healthz`, `/readyz`).
//!
//! One request per connection, answered with `Connection: close`; the request head is bounded
//! ([`MAX_REQUEST_HEAD`]) and must arrive within [`REQUEST_TIMEOUT`]; a request body is never
//! read. `GET` (and `HEAD`, which RFC 9110 requires alongside it) only: other methods get 405,
//! unknown paths 404.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prometheus::{Encoder, Registry, TextEncoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio::time::timeout;
use tracing::{debug, error};

use crate::config::NextHopAddr;
use crate::delivery;
use crate::net::Listener;
use crate::server::{self, Limits};
use crate::store::keys::KeyStore;
use crate::store::postgres::PgKeyStore;

/// Largest request head (request line and header fields) in octets; a larger one gets
/// `431 Request Header Fields Too Large`.
pub(crate) const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// How long a client may take to send its request head; then `408 Request Timeout`. Writing
/// the response gets as long again.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Concurrent HTTP connections; at the limit the listener stops accepting until one ends.
pub(crate) const MAX_CONNECTIONS: usize = 16;

/// How long the readiness probe waits for the next hop to accept a connection.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a readiness probe's result is reused, so frequent `/readyz` requests do not hammer
/// the next hop.
pub(crate) const PROBE_CACHE: Duration = Duration::from_secs(2);

/// The `Content-Type` of the Prometheus text exposition format.
pub(crate) const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/readyz` checks: the listeners serve, the key store is loaded, the next hop can be
/// reached.
pub(crate) struct Readiness {
    serving: AtomicBool,
    keystore: AtomicBool,
    /// The loaded key store, whose problems make us unready.
    store: std::sync::OnceLock<Arc<KeyStore>>,
    /// The key database, whose health makes us unready.
    database: std::sync::OnceLock<Arc<PgKeyStore>>,
    next_hop: NextHopAddr,
    /// The last next-hop probe and when it ran; the lock also makes concurrent requests wait
    /// for one probe instead of starting their own.
    probed: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    /// Nothing is ready yet; `next_hop` is probed on request.
    pub(crate) fn new(next_hop: NextHopAddr) -> Readiness {
        Readiness {
            serving: AtomicBool::new(false),
            keystore: AtomicBool::new(false),
            store: std::sync::OnceLock::new(),
            database: std::sync::OnceLock::new(),
            next_hop,
            probed: Mutex::new(None),
        }
    }

    /// The listeners are bound and accepting (`true`), or shutting down (`false`).
    pub(crate) fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
    }

    /// The key store has been loaded.
    pub(crate) fn set_keystore_loaded(&self, loaded: bool) {
        self.keystore.store(loaded, Ordering::Relaxed);
    }

    /// The key store is loaded; from now on each of its [`KeyStore::problems`] is a failure.
    pub(crate) fn set_keystore(&self, keys: Arc<KeyStore>) {
        let _ = self.store.set(keys);
        self.set_keystore_loaded(true);
    }

    /// The key store is a database: from now on, a database that does not answer is a
    /// failure (its recipients get 451 once the cached answers are too old).
    pub(crate) fn set_key_database(&self, database: Arc<PgKeyStore>) {
        let _ = self.database.set(database);
        self.set_keystore_loaded(true);
    }

    /// The checks that fail right now, one line each; empty when ready.
    pub(crate) async fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if !self.serving.load(Ordering::Relaxed) {
            failures.push("listeners: not serving (starting or shutting down)".to_string());
        }
        if !self.keystore.load(Ordering::Relaxed) {
            failures.push("key store: not loaded".to_string());
        }
        if let Some(keys) = self.store.get() {
            for problem in keys.problems() {
                let effect = if problem.blind {
                    "recipients without a usable key get 451"
                } else {
                    "its last good certificate is still used"
                };
                failures.push(format!("key store: {problem} ({effect})"));
            }
        }
        if let Some(database) = self.database.get() {
            let health = database.health();
            if !health.up {
                let since = health
                    .since_contact
                    .map_or("never answered".to_string(), |t| {
                        format!("last answered {} s ago", t.as_secs())
                    });
                let why = health.error.unwrap_or_else(|| "connecting".to_string());
                failures.push(format!(
                    "key database {}: {why} ({since}; cached answers are used for up to {} s, \
                     then recipients get 451)",
                    database.location(),
                    database.max_stale().as_secs()
                ));
            }
        }
        if let Err(why) = self.next_hop_reachable().await {
            failures.push(format!("next hop {}: {why}", self.next_hop));
        }
        failures
    }

    async fn next_hop_reachable(&self) -> Result<(), String> {
        let mut probed = self.probed.lock().await;
        if let Some((at, result)) = probed.as_ref()
            && at.elapsed() < PROBE_CACHE
        {
            return result.clone();
        }
        let result = delivery::probe(&self.next_hop, PROBE_TIMEOUT).await;
        *probed = Some((Instant::now(), result.clone()));
        result
    }
}

/// Serves `/metrics` (from `registry`), `/healthz` and `/readyz` (from `readiness`) on
/// `listener` until `shutdown` completes; open requests are then cut.
pub(crate) async fn serve(
    listener: Listener,
    registry: Registry,
    readiness: Arc<Readiness>,
    shutdown: impl Future<Output = ()>,
) {
    let registry = Arc::new(registry);
    let limits = Limits {
        protocol: "http",
        max_connections: MAX_CONNECTIONS,
        grace: None,
    };
    server::serve(listener, limits, shutdown, |stream, _peer, _shutdown| {
        let registry = Arc::clone(&registry);
        let readiness = Arc::clone(&readiness);
        async move { handle(stream, &registry, &readiness).await }
    })
    .await;
}

/// A response: status, content type, body.
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// Added as `Allow:` (405 only).
    allow: Option<&'static str>,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
            allow: None,
        }
    }

    fn encode(&self, with_body: bool) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if let Some(allow) = self.allow {
            head.push_str(&format!("Allow: {allow}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if with_body {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// Why no request head could be read.
enum HeadError {
    /// Over [`MAX_REQUEST_HEAD`].
    TooLarge,
    /// The client closed or the socket failed before the head was complete.
    Gone,
}

/// Reads up to the empty line that ends the request head.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| HeadError::Gone)?;
        if n == 0 {
            return Err(HeadError::Gone);
        }
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        let end = memchr::memmem::find(&head[from..], b"\r\n\r\n")
            .map(|i| from + i)
            .or_else(|| memchr::memmem::find(&head[from..], b"\n\n").map(|i| from + i));
        if let Some(end) = end {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

async fn handle<S>(mut stream: S, registry: &Registry, readiness: &Readiness)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (response, with_body) = match timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => respond(&head, registry, readiness).await,
        Ok(Err(HeadError::TooLarge)) => (Response::text(431, "request head too large\n"), true),
        Ok(Err(HeadError::Gone)) => return,
        Err(_) => (Response::text(408, "request timeout\n"), true),
    };
    let written = timeout(REQUEST_TIMEOUT, async {
        stream.write_all(&response.encode(with_body)).await?;
        stream.shutdown().await
    })
    .await;
    if let Ok(Err(err)) = written
        && err.kind() != io::ErrorKind::BrokenPipe
    {
        debug!(protocol = "http", %err, "writing the response failed");
    }
}

/// The response to a complete request head, and whether it carries its body (not for HEAD).
async fn respond(head: &[u8], registry: &Registry, readiness: &Readiness) -> (Response, bool) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (Response::text(400, "bad request\n"), true);
    };
    if !version.starts_with("HTTP/1.") {
        return (Response::text(400, "bad request\n"), true);
    }
    let with_body = method != "HEAD";
    if method != "GET" && method != "HEAD" {
        let mut response = Response::text(405, "method not allowed\n");
        response.allow = Some("GET, HEAD");
        return (response, true);
    }
    let path = target.split('?').next().unwrap_or_default();
    let response = match path {
        "/metrics" => metrics(registry),
        "/healthz" => Response::text(200, "ok\n"),
        "/readyz" => {
            let failures = readiness.failures().await;
            if failures.is_empty() {
                Response::text(200, "ready\n")
            } else {
                let mut body = failures.join("\n");
                body.push('\n');
                Response::text(503, body)
            }
        }
        _ => Response::text(404, "not found\n"),
    };
    debug!(
        protocol = "http",
        method,
        path,
        status = response.status,
        "request"
    );
    (response, with_body)
}

fn metrics(registry: &Registry) -> Response {
    let mut body = Vec::with_capacity(16 * 1024);
    match TextEncoder::new().encode(&registry.gather(), &mut body) {
        Ok(()) => Response {
            status: 200,
            content_type: METRICS_CONTENT_TYPE,
            body,
            allow: None,
        },
        Err(err) => {
            error!(%err, "cannot encode the metrics");
            Response::text(500, "cannot encode the metrics\n")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::net::Address;
    use tokio::net::TcpStream;

    async fn request(addr: std::net::SocketAddr, raw: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn routes_methods_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new();
        let counter = prometheus::IntCounter::new("sealgate_test_total", "test").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc();
        let readiness = Arc::new(Readiness::new(NextHopAddr::Maildir(dir.path().join("m"))));
        let listener = Listener::bind(&Address::Tcp("127.0.0.1:0".into()), 0)
            .await
            .unwrap();
        let addr = listener.local_addr().parse().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, registry, Arc::clone(&readiness), async {
            let _ = stopped.await;
        }));

        let metrics = request(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(metrics.contains("Connection: close\r\n"));
        assert!(metrics.ends_with("sealgate_test_total 1\n"), "{metrics}");

        let health = request(addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
        assert!(health.starts_with("HTTP/1.1 200 OK\r\n") && health.ends_with("\r\n\r\nok\n"));

        let ready = request(addr, b"GET /readyz HTTP/1.1\r\n\r\n").await;
        assert!(ready.starts_with("HTTP/1.1 503 "), "{ready}");
        assert!(ready.contains("listeners: not serving"), "{ready}");
        assert!(ready.contains("key store: not loaded"), "{ready}");
        assert!(!ready.contains("next hop"), "{ready}");
        readiness.set_serving(true);
        readiness.set_keystore_loaded(true);
        let ready = request(addr, b"GET /readyz?verbose HTTP/1.1\r\n\r\n").await;
        assert!(ready.starts_with("HTTP/1.1 200 OK\r\n"), "{ready}");
        assert!(dir.path().join("m").is_dir());

        let head = request(addr, b"HEAD /healthz HTTP/1.1\r\n\r\n").await;
        assert!(head.contains("Content-Length: 3\r\n") && head.ends_with("\r\n\r\n"));
        let missing = request(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = request(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD\r\n"));
        let bad = request(addr, b"GARBAGE\r\n\r\n").await;
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
        let mut huge = b"GET / HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_REQUEST_HEAD + 10));
        let huge = request(addr, &huge).await;
        assert!(huge.starts_with("HTTP/1.1 431 "), "{huge}");

        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn next_hop_probe_and_cache() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let readiness = Readiness::new(NextHopAddr::Lmtp(Address::Tcp(addr)));
        readiness.set_serving(true);
        readiness.set_keystore_loaded(true);
        assert!(readiness.failures().await.is_empty());
        drop(listener);
        // Cached for PROBE_CACHE.
        assert!(readiness.failures().await.is_empty());
        *readiness.probed.lock().await = None;
        let failures = readiness.failures().await;
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("cannot connect"), "{failures:?}");
    }
}
