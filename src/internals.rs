//! The hot path, opened to the criterion benches in `benches/` and the fuzz targets in `tests/fuzz/`; not an
//! API (hidden, and compiled only with the `internals` feature, which only they enable).
//!
//! [`BenchCluster`] builds shards' state and socket-less sessions on the calling thread, so a broadcast can
//! be measured exactly as the server runs it, encode (and compress) once, local fan-out into every member's
//! queue, one crossbeam message per other shard, and that shard's fan-out, without the network in the
//! numbers.
//!
//! [`BenchWrites`] and [`BenchReceives`] hold sessions on real loopback connections, to measure the shard's
//! write and receive paths.
//!
//! It must not be used by the server itself.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use serde_json::{Map, Value};

use crate::admission::Admission;
use crate::config::Config;
use crate::dispatch::dispatch_text;
use crate::error::ProtocolError;
use crate::handler::Callbacks;
use crate::session::Session;
use crate::session_state::{SessionId, SessionState};
use crate::shard::home::Backing;
use crate::shard::mesh::{inbox, Peers};
use crate::shard::ring::{ShardRing, RING_ENTRIES};
use crate::shard::writer::Writer;
use crate::shard::{Shard, ShardConfig};
use crate::ws::codec::{apply_mask, Decoder, Flow, Inbound, Limits};
use crate::ws::deflate::Inflater;
use crate::ws::encode::{data_frame, DataKind};
use crate::ws::extensions;
use crate::ws::handshake::{respond, Agreed, Handshake, Offerable};

/// Unmasks (or masks) `payload` in place.
pub fn mask(payload: &mut [u8], key: [u8; 4]) {
    apply_mask(payload, key);
}

/// Encodes a server text frame, as a broadcast does once for all its recipients.
pub fn encode_text(text: &str) -> std::rc::Rc<[u8]> {
    data_frame(DataKind::Text, text.as_bytes())
}

/// A session's frame decoder, and the inflater its shard lends it when it negotiated permessage-deflate.
#[derive(Default)]
pub struct FrameDecoder(Decoder, Option<Inflater>);

impl FrameDecoder {
    /// The decoder of a session that negotiated permessage-deflate: it also takes compressed messages.
    pub fn with_deflate() -> FrameDecoder {
        FrameDecoder(Decoder::default(), Some(Inflater::new()))
    }

    /// Decodes (and unmasks in place) every frame in `input`; returns the payload bytes of the complete
    /// messages, which the benches feed to `black_box`.
    pub fn decode(&mut self, input: &mut [u8], max_message_size: usize) -> usize {
        let (bytes, error) = self.feed(input, max_message_size, u32::MAX);
        assert!(error.is_none(), "bench input is valid");
        bytes
    }

    /// Decodes whatever `input` holds, as a session's read would: the payload bytes of the complete
    /// messages handed out (a session acts on each as it comes, so those before an error count too) and
    /// the protocol error that would then close the session, if any (the fuzz targets' entry).
    pub fn feed(
        &mut self,
        input: &mut [u8],
        max_message_size: usize,
        max_frames: u32,
    ) -> (usize, Option<ProtocolError>) {
        let limits = Limits {
            max_message_size,
            max_frames,
        };
        let mut bytes = 0;
        let result = self.0.decode(input, limits, self.1.as_mut(), |message| {
            bytes += match message {
                Inbound::Text(text) => text.len(),
                Inbound::Binary(data) | Inbound::Ping(data) => data.len(),
                Inbound::Pong | Inbound::Close(_) => 0,
            };
            Flow::Continue
        });
        (bytes, result.err())
    }
}

/// The status the server answers the bytes of an upgrade request with: 101, 4xx, or `None` while the
/// request is incomplete (the fuzz targets' entry into the handshake).
pub fn upgrade_status(request: &[u8]) -> Option<u16> {
    let offerable = Offerable {
        deflate: true,
        subprotocols: &[],
    };
    match respond(request, offerable) {
        Handshake::Incomplete => None,
        Handshake::Accept { consumed, .. } => {
            assert!(consumed <= request.len(), "consumed past the input");
            Some(101)
        }
        Handshake::Reject { response, .. } => {
            let status = std::str::from_utf8(&response[9..12]).expect("a status line");
            Some(status.parse().expect("a numeric status"))
        }
    }
}

