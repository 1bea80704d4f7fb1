//! The WebSocket listeners: one `SO_REUSEPORT` socket per shard, all bound to the same address.
//!
//! Why one listener per shard rather than one acceptor handing sockets over: the kernel then spreads new
//! connections over the shards by a hash of the connection's addresses, each shard accepts on its own core
//! with no cross-core hand-off, and a busy shard never delays another's accepts. The cost is that placement
//! is statistical rather than round-robin; with many connections the spread is even.
//!
//! The sockets are bound on the starting thread, before any executor runs, so a port in use or an address
//! that is not local stops start-up with a clear error; with port 0 the first socket picks the port and the
//! others join it. `SO_REUSEPORT` would also let a second roomcast bind the same port beside the first and
//! silently take half of the connections, so before binding, [`bind_shared`] checks that no other socket
//! listens there: a socket without `SO_REUSEPORT` cannot bind a port that one with it holds.
//!
//! An accept that fails (out of descriptors, out of memory) is retried after [`ACCEPT_BACKOFF`], and
//! [`AcceptFailures`] logs it at most once per [`ACCEPT_LOG_INTERVAL`] with how often it happened, so a
//! descriptor shortage is one line every few seconds rather than dozens a second.
//!
//! It must not run sessions: it hands each accepted stream to [`crate::connection`], with the shard's gate,
//! whose passes the session tasks hold so that shutdown waits for them (see [`crate::shutdown`]).

use std::io;
use std::net::SocketAddr;
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::sync::Gate;
use socket2::{Domain, Protocol, Socket, Type};

use super::Shard;
use crate::handler::Callbacks;

/// Pending connections per listener before the kernel refuses more; matches modern `somaxconn`.
const BACKLOG: i32 = 4096;

/// How long an accept loop pauses after a failed accept (out of descriptors or memory), so a failure that
/// will not go away by itself is not retried in a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How often a persisting accept failure is logged.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why the listeners could not be bound.
#[derive(Debug)]
pub(crate) enum BindError {
    /// Another process listens on the port already.
    Taken,
    /// The OS refused (address not local, no permission, ...).
    Os(io::Error),
}

/// Binds `count` listeners sharing `addr` (port 0 picks one free port for all of them), unless another
/// process already listens on `addr`.
pub(crate) fn bind_shared(
    addr: SocketAddr,
    count: usize,
) -> Result<Vec<std::net::TcpListener>, BindError> {
    if addr.port() != 0 {
        ensure_unused(addr)?;
    }
    bind_reusing(addr, count).map_err(BindError::Os)
}

/// Fails with [`BindError::Taken`] when a socket already listens on `addr`. The probe binds without
/// `SO_REUSEPORT` (with `SO_REUSEADDR`, so connections of an earlier run in TIME_WAIT do not count), which
/// the kernel refuses while any other socket listens on the port.
fn ensure_unused(addr: SocketAddr) -> Result<(), BindError> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(BindError::Os)?;
    probe.set_reuse_address(true).map_err(BindError::Os)?;
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(BindError::Taken),
        Err(e) => Err(BindError::Os(e)),
    }
}

fn bind_reusing(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// A listener bound on the starting thread, handed to the executor that accepts on it (the WebSocket
/// shards' and the HTTP shard's alike).
pub(crate) fn into_executor(listener: std::net::TcpListener) -> glommio::net::TcpListener {
    // SAFETY: the descriptor comes out of a listener we own and give up here, so the glommio listener is
    // its only owner.
    unsafe { glommio::net::TcpListener::from_raw_fd(listener.into_raw_fd()) }
}

/// Accepts connections until the future is dropped (shutdown), running each on this shard; a session that
/// comes out of the handshake runs under a pass of `sessions`.
pub(crate) async fn accept_loop(
    listener: std::net::TcpListener,
    shard: Rc<Shard>,
    callbacks: Arc<Callbacks>,
    sessions: Gate,
) {
    let listener = into_executor(listener);
    let mut failures = AcceptFailures::new("websocket");
    loop {
        match listener.accept().await {
            Ok(stream) => {
                shard.count(|t| t.accepted += 1);
                let run = crate::connection::run(
                    shard.clone(),
                    callbacks.clone(),
                    sessions.clone(),
                    stream,
                );
                glommio::spawn_local(run).detach();
            }
            Err(e) => failures.back_off(e.into()).await,
        }
    }
}

/// A listener's failed accepts: logged at most once per [`ACCEPT_LOG_INTERVAL`], each followed by a pause.
pub(crate) struct AcceptFailures {
    what: &'static str,
    /// When a failure was last logged.
    logged_at: Option<Instant>,
    /// Failures since then.
    unlogged: u64,
}

impl AcceptFailures {
    pub(crate) fn new(what: &'static str) -> AcceptFailures {
        AcceptFailures {
            what,
            logged_at: None,
            unlogged: 0,
        }
    }

    /// Counts a failed accept, logs it if the interval has passed, and waits [`ACCEPT_BACKOFF`]: out of
    /// descriptors or memory, the way out is sessions ending, not retrying at once.
    pub(crate) async fn back_off(&mut self, error: io::Error) {
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= ACCEPT_LOG_INTERVAL)
        {
            tracing::warn!(
                listener = self.what,
                %error,
                failures = self.unlogged,
                "accept failed; retrying every {ACCEPT_BACKOFF:?}, logged at most every {ACCEPT_LOG_INTERVAL:?}"
            );
            self.logged_at = Some(now);
            self.unlogged = 0;
        }
        glommio::timer::sleep(ACCEPT_BACKOFF).await;
    }
}
