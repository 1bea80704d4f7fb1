//! [`Server`]: registration of callbacks and routes, then start-up and the running server's lifecycle.
//!
//! [`Server::start`] binds every listener first (so a port in use fails before anything runs), starts the
//! WebSocket shards, each a glommio executor on its own thread pinned to one core, then the HTTP shard on
//! an unpinned executor, and returns a [`RunningServer`]. [`RunningServer::stop`] is the graceful path:
//! shards stop accepting and close every session with 1001, HTTP finishes in-flight requests, and every
//! thread is joined, all bounded in time. An executor that cannot start (io_uring refused, a locked-memory
//! limit on an older kernel) is a [`StartError::Executor`] naming the cause and the fix, never a panic.
//!
//! It must not handle signals or read `.env` (the binary does that and hands over a [`Config`]), nor hold
//! executor plumbing (that is `shard::executor`) or decide how shutdown proceeds (`shutdown`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use glommio::Placement;
use serde_json::{Map, Value};

use crate::admission::Admission;
use crate::auth::{AuthRefusal, AuthorizeJoinFn, Identity, UpgradeRequest};
use crate::cluster::{bridge, ClusterCounters};
use crate::config::Config;
use crate::envelope::TypedMessage;
use crate::error::{SessionError, StartError};
use crate::handler::Callbacks;
use crate::history::store::Store;
use crate::history::{Author, PublishOptions, Retention};
use crate::http::{self, HttpContext, JsonRoute, Site};
use crate::metrics::{ClusterStats, DeflateStats, ServerSnapshot, ShardSnapshot};
use crate::replies::{Ack, Presence, PublishFailure, RoomReplies, TextOnly};
use crate::session::Session;
use crate::session_state::SessionId;
use crate::shard::acceptor::{bind_shared, into_executor, BindError};
use crate::shard::executor::{self, ShardStart, SHARD_RING_DEPTH};
use crate::shard::home::{is_room_name, Asker, Backing, HomeAnswer, PublishRequest};
use crate::shard::mesh::{inbox, Peers, ShardMsg};
use crate::shard::ShardConfig;
use crate::shutdown::Stop;
use crate::ws::deflate::DeflateSessions;
use crate::ws::encode::DataKind;

/// The HTTP shard's io_uring depth: glommio's default; it holds few connections (see [`SHARD_RING_DEPTH`]).
const HTTP_RING_DEPTH: usize = 128;

/// A configured server with its callbacks and routes, not yet started.
pub struct Server {
    config: Config,
    callbacks: Callbacks,
    authorize_join: Option<Arc<AuthorizeJoinFn>>,
    routes: Vec<(String, JsonRoute)>,
    subprotocols: Vec<String>,
    replies: Arc<dyn RoomReplies>,
    keep_history: bool,
}

impl Server {
    /// A server with `config` and no callbacks: every message is ignored until some are registered.
    pub fn new(config: Config) -> Server {
        Server {
            config,
            callbacks: Callbacks::default(),
            authorize_join: None,
            routes: Vec::new(),
            subprotocols: Vec::new(),
            replies: Arc::new(TextOnly),
            keep_history: false,
        }
    }

    /// Runs when a client has completed the handshake.
    pub fn on_open(mut self, f: impl Fn(&Session) + Send + Sync + 'static) -> Self {
        self.callbacks.on_open = Some(Box::new(f));
        self
    }

    /// Runs when a session has ended, however it ended; its rooms are left right after.
    pub fn on_close(mut self, f: impl Fn(&Session) + Send + Sync + 'static) -> Self {
        self.callbacks.on_close = Some(Box::new(f));
        self
    }

    /// Runs when a session fails (protocol error, socket error, slow consumer), before it closes.
    pub fn on_error(mut self, f: impl Fn(&Session, &SessionError) + Send + Sync + 'static) -> Self {
        self.callbacks.on_error = Some(Box::new(f));
        self
    }

