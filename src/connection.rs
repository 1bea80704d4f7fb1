//! One connection's life: the handshake task, then the session task with its read/write loop and close
//! handshake, then cleanup.
//!
//! Each accepted socket lives on the shard that accepted it. A short task reads and answers the upgrade
//! through glommio; the session then takes the socket from glommio ([`TcpStream::into_std`]) and gets a
//! task of its own, whose future holds only the session handle and that socket.
//!
//! Most of a session's I/O is not its task's. Reads: the shard's ring receives for every session at once
//! (one multishot receive each, [`crate::shard::ring`]), and the shard's receiving task
//! ([`receive_loop`]) hands the bytes to [`process`]: decoding, then dispatch, in the receiving task.
//! Writes: frames are written by the shard's writer ([`crate::shard::writer`]), for every session at
//! once. The session task is woken only when something needs it: the writer hands back what the socket
//! would not take (the task writes it, waiting for writability through glommio), the lifecycle moved (a
//! close to finish, a slow consumer to report, an abort), or the stream ended. So an idle session is its
//! [`SessionState`], its suspended task and one request in the kernel: 365 B of RSS per connection with
//! 19,000 held (995-1,011 B while each kept a glommio readiness poll armed and its glommio stream).
//! Without a ring (the kernel refused one) the task reads for itself: `recv` on readiness, through glommio.
//! The shutdown pass must live inside the session's own async block: glommio's `Gate::spawn` wraps a
//! future in one that stores it twice.
//!
//! The close handshake is [`Lifecycle`]'s: this task acts on its predicates (what to read, whether to
//! write, when to shut the write side, when to end). This task is also where every session error is
//! reported to `on_error`: protocol and socket errors as they happen, and a slow consumer, which its shard
//! found during a fan-out and recorded in the lifecycle, on the task's next turn.
//!
//! The session task holds a pass of its shard's gate, so shutdown waits for its close handshake.
//!
//! Timeouts other than the handshake's are the shard's sweep ([`crate::shard`]); this task owns none, so
//! an idle session costs no timer.
//!
//! It must not interpret messages beyond the protocol: text goes to [`crate::dispatch`].

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::sync::{Gate, Pass};

use crate::admission::Refused;
use crate::auth::{Identity, UpgradeRequest};
use crate::dispatch::dispatch_text;
use crate::error::SessionError;
use crate::handler::{guarded, Callbacks};
use crate::lifecycle::{AfterFlush, Lifecycle};
use crate::metrics::HandshakeFailure;
use crate::rate_limit::{RateLimiter, Verdict};
use crate::session::Session;
use crate::session_state::Receiving;
use crate::shard::Shard;
use crate::ws::codec::{Decoder, Flow, Inbound, Limits};
use crate::ws::encode;
use crate::ws::handshake::{self, Agreed, Handshake, Offerable, Request};

/// What a message over the rate limit is answered with.
pub(crate) const RATE_LIMIT_REPLY: &str = "message rejected: rate limit";

/// What woke the connection task.
enum Event {
    /// `n` bytes are in the shard's read buffer.
    Read(usize),
    /// The shard found the session a slow consumer with this many bytes queued; `on_error` is to be told.
    SlowConsumer(u32),
    /// The session is over: the peer closed, the close handshake finished, or it was aborted.
    Closed,
    /// The socket failed.
    Failed(io::Error),
}

/// The socket of one open session; only its task touches it.
struct Io {
    /// This task's wait for the socket to be readable (only when it reads itself) and writable (only
    /// while a write waits for room); declared before the socket, so a pending wait is cancelled
    /// before the socket closes.
    readable: Option<Readiness>,
    writable: Option<Readiness>,
    /// Taken from glommio after the handshake ([`TcpStream::into_std`]), so that no readiness poll of
    /// glommio's stays armed for the session's life: the shard's ring receives, its writer sends, and
    /// this task waits for readiness only while it has to.
    socket: std::net::TcpStream,
    /// The shard has no ring to receive through: this task reads the socket itself.
    reads_itself: bool,
}

/// A wait for a socket's readiness through glommio's ring.
type Readiness = Pin<Box<dyn Future<Output = io::Result<()>>>>;

