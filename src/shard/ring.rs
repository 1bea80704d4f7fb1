//! The shard's own io_uring ring: what the shard's writer sends and what its sessions receive pass
//! through it, and its completions are sorted here by what they belong to.
//!
//! **Receiving.** Each session has one multishot `IORING_OP_RECV` armed ([`ShardRing::arm_receive`]) that
//! stays in the kernel for the session's whole life and completes once for every arrival of bytes, into
//! a buffer the kernel takes from the shard's provided-buffer ring ([`ProvidedBuffers`]). An idle session
//! so costs one request in the kernel and nothing in the process (no readiness poll, no future, no
//! buffer), and what a turn received for every session is reaped with one `io_uring_enter`: no
//! `recvfrom` per message and no poll to re-arm after it. Completions wait in [`ShardRing::next_received`]
//! until the receiving task hands each to its session; the buffer goes back to the kernel right after
//! ([`ShardRing::provide`]). The pool is bounded: when it runs dry the kernel ends a session's receive
//! with `ENOBUFS` rather than take memory, the bytes stay in the socket, and the shard arms the receive
//! again in the same pass, after the completions ahead of it have given their buffers back.
//!
//! **Waking.** The ring is `DEFER_TASKRUN`: the kernel queues a completion as work for the shard's own
//! thread, run when that thread next enters this ring, rather than interrupting it. When the first such
//! work is queued the kernel signals the ring's eventfd and sets `IORING_SQ_TASKRUN`; the receiving task
//! waits on the eventfd through glommio (`glommio::io::readable`), so a parked executor wakes for its
//! sessions' bytes like for its own sources. While this thread is inside the ring itself the eventfd is
//! disabled (completions it posts there would only wake it again for nothing); afterwards, when
//! `IORING_SQ_TASKRUN` says work was queued meanwhile, it enters once more with the eventfd on, so that
//! work is not left waiting for a signal that was never sent. Nothing waits on that flag: the kernel can
//! leave it set after this thread ran the work. The argument needs the kernel's setting of the flag to
//! be ordered before its read of the eventfd switch, which its atomic read-modify-write gives on x86; on
//! weaker memory models the shard's once-a-second sweep also asks [`ShardRing::work_announced`], so a
//! missed signal costs at most a second.
//!
//! **Sending.** The writer's sends ([`crate::shard::writer`]) carry `MSG_DONTWAIT` and complete during the
//! submission; [`ShardRing::complete_sends`] returns only once every one has.
//!
//! It must not interpret what it receives nor decide what to send: it moves bytes for the shard.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::session_state::SessionId;

/// Submission slots; the writer sends to at most this many sessions per submission.
pub(crate) const RING_ENTRIES: usize = 256;
/// Completion slots. Receives with bytes are at most one per provided buffer between two reaps, but
/// every session the pool could not serve ends its receive with a completion of its own (`ENOBUFS`):
/// many sessions answering at once (the sweep's pings) can overflow this, and the kernel then keeps the
/// rest until this thread enters again, which it does while `IORING_SQ_CQ_OVERFLOW` is set.
const COMPLETION_ENTRIES: u32 = 8192;
/// Provided buffers (a power of two, as the kernel requires) and the bytes of each: 2 MiB a shard, of
/// which only what traffic has used is resident.
pub(crate) const BUFFERS: u16 = 512;
const BUFFER_LEN: usize = 4096;
/// The group id the shard's buffers are registered under (one group per ring).
const BUFFER_GROUP: u16 = 0;

/// What a completion belongs to, in the top bits of its user data.
const KIND_SHIFT: u32 = 62;
const KIND_SEND: u64 = 0;
const KIND_RECEIVE: u64 = 1;
const KIND_CANCEL: u64 = 2;
/// The bits below the kind: a session id without its shard index (its slot and count, see
/// [`SessionId`]) for a receive, the submission slot for a send.
const PAYLOAD_BITS: u64 = (1 << 48) - 1;

/// A receive completion reaped and not yet handed to its session.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Receipt {
    user_data: u64,
    result: i32,
    flags: u32,
}

