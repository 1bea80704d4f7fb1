//! The black-box harness every integration test goes through: start the real `roomcast` binary on port 0,
//! learn its addresses from its own log lines, and talk to it over real TCP with tungstenite.
//!
//! Nothing here knows the server's internals. The only contract used is the binary's: it reads `.env` from
//! its working directory (or `--env-file PATH`), environment variables override the file, and once it is up
//! it logs `websocket listening on ADDR` and `http listening on ADDR` to stderr.
//!
//! Each launch gets a fresh, empty working directory and a scrubbed environment (no inherited `APP_*`,
//! `SERVER_*`, `WEBSOCKET_*`, `PUBLIC_*` or `RUST_LOG`), so a developer's shell or a stray `.env` in the repo
//! cannot change what a test sees.

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

pub mod v1;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// How long the binary may take to log both listening lines; generous because CI has 2 busy cores.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a signalled or misconfigured process may take to exit.
pub const EXIT_DEADLINE: Duration = Duration::from_secs(10);
/// How long a client waits for any one frame before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The key prefixes the binary reads; scrubbed from every child's inherited environment.
const CONFIG_PREFIXES: [&str; 12] = [
    "APP_",
    "SERVER_",
    "WEBSOCKET_",
    "PUBLIC_",
    "HISTORY_",
    "DATA_DIR",
    "PRESENCE_",
    "METRICS_",
    "API_KEY",
    "LOG_",
    "AUTH_",
    "CLUSTER_",
];

/// The repository's `public/` directory, as an absolute path (the binary may run in any directory).
pub fn public_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("public")
}

/// Cargo's target directory, wherever `CARGO_TARGET_DIR` put it (screenshots and other artefacts go here).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is <target>/tmp")
        .to_path_buf()
}

/// A fresh empty directory under cargo's per-target temp dir, unique per call, for a child's working
/// directory or its env files.
pub fn scratch_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Starts the binary on loopback with free ports and the repo's `public/`, plus `extra_env`, and waits
/// until it is listening.
pub fn spawn_app(extra_env: &[(&str, &str)]) -> App {
    Launch::new().test_network().envs(extra_env).spawn()
}

/// One way of starting the binary; [`Launch::spawn`] for a server, [`Launch::run_to_exit`] for a run that
/// is expected to stop by itself (a refused configuration).
pub struct Launch {
    cmd: Command,
    /// For messages: what this launch was.
    description: String,
}

impl Default for Launch {
    fn default() -> Self {
        Self::new()
    }
}

