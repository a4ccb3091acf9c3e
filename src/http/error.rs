//! What can go wrong with a request, in httpx's words: the error type, the phase a failure
//! happened in, and the messages shared by both protocols.

use std::fmt;

/// What can go wrong, named after httpx's exception classes (the bindings map them 1:1).
/// Messages never include headers, paths or query strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    PoolTimeout,
    ConnectTimeout,
    Connect(String),
    ReadTimeout,
    WriteTimeout,
    Read(String),
    Write(String),
    RemoteProtocol(String),
    LocalProtocol(String),
    /// A proxy refused to open a tunnel (httpx's `ProxyError`).
    Proxy(String),
    /// A setting that cannot be used (a CA file that does not parse, ...).
    Config(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // httpx's words where it has some (its sync transport's: the async one says nothing
            // for timeouts); httpx's pool timeout has no message, ours names what it waited for.
            HttpError::PoolTimeout => f.write_str("timed out waiting for a free connection in the pool"),
            HttpError::ConnectTimeout | HttpError::ReadTimeout | HttpError::WriteTimeout => f.write_str("timed out"),
            HttpError::Connect(m)
            | HttpError::Read(m)
            | HttpError::Write(m)
            | HttpError::RemoteProtocol(m)
            | HttpError::LocalProtocol(m)
            | HttpError::Proxy(m)
            | HttpError::Config(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for HttpError {}

#[derive(Clone, Copy)]
pub(crate) enum Phase {
    Head,
    Body(Received),
}

/// How much of a body has arrived, against the length its head announced (None: chunked or
/// close-delimited): httpx's words for a body cut short say it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Received {
    pub(super) bytes: u64,
    pub(super) expected: Option<u64>,
}

/// httpx's words for a server that closed the connection before its response was complete.
pub(super) fn peer_closed(phase: Phase) -> String {
    match phase {
        Phase::Head => "Server disconnected without sending a response.".into(),
        Phase::Body(Received { bytes, expected: Some(expected) }) => {
            format!("peer closed connection without sending complete message body (received {bytes} bytes, expected {expected})")
        }
        Phase::Body(Received { expected: None, .. }) => {
            "peer closed connection without sending complete message body (incomplete chunked read)".into()
        }
    }
}

/// `[Errno N] strerror`, as Python's OSError reads; other errors as they display.
pub(crate) fn python_os_message(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let text = e.to_string();
            let strerror = text.strip_suffix(&format!(" (os error {code})")).unwrap_or(&text);
            format!("[Errno {code}] {strerror}")
        }
        None => e.to_string(),
    }
}
