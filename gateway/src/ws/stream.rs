//! The socket under a WebSocket connection: a `TcpStream` with a read-ahead buffer that, before
//! `connect`, hands tungstenite one byte per read.
//!
//! Why: the pre-`connect` limit (64 KiB, OpenClaw's `MAX_PREAUTH_PAYLOAD_BYTES`) must be enforced
//! on the frame header, before a byte of an oversized frame is buffered, and the limit must rise
//! to `policy.maxPayload` once `connect` succeeds. Tungstenite checks `max_frame_size` on the
//! header (it reserves the claimed length right after), but tokio-tungstenite cannot change a
//! stream's config, so the connection is rebuilt with the larger limit after `connect`. The
//! rebuild must not lose bytes the client sent right behind its `connect` frame, and tungstenite
//! reads ahead past a frame's end into its own buffer, which is dropped with it. Given one byte
//! per read it never reads past the end of the frame it is parsing; the bytes behind stay here
//! and are read first by the rebuilt connection. Syscalls still read up to 8 KiB at a time, and
//! the cost (a few µs for a 2 KiB `connect`) is paid once per connection.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// Read-ahead per syscall before `connect`.
const READ_AHEAD: usize = 8 << 10;

#[derive(Debug)]
pub struct PhasedStream {
    tcp: TcpStream,
    /// Bytes read from the socket and not yet handed out: `buf[at..]`.
    buf: Vec<u8>,
    at: usize,
    /// Before `connect`: one byte per read.
    trickle: bool,
}

impl PhasedStream {
    /// `leftover`: bytes already read after the HTTP upgrade request.
    pub fn new(tcp: TcpStream, leftover: Vec<u8>) -> PhasedStream {
        PhasedStream { tcp, buf: leftover, at: 0, trickle: true }
    }

    /// After `connect`: reads pass through (once the read-ahead is used up).
    pub fn open_up(&mut self) {
        self.trickle = false;
    }
}

impl AsyncRead for PhasedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at >= this.buf.len() {
            this.buf.clear();
            this.at = 0;
            if !this.trickle {
                return Pin::new(&mut this.tcp).poll_read(cx, out);
            }
            this.buf.resize(READ_AHEAD, 0);
            let mut ahead = ReadBuf::new(&mut this.buf);
            let polled = Pin::new(&mut this.tcp).poll_read(cx, &mut ahead);
            let filled = ahead.filled().len();
            this.buf.truncate(filled);
            match polled {
                Poll::Ready(Ok(())) if filled == 0 => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        let limit = if this.trickle { 1 } else { out.remaining() };
        let n = limit.min(this.buf.len() - this.at).min(out.remaining());
        out.put_slice(&this.buf[this.at..this.at + n]);
        this.at += n;
        if this.at >= this.buf.len() && !this.trickle {
            // Free the read-ahead once it is used up after `connect`.
            this.buf = Vec::new();
            this.at = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for PhasedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn trickles_then_passes_through_without_losing_bytes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"defghij").await.unwrap();
        });
        let (tcp, _) = listener.accept().await.unwrap();
        client.await.unwrap();
        let mut stream = PhasedStream::new(tcp, b"abc".to_vec());
        let mut buf = [0u8; 16];
        assert_eq!(stream.read(&mut buf).await.unwrap(), 1);
        assert_eq!(&buf[..1], b"a");
        let mut got = vec![buf[0]];
        for _ in 0..4 {
            let n = stream.read(&mut buf).await.unwrap();
            assert_eq!(n, 1, "one byte per read before connect");
            got.push(buf[0]);
        }
        stream.open_up();
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"abcdefghij");
    }
}
