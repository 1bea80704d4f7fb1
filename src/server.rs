//! [`Server`]: registration of callbacks and routes, then start-up and the running server's lifecycle.
//!
//! [`Server::start`] binds every listener first (so a port in use fails before anything runs), starts the
//! WebSocket shards, each a glommio executor on its own thread pinned to one core, then the HTTP shard on
//! an unpinned executor, and returns a [`RunningServer`]. [`RunningServer::stop`] is the graceful path:
//! shards stop accepting and close every session with 1001, HTTP finishes in-flight requests, and every
//! thread is joined, all bounded in time. An executor that cannot start (io_uring refused, a locked-memory
//! limit on an older kernel) is a [`StartError::Executor`] naming the cause and the fix, never a panic.
//!
//! It must not handle signals or read `.env`: the binary does that and hands over a [`Config`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use glommio::{LocalExecutorBuilder, Placement};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::{SessionError, StartError};
use crate::handler::Callbacks;
use crate::http::{self, HttpContext, JsonRoute, Site};
use crate::session::Session;
use crate::shard::acceptor::bind_shared;
use crate::shard::mesh::{inbox, InboxSender, ShardMsg};
use crate::shard::{self, ShardStart};
use crate::ws::codec;

/// What to tell an operator whose kernel refuses to create an io_uring executor.
const EXECUTOR_FIX: &str = "roomcast needs io_uring (Linux 5.8 or newer, not disabled by the \
    kernel.io_uring_disabled sysctl or a seccomp profile) and, on kernels before 5.12, enough locked memory \
    for its rings: raise `ulimit -l` (LimitMEMLOCK= under systemd) or lower SERVER_IO_THREADS";

/// The HTTP shard's io_uring depth: glommio's default; it holds few connections (see [`shard::RING_DEPTH`]).
const HTTP_RING_DEPTH: usize = 128;

/// A configured server with its callbacks and routes, not yet started.
pub struct Server {
    config: Config,
    callbacks: Callbacks,
    routes: Vec<(String, JsonRoute)>,
}

impl Server {
    /// A server with `config` and no callbacks: every message is ignored until some are registered.
    pub fn new(config: Config) -> Server {
        Server {
            config,
            callbacks: Callbacks::default(),
            routes: Vec::new(),
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

    /// Runs for each binary message.
    pub fn on_binary(mut self, f: impl Fn(&Session, &[u8]) + Send + Sync + 'static) -> Self {
        self.callbacks.on_binary = Some(Box::new(f));
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
            routes,
        } = self;
        check_io_uring()?;
        let cpus = allowed_cpus();
        let shard_count = match config.server.io_threads {
            0 => cpus.len().max(1),
            n => n,
        };

        let ws_addr = SocketAddr::new(config.websocket.host, config.websocket.port);
        let listeners = bind_shared(ws_addr, shard_count).map_err(|source| StartError::Bind {
            what: "websocket",
            addr: ws_addr,
            source,
        })?;
        let websocket_addr = listeners[0]
            .local_addr()
            .expect("a bound socket has an address");
        let http_requested = SocketAddr::new(config.server.host, config.server.port);
        let http_listener = bind_shared(http_requested, 1)
            .map_err(|source| StartError::Bind {
                what: "http",
                addr: http_requested,
                source,
            })?
            .remove(0);
        let http_addr = http_listener
            .local_addr()
            .expect("a bound socket has an address");

        let mut senders = Vec::with_capacity(shard_count);
        let mut receivers = Vec::with_capacity(shard_count);
        for _ in 0..shard_count {
            let (tx, rx) = inbox();
            senders.push(tx);
            receivers.push(rx);
        }
        let peers: Arc<[InboxSender]> = senders.into();
        let callbacks = Arc::new(callbacks);
        let (stop_tx, stop_rx) = inbox();
        let mut running = RunningServer {
            websocket_addr,
            http_addr,
            handle: ServerHandle {
                shards: peers.clone(),
                http_stop: Arc::new(stop_tx),
            },
            shard_threads: Vec::new(),
            http: None,
        };

        for (index, (listener, inbox)) in listeners.into_iter().zip(receivers).enumerate() {
            let start = ShardStart {
                index,
                listener,
                inbox,
                peers: peers.clone(),
                callbacks: callbacks.clone(),
                settings: config.websocket.clone(),
                request_timeout: config.server.request_timeout,
                bench_mode: config.server.bench_mode,
            };
            let placement = Placement::Fixed(cpus[index % cpus.len()]);
            let thread = start_executor(
                format!("websocket shard {index}"),
                placement,
                shard::RING_DEPTH,
                move || shard::run(start),
            )?;
            running.shard_threads.push(thread);
        }
        tracing::info!("websocket listening on {websocket_addr} ({shard_count} shards)");

        let site = Site {
            routes,
            public: config.public.clone(),
            server: config.server.clone(),
            context: HttpContext::new(websocket_addr),
        };
        let thread = start_executor(
            "http shard".to_owned(),
            Placement::Unbound,
            HTTP_RING_DEPTH,
            move || async move {
                let listener = {
                    use std::os::unix::io::{FromRawFd, IntoRawFd};
                    // SAFETY: the fd comes from a std listener we own and give up here.
                    unsafe { glommio::net::TcpListener::from_raw_fd(http_listener.into_raw_fd()) }
                };
                // Only Shutdown is ever posted to the HTTP shard.
                let stopped = async move { stop_rx.wait_for_post().await };
                http::serve(listener, std::rc::Rc::new(site), stopped).await;
            },
        )?;
        running.http = Some(thread);
        tracing::info!("http listening on {http_addr}");
        Ok(running)
    }
}

/// A started server. Dropping it stops it gracefully, like [`RunningServer::stop`].
pub struct RunningServer {
    websocket_addr: SocketAddr,
    http_addr: SocketAddr,
    handle: ServerHandle,
    shard_threads: Vec<JoinHandle<()>>,
    http: Option<JoinHandle<()>>,
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
    /// HTTP requests, and joins every executor thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Blocks until every executor has ended, after [`ServerHandle::shutdown`] from another thread (a
    /// signal handler's, say).
    pub fn wait(mut self) {
        self.join();
    }

