//! Executors: starting a glommio executor on a thread of its own, and a WebSocket shard's life on one.
//!
//! [`start`] builds an executor and waits until it exists, so that a refused io_uring or a locked-memory
//! limit is a [`StartError::Executor`] naming the cause and the fix, never a panic in a thread; the HTTP
//! shard starts through it too. [`check_io_uring`] asks the kernel for a ring before any executor is built,
//! because glommio itself panics when its probe is refused. [`allowed_cpus`] is the affinity mask the
//! shards are pinned within.
//!
//! [`run`] is a WebSocket shard's main future: its inbox task, its sweep task and its accept loop, until the
//! shutdown sequence of [`crate::shutdown`] ends it.
//!
//! It must not decide what a connection does; the acceptor hands connections to [`crate::connection`].

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use glommio::sync::Gate;
use glommio::{LocalExecutorBuilder, Placement};

use super::acceptor;
use super::home::Backing;
use super::mesh::{InboxReceiver, Peers};
use super::{Shard, ShardConfig, WriteBatch};
use crate::admission::Admission;
use crate::connection;
use crate::error::StartError;
use crate::handler::Callbacks;
use crate::shutdown::{self, Stop};
use crate::ws::deflate::DeflateSessions;
use crate::ws::encode;

/// What to tell an operator whose kernel refuses to create an io_uring executor.
const EXECUTOR_FIX: &str = "roomcast needs io_uring (Linux 5.8 or newer, not disabled by the \
    kernel.io_uring_disabled sysctl or a seccomp profile) and, on kernels before 5.12, enough locked memory \
    for its rings: raise `ulimit -l` (LimitMEMLOCK= under systemd) or lower SERVER_IO_THREADS";

/// Submission entries of each of a WebSocket shard's glommio rings (glommio's default is 128). The kernel
/// hashes pending polls into a table of `cq_entries / 32` buckets (at most 256) that it walks on every
/// cancellation, and glommio cancels its preemption timers each time the executor parks. When every idle
/// session kept a glommio poll pending, 128 entries (8 buckets) made that walk 6 % of a 2-shard server's
/// CPU serving 2,000 clients. Sessions now wait in the shard's own ring ([`super::ring`]), but a shard
/// without one (an older kernel) still waits in glommio's: 4,096 entries (256 buckets) cost about 1.2 MB
/// of RSS per shard.
pub(crate) const SHARD_RING_DEPTH: usize = 4096;

/// How long shutdown waits for a shard's sessions to finish their close handshakes; longer than the close
/// timeout, so a peer that never answers is aborted by the sweep before the executor gives up on it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(6);

/// How often the sweep looks at timeouts and pings.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// What one WebSocket shard needs to start; built on the starting thread and moved into the shard's thread.
pub(crate) struct ShardStart {
    pub(crate) index: usize,
    pub(crate) config: ShardConfig,
    pub(crate) admission: Arc<Admission>,
    pub(crate) deflate_sessions: Arc<DeflateSessions>,
    pub(crate) listener: std::net::TcpListener,
    pub(crate) peers: Peers,
    pub(crate) inbox: InboxReceiver,
    pub(crate) callbacks: Arc<Callbacks>,
    pub(crate) stop: Arc<Stop>,
    /// Where the rooms homed on the shard keep their streams.
    pub(crate) backing: Backing,
}

/// Runs a WebSocket shard until shutdown: accept, deliver what other shards post, sweep; then the shutdown
/// sequence, with close 1001 "server shutting down" as its close step.
pub(crate) async fn run(start: ShardStart) {
    let ShardStart {
        index,
        config,
        admission,
        deflate_sessions,
        listener,
        peers,
        inbox,
        callbacks,
        stop,
        backing,
    } = start;
    let shard = Rc::new(Shard::new(
        index,
        config,
        admission,
        peers,
        inbox,
        deflate_sessions,
        backing,
    ));
    let inbox_task = glommio::spawn_local(deliver_loop(shard.clone()));
    let write_task = glommio::spawn_local(write_loop(shard.clone()));
    let sweep_task = glommio::spawn_local(sweep_loop(shard.clone()));
    let receive_task =
        glommio::spawn_local(connection::receive_loop(shard.clone(), callbacks.clone()));
    let sessions = Gate::new();
    let accept = acceptor::accept_loop(listener, shard.clone(), callbacks, sessions.clone());
    let close = || {
        // What other shards posted before the request still reaches its members, ahead of the close.
        shard.deliver_posted();
        shard.close_all(1001, "server shutting down");
    };
    if !shutdown::serve_until_stopped(&stop, accept, &sessions, close, SHUTDOWN_GRACE).await {
        tracing::warn!(
            shard = index,
            open = shard.open_sessions().len(),
            "sessions still open after the shutdown grace period; dropped"
        );
    }
    inbox_task.cancel().await;
    receive_task.cancel().await;
    sweep_task.cancel().await;
    write_task.cancel().await;
}

/// The shard's inbox task: delivers what other shards post, as soon as they post it.
async fn deliver_loop(shard: Rc<Shard>) {
    loop {
        shard.deliver_posted();
        shard.wait_for_post().await;
    }
}

/// The shard's writer task: once a turn, writes every session that had frames queued (see
/// [`super::writer`]). Woken by the first session named, it runs after the tasks already scheduled, so
/// one round takes what the turn's fan-outs queued.
async fn write_loop(shard: Rc<Shard>) {
    let mut batch = WriteBatch::default();
    loop {
        shard.wait_for_writes().await;
        shard.write_wanted(&mut batch);
    }
}

/// The shard's one timer: a sweep a second, with a ping when `WEBSOCKET_PING_INTERVAL` has passed.
async fn sweep_loop(shard: Rc<Shard>) {
    let ping = encode::ping_frame();
    let mut last_ping = Instant::now();
    loop {
        glommio::timer::sleep(SWEEP_INTERVAL).await;
        let now = Instant::now();
        let ping_due = shard
            .settings()
            .ping_interval
            .is_some_and(|every| now.saturating_duration_since(last_ping) >= every);
        if ping_due {
            last_ping = now;
        }
        shard.sweep(ping_due.then_some(&ping));
        shard.check_received();
    }
}

/// Starts a glommio executor named `name` on its own thread and waits until it exists, so a refused
/// io_uring is a start-up error rather than a panic in a thread; the thread then runs `make_future()`.
pub(crate) fn start<F, Fut>(
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
pub(crate) fn check_io_uring() -> Result<(), StartError> {
    let probe = std::thread::spawn(|| {
        let mut params = rustix::io_uring::io_uring_params::default();
        // SAFETY: `params` is a valid, exclusively borrowed `io_uring_params` for the kernel to fill in;
        // the ring's descriptor comes back owned and is closed when dropped at the end of this closure.
        unsafe { rustix::io_uring::io_uring_setup(2, &mut params) }.map(drop)
    });
    match probe.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(executor_error(
            "websocket shards",
            format!(
                "io_uring_setup failed: {}",
                std::io::Error::from_raw_os_error(e.raw_os_error())
            ),
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
pub(crate) fn allowed_cpus() -> Vec<usize> {
    let cpus: Vec<usize> = match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&cpu| set.is_set(cpu))
            .collect(),
        Err(_) => Vec::new(),
    };
    if cpus.is_empty() {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    } else {
        cpus
    }
}
