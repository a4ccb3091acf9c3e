//! The server of the long-streams benchmark (benches/test_long_streams.py): chat-completion event
//! streams, each event carrying the moment it was sent, for thousands of clients at once, over
//! HTTP/1.1 or cleartext HTTP/2 (prior knowledge). Written in Rust so that on a 2-core machine
//! the server takes as little CPU as possible from the client being measured.
//!
//!     long_streams_server PORT_FILE
//!
//! Listens on 127.0.0.1 (ephemeral port, written to PORT_FILE) until stdin closes.
//! `POST /v1/chat/completions?events=N&interval=S`: N chunks S seconds apart (the first at once),
//! each `data: {...chat.completion.chunk, "content": "t=<CLOCK_MONOTONIC seconds>"}`, then
//! `data: [DONE]`. `GET /stats`: `{"connections": accepted, "open": open now}`.

use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static OPEN: AtomicU64 = AtomicU64::new(0);

const PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// The clock Python's `time.monotonic()` reads, so that a client can tell how late an event is.
fn monotonic() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn chunk(i: usize, last: bool) -> String {
    let finish = if last { "\"stop\"" } else { "null" };
    format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
         \"model\":\"gpt-bench\",\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\
         \"content\":\"t={:.6} \"}},\"finish_reason\":{finish}}}],\"n\":{i}}}\n\n",
        monotonic()
    )
}

/// What the request asked for: (events, interval), or None for /stats.
fn route(target: &str) -> Option<(usize, Duration)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == "/stats" {
        return None;
    }
    let mut events = 40;
    let mut interval = 0.1;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("events", v)) => events = v.parse().unwrap_or(events),
            Some(("interval", v)) => interval = v.parse().unwrap_or(interval),
            _ => {}
        }
    }
    Some((events, Duration::from_secs_f64(interval)))
}

fn stats() -> String {
    format!("{{\"connections\":{},\"open\":{}}}", ACCEPTED.load(Relaxed), OPEN.load(Relaxed))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port_file = std::env::args().nth(1).expect("usage: long_streams_server PORT_FILE");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    std::fs::write(&port_file, port.to_string()).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { continue };
            ACCEPTED.fetch_add(1, Relaxed);
            OPEN.fetch_add(1, Relaxed);
            tokio::spawn(async move {
                let _ = socket.set_nodelay(true);
                serve(socket).await;
                OPEN.fetch_sub(1, Relaxed);
            });
        }
    });
    // Ends with its parent (stdin closed).
    let _ = tokio::task::spawn_blocking(|| std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())).await;
}

async fn serve(mut socket: TcpStream) {
    let mut buffer = Vec::with_capacity(4096);
    loop {
        let mut scratch = [0u8; 4096];
        let n = match socket.read(&mut scratch).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&scratch[..n]);
        if buffer.len() >= PREFACE.len() && buffer.starts_with(PREFACE) {
            return serve_http2(socket, buffer).await;
        }
        // HTTP/1.1: a whole head, then a Content-Length body.
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&buffer[..end]).to_string();
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < end + 4 + length {
            match socket.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&scratch[..n]),
            }
        }
        buffer.drain(..end + 4 + length);
        let target = head.split(' ').nth(1).unwrap_or("/").to_string();
        let ok = match route(&target) {
            None => {
                let body = stats();
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                socket.write_all(answer.as_bytes()).await.is_ok()
            }
            Some((events, interval)) => stream_http1(&mut socket, events, interval).await,
        };
        if !ok {
            return;
        }
    }
}

async fn stream_http1(socket: &mut TcpStream, events: usize, interval: Duration) -> bool {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    if socket.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    for i in 0..events {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let event = chunk(i, i + 1 == events);
        if socket.write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes()).await.is_err() {
            return false;
        }
    }
    let done = "data: [DONE]\n\n";
    socket.write_all(format!("{:x}\r\n{done}\r\n0\r\n\r\n", done.len()).as_bytes()).await.is_ok()
}

/// Replays the bytes already read in front of the socket, for the HTTP/2 handshake.
struct Prefixed {
    read: std::io::Cursor<Vec<u8>>,
    socket: TcpStream,
}

impl tokio::io::AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let remaining = &self.read.get_ref()[self.read.position() as usize..];
        if !remaining.is_empty() {
            let n = remaining.len().min(buf.remaining());
            buf.put_slice(&remaining[..n]);
            let position = self.read.position() + n as u64;
            self.read.set_position(position);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Prefixed {
    fn poll_write(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, data: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.socket).poll_write(cx, data)
    }
    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.socket).poll_flush(cx)
    }
    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

async fn serve_http2(socket: TcpStream, read: Vec<u8>) {
    let io = Prefixed { read: std::io::Cursor::new(read), socket };
    let Ok(mut connection) = h2::server::Builder::new().max_concurrent_streams(128).handshake::<_, Bytes>(io).await else {
        return;
    };
    while let Some(Ok((request, mut respond))) = connection.accept().await {
        tokio::spawn(async move {
            let target = request.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
            let mut body = request.into_body();
            while let Some(Ok(data)) = body.data().await {
                let _ = body.flow_control().release_capacity(data.len());
            }
            match route(&target) {
                None => {
                    let response = http::Response::builder().header("content-type", "application/json").body(()).unwrap();
                    if let Ok(mut send) = respond.send_response(response, false) {
                        let _ = send.send_data(Bytes::from(stats()), true);
                    }
                }
                Some((events, interval)) => {
                    let response = http::Response::builder().header("content-type", "text/event-stream").body(()).unwrap();
                    let Ok(mut send) = respond.send_response(response, false) else { return };
                    for i in 0..events {
                        if i > 0 {
                            tokio::time::sleep(interval).await;
                        }
                        if send.send_data(Bytes::from(chunk(i, i + 1 == events)), false).is_err() {
                            return;
                        }
                    }
                    let _ = send.send_data(Bytes::from_static(b"data: [DONE]\n\n"), true);
                }
            }
        });
    }
}
