//! The HTTP shard: HTTP/1.1 on one glommio executor, parsed and framed by hyper, answering the app's JSON
//! routes and the public directory.
//!
//! This module owns the listener's accept loop, one detached task per connection, the connection's
//! timeouts and the graceful stop. It must not decide what a request gets (that is `routes.rs`, which hands
//! files to `static_files.rs`) and must not parse HTTP itself: hyper does.
//!
//! hyper is runtime-agnostic, so two small adapters connect it to glommio:
//! - [`Socket`] implements `hyper::rt::Read`/`Write` over `glommio::net::TcpStream`'s futures-lite poll
//!   methods, reading straight into hyper's buffer.
//! - [`ShardTimer`] implements `hyper::rt::Timer` with `glommio::timer::Timer`.
//!
//! Timeouts. hyper's http1 server has a single timer, `header_read_timeout`, and it arms it both for a
//! request head and for the idle wait on a keep-alive connection before the next one. Used as is, an idle
//! connection would be closed after `SERVER_REQUEST_TIMEOUT` and `SERVER_SESSION_TIMEOUT_SEC` would mean
//! nothing. So the timer tells the two apart (as Go's and Envoy's servers do): the first head must arrive
//! within the request timeout from accept; after a response, the connection may stay idle for the session
//! timeout, and once the next request's first bytes arrive its head must be complete within the request
//! timeout. It knows when bytes arrive through a read counter the [`Socket`] shares with it.
//!
//! Stop. When `stop` completes the accept loop ends, every connection is told through a closed semaphore
//! (glommio's broadcast: every waiter wakes with an error) to begin hyper's graceful shutdown, which
//! finishes the request in flight and disables keep-alive, and each connection gets at most [`DRAIN`] to do
//! so before it is dropped. A glommio [`Gate`] makes `serve` return only once every connection task ended.

mod routes;
mod static_files;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::{Gate, Semaphore};
use hyper::rt::{ReadBufCursor, Sleep};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use tracing::{debug, warn};

use crate::config::{PublicSettings, ServerSettings};
use routes::Router;

/// How long each connection may take to finish its request in flight once the server stops.
const DRAIN: Duration = Duration::from_secs(3);

/// How long the accept loop pauses after a failed accept (e.g. out of file descriptors), so a persistent
/// failure is not retried in a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a JSON route can know about the running server.
#[derive(Debug, Clone)]
pub struct HttpContext {
    websocket_addr: SocketAddr,
}

impl HttpContext {
    /// A context announcing the WebSocket listener at `websocket_addr`.
    pub fn new(websocket_addr: SocketAddr) -> Self {
        HttpContext { websocket_addr }
    }

    /// Where the WebSocket listener is bound (its real port when `WEBSOCKET_PORT` was 0).
    pub fn websocket_addr(&self) -> SocketAddr {
        self.websocket_addr
    }
}

/// A GET route answering JSON (registered by the app, e.g. `/api/health`).
pub type JsonRoute = Arc<dyn Fn(&HttpContext) -> serde_json::Value + Send + Sync>;

/// Everything one HTTP shard serves; built once on the starting thread, then moved to the HTTP executor.
pub(crate) struct Site {
    /// Exact URL paths and their JSON routes, matched before static files.
    pub(crate) routes: Vec<(String, JsonRoute)>,
    /// The public directory and how it is mounted.
    pub(crate) public: PublicSettings,
    /// The request and keep-alive timeouts, and whether to log each request.
    pub(crate) server: ServerSettings,
    /// Handed to every JSON route.
    pub(crate) context: HttpContext,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<&str> = self.routes.iter().map(|(path, _)| path.as_str()).collect();
        f.debug_struct("Site")
            .field("routes", &paths)
            .field("public", &self.public)
            .field("server", &self.server)
            .field("context", &self.context)
            .finish()
    }
}