impl Receipt {
    /// The session it belongs to, on shard `shard`.
    pub(crate) fn session(&self, shard: usize) -> SessionId {
        SessionId(((shard as u64) << 48) | (self.user_data & PAYLOAD_BITS))
    }

    /// What the kernel reported: bytes received (in [`Receipt::buffer`]), 0 for the peer's end of the
    /// stream, or a negative errno.
    pub(crate) fn result(&self) -> i32 {
        self.result
    }

    /// The provided buffer the bytes are in; it is the receiver's until given back with
    /// [`ShardRing::provide`].
    pub(crate) fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }

    /// Whether the session's receive is still armed; when not, and the session is alive, it must be
    /// armed again unless the stream ended.
    pub(crate) fn armed(&self) -> bool {
        cqueue::more(self.flags)
    }
}

/// The ring, and the memory its requests point at. Dropping it unregisters the buffers first, so no
/// receive the kernel has yet to tear down can pick one (and no send is ever in flight between calls);
/// only then is the memory unmapped.
pub(crate) struct ShardRing {
    uring: IoUring,
    /// Signalled by the kernel when completions are queued for this thread (see the module docs).
    eventfd: OwnedFd,
    pub(crate) sends: SendSlots,
    buffers: ProvidedBuffers,
    /// Receive completions reaped and not yet handed out, oldest first.
    received: VecDeque<Receipt>,
    /// Send completions reaped and not yet handed to the writer (slot, result): a submission made to
    /// free room in the queue ([`ShardRing::push`]) can reap some before the writer asks.
    sent: Vec<(usize, i32)>,
}

/// One message header and [`IOVECS_PER_SEND`] iovecs per submission slot, and what each send asked for.
pub(crate) struct SendSlots {
    pub(crate) headers: Box<[libc::msghdr]>,
    pub(crate) iovecs: Box<[libc::iovec]>,
    pub(crate) asked: Box<[usize]>,
}

/// Frames one session's send carries at most; what is left waits for the next round.
pub(crate) const IOVECS_PER_SEND: usize = 32;

