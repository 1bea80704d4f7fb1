//! Request dispatch for the HTTP shard: the method check, then the app's JSON routes by exact path, then the
//! static files.
//!
//! This module owns what a site is ([`Site`]: the app's JSON routes and the public directory) and the
//! answer to every request that is not a file: JSON bodies, and the plain-text bodies of 400/404/405/500.
//! It must not touch sockets or connections (that is `service.rs`) nor resolve or read files (that is
//! `static_files.rs`).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode, Version};

use super::api::{self, Limits};
use super::scrape;
use super::static_files::StaticFiles;
use crate::config::{ApiSettings, MetricsSettings, PublicSettings, ServerSettings};
use crate::server::ServerHandle;

/// What a JSON route can know about the running server.
#[derive(Clone)]
pub struct HttpContext {
    websocket_addr: SocketAddr,
    server: ServerHandle,
}

impl HttpContext {
    /// A context announcing the WebSocket listener at `websocket_addr` of the server `server`.
    pub(crate) fn new(websocket_addr: SocketAddr, server: ServerHandle) -> Self {
        HttpContext {
            websocket_addr,
            server,
        }
    }

    /// Where the WebSocket listener is bound (its real port when `WEBSOCKET_PORT` was 0).
    pub fn websocket_addr(&self) -> SocketAddr {
        self.websocket_addr
    }

    /// The server this HTTP side belongs to (its counters, its rooms).
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }
}

impl std::fmt::Debug for HttpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpContext")
            .field("websocket_addr", &self.websocket_addr)
            .finish_non_exhaustive()
    }
}

/// A GET route answering JSON (registered by the app, e.g. `/api/health`).
pub type JsonRoute = Arc<dyn Fn(&HttpContext) -> serde_json::Value + Send + Sync>;

/// Everything one HTTP shard serves; built once on the starting thread, then moved to the HTTP executor.
pub(crate) struct Site {
    /// Exact URL paths and their JSON routes, matched before static files.
    pub(crate) routes: Vec<(String, JsonRoute)>,
    /// The public directory and how it is mounted.
    pub(crate) public: PublicSettings,
    /// The request and keep-alive timeouts, and whether to log each request.
    pub(crate) server: ServerSettings,
    /// Whether `/metrics` and `/api/stats` are served, and the former's path.
    pub(crate) metrics: MetricsSettings,
    /// `API_KEY`: the server API, or none.
    pub(crate) api: ApiSettings,
    /// `WEBSOCKET_MAX_MESSAGE_SIZE`: what the API's publishes may carry.
    pub(crate) max_message_size: usize,
    /// `LOG_STATS_INTERVAL_SEC`: how often the HTTP shard logs a summary line.
    pub(crate) stats_interval: Option<std::time::Duration>,
    /// Handed to every JSON route.
    pub(crate) context: HttpContext,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<&str> = self.routes.iter().map(|(path, _)| path.as_str()).collect();
        f.debug_struct("Site")
            .field("routes", &paths)
            .field("public", &self.public)
            .field("server", &self.server)
            .field("context", &self.context)
            .finish()
    }
}

/// Turns a method and path into a response for one HTTP shard; built once per [`super::serve`] call.
#[derive(Debug)]
pub(super) struct Router {
    site: Rc<Site>,
    files: StaticFiles,
    /// The last scrape's numbers and when they were gathered, shared by the scrapes that follow within
    /// [`scrape::REUSE`].
    last_scrape: scrape::Recent,
}

impl Router {
    pub(super) fn new(site: Rc<Site>) -> Router {
        let files = StaticFiles::new(&site.public);
        Router {
            site,
            files,
            last_scrape: scrape::Recent::default(),
        }
    }

    /// What is served, and how.
    pub(super) fn site(&self) -> &Site {
        &self.site
    }

    /// Whether per-request log lines are wanted (`SERVER_BENCH_MODE` silences them).
    pub(super) fn logs_requests(&self) -> bool {
        !self.site.server.bench_mode
    }

