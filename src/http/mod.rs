//! The HTTP shard: HTTP/1.1 on one glommio executor, parsed and framed by hyper, answering the app's JSON
//! routes and the public directory.
//!
//! This module owns the listener's accept loop, one task per connection, and the HTTP shard's part of the
//! shutdown sequence. It must not decide what a request gets (that is `routes.rs`, which hands files to
//! `static_files.rs`) and must not parse HTTP itself: hyper does. The files, by concept:
//! - `service.rs`: one connection, hyper's http1 server and the service answering its requests;
//! - `io.rs`: the adapter that lets hyper read and write a glommio socket;
//! - `timer.rs`: hyper's timer on glommio, and the request and keep-alive timeouts it enforces;
//! - `routes.rs`: method check, the server's own endpoints, JSON routes, then static files
//!   (`static_files.rs`, traversal-safe);
//! - `scrape.rs`: `/metrics` and `/api/stats`, gathered from the shards;
//! - `api.rs`: the server API for backends (`API_KEY`): publishing into rooms, reading who is in one.
//!
//! Stop: the HTTP shard runs [`crate::shutdown`]'s sequence. Its close step tells every connection, through
//! a closed semaphore (glommio's broadcast: every waiter wakes with an error), to begin hyper's graceful
//! shutdown, which finishes the request in flight and disables keep-alive; the connections' gate passes
//! bound the drain to [`DRAIN`].
mod api;
mod io;
mod routes;
mod scrape;
mod service;
mod static_files;
mod timer;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use glommio::net::TcpListener;
use glommio::sync::{Gate, Semaphore};
use tracing::{debug, warn};

use crate::shard::acceptor::AcceptFailures;
use crate::shutdown::{self, Stop};
use routes::Router;
pub(crate) use routes::Site;
pub use routes::{HttpContext, JsonRoute};
use service::ConnectionLimits;
use timer::Timeouts;

/// How long the HTTP connections may take, together, to finish their requests in flight once the server
/// stops.
const DRAIN: Duration = Duration::from_secs(3);

/// Serves HTTP on `listener` until `stop` is requested, then runs the shutdown sequence: stop accepting,
/// graceful shutdown of every connection, a drain bounded by [`DRAIN`].
pub(crate) async fn serve(listener: TcpListener, site: Rc<Site>, stop: &Stop) {
    let timeouts = Timeouts {
        request: site.server.request_timeout,
        session: site.server.session_timeout,
    };
    let router = Rc::new(Router::new(site.clone()));
    let connections = Gate::new();
    // No permits are ever added: closing it is the stop broadcast to every connection.
    let stopping = Rc::new(Semaphore::new(0));
    let accept = accept_loop(
        listener,
        router,
        timeouts,
        stopping.clone(),
        connections.clone(),
    );
    let summaries = site.stats_interval.map(|interval| {
        glommio::spawn_local(scrape::log_summaries(
            site.context.server().clone(),
            interval,
        ))
    });
    let close = || stopping.close();
    if !shutdown::serve_until_stopped(stop, accept, &connections, close, DRAIN).await {
        warn!("HTTP connections still open after the drain time; dropped");
    }
    if let Some(summaries) = summaries {
        summaries.cancel().await;
    }
    debug!("HTTP shard stopped");
}

/// Accepts connections until the future is dropped, each in a task holding a pass of `connections`.
/// Past `SERVER_MAX_KEEPALIVE_CONNECTIONS` open connections, a new one is served without keep-alive: it
/// answers its request and closes, so idle keep-alive connections (each holds hyper's buffers) stay
/// bounded while health checks are still answered.
async fn accept_loop(
    listener: TcpListener,
    router: Rc<Router>,
    timeouts: Timeouts,
    stopping: Rc<Semaphore>,
    connections: Gate,
) {
    let server = &router.site().server;
    let (max_request_head, max_keep_alive) =
        (server.max_request_head, server.max_keepalive_connections);
    let open = Rc::new(Cell::new(0usize));
    let mut failures = AcceptFailures::new("http");
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let limits = ConnectionLimits {
                    timeouts,
                    max_request_head,
                    keep_alive: open.get() < max_keep_alive,
                };
                open.set(open.get() + 1);
                let open = open.clone();
                let router = router.clone();
                let stopping = stopping.clone();
                let task = async move {
                    service::connection(stream, router, limits, stopping).await;
                    open.set(open.get() - 1);
                };
                match connections.spawn(task) {
                    Ok(task) => drop(task.detach()),
                    // The gate closes only once this loop has been dropped.
                    Err(e) => warn!(error = %e, "cannot start an HTTP connection task"),
                }
            }
            Err(e) => failures.back_off(e.into()).await,
        }
    }
}