/// Polls the readiness wait in `slot`, starting it with `wait` when there is none; a finished wait is
/// cleared, so the next one starts afresh.
fn poll_ready<F>(
    slot: &mut Option<Readiness>,
    cx: &mut Context<'_>,
    wait: impl FnOnce() -> F,
) -> Poll<io::Result<()>>
where
    F: Future<Output = io::Result<()>> + 'static,
{
    let ready = slot
        .get_or_insert_with(|| Box::pin(wait()))
        .as_mut()
        .poll(cx);
    if ready.is_ready() {
        *slot = None;
    }
    ready
}

/// Runs the opening handshake of an accepted connection; an upgraded session then gets a task of its own,
/// holding a pass of `sessions` (a session upgraded once shutdown has begun is dropped).
///
/// Two tasks rather than one because an async fn's future is as large as the state of all its awaits and
/// lives as long as the task: the handshake's buffers, timer and writes die with this short task, and the
/// session's task, which may live for days, holds the session handle and its [`Io`] and nothing else.
pub(crate) async fn run(
    shard: Rc<Shard>,
    callbacks: Arc<Callbacks>,
    sessions: Gate,
    stream: TcpStream,
) {
    let Some(Upgraded {
        peer,
        identity,
        agreed,
        early_frames,
        io,
    }) = upgrade(&shard, &callbacks, stream).await
    else {
        return;
    };
    shard.count(|t| t.socket_bytes_read += early_frames.len() as u64);
    let Ok(pass) = sessions.enter() else {
        shard.count(|t| t.handshake_failed(HandshakeFailure::NotServed));
        tracing::debug!(shard = shard.index(), "upgraded during shutdown; dropped");
        shard.admission().leave(peer.ip());
        return;
    };
    let Some(state) = shard.register(peer, identity, agreed) else {
        shard.count(|t| t.handshake_failed(HandshakeFailure::NotServed));
        tracing::warn!(
            shard = shard.index(),
            "2^24 sessions on one shard; connection dropped"
        );
        shard.admission().leave(peer.ip());
        return;
    };
    state.receiving.borrow_mut().decoder = Decoder::with_input(early_frames);
    let session = Session::new(state, shard);
    glommio::spawn_local(serve(session, callbacks, io, pass)).detach();
}

/// A session's whole life after the handshake.
///
/// An async block that uses its captures in place, not an async fn: an async fn moves its arguments
/// into locals, which doubles the space the socket state takes in the future.
#[expect(clippy::manual_async_fn, reason = "an async fn would store `io` twice")]
fn serve(
    session: Session,
    callbacks: Arc<Callbacks>,
    mut io: Io,
    pass: Pass,
) -> impl std::future::Future<Output = ()> {
    async move {
        // The shard's writer writes to the socket and its ring receives from it, until this is dropped:
        // before `io` is, on every way out of this block, completion or cancellation (locals drop
        // before captures).
        let _lent = LentSocket::new(&session, &mut io);
        open(&session, &callbacks);
        loop {
            match poll_fn(|cx| poll_event(&session, &mut io, cx)).await {
                Event::Read(n) => {
                    let filled = session.owner().with_read_buf(|buf| {
                        process(&session, &callbacks, &mut buf[..n]);
                        n == buf.len()
                    });
                    if filled {
                        // More is probably waiting: let the shard's other sessions run before reading
                        // it, so one flooding client cannot stall the rest.
                        futures_lite::future::yield_now().await;
                    }
                }
                Event::SlowConsumer(queued) => {
                    session.owner().count(|t| t.slow_consumers += 1);
                    session.state().transition(Lifecycle::cause_reported);
                    let limit = session.owner().settings().max_backpressure;
                    let error = SessionError::SlowConsumer {
                        queued: queued as usize,
                        limit,
                    };
                    report(&session, &callbacks, &error);
                }
                Event::Closed => break,
                Event::Failed(e) => {
                    if session.is_open() {
                        report(&session, &callbacks, &SessionError::Io(e));
                    }
                    break;
                }
            }
        }
        end(&session, &callbacks);
        // Shutdown waits for this: the session's close handshake is over.
        drop(pass);
    }
}