impl ShardRing {
    /// A ring with its provided buffers and eventfd, or the kernel's refusal (io_uring disabled, or
    /// older than `DEFER_TASKRUN`, 6.1).
    pub(crate) fn new() -> io::Result<ShardRing> {
        // Only the shard's thread submits, and it runs the kernel's completion work itself when it enters
        // (6.1+); TASKRUN_FLAG tells it, without a system call, that such work is waiting.
        let uring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(COMPLETION_ENTRIES)
            .build(RING_ENTRIES as u32)?;
        // SAFETY: eventfd(2) with valid flags returns a new descriptor or -1, checked here.
        let eventfd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if eventfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just returned by eventfd(2), owned by nothing else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(eventfd) };
        uring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        let buffers = ProvidedBuffers::new()?;
        // SAFETY: the ring of buffer descriptors is page-aligned, BUFFERS entries long, and lives in this
        // ShardRing, which unregisters it (in Drop) before freeing it.
        unsafe {
            uring.submitter().register_buf_ring_with_flags(
                buffers.entries.addr() as u64,
                BUFFERS,
                BUFFER_GROUP,
                0,
            )?;
        }
        // SAFETY: all-zero is a valid msghdr and a valid iovec (null pointers, zero lengths).
        let (header, iovec) = unsafe {
            (
                std::mem::zeroed::<libc::msghdr>(),
                std::mem::zeroed::<libc::iovec>(),
            )
        };
        Ok(ShardRing {
            uring,
            eventfd,
            sends: SendSlots {
                headers: vec![header; RING_ENTRIES].into_boxed_slice(),
                iovecs: vec![iovec; RING_ENTRIES * IOVECS_PER_SEND].into_boxed_slice(),
                asked: vec![0; RING_ENTRIES].into_boxed_slice(),
            },
            buffers,
            received: VecDeque::new(),
            sent: Vec::new(),
        })
    }

    /// The descriptor the receiving task waits on.
    pub(crate) fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Takes the eventfd's count, so that it signals again for what comes next; called before reaping,
    /// so nothing queued after the reap is missed.
    pub(crate) fn clear_signal(&self) {
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a u64 from a non-blocking eventfd this ring owns; EAGAIN (no
        // signal) leaves `count` untouched, which is fine.
        unsafe {
            libc::read(
                self.eventfd.as_raw_fd(),
                std::ptr::addr_of_mut!(count).cast(),
                8,
            )
        };
    }

    /// Arms `session`'s receive on `fd`: every arrival of bytes completes it, until the stream ends,
    /// it fails or it is cancelled.
    pub(crate) fn arm_receive(&mut self, fd: RawFd, session: SessionId) -> io::Result<()> {
        self.queue_receive(fd, session)?;
        self.submit()
    }

    /// Queues the arming of `session`'s receive on `fd` for the next submission.
    pub(crate) fn queue_receive(&mut self, fd: RawFd, session: SessionId) -> io::Result<()> {
        let receive = opcode::RecvMulti::new(types::Fd(fd), BUFFER_GROUP)
            .build()
            .user_data(receive_data(session));
        // SAFETY: a receive points at no memory of ours (the kernel picks a provided buffer).
        unsafe { self.push(&receive) }
    }

    /// Cancels `session`'s receive: the kernel drops its reference to the socket, which closes once
    /// the connection task drops its own.
    pub(crate) fn cancel_receive(&mut self, session: SessionId) -> io::Result<()> {
        let cancel = opcode::AsyncCancel::new(receive_data(session))
            .build()
            .user_data(KIND_CANCEL << KIND_SHIFT);
        // SAFETY: a cancellation points at no memory.
        unsafe { self.push(&cancel) }?;
        self.submit()
    }

    /// Queues the writer's send in submission slot `slot`.
    ///
    /// # Safety
    /// Everything `send` points at (its message header, iovecs and the bytes they name) must stay
    /// valid and unmoved until [`ShardRing::complete_sends`] has returned.
    pub(crate) unsafe fn push_send(&mut self, send: squeue::Entry, slot: usize) -> io::Result<()> {
        // SAFETY: the caller keeps what the send points at alive until its completion is reaped.
        unsafe { self.push(&send.user_data(KIND_SEND << KIND_SHIFT | slot as u64)) }
    }

    /// Queues `entry`, submitting what is queued first when the queue is full.
    ///
    /// # Safety
    /// What `entry` points at must outlive its completion (receives and cancellations point at
    /// nothing).
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // A full queue empties once submitted; a submission the kernel turns back for a moment (its
        // completion queue overflowing: EBUSY) is tried again after the reap has made room.
        for _ in 0..8 {
            // SAFETY: the caller's contract.
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.submit()?;
        }
        Err(io::Error::other("the submission queue stays full"))
    }

    /// Submits what is queued, runs every completion the kernel queued for this thread, and reaps them
    /// (receives wait for [`ShardRing::next_received`], sends for [`ShardRing::complete_sends`]).
    pub(crate) fn submit(&mut self) -> io::Result<()> {
        self.run(0)
    }

    /// Submits the writer's `sends` (queued with [`ShardRing::push_send`]) with whatever else is queued,
    /// and returns once all have completed (they do not wait: see [`crate::shard::writer`]), having
    /// handed each to `on_send` with its slot and result.
    pub(crate) fn complete_sends(
        &mut self,
        sends: usize,
        mut on_send: impl FnMut(usize, i32),
    ) -> io::Result<()> {
        self.run(0)?;
        while self.sent.len() < sends {
            // Not expected (the sends do not wait), but their memory must not be reused before.
            self.run(sends - self.sent.len())?;
        }
        debug_assert_eq!(
            self.sent.len(),
            sends,
            "only the writer's sends are in flight"
        );
        for (slot, result) in self.sent.drain(..) {
            on_send(slot, result);
        }
        Ok(())
    }

    /// Submits, runs the kernel's completion work, reaps; waits for `wait_for` completions. Enters the
    /// kernel only when there is something to submit, to wait for, or to run (`IORING_SQ_TASKRUN`); the
    /// kernel runs at most 20 items of work per enter, and sets the flag again when it leaves some.
    fn run(&mut self, mut wait_for: usize) -> io::Result<()> {
        loop {
            let idle = {
                let queue = self.uring.submission();
                queue.is_empty() && !queue.taskrun() && !queue.cq_overflow()
            };
            if wait_for == 0 && idle {
                self.reap();
                return Ok(());
            }
            self.uring.completion().disable_eventfd();
            let entered = self.enter(wait_for);
            self.uring.completion().enable_eventfd();
            // Pairs with the kernel's queueing of work (an atomic RMW on the flags, then its read of
            // the eventfd switch): either it saw the eventfd enabled and signals it, or the TASKRUN
            // check below sees its work.
            fence(Ordering::SeqCst);
            entered?;
            wait_for = 0;
            if self.reap() == 0 && self.uring.submission().taskrun() {
                // Work queued while the eventfd was off, which signalled nothing, or a flag left over
                // (set by work this thread had already run): enters with the eventfd on, so that
                // whatever comes next signals it. The kernel runs 20 items per enter and sets the flag
                // again when it leaves some, so this goes on while they yield completions; a few empty
                // enters in a row mean the flag is left over, and nothing waits on it.
                for _ in 0..4 {
                    self.enter(0)?;
                    if self.reap() > 0 || !self.uring.submission().taskrun() {
                        break;
                    }
                }
                return Ok(());
            }
        }
    }

    /// One `io_uring_enter`: submits what is queued and runs the completion work the kernel queued for
    /// this thread; waits for `wait_for` completions (sends still outstanding), or for none.
    fn enter(&mut self, wait_for: usize) -> io::Result<()> {
        match self.uring.submit_and_wait(wait_for) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Takes every completion in the queue: sends kept for the writer's [`ShardRing::complete`], receives
    /// for [`ShardRing::next_received`]; cancellations dropped (the cancelled receive reports its end).
    fn reap(&mut self) -> usize {
        let mut reaped = 0;
        for completion in self.uring.completion() {
            reaped += 1;
            let user_data = completion.user_data();
            match user_data >> KIND_SHIFT {
                KIND_SEND => self
                    .sent
                    .push(((user_data & PAYLOAD_BITS) as usize, completion.result())),
                KIND_RECEIVE => self.received.push_back(Receipt {
                    user_data,
                    result: completion.result(),
                    flags: completion.flags(),
                }),
                _ => {}
            }
        }
        reaped
    }

    /// Whether receive completions are waiting to be handed out or reaped, or submissions to be made.
    /// Not `IORING_SQ_TASKRUN`: the kernel can leave it set after this thread ran the work, and a task
    /// that waited on it would spin; work it announces either signals the eventfd or is run by
    /// [`ShardRing::submit`].
    pub(crate) fn has_received(&mut self) -> bool {
        !self.received.is_empty()
            || !self.uring.completion().is_empty()
            || !self.uring.submission().is_empty()
    }

    /// Whether the kernel says completion work is waiting (`IORING_SQ_TASKRUN`) or held back
    /// (`IORING_SQ_CQ_OVERFLOW`): a safety net for a missed signal, never something to wait on.
    pub(crate) fn work_announced(&mut self) -> bool {
        let queue = self.uring.submission();
        queue.taskrun() || queue.cq_overflow()
    }

    /// The oldest receive completion not yet handed out, reaping first when none is left.
    pub(crate) fn next_received(&mut self) -> io::Result<Option<Receipt>> {
        if self.received.is_empty() {
            self.submit()?;
        }
        Ok(self.received.pop_front())
    }

    /// The bytes of a receive completion in buffer `buffer`, which the caller holds until it provides
    /// it back.
    ///
    /// # Safety
    /// `buffer` and `len` must come from one receive completion (its [`Receipt::buffer`] and positive
    /// [`Receipt::result`]), not yet provided back, and the slice must be gone before it is.
    pub(crate) unsafe fn received_bytes<'a>(&self, buffer: u16, len: usize) -> &'a mut [u8] {
        debug_assert!(buffer < BUFFERS && len <= BUFFER_LEN);
        // SAFETY: the caller's contract: the kernel wrote `len` bytes there and gave the buffer to us;
        // it neither reads nor writes it until it is provided back.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.buffers
                    .memory
                    .addr()
                    .add(usize::from(buffer) * BUFFER_LEN),
                len,
            )
        }
    }

    /// Gives `buffer` back to the kernel for the next receive.
    ///
    /// # Safety
    /// `buffer` must be one a receive completion handed out ([`Receipt::buffer`]), given back once, and
    /// no slice of it ([`ShardRing::received_bytes`]) may be alive.
    pub(crate) unsafe fn provide(&mut self, buffer: u16) {
        self.buffers.provide(buffer);
    }
}

