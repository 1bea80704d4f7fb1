//! One client connection: its socket, buffers and where it is in the chat protocol.
//!
//! Owns the per-connection state machine ([`Stage`]: connect → upgrade → welcome → join → ready → leave)
//! and what each server text means at each stage, word for word as the seed's app replies. Receipts are
//! parsed in place from the connection's read buffer and counted straight into the thread's tallies:
//! nothing is allocated per frame. On a permessage-deflate session a compressed message is inflated
//! into the thread's [`Inflater`] before it is read, and the session keeps inflate state of its own only
//! when the server keeps its window across messages. It does not decide when to publish, probe or churn
//! (see `driver`).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::codec::{self, OpCode};
use crate::handshake::{HandshakeError, Upgrade};
use crate::inflate::{Context, Inflater};
use crate::plan::{ClientPlan, Plan, MAX_FRAME};
use crate::stamp::{self, Stamp};
use crate::tally::{ErrorKind, Tally};
use crate::target::Target;
use crate::tracker::{Arrival, SeqTrack};

/// The seed's greeting, sent on open.
pub const WELCOME: &str = "welcome to Vix WebSocket chat";
/// Room for at least this much new data in every read into the thread's shared read buffer.
const READ_CHUNK: usize = 256 * 1024;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Not connected yet, or waiting in the connect queue.
    Idle,
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request sent, awaiting `101`.
    Upgrading,
    /// Upgraded, awaiting the welcome text.
    Welcome,
    /// `room.join` sent, awaiting `joined room: R`.
    Joining,
    /// Set up: receiving deliveries, may publish.
    Ready,
    /// `room.leave` sent (churners), awaiting `left room: R`.
    Leaving,
    /// Gone, by failure or by design.
    Closed,
}

impl Stage {
    /// Whether set-up is still in progress (the set-up deadline applies).
    pub fn is_setting_up(self) -> bool {
        matches!(
            self,
            Stage::Connecting | Stage::Upgrading | Stage::Welcome | Stage::Joining
        )
    }
}

/// Where receipts are counted: the thread's run tally and the current one-second interval.
pub struct Counting<'a> {
    /// The whole run.
    pub tally: &'a mut Tally,
    /// Latencies of the current second.
    pub interval_latency: &'a mut Histogram<u64>,
    /// Deliveries of the current second.
    pub interval_deliveries: &'a mut u64,
    /// Now, for latency ([`stamp::monotonic_ns`]).
    pub now_ns: u64,
}

/// What one read turn changed that the driver acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Set-up completed.
    pub ready: bool,
    /// The client's own message came back (churners wait for it before leaving).
    pub own_echo: bool,
    /// `left room: R` arrived.
    pub left: bool,
    /// `pong` arrived.
    pub pong: bool,
    /// Counted deliveries.
    pub deliveries: u64,
}

/// The socket and its buffers.
struct Io {
    stream: Option<TcpStream>,
    /// Received bytes not yet parsed: the start of a frame whose rest has not arrived. Reads go to the
    /// driver thread's shared buffer ([`ReadBuffer`]); only this remainder is kept per connection, so a
    /// connection holds no read buffer between bursts.
    carry: Vec<u8>,
    /// Bytes to send are `wbuf[wpos..]`.
    wbuf: Vec<u8>,
    wpos: usize,
    /// The masking key of every frame this connection sends.
    mask: [u8; 4],
}

/// One client slot's connection (a churner reuses its slot for each new connection).
pub struct Client {
    io: Io,
    /// Where it is in its life.
    pub stage: Stage,
    upgrade: Option<Upgrade>,
    /// How compressed messages are inflated, once the upgrade negotiated permessage-deflate; `None`:
    /// RSV1 is a protocol error.
    inflate: Option<Context>,
    /// Per publisher of its room: what arrived (counted members only).
    pub tracks: Vec<SeqTrack>,
    /// The next sequence number it will publish.
    pub seq: u64,
    /// When set-up must be complete ([`stamp::monotonic_ns`]).
    pub deadline_ns: u64,
    /// A churner's message is on its way back.
    pub awaiting_echo: bool,
    /// The probe ping was sent.
    pub probed: bool,
}