    /// Runs for each text message that is not a typed event (see the crate docs for the rule).
    pub fn on_message(mut self, f: impl Fn(&Session, &str) + Send + Sync + 'static) -> Self {
        self.callbacks.on_message = Some(Box::new(f));
        self
    }

    /// Runs for each typed event `{"type": ..., "payload": {...}}` with its type and payload.
    pub fn on_typed_message(
        mut self,
        f: impl Fn(&Session, &str, &Map<String, Value>) + Send + Sync + 'static,
    ) -> Self {
        self.callbacks.on_typed_message = Some(Box::new(f));
        self
    }

    /// Runs for each typed event with the whole event, its `ref` included (see [`TypedMessage`]); when
    /// registered it takes the place of `on_typed_message`.
    pub fn on_event(mut self, f: impl Fn(&Session, &TypedMessage) + Send + Sync + 'static) -> Self {
        self.callbacks.on_event = Some(Box::new(f));
        self
    }

    /// Runs for each message refused by the rate limits (`WEBSOCKET_RATE_LIMIT_*`), with its text when it
    /// was a text message (so the answer can name the request), to answer it in the application's words;
    /// without it the answer is the text `message rejected: rate limit`.
    pub fn on_rate_limited(
        mut self,
        f: impl Fn(&Session, Option<&str>) + Send + Sync + 'static,
    ) -> Self {
        self.callbacks.on_rate_limited = Some(Box::new(f));
        self
    }

    /// Runs for each binary message.
    pub fn on_binary(mut self, f: impl Fn(&Session, &[u8]) + Send + Sync + 'static) -> Self {
        self.callbacks.on_binary = Some(Box::new(f));
        self
    }

