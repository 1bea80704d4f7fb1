//! The I/O adapter between glommio and hyper: [`Socket`] implements `hyper::rt::Read`/`Write` over
//! `glommio::net::TcpStream`'s futures-lite poll methods, reading straight into hyper's buffer.
//!
//! It also counts the reads that brought bytes, which is how the connection's timer (`timer.rs`) tells an
//! idle keep-alive connection from a request head that has begun. It must not know about HTTP.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use hyper::rt::ReadBufCursor;

/// A glommio socket as hyper's IO, counting reads that brought bytes so [`super::timer::ShardTimer`] sees activity.
pub(super) struct Socket {
    pub(super) stream: TcpStream,
    /// Shared with this connection's [`super::timer::ShardTimer`]; only ever touched on the shard's thread, but hyper
    /// requires the timer to be `Send + Sync`, hence an atomic.
    pub(super) reads: Arc<AtomicU64>,
}

impl hyper::rt::Read for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Zeroes the unfilled part only the first time hyper offers it, so glommio can copy straight in.
        let unfilled = buf.initialize_unfilled();
        let n = ready!(Pin::new(&mut this.stream).poll_read(cx, unfilled))?;
        if n > 0 {
            this.reads.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the first `n` bytes of the unfilled part were initialized above and written by the read.
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}