impl Client {
    /// An idle client for a slot; `publishers` sizes its receipt table when it is counted.
    pub fn new(slot_index: usize, slot: &ClientPlan, publishers: u32) -> Client {
        let seed = (slot_index as u32).wrapping_mul(0x9E37_79B9) ^ stamp::monotonic_ns() as u32;
        let tracks = if slot.counted {
            vec![SeqTrack::default(); publishers as usize]
        } else {
            Vec::new()
        };
        Client {
            io: Io {
                stream: None,
                carry: Vec::new(),
                wbuf: Vec::new(),
                wpos: 0,
                mask: (seed | 1).to_le_bytes(),
            },
            stage: Stage::Idle,
            upgrade: None,
            inflate: None,
            tracks,
            seq: 0,
            deadline_ns: 0,
            awaiting_echo: false,
            probed: false,
        }
    }

    /// Starts a non-blocking connect (bound to `source` when given, offering permessage-deflate when
    /// `deflate`) and returns the socket to register.
    pub fn connect(
        &mut self,
        target: &Target,
        source: Option<Ipv4Addr>,
        deadline_ns: u64,
        deflate: bool,
    ) -> io::Result<&mut TcpStream> {
        let domain = Domain::for_address(target.addr);
        let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket.set_nodelay(true)?;
        if let Some(ip) = source {
            // Let connect() pick the port per destination, so each source address offers its full
            // ephemeral range instead of reserving a port at bind time.
            set_bind_address_no_port(&socket)?;
            socket.bind(&SocketAddr::new(IpAddr::V4(ip), 0).into())?;
        }
        match socket.connect(&target.addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        self.io.carry.clear();
        self.io.wbuf.clear();
        self.io.wpos = 0;
        self.stage = Stage::Connecting;
        self.upgrade = Some(Upgrade::new(target, deflate));
        self.inflate = None;
        self.deadline_ns = deadline_ns;
        self.awaiting_echo = false;
        let stream = self.io.stream.insert(TcpStream::from_std(socket.into()));
        Ok(stream)
    }

    /// Closes the socket (deregistration happens when the descriptor closes) and frees its buffers'
    /// contents; capacity is kept for a churner's next connection.
    pub fn close(&mut self) {
        self.io.stream = None;
        self.stage = Stage::Closed;
        self.upgrade = None;
        self.inflate = None;
        self.io.carry.clear();
        self.io.wbuf.clear();
        self.io.wpos = 0;
    }

    /// The socket is writable: finish connecting, then flush.
    pub fn on_writable(&mut self) -> Result<(), ErrorKind> {
        if self.stage == Stage::Connecting {
            let stream = self.io.stream.as_ref().ok_or(ErrorKind::Other)?;
            if let Some(e) = stream.take_error().map_err(|e| ErrorKind::of(&e))? {
                return Err(ErrorKind::of(&e));
            }
            match stream.peer_addr() {
                Ok(_) => {}
                // Spurious wake-up: still connecting.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(ErrorKind::of(&e)),
            }
            let request = &self.upgrade.as_ref().ok_or(ErrorKind::Other)?.request;
            self.io.wbuf.extend_from_slice(request);
            self.stage = Stage::Upgrading;
        }
        self.flush()
    }

    /// Writes as much of the pending output as the socket takes.
    pub fn flush(&mut self) -> Result<(), ErrorKind> {
        let Some(stream) = self.io.stream.as_mut() else {
            return Ok(());
        };
        if self.stage == Stage::Connecting {
            return Ok(());
        }
        while self.io.wpos < self.io.wbuf.len() {
            match stream.write(&self.io.wbuf[self.io.wpos..]) {
                Ok(0) => return Err(ErrorKind::Closed),
                Ok(n) => self.io.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ErrorKind::of(&e)),
            }
        }
        self.io.wbuf.clear();
        self.io.wpos = 0;
        Ok(())
    }

    /// Queues one text frame and tries to send it now.
    pub fn send_text(&mut self, text: &[u8]) -> Result<(), ErrorKind> {
        codec::push_frame(&mut self.io.wbuf, OpCode::Text, text, self.io.mask);
        self.flush()
    }