/// The session's socket, lent to its shard (its writer sends, its ring receives) for as long as this
/// lives.
struct LentSocket<'a>(&'a Session);

impl<'a> LentSocket<'a> {
    fn new(session: &'a Session, io: &mut Io) -> LentSocket<'a> {
        let fd = io.socket.as_raw_fd();
        io.reads_itself = !session.owner().attach(session.state(), fd);
        LentSocket(session)
    }
}

impl Drop for LentSocket<'_> {
    fn drop(&mut self) {
        self.0.owner().detach(self.0.state());
    }
}

/// The shard's receiving task: hands what its sessions' sockets received, reaped from the shard's ring
/// for all of them at once, to each session ([`process`]). A session whose stream ended, or which the
/// bytes closed, has its own task woken to finish.
pub(crate) async fn receive_loop(shard: Rc<Shard>, callbacks: Arc<Callbacks>) {
    loop {
        shard.wait_for_received().await;
        let more = shard.take_received(|state, bytes| {
            // What other shards posted before these bytes were sent is handled first: the client may be
            // answering what followed it (a room homed here got a publication from another shard, whose
            // sender then told this client), and a room's order must follow cause and effect.
            shard.deliver_posted();
            let session = Session::new(state.clone(), shard.clone());
            process(&session, &callbacks, bytes);
            if !state.is_open() {
                state.wake();
            }
        });
        if more {
            // A flood of arrivals: let the writer and the sweep run before the next pass.
            futures_lite::future::yield_now().await;
        }
    }
}

/// A connection the handshake made a session of.
struct Upgraded {
    peer: SocketAddr,
    /// What the authentication hook said it is.
    identity: Option<Identity>,
    /// What the upgrade agreed to: permessage-deflate, a subprotocol.
    agreed: Agreed,
    /// Bytes that followed the upgrade request: frames a client sent without waiting.
    early_frames: Vec<u8>,
    io: Io,
}

/// Reads the upgrade request within `SERVER_REQUEST_TIMEOUT` and answers it. Returns the upgraded session's
/// peer, identity, extension and socket state (bytes that followed the request, frames a client sent
/// without waiting, are the decoder's first input), or `None` when the connection is refused, timed out or
/// gone.
async fn upgrade(shard: &Shard, callbacks: &Callbacks, mut stream: TcpStream) -> Option<Upgraded> {
    let Ok(peer) = stream.peer_addr() else {
        // Gone before it was looked at.
        shard.count(|t| t.handshake_failed(HandshakeFailure::Disconnected));
        return None;
    };
    // Frames are small and latency matters more than packet count; batching is done by `Outbound`.
    let _ = stream.set_nodelay(true);
    let exchange = async {
        let mut request = Vec::new();
        loop {
            let room_left = handshake::MAX_REQUEST_LEN + 1 - request.len();
            let n = poll_fn(|cx| {
                shard.with_read_buf(|buf| {
                    let limit = room_left.min(buf.len());
                    let polled = Pin::new(&mut stream).poll_read(cx, &mut buf[..limit]);
                    if let Poll::Ready(Ok(n)) = polled {
                        request.extend_from_slice(&buf[..n]);
                    }
                    polled
                })
            })
            .await?;
            if n == 0 {
                shard.count(|t| t.handshake_failed(HandshakeFailure::Disconnected));
                return Ok(None);
            }
            let offerable = Offerable {
                deflate: shard.settings().enable_deflate,
                subprotocols: &shard.config().subprotocols,
            };
            match handshake::respond(&request, offerable) {
                Handshake::Incomplete => continue,
                Handshake::Accept {
                    request: upgrade,
                    response,
                    consumed,
                    agreed,
                } => {
                    let identity = match admit(shard, callbacks, &upgrade, peer) {
                        Ok(identity) => identity,
                        Err(refused) => {
                            let failure = HandshakeFailure::of_status(refused.status);
                            shard.count(|t| t.handshake_failed(failure));
                            tracing::debug!(shard = shard.index(), %peer, reason = %refused.reason, "upgrade refused");
                            let answer = handshake::refusal(
                                refused.status,
                                refused.text,
                                &refused.reason,
                                &[],
                            );
                            let _ = stream.write_all(&answer).await;
                            return Ok(None);
                        }
                    };
                    if let Err(e) = stream.write_all(&response).await {
                        shard.admission().leave(peer.ip());
                        return Err(e.into());
                    }
                    request.drain(..consumed);
                    return Ok(Some((request, identity, agreed)));
                }
                Handshake::Reject { response, reason } => {
                    shard.count(|t| t.handshake_failed(HandshakeFailure::InvalidRequest));
                    tracing::debug!(shard = shard.index(), %reason, "upgrade refused");
                    let _ = stream.write_all(&response).await;
                    return Ok(None);
                }
            }
        }
    };
    let (early_frames, identity, agreed) =
        match glommio::timer::timeout(shard.config().request_timeout, exchange).await {
            Ok(Some(admitted)) => admitted,
            Ok(None) => return None,
            Err(e) => {
                let failure = match e {
                    glommio::GlommioError::TimedOut(_) => HandshakeFailure::Timeout,
                    _ => HandshakeFailure::Disconnected,
                };
                shard.count(|t| t.handshake_failed(failure));
                tracing::debug!(shard = shard.index(), error = %e, "upgrade not completed");
                return None;
            }
        };
    let io = Io {
        socket: stream.into_std(),
        reads_itself: true,
        readable: None,
        writable: None,
    };
    Some(Upgraded {
        peer,
        identity,
        agreed,
        early_frames,
        io,
    })
}

