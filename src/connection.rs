//! One connection's task: handshake, then the read/write loop and the close handshake, then cleanup.
//!
//! Each accepted socket runs as one glommio task on the shard that accepted it, for its whole life. The task
//! waits on a single future that does three things each time it runs: writes what the session's outbound
//! queue holds (one `sendmsg` for many frames), notices a close or an abort, and reads. Reads go straight
//! into the shard's read buffer, borrowed only for the duration of one poll: an idle session holds no read
//! buffer at all (glommio arms an io_uring poll for readiness, not a read with a buffer), which is what keeps
//! an idle connection well under a kilobyte.
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
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use tungstenite::protocol::frame::coding::{Control, OpCode};

use crate::dispatch::dispatch_text;
use crate::error::SessionError;
use crate::handler::guarded;
use crate::session::{Lifecycle, Session};
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

/// Runs one accepted connection to its end.
pub(crate) async fn run(shard: Rc<Shard>, mut stream: TcpStream) {
    let Ok(peer) = stream.peer_addr() else { return };
    // Frames are small and latency matters more than packet count; batching is done by `Outbound`.
    let _ = stream.set_nodelay(true);
    // Boxed so the handshake's state (request buffer, timer, write) is freed once it is done instead of
    // widening this task's future for the session's whole life.
    let Some(mut early_frames) = Box::pin(upgrade(&shard, &mut stream)).await else {
        return;
    };
    let session = Session::new(peer, &shard);
    shard
        .sessions
        .borrow_mut()
        .insert(session.id(), session.clone());
    if !shard.bench_mode {
        tracing::info!(session = %session.id(), %peer, shard = shard.index, "client connected");
    }
    if let Some(on_open) = &shard.callbacks.on_open {
        guarded(&session, "on_open", || on_open(&session));
    }

    let mut connection = Connection {
        session,
        stream,
        decoder: Decoder::default(),
        write_shut: false,
    };
    if !early_frames.is_empty() {
        connection.process(&mut early_frames);
    }
    drop(early_frames);
    connection.drive().await;

    let Connection { session, .. } = connection;
    if let Some(on_close) = &shard.callbacks.on_close {
        guarded(&session, "on_close", || on_close(&session));
    }
    shard.rooms.borrow_mut().leave_all(&session);
    shard.sessions.borrow_mut().remove(&session.id());
    session.0.lifecycle.set(Lifecycle::Aborted);
    if !shard.bench_mode {
        tracing::info!(session = %session.id(), peer = %session.peer_addr(), "client disconnected");
    }
}

/// Reads the upgrade request within `SERVER_REQUEST_TIMEOUT` and answers it. Returns the bytes that
/// followed the request (frames a client sent without waiting), or `None` when the connection is refused,
/// timed out or gone.
async fn upgrade(shard: &Shard, stream: &mut TcpStream) -> Option<Vec<u8>> {
    let exchange = async {
        let mut request = Vec::new();
        loop {
            let room_left = handshake::MAX_REQUEST_LEN + 1 - request.len();
            let n = poll_fn(|cx| {
                let mut buf = shard.read_buf.borrow_mut();
                let limit = room_left.min(buf.len());
                let polled = Pin::new(&mut *stream).poll_read(cx, &mut buf[..limit]);
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
                    return Ok(Some(request.split_off(consumed)));
                }
                Handshake::Reject { response, reason } => {
                    tracing::debug!(shard = shard.index, %reason, "upgrade refused");
                    let _ = stream.write_all(&response).await;
                    return Ok(None);
                }
            }
        }
    };
    match glommio::timer::timeout(shard.request_timeout, exchange).await {
        Ok(frames) => frames,
        Err(e) => {
            tracing::debug!(shard = shard.index, error = %e, "upgrade not completed");
            None
        }
    }
}

/// The socket and protocol state of one open session.
struct Connection {
    session: Session,
    stream: TcpStream,
    decoder: Decoder,
    /// Our write side is shut down (lingering after a protocol error).
    write_shut: bool,
}