    /// Decides who may connect: `f` sees each valid upgrade request (path, query, headers, cookies, peer)
    /// before the `101` and returns the session's [`Identity`] (or none), or an [`AuthRefusal`] that
    /// answers 401 or 403 instead. It runs on the shard that accepted the connection, so it must be quick.
    pub fn authenticate(
        mut self,
        f: impl Fn(&UpgradeRequest<'_>) -> Result<Option<Identity>, AuthRefusal> + Send + Sync + 'static,
    ) -> Self {
        self.callbacks.authenticate = Some(Box::new(f));
        self
    }

    /// Decides who may join which room: [`Session::join_room`] asks `f` with the session's identity and
    /// the room, and refuses with [`crate::RoomDenied`] when it returns false.
    pub fn authorize_join(
        mut self,
        f: impl Fn(Option<&Identity>, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.authorize_join = Some(Arc::new(f));
        self
    }

    /// Declares the WebSocket subprotocols the application speaks (`Sec-WebSocket-Protocol`), in its
    /// order. A client that asks for some gets the first in its own list that is among these, and
    /// [`Session::subprotocol`] tells which; a client that asks for none gets none.
    ///
    /// # Panics
    ///
    /// When a name is not an RFC 6455 subprotocol token (visible ASCII without separators), or there are
    /// more than 255: both are mistakes in the program, not in its input.
    pub fn subprotocols<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.subprotocols.extend(names.into_iter().map(Into::into));
        for name in &self.subprotocols {
            let separators = b"()<>@,;:\\\"/[]?={} \t";
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !separators.contains(&b)),
                "{name:?} is not a WebSocket subprotocol token (RFC 6455 §4.1)"
            );
        }
        assert!(self.subprotocols.len() <= 255, "at most 255 subprotocols");
        self
    }

    /// How publications, acknowledgements, join answers and presence are worded for each subprotocol
    /// (see [`RoomReplies`]); without it, publications go out as their text and nothing else is sent.
    pub fn room_replies(mut self, replies: impl RoomReplies) -> Self {
        self.replies = Arc::new(replies);
        self
    }

    /// Keeps rooms' history as the configuration says (`HISTORY_SIZE`, `HISTORY_TTL_SEC`, `DATA_DIR`,
    /// `HISTORY_FSYNC`, `HISTORY_RECOVERY_MAX`, `HISTORY_MEMORY_MB`): publications are written to an
    /// embedded store in `DATA_DIR` before members get them, and a join with `since` recovers what was
    /// missed, across restarts. Without it (or with `HISTORY_SIZE=0`) rooms still number their
    /// publications, but keep none, and nothing is written to disk.
    pub fn keep_history(mut self) -> Self {
        self.keep_history = true;
        self
    }

    /// Answers `GET path` on the HTTP side with the JSON value `f` returns.
    pub fn json_route(
        mut self,
        path: &str,
        f: impl Fn(&HttpContext) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.routes.push((path.to_owned(), Arc::new(f)));
        self
    }

    /// Binds the listeners and starts the WebSocket shards, then the HTTP shard.
    pub fn start(self) -> Result<RunningServer, StartError> {
        let Server {
            config,
            callbacks,
            authorize_join,
            routes,
            subprotocols,
            replies,
            keep_history,
        } = self;
        executor::check_io_uring()?;
        let cpus = executor::allowed_cpus();
        let shard_count = match config.server.io_threads {
            0 => cpus.len().max(1),
            n => n,
        };

        let ws_addr = SocketAddr::new(config.websocket.host, config.websocket.port);
        let listeners = bind_shared(ws_addr, shard_count)
            .map_err(|e| bind_error(e, "websocket", ws_addr, "WEBSOCKET_PORT"))?;
        let websocket_addr = listeners[0]
            .local_addr()
            .expect("a bound socket has an address");
        let http_requested = SocketAddr::new(config.server.host, config.server.port);
        let http_listener = bind_shared(http_requested, 1)
            .map_err(|e| bind_error(e, "http", http_requested, "SERVER_PORT"))?
            .remove(0);
        let http_addr = http_listener
            .local_addr()
            .expect("a bound socket has an address");

        let (senders, inboxes): (Vec<_>, Vec<_>) = (0..shard_count).map(|_| inbox()).unzip();
        let peers = Peers::new(senders);
        let stop = Arc::new(Stop::default());
        let callbacks = Arc::new(callbacks);
        let rooms = &config.rooms;
        let clustered = config.cluster.redis_url.is_some();
        let history = keep_history && rooms.history_size > 0;
        let retention = Retention {
            size: if history { rooms.history_size } else { 0 },
            ttl_ms: rooms.history_ttl.map(|ttl| ttl.as_millis() as u64),
            recovery_max: rooms.recovery_max,
        };
        // With the cluster, Redis keeps the history (the rooms' streams) and no store is opened.
        let store = if history && !clustered {
            let peers = peers.clone();
            let notify =
                Box::new(move |shard: usize, event| peers.post(shard, ShardMsg::Store(event)));
            Some(Store::open(
                &rooms.data_dir,
                retention,
                rooms.fsync,
                rooms.group_commit,
                notify,
            )?)
        } else {
            None
        };
        let bridge = if clustered {
            let peers = peers.clone();
            let notify =
                Box::new(move |shard: usize, event| peers.post(shard, ShardMsg::Cluster(event)));
            Some(bridge::start(
                &config.cluster,
                retention,
                config.rooms.presence_events,
                notify,
            )?)
        } else {
            None
        };
        let backing = match (&store, &bridge) {
            (_, Some(bridge)) => Backing::Cluster(bridge.sender.clone()),
            (Some(store), None) => Backing::Store(store.sender.clone()),
            (None, None) => Backing::Memory,
        };
        let shard_config = ShardConfig {
            authorize_join,
            subprotocols: subprotocols.into(),
            replies,
            retention,
            history_budget: rooms.memory_budget / shard_count,
            ..ShardConfig::new(&config)
        };
        let admission = Arc::new(Admission::new(&config.websocket));
        if let Some(warning) = crate::admission::descriptor_warning(&config.websocket) {
            tracing::warn!("{warning}");
        }
        let deflate_sessions = Arc::new(DeflateSessions::default());
        let mut running = RunningServer {
            websocket_addr,
            http_addr,
            handle: ServerHandle {
                shards: peers.clone(),
                stop: stop.clone(),
                deflate_sessions: deflate_sessions.clone(),
                cluster_counters: bridge.as_ref().map(|bridge| bridge.counters.clone()),
                admission: admission.clone(),
                started: Instant::now(),
            },
            threads: Vec::new(),
            store: None,
            bridge: None,
        };

        for (index, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
            let start = ShardStart {
                index,
                config: shard_config.clone(),
                admission: admission.clone(),
                deflate_sessions: deflate_sessions.clone(),
                listener,
                peers: peers.clone(),
                inbox,
                callbacks: callbacks.clone(),
                stop: stop.clone(),
                backing: backing.clone(),
            };
            let placement = Placement::Fixed(cpus[index % cpus.len()]);
            let thread = executor::start(
                format!("websocket shard {index}"),
                placement,
                SHARD_RING_DEPTH,
                move || executor::run(start),
            )?;
            running.threads.push(thread);
        }
        tracing::info!(
            max_connections = admission.max_open(),
            "websocket listening on {websocket_addr} ({shard_count} shards)"
        );

        let site = Site {
            routes,
            public: config.public.clone(),
            server: config.server.clone(),
            metrics: config.metrics.clone(),
            api: config.api.clone(),
            max_message_size: config.websocket.max_message_size,
            stats_interval: config.logs.stats_interval,
            context: HttpContext::new(websocket_addr, running.handle.clone()),
        };
        let thread = executor::start(
            "http shard".to_owned(),
            Placement::Unbound,
            HTTP_RING_DEPTH,
            move || async move {
                let listener = into_executor(http_listener);
                http::serve(listener, std::rc::Rc::new(site), &stop).await;
            },
        )?;
        running.threads.push(thread);
        tracing::info!("http listening on {http_addr}");
        if config.api.key.is_none() {
            tracing::info!(
                "API_KEY is not set: the server API (POST /api/publish, GET /api/rooms/{{room}}) answers 404"
            );
        }
        if let Some(store) = store {
            tracing::info!(
                dir = %rooms.data_dir.display(),
                size = rooms.history_size,
                fsync = ?rooms.fsync,
                "room history kept"
            );
            // The shards hold the only senders now: the store ends once they have.
            running.store = Some(store.thread);
        }
        drop(backing);
        if let Some(bridge) = bridge {
            tracing::info!(
                partitions = config.cluster.partitions,
                "cluster: rooms shared with other nodes through Redis"
            );
            // Likewise the bridge, once the shards have dropped their senders.
            running.bridge = Some(bridge.thread);
        }
        Ok(running)
    }
}