/// Whether the valid upgrade `request` from `peer` may become a session: its origin, the application's
/// authentication hook (which gives its identity), then the connection budgets, which count it from here
/// on (see [`crate::admission`]). Budgets come last so that a refused client spends none.
fn admit(
    shard: &Shard,
    callbacks: &Callbacks,
    request: &Request,
    peer: SocketAddr,
) -> Result<Option<Identity>, Refused> {
    let admission = shard.admission();
    admission.check_origin(request)?;
    let identity = match &callbacks.authenticate {
        None => None,
        Some(authenticate) => {
            let upgrade = UpgradeRequest::new(request, peer);
            // Contained like every callback: a hook that panics on one client's request refuses that
            // client, and the shard serves on.
            let verdict =
                catch_unwind(AssertUnwindSafe(|| authenticate(&upgrade))).map_err(|_| {
                    tracing::error!(%peer, "the authentication hook panicked; refusing with 500");
                    Refused {
                        status: 500,
                        text: "Internal Server Error",
                        reason: "internal error".to_owned(),
                    }
                })?;
            verdict.map_err(|refusal| {
                let (status, text) = refusal.status();
                Refused {
                    status,
                    text,
                    reason: refusal.reason().to_owned(),
                }
            })?
        }
    };
    admission.enter(peer.ip())?;
    Ok(identity)
}

/// The session begins (its shard registered it): announced, `on_open`, then any frames that came with
/// the upgrade request.
fn open(session: &Session, callbacks: &Callbacks) {
    let shard = session.owner();
    if !shard.config().bench_mode {
        tracing::debug!(session = %session.id(), peer = %session.peer_addr(), shard = shard.index(), "client connected");
    }
    if let Some(on_open) = &callbacks.on_open {
        guarded(session, "on_open", || on_open(session));
    }
    let early = session.state().receiving.borrow().decoder.has_input();
    if early {
        process(session, callbacks, &mut []);
    }
}

/// The session ends: `on_close`, then its rooms and its shard forget it.
fn end(session: &Session, callbacks: &Callbacks) {
    if let Some(on_close) = &callbacks.on_close {
        guarded(session, "on_close", || on_close(session));
    }
    let shard = session.owner();
    shard.unregister(session.state());
    shard.admission().leave(session.peer_addr().ip());
    if !shard.config().bench_mode {
        tracing::debug!(session = %session.id(), peer = %session.peer_addr(), "client disconnected");
    }
}

