//! The engine against servers on 127.0.0.1 that write exact bytes and count what they see.

use super::*;
use crate::pool::Settings;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::thread;

/// A server that runs `handler` on each accepted connection (in a thread of its own) and
/// counts connections and requests read.
struct RawServer {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

/// One request as the server read it: its body.
struct Received {
    body: Vec<u8>,
}

impl RawServer {
    fn start(handler: impl Fn(&mut Peer) + Send + Sync + 'static) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let (c, r) = (connections.clone(), requests.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                stream.set_nodelay(true).unwrap();
                c.fetch_add(1, SeqCst);
                let (handler, requests) = (handler.clone(), r.clone());
                thread::spawn(move || handler(&mut Peer { reader: BufReader::new(stream), requests }));
            }
        });
        RawServer { port, connections, requests }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::parse(&format!("http://127.0.0.1:{}", self.port)).unwrap()
    }
}

/// The server's side of one connection.
struct Peer {
    reader: BufReader<TcpStream>,
    requests: Arc<AtomicUsize>,
}

impl Peer {
    /// Reads one request (head and Content-Length body); `None` when the client closed.
    fn read_request(&mut self) -> Option<Received> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let mut length = 0;
        loop {
            let mut field = String::new();
            self.reader.read_line(&mut field).ok()?;
            if field == "\r\n" || field.is_empty() {
                break;
            }
            if let Some((name, value)) = field.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).ok()?;
        self.requests.fetch_add(1, SeqCst);
        Some(Received { body })
    }

    fn write(&mut self, bytes: &[u8]) {
        let _ = self.reader.get_mut().write_all(bytes);
    }
}

fn pool(per_endpoint: usize) -> Pool<HttpConn> {
    Pool::new(Settings { max_connections_per_endpoint: per_endpoint, reaper_interval: None, ..Settings::default() }).unwrap()
}

fn client() -> Client {
    Client::new(tls::TlsSettings::default(), DrainPolicy { max_bytes: 1 << 20, max_time: Duration::from_secs(1) }).unwrap()
}

fn request(server: &RawServer, method: Method, body: impl AsRef<[u8]>, timeouts: Timeouts) -> RequestParts {
    RequestParts {
        method,
        endpoint: server.endpoint(),
        target: Bytes::from_static(b"/"),
        headers: vec![(HeaderName::from_static("host"), HeaderValue::from_static("127.0.0.1"))],
        body: Bytes::copy_from_slice(body.as_ref()),
        timeouts,
    }
}

/// Sends and reads the whole body (the connection then goes back to the pool).
async fn fetch(client: &Client, pool: &Pool<HttpConn>, request: RequestParts) -> u16 {
    let mut response = client.send(pool, request).await.unwrap();
    read_all(&mut response.body).await.1.unwrap();
    response.status
}

async fn read_all(body: &mut Body) -> (Vec<u8>, Result<(), HttpError>) {
    let mut all = Vec::new();
    loop {
        match body.next_chunk().await {
            Ok(Some(chunk)) => all.extend_from_slice(&chunk),
            Ok(None) => return (all, Ok(())),
            Err(e) => return (all, Err(e)),
        }
    }
}

