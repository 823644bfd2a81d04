//! Write coalescing for a connection: answers that are ready in the same turn of the
//! connection's task leave in one write.
//!
//! A backend that pipelines HTTP/1.1 requests (or multiplexes HTTP/2 streams) sends
//! many small requests at once; answering each with its own `write` makes the kernel's
//! per-write cost most of what a request costs. hyper's own `pipeline_flush` gathers
//! answers but holds them while any unread byte is buffered, which loses or stalls
//! answers (see `serve`). This adapter keeps the rule simple and safe:
//!
//! - a write is buffered;
//! - the first flush after new writes is put off by one turn: the task is woken at
//!   once, so the next turn flushes even if nothing else happens;
//! - a read, a flush with nothing new written since the last one was put off, a
//!   shutdown, or a full buffer writes everything out.
//!
//! So an answer waits at most until its task runs again — never for the client — and
//! the answers a turn produces (hyper serves up to 16 pipelined requests a turn) share
//! a write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Above this many buffered bytes a write goes out before more are taken.
const MAX_BUFFERED: usize = 64 * 1024;

pub struct Coalesce<T> {
    io: T,
    out: BytesMut,
    /// Bytes were written since the last put-off flush.
    fresh: bool,
}

impl<T> Coalesce<T> {
    pub fn new(io: T) -> Self {
        Self {
            io,
            out: BytesMut::new(),
            fresh: false,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Write out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn take(&mut self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if self.out.len() >= MAX_BUFFERED {
            ready!(self.poll_drain(cx))?;
        }
        let mut n = 0;
        for b in bufs {
            self.out.extend_from_slice(b);
            n += b.len();
        }
        self.fresh |= n > 0;
        Poll::Ready(Ok(n))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Going back to the client for more: what is owed to it goes first. A socket
        // that cannot take it now wakes the task when it can.
        if !this.out.is_empty()
            && let Poll::Ready(Err(e)) = this.poll_drain(cx)
        {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().take(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().take(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.out.is_empty() && this.fresh {
            // Put off by one turn of the task: more answers may come in this one.
            this.fresh = false;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_in_one_turn_leave_together_and_a_flush_a_turn_later_sends_them() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut c = Coalesce::new(a);
        c.write_all(b"one ").await.unwrap();
        c.flush().await.unwrap(); // put off
        c.write_all(b"two").await.unwrap();
        let mut buf = [0u8; 16];
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), b.read(&mut buf));
        assert!(
            early.await.is_err(),
            "nothing leaves before the flush that is not put off"
        );
        c.flush().await.unwrap(); // new writes since: put off again
        c.flush().await.unwrap(); // nothing new: out it goes
        let n = b.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"one two");
    }

    #[tokio::test]
    async fn a_read_sends_what_is_owed_first() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut c = Coalesce::new(a);
        c.write_all(b"answer").await.unwrap();
        c.flush().await.unwrap(); // put off
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let n = c.read(&mut buf).await.unwrap();
            buf[..n].to_vec()
        });
        let mut buf = [0u8; 16];
        let n = b.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"answer", "sent while the other side was read");
        b.write_all(b"next").await.unwrap();
        assert_eq!(reader.await.unwrap(), b"next");
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_owed() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut c = Coalesce::new(a);
        c.write_all(b"last words").await.unwrap();
        c.flush().await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
    }

    #[tokio::test]
    async fn a_full_buffer_goes_out_without_a_flush() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut c = Coalesce::new(a);
        let chunk = vec![7u8; MAX_BUFFERED];
        c.write_all(&chunk).await.unwrap();
        c.write_all(b"x").await.unwrap();
        let mut got = vec![0u8; MAX_BUFFERED];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, chunk);
    }
}
