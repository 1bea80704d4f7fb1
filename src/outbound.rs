//! One session's outbound queue: encoded frames waiting to be written, and the slow-consumer policy.
//!
//! Frames are reference-counted ([`EncodedFrame`]): a broadcast encodes its frame once and every recipient's queue
//! holds a pointer to the same bytes. Everything queued leaves in one send with an iovec per frame, so a
//! burst of frames costs one send, not one per frame: usually the shard writer's, which writes every
//! session a turn of the event loop queued for in one io_uring submission ([`Outbound::gather`],
//! [`Outbound::advance`]); otherwise the connection task's own `sendmsg` ([`Outbound::flush`]), when the
//! socket was full and it waits for writability, or when the session closes.
//!
//! **Slow consumers.** A client that does not read lets the kernel's send buffer fill, then this queue. When
//! the queued bytes would pass `WEBSOCKET_MAX_BACKPRESSURE`, the queue refuses the frame, the session
//! drops what is queued (it could not be delivered in time anyway) and closes with 1008 "slow consumer";
//! a client that does not read that close either is cut off by the close timeout. Memory per session is
//! therefore bounded by the limit plus one frame.
//!
//! It must not decide what to send or when to close; it only holds bytes and writes them.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::os::unix::io::RawFd;
use std::task::Poll;

use crate::ws::encode::EncodedFrame;

/// How many frames one `sendmsg` carries at most; the kernel's limit is 1024 (`UIO_MAXIOV`).
pub(crate) const MAX_IOVECS: usize = 64;

/// The largest frame a queue accepts.
const MAX_FRAME_LEN: usize = 1 << 31;

/// One session's outbound queue. Interior-mutable through a `Cell` (taken and put back around each
/// operation) rather than a `RefCell`: every session carries one, the borrow flag would cost 8 bytes, and no
/// operation here calls out while it holds the queue.
#[derive(Default)]
pub(crate) struct Outbound {
    /// Absent while nothing is queued: 8 bytes per idle session.
    queue: Cell<Option<Box<Queue>>>,
}

/// The frames, oldest first, and how much of them is written.
#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<EncodedFrame>,
    /// Bytes of the front frame already written. (u32, like `queued`: frames and the backpressure limit
    /// are far below 4 GiB.)
    front_written: u32,
    /// Unwritten bytes in all of `frames`.
    queued: u32,
}

/// The frame did not fit under the backpressure limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow {
    /// Bytes that were queued when the frame was refused.
    pub(crate) queued: usize,
}

impl Outbound {
    fn with<R>(&self, f: impl FnOnce(&mut Option<Box<Queue>>) -> R) -> R {
        let mut queue = self.queue.take();
        let result = f(&mut queue);
        self.queue.set(queue);
        result
    }

    /// Queues `frame` unless that would put more than `limit` bytes in the queue.
    pub(crate) fn push(&self, frame: EncodedFrame, limit: usize) -> Result<(), Overflow> {
        self.with(|queue| {
            let queued = queue.as_ref().map_or(0, |q| q.queued as usize);
            // One frame may exceed the limit when nothing is queued (a large message to an idle client),
            // but never 2 GiB: the counters are u32.
            if (queued + frame.len() > limit && queued > 0) || frame.len() > MAX_FRAME_LEN {
                return Err(Overflow { queued });
            }
            queue.get_or_insert_with(Default::default).push(frame);
            Ok(())
        })
    }

    /// Queues a frame regardless of the limit: a close frame must always get its chance.
    pub(crate) fn push_unbounded(&self, frame: EncodedFrame) {
        self.with(|queue| queue.get_or_insert_with(Default::default).push(frame));
    }

    /// Drops everything not yet written, except the unwritten rest of a frame already begun (cutting it
    /// would corrupt the stream).
    pub(crate) fn discard(&self) {
        self.with(|queue| {
            if let Some(q) = queue {
                let keep = if q.front_written > 0 { 1 } else { 0 };
                q.frames.truncate(keep);
                q.queued = q.front().map_or(0, |rest| rest.len() as u32);
            }
            free_if_written(queue);
        });
    }

    /// Whether nothing is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.with(|queue| queue.as_ref().is_none_or(|q| q.frames.is_empty()))
    }

    /// Unwritten bytes.
    pub(crate) fn queued(&self) -> usize {
        self.with(|queue| queue.as_ref().map_or(0, |q| q.queued as usize))
    }

    /// The first byte of the oldest queued frame (FIN, RSV bits and opcode), for tests of what was queued.
    #[cfg(test)]
    pub(crate) fn front_byte(&self) -> Option<u8> {
        self.with(|queue| queue.as_ref()?.frames.front().map(|f| f[0]))
    }

    /// Points `iovecs` at the unwritten bytes, oldest frame first, as far as they reach; returns how many
    /// were filled and the bytes they cover. The pointers stay valid until the queue is next changed.
    pub(crate) fn gather(&self, iovecs: &mut [libc::iovec]) -> (usize, usize) {
        self.with(|queue| queue.as_ref().map_or((0, 0), |q| q.gather(iovecs)))
    }

    /// Marks `n` bytes as written (a completed write), freeing the queue once it is empty.
    pub(crate) fn advance(&self, n: usize) {
        self.with(|queue| {
            if let Some(q) = queue {
                q.advance(n);
            }
            free_if_written(queue);
        });
    }

    /// Writes as much of the queue as the socket `fd` takes without blocking. When the socket is full,
    /// `writable` is polled: ready means writing may go on, pending that it arranged a wake-up for when
    /// the socket has room (the connection task waits through glommio).
    pub(crate) fn flush(
        &self,
        fd: RawFd,
        mut writable: impl FnMut() -> Poll<io::Result<()>>,
    ) -> io::Result<()> {
        self.with(|queue| {
            let Some(q) = queue else { return Ok(()) };
            while !q.frames.is_empty() {
                if q.write_to(fd)? {
                    break;
                }
                match writable() {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => break,
                }
            }
            free_if_written(queue);
            Ok(())
        })
    }
}