/// Shards and sessions without executors or sockets, all on the calling thread.
pub struct BenchCluster {
    shards: Vec<Rc<Shard>>,
    sessions: Vec<Session>,
    callbacks: Callbacks,
}

impl BenchCluster {
    /// `members[i]` sessions on shard `i`, every one a member of `room`. Callbacks count typed and raw
    /// messages into nothing (they only read their input), for the dispatch bench.
    pub fn new(members: &[usize], room: &str) -> BenchCluster {
        BenchCluster::build(members, room, false)
    }

    /// Like [`BenchCluster::new`], every session having negotiated permessage-deflate as a browser does.
    pub fn with_deflate(members: &[usize], room: &str) -> BenchCluster {
        BenchCluster::build(members, room, true)
    }

    fn build(members: &[usize], room: &str, deflate: bool) -> BenchCluster {
        let deflate = deflate
            .then(|| extensions::negotiate([&b"permessage-deflate; client_max_window_bits"[..]]))
            .flatten();
        let mut config = ShardConfig::new(&Config::default());
        config.websocket.max_backpressure = usize::MAX;
        config.bench_mode = true;
        let callbacks = Callbacks {
            on_message: Some(Box::new(|_, text: &str| {
                std::hint::black_box(text);
            })),
            on_typed_message: Some(Box::new(|_, kind: &str, payload: &Map<String, Value>| {
                std::hint::black_box((kind, payload));
            })),
            ..Callbacks::default()
        };
        let (senders, inboxes): (Vec<_>, Vec<_>) = members.iter().map(|_| inbox()).unzip();
        let peers = Peers::new(senders);
        let admission = Arc::new(Admission::new(&config.websocket));
        let deflate_sessions = Arc::default();
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        let mut shards = Vec::new();
        let mut sessions = Vec::new();
        for ((index, &count), inbox) in members.iter().enumerate().zip(inboxes) {
            let shard = Rc::new(Shard::new(
                index,
                config.clone(),
                admission.clone(),
                peers.clone(),
                inbox,
                Arc::clone(&deflate_sessions),
                Backing::Memory,
            ));
            for _ in 0..count {
                let agreed = Agreed {
                    deflate,
                    subprotocol: None,
                };
                let state = shard
                    .register(peer, None, agreed)
                    .expect("a bench holds few sessions");
                let session = Session::new(state, shard.clone());
                session.join_room(room).expect("no authorization hook");
                sessions.push(session);
            }
            shards.push(shard);
        }
        let cluster = BenchCluster {
            shards,
            sessions,
            callbacks,
        };
        // Joins go through the room's home shard and back before the members get broadcasts.
        cluster.deliver_posted();
        cluster
    }

    /// Broadcasts `text` to `room` from shard `from` as a session's callback would: through the room's home
    /// shard, which encodes (and compresses, for deflate sessions) once, delivers to its members and posts
    /// once to every other shard. [`BenchCluster::deliver_posted`] finishes it.
    pub fn broadcast(&self, from: usize, room: &str, text: &str) {
        let shard = &self.shards[from];
        shard.broadcast(room, DataKind::Text, text.as_bytes());
    }

    /// Sends `text` to every session on its own, as a server with a deflate context per session must:
    /// one compression per deflate recipient.
    pub fn send_to_each(&self, text: &str) {
        for session in &self.sessions {
            session.send_text(text);
        }
    }

    /// Every shard takes what was posted to it and delivers it to its members, as its sessions do. Two
    /// rounds: a broadcast from a shard that is not the room's home is posted there first, and the home
    /// shard's fan-out then posts to the others.
    pub fn deliver_posted(&self) {
        for _ in 0..2 {
            for shard in &self.shards {
                shard.deliver_posted();
            }
        }
    }

    /// Empties every session's queue as a completed write would; returns the bytes that were queued.
    pub fn drain_queues(&self) -> usize {
        self.sessions
            .iter()
            .map(|s| {
                let outbound = &s.state().outbound;
                let queued = outbound.queued();
                outbound.advance(queued);
                queued
            })
            .sum()
    }

    /// Routes one text message of the first session through dispatch, as the connection does.
    pub fn dispatch(&self, text: &str) {
        let session = &self.sessions[0];
        dispatch_text(&self.callbacks, session, text);
    }
}