    fn shutdown(&mut self) {
        self.handle.shutdown();
        self.join();
    }

    fn join(&mut self) {
        for thread in self.shard_threads.drain(..) {
            let _ = thread.join();
        }
        if let Some(thread) = self.http.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Reaches a running server's shards from any thread: `Send`, `Sync`, cheap to clone.
#[derive(Clone)]
pub struct ServerHandle {
    shards: Arc<[InboxSender]>,
    http_stop: Arc<InboxSender>,
}

impl ServerHandle {
    /// Sends `text` to every member of `room` on every shard; the frame is encoded once, and each shard
    /// copies it into a frame of its own so that no per-delivery reference count is shared between cores.
    pub fn broadcast_text_to_room(&self, room: &str, text: &str) {
        let frame: Arc<[u8]> = Arc::from(&codec::text_frame(text)[..]);
        let room: Arc<str> = Arc::from(room);
        for shard in self.shards.iter() {
            shard.post(ShardMsg::Broadcast {
                room: room.clone(),
                frame: frame.clone(),
            });
        }
    }

    /// Asks the server to stop, as [`RunningServer::stop`] does, and returns at once: every shard stops
    /// accepting and closes its sessions with 1001, the HTTP shard finishes its requests in flight.
    /// [`RunningServer::wait`] returns once they have all ended.
    pub fn shutdown(&self) {
        for shard in self.shards.iter() {
            shard.post(ShardMsg::Shutdown);
        }
        self.http_stop.post(ShardMsg::Shutdown);
    }

    /// How many WebSocket shards run.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

/// Starts a glommio executor on its own thread and waits until it exists, so a refused io_uring is a
/// start-up error rather than a panic in a thread.
fn start_executor<F, Fut>(
    name: String,
    placement: Placement,
    ring_depth: usize,
    make_future: F,
) -> Result<JoinHandle<()>, StartError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread_name = name.replace(' ', "-");
    let thread = std::thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || {
            let executor = match LocalExecutorBuilder::new(placement)
                .name(&thread_name)
                .ring_depth(ring_depth)
                .make()
            {
                Ok(executor) => executor,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            executor.run(make_future());
        })
        .map_err(|e| executor_error(&name, e.to_string()))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(cause)) => Err(executor_error(&name, cause)),
        Err(_) => Err(executor_error(
            &name,
            "the executor thread exited during start-up".to_owned(),
        )),
    }
}

/// Asks the kernel for an io_uring before any executor is built: glommio panics, instead of returning an
/// error, when the ring it probes with is refused (seccomp, `kernel.io_uring_disabled`, an old kernel).
///
/// The probe runs on a thread of its own: the kernel tears a ring down asynchronously through task work on
/// the thread that created it, which interrupts that thread's next blocking syscall with EINTR; that must not
/// be the application's thread.
fn check_io_uring() -> Result<(), StartError> {
    let probe = std::thread::spawn(|| {
        // struct io_uring_params is 120 bytes; zeroed means "no flags, kernel picks the sizes".
        let mut params = [0u8; 120];
        // SAFETY: io_uring_setup writes at most sizeof(io_uring_params) into `params`; the fd is closed at once.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: closing the ring we just created.
        unsafe { libc::close(fd as libc::c_int) };
        Ok(())
    });
    match probe.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(executor_error(
            "websocket shards",
            format!("io_uring_setup failed: {e}"),
        )),
        Err(_) => Err(executor_error(
            "websocket shards",
            "the io_uring probe panicked".to_owned(),
        )),
    }
}

fn executor_error(name: &str, cause: String) -> StartError {
    StartError::Executor {
        executor: name.to_owned(),
        cause,
        fix: EXECUTOR_FIX,
    }
}

/// The CPUs this process may run on (its affinity mask), so shards pin only to cores they are allowed.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid, and sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) }
            == 0;
    let cpus: Vec<usize> = if ok {
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect()
    } else {
        Vec::new()
    };
    if cpus.is_empty() {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    } else {
        cpus
    }
}
