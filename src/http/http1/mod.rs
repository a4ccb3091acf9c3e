//! HTTP/1.1: one request at a time on a leased connection, written and read by whoever holds it
//! (a sync caller's thread, or an async request's task), with a codec of our own (`codec`).
//!
//! An idle connection keeps nothing but its socket. A read lands in a buffer of the reading
//! thread's, and only what is not handed over at once is kept, at its size: a stream of events
//! costs each connection the bytes of one event at most, where hyper's client kept a read buffer,
//! a write buffer and a dispatch channel of 8 KB each for as long as the connection lived.

mod codec;

use super::activity::{watch, Activity, Tracked};
use super::checkout::InFlight;
use super::conn::{Addressing, Io, Sender};
use super::error::{peer_closed, python_os_message, HttpError, Phase, Received};
use super::head::RawHead;
use super::{Failure, RequestParts, Sent};
use bytes::Bytes;
use codec::Step;
pub(super) use codec::{asks_to_close, Decoder};
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

/// The most one read takes from the socket.
const READ_SIZE: usize = 64 * 1024;
/// A body up to this size goes out in the same write as the head (one system call); a larger
/// one is written from where it is, not copied.
const WRITE_TOGETHER: usize = 64 * 1024;

thread_local! {
    /// Where this thread's reads land before what they brought is handed over or kept.
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
}

/// An HTTP/1.1 connection's way of sending: its socket, and the bytes read but not handed over.
pub struct Http1Conn {
    io: Tracked<Io>,
    /// Read and not yet handed over: part of a head or of a chunk's framing, or what a read
    /// brought past the data it handed over. Empty, with nothing allocated, between reads.
    buffered: Vec<u8>,
    /// False once it cannot carry another request: the peer closed it, a read or a request's
    /// write failed, or bytes came past the end of a response.
    reusable: bool,
}

impl Http1Conn {
    pub(super) fn new(io: Tracked<Io>) -> Http1Conn {
        Http1Conn { io, buffered: Vec::new(), reusable: true }
    }

    /// The TCP socket's descriptor (under TLS too), for a look before reuse.
    pub(super) fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.io.get_ref().fd()
    }

    pub(super) fn is_reusable(&self) -> bool {
        self.reusable && self.buffered.is_empty()
    }

    /// Reads what has arrived onto `buffered`: how many bytes, 0 at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        READ_BUFFER.with(|buffer| {
            let mut own;
            let mut shared = buffer.try_borrow_mut();
            let space: &mut [u8] = match &mut shared {
                Ok(shared) => shared,
                // Only a read within a read would find it taken; it gets a buffer of its own.
                Err(_) => {
                    own = vec![0; READ_SIZE];
                    &mut own
                }
            };
            let mut read = ReadBuf::new(space);
            if let Err(e) = ready!(Pin::new(&mut self.io).poll_read(cx, &mut read)) {
                self.reusable = false;
                return Poll::Ready(Err(e));
            }
            let filled = read.filled();
            if filled.is_empty() {
                self.reusable = false;
            }
            self.buffered.extend_from_slice(filled);
            Poll::Ready(Ok(filled.len()))
        })
    }

    /// Drops the first `used` bytes of `buffered`, and its allocation once it is empty.
    fn consume(&mut self, used: usize) {
        match used == self.buffered.len() {
            true => self.buffered = Vec::new(),
            false => drop(self.buffered.drain(..used)),
        }
    }

    /// Writes a request; on failure, how many of its bytes were written.
    async fn write(&mut self, request: &codec::Encoded) -> Result<(), (io::Error, usize)> {
        let together;
        let parts: [&[u8]; 3] = match request.body.len() <= WRITE_TOGETHER {
            true => {
                together = [&request.head[..], &request.body, request.tail].concat();
                [&together, b"", b""]
            }
            false => [&request.head, &request.body, request.tail],
        };
        let mut written = 0;
        for part in parts {
            let mut at = 0;
            while at < part.len() {
                match self.io.write(&part[at..]).await {
                    Ok(0) => return Err((io::ErrorKind::WriteZero.into(), written)),
                    Ok(n) => {
                        at += n;
                        written += n;
                    }
                    Err(e) => return Err((e, written)),
                }
            }
        }
        self.io.flush().await.map_err(|e| (e, written))
    }

    /// Reads up to the end of a final response head (interim ones skipped), and takes it off
    /// `buffered`, which is left with the body bytes that came with it. A failure says whether
    /// any byte of a response had arrived.
    async fn read_head(&mut self) -> Result<RawHead, (HttpError, bool)> {
        poll_fn(|cx| loop {
            if !self.buffered.is_empty() {
                match RawHead::parse(&self.buffered) {
                    Ok(Some(head)) => {
                        self.consume(head.len);
                        return Poll::Ready(Ok(head));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.reusable = false;
                        return Poll::Ready(Err((e, true)));
                    }
                }
            }
            let began = !self.buffered.is_empty();
            match ready!(self.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Err((HttpError::RemoteProtocol(peer_closed(Phase::Head)), began))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err((read_error(&e, Phase::Head), began))),
            }
        })
        .await
    }

    /// The next data of a body being read; `None` at its end. Data that has arrived is handed
    /// over without waiting for more.
    pub(super) fn poll_body(&mut self, decoder: &mut Decoder, cx: &mut Context<'_>, received: &mut Received) -> Poll<Option<Result<Bytes, HttpError>>> {
        loop {
            match decoder.step(&self.buffered) {
                Ok(Step::Data { data, used }) => {
                    let chunk = match data.start == 0 && data.end == self.buffered.len() {
                        true => Bytes::from(std::mem::take(&mut self.buffered)),
                        false => {
                            let chunk = Bytes::copy_from_slice(&self.buffered[data]);
                            self.consume(used);
                            chunk
                        }
                    };
                    received.bytes += chunk.len() as u64;
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Ok(Step::Framing { used }) => self.consume(used),
                Ok(Step::End { used }) => {
                    self.consume(used);
                    *decoder = Decoder::Empty;
                    return Poll::Ready(None);
                }
                Ok(Step::More) => match ready!(self.poll_fill(cx)) {
                    Ok(0) if decoder.ends_at_close() => {
                        *decoder = Decoder::Empty;
                        return Poll::Ready(None);
                    }
                    Ok(0) => return Poll::Ready(Some(Err(HttpError::RemoteProtocol(peer_closed(Phase::Body(*received)))))),
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(Some(Err(read_error(&e, Phase::Body(*received))))),
                },
                Err(message) => {
                    self.reusable = false;
                    return Poll::Ready(Some(Err(HttpError::RemoteProtocol(message))));
                }
            }
        }
    }
}