/// Sessions on real loopback TCP connections with frames queued, to measure the write path: the shard's
/// writer (one io_uring submission for every session, [`crate::shard::writer`]) against a `sendmsg` per
/// session, the connection task's own write.
pub struct BenchWrites {
    ring: RefCell<ShardRing>,
    writer: Writer,
    sessions: Vec<Rc<SessionState>>,
    /// The server ends, which the sessions write to; kept open for as long as the sessions use them.
    _sockets: Vec<TcpStream>,
    /// The client ends, drained between rounds.
    clients: Vec<TcpStream>,
    read_buf: Vec<u8>,
}

impl BenchWrites {
    /// `n` sessions, each on a loopback TCP connection of its own.
    pub fn new(n: usize) -> BenchWrites {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("loopback listener");
        let addr = listener.local_addr().expect("bound");
        let mut sessions = Vec::with_capacity(n);
        let mut sockets = Vec::with_capacity(n);
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            let client = TcpStream::connect(addr).expect("connect");
            let (socket, peer) = listener.accept().expect("accept");
            socket.set_nodelay(true).expect("nodelay");
            client.set_nonblocking(true).expect("nonblocking");
            let id = SessionId::new(0, i, i as u64).expect("a small slot");
            let session = Rc::new(SessionState::new(id, peer, None, Agreed::default(), 0));
            session.attach_socket(socket.as_raw_fd());
            sessions.push(session);
            sockets.push(socket);
            clients.push(client);
        }
        BenchWrites {
            ring: RefCell::new(ShardRing::new().expect("an io_uring ring")),
            writer: Writer::new(true),
            sessions,
            _sockets: sockets,
            clients,
            read_buf: vec![0; 1 << 16],
        }
    }

    /// Queues `frame` for every session, as a broadcast does.
    pub fn queue(&self, frame: &Rc<[u8]>) {
        for session in &self.sessions {
            assert!(session.send(frame.clone(), usize::MAX, 0));
        }
    }

    /// Writes every session's queue through the shard's writer: one submission per [`RING_ENTRIES`].
    pub fn write_batched(&self) {
        for sessions in self.sessions.chunks(RING_ENTRIES) {
            self.writer
                .write(&mut self.ring.borrow_mut(), sessions)
                .expect("the ring writes");
        }
    }

    /// Writes every session's queue with a `sendmsg` of its own.
    pub fn write_each(&self) {
        for session in &self.sessions {
            let fd = session.socket().expect("attached");
            session
                .outbound
                .flush(fd, || Poll::Pending)
                .expect("loopback write");
        }
    }

    /// Reads everything the clients were sent; returns the bytes, and checks every queue was written.
    pub fn drain(&mut self) -> usize {
        assert!(self.sessions.iter().all(|s| s.outbound.is_empty()));
        let mut total = 0;
        for client in &mut self.clients {
            loop {
                match client.read(&mut self.read_buf) {
                    Ok(0) => break,
                    Ok(n) => total += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("loopback read: {e}"),
                }
            }
        }
        total
    }
}

/// How [`BenchReceives`] reads its connections.
#[derive(Clone, Copy, Debug)]
pub enum ReceivePath {
    /// Through a shard's ring, as the shard's receiving task does: a multishot receive armed on each
    /// connection, reaped together, each buffer given back, a receive ended for want of buffers armed
    /// again ([`crate::shard::ring`]).
    Ring,
    /// As every session's task did before: a readiness poll per connection (reaped together, as glommio
    /// does), then a `recv` for each, and its poll armed again.
    PollThenRecv,
    /// A `recv` for each, and nothing else: the floor of the readiness path.
    RecvOnly,
}

/// Loopback TCP connections whose server ends are read along one of the [`ReceivePath`]s.
pub struct BenchReceives {
    path: ReceivePath,
    /// The shard whose ring receives, with a session attached to each connection, for
    /// [`ReceivePath::Ring`].
    shard: Option<(Shard, Vec<Rc<SessionState>>)>,
    /// The readiness polls, for [`ReceivePath::PollThenRecv`].
    polls: Option<io_uring::IoUring>,
    /// The server ends, read by the bench.
    sockets: Vec<TcpStream>,
    /// The client ends, which send.
    clients: Vec<TcpStream>,
    read_buf: Vec<u8>,
    decoder: Decoder,
}