/// A started server. Dropping it stops it gracefully, like [`RunningServer::stop`].
pub struct RunningServer {
    websocket_addr: SocketAddr,
    http_addr: SocketAddr,
    handle: ServerHandle,
    /// Every executor's thread: the WebSocket shards', then the HTTP shard's.
    threads: Vec<JoinHandle<()>>,
    /// The history store's thread, which writes what the shards sent it and syncs once they have ended.
    store: Option<JoinHandle<()>>,
    /// The cluster's bridge thread, which ends once the shards have.
    bridge: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// The address the WebSocket shards listen on (the real port when the config asked for 0).
    pub fn websocket_addr(&self) -> SocketAddr {
        self.websocket_addr
    }

    /// The address the HTTP shard listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// A handle for reaching the shards from any thread.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Stops accepting, closes every session with 1001, waits (bounded) for close handshakes and in-flight
    /// HTTP requests, and joins every executor thread (the sequence is in the `shutdown` module).
    pub fn stop(mut self) {
        self.handle.shutdown();
        self.join();
    }

    /// Blocks until every executor has ended, after [`ServerHandle::shutdown`] from another thread (a
    /// signal handler's, say).
    pub fn wait(mut self) {
        self.join();
    }

    fn join(&mut self) {
        let after_shards = self.store.take().into_iter().chain(self.bridge.take());
        for thread in self.threads.drain(..).chain(after_shards) {
            let _ = thread.join();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        self.join();
    }
}

/// Reaches a running server's shards from any thread: `Send`, `Sync`, cheap to clone.
#[derive(Clone)]
pub struct ServerHandle {
    shards: Peers,
    stop: Arc<Stop>,
    deflate_sessions: Arc<DeflateSessions>,
    cluster_counters: Option<Arc<ClusterCounters>>,
    admission: Arc<Admission>,
    started: Instant,
}

impl ServerHandle {
    /// Sends `text` to every member of `room` on every shard, as [`Session::broadcast_text_to_room`] does:
    /// posted to the room's home shard, which encodes it (and compresses it for permessage-deflate
    /// members) once and fans it out in the room's one order.
    pub fn broadcast_text_to_room(&self, room: &str, text: &str) {
        self.broadcast(room, DataKind::Text, text.as_bytes());
    }

