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
    Client::new(tls::ConnectSettings::default(), DrainPolicy { max_bytes: 1 << 20, max_time: Duration::from_secs(1) }, KeepAlive::default()).unwrap()
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

// The mirror of the test above on purpose: the same server, a GET instead of a POST.
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
async fn chunks_that_arrive_together_are_handed_over_together_and_a_cut_after_them_waits() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    let server = RawServer::start(move |peer| {
        if peer.read_request().is_some() {
            peer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            let _ = rx.lock().unwrap().recv();
            peer.write(b"5\r\nhello\r\n6\r\n world\r\n"); // then the connection closes mid-body
        }
    });
    let (pool, client) = (pool(4), client());
    let mut response = client.send(&pool, request(&server, Method::GET, b"", Timeouts::default())).await.unwrap();
    tx.send(()).unwrap();
    let chunks = response.body.next_chunks(1 << 20).await.unwrap().unwrap();
    assert_eq!(chunks.concat(), b"hello world");
    assert!(matches!(response.body.next_chunks(1 << 20).await, Err(HttpError::RemoteProtocol(_))));
    assert_eq!(pool.stats().total(), 0);
}

/// Runs `future` the way a sync caller does: on this thread, its socket read here.
fn on_this_thread<F: Future>(future: F) -> F::Output {
    let future = std::pin::pin!(future);
    inline::block_on(future, Duration::from_secs(30)).expect("done within 30 s")
}

/// Runs `future` as a runtime task does (its socket read by tokio's reactor), failing instead of
/// hanging if the socket never comes back to the reactor.
fn on_the_runtime<F: Future>(future: F) -> F::Output {
    block_on(async { tokio::time::timeout(Duration::from_secs(30), future).await.expect("done within 30 s") })
}

#[test]
fn a_connection_moves_between_sync_callers_and_the_runtime() {
    let server = RawServer::start(|peer| {
        while let Some(received) = peer.read_request() {
            let body = format!("got {}", received.body.len());
            peer.write(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
        }
    });
    let (pool, client) = (pool(1), client());
    let fetch_body = |n: usize| {
        let (client, pool, request) = (&client, &pool, request(&server, Method::POST, vec![b'x'; n], Timeouts::default()));
        async move {
            let mut response = client.send(pool, request).await.unwrap();
            String::from_utf8(read_all(&mut response.body).await.0).unwrap()
        }
    };
    for round in 0..3 {
        assert_eq!(on_this_thread(fetch_body(10 + round)), format!("got {}", 10 + round));
        // A runtime task takes the same connection: its socket goes back to tokio's reactor.
        assert_eq!(on_the_runtime(fetch_body(100_000 + round)), format!("got {}", 100_000 + round));
    }
    assert_eq!((server.connections.load(SeqCst), server.requests.load(SeqCst)), (1, 6));
}

#[test]
fn a_sync_callers_read_timeout_fires_on_its_thread() {
    // Reads the request and never answers: the runtime's timer must wake the waiting caller.
    let server = RawServer::start(|peer| {
        if peer.read_request().is_some() {
            thread::sleep(Duration::from_secs(20));
        }
    });
    let (pool, client) = (pool(1), client());
    let timeouts = Timeouts { read: Some(Duration::from_millis(300)), ..Timeouts::default() };
    let started = std::time::Instant::now();
    let outcome = on_this_thread(client.send(&pool, request(&server, Method::GET, b"", timeouts)));
    assert!(matches!(outcome, Err(HttpError::ReadTimeout)), "{:?}", outcome.err());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(server.requests.load(SeqCst), 1);
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

/// An HTTP/2 server (cleartext, prior knowledge) on 127.0.0.1, from h2's server side. Each
/// request is answered by `respond` (given the request count so far); it counts connections.
struct H2Server {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl H2Server {
    async fn start<F, Fut>(max_streams: u32, respond: F) -> H2Server
    where
        F: Fn(usize, h2::server::SendResponse<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        H2Server::start_until(max_streams, usize::MAX, respond).await
    }

    /// After accepting `dead_after` requests the server stops reading a connection (its PINGs
    /// go unanswered), socket still open: a dead peer.
    async fn start_until<F, Fut>(max_streams: u32, dead_after: usize, respond: F) -> H2Server
    where
        F: Fn(usize, h2::server::SendResponse<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (connections, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c, r, respond) = (connections.clone(), requests.clone(), Arc::new(respond));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                c.fetch_add(1, SeqCst);
                let (r, respond) = (r.clone(), respond.clone());
                tokio::spawn(async move {
                    let mut conn = h2::server::Builder::new().max_concurrent_streams(max_streams).handshake::<_, Bytes>(socket).await.unwrap();
                    while let Some(Ok((_request, send))) = conn.accept().await {
                        let n = r.fetch_add(1, SeqCst);
                        if n + 1 >= dead_after {
                            let _held = conn;
                            std::future::pending::<()>().await;
                            return;
                        }
                        tokio::spawn(respond(n, send));
                    }
                });
            }
        });
        H2Server { port, connections, requests }
    }

    fn request(&self, timeouts: Timeouts) -> RequestParts {
        RequestParts {
            method: Method::POST,
            endpoint: Endpoint::parse(&format!("http://127.0.0.1:{}", self.port)).unwrap(),
            target: Bytes::from_static(b"/"),
            headers: vec![(HeaderName::from_static("host"), HeaderValue::from_static("127.0.0.1"))],
            body: Bytes::from_static(b"{}"),
            timeouts,
        }
    }
}