impl BenchReceives {
    /// `n` connections, read along `path`.
    pub fn new(n: usize, path: ReceivePath) -> BenchReceives {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("loopback listener");
        let addr = listener.local_addr().expect("bound");
        let mut shard = matches!(path, ReceivePath::Ring).then(|| {
            let config = ShardConfig::new(&Config::default());
            let admission = Arc::new(Admission::new(&config.websocket));
            let (sender, inbox) = inbox();
            let shard = Shard::new(
                0,
                config,
                admission,
                Peers::new(vec![sender]),
                inbox,
                Arc::default(),
                Backing::Memory,
            );
            (shard, Vec::with_capacity(n))
        });
        let mut polls = matches!(path, ReceivePath::PollThenRecv).then(|| {
            io_uring::IoUring::builder()
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_cqsize(2 * n as u32)
                .build(n.next_power_of_two() as u32)
                .expect("an io_uring ring")
        });
        let mut sockets = Vec::with_capacity(n);
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            let client = TcpStream::connect(addr).expect("connect");
            client.set_nodelay(true).expect("nodelay");
            let (socket, _) = listener.accept().expect("accept");
            if let Some((shard, states)) = &mut shard {
                let state = shard
                    .register(addr, None, Agreed::default())
                    .expect("a bench holds few sessions");
                assert!(
                    shard.attach(&state, socket.as_raw_fd()),
                    "the shard has a ring"
                );
                states.push(state);
            }
            if let Some(polls) = &mut polls {
                arm_poll(polls, &socket, i);
            }
            sockets.push(socket);
            clients.push(client);
        }
        if let Some(polls) = &mut polls {
            polls.submit().expect("arm the polls");
        }
        BenchReceives {
            path,
            shard,
            polls,
            sockets,
            clients,
            read_buf: vec![0; 1 << 16],
            decoder: Decoder::default(),
        }
    }

    /// Every client sends `bytes` (a client frame, say); they are in the server ends' receive queues when
    /// this returns (loopback delivers during the write).
    pub fn send(&mut self, bytes: &[u8]) {
        for client in &mut self.clients {
            client.write_all(bytes).expect("loopback write");
        }
    }

    /// Receives what every connection was sent and decodes it as client frames; returns the messages.
    pub fn receive(&mut self) -> usize {
        let BenchReceives {
            path,
            shard,
            polls,
            sockets,
            read_buf,
            decoder,
            ..
        } = self;
        let limits = Limits {
            max_message_size: 1 << 20,
            max_frames: 16,
        };
        let mut messages = 0;
        let mut count = |bytes: &mut [u8]| {
            decoder
                .decode(bytes, limits, None, |_| {
                    messages += 1;
                    Flow::Continue
                })
                .expect("valid frames");
        };
        let mut recv = |socket: &TcpStream, count: &mut dyn FnMut(&mut [u8])| {
            let buf = &mut *read_buf;
            // SAFETY: receives into `buf`, at most its length, without blocking.
            let n = unsafe {
                libc::recv(
                    socket.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            count(&mut buf[..usize::try_from(n).expect("bytes were waiting")]);
        };
        match path {
            ReceivePath::Ring => {
                let (shard, _) = shard.as_ref().expect("a shard");
                let mut received = 0;
                for _ in 0..1000 {
                    if received == sockets.len() {
                        break;
                    }
                    shard.take_received(|_, bytes| {
                        decoder
                            .decode(bytes, limits, None, |_| {
                                received += 1;
                                Flow::Continue
                            })
                            .expect("valid frames");
                    });
                }
                messages = received;
            }
            ReceivePath::PollThenRecv => {
                let polls = polls.as_mut().expect("polls");
                polls
                    .submit_and_wait(sockets.len())
                    .expect("the polls fire");
                let ready: Vec<usize> =
                    polls.completion().map(|c| c.user_data() as usize).collect();
                for i in ready {
                    recv(&sockets[i], &mut count);
                    arm_poll(polls, &sockets[i], i);
                }
                polls.submit().expect("arm the polls again");
            }
            ReceivePath::RecvOnly => {
                for socket in sockets.iter() {
                    recv(socket, &mut count);
                }
            }
        }
        messages
    }
}

/// Queues a one-shot readiness poll on `socket`, as glommio arms one for each stream.
fn arm_poll(polls: &mut io_uring::IoUring, socket: &TcpStream, i: usize) {
    let poll = io_uring::opcode::PollAdd::new(
        io_uring::types::Fd(socket.as_raw_fd()),
        libc::POLLIN as u32,
    )
    .build()
    .user_data(i as u64);
    // SAFETY: a poll points at no memory.
    unsafe { polls.submission().push(&poll) }.expect("room for every connection's poll");
}