/// Logs a session's error and hands it to `on_error`.
fn report(session: &Session, callbacks: &Callbacks, error: &SessionError) {
    if !session.owner().config().bench_mode {
        tracing::debug!(session = %session.id(), peer = %session.peer_addr(), %error, "websocket error");
    }
    if let Some(on_error) = &callbacks.on_error {
        guarded(session, "on_error", || on_error(session, error));
    }
}

fn poll_event(session: &Session, io: &mut Io, cx: &mut Context<'_>) -> Poll<Event> {
    let state = session.state();
    session.owner().deliver_posted();
    if let Some(queued) = state.lifecycle().unreported_slow_consumer() {
        return Poll::Ready(Event::SlowConsumer(queued));
    }
    if let Err(e) = poll_flush(session, io, cx) {
        return Poll::Ready(Event::Failed(e));
    }
    let lifecycle = state.lifecycle();
    if lifecycle.is_over() {
        return Poll::Ready(Event::Closed);
    }
    if !lifecycle.reads_messages() && state.unfinished() > 0 {
        // Nothing more is read as messages: what was half-received will never be delivered.
        state.receiving.borrow_mut().decoder.clear();
        session.owner().hold_unfinished(state, 0);
    }
    if state.outbound.is_empty() {
        match lifecycle.after_flush() {
            Some(AfterFlush::End) => return Poll::Ready(Event::Closed),
            Some(AfterFlush::Drain) => {
                if let Err(e) = io.socket.shutdown(std::net::Shutdown::Write) {
                    return Poll::Ready(Event::Failed(e));
                }
                state.transition(Lifecycle::write_shut);
            }
            None => {}
        }
    }
    if let Some(end) = state.receiving.borrow_mut().ended.take() {
        return Poll::Ready(match end {
            Ok(()) => Event::Closed,
            Err(e) => Event::Failed(e),
        });
    }
    state.set_waker(cx.waker());
    if !io.reads_itself {
        return Poll::Pending; // The shard's receiving task reads, and wakes this task when it must act.
    }
    let fd = io.socket.as_raw_fd();
    loop {
        let received = session.owner().with_read_buf(|buf| {
            // SAFETY: receives into the shard's read buffer, at most its length, from the session's
            // socket, without blocking.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            usize::try_from(n).map_err(|_| io::Error::last_os_error())
        });
        match received {
            Ok(0) => return Poll::Ready(Event::Closed),
            Ok(n) => return Poll::Ready(Event::Read(n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match poll_ready(&mut io.readable, cx, || glommio::io::readable(fd)) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Event::Failed(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            Err(e) => return Poll::Ready(Event::Failed(e)),
        }
    }
}

/// Writes what is queued; when the socket is full, arms a writability wake-up through glommio.
fn poll_flush(session: &Session, io: &mut Io, cx: &mut Context<'_>) -> io::Result<()> {
    let state = session.state();
    if !state.lifecycle().can_write() {
        return Ok(());
    }
    let fd = io.socket.as_raw_fd();
    let before = state.outbound.queued();
    let flushed = state.outbound.flush(fd, || {
        poll_ready(&mut io.writable, cx, || glommio::io::writable(fd))
    });
    let written = before.saturating_sub(state.outbound.queued()) as u64;
    session.owner().count(|t| t.socket_bytes_written += written);
    flushed
}

/// Decodes received bytes and acts on each message.
fn process(session: &Session, callbacks: &Callbacks, bytes: &mut [u8]) {
    let state = session.state();
    let shard = session.owner();
    shard.count(|t| t.socket_bytes_read += bytes.len() as u64);
    state.seen(shard.now());
    if !state.lifecycle().reads_messages() {
        return; // Flushing or draining after a close: nothing more is read as messages.
    }
    let settings = shard.settings();
    let limits = Limits {
        max_message_size: settings.max_message_size,
        max_frames: settings.max_frames_per_message,
    };
    let mut receiving = state.receiving.borrow_mut();
    let Receiving {
        decoder, limiter, ..
    } = &mut *receiving;
    let on_message = |message: Inbound<'_>| handle(session, callbacks, limiter, message);
    let result = if state.deflate().is_some() {
        shard.with_inflater(|inflater| decoder.decode(bytes, limits, Some(inflater), on_message))
    } else {
        decoder.decode(bytes, limits, None, on_message)
    };
    shard.hold_unfinished(state, decoder.held());
    if let Err(error) = result {
        if state.is_open() {
            report(session, callbacks, &SessionError::Protocol(error));
            state.closing_with(error.close_code());
            state
                .outbound
                .push_unbounded(encode::close_frame(error.close_code(), &error.to_string()));
        }
        state.transition(|l| l.failed(shard.now()));
    }
}

/// Acts on one complete message or control frame.
fn handle(
    session: &Session,
    callbacks: &Callbacks,
    limiter: &mut RateLimiter,
    message: Inbound<'_>,
) -> Flow {
    let open = session.is_open();
    let data_len = match &message {
        Inbound::Text(text) => Some(text.len()),
        Inbound::Binary(data) => Some(data.len()),
        _ => None,
    };
    if let Some(len) = data_len {
        session.owner().count(|t| {
            t.messages_received += 1;
            t.message_bytes_received += len as u64;
        });
    }
    match message {
        Inbound::Text(text) if open => {
            if admitted(
                session,
                callbacks,
                limiter,
                text.len(),
                OverLimit::Answer(Some(text)),
            ) {
                dispatch_text(callbacks, session, text);
            }
        }
        Inbound::Binary(data) if open => {
            if admitted(
                session,
                callbacks,
                limiter,
                data.len(),
                OverLimit::Answer(None),
            ) {
                if let Some(on_binary) = &callbacks.on_binary {
                    guarded(session, "on_binary", || on_binary(session, data));
                }
            }
        }
        Inbound::Ping(payload) if open && session.owner().settings().auto_ping_pong => {
            // A ping costs us a pong: it counts like a message, and one over the limit goes unanswered.
            if admitted(
                session,
                callbacks,
                limiter,
                payload.len(),
                OverLimit::Unanswered,
            ) {
                session.send_frame(encode::pong_frame(payload));
            }
        }
        Inbound::Close(code) => {
            let state = session.state();
            // 1005: a close frame without a code (RFC 6455 §7.1.5).
            state.closing_with(code.map_or(1005, |(code, _)| code));
            if open {
                // Echo the peer's code (RFC 6455 §5.5.1); an empty close is answered with an empty one.
                let echo = match code {
                    Some((code, _)) => encode::close_frame(code, ""),
                    None => encode::empty_close_frame(),
                };
                state.outbound.push_unbounded(echo);
            }
            state.transition(|l| l.peer_closed(session.owner().now()));
            return Flow::Stop;
        }
        // Data after our close frame, pongs, and pings we are not to answer: nothing to do.
        Inbound::Text(_) | Inbound::Binary(_) | Inbound::Ping(_) | Inbound::Pong => {}
    }
    Flow::Continue
}

/// What a message refused by the rate limits gets.
enum OverLimit<'a> {
    /// An answer (a data message; its text, when it was text).
    Answer(Option<&'a str>),
    /// Nothing (a ping: answering it is what it costs).
    Unanswered,
}

/// Applies the rate limits to a message of `len` bytes: whether to act on it. A refused message is
/// answered, unless it is [`OverLimit::Unanswered`], by `on_rate_limited` or else with
/// `message rejected: rate limit`; a sender that kept sending while
/// refused is reported and closed with 1008 "rate limit" (see [`crate::rate_limit`]).
fn admitted(
    session: &Session,
    callbacks: &Callbacks,
    limiter: &mut RateLimiter,
    len: usize,
    refused: OverLimit<'_>,
) -> bool {
    match limiter.check(&session.owner().settings().rate_limits, len) {
        Verdict::Admit => true,
        Verdict::Refuse => {
            if let OverLimit::Answer(text) = refused {
                match &callbacks.on_rate_limited {
                    Some(on_rate_limited) => guarded(session, "on_rate_limited", || {
                        on_rate_limited(session, text)
                    }),
                    None => session.send_text(RATE_LIMIT_REPLY),
                }
            }
            false
        }
        Verdict::Cut => {
            report(session, callbacks, &SessionError::RateLimited);
            session.close(1008, "rate limit");
            false
        }
    }
}