impl Drop for ShardRing {
    fn drop(&mut self) {
        // Before the buffers are unmapped: no request may pick one afterwards. If the kernel refuses,
        // the buffers are never unmapped.
        if self
            .uring
            .submitter()
            .unregister_buf_ring(BUFFER_GROUP)
            .is_err()
        {
            std::mem::forget(std::mem::replace(
                &mut self.buffers,
                ProvidedBuffers::none(),
            ));
        }
    }
}

fn receive_data(session: SessionId) -> u64 {
    KIND_RECEIVE << KIND_SHIFT | (session.0 & PAYLOAD_BITS)
}

/// The buffers the kernel receives into, and the ring of descriptors through which it takes them.
struct ProvidedBuffers {
    /// [`BUFFERS`] descriptors; the kernel reads them, and the tail we publish in the first one.
    entries: Mapping,
    /// [`BUFFERS`] × [`BUFFER_LEN`] bytes.
    memory: Mapping,
    /// How many buffers have been provided so far (wrapping), as last published.
    tail: u16,
}

impl ProvidedBuffers {
    /// No buffers: what a ring whose buffers had to be leaked keeps.
    fn none() -> ProvidedBuffers {
        ProvidedBuffers {
            entries: Mapping::empty(),
            memory: Mapping::empty(),
            tail: 0,
        }
    }