/// Serves HTTP on `listener` until `stop` completes, then stops accepting, lets in-flight requests finish
/// (hyper graceful shutdown, which also disables keep-alive) for at most a few seconds, and returns.
pub(crate) async fn serve(listener: TcpListener, site: Rc<Site>, stop: impl Future<Output = ()>) {
    let timeouts = Timeouts {
        request: site.server.request_timeout,
        session: site.server.session_timeout,
    };
    let router = Rc::new(Router::new(site));
    let connections = Gate::new();
    // No permits are ever added: closing it is the stop broadcast to every connection.
    let stopping = Rc::new(Semaphore::new(0));
    let mut stop = pin!(stop);
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            stop.as_mut().await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                let task = connection(stream, router.clone(), timeouts, stopping.clone());
                match connections.spawn(task) {
                    Ok(task) => drop(task.detach()),
                    Err(e) => warn!(error = %e, "cannot start an HTTP connection task"),
                }
            }
            Some(Err(e)) => {
                warn!(error = %e, "HTTP accept failed");
                glommio::timer::Timer::new(ACCEPT_BACKOFF).await;
            }
        }
    }
    // The accept just abandoned is still queued in io_uring and keeps the socket listening after its
    // descriptor is closed, until glommio submits the cancellation on a reactor turn. Parking on a short
    // timer forces that turn (merely yielding did not, in tests), so the port stops accepting before
    // `serve` returns rather than whenever the executor is torn down.
    drop(listener);
    glommio::timer::Timer::new(Duration::from_millis(1)).await;
    stopping.close();
    if let Err(e) = connections.close().await {
        warn!(error = %e, "HTTP connections gate was already closed");
    }
    debug!("HTTP shard stopped");
}

/// The two connection timeouts, copied out of [`ServerSettings`] for each connection.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// `SERVER_REQUEST_TIMEOUT`: a request head must be read within this.
    request: Duration,
    /// `SERVER_SESSION_TIMEOUT_SEC`: a keep-alive connection may idle this long between requests.
    session: Duration,
}

/// Runs one connection until the client leaves, a timeout closes it, or the stop drains it.
async fn connection(
    stream: TcpStream,
    router: Rc<Router>,
    timeouts: Timeouts,
    stopping: Rc<Semaphore>,
) {
    let peer = stream.peer_addr().ok();
    let reads = Arc::new(AtomicU64::new(0));
    let io = Socket {
        stream,
        reads: reads.clone(),
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(ShardTimer {
            reads,
            session_timeout: timeouts.session,
        })
        .header_read_timeout(timeouts.request)
        .keep_alive(true);
    let service = service_fn(move |request| {
        let router = router.clone();
        async move {
            let response = router.respond(request.method(), request.uri().path()).await;
            if router.logs_requests() {
                debug!(?peer, method = %request.method(), uri = %request.uri(), status = response.status().as_u16(), "HTTP request");
            }
            Ok::<_, Infallible>(response)
        }
    });
    let mut conn = pin!(builder.serve_connection(io, service));
    let finished = future::or(async { Some(conn.as_mut().await) }, async {
        // Never acquired: the semaphore has no permits, so this returns only when `serve` closes it.
        let _ = stopping.acquire(1).await;
        None
    })
    .await;
    let result = match finished {
        Some(result) => result,
        None => {
            conn.as_mut().graceful_shutdown();
            let drained = future::or(async { Some(conn.as_mut().await) }, async {
                glommio::timer::Timer::new(DRAIN).await;
                None
            })
            .await;
            match drained {
                Some(result) => result,
                None => {
                    warn!(
                        ?peer,
                        "HTTP connection did not finish within the drain time; dropped"
                    );
                    return;
                }
            }
        }
    };
    match result {
        Ok(()) => {}
        // Clients that stall, hang up mid-request or send garbage are routine, not server faults.
        Err(e)
            if e.is_timeout() || e.is_incomplete_message() || e.is_parse() || e.is_canceled() =>
        {
            debug!(?peer, error = %e, "HTTP connection closed");
        }
        Err(e) => warn!(?peer, error = %e, "HTTP connection failed"),
    }
}

/// A glommio socket as hyper's IO, counting reads that brought bytes so [`ShardTimer`] sees activity.
struct Socket {
    stream: TcpStream,
    /// Shared with this connection's [`ShardTimer`]; only ever touched on the shard's thread, but hyper
    /// requires the timer to be `Send + Sync`, hence an atomic.
    reads: Arc<AtomicU64>,
}

impl hyper::rt::Read for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Zeroes the unfilled part only the first time hyper offers it, so glommio can copy straight in.
        let unfilled = buf.initialize_unfilled();
        let n = ready!(Pin::new(&mut this.stream).poll_read(cx, unfilled))?;
        if n > 0 {
            this.reads.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the first `n` bytes of the unfilled part were initialized above and written by the read.
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}

/// hyper's timer for one connection. hyper's http1 server asks a timer only for `header_read_timeout`, so
/// every sleep is a [`HeadDeadline`].
#[derive(Clone)]
struct ShardTimer {
    /// The connection's read counter, shared with its [`Socket`].
    reads: Arc<AtomicU64>,
    /// How long the connection may idle between requests.
    session_timeout: Duration,
}

impl hyper::rt::Timer for ShardTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let request_timeout = deadline.saturating_duration_since(Instant::now());
        let reads = self.reads.load(Ordering::Relaxed);
        // Nothing read yet means the first head: the request timeout runs from accept. Otherwise hyper is
        // waiting for the next request on a kept-alive connection, which is idle until bytes arrive.
        let (phase, first_wait) = if reads == 0 {
            (Phase::Head, request_timeout)
        } else {
            let idle = Phase::Idle {
                reads_before: reads,
                request_timeout,
            };
            (idle, self.session_timeout)
        };
        Box::pin(HeadDeadline {
            timer: glommio::timer::Timer::new(first_wait),
            phase,
            reads: self.reads.clone(),
        })
    }
}