/// Sends a request on a leased connection and waits for the response head: the head as the
/// server sent it, how many body bytes came with it, and the connection's progress. A failure
/// says how far the request got (see [`Sent`]).
pub(super) async fn exchange(in_flight: &mut InFlight, request: &RequestParts) -> Result<(RawHead, usize, Arc<Activity>), Failure> {
    let conn = in_flight.conn_mut().expect("connected before the exchange");
    let activity = conn.activity.clone();
    let Sender::Http1(http1) = &mut conn.sender else { unreachable!("HTTP/2 goes through http2::exchange") };
    let encoded = match &conn.addressing {
        Addressing::Origin => codec::encode(request, &request.target, None),
        Addressing::Absolute { authorization } => {
            // As httpx writes it: the port only when it is not the scheme's default.
            let e = &request.endpoint;
            let origin = match e.port() == e.scheme().default_port() {
                true => format!("{}://{}", e.scheme().as_str(), e.host()),
                false => format!("{}://{}:{}", e.scheme().as_str(), e.host(), e.port()),
            };
            let target = [origin.as_bytes(), &request.target].concat();
            codec::encode(request, &target, authorization.as_ref().map(|v| ("proxy-authorization", v.as_bytes())))
        }
    }
    .map_err(|message| Failure { error: HttpError::LocalProtocol(message), sent: Sent::Final })?;
    activity.touch();
    let work = async {
        match http1.write(&encoded).await {
            Ok(()) => {}
            // Nothing written: the server cannot have seen any of it.
            Err((e, 0)) => return Err(Failure { error: write_error(&e), sent: Sent::Nothing }),
            // A server may answer before it has read the whole request (a 413, ...) and close:
            // its response is read, as httpcore reads it; without one the write's error says most.
            Err((e, _)) => {
                // Its request cannot be finished, so the connection carries no other.
                http1.reusable = false;
                return match http1.read_head().await {
                    Ok(head) => Ok(head),
                    Err((_, began)) => Err(Failure { error: write_error(&e), sent: if began { Sent::Final } else { Sent::NoResponse } }),
                }
            }
        }
        http1.read_head().await.map_err(|(error, began)| Failure { error, sent: if began { Sent::Final } else { Sent::NoResponse } })
    };
    match watch(&activity, &request.timeouts, work).await {
        Ok(Ok(head)) => Ok((head, http1.buffered.len(), activity)),
        Ok(Err(failure)) => Err(failure),
        Err(timeout) => Err(Failure { error: timeout, sent: Sent::Final }),
    }
}

/// A read's I/O error in httpx's classes: the peer's close mid-message is a protocol error, the
/// rest read errors (a TLS error too, as httpx reports it), worded as Python words OS errors.
fn read_error(e: &io::Error, phase: Phase) -> HttpError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => HttpError::RemoteProtocol(peer_closed(phase)),
        _ => HttpError::Read(python_os_message(e)),
    }
}

fn write_error(e: &io::Error) -> HttpError {
    HttpError::Write(python_os_message(e))
}
