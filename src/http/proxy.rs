//! Forward proxies: requests to `http://` origins go in absolute form over pooled connections
//! to the proxy, requests to `https://` origins through a CONNECT tunnel with TLS to the origin
//! inside it. Each proxy (origin and credentials) gets a number that goes into pool keys; the
//! credentials stay here, never in a key, a stat or a message.

use super::HttpError;
use crate::pool::{Scheme, Via};
use http::HeaderValue;
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::fmt;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest CONNECT response head read (a proxy's answer is a few hundred bytes).
const MAX_TUNNEL_HEAD: usize = 16 * 1024;

/// A forward proxy: its origin, and the `Proxy-Authorization` value sent to it (from the proxy
/// URL's userinfo, as Basic credentials).
#[derive(PartialEq, Eq)]
pub struct Proxy {
    pub scheme: Scheme,
    /// As it goes to DNS or a TLS server name (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    pub authorization: Option<HeaderValue>,
}

impl fmt::Display for Proxy {
    /// The proxy's origin, never its credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "{}://{}:{}", self.scheme.as_str(), host, self.port)
    }
}

/// A registered proxy, and what keys of connections through it carry.
type Registered = (Arc<Proxy>, Via);

/// Proxies seen so far; a proxy's number is its place here plus one.
static PROXIES: Lazy<Mutex<Vec<Registered>>> = Lazy::new(Mutex::default);

/// What goes into the pool key of connections through this proxy: the same for the same origin
/// and credentials, another for other credentials (without showing them).
pub fn register(proxy: Proxy) -> Via {
    let mut proxies = PROXIES.lock();
    if let Some((_, via)) = proxies.iter().find(|(p, _)| **p == proxy) {
        return via.clone();
    }
    let via = Via { id: proxies.len() as u32 + 1, origin: proxy.to_string().into() };
    proxies.push((Arc::new(proxy), via.clone()));
    via
}

/// The key part of a registered proxy.
pub fn via(id: u32) -> Option<Via> {
    PROXIES.lock().get((id as usize).checked_sub(1)?).map(|(_, via)| via.clone())
}

/// The proxy behind a key's [`Via`].
pub fn get(via: &Via) -> Option<Arc<Proxy>> {
    PROXIES.lock().get((via.id as usize).checked_sub(1)?).map(|(p, _)| p.clone())
}

/// Asks the proxy for a tunnel to `host:port` on an open connection to it. Ok once it answered
/// 2xx: the stream then carries the origin's bytes. A refusal is httpx's `ProxyError`.
pub async fn tunnel<S>(stream: &mut S, host: &str, port: u16, proxy: &Proxy) -> Result<(), HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
    if let Some(value) = &proxy.authorization {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(value.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    let failed = |e: std::io::Error| HttpError::Proxy(format!("the tunnel through the proxy {proxy} failed: {e}"));
    stream.write_all(&request).await.map_err(failed)?;
    stream.flush().await.map_err(failed)?;
    // Read byte by byte up to the end of the head: nothing after it may be consumed here (the
    // origin's TLS handshake follows on the same stream).
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_TUNNEL_HEAD {
            return Err(HttpError::Proxy(format!("the proxy {proxy} sent an oversized answer to CONNECT")));
        }
        match stream.read(&mut byte).await.map_err(failed)? {
            0 => return Err(HttpError::Proxy(format!("the proxy {proxy} closed the connection instead of opening a tunnel"))),
            _ => head.push(byte[0]),
        }
    }
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut answer = httparse::Response::new(&mut fields);
    match answer.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(HttpError::Proxy(format!("the proxy {proxy} sent an answer to CONNECT that is not HTTP"))),
    }
    match answer.code.unwrap_or(0) {
        200..=299 => Ok(()),
        407 => Err(HttpError::Proxy(format!(
            "the proxy {proxy} asked for authentication (407 Proxy Authentication Required): give its credentials in the proxy URL"
        ))),
        code => Err(HttpError::Proxy(format!("the proxy {proxy} refused the tunnel ({code} {})", answer.reason.unwrap_or("")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(authorization: Option<&str>) -> Proxy {
        Proxy {
            scheme: Scheme::Http,
            host: "127.0.0.1".into(),
            port: 3128,
            authorization: authorization.map(|a| HeaderValue::from_str(a).unwrap()),
        }
    }

    /// The proxy's side of one CONNECT: what it read, after answering `answer`.
    async fn connect_through(answer: &'static [u8], p: &Proxy) -> (Result<(), HttpError>, Vec<u8>, Vec<u8>) {
        let (mut ours, mut theirs) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.ends_with(b"\r\n\r\n") {
                let n = theirs.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            theirs.write_all(answer).await.unwrap();
            seen
        });
        let outcome = tunnel(&mut ours, "api.example", 443, p).await;
        let seen = server.await.unwrap();
        // What the origin would get next is still there: nothing after the head was consumed.
        let mut rest = vec![0u8; 16];
        let n = tokio::time::timeout(std::time::Duration::from_millis(50), ours.read(&mut rest)).await.map_or(0, |r| r.unwrap());
        rest.truncate(n);
        (outcome, seen, rest)
    }

    #[tokio::test]
    async fn a_tunnel_opens_on_2xx_and_leaves_what_follows_for_the_origin() {
        let p = proxy(Some("Basic dTpw"));
        let (outcome, seen, rest) = connect_through(b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03", &p).await;
        assert_eq!(outcome, Ok(()));
        assert_eq!(seen, b"CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\nProxy-Authorization: Basic dTpw\r\n\r\n");
        assert_eq!(rest, b"\x16\x03");
    }

    #[tokio::test]
    async fn a_refusal_is_a_proxy_error_that_shows_no_credentials() {
        let p = proxy(Some("Basic c2VjcmV0"));
        let (outcome, _, _) = connect_through(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", &p).await;
        let Err(HttpError::Proxy(message)) = outcome else { panic!("{outcome:?}") };
        assert!(message.contains("407") && message.contains("http://127.0.0.1:3128") && !message.contains("c2VjcmV0"));
        let (outcome, _, _) = connect_through(b"HTTP/1.1 403 Forbidden\r\n\r\n", &proxy(None)).await;
        assert!(matches!(outcome, Err(HttpError::Proxy(m)) if m.contains("403 Forbidden")));
    }

    #[test]
    fn the_same_proxy_and_credentials_get_the_same_number_and_others_another() {
        let a = register(proxy(Some("Basic YTpi")));
        assert_eq!(register(proxy(Some("Basic YTpi"))), a);
        let b = register(proxy(Some("Basic Yzpk")));
        assert_ne!(a.id, b.id);
        assert_eq!(&*a.origin, "http://127.0.0.1:3128");
        assert_eq!(&*b.origin, "http://127.0.0.1:3128");
    }
}
