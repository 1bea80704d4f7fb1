//! The `smoke` scenario: the seed's chat protocol, reply by reply, on two blocking connections.
//!
//! Owns the list of steps and the exact reply each must produce (the seed's words, as `src/app/`
//! answers them). Each step is bounded by a read timeout, and the first failure stops the run, because
//! later steps depend on earlier ones. It shares the frame codec, the upgrade check and inflating with
//! the load scenarios so that a smoke pass also vouches for the harness's own client; with `--deflate`
//! both connections offer permessage-deflate, must get it, and read compressed replies inflated.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::client::WELCOME;
use crate::codec::{self, OpCode};
use crate::handshake::Upgrade;
use crate::inflate::{Context, Inflater};
use crate::plan::MAX_FRAME;
use crate::report::{Report, Step};
use crate::target::Target;

/// How long any one reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
const ROOM: &str = "smoke";

/// Runs every step against `target`, offering permessage-deflate when `deflate`.
pub fn run(target: &Target, deflate: bool) -> Report {
    let mut steps = Vec::new();
    if let Err(detail) = walk(target, deflate, &mut steps) {
        // An empty detail means the failing step is already recorded.
        if !detail.is_empty() {
            steps.push(Step {
                name: "connection".to_owned(),
                ok: false,
                detail: Some(detail),
            });
        }
    }
    let mut report = Report {
        scenario: "smoke".to_owned(),
        url: format!("ws://{}{}", target.host_header, target.path),
        threads: 1,
        deflate,
        steps,
        ..Report::default()
    };
    report.judge(false);
    report
}

