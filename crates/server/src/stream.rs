//! The client's byte stream: the transport underneath (a TCP socket, or in tests an in-memory
//! duplex), or TLS over it after STARTTLS (or from the start on an implicit-TLS listener). The
//! connection task reads and writes through this one type, so the rest of the session does not
//! care which it is.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;

/// What a client connection can run over: a byte stream we can hand to a TLS handshake.
pub(crate) trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientIo for S {}

pub(crate) enum ClientStream<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    /// The plain stream was handed to a TLS handshake that failed: nothing left to talk to.
    Closed,
}

impl<S: ClientIo> ClientStream<S> {
    /// Takes the plain stream out for a TLS handshake, leaving `Closed` behind.
    pub(crate) fn take_plain(&mut self) -> Option<S> {
        match std::mem::replace(self, ClientStream::Closed) {
            ClientStream::Plain(s) => Some(s),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Reads what is already there without waiting (`WouldBlock` if nothing is). On TLS, only
    /// plaintext already decrypted would count, so it reports nothing.
    pub(crate) fn try_read_now(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let ClientStream::Plain(s) = self else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let mut chunk = [0u8; 4096];
        let mut read = ReadBuf::new(&mut chunk);
        // One poll with a waker that does nothing: ready data is read, else nothing happens.
        match Pin::new(s).poll_read(&mut Context::from_waker(Waker::noop()), &mut read) {
            Poll::Ready(Ok(())) => {
                buf.extend_from_slice(read.filled());
                Ok(read.filled().len())
            }
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<S: ClientIo> AsyncRead for ClientStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl<S: ClientIo> AsyncWrite for ClientStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}