    /// Reads everything available and acts on each complete frame; compressed messages are inflated
    /// into `inflater`, the thread's.
    pub fn on_readable(
        &mut self,
        plan: &Plan,
        slot: &ClientPlan,
        counting: &mut Counting<'_>,
        read_buf: &mut ReadBuffer,
        inflater: &mut Inflater,
    ) -> Result<Progress, ErrorKind> {
        let mut progress = Progress::default();
        loop {
            let carried = self.io.carry.len();
            let buf = read_buf.with_room(carried);
            let Some(stream) = self.io.stream.as_mut() else {
                return Ok(progress);
            };
            // New bytes go after room for the carried start of a frame, which is copied in only when
            // something arrived.
            match stream.read(&mut buf[carried..]) {
                Ok(0) => return Err(ErrorKind::Closed),
                Ok(n) => {
                    counting.tally.bytes_received += n as u64;
                    buf[..carried].copy_from_slice(&self.io.carry);
                    let total = carried + n;
                    let mut frames = Frames {
                        plan,
                        slot,
                        progress: &mut progress,
                        inflater,
                    };
                    let used = self.parse_frames(&buf[..total], counting, &mut frames)?;
                    if total - used > MAX_FRAME + 14 {
                        return Err(ErrorKind::Protocol);
                    }
                    self.io.carry.clear();
                    self.io.carry.extend_from_slice(&buf[used..total]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ErrorKind::of(&e)),
            }
        }
        self.flush()?;
        Ok(progress)
    }

    /// Acts on every complete frame in `buf`; returns how many bytes that used.
    fn parse_frames(
        &mut self,
        buf: &[u8],
        counting: &mut Counting<'_>,
        frames: &mut Frames<'_>,
    ) -> Result<usize, ErrorKind> {
        let mut start = 0;
        if self.stage == Stage::Upgrading {
            let upgrade = self.upgrade.as_ref().ok_or(ErrorKind::Other)?;
            match upgrade.check(buf) {
                Ok(None) => return Ok(0),
                Ok(Some(accepted)) => {
                    start = accepted.used;
                    self.stage = Stage::Welcome;
                    self.upgrade = None;
                    counting.tally.connects += 1;
                    if let Some(deflate) = accepted.deflate {
                        counting.tally.deflate_negotiated += 1;
                        self.inflate = Some(Context::for_session(&deflate));
                    }
                }
                Err(HandshakeError::DeflateRefused) => return Err(ErrorKind::DeflateRefused),
                Err(_) => return Err(ErrorKind::Handshake),
            }
        }
        loop {
            let frame = match codec::parse(&buf[start..], MAX_FRAME, self.inflate.is_some()) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return Err(ErrorKind::Protocol),
            };
            let payload = &buf[start + frame.payload.start..start + frame.payload.end];
            match frame.opcode {
                OpCode::Text | OpCode::Binary => {
                    let message = if frame.compressed {
                        // The codec passes RSV1 only on a session that negotiated deflate.
                        let context = self.inflate.as_mut().ok_or(ErrorKind::Protocol)?;
                        counting.tally.messages_compressed += 1;
                        frames
                            .inflater
                            .inflate(context, payload, MAX_FRAME)
                            .map_err(|_| ErrorKind::Protocol)?
                    } else {
                        counting.tally.messages_plain += 1;
                        payload
                    };
                    counting.tally.message_bytes += message.len() as u64;
                    if frame.opcode == OpCode::Binary {
                        counting.tally.unexpected += 1;
                    } else {
                        let mut turn = Turn {
                            stage: &mut self.stage,
                            tracks: &mut self.tracks,
                            awaiting_echo: &mut self.awaiting_echo,
                            out: &mut self.io.wbuf,
                            mask: self.io.mask,
                        };
                        turn.on_text(message, frames.plan, frames.slot, counting, frames.progress)?;
                    }
                }
                OpCode::Ping => {
                    codec::push_frame(&mut self.io.wbuf, OpCode::Pong, payload, self.io.mask)
                }
                OpCode::Close => return Err(ErrorKind::Closed),
                OpCode::Pong => {}
            }
            start += frame.len;
        }
        Ok(start)
    }
}

/// What one read turn's frames are read against and report into, besides the connection and the tallies.
struct Frames<'a> {
    plan: &'a Plan,
    slot: &'a ClientPlan,
    progress: &'a mut Progress,
    /// The thread's: compressed messages are inflated here (see `inflate`).
    inflater: &'a mut Inflater,
}

/// One driver thread's read buffer, shared by all its connections: a read fetches a whole burst of
/// frames with one syscall whatever the connection, and no connection holds a buffer of its own.
#[derive(Default)]
pub struct ReadBuffer(Vec<u8>);