fn h2_client(keep_alive: KeepAlive) -> Client {
    let tls = tls::ConnectSettings { versions: tls::Versions { http1: false, http2: true }, ..tls::ConnectSettings::default() };
    Client::new(tls, DrainPolicy { max_bytes: 1 << 20, max_time: Duration::from_secs(1) }, keep_alive).unwrap()
}

async fn ok_after(delay: Duration, mut send: h2::server::SendResponse<Bytes>) {
    tokio::time::sleep(delay).await;
    let mut body = send.send_response(http::Response::new(()), false).unwrap();
    body.send_data(Bytes::from_static(b"ok"), true).unwrap();
}

#[tokio::test]
async fn http2_streams_share_connections_up_to_the_servers_limit() {
    let server = H2Server::start(3, |_, send| ok_after(Duration::from_millis(200), send)).await;
    let (pool, client) = (pool(8), h2_client(KeepAlive::default()));
    let mut requests = Vec::new();
    for _ in 0..9 {
        let (pool, client, request) = (pool.clone(), &client, server.request(Timeouts::default()));
        requests.push(async move { fetch(client, &pool, request).await });
    }
    let statuses = super::join_all(requests).await;
    assert_eq!(statuses, vec![200; 9]);
    assert_eq!(server.connections.load(SeqCst), 3, "9 streams, 3 a connection");
    let stats = pool.stats();
    assert_eq!((stats.active, stats.idle), (0, 3));
    let counts: Vec<_> = pool.per_endpoint(|s| s.stats()).into_iter().map(|(_, c)| c).collect();
    assert_eq!(counts.len(), 1);
    let c = counts[0];
    assert_eq!((c.http1_connections, c.http2_connections, c.streams_in_use), (0, 3, 0));
    assert_eq!(c.connect_time.count(), 3, "each connection opened is timed");
    // Sequential requests take one of them, one stream at a time.
    for _ in 0..3 {
        fetch(&client, &pool, server.request(Timeouts::default())).await;
    }
    assert_eq!(server.connections.load(SeqCst), 3);
}

