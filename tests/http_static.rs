//! The HTTP side of the library, spoken to in raw HTTP/1.1 over a `TcpStream`: a JSON route answers its
//! value (and HEAD its length); the public directory serves its index at the mount root and in
//! subdirectories, files with their type, length and `PUBLIC_CACHE_CONTROL`, 404 for missing paths or the
//! index with `PUBLIC_SPA_FALLBACK`, only under `PUBLIC_MOUNT`; no encoded `..`, backslash, NUL or symlink
//! ever reads outside `PUBLIC_PATH`; other methods are 405 with `Allow`; files over the size cap are 500.
//! Connections: garbage does not stop the accept loop, a started head must finish within
//! `SERVER_REQUEST_TIMEOUT`, an idle keep-alive connection lasts `SERVER_SESSION_TIMEOUT_SEC`, and
//! `RunningServer::stop` returns promptly and closes kept-alive connections.

mod common;
mod library;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use roomcast::{HttpContext, RunningServer, Server};
use serde_json::{json, Value};

const SECRET: &str = "TOP-SECRET-OUTSIDE-PUBLIC";
const INDEX: &str = "<!doctype html><h1>roomcast</h1>";
const APP_JS: &str = "console.log('app');";
const SUB_INDEX: &str = "<p>sub dir</p>";

/// `PUBLIC_CACHE_CONTROL` for every test, so the header is seen to come from the configuration.
const CACHE_CONTROL: &str = "public, max-age=60";

/// The largest file served; mirrors `MAX_FILE_BYTES` in src/http/static_files.rs.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// How long `RunningServer::stop` may take before the test fails instead of hanging: the HTTP shard's
/// drain time (3 s) plus a margin.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// A public directory and a secret file beside it, unique per test and removed on drop.
struct Fixture {
    base: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let base = common::scratch_dir(&format!("roomcast-http-{name}"));
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

/// A server serving a [`Fixture`]; dropping it stops the server (blocking) and then removes the directory.
struct Running {
    // Fields drop in declaration order: the server stops before its public directory goes.
    server: RunningServer,
    fixture: Fixture,
}

impl Running {
    fn http_addr(&self) -> SocketAddr {
        self.server.http_addr()
    }

    fn websocket_addr(&self) -> SocketAddr {
        self.server.websocket_addr()
    }

    /// Stops the server on a helper thread and says whether the stop returned within [`STOP_DEADLINE`].
    fn stop(self) -> bool {
        let Running { server, fixture } = self;
        let (stopped_tx, stopped) = mpsc::channel();
        thread::spawn(move || {
            server.stop();
            let _ = stopped_tx.send(());
        });
        let returned = stopped.recv_timeout(STOP_DEADLINE).is_ok();
        drop(fixture);
        returned
    }

    fn client(&self) -> Client {
        Client {
            reader: BufReader::new(library::tcp(self.http_addr())),
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

/// The one JSON route every test server has, at `/api/health`.
fn health(context: &HttpContext) -> Value {
    json!({"ok": true, "service": "test", "websocket": context.websocket_addr().to_string()})
}

/// Starts a server on loopback serving `fixture`'s public directory with [`CACHE_CONTROL`] and the
/// [`health`] route, configured further by `pairs` (which override those two keys if they name them).
fn start(fixture: Fixture, pairs: &[(&str, &str)]) -> Running {
    let public = fixture.public();
    let public = public.to_str().expect("the fixture path is UTF-8");
    let mut all = vec![
        ("PUBLIC_PATH", public),
        ("PUBLIC_CACHE_CONTROL", CACHE_CONTROL),
    ];
    all.extend_from_slice(pairs);
    let server = library::start(&all, |server: Server| {
        server.json_route("/api/health", health)
    });
    Running { server, fixture }
}

/// A raw HTTP/1.1 client over a std socket.
struct Client {
    reader: BufReader<TcpStream>,
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
        library::ends_within(self.reader.get_mut(), limit)
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
    let server = start(Fixture::new("json"), &[]);
    let reply = server.request("GET", "/api/health");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let value: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        value,
        json!({"ok": true, "service": "test", "websocket": server.websocket_addr().to_string()})
    );
    let head = server.request("HEAD", "/api/health");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(reply.body.len().to_string().as_str())
    );
    assert!(head.body.is_empty());
    assert!(
        server.stop(),
        "stop did not return within {STOP_DEADLINE:?}"
    );
}

#[test]
fn the_index_is_served_at_the_mount_root() {
    let server = start(Fixture::new("index"), &[]);
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
    let server = start(Fixture::new("types"), &[]);
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
    let server = start(Fixture::new("head"), &[]);
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
    let server = start(Fixture::new("missing"), &[]);
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
    let server = start(Fixture::new("spa"), &[("PUBLIC_SPA_FALLBACK", "true")]);
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
    let server = start(Fixture::new("mount"), &[("PUBLIC_MOUNT", "/static")]);
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
        let setting = spa_fallback.to_string();
        let server = start(
            Fixture::new(&format!("traversal-{spa_fallback}")),
            &[("PUBLIC_SPA_FALLBACK", setting.as_str())],
        );
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
    let server = start(Fixture::new("methods"), &[]);
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
    big.set_len(MAX_FILE_BYTES + 1).unwrap();
    let server = start(fixture, &[]);
    assert_eq!(server.request("GET", "/big.bin").status, 500);
    assert_eq!(server.request("HEAD", "/big.bin").status, 500);
}

#[test]
fn a_bad_connection_does_not_stop_the_accept_loop() {
    let server = start(Fixture::new("garbage"), &[]);
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
    let server = start(
        Fixture::new("head-timeout"),
        &[("SERVER_REQUEST_TIMEOUT", "200")],
    );
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
    let server = start(
        Fixture::new("idle"),
        &[
            ("SERVER_REQUEST_TIMEOUT", "10000"),
            ("SERVER_SESSION_TIMEOUT_SEC", "1"),
        ],
    );
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
    let server = start(
        Fixture::new("phases"),
        &[
            ("SERVER_REQUEST_TIMEOUT", "300"),
            ("SERVER_SESSION_TIMEOUT_SEC", "10"),
        ],
    );
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
    let server = start(Fixture::new("stop"), &[]);
    let addr = server.http_addr();
    let mut client = server.client();
    client.send("GET /app.js HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(client.reply(false).status, 200);
    let started = Instant::now();
    assert!(
        server.stop(),
        "stop did not return within {STOP_DEADLINE:?}"
    );
    // Under the HTTP shard's drain time (3 s): an idle kept-alive connection must not hold the stop.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "an idle connection held the stop: {:?}",
        started.elapsed()
    );
    assert!(client.closed_within(Duration::from_secs(2)));
    // The listener is gone: a new connection is refused, or closed without an answer.
    if let Ok(stream) = TcpStream::connect(addr) {
        let mut client = Client {
            reader: BufReader::new(stream),
        };
        assert!(client.closed_within(Duration::from_secs(2)));
    }
}