/// What a [`HeadDeadline`] is currently timing.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// A request head has begun (or the connection is new): the timer is the request timeout.
    Head,
    /// Waiting for the next request: the timer is the session timeout until the read count moves past
    /// `reads_before`, then it restarts as `request_timeout`.
    Idle {
        reads_before: u64,
        request_timeout: Duration,
    },
}

/// The sleep hyper polls while it waits for a request head; see the module docs for the two phases.
struct HeadDeadline {
    timer: glommio::timer::Timer,
    phase: Phase,
    reads: Arc<AtomicU64>,
}

// SAFETY: hyper's `Sleep` must be `Send + Sync` because hyper stores sleeps as `Pin<Box<dyn Sleep>>`, but it
// never moves them itself: each lives inside its connection's `http1::Connection`, which owns a glommio
// `TcpStream` and is therefore `!Send`, so it is created, polled and dropped on the shard thread that
// created it, which is all the `Rc` inside `glommio::timer::Timer` needs. `Sync` is sound because no method
// of `HeadDeadline` takes `&self`: the timer is only reached through `Pin<&mut Self>`.
unsafe impl Send for HeadDeadline {}
// SAFETY: see the `Send` impl above.
unsafe impl Sync for HeadDeadline {}

impl Sleep for HeadDeadline {}

