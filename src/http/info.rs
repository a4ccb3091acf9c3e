//! What a connection reports of itself, as httpx's `trace` extension and Python's `ssl` word it:
//! its socket's two ends and its TLS session.

/// What a new connection reports to httpx's `trace` extension (`connect_tcp`'s and `start_tls`'s
/// network streams): the socket's two ends (the proxy's, when one is on the way) and the TLS
/// session with the origin.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: std::net::SocketAddr,
    pub local: std::net::SocketAddr,
    pub tls: Option<TlsInfo>,
}

/// A TLS session, in the words of Python's `ssl.SSLObject`: `version()` ("TLSv1.3"),
/// `cipher()`'s name (IANA's), `selected_alpn_protocol()`.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub version: &'static str,
    pub cipher: String,
    pub alpn: Option<String>,
}

impl TlsInfo {
    pub(super) fn of(session: &rustls::ClientConnection) -> TlsInfo {
        let version = match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "unknown",
        };
        // rustls names TLS 1.3 suites TLS13_*, IANA (and OpenSSL) TLS_*.
        let cipher = session.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).unwrap_or("unknown");
        let cipher = cipher.strip_prefix("TLS13_").map_or_else(|| cipher.to_owned(), |rest| format!("TLS_{rest}"));
        let alpn = session.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
        TlsInfo { version, cipher, alpn }
    }
}
