//! One connection's life: the handshake task, then the session task with its read/write loop and close
//! handshake, then cleanup.
//!
//! Each accepted socket lives on the shard that accepted it. A short task reads and answers the upgrade;
//! the session then gets its own task, whose future holds only the session handle and its socket state.
//! That task waits on a single future that does three things each time it runs: writes what the session's
//! outbound queue holds (one `sendmsg` for many frames), notices a close or an abort, and reads. Reads go
//! straight into the shard's read buffer, borrowed only for the duration of one poll: an idle session holds
//! no read buffer at all (glommio arms an io_uring poll for readiness, not a read with a buffer). Measured
//! with a counting allocator, an idle session is about 870 bytes of heap: its task (about 250), its
//! [`SessionState`] (120 with its reference counts) and glommio's pending readiness poll (496).
//!
//! The close handshake: when the peer closes first we echo its code and end once the echo is written; when
//! we close first (the application, the idle timeout, shutdown, a slow consumer) we wait for the peer's close
//! frame, bounded by the shard's close timeout. After a protocol error we send the close code, shut down our
//! write side and drain input until the peer closes, so the close frame is not lost to a TCP reset.
//!
//! Timeouts other than the handshake's are the shard's sweep ([`crate::shard`]); this task owns none, so
//! an idle session costs no timer.
//!
//! It must not interpret messages beyond the protocol: text goes to [`crate::dispatch`].

use std::future::poll_fn;
use std::io;
use std::os::unix::io::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use tungstenite::protocol::frame::coding::{Control, OpCode};

use crate::dispatch::dispatch_text;
use crate::error::SessionError;
use crate::handler::guarded;
use crate::session::{Lifecycle, Session, SessionState};
use crate::shard::Shard;
use crate::ws::codec::{self, Decoder, Flow, Inbound};
use crate::ws::handshake::{self, Handshake};

/// What woke the connection task.
enum Event {
    /// `n` bytes are in the shard's read buffer.
    Read(usize),
    /// The session is over: the peer closed, the close handshake finished, or it was aborted.
    Closed,
    /// The socket failed.
    Failed(io::Error),
}

/// The socket and protocol state of one open session; only its task touches it.
struct Io {
    stream: TcpStream,
    decoder: Decoder,
}

/// Runs the opening handshake of an accepted connection; an upgraded session then gets a task of its own.
///
/// Two tasks rather than one because an async fn's future is as large as the state of all its awaits and
/// lives as long as the task: the handshake's buffers, timer and writes die with this short task, and the
/// session's task, which may live for days, holds the session handle and its [`Io`] and nothing else.
pub(crate) async fn run(shard: Rc<Shard>, stream: TcpStream) {
    if let Some((session, io)) = upgrade(shard, stream).await {
        glommio::spawn_local(serve(session, io)).detach();
    }
}

/// A session's whole life after the handshake.
///
/// An async block that uses its captures in place, not an async fn: an async fn moves its arguments
/// into locals, which doubles the space the socket state takes in the future.
#[expect(clippy::manual_async_fn, reason = "an async fn would store `io` twice")]
fn serve(session: Session, mut io: Io) -> impl std::future::Future<Output = ()> {
    async move {
        open(&session, &mut io);
        let shard = &session.0.shard;
        loop {
            match poll_fn(|cx| poll_event(&session, &mut io, cx)).await {
                Event::Read(n) => {
                    let filled = {
                        let mut buf = shard.read_buf.borrow_mut();
                        process(&session, &mut io, &mut buf[..n]);
                        n == buf.len()
                    };
                    if filled {
                        // More is probably waiting: let the shard's other sessions run before reading
                        // it, so one flooding client cannot stall the rest.
                        futures_lite::future::yield_now().await;
                    }
                }
                Event::Closed => break,
                Event::Failed(e) => {
                    if session.is_open() {
                        shard.report_error(&session, &SessionError::Io(e));
                    }
                    break;
                }
            }
        }
        end(&session);
    }
}

