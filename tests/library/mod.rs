//! Set-up for the tests that use roomcast as a library: start a [`Server`] on loopback with free ports, and
//! speak raw RFC 6455 where tungstenite would refuse to (malformed frames, fragments, control frames in
//! the middle of a message).
//!
//! [`start`] is the library's counterpart of `common::spawn_app`: loopback listeners on port 0 and two
//! shards unless the test says otherwise. [`RawClient`] does a real upgrade over a `std::net::TcpStream`,
//! then writes whatever bytes a test hands it and reads server frames one at a time, each read bounded by
//! [`READ_TIMEOUT`]. For permessage-deflate, [`RawClient::upgrade_with_headers`] sends extension offers and
//! returns the answer's head, and [`RawClient::read_wire_frame`] keeps the RSV bits ([`WireFrame`]).

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use loadtest::codec;
use roomcast::{Config, RunningServer, Server};

/// How long a raw client waits for any one read before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What a test says when a blocking read on its own thread fails with EINTR. Nothing in the tests sends
/// signals, so this is the server disturbing the thread that called `Server::start`; it is reported, not
/// retried, and never mistaken for the server ending a connection.
pub const INTERRUPTED: &str =
    "a read on the test thread was interrupted (EINTR), not ended by the server";

/// The masking key of every client frame built here; RFC 6455 wants it unpredictable, the server only
/// wants it applied.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The key/value pairs every library test starts from: loopback, free ports, two shards.
const DEFAULTS: [(&str, &str); 5] = [
    ("WEBSOCKET_HOST", "127.0.0.1"),
    ("WEBSOCKET_PORT", "0"),
    ("SERVER_HOST", "127.0.0.1"),
    ("SERVER_PORT", "0"),
    ("SERVER_IO_THREADS", "2"),
];

/// The configuration [`start`] uses: [`DEFAULTS`] overridden by `pairs`.
pub fn config(pairs: &[(&str, &str)]) -> Config {
    let mut map: HashMap<String, String> = DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in pairs {
        map.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup(|key| map.get(key).cloned())
        .unwrap_or_else(|e| panic!("test configuration {pairs:?} refused: {e}"))
}

/// Starts a server configured by [`config`]`(pairs)` with the callbacks `build` registers.
pub fn start(pairs: &[(&str, &str)], build: impl FnOnce(Server) -> Server) -> RunningServer {
    build(Server::new(config(pairs)))
        .start()
        .unwrap_or_else(|e| panic!("the server starts with {pairs:?}: {e}"))
}

/// A client frame with `opcode`, FIN as given and `payload` masked with [`MASK`], built by the load
/// harness's client encoder (the one in the repository).
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    codec::push_raw_frame(&mut out, opcode | if fin { 0x80 } else { 0 }, payload, MASK);
    out
}

/// Only the header of a masked client frame: `first_byte` (FIN, RSV and opcode bits) and a payload
/// length, with the shortest length encoding, then [`MASK`]. The payload is up to the caller.
pub fn masked_header(first_byte: u8, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    codec::push_masked_header(&mut out, first_byte, len, MASK);
    out
}

/// A close frame payload: the code, big-endian, then the reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// One frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    /// The FIN bit.
    pub fin: bool,
    /// The opcode (0x1 text, 0x2 binary, 0x8 close, 0x9 ping, 0xA pong, ...).
    pub opcode: u8,
    /// The payload (server frames are never masked; [`RawClient::read_frame`] checks).
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The close code of a close frame with one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The payload as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// One frame as the server sent it, with its first byte as it was: FIN, the three RSV bits (RSV1 marks a
/// compressed message under permessage-deflate) and the opcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFrame {
    /// Byte 0 of the frame: `0x80` FIN, `0x40` RSV1, `0x20` RSV2, `0x10` RSV3, low nibble the opcode.
    pub first_byte: u8,
    /// The payload, as sent (still compressed when RSV1 is set).
    pub payload: Vec<u8>,
}

impl WireFrame {
    /// The FIN bit.
    pub fn fin(&self) -> bool {
        self.first_byte & 0x80 != 0
    }

    /// The RSV1 bit: under permessage-deflate, the first frame of a compressed message.
    pub fn rsv1(&self) -> bool {
        self.first_byte & 0x40 != 0
    }

    /// The opcode.
    pub fn opcode(&self) -> u8 {
        self.first_byte & 0x0f
    }

    /// The close code of a close frame with one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode() == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A masked client frame whose first byte (FIN, RSV and opcode bits) is `first_byte` as given, e.g. `0xC1`
/// for a compressed text message in one frame; `payload` masked with [`MASK`].
pub fn client_frame_with_first_byte(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    codec::push_raw_frame(&mut out, first_byte, payload, MASK);
    out
}

/// Every value of the header `name` (any case) in an HTTP response head, one per header line, in order.
pub fn header_values(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

/// A WebSocket client that writes raw bytes and reads raw frames.
pub struct RawClient {
    /// The socket, with [`READ_TIMEOUT`] on reads and writes.
    pub stream: TcpStream,
}

/// The upgrade request [`RawClient::upgrade`] sends (RFC 6455's example key), without the final CRLF so
/// callers can add headers.
pub fn upgrade_request_head(addr: SocketAddr) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    )
}