#[tokio::test]
async fn every_field_line_arrives_in_wire_order_with_its_case() {
    let server = RawServer::start(|peer| {
        while peer.read_request().is_some() {
            peer.write(b"HTTP/1.1 200 Fine Indeed\r\nSet-Cookie: a=1\r\nX-Mixed-Case: v\r\nset-cookie: b=2\r\nX-Folded: x\r\n  y\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let (pool, client) = (pool(4), client());
    let mut response = client.send(&pool, request(&server, Method::GET, b"", Timeouts::default())).await.unwrap();
    let fields: Vec<(&[u8], &[u8])> = response.headers.iter().map(|(n, v)| (&n[..], &v[..])).collect();
    assert_eq!(
        fields,
        [
            (&b"Set-Cookie"[..], &b"a=1"[..]),
            (b"X-Mixed-Case", b"v"),
            (b"set-cookie", b"b=2"),
            (b"X-Folded", b"x y"),
            (b"Content-Length", b"2")
        ]
    );
    assert_eq!(&response.reason[..], b"Fine Indeed");
    assert_eq!(read_all(&mut response.body).await.0, b"ok");
}

#[tokio::test]
async fn a_post_the_server_read_is_never_sent_again() {
    // The first request is answered; the second is read, and the connection closed unanswered.
    let server = RawServer::start(|peer| {
        if peer.read_request().is_some() {
            peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
        let _ = peer.read_request();
    });
    let (pool, client) = (pool(4), client());
    fetch(&client, &pool, request(&server, Method::POST, b"one", Timeouts::default())).await;
    let second = client.send(&pool, request(&server, Method::POST, b"two", Timeouts::default())).await;
    assert!(matches!(second, Err(HttpError::RemoteProtocol(_))), "{:?}", second.err());
    assert_eq!(server.requests.load(SeqCst), 2, "the unanswered POST reached the server once");
    assert_eq!(client.stats.retried.load(SeqCst), 0);
    assert_eq!(pool.stats().active, 0);
}

#[tokio::test]
async fn an_idempotent_request_is_sent_again_once_on_a_fresh_connection() {
    let server = RawServer::start(|peer| {
        if peer.read_request().is_some() {
            peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
        // A second request on the same connection is read and left unanswered.
        let _ = peer.read_request();
    });
    let (pool, client) = (pool(4), client());
    fetch(&client, &pool, request(&server, Method::GET, b"", Timeouts::default())).await;
    assert_eq!(fetch(&client, &pool, request(&server, Method::GET, b"", Timeouts::default())).await, 200);
    assert_eq!((server.requests.load(SeqCst), server.connections.load(SeqCst)), (3, 2));
    assert_eq!(client.stats.retried.load(SeqCst), 1);
}

#[tokio::test]
async fn bytes_before_a_cut_come_before_the_error() {
    let server = RawServer::start(|peer| {
        if peer.read_request().is_some() {
            peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
            peer.write(&[b'x'; 5000]);
        }
    });
    let (pool, client) = (pool(4), client());
    let mut response = client.send(&pool, request(&server, Method::GET, b"", Timeouts::default())).await.unwrap();
    let (bytes, outcome) = read_all(&mut response.body).await;
    assert_eq!(bytes.len(), 5000);
    assert!(matches!(outcome, Err(HttpError::RemoteProtocol(_))), "{outcome:?}");
    assert_eq!(pool.stats().total(), 0);
}

#[tokio::test]
async fn the_head_comes_without_waiting_for_the_body() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    let server = RawServer::start(move |peer| {
        if peer.read_request().is_some() {
            peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
            let _ = rx.lock().unwrap().recv();
            peer.write(b"world");
        }
    });
    let (pool, client) = (pool(4), client());
    let started = std::time::Instant::now();
    let mut response = client.send(&pool, request(&server, Method::GET, b"", Timeouts::default())).await.unwrap();
    assert_eq!(response.body_bytes_read, 5);
    let first = response.body.chunks_in_memory(5, 1 << 20).await;
    assert_eq!(first.concat(), b"hello");
    assert!(started.elapsed() < Duration::from_secs(5));
    tx.send(()).unwrap();
    assert_eq!(read_all(&mut response.body).await.0, b"world");
}

#[tokio::test]
async fn a_write_timeout_fires_without_a_read_timeout() {
    // A server that accepts and never reads: the upload stalls once the buffers are full.
    let server = RawServer::start(|_peer| thread::sleep(Duration::from_secs(20)));
    let (pool, client) = (pool(4), client());
    let timeouts = Timeouts { write: Some(Duration::from_millis(300)), ..Timeouts::default() };
    let started = std::time::Instant::now();
    let outcome = client.send(&pool, request(&server, Method::POST, vec![b'x'; 32 << 20], timeouts)).await;
    assert!(matches!(outcome, Err(HttpError::WriteTimeout)), "{:?}", outcome.err());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn refused_heads_and_the_servers_idle_hint() {
    let server = RawServer::start(|peer| {
        while let Some(r) = peer.read_request() {
            match &r.body[..] {
                b"te" => peer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
                b"101" => peer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"),
                _ => peer.write(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 0\r\n\r\n"),
            }
        }
    });
    let (pool, client) = (pool(4), client());
    for refused in [&b"te"[..], b"101"] {
        let outcome = client.send(&pool, request(&server, Method::POST, refused, Timeouts::default())).await;
        assert!(matches!(outcome, Err(HttpError::RemoteProtocol(_))), "{:?}", outcome.err());
    }
    fetch(&client, &pool, request(&server, Method::POST, b"hint", Timeouts::default())).await;
    assert_eq!(pool.stats().idle, 1);
    // Past the server's hint minus the margin, the idle connection is not reused.
    tokio::time::sleep(Duration::from_millis(600)).await;
    fetch(&client, &pool, request(&server, Method::POST, b"after", Timeouts::default())).await;
    assert_eq!(server.connections.load(SeqCst), 4, "two refused, one closed after its hint, one new");
    assert_eq!(pool.stats().counters.closed_by(CloseReason::Unhealthy), 1);
}

#[tokio::test]
async fn a_request_whose_response_began_is_never_sent_again() {
    // Even a GET: part of a head arrived, so the server acted on it.
    let server = RawServer::start(|peer| {
        if peer.read_request().is_some() {
            peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
        if peer.read_request().is_some() {
            peer.write(b"HTTP/1.1 200 OK\r\nContent-");
        }
    });
    let (pool, client) = (pool(4), client());
    fetch(&client, &pool, request(&server, Method::GET, b"", Timeouts::default())).await;
    let outcome = client.send(&pool, request(&server, Method::GET, b"", Timeouts::default())).await;
    assert!(matches!(outcome, Err(HttpError::RemoteProtocol(_))), "{:?}", outcome.err());
    assert_eq!((server.requests.load(SeqCst), server.connections.load(SeqCst)), (2, 1));
}

#[tokio::test]
async fn chunked_framing_wins_over_a_content_length() {
    let server = RawServer::start(|peer| {
        if peer.read_request().is_some() {
            peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        }
    });
    let (pool, client) = (pool(4), client());
    let mut response = client.send(&pool, request(&server, Method::GET, b"", Timeouts::default())).await.unwrap();
    assert_eq!(response.content_length, None);
    assert_eq!(read_all(&mut response.body).await.0, b"hello");
}