/// Reads the upgrade request within `SERVER_REQUEST_TIMEOUT` and answers it. Returns the new session and
/// its socket state (bytes that followed the request, frames a client sent without waiting, are the
/// decoder's first input), or `None` when the connection is refused, timed out or gone.
async fn upgrade(shard: Rc<Shard>, mut stream: TcpStream) -> Option<(Session, Io)> {
    let peer = stream.peer_addr().ok()?;
    // Frames are small and latency matters more than packet count; batching is done by `Outbound`.
    let _ = stream.set_nodelay(true);
    let exchange = async {
        let mut request = Vec::new();
        loop {
            let room_left = handshake::MAX_REQUEST_LEN + 1 - request.len();
            let n = poll_fn(|cx| {
                let mut buf = shard.read_buf.borrow_mut();
                let limit = room_left.min(buf.len());
                let polled = Pin::new(&mut stream).poll_read(cx, &mut buf[..limit]);
                if let Poll::Ready(Ok(n)) = polled {
                    request.extend_from_slice(&buf[..n]);
                }
                polled
            })
            .await?;
            if n == 0 {
                return Ok(None);
            }
            match handshake::respond(&request) {
                Handshake::Incomplete => continue,
                Handshake::Accept { response, consumed } => {
                    stream.write_all(&response).await?;
                    request.drain(..consumed);
                    return Ok(Some(request));
                }
                Handshake::Reject { response, reason } => {
                    tracing::debug!(shard = shard.index, %reason, "upgrade refused");
                    let _ = stream.write_all(&response).await;
                    return Ok(None);
                }
            }
        }
    };
    let early_frames = match glommio::timer::timeout(shard.request_timeout, exchange).await {
        Ok(frames) => frames?,
        Err(e) => {
            tracing::debug!(shard = shard.index, error = %e, "upgrade not completed");
            return None;
        }
    };
    let io = Io {
        stream,
        decoder: Decoder::with_input(early_frames),
    };
    Some((Session::new(peer, &shard), io))
}

/// The session begins: registered with its shard, announced, `on_open`, then any frames that came with
/// the upgrade request.
fn open(session: &Session, io: &mut Io) {
    let shard = &session.0.shard;
    let slot = shard.sessions.borrow_mut().insert(session.clone());
    // A shard holds far fewer than 2^32 sessions (descriptors run out first); u32 keeps the state small.
    session.0.slot.set(slot as u32);
    if !shard.bench_mode {
        tracing::info!(session = %session.id(), peer = %session.peer_addr(), shard = shard.index, "client connected");
    }
    if let Some(on_open) = &shard.callbacks.on_open {
        guarded(session, "on_open", || on_open(session));
    }
    if io.decoder.has_input() {
        process(session, io, &mut []);
    }
}

/// The session ends: `on_close`, then its rooms and its shard forget it.
fn end(session: &Session) {
    let shard = &session.0.shard;
    if let Some(on_close) = &shard.callbacks.on_close {
        guarded(session, "on_close", || on_close(session));
    }
    shard.rooms.borrow_mut().leave_all(session);
    shard
        .sessions
        .borrow_mut()
        .remove(session.0.slot.get() as usize);
    session.0.lifecycle.set(Lifecycle::Aborted);
    if !shard.bench_mode {
        tracing::info!(session = %session.id(), peer = %session.peer_addr(), "client disconnected");
    }
}

