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

/// Runs one connection until the client leaves, a timeout closes it, or the stop drains it.
pub(super) async fn connection(
    stream: TcpStream,
    router: Rc<Router>,
    timeouts: Timeouts,
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
            session_timeout: timeouts.session,
        })
        .header_read_timeout(timeouts.request)
        .keep_alive(true);
    let service = service_fn(move |request| {
        let router = router.clone();
        async move {
            let response = router.respond(request.method(), request.uri().path()).await;
            if router.logs_requests() {
                debug!(?peer, method = %request.method(), uri = %request.uri(), status = response.status().as_u16(), "HTTP request");
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