#[tokio::test]
async fn http2_a_peer_that_stops_answering_pings_fails_its_streams() {
    // The server answers the first request, then stops reading the connection (its PINGs go
    // unanswered) while keeping the socket open.
    let server = H2Server::start_until(100, 2, |_, send| ok_after(Duration::ZERO, send)).await;
    let keep_alive = KeepAlive { interval: Some(Duration::from_millis(200)), timeout: Duration::from_millis(300) };
    let (pool, client) = (pool(4), h2_client(keep_alive));
    fetch(&client, &pool, server.request(Timeouts::default())).await;
    let started = std::time::Instant::now();
    // No read timeout: only the keep-alive can end this.
    let outcome = async {
        let mut response = client.send(&pool, server.request(Timeouts::default())).await?;
        read_all(&mut response.body).await.1
    };
    let outcome = tokio::time::timeout(Duration::from_secs(5), outcome).await;
    assert!(outcome.is_ok(), "the dead peer was not noticed");
    assert!(matches!(outcome.unwrap(), Err(HttpError::RemoteProtocol(_) | HttpError::Read(_))));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(pool.stats().active, 0);
}

#[tokio::test]
async fn http2_a_refused_stream_is_sent_again_once_and_others_are_not() {
    let server = H2Server::start(100, |n, mut send| async move {
        match n {
            0 => send.send_reset(h2::Reason::REFUSED_STREAM),
            1 => ok_after(Duration::ZERO, send).await,
            _ => send.send_reset(h2::Reason::INTERNAL_ERROR),
        }
    })
    .await;
    let (pool, client) = (pool(4), h2_client(KeepAlive::default()));
    // Refused (never processed): sent again, answered.
    assert_eq!(fetch(&client, &pool, server.request(Timeouts::default())).await, 200);
    assert_eq!(server.requests.load(SeqCst), 2);
    // Reset after it may have been processed: a POST is not sent again.
    let outcome = client.send(&pool, server.request(Timeouts::default())).await;
    assert!(matches!(outcome, Err(HttpError::RemoteProtocol(_))), "{:?}", outcome.err());
    assert_eq!(server.requests.load(SeqCst), 3);
    assert_eq!(server.connections.load(SeqCst), 1, "a reset stream leaves its connection serving");
}

#[tokio::test]
async fn http2_a_dropped_request_resets_its_stream_and_keeps_the_connection() {
    let server = H2Server::start(100, |n, send| async move {
        match n {
            0 => std::future::pending::<()>().await,
            _ => ok_after(Duration::ZERO, send).await,
        }
    })
    .await;
    let (pool, client) = (pool(4), h2_client(KeepAlive::default()));
    let timeouts = Timeouts { read: Some(Duration::from_millis(100)), ..Timeouts::default() };
    let outcome = client.send(&pool, server.request(timeouts)).await;
    assert!(matches!(outcome, Err(HttpError::ReadTimeout)), "{:?}", outcome.err());
    // The read timeout has the peer checked (a PING): until it answers, the connection takes no
    // stream and stays out of the pool; then it is back, idle.
    assert_eq!((pool.stats().active, pool.stats().idle), (1, 0));
    for _ in 0..100 {
        if pool.stats().idle == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((pool.stats().active, pool.stats().idle), (0, 1), "the peer answered: the connection serves on");
    let cancelled = tokio::time::timeout(Duration::from_millis(50), client.send(&pool, server.request(Timeouts::default()))).await;
    drop(cancelled);
    assert_eq!(fetch(&client, &pool, server.request(Timeouts::default())).await, 200);
    assert_eq!(server.connections.load(SeqCst), 1);
    assert_eq!(pool.stats().active, 0);
}


#[test]
fn a_future_that_wakes_itself_at_every_poll_still_gives_the_caller_its_slice_back() {
    // The caller (a sync request) looks for Ctrl-C between slices: it must get them back.
    let (done, slice_ended) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut polls = 0u64;
        let future = std::pin::pin!(std::future::poll_fn(|cx| {
            polls += 1;
            cx.waker().wake_by_ref();
            std::task::Poll::<()>::Pending
        }));
        let _ = done.send((inline::block_on(future, Duration::from_millis(50)), polls));
    });
    let (out, polls) = slice_ended.recv_timeout(Duration::from_secs(10)).expect("the slice ended");
    assert!(out.is_none() && polls > 1);
}