impl Future for HeadDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Phase::Idle {
            reads_before,
            request_timeout,
        } = this.phase
        {
            // hyper polls this whenever the connection wakes, so a read that brings the next request's
            // first bytes is noticed here right away.
            if this.reads.load(Ordering::Relaxed) != reads_before {
                this.timer.reset(request_timeout);
                this.phase = Phase::Head;
            }
        }
        Pin::new(&mut this.timer).poll(cx).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream as StdStream;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;

    use glommio::LocalExecutorBuilder;

    use crate::config::Config;

    const SECRET: &str = "TOP-SECRET-OUTSIDE-PUBLIC";
    const INDEX: &str = "<!doctype html><h1>roomcast</h1>";
    const APP_JS: &str = "console.log('app');";
    const SUB_INDEX: &str = "<p>sub dir</p>";

    /// A public directory and a secret file beside it, unique per test and removed on drop.
    struct Fixture {
        base: PathBuf,
    }

    impl Fixture {
        fn new(name: &str) -> Fixture {
            let base =
                std::env::temp_dir().join(format!("roomcast-http-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            let public = base.join("public");
            std::fs::create_dir_all(public.join("sub/dir")).unwrap();
            std::fs::write(public.join("index.html"), INDEX).unwrap();
            std::fs::write(public.join("app.js"), APP_JS).unwrap();
            std::fs::write(public.join("sub/dir/index.html"), SUB_INDEX).unwrap();
            std::fs::write(base.join("secret.txt"), SECRET).unwrap();
            std::os::unix::fs::symlink(base.join("secret.txt"), public.join("link.txt")).unwrap();
            std::os::unix::fs::symlink(&base, public.join("up")).unwrap();
            Fixture { base }
        }

        fn public(&self) -> PathBuf {
            self.base.join("public")
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    /// A `serve` running on its own glommio executor; stopped (if not already) on drop.
    struct Running {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        stopped: mpsc::Receiver<()>,
        _fixture: Fixture,
    }

    impl Running {
        /// Triggers `stop` and says whether `serve` returned within the drain time plus a margin.
        fn stop(&self) -> bool {
            self.stop.store(true, Ordering::SeqCst);
            self.stopped
                .recv_timeout(DRAIN + Duration::from_secs(2))
                .is_ok()
        }

        fn client(&self) -> Client {
            let stream = StdStream::connect(self.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            Client {
                reader: BufReader::new(stream),
            }
        }

        /// One request on a fresh connection with `Connection: close`; the reply is everything read.
        fn request(&self, method: &str, path: &str) -> Reply {
            let mut client = self.client();
            client.send(&format!(
                "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
            ));
            let mut raw = Vec::new();
            client.reader.read_to_end(&mut raw).unwrap();
            Reply::parse(&raw)
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    /// Starts `serve` on 127.0.0.1:0 with one JSON route at `/api/health`, after `adjust` edits the site.
    fn start(fixture: Fixture, adjust: impl FnOnce(&mut Site)) -> Running {
        let config = Config::default();
        let mut public = config.public;
        public.path = fixture.public();
        public.cache_control = "public, max-age=60".into();
        let health: JsonRoute = Arc::new(
            |context: &HttpContext| serde_json::json!({"ok": true, "service": "test", "websocket": context.websocket_addr().to_string()}),
        );
        let mut site = Site {
            routes: vec![("/api/health".to_owned(), health)],
            public,
            server: config.server,
            context: HttpContext::new("127.0.0.1:9999".parse().unwrap()),
        };
        adjust(&mut site);
        let stop = Arc::new(AtomicBool::new(false));
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stopped_tx, stopped) = mpsc::channel();
        let flag = stop.clone();
        LocalExecutorBuilder::default()
            .name("http-test")
            .spawn(move || async move {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let stop = async move {
                    while !flag.load(Ordering::SeqCst) {
                        glommio::timer::Timer::new(Duration::from_millis(10)).await;
                    }
                };
                serve(listener, Rc::new(site), stop).await;
                let _ = stopped_tx.send(());
            })
            .unwrap();
        let addr = addr_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Running {
            addr,
            stop,
            stopped,
            _fixture: fixture,
        }
    }

    /// A raw HTTP/1.1 client over a std socket.
    struct Client {
        reader: BufReader<StdStream>,
    }

    impl Client {
        fn send(&mut self, raw: &str) {
            self.reader.get_mut().write_all(raw.as_bytes()).unwrap();
        }

        /// Reads one response: the head, then `Content-Length` bytes of body (none for a HEAD).
        fn reply(&mut self, head_only: bool) -> Reply {
            let mut raw = Vec::new();
            loop {
                let before = raw.len();
                self.reader.read_until(b'\n', &mut raw).unwrap();
                assert!(
                    raw.len() > before,
                    "connection closed inside a response head"
                );
                if raw.ends_with(b"\r\n\r\n") {
                    break;
                }
            }
            let mut reply = Reply::parse(&raw);
            let length: usize = reply
                .header("content-length")
                .map_or(0, |v| v.parse().unwrap());
            if !head_only {
                reply.body = vec![0; length];
                self.reader.read_exact(&mut reply.body).unwrap();
            }
            reply
        }

        /// Whether the server closes the connection within `limit` (any bytes it sends first are skipped).
        fn closed_within(&mut self, limit: Duration) -> bool {
            self.reader.get_ref().set_read_timeout(Some(limit)).unwrap();
            let mut sink = [0u8; 1024];
            loop {
                match self.reader.read(&mut sink) {
                    Ok(0) => return true,
                    Ok(_) => continue,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        return false
                    }
                    Err(_) => return true,
                }
            }
        }
    }

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Reply {
        fn parse(raw: &[u8]) -> Reply {
            let split = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("a complete response head");
            let head = std::str::from_utf8(&raw[..split]).unwrap();
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            let headers = lines
                .map(|line| {
                    let (name, value) = line.split_once(':').unwrap();
                    (name.trim().to_ascii_lowercase(), value.trim().to_owned())
                })
                .collect();
            Reply {
                status,
                headers,
                body: raw[split + 4..].to_vec(),
            }
        }

        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }

        fn text(&self) -> &str {
            std::str::from_utf8(&self.body).unwrap()
        }
    }

    #[test]
    fn json_routes_answer_their_value() {
        let server = start(Fixture::new("json"), |_| {});
        let reply = server.request("GET", "/api/health");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let value: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"ok": true, "service": "test", "websocket": "127.0.0.1:9999"})
        );
        let head = server.request("HEAD", "/api/health");
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-length"),
            Some(reply.body.len().to_string().as_str())
        );
        assert!(head.body.is_empty());
        assert!(server.stop());
    }

    #[test]
    fn the_index_is_served_at_the_mount_root() {
        let server = start(Fixture::new("index"), |_| {});
        let reply = server.request("GET", "/");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), INDEX);
        assert_eq!(
            reply.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(reply.header("cache-control"), Some("public, max-age=60"));
        assert_eq!(
            reply.header("content-length"),
            Some(INDEX.len().to_string().as_str())
        );
        for path in ["/sub/dir/", "/sub/dir"] {
            let reply = server.request("GET", path);
            assert_eq!((reply.status, reply.text()), (200, SUB_INDEX), "{path}");
        }
        // The index is also reachable by its own name.
        assert_eq!(server.request("GET", "/index.html").text(), INDEX);
    }

    #[test]
    fn files_carry_type_length_and_cache_control() {
        let server = start(Fixture::new("types"), |_| {});
        let reply = server.request("GET", "/app.js");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), APP_JS);
        assert!(
            reply.header("content-type").unwrap().contains("javascript"),
            "{:?}",
            reply.headers
        );
        assert_eq!(
            reply.header("content-length"),
            Some(APP_JS.len().to_string().as_str())
        );
        assert_eq!(reply.header("cache-control"), Some("public, max-age=60"));
    }

    #[test]
    fn head_answers_headers_without_a_body() {
        let server = start(Fixture::new("head"), |_| {});
        let reply = server.request("HEAD", "/app.js");
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-length"),
            Some(APP_JS.len().to_string().as_str())
        );
        assert_eq!(reply.header("cache-control"), Some("public, max-age=60"));
        assert!(reply.body.is_empty());
    }

    #[test]
    fn missing_files_are_404_without_the_spa_fallback() {
        let server = start(Fixture::new("missing"), |_| {});
        let reply = server.request("GET", "/nope.html");
        assert_eq!(reply.status, 404);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(reply.text(), "404 Not Found\n");
        assert_eq!(server.request("GET", "/sub/dir/nope").status, 404);
    }

    #[test]
    fn the_spa_fallback_serves_the_index_for_missing_paths() {
        let server = start(Fixture::new("spa"), |site| site.public.spa_fallback = true);
        for path in ["/rooms/lobby", "/nope.html", "/sub/dir/nope"] {
            let reply = server.request("GET", path);
            assert_eq!((reply.status, reply.text()), (200, INDEX), "{path}");
            assert_eq!(
                reply.header("content-type"),
                Some("text/html; charset=utf-8")
            );
        }
        assert_eq!(server.request("GET", "/app.js").text(), APP_JS);
    }

    #[test]
    fn a_mount_prefix_scopes_the_static_files() {
        let server = start(Fixture::new("mount"), |site| {
            site.public.mount = "/static".into()
        });
        assert_eq!(server.request("GET", "/static/app.js").text(), APP_JS);
        for path in ["/static", "/static/"] {
            let reply = server.request("GET", path);
            assert_eq!((reply.status, reply.text()), (200, INDEX), "{path}");
        }
        assert_eq!(server.request("GET", "/static/sub/dir/").text(), SUB_INDEX);
        for path in ["/", "/app.js", "/staticapp.js"] {
            assert_eq!(server.request("GET", path).status, 404, "{path}");
        }
        assert_eq!(server.request("GET", "/api/health").status, 200);
    }

    #[test]
    fn traversal_never_reads_outside_public() {
        for spa_fallback in [false, true] {
            let server = start(Fixture::new(&format!("traversal-{spa_fallback}")), |site| {
                site.public.spa_fallback = spa_fallback
            });
            for path in [
                "/../secret.txt",
                "/sub/../../secret.txt",
                "/%2e%2e/secret.txt",
                "/%2E%2e/secret.txt",
                "/sub/%2e%2e/%2e%2e/secret.txt",
                "/..%2fsecret.txt",
                "/%2e%2e%2fsecret.txt",
                "/..%5csecret.txt",
                "/..\\secret.txt",
                "/secret.txt%00",
                "/%00/../secret.txt",
                "//etc/passwd",
                "//secret.txt",
                "/link.txt",
                "/up/secret.txt",
                "/up/",
                "/%ff%fe",
            ] {
                let reply = server.request("GET", path);
                assert!(
                    matches!(reply.status, 400 | 404),
                    "{path}: {}",
                    reply.status
                );
                assert!(!reply.text().contains(SECRET), "{path} leaked the secret");
            }
            assert_eq!(server.request("GET", "/%ff%fe").status, 400);
        }
    }

    #[test]
    fn other_methods_get_405_with_allow() {
        let server = start(Fixture::new("methods"), |_| {});
        for (method, path) in [
            ("POST", "/"),
            ("DELETE", "/api/health"),
            ("PUT", "/app.js"),
            ("OPTIONS", "/nope"),
        ] {
            let reply = server.request(method, path);
            assert_eq!(reply.status, 405, "{method} {path}");
            assert_eq!(reply.header("allow"), Some("GET, HEAD"));
        }
    }

    #[test]
    fn files_over_the_cap_are_refused() {
        let fixture = Fixture::new("large");
        let big = std::fs::File::create(fixture.public().join("big.bin")).unwrap();
        // Sparse: no disk is written, but the size is over the cap.
        big.set_len(static_files::MAX_FILE_BYTES + 1).unwrap();
        let server = start(fixture, |_| {});
        assert_eq!(server.request("GET", "/big.bin").status, 500);
        assert_eq!(server.request("HEAD", "/big.bin").status, 500);
    }

    #[test]
    fn a_bad_connection_does_not_stop_the_accept_loop() {
        let server = start(Fixture::new("garbage"), |_| {});
        let mut client = server.client();
        client.send("NOT HTTP AT ALL\0\r\n\r\n");
        assert!(client.closed_within(Duration::from_secs(3)));
        let mut client = server.client();
        client.send("GET / HTTP/1.1\r\nHost: t\r\n");
        drop(client);
        assert_eq!(server.request("GET", "/app.js").status, 200);
    }

    #[test]
    fn an_unfinished_request_head_is_dropped_after_the_request_timeout() {
        let server = start(Fixture::new("head-timeout"), |site| {
            site.server.request_timeout = Duration::from_millis(200);
        });
        let mut client = server.client();
        let started = Instant::now();
        client.send("GET / HTT");
        assert!(client.closed_within(Duration::from_secs(3)));
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
        // A connection that sends nothing at all is dropped too.
        let mut silent = server.client();
        assert!(silent.closed_within(Duration::from_secs(3)));
    }

    #[test]
    fn an_idle_keep_alive_connection_is_closed_after_the_session_timeout() {
        let server = start(Fixture::new("idle"), |site| {
            site.server.request_timeout = Duration::from_secs(10);
            site.server.session_timeout = Duration::from_secs(1);
        });
        let mut client = server.client();
        for _ in 0..2 {
            client.send("GET /app.js HTTP/1.1\r\nHost: t\r\n\r\n");
            assert_eq!(client.reply(false).text(), APP_JS);
        }
        let idle_from = Instant::now();
        assert!(client.closed_within(Duration::from_secs(5)));
        let idle = idle_from.elapsed();
        assert!(
            idle >= Duration::from_millis(900) && idle < Duration::from_secs(5),
            "{idle:?}"
        );
    }

    #[test]
    fn idling_uses_the_session_timeout_and_a_started_head_the_request_timeout() {
        let server = start(Fixture::new("phases"), |site| {
            site.server.request_timeout = Duration::from_millis(300);
            site.server.session_timeout = Duration::from_secs(10);
        });
        let mut client = server.client();
        client.send("HEAD / HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(client.reply(true).status, 200);
        // Idle for over three request timeouts: still open, because idling is bounded by the session timeout.
        assert!(!client.closed_within(Duration::from_secs(1)));
        client.send("GET / HT");
        let started = Instant::now();
        assert!(client.closed_within(Duration::from_secs(5)));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn stop_returns_and_closes_kept_alive_connections() {
        let server = start(Fixture::new("stop"), |_| {});
        let mut client = server.client();
        client.send("GET /app.js HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(client.reply(false).status, 200);
        let started = Instant::now();
        assert!(server.stop(), "serve did not return");
        assert!(
            started.elapsed() < DRAIN,
            "an idle connection held the stop: {:?}",
            started.elapsed()
        );
        assert!(client.closed_within(Duration::from_secs(2)));
        // The listener is gone: a new connection is refused, or closed without an answer.
        if let Ok(stream) = StdStream::connect(server.addr) {
            let mut client = Client {
                reader: BufReader::new(stream),
            };
            assert!(client.closed_within(Duration::from_secs(2)));
        }
    }
}