/// The steps in order; `Err` carries what went wrong in the step being attempted.
fn walk(target: &Target, deflate: bool, steps: &mut Vec<Step>) -> Result<(), String> {
    let mut check = |name: &str, result: Result<(), String>| -> Result<(), String> {
        let ok = result.is_ok();
        steps.push(Step {
            name: name.to_owned(),
            ok,
            detail: result.clone().err(),
        });
        // A failed step is already recorded; the caller must not record it again.
        result.map_err(|_| String::new())
    };
    let mut a = Conn::open(target, deflate).map_err(|e| format!("connect: {e}"))?;
    check("upgrade and welcome", a.expect(WELCOME))?;
    a.send("ping").map_err(|e| e.to_string())?;
    check("ping -> pong", a.expect("pong"))?;
    a.send(&join(ROOM)).map_err(|e| e.to_string())?;
    check(
        "room.join -> joined room",
        a.expect(&format!("joined room: {ROOM}")),
    )?;
    let mut b = Conn::open(target, deflate).map_err(|e| format!("second connection: {e}"))?;
    check("second client welcome", b.expect(WELCOME))?;
    b.send(&join(ROOM)).map_err(|e| e.to_string())?;
    check(
        "second client joins",
        b.expect(&format!("joined room: {ROOM}")),
    )?;
    a.send(&chat(ROOM, "hello from smoke"))
        .map_err(|e| e.to_string())?;
    let delivery = format!("room {ROOM}: hello from smoke");
    check("chat.message -> sender receives", a.expect(&delivery))?;
    check("chat.message -> member receives", b.expect(&delivery))?;
    a.send(&chat(ROOM, "")).map_err(|e| e.to_string())?;
    check(
        "empty text rejected",
        a.expect("message rejected: empty text"),
    )?;
    a.send(r#"{"type":"no.such","payload":{}}"#)
        .map_err(|e| e.to_string())?;
    check(
        "unknown type named",
        a.expect("unknown message type: no.such"),
    )?;
    a.send(&format!(
        r#"{{"type":"room.leave","payload":{{"room":"{ROOM}"}}}}"#
    ))
    .map_err(|e| e.to_string())?;
    check(
        "room.leave -> left room",
        a.expect(&format!("left room: {ROOM}")),
    )?;
    b.send(&chat(ROOM, "after leave"))
        .map_err(|e| e.to_string())?;
    check(
        "member still receives",
        b.expect(&format!("room {ROOM}: after leave")),
    )?;
    // If `a` still got room traffic, it would arrive before this pong.
    a.send("ping").map_err(|e| e.to_string())?;
    check("left member gets nothing more", a.expect("pong"))?;
    check("close handshake", a.close())?;
    Ok(())
}

fn join(room: &str) -> String {
    format!(r#"{{"type":"room.join","payload":{{"room":"{room}"}}}}"#)
}

fn chat(room: &str, text: &str) -> String {
    format!(r#"{{"type":"chat.message","payload":{{"room":"{room}","text":"{text}"}}}}"#)
}

/// A blocking client connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Set once the upgrade negotiated permessage-deflate.
    inflate: Option<Context>,
    inflater: Inflater,
}

impl Conn {
    /// Connects and upgrades, offering permessage-deflate when `deflate` (then refusing an answer
    /// without it).
    fn open(target: &Target, deflate: bool) -> io::Result<Conn> {
        let mut stream = TcpStream::connect_timeout(&target.addr, REPLY_TIMEOUT)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let upgrade = Upgrade::new(target, deflate);
        stream.write_all(&upgrade.request)?;
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
            inflate: None,
            inflater: Inflater::default(),
        };
        loop {
            match upgrade.check(&conn.buf) {
                Ok(Some(accepted)) => {
                    conn.buf.drain(..accepted.used);
                    conn.inflate = accepted.deflate.as_ref().map(Context::for_session);
                    return Ok(conn);
                }
                Ok(None) => conn.fill()?,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = loop {
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn send(&mut self, text: &str) -> io::Result<()> {
        self.send_frame(OpCode::Text, text.as_bytes())
    }

    fn send_frame(&mut self, opcode: OpCode, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::new();
        codec::push_frame(&mut out, opcode, payload, [0x5a, 0xa5, 0x3c, 0xc3]);
        self.stream.write_all(&out)
    }

    /// The next data or close frame, answering pings on the way.
    fn next_frame(&mut self) -> Result<(OpCode, Vec<u8>), String> {
        loop {
            let deflate = self.inflate.is_some();
            match codec::parse(&self.buf, MAX_FRAME, deflate).map_err(|e| e.to_string())? {
                Some(frame) => {
                    let raw = &self.buf[frame.payload.clone()];
                    let payload = match self.inflate.as_mut().filter(|_| frame.compressed) {
                        Some(context) => self
                            .inflater
                            .inflate(context, raw, MAX_FRAME)
                            .map_err(|e| e.to_string())?
                            .to_vec(),
                        None => raw.to_vec(),
                    };
                    self.buf.drain(..frame.len);
                    match frame.opcode {
                        OpCode::Ping => self
                            .send_frame(OpCode::Pong, &payload)
                            .map_err(|e| e.to_string())?,
                        OpCode::Pong => {}
                        other => return Ok((other, payload)),
                    }
                }
                None => self.fill().map_err(|e| match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        format!("no reply within {} s", REPLY_TIMEOUT.as_secs())
                    }
                    _ => e.to_string(),
                })?,
            }
        }
    }

    /// The next message must be the text `want`.
    fn expect(&mut self, want: &str) -> Result<(), String> {
        match self.next_frame()? {
            (OpCode::Text, got) if got == want.as_bytes() => Ok(()),
            (OpCode::Text, got) => Err(format!(
                "expected `{want}`, got `{}`",
                String::from_utf8_lossy(&got)
            )),
            (other, _) => Err(format!("expected `{want}`, got a {other:?} frame")),
        }
    }

    /// Sends close 1000 and expects the server's close frame.
    fn close(&mut self) -> Result<(), String> {
        self.send_frame(OpCode::Close, &1000u16.to_be_bytes())
            .map_err(|e| e.to_string())?;
        match self.next_frame()? {
            (OpCode::Close, _) => Ok(()),
            (other, _) => Err(format!("expected a close frame, got {other:?}")),
        }
    }
}