impl Launch {
    /// The bare binary in a fresh empty working directory (so no `.env` is found) with a scrubbed
    /// environment.
    pub fn new() -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_roomcast"));
        cmd.current_dir(scratch_dir("cwd"));
        let inherited: Vec<OsString> = std::env::vars_os()
            .map(|(k, _)| k)
            .filter(|k| {
                let k = k.to_string_lossy();
                k == "RUST_LOG" || CONFIG_PREFIXES.iter().any(|p| k.starts_with(p))
            })
            .collect();
        for key in inherited {
            cmd.env_remove(key);
        }
        cmd.stdin(Stdio::null());
        Launch {
            cmd,
            description: "roomcast".to_owned(),
        }
    }

    /// Loopback listeners on free ports, and the repo's `public/`: what every server test needs.
    pub fn test_network(self) -> Self {
        let public = public_dir();
        self.envs(&[
            ("WEBSOCKET_HOST", "127.0.0.1"),
            ("WEBSOCKET_PORT", "0"),
            ("SERVER_HOST", "127.0.0.1"),
            ("SERVER_PORT", "0"),
            ("PUBLIC_PATH", public.to_str().expect("utf-8 repo path")),
        ])
    }

    /// Sets environment variables (they override the env file).
    pub fn envs(mut self, pairs: &[(&str, &str)]) -> Self {
        for (k, v) in pairs {
            self.cmd.env(k, v);
            self.description.push_str(&format!(" {k}={v}"));
        }
        self
    }

    /// Adds a command-line argument.
    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.description
            .push_str(&format!(" {}", arg.as_ref().to_string_lossy()));
        self.cmd.arg(arg);
        self
    }

    /// Adds command-line arguments.
    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        for arg in args {
            self = self.arg(arg);
        }
        self
    }

    /// Runs with at most `limit` open descriptors (`ulimit -n`).
    pub fn descriptor_limit(mut self, limit: u64) -> Self {
        use std::os::unix::process::CommandExt;
        self.description.push_str(&format!(" (ulimit -n {limit})"));
        let rlimit = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: the closure runs in the forked child before exec and only calls setrlimit(2), which is
        // async-signal-safe, on a value it owns; it allocates nothing and takes no lock.
        unsafe {
            self.cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        self
    }

    /// Runs in `dir` instead of a fresh empty directory.
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Starts the binary and waits for both listening lines; panics with its output if it exits first or
    /// does not get there within [`START_DEADLINE`].
    pub fn spawn(mut self) -> App {
        let mut child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.description));
        let output = Output::default();
        output.drain(child.stdout.take().unwrap(), "stdout: ", None);
        let (tx, rx) = mpsc::channel();
        output.drain(child.stderr.take().unwrap(), "", Some(tx));

        let fail = |child: &mut Child, why: String| -> ! {
            let _ = child.kill();
            let status = child.wait();
            panic!(
                "{}: {why} (process: {status:?}); output:\n{}",
                self.description,
                output.text()
            );
        };
        let deadline = Instant::now() + START_DEADLINE;
        let (mut ws_addr, mut http_addr) = (None, None);
        while ws_addr.is_none() || http_addr.is_none() {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    ws_addr = ws_addr.or(listening_addr(&line, "websocket"));
                    http_addr = http_addr.or(listening_addr(&line, "http"));
                }
                Err(RecvTimeoutError::Timeout) => fail(
                    &mut child,
                    format!("no `websocket listening on` and `http listening on` lines within {START_DEADLINE:?}"),
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    fail(&mut child, "stderr closed before both listening lines".to_owned())
                }
            }
        }
        // Dropping the receiver only stops the notifications; the thread goes on collecting lines.
        App {
            ws_addr: ws_addr.unwrap(),
            http_addr: http_addr.unwrap(),
            child,
            output,
        }
    }

    /// Runs the binary until it exits by itself (within [`EXIT_DEADLINE`]) and returns its exit status and
    /// output (stderr lines, and stdout lines prefixed `stdout: `); panics, killing it, if it is still
    /// running then (for example because it started listening).
    pub fn run_to_exit(mut self) -> (ExitStatus, String) {
        let mut child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.description));
        let output = Output::default();
        let stdout_done = output.drain(child.stdout.take().unwrap(), "stdout: ", None);
        let done = output.drain(child.stderr.take().unwrap(), "", None);
        let status = match wait_with_deadline(&mut child, EXIT_DEADLINE) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within {EXIT_DEADLINE:?}; stderr:\n{}",
                    self.description,
                    output.text()
                );
            }
        };
        let _ = done.join();
        let _ = stdout_done.join();
        (status, output.text())
    }
}

/// Lines a child printed, collected by background threads so its pipes never fill up and block it.
#[derive(Clone, Default)]
pub struct Output {
    lines: Arc<Lines>,
}

/// The captured lines and a condition signalled on every new one.
#[derive(Default)]
struct Lines {
    all: Mutex<Vec<String>>,
    added: Condvar,
}

impl Output {
    /// Reads `pipe` to its end on a thread, storing each line (ANSI colour codes removed) with `prefix`
    /// and, while `notify` is listening, sending it there too.
    fn drain(
        &self,
        pipe: impl Read + Send + 'static,
        prefix: &'static str,
        notify: Option<mpsc::Sender<String>>,
    ) -> thread::JoinHandle<()> {
        let lines = Arc::clone(&self.lines);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let line = format!("{prefix}{}", strip_ansi(&line));
                lines.all.lock().unwrap().push(line.clone());
                lines.added.notify_all();
                if let Some(tx) = &notify {
                    let _ = tx.send(line);
                }
            }
        })
    }

    /// Everything captured so far, one line each.
    pub fn lines(&self) -> Vec<String> {
        self.lines.all.lock().unwrap().clone()
    }

    /// Waits until a captured line contains `needle`, at most `limit`; whether one did.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut all = self.lines.all.lock().unwrap();
        loop {
            if all.iter().any(|line| line.contains(needle)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            all = self.lines.added.wait_timeout(all, left).unwrap().0;
        }
    }

    /// Everything captured so far as one string, for failure messages.
    pub fn text(&self) -> String {
        self.lines().join("\n")
    }
}

/// Removes `ESC [ ... m` colour sequences.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if !(c.is_ascii_digit() || c == ';') {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address after `"{what} listening on "` in a log line, if it has one.
pub fn listening_addr(line: &str, what: &str) -> Option<SocketAddr> {
    let needle = format!("{what} listening on ");
    let start = line.find(&needle)? + needle.len();
    // The address's own characters, whatever a log format (text, JSON) puts after it.
    let token: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    token.parse().ok()
}