fn poll_event(session: &Session, io: &mut Io, cx: &mut Context<'_>) -> Poll<Event> {
    let state = &session.0;
    state.shard.deliver_posted_now();
    if let Err(e) = poll_flush(state, io, cx) {
        return Poll::Ready(Event::Failed(e));
    }
    match state.lifecycle.get() {
        Lifecycle::Aborted => return Poll::Ready(Event::Closed),
        Lifecycle::Ending { since, linger } if state.outbound.is_empty() => {
            if !linger {
                return Poll::Ready(Event::Closed);
            }
            // SAFETY: shutdown on a socket we own; no memory is involved.
            unsafe { libc::shutdown(io.stream.as_raw_fd(), libc::SHUT_WR) };
            state.lifecycle.set(Lifecycle::Draining { since });
        }
        _ => {}
    }
    let waker = state.waker.take();
    state.waker.set(Some(match waker {
        Some(w) if w.will_wake(cx.waker()) => w,
        _ => cx.waker().clone(),
    }));
    let mut buf = state.shard.read_buf.borrow_mut();
    match Pin::new(&mut io.stream).poll_read(cx, &mut buf[..]) {
        Poll::Ready(Ok(0)) => Poll::Ready(Event::Closed),
        Poll::Ready(Ok(n)) => Poll::Ready(Event::Read(n)),
        Poll::Ready(Err(e)) => Poll::Ready(Event::Failed(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// Writes what is queued; when the socket is full, arms a writability wake-up through glommio.
fn poll_flush(state: &SessionState, io: &mut Io, cx: &mut Context<'_>) -> io::Result<()> {
    if matches!(state.lifecycle.get(), Lifecycle::Draining { .. }) {
        return Ok(()); // Our write side is shut down.
    }
    let fd = io.stream.as_raw_fd();
    state
        .outbound
        .flush(fd, |front| Pin::new(&mut io.stream).poll_write(cx, front))
}

/// Decodes received bytes and acts on each message.
fn process(session: &Session, io: &mut Io, bytes: &mut [u8]) {
    let state = &session.0;
    state.last_seen.set(state.shard.now());
    if matches!(
        state.lifecycle.get(),
        Lifecycle::Ending { .. } | Lifecycle::Draining { .. } | Lifecycle::Aborted
    ) {
        return; // Draining after our close: nothing more is read as messages.
    }
    let max = state.shard.settings.max_message_size;
    let result = io
        .decoder
        .decode(bytes, max, |message| handle(session, message));
    if let Err(error) = result {
        if state.lifecycle.get().is_open() {
            state
                .shard
                .report_error(session, &SessionError::Protocol(error));
            state
                .outbound
                .push_unbounded(codec::close_frame(error.close_code(), &error.to_string()));
        }
        state.lifecycle.set(Lifecycle::Ending {
            since: state.shard.now(),
            linger: true,
        });
    }
}

/// Acts on one complete message or control frame.
fn handle(session: &Session, message: Inbound<'_>) -> Flow {
    let state = &session.0;
    let shard = &state.shard;
    match message {
        Inbound::Text(text) if session.is_open() => dispatch_text(&shard.callbacks, session, text),
        Inbound::Binary(data) if session.is_open() => {
            if let Some(on_binary) = &shard.callbacks.on_binary {
                guarded(session, "on_binary", || on_binary(session, data));
            }
        }
        Inbound::Ping(payload) if session.is_open() && shard.settings.auto_ping_pong => {
            session.send_frame(codec::pong_frame(payload));
        }
        Inbound::Close(code) => {
            if session.is_open() {
                // Echo the peer's code (RFC 6455 §5.5.1); an empty close is answered with an empty one.
                let echo = match code {
                    Some((code, _)) => codec::close_frame(code, ""),
                    None => codec::encode_frame(OpCode::Control(Control::Close), &[]),
                };
                state.outbound.push_unbounded(echo);
            }
            state.lifecycle.set(Lifecycle::Ending {
                since: state.shard.now(),
                linger: false,
            });
            return Flow::Stop;
        }
        // Data after our close frame, pongs, and pings we are not to answer: nothing to do.
        Inbound::Text(_) | Inbound::Binary(_) | Inbound::Ping(_) | Inbound::Pong => {}
    }
    Flow::Continue
}