    /// Sends `data` as a binary message to every member of `room` on every shard, like
    /// [`ServerHandle::broadcast_text_to_room`].
    pub fn broadcast_binary_to_room(&self, room: &str, data: &[u8]) {
        self.broadcast(room, DataKind::Binary, data);
    }

    fn broadcast(&self, room: &str, kind: DataKind, payload: &[u8]) {
        let home = self.shards.home_of(room);
        self.shards.post_broadcast(home, room, kind, payload);
    }

    /// Publishes `text` in `room`'s stream from outside the shards (a backend: the HTTP API's `POST
    /// /api/publish`), as [`Session::publish`] does: the room's home gives it the next offset, keeps it with
    /// history on, and fans it out (through Redis with the cluster). `from` names the publisher in the
    /// room's replies, and scopes its [`PublishOptions::id`]s as a signed-in user's are (an anonymous
    /// session's id cannot shadow a backend's). Resolves once it is published, with its [`Ack`], or with a [`PublishFailure`]:
    /// `invalid_room` for a name of 0 or more than 1024 bytes, `unavailable` when the cluster cannot
    /// reach Redis or the server is stopping. The future needs no particular runtime.
    pub fn publish(
        &self,
        room: &str,
        from: &str,
        text: &str,
        options: PublishOptions,
    ) -> impl Future<Output = Result<Ack, PublishFailure>> + Send + 'static {
        let failure = |room: &str, code| PublishFailure {
            room: room.to_owned(),
            code,
            tag: None,
        };
        let answer = is_room_name(room).then(|| {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let request = PublishRequest {
                text: text.to_owned(),
                // As an authenticated user's: its ids are its own, apart from anonymous sessions'.
                from: Author {
                    name: from.to_owned(),
                    is_user: true,
                },
                options,
                to: Some(Asker::Caller(reply)),
            };
            let home = self.shards.home_of(room);
            let room: Arc<str> = Arc::from(room);
            self.shards
                .post(home, ShardMsg::Publication { room, request });
            answer
        });
        let room = room.to_owned();
        async move {
            let Some(answer) = answer else {
                return Err(failure(&room, "invalid_room"));
            };
            match answer.await {
                Ok(HomeAnswer::Published(ack)) => Ok(ack),
                Ok(HomeAnswer::Failed(failed)) => Err(failed),
                // The home shard ended (the server is stopping) before it answered.
                Ok(HomeAnswer::Presence(_)) | Err(_) => Err(failure(&room, "unavailable")),
            }
        }
    }

