//! One HTTP connection: hyper's http1 server over the glommio socket, the service that answers each request
//! through the [`Router`], and the switch to hyper's graceful shutdown when the executor stops.
//!
//! It must not decide what a request gets (that is `routes.rs`) nor parse HTTP (hyper does).

use std::convert::Infallible;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use futures_lite::future;
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use tracing::{debug, warn};

use super::io::Socket;
use super::routes::Router;
use super::timer::{ShardTimer, Timeouts};

/// What one connection may do.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnectionLimits {
    /// The request and keep-alive timeouts.
    pub(super) timeouts: Timeouts,
    /// `SERVER_MAX_REQUEST_HEAD`: a longer request line and headers get 431.
    pub(super) max_request_head: usize,
    /// Whether the connection may stay open for another request (see `SERVER_MAX_KEEPALIVE_CONNECTIONS`).
    pub(super) keep_alive: bool,
}

/// Runs one connection until the client leaves, a timeout closes it, or the stop drains it.
pub(super) async fn connection(
    stream: TcpStream,
    router: Rc<Router>,
    limits: ConnectionLimits,
    stopping: Rc<Semaphore>,
) {
    let peer = stream.peer_addr().ok();
    let reads = Arc::new(AtomicU64::new(0));
    let io = Socket {
        stream,
        reads: reads.clone(),
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(ShardTimer {
            reads,
            session_timeout: limits.timeouts.session,
        })
        .header_read_timeout(limits.timeouts.request)
        // hyper answers a larger request head with 431 and closes the connection.
        .max_header_size(limits.max_request_head)
        .keep_alive(limits.keep_alive);
    let service = service_fn(move |request| {
        let router = router.clone();
        async move {
            let (method, uri) = (request.method().clone(), request.uri().clone());
            let response = router.respond(request).await;
            if router.logs_requests() {
                debug!(?peer, %method, %uri, status = response.status().as_u16(), "HTTP request");
            }
            Ok::<_, Infallible>(response)
        }
    });
    let mut conn = pin!(builder.serve_connection(io, service));
    let finished = future::or(async { Some(conn.as_mut().await) }, async {
        // Never acquired: the semaphore has no permits, so this returns only when `serve` closes it.
        let _ = stopping.acquire(1).await;
        None
    })
    .await;
    let result = match finished {
        Some(result) => result,
        // Shutdown: the request in flight finishes and keep-alive ends; the shutdown sequence bounds how
        // long that may take, for all connections together.
        None => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    match result {
        Ok(()) => {}
        // Clients that stall, hang up mid-request or send garbage are routine, not server faults.
        Err(e)
            if e.is_timeout() || e.is_incomplete_message() || e.is_parse() || e.is_canceled() =>
        {
            debug!(?peer, error = %e, "HTTP connection closed");
        }
        Err(e) => warn!(?peer, error = %e, "HTTP connection failed"),
    }
}