    fn new() -> io::Result<ProvidedBuffers> {
        let mut buffers = ProvidedBuffers {
            entries: Mapping::new(usize::from(BUFFERS) * std::mem::size_of::<BufRingEntry>())?,
            memory: Mapping::new(usize::from(BUFFERS) * BUFFER_LEN)?,
            tail: 0,
        };
        for buffer in 0..BUFFERS {
            buffers.provide(buffer);
        }
        Ok(buffers)
    }

    fn provide(&mut self, buffer: u16) {
        let ring = self.entries.addr().cast::<BufRingEntry>();
        let place = usize::from(self.tail & (BUFFERS - 1));
        // SAFETY: `place` < BUFFERS, inside the mapping; the kernel only reads entries between its head
        // and the published tail, and this one is past the tail until the store below.
        let entry = unsafe { &mut *ring.add(place) };
        // SAFETY: `buffer` < BUFFERS, so its bytes are inside the buffers' mapping.
        entry.set_addr(unsafe { self.memory.addr().add(usize::from(buffer) * BUFFER_LEN) } as u64);
        entry.set_len(BUFFER_LEN as u32);
        entry.set_bid(buffer);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is a u16 inside the first entry (the kernel's `io_uring_buf_ring` layout),
        // suitably aligned, which the kernel reads atomically; Release publishes the entry written above.
        let tail = unsafe { &*BufRingEntry::tail(ring).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }
}

/// Anonymous, page-aligned, zero-filled memory (untouched pages take no RAM), unmapped when dropped.
struct Mapping {
    addr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: a private anonymous mapping of `len` bytes at an address the kernel picks; checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            addr: addr.cast(),
            len,
        })
    }

    /// Nothing mapped.
    fn empty() -> Mapping {
        Mapping {
            addr: std::ptr::null_mut(),
            len: 0,
        }
    }

    fn addr(&self) -> *mut u8 {
        self.addr
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: exactly the mapping made in `new`, unmapped once.
            unsafe { libc::munmap(self.addr.cast(), self.len) };
        }
    }
}