/// A running `roomcast` process that has logged both listening lines; dropping it kills the process.
pub struct App {
    /// The WebSocket listener's address, from its log line.
    pub ws_addr: SocketAddr,
    /// The HTTP listener's address, from its log line.
    pub http_addr: SocketAddr,
    /// The process itself.
    pub child: Child,
    /// Its stderr lines (and stdout lines, prefixed `stdout: `), still being collected.
    pub output: Output,
}

impl App {
    /// `ws://ADDR/`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.ws_addr)
    }

    /// `http://ADDR`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child, not yet reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}) failed: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits up to [`EXIT_DEADLINE`] for the process to exit; panics with its output if it does not.
    pub fn wait_exit(&mut self) -> ExitStatus {
        match wait_with_deadline(&mut self.child, EXIT_DEADLINE) {
            Some(status) => status,
            None => panic!(
                "roomcast did not exit within {EXIT_DEADLINE:?}; output:\n{}",
                self.output.text()
            ),
        }
    }

    /// SIGTERM, then [`App::wait_exit`].
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls a child for its exit until `deadline` has passed. std has no waitpid with a timeout; a 5 ms poll
/// costs nothing next to a process exit.
fn wait_with_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A blocking tungstenite client connected to `ws_addr`, with [`READ_TIMEOUT`] on every read.
pub fn connect(ws_addr: SocketAddr) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect_timeout(&ws_addr, READ_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {ws_addr}: {e}"));
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let (ws, _response) = tungstenite::client(format!("ws://{ws_addr}/"), stream)
        .unwrap_or_else(|e| panic!("WebSocket handshake with {ws_addr}: {e}"));
    ws
}

/// What arrived instead of a text message.
#[derive(Debug)]
pub enum NotText {
    /// A close frame (tungstenite has queued the reply).
    Close(Option<CloseFrame>),
    /// A binary message.
    Binary(Vec<u8>),
    /// A read error, including the read timeout.
    Error(tungstenite::Error),
}

/// The next text message, skipping pings and pongs (tungstenite answers pings on the next read or write).
pub fn try_recv_text(ws: &mut WebSocket<TcpStream>) -> Result<String, NotText> {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => return Ok(text.as_str().to_owned()),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Ok(Message::Binary(data)) => return Err(NotText::Binary(data.to_vec())),
            Ok(Message::Close(frame)) => return Err(NotText::Close(frame)),
            Err(e) => return Err(NotText::Error(e)),
        }
    }
}

/// The next text message; panics on anything else or after [`READ_TIMEOUT`].
pub fn recv_text(ws: &mut WebSocket<TcpStream>) -> String {
    try_recv_text(ws).unwrap_or_else(|other| panic!("expected a text message, got {other:?}"))
}

/// Sends one text message.
pub fn send_text(ws: &mut WebSocket<TcpStream>, text: &str) {
    ws.send(Message::text(text))
        .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
}

/// The next frame must be a close frame; returns its code. Keeps reading after it so tungstenite sends
/// its close reply and sees the server close the TCP connection.
pub fn recv_close_code(ws: &mut WebSocket<TcpStream>) -> u16 {
    let code = loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => break u16::from(frame.code),
            Ok(Message::Close(None)) => panic!("close frame without a code"),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(other) => panic!("expected a close frame, got {other:?}"),
            Err(e) => panic!("expected a close frame, got error {e}"),
        }
    };
    // Finish the handshake: the reply goes out on this read; the server then drops the connection.
    while ws.read().is_ok() {}
    code
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Runs a real client (`program args...`) to completion within `limit`, returning its exit status and its
/// stdout and stderr interleaved by line; a client still running at the deadline is killed and reported.
pub fn run_client(program: &str, args: &[&str], limit: Duration) -> (Option<ExitStatus>, String) {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (tests/run installs the clients' tools): {e}")
        });
    let output = Output::default();
    let out = output.drain(child.stdout.take().unwrap(), "", None);
    let err = output.drain(child.stderr.take().unwrap(), "", None);
    let status = wait_with_deadline(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = out.join();
    let _ = err.join();
    (status, output.text())
}

/// A plain HTTP/1.1 response: status code, lower-cased header names with values, and body.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header (name lower-cased, value) pairs in order.
    pub headers: Vec<(String, String)>,
    /// The body, read to the end of the connection.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` with `Connection: close` over a fresh connection: a client small enough to trust, so a
/// failure points at the server. Chunked bodies are not decoded; the tests compare only fixed-size ones.
pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    let mut stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "GET {path}: no header end in {:?}",
                String::from_utf8_lossy(&raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}
