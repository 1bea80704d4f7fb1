//! One session's outbound queue: encoded frames waiting to be written, and the slow-consumer policy.
//!
//! Frames are reference-counted [`Bytes`]: a broadcast encodes its frame once and every recipient's queue
//! holds a pointer to the same bytes. Everything queued leaves in one `sendmsg` with an iovec per frame
//! (up to [`MAX_IOVECS`]), so a burst of frames costs one syscall, not one per frame; the connection drains
//! the queue each time its task runs, which batches whatever the shard queued since.
//!
//! **Slow consumers.** A client that does not read lets the kernel's send buffer fill, then this queue. When
//! the queued bytes would pass `WEBSOCKET_MAX_BACKPRESSURE`, the queue refuses the frame, the session
//! drops what is queued (it could not be delivered in time anyway) and closes with 1008 "slow consumer";
//! a client that does not read that close either is cut off by the close timeout. Memory per session is
//! therefore bounded by the limit plus one frame.
//!
//! It must not decide what to send or when to close; it only holds bytes and writes them.

use std::collections::VecDeque;
use std::io;
use std::os::unix::io::RawFd;

use bytes::Bytes;

/// How many frames one `sendmsg` carries at most; the kernel's limit is 1024 (`UIO_MAXIOV`).
pub(crate) const MAX_IOVECS: usize = 64;

/// The largest frame a queue accepts.
const MAX_FRAME_LEN: usize = 1 << 31;

/// The queue of frames not yet written to the socket.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    /// The frames, oldest first. Boxed and absent while nothing is queued: every idle session carries an
    /// `Outbound`, and an absent ring costs 8 bytes where an empty `VecDeque` costs 32.
    #[expect(
        clippy::box_collection,
        reason = "8 bytes per idle session instead of 32"
    )]
    frames: Option<Box<VecDeque<Bytes>>>,
    /// Bytes of the front frame already written. (u32, like `queued`: every idle session carries these, and
    /// frames and the backpressure limit are far below 4 GiB.)
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
    /// Queues `frame` unless that would put more than `limit` bytes in the queue.
    pub(crate) fn push(&mut self, frame: Bytes, limit: usize) -> Result<(), Overflow> {
        let queued = self.queued as usize;
        // One frame may exceed the limit when nothing is queued (a large message to an idle client), but
        // never 2 GiB: the counters are u32.
        if (queued + frame.len() > limit && queued > 0) || frame.len() > MAX_FRAME_LEN {
            return Err(Overflow { queued });
        }
        self.push_unbounded(frame);
        Ok(())
    }

    /// Queues a frame regardless of the limit: a close frame must always get its chance.
    pub(crate) fn push_unbounded(&mut self, frame: Bytes) {
        self.queued += frame.len() as u32;
        self.frames
            .get_or_insert_with(Default::default)
            .push_back(frame);
    }

    /// Drops everything not yet written, except the unwritten rest of a frame already begun (cutting it
    /// would corrupt the stream).
    pub(crate) fn discard(&mut self) {
        let keep = if self.front_written > 0 { 1 } else { 0 };
        if let Some(frames) = &mut self.frames {
            frames.truncate(keep);
        }
        self.queued = self.front().map_or(0, |rest| rest.len() as u32);
        if self.is_empty() {
            self.frames = None;
        }
    }

    /// Whether nothing is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.frames.as_ref().is_none_or(|frames| frames.is_empty())
    }

    /// Unwritten bytes.
    pub(crate) fn queued(&self) -> usize {
        self.queued as usize
    }

    /// The unwritten part of the front frame, for a write that waits for the socket to become writable.
    pub(crate) fn front(&self) -> Option<&[u8]> {
        let front = self.frames.as_ref()?.front()?;
        Some(&front[self.front_written as usize..])
    }

    /// Marks `n` bytes as written.
    pub(crate) fn advance(&mut self, mut n: usize) {
        self.queued -= n as u32;
        let Some(frames) = &mut self.frames else {
            assert_eq!(n, 0, "advanced past the queue");
            return;
        };
        while n > 0 {
            let front = frames.front().expect("advanced past the queue").len()
                - self.front_written as usize;
            if n < front {
                self.front_written += n as u32;
                return;
            }
            n -= front;
            self.front_written = 0;
            frames.pop_front();
        }
        if frames.is_empty() && frames.capacity() > 64 {
            // A burst grew the ring; give the memory back at once.
            self.frames = None;
        }
    }

    /// Frees the ring of an empty queue. The shard's sweep calls it for every session once a second, so a
    /// busy session keeps its small ring between frames (no allocation per frame) and an idle one holds
    /// nothing.
    pub(crate) fn compact(&mut self) {
        if self.is_empty() {
            self.frames = None;
        }
    }

    /// Writes as much of the queue as the socket takes without blocking.
    ///
    /// Returns `Ok(true)` when the queue is empty, `Ok(false)` when the socket is full (wait for it to be
    /// writable), or the socket's error.
    pub(crate) fn write_to(&mut self, fd: RawFd) -> io::Result<bool> {
        while let Some(frames) = self.frames.as_ref().filter(|frames| !frames.is_empty()) {
            let mut iovecs = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_IOVECS];
            let mut count = 0;
            for (i, frame) in frames.iter().take(MAX_IOVECS).enumerate() {
                let bytes = if i == 0 {
                    &frame[self.front_written as usize..]
                } else {
                    &frame[..]
                };
                iovecs[i] = libc::iovec {
                    iov_base: bytes.as_ptr() as *mut libc::c_void,
                    iov_len: bytes.len(),
                };
                count += 1;
            }
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

    #[test]
    fn many_frames_leave_in_order_and_partial_writes_resume() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut out = Outbound::default();
        let mut expected = Vec::new();
        for i in 0..200u8 {
            let frame = Bytes::from(vec![i; 1 + i as usize]);
            expected.extend_from_slice(&frame);
            out.push(frame, usize::MAX).unwrap();
        }
        assert_eq!(out.queued(), expected.len());
        assert!(out.write_to(a.as_raw_fd()).unwrap());
        assert!(out.is_empty());
        let mut got = vec![0; expected.len()];
        b.read_exact(&mut got).unwrap();
        assert_eq!(got, expected);

        out.push(Bytes::from_static(b"abcdef"), usize::MAX).unwrap();
        out.advance(2);
        assert_eq!(out.front(), Some(&b"cdef"[..]));
        assert_eq!(out.queued(), 4);
    }

    #[test]
    fn a_full_socket_reports_would_block_and_the_limit_holds() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut out = Outbound::default();
        let limit = 8 << 20;
        let mut refused = false;
        for _ in 0..1000 {
            if out.push(Bytes::from(vec![0; 64 * 1024]), limit).is_err() {
                refused = true;
                break;
            }
            if out.write_to(a.as_raw_fd()).unwrap() {
                continue;
            }
        }
        assert!(refused, "the queue must stop growing at the limit");
        assert!(out.queued() <= limit);
        out.discard();
        assert!(out.queued() < 64 * 1024);
    }
}
