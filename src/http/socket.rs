//! A connection's TCP socket, whose readiness comes from whoever drives it: tokio's reactor for
//! a runtime task, or a sync caller's own thread (see `inline`), which then waits on the socket
//! itself. It moves between the two when its user changes (one `epoll_ctl`), which happens only
//! when a connection goes from a sync caller to an async one or back.

use super::inline::{self, Mode};
use std::io::{self, IoSlice, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub enum Socket {
    Reactor(TcpStream),
    /// Shared only with the caller's list of sockets it waits for, while it waits.
    Inline(Arc<std::net::TcpStream>, EmptyIn),
    /// Only a failed move leaves it here: every use then fails.
    Lost,
}

/// The look (see `inline::pass`) in which an inline socket's read last found nothing.
#[derive(Default)]
pub struct EmptyIn(Option<u64>);

impl From<TcpStream> for Socket {
    fn from(stream: TcpStream) -> Socket {
        Socket::Reactor(stream)
    }
}

impl Socket {
    /// Its descriptor (whichever thread drives it, the same socket); none once lost.
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        match self {
            Socket::Reactor(s) => Some(s.as_fd()),
            Socket::Inline(s, _) => Some(s.as_fd()),
            Socket::Lost => None,
        }
    }

    /// Where readiness comes from for this thread's mode: moves the socket if it must.
    fn settle(&mut self) -> io::Result<()> {
        let must_move = match (inline::mode(), &*self) {
            (_, Socket::Lost) => return Err(io::Error::other("the connection's socket was lost moving between threads")),
            (Mode::Driving, Socket::Reactor(_)) => true,
            // Out of the runtime (a thread that only peeks), it stays where it is.
            (Mode::Runtime, Socket::Inline(..)) => tokio::runtime::Handle::try_current().is_ok(),
            _ => false,
        };
        if must_move {
            *self = match std::mem::replace(self, Socket::Lost) {
                Socket::Reactor(s) => Socket::Inline(Arc::new(s.into_std()?), EmptyIn::default()),
                Socket::Inline(s, _) => {
                    // The caller forgets what it waited for before it returns, so this is the
                    // only owner; if it were not, a second descriptor of the socket moves.
                    let s = Arc::try_unwrap(s).or_else(|shared| shared.try_clone())?;
                    Socket::Reactor(TcpStream::from_std(s)?)
                }
                Socket::Lost => Socket::Lost,
            };
        }
        Ok(())
    }
}

/// An inline socket's answer: ready, or wanted (under [`Mode::Driving`] the thread waits for it).
fn inline_io<T>(socket: &Arc<std::net::TcpStream>, writable: bool, mut io: impl FnMut() -> io::Result<T>) -> Poll<io::Result<T>> {
    loop {
        match io() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if inline::mode() == Mode::Driving {
                    inline::want(socket, writable);
                }
                return Poll::Pending;
            }
            other => return Poll::Ready(other),
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.settle()?;
        match this {
            Socket::Reactor(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Inline(s, empty) => {
                if empty.0 == Some(inline::pass()) {
                    return inline_io(s, false, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
                }
                let unfilled = buf.initialize_unfilled();
                match inline_io(s, false, || (&**s).read(unfilled)) {
                    Poll::Ready(Ok(n)) => {
                        buf.advance(n);
                        Poll::Ready(Ok(()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => {
                        empty.0 = Some(inline::pass());
                        Poll::Pending
                    }
                }
            }
            Socket::Lost => unreachable!("settle() fails for a lost socket"),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.settle()?;
        match this {
            Socket::Reactor(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Socket::Inline(s, _) => inline_io(s, true, || (&**s).write_vectored(bufs)),
            Socket::Lost => unreachable!("settle() fails for a lost socket"),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Reactor(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Inline(s, _) => Poll::Ready(s.shutdown(std::net::Shutdown::Write)),
            Socket::Lost => Poll::Ready(Ok(())),
        }
    }
}