    /// Answers `request`: an HTTP/1.1 request without `Host` is malformed (RFC 9112 §3.2) and gets 400;
    /// the server API (`API_KEY`) reads its body; anything else is its method on its raw (still
    /// percent-encoded) path.
    pub(super) async fn respond<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let head_only = *request.method() == Method::HEAD;
        if request.version() == Version::HTTP_11 && !request.headers().contains_key(HOST) {
            return plain_text(StatusCode::BAD_REQUEST, head_only);
        }
        if let Some(endpoint) = api::Endpoint::of(request.uri().path()) {
            // Without API_KEY the API does not exist.
            let Some(key) = &self.site.api.key else {
                return plain_text(StatusCode::NOT_FOUND, head_only);
            };
            let (head, body) = request.into_parts();
            // Room for a message of the largest size in its JSON, written any way JSON allows (`\uXXXX`
            // escapes take 6 bytes a character); what it decodes to is held to the limit itself.
            let body_limit = self.site.max_message_size.saturating_mul(6) + 4096;
            return api::respond(
                self.site.context.server(),
                key,
                endpoint,
                &head.method,
                &head.headers,
                body,
                Limits {
                    body: body_limit,
                    message: self.site.max_message_size,
                },
            )
            .await;
        }
        self.respond_to(request.method(), request.uri().path())
            .await
    }

    /// Answers `method` on the raw (still percent-encoded) URL `path`.
    async fn respond_to(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        if let Some(response) = self.respond_own(method, path).await {
            return response;
        }
        let head_only = match *method {
            Method::GET => false,
            Method::HEAD => true,
            _ => return not_allowed("GET, HEAD"),
        };
        // JSON routes are matched before static files, so the app's API cannot be shadowed by a file.
        if let Some((_, route)) = self
            .site
            .routes
            .iter()
            .find(|(route_path, _)| route_path == path)
        {
            let body = Bytes::from(route(&self.site.context).to_string());
            return sized(StatusCode::OK, "application/json", body, head_only);
        }
        match self.files.respond(path, head_only).await {
            Ok(response) => response,
            Err(status) => plain_text(status, head_only),
        }
    }
}

impl Router {
    /// The server's own endpoints, ahead of the application's routes and the files: `/metrics` and
    /// `/api/stats` when `METRICS_ENABLED`. `None` for any other path.
    async fn respond_own(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
        let metrics = &self.site.metrics;
        let scrape = metrics.enabled && (path == metrics.path || path == STATS_PATH);
        if !scrape {
            return None;
        }
        let head_only = match *method {
            Method::GET => false,
            Method::HEAD => true,
            _ => return Some(not_allowed("GET, HEAD")),
        };
        let snapshot = self
            .last_scrape
            .get_or_gather(self.site.context.server())
            .await;
        Some(if path == STATS_PATH {
            let body = Bytes::from(snapshot.to_json().to_string());
            sized(StatusCode::OK, "application/json", body, head_only)
        } else {
            let body = Bytes::from(snapshot.to_prometheus());
            sized(StatusCode::OK, scrape::PROMETHEUS_TEXT, body, head_only)
        })
    }
}

/// Where the dashboard reads its numbers (with `METRICS_ENABLED`).
const STATS_PATH: &str = "/api/stats";

/// 405, naming the methods the path takes.
fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = plain_text(StatusCode::METHOD_NOT_ALLOWED, false);
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// An error answer whose body is the status's reason phrase, e.g. `404 Not Found`.
fn plain_text(status: StatusCode, head_only: bool) -> Response<Full<Bytes>> {
    let body = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    sized(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(body),
        head_only,
    )
}

/// A response with an explicit `Content-Length`, so a HEAD answer reports the size its GET would have.
pub(super) fn sized(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    head_only: bool,
) -> Response<Full<Bytes>> {
    let length = body.len();
    let mut response = Response::new(Full::new(if head_only { Bytes::new() } else { body }));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}