/// Frees a queue with nothing left to write at once rather than keeping it for the next burst: an
/// allocation per write is noise next to the write, and a queue kept until later leaves a hole in the
/// allocator between long-lived session allocations (10,000 idle sessions that each got one welcome text:
/// 1,030 B of RSS each when the sweep freed queues a second later, 870 B when freed at once).
fn free_if_written(queue: &mut Option<Box<Queue>>) {
    if queue.as_ref().is_some_and(|q| q.frames.is_empty()) {
        *queue = None;
    }
}

impl Queue {
    fn push(&mut self, frame: EncodedFrame) {
        self.queued += frame.len() as u32;
        self.frames.push_back(frame);
    }

    /// The unwritten part of the front frame.
    fn front(&self) -> Option<&[u8]> {
        let front = self.frames.front()?;
        Some(&front[self.front_written as usize..])
    }

    /// Marks `n` bytes as written.
    fn advance(&mut self, mut n: usize) {
        self.queued -= n as u32;
        while n > 0 {
            let front = self.frames.front().expect("advanced past the queue").len()
                - self.front_written as usize;
            if n < front {
                self.front_written += n as u32;
                return;
            }
            n -= front;
            self.front_written = 0;
            self.frames.pop_front();
        }
    }

    /// Points `iovecs` at the unwritten bytes, oldest frame first; returns how many were filled and the
    /// bytes they cover.
    fn gather(&self, iovecs: &mut [libc::iovec]) -> (usize, usize) {
        let mut bytes = 0;
        let mut count = 0;
        for (iovec, (i, frame)) in iovecs.iter_mut().zip(self.frames.iter().enumerate()) {
            let unwritten = if i == 0 {
                &frame[self.front_written as usize..]
            } else {
                &frame[..]
            };
            *iovec = libc::iovec {
                iov_base: unwritten.as_ptr() as *mut libc::c_void,
                iov_len: unwritten.len(),
            };
            bytes += unwritten.len();
            count += 1;
        }
        (count, bytes)
    }

    /// Writes as much of the queue as the socket takes without blocking.
    ///
    /// Returns `Ok(true)` when the queue is empty, `Ok(false)` when the socket is full (wait for it to be
    /// writable), or the socket's error.
    fn write_to(&mut self, fd: RawFd) -> io::Result<bool> {
        let mut iovecs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_IOVECS];
        while !self.frames.is_empty() {
            let (count, _) = self.gather(&mut iovecs);
            // SAFETY: a zeroed msghdr is valid; it points at `count` iovecs that borrow frames held by
            // `self.frames`, which is not touched until sendmsg returns.
            let sent = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = iovecs.as_mut_ptr();
                msg.msg_iovlen = count;
                libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            };
            if sent < 0 {
                let err = io::Error::last_os_error();
                return match err.kind() {
                    io::ErrorKind::WouldBlock => Ok(false),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(err),
                };
            }
            self.advance(sent as usize);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::io::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// A flush that never waits: a full socket leaves the rest queued.
    fn flush_now(out: &Outbound, fd: RawFd) {
        out.flush(fd, || Poll::Pending).unwrap();
    }

    #[test]
    fn many_frames_leave_in_order_and_partial_writes_resume() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let out = Outbound::default();
        let mut expected = Vec::new();
        for i in 0..200u8 {
            let frame = EncodedFrame::from(vec![i; 1 + i as usize]);
            expected.extend_from_slice(&frame);
            out.push(frame, usize::MAX).unwrap();
        }
        assert_eq!(out.queued(), expected.len());
        flush_now(&out, a.as_raw_fd());
        assert!(out.is_empty());
        let mut got = vec![0; expected.len()];
        b.read_exact(&mut got).unwrap();
        assert_eq!(got, expected);

        out.push(EncodedFrame::from(&b"abcdef"[..]), usize::MAX)
            .unwrap();
        out.advance(2);
        assert_eq!(out.queued(), 4);
        flush_now(&out, a.as_raw_fd());
        let mut rest = [0; 4];
        b.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"cdef");
    }

    #[test]
    fn a_full_socket_keeps_the_rest_and_the_limit_holds() {
        let (a, _b) = UnixStream::pair().unwrap();
        let out = Outbound::default();
        let limit = 8 << 20;
        let mut refused = false;
        for _ in 0..1000 {
            if out
                .push(EncodedFrame::from(vec![0; 64 * 1024]), limit)
                .is_err()
            {
                refused = true;
                break;
            }
            flush_now(&out, a.as_raw_fd());
        }
        assert!(refused, "the queue must stop growing at the limit");
        assert!(out.queued() <= limit);
        out.discard();
        assert!(out.queued() < 64 * 1024);
    }

    #[test]
    fn a_flushed_queue_holds_no_allocation() {
        let (a, _b) = UnixStream::pair().unwrap();
        let out = Outbound::default();
        out.push(EncodedFrame::from(&b"hi"[..]), 1024).unwrap();
        flush_now(&out, a.as_raw_fd());
        assert!(out.is_empty());
        assert!(out.with(|queue| queue.is_none()));
    }
}