impl ReadBuffer {
    /// The buffer, with room for `carried` bytes and then at least [`READ_CHUNK`] more.
    fn with_room(&mut self, carried: usize) -> &mut [u8] {
        if self.0.len() < carried + READ_CHUNK {
            self.0.resize(carried + READ_CHUNK, 0);
        }
        &mut self.0
    }
}

/// The fields one text frame may change, borrowed apart from the read buffer the text lives in.
struct Turn<'a> {
    stage: &'a mut Stage,
    tracks: &'a mut [SeqTrack],
    awaiting_echo: &'a mut bool,
    out: &'a mut Vec<u8>,
    mask: [u8; 4],
}

impl Turn<'_> {
    fn on_text(
        &mut self,
        text: &[u8],
        plan: &Plan,
        slot: &ClientPlan,
        counting: &mut Counting<'_>,
        progress: &mut Progress,
    ) -> Result<(), ErrorKind> {
        let room = slot.room.map(|r| plan.rooms[r as usize].name.as_bytes());
        match *self.stage {
            Stage::Welcome => {
                if text != WELCOME.as_bytes() {
                    return Err(ErrorKind::Protocol);
                }
                match room {
                    Some(room) => {
                        let mut join = Vec::with_capacity(48 + room.len());
                        join.extend_from_slice(b"{\"type\":\"room.join\",\"payload\":{\"room\":\"");
                        join.extend_from_slice(room);
                        join.extend_from_slice(b"\"}}");
                        codec::push_frame(self.out, OpCode::Text, &join, self.mask);
                        *self.stage = Stage::Joining;
                    }
                    None => {
                        *self.stage = Stage::Ready;
                        progress.ready = true;
                    }
                }
            }
            Stage::Joining => {
                if text.strip_prefix(b"joined room: ") != room {
                    return Err(ErrorKind::Protocol);
                }
                *self.stage = Stage::Ready;
                progress.ready = true;
            }
            Stage::Ready | Stage::Leaving => {
                if let Some(stamp) = room.and_then(|room| delivery(text, room)) {
                    self.on_delivery(stamp, slot, counting, progress);
                } else if text == b"pong" {
                    progress.pong = true;
                } else if *self.stage == Stage::Leaving && text.strip_prefix(b"left room: ") == room
                {
                    progress.left = true;
                } else {
                    counting.tally.unexpected += 1;
                }
            }
            Stage::Idle | Stage::Connecting | Stage::Upgrading | Stage::Closed => {
                return Err(ErrorKind::Protocol)
            }
        }
        Ok(())
    }

    fn on_delivery(
        &mut self,
        stamp: Stamp,
        slot: &ClientPlan,
        counting: &mut Counting<'_>,
        progress: &mut Progress,
    ) {
        if *self.awaiting_echo && slot.publisher == Some(stamp.publisher) {
            *self.awaiting_echo = false;
            progress.own_echo = true;
        }
        if !slot.counted {
            return;
        }
        let Some(track) = self.tracks.get_mut(stamp.publisher as usize) else {
            counting.tally.unexpected += 1;
            return;
        };
        match track.record(stamp.seq) {
            Arrival::InOrder => {}
            Arrival::Late => counting.tally.late += 1,
            Arrival::Duplicate => counting.tally.duplicates += 1,
        }
        let micros = (counting.now_ns.saturating_sub(stamp.sent_ns) / 1000).max(1);
        counting.tally.latency.saturating_record(micros);
        counting.interval_latency.saturating_record(micros);
        counting.tally.deliveries += 1;
        *counting.interval_deliveries += 1;
        progress.deliveries += 1;
    }
}

/// The stamp of `room R: <stamp>` when R is `room`.
fn delivery(text: &[u8], room: &[u8]) -> Option<Stamp> {
    let rest = text.strip_prefix(b"room ")?.strip_prefix(room)?;
    stamp::parse(rest.strip_prefix(b": ")?)
}

fn set_bind_address_no_port(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a correctly sized int option value.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_are_recognised_only_for_the_own_room() {
        let s = delivery(b"room r1: 2:5:77:xx", b"r1").unwrap();
        assert_eq!((s.publisher, s.seq, s.sent_ns), (2, 5, 77));
        assert_eq!(delivery(b"room r10: 2:5:77:xx", b"r1"), None);
        assert_eq!(delivery(b"joined room: r1", b"r1"), None);
    }
}
