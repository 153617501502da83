//! A TCP stream whose first bytes (the request head, already read to tell WebSocket upgrades from
//! plain HTTP) are served again before the rest.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_net::TcpStream;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use tether_driver::http::{classify, Incoming, MAX_HEAD};
use tether_driver::HttpContext;

/// `prefix` first, then `inner`.
pub struct Prefixed {
    prefix: Vec<u8>,
    read: usize,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.read < self.prefix.len() {
            let n = buf.len().min(self.prefix.len() - self.read);
            let start = self.read;
            buf[..n].copy_from_slice(&self.prefix[start..start + n]);
            self.read += n;
            if self.read == self.prefix.len() {
                // Replayed in full: the buffer is not needed for the rest of the connection.
                self.prefix = Vec::new();
                self.read = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Reads the request head: a WebSocket upgrade comes back as a stream that replays it; a plain
/// HTTP request is answered here and closed (`None`).
pub async fn sort(mut tcp: TcpStream, http: &HttpContext) -> Option<Prefixed> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
        match classify(&head) {
            Incoming::Incomplete if head.len() < MAX_HEAD => continue,
            Incoming::WebSocket => {
                return Some(Prefixed {
                    prefix: head,
                    read: 0,
                    inner: tcp,
                })
            }
            Incoming::Http(request) => {
                let response = http.answer(&request).await;
                let _ = tcp.write_all(&response).await;
                let _ = tcp.close().await;
                return None;
            }
            Incoming::Incomplete | Incoming::Invalid => return None,
        }
    }
}
