//! The WebSocket listeners: one `SO_REUSEPORT` socket per shard, all bound to the same address.
//!
//! Why one listener per shard rather than one acceptor handing sockets over: the kernel then spreads new
//! connections over the shards by a hash of the connection's addresses, each shard accepts on its own core
//! with no cross-core hand-off, and a busy shard never delays another's accepts. The cost is that placement
//! is statistical rather than round-robin; with many connections the spread is even.
//!
//! The sockets are bound on the starting thread, before any executor runs, so a port in use or an address
//! that is not local stops start-up with a clear error; with port 0 the first socket picks the port and the
//! others join it.
//!
//! It must not run sessions: it hands each accepted stream to [`crate::connection`], with the shard's gate,
//! whose passes the session tasks hold so that shutdown waits for them (see [`crate::shutdown`]).

use std::io;
use std::net::SocketAddr;
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::sync::Gate;
use socket2::{Domain, Protocol, Socket, Type};

use super::Shard;
use crate::handler::Callbacks;

/// Pending connections per listener before the kernel refuses more; matches modern `somaxconn`.
const BACKLOG: i32 = 4096;

/// How long an accept loop pauses after a failed accept (out of descriptors or memory), so a failure that
/// will not go away by itself is not retried in a busy loop.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Binds `count` listeners sharing `addr` (port 0 picks one free port for all of them).
pub(crate) fn bind_shared(
    addr: SocketAddr,
    count: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
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
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let run = crate::connection::run(
                    shard.clone(),
                    callbacks.clone(),
                    sessions.clone(),
                    stream,
                );
                glommio::spawn_local(run).detach();
            }
            Err(e) => {
                // Out of descriptors or memory: log, let sessions end, and try again shortly.
                tracing::warn!(shard = shard.index(), error = %e, "accept failed");
                glommio::timer::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