    /// Who is in `room`, on every shard (and with the cluster, on every node), as
    /// [`Session::request_presence`] answers; `None` when the server is stopping. The future needs no
    /// particular runtime.
    pub fn presence(&self, room: &str) -> impl Future<Output = Option<Presence>> + Send + 'static {
        let (reply, answer) = tokio::sync::oneshot::channel();
        // A name that is not a room's has nobody in it.
        if is_room_name(room) {
            let home = self.shards.home_of(room);
            self.shards.post(
                home,
                ShardMsg::Presence {
                    room: Arc::from(room),
                    to: Asker::Caller(reply),
                    tag: None,
                },
            );
        } else {
            let _ = reply.send(HomeAnswer::Presence(Presence {
                room: room.to_owned(),
                members: Vec::new(),
                tag: None,
            }));
        }
        async move {
            match answer.await {
                Ok(HomeAnswer::Presence(presence)) => Some(presence),
                _ => None,
            }
        }
    }

    /// Sends `text` to session `id` from any thread, as [`Session::send_text`] would on its shard: posted to
    /// that shard, which queues it (compressed if the session negotiated permessage-deflate). Ignored when
    /// the session has ended. This is how work done off the shards answers the session that asked for it
    /// (`examples/blocking_work.rs`).
    pub fn send_text_to_session(&self, id: SessionId, text: &str) {
        self.shards
            .send_to_session(id, DataKind::Text, text.as_bytes());
    }

    /// Sends `data` as a binary message to session `id` from any thread, like
    /// [`ServerHandle::send_text_to_session`].
    pub fn send_binary_to_session(&self, id: SessionId, data: &[u8]) {
        self.shards.send_to_session(id, DataKind::Binary, data);
    }

    /// What permessage-deflate did since the server started, over every shard. Each shard counts its own
    /// and answers when it next runs, after what was posted to it before: so a broadcast made through this
    /// handle is counted in the answer. The future needs no particular runtime; a shard that has ended is
    /// left out.
    pub fn deflate_stats(&self) -> impl Future<Output = DeflateStats> + Send + 'static {
        let answers = self.ask_shards();
        async move {
            let mut total = DeflateStats::default();
            for answer in answers {
                if let Ok(snapshot) = answer.await {
                    total += snapshot.deflate;
                }
            }
            total
        }
    }

    /// What the bridge to Redis counted, with `CLUSTER_REDIS_URL`; `None` for a single node.
    pub fn cluster_stats(&self) -> Option<ClusterStats> {
        self.cluster_counters.as_ref().map(|c| c.snapshot())
    }

    /// Asks the server to stop, as [`RunningServer::stop`] does, and returns at once: every shard stops
    /// accepting and closes its sessions with 1001, the HTTP shard finishes its requests in flight.
    /// [`RunningServer::wait`] returns once they have all ended.
    pub fn shutdown(&self) {
        self.stop.request();
    }

    /// How many WebSocket shards run.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Asks every shard for what it counted; each answers on its next turn (a shard that has ended
    /// drops its request, and its receiver sees the sender gone).
    pub(crate) fn ask_shards(&self) -> Vec<tokio::sync::oneshot::Receiver<ShardSnapshot>> {
        (0..self.shards.len())
            .map(|shard| {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let asked = Instant::now();
                self.shards.post(shard, ShardMsg::Snapshot { asked, reply });
                answer
            })
            .collect()
    }

    /// The scrape: the shards' answers (those that came in time) and the process-wide counts.
    pub(crate) fn snapshot(&self, shards: Vec<ShardSnapshot>) -> ServerSnapshot {
        ServerSnapshot {
            shards,
            shard_count: self.shards.len(),
            connection_limit: self.admission.max_open(),
            deflate_sessions: self.deflate_sessions.count(),
            cluster: self.cluster_stats(),
            uptime: self.started.elapsed(),
        }
    }
}

fn bind_error(
    error: BindError,
    what: &'static str,
    addr: SocketAddr,
    key: &'static str,
) -> StartError {
    match error {
        BindError::Taken => StartError::PortTaken { what, addr, key },
        BindError::Os(source) => StartError::Bind { what, addr, source },
    }
}