/// A TCP connection to `addr` with [`READ_TIMEOUT`] on reads and writes.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads an HTTP response head byte by byte up to and including the blank line, so not one byte of what
/// follows (frames) is consumed.
pub fn read_http_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => panic!(
                "connection ended inside the response head: {:?}",
                String::from_utf8_lossy(&head)
            ),
            Err(e) => panic!(
                "reading the response head: {e}; got {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The status code of an HTTP response head.
pub fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"))
}

impl RawClient {
    /// Connects and upgrades with a well-formed request; panics unless the answer is `101`.
    pub fn upgrade(addr: SocketAddr) -> RawClient {
        let mut stream = tcp(addr);
        stream
            .write_all(format!("{}\r\n", upgrade_request_head(addr)).as_bytes())
            .expect("send the upgrade request");
        let head = read_http_head(&mut stream);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "expected 101 Switching Protocols, got {head:?}"
        );
        RawClient { stream }
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write {} bytes: {e}", bytes.len()));
    }

    /// Reads the next server frame; an error on a timeout, an early end or an invalid frame.
    pub fn read_frame(&mut self) -> io::Result<ServerFrame> {
        let frame = self.read_wire_frame()?;
        Ok(ServerFrame {
            fin: frame.fin(),
            opcode: frame.opcode(),
            payload: frame.payload,
        })
    }

    /// Reads the next server frame with its first byte whole (the RSV bits included); an error on a
    /// timeout, an early end or an invalid frame.
    pub fn read_wire_frame(&mut self) -> io::Result<WireFrame> {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head)?;
        if head[1] & 0x80 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the server masked a frame (RFC 6455 §5.1 forbids it)",
            ));
        }
        let len = match head[1] & 0x7f {
            126 => {
                let mut ext = [0u8; 2];
                self.stream.read_exact(&mut ext)?;
                u64::from(u16::from_be_bytes(ext))
            }
            127 => {
                let mut ext = [0u8; 8];
                self.stream.read_exact(&mut ext)?;
                u64::from_be_bytes(ext)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0; len as usize];
        self.stream.read_exact(&mut payload)?;
        Ok(WireFrame {
            first_byte: head[0],
            payload,
        })
    }

    /// The next server frame with its RSV bits; panics on anything but a frame within [`READ_TIMEOUT`].
    pub fn expect_wire_frame(&mut self) -> WireFrame {
        self.read_wire_frame()
            .unwrap_or_else(|e| panic!("expected a frame from the server: {e}"))
    }

    /// Connects and upgrades with a well-formed request plus `headers` (each `(name, value)` pair is one
    /// header line, so a name may repeat); panics unless the answer is `101`, and returns the client and
    /// the response head.
    pub fn upgrade_with_headers(addr: SocketAddr, headers: &[(&str, &str)]) -> (RawClient, String) {
        let mut request = upgrade_request_head(addr);
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut stream = tcp(addr);
        stream
            .write_all(request.as_bytes())
            .expect("send the upgrade request");
        let head = read_http_head(&mut stream);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "expected 101 Switching Protocols to {request:?}, got {head:?}"
        );
        (RawClient { stream }, head)
    }

    /// The next server frame; panics on anything but a frame within [`READ_TIMEOUT`].
    pub fn expect_frame(&mut self) -> ServerFrame {
        self.read_frame()
            .unwrap_or_else(|e| panic!("expected a frame from the server: {e}"))
    }

    /// The next frame must be a text message; returns it.
    pub fn expect_text(&mut self) -> String {
        let frame = self.expect_frame();
        assert_eq!(
            (frame.opcode, frame.fin),
            (0x1, true),
            "expected a text message, got {frame:?}"
        );
        frame.text()
    }

    /// Whether the server ends the TCP connection (end of stream or a reset) within [`READ_TIMEOUT`],
    /// discarding anything else it sends first. `false` on a timeout.
    pub fn connection_ends(&mut self) -> bool {
        ends_within(&mut self.stream, READ_TIMEOUT)
    }
}

/// Whether the server ends the TCP connection on `stream` (end of stream or a reset) within `limit`,
/// discarding anything else it sends first; `false` once `limit` has passed. The stream's read timeout is
/// [`READ_TIMEOUT`] again afterwards.
pub fn ends_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    let mut sink = [0u8; 4096];
    let ended = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut sink) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => panic!("{INTERRUPTED}: {e}"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break false
            }
            Err(_) => break true,
        }
    };
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    ended
}