impl Connection {
    async fn drive(&mut self) {
        let shard = self.session.0.shard.clone();
        loop {
            match poll_fn(|cx| self.poll_event(cx)).await {
                Event::Read(n) => {
                    let filled = {
                        let mut buf = shard.read_buf.borrow_mut();
                        self.process(&mut buf[..n]);
                        n == buf.len()
                    };
                    if filled {
                        // More is probably waiting: let the shard's other sessions run before reading it,
                        // so one flooding client cannot stall the rest.
                        futures_lite::future::yield_now().await;
                    }
                }
                Event::Closed => return,
                Event::Failed(e) => {
                    if self.session.is_open() {
                        shard.report_error(&self.session, &SessionError::Io(e));
                    }
                    return;
                }
            }
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if let Err(e) = self.poll_flush(cx) {
            return Poll::Ready(Event::Failed(e));
        }
        let state = &self.session.0;
        match state.lifecycle.get() {
            Lifecycle::Aborted => return Poll::Ready(Event::Closed),
            Lifecycle::Ending { linger, .. } if state.outbound.borrow().is_empty() => {
                if !linger {
                    return Poll::Ready(Event::Closed);
                }
                if !self.write_shut {
                    self.write_shut = true;
                    // SAFETY: shutdown on a socket we own; no memory is involved.
                    unsafe { libc::shutdown(self.stream.as_raw_fd(), libc::SHUT_WR) };
                }
            }
            _ => {}
        }
        let waker = state.waker.take();
        state.waker.set(Some(match waker {
            Some(w) if w.will_wake(cx.waker()) => w,
            _ => cx.waker().clone(),
        }));
        let mut buf = state.shard.read_buf.borrow_mut();
        match Pin::new(&mut self.stream).poll_read(cx, &mut buf[..]) {
            Poll::Ready(Ok(0)) => Poll::Ready(Event::Closed),
            Poll::Ready(Ok(n)) => Poll::Ready(Event::Read(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Event::Failed(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes what is queued; when the socket is full, arms a writability wake-up through glommio.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let mut outbound = self.session.0.outbound.borrow_mut();
        while !outbound.is_empty() && !self.write_shut {
            if outbound.write_to(self.stream.as_raw_fd())? {
                break;
            }
            let front = outbound.front().expect("not empty");
            match Pin::new(&mut self.stream).poll_write(cx, front) {
                Poll::Ready(Ok(n)) => outbound.advance(n),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        Ok(())
    }

    /// Decodes received bytes and acts on each message.
    fn process(&mut self, bytes: &mut [u8]) {
        let state = &self.session.0;
        state.last_seen.set(Instant::now());
        if matches!(
            state.lifecycle.get(),
            Lifecycle::Ending { .. } | Lifecycle::Aborted
        ) {
            return; // Draining after our close: nothing more is read as messages.
        }
        let session = &self.session;
        let max = state.shard.settings.max_message_size;
        let result = self
            .decoder
            .decode(bytes, max, |message| handle(session, message));
        if let Err(error) = result {
            let shard = &state.shard;
            if state.lifecycle.get().is_open() {
                shard.report_error(session, &SessionError::Protocol(error));
                state
                    .outbound
                    .borrow_mut()
                    .push_unbounded(codec::close_frame(error.close_code(), &error.to_string()));
            }
            state.lifecycle.set(Lifecycle::Ending {
                since: Instant::now(),
                linger: true,
            });
        }
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
                state.outbound.borrow_mut().push_unbounded(echo);
            }
            state.lifecycle.set(Lifecycle::Ending {
                since: Instant::now(),
                linger: false,
            });
            return Flow::Stop;
        }
        // Data after our close frame, pongs, and pings we are not to answer: nothing to do.
        Inbound::Text(_) | Inbound::Binary(_) | Inbound::Ping(_) | Inbound::Pong => {}
    }
    Flow::Continue
}
