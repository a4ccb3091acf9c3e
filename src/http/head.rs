//! The response head exactly as the server sent it, and what it means for its body and its
//! connection.
//!
//! hyper parses heads for framing, but hands over an `http::HeaderMap`: names lowercased,
//! repeated fields grouped under their first occurrence. httpx gives every field line in wire
//! order with its original case (`response.headers.raw`), and cookies and links depend on
//! repeats. So the bytes read while a request waits for its head are recorded ([`Capture`]),
//! and the final head is parsed again from them here, with the same parser hyper uses.

use super::HttpError;
use bytes::Bytes;
use http::Version;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

/// Bytes kept while waiting for a head: more than the largest head accepted
/// ([`MAX_HEAD_SIZE`]); what arrives beyond it is only counted.
const CAPTURE_LIMIT: usize = 128 * 1024;
/// The largest response head accepted, as httpx (h11 under httpcore) accepts: 100 KiB.
pub const MAX_HEAD_SIZE: usize = 100 * 1024;
/// The most field lines in one head. httpx has no count limit (only the size one); hyper needs
/// a count, and each parse reserves room for it, so it is set well above real heads.
pub const MAX_FIELDS: usize = 1024;

/// The bytes a connection read since a request was sent, until its head was handed over.
#[derive(Debug, Default)]
pub struct Capture {
    on: AtomicBool,
    recorded: Mutex<Recorded>,
}

#[derive(Debug, Default)]
struct Recorded {
    bytes: Vec<u8>,
    /// Bytes read past [`CAPTURE_LIMIT`], counted but not kept.
    beyond: usize,
}

impl Capture {
    /// Starts recording (called right before a request is sent).
    pub fn start(&self) {
        let mut r = self.recorded.lock();
        r.bytes.clear();
        r.beyond = 0;
        self.on.store(true, Relaxed);
    }

    /// Called with every read from the socket.
    pub fn record(&self, data: &[u8]) {
        if !self.on.load(Relaxed) {
            return;
        }
        let mut r = self.recorded.lock();
        // Looked at again under the lock: a read racing `finish` keeps nothing on an idle
        // connection.
        if !self.on.load(Relaxed) {
            return;
        }
        let room = CAPTURE_LIMIT.saturating_sub(r.bytes.len()).min(data.len());
        r.bytes.extend_from_slice(&data[..room]);
        r.beyond += data.len() - room;
    }

    /// Stops recording and parses the final head out of what was read. Also says whether any
    /// byte of a response arrived at all.
    pub fn finish(&self) -> (Option<RawHead>, bool) {
        self.on.store(false, Relaxed);
        let mut r = self.recorded.lock();
        let read = r.bytes.len() + r.beyond;
        let head = (RawHead::parse(&r.bytes, read), read > 0);
        r.bytes.clear();
        r.beyond = 0;
        // An idle connection keeps no large buffer.
        r.bytes.shrink_to(16 * 1024);
        head
    }
}

/// A final (non-1xx) response head as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHead {
    /// Every field line in wire order: the name as sent, the value with obs-folds unfolded.
    pub fields: Vec<(Bytes, Bytes)>,
    pub reason: Bytes,
    /// Body bytes that had already been read together with the head: they are in memory, so
    /// handing them over with the head never waits for the network.
    pub body_bytes_read: usize,
}

impl RawHead {
    /// The last head in `bytes` that is not an interim (1xx but 101) response; `None` if there
    /// is no complete one. `read` counts every byte read, kept or not.
    pub fn parse(bytes: &[u8], read: usize) -> Option<RawHead> {
        let mut config = httparse::ParserConfig::default();
        config.allow_obsolete_multiline_headers_in_responses(true);
        let mut offset = 0;
        loop {
            let rest = &bytes[offset..];
            let mut fields = vec![httparse::EMPTY_HEADER; field_lines(rest)?];
            let mut response = httparse::Response::new(&mut fields);
            let httparse::Status::Complete(len) = config.parse_response(&mut response, rest).ok()? else {
                return None;
            };
            let code = response.code?;
            if (100..200).contains(&code) && code != 101 {
                offset += len;
                continue;
            }
            return Some(RawHead {
                fields: response
                    .headers
                    .iter()
                    .map(|h| (Bytes::copy_from_slice(h.name.as_bytes()), unfold(h.value)))
                    .collect(),
                reason: Bytes::copy_from_slice(response.reason.unwrap_or("").as_bytes()),
                body_bytes_read: read.saturating_sub(offset + len),
            });
        }
    }
}

/// How many field lines the head at the start of `bytes` can have (its line count), or `None`
/// if its end has not arrived.
fn field_lines(bytes: &[u8]) -> Option<usize> {
    let mut lines = 0;
    let mut previous_was_newline = false;
    for &b in bytes.iter().take(MAX_HEAD_SIZE + 4) {
        match b {
            b'\n' if previous_was_newline => return Some(lines.max(1)),
            b'\n' => {
                lines += 1;
                previous_was_newline = true;
            }
            b'\r' => {}
            _ => previous_was_newline = false,
        }
    }
    None
}

/// A field value with obsolete line folding (RFC 9112 §5.2) replaced as httpx does: each
/// continuation line's leading whitespace and the line break become one space.
fn unfold(value: &[u8]) -> Bytes {
    if !value.contains(&b'\n') {
        return Bytes::copy_from_slice(value);
    }
    let mut out = Vec::with_capacity(value.len());
    for (i, line) in value.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = if i == 0 { line } else { line.trim_ascii_start() };
        let line = line.trim_ascii_end();
        if i > 0 && !line.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(line);
    }
    Bytes::from(out)
}

/// What happens to the connection once its body has been read to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterBody {
    Close,
    /// Back to the pool; with the server's idle timeout when it gave one
    /// (`Keep-Alive: timeout=N`).
    Reuse(Option<Duration>),
}

/// What a final head says about its body and its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// The body's length, when a `Content-Length` frames it.
    pub content_length: Option<u64>,
    pub after_body: AfterBody,
}

impl Framing {
    /// Reads a final head's fields, and refuses what httpx refuses, with its class
    /// (`RemoteProtocolError`): a `101 Switching Protocols` no request asked for, and a
    /// transfer-coding other than chunked alone (passing it on would hand over undecoded bytes).
    pub fn of(version: Version, status: u16, fields: &[(Bytes, Bytes)]) -> Result<Framing, HttpError> {
        if status == 101 {
            return Err(HttpError::RemoteProtocol("the server switched protocols (101) without being asked to".into()));
        }
        let mut codings = tokens(fields, "transfer-encoding");
        let chunked = match (codings.next(), codings.next()) {
            (None, _) => false,
            (Some(coding), None) if coding.eq_ignore_ascii_case(b"chunked") => true,
            _ => return Err(HttpError::RemoteProtocol("unsupported Transfer-Encoding (only chunked is accepted)".into())),
        };
        // A Transfer-Encoding takes precedence over a Content-Length (RFC 9112 §6.3).
        let content_length = match chunked {
            true => None,
            false => {
                let mut lengths = tokens(fields, "content-length");
                match (lengths.next(), lengths.next()) {
                    (Some(length), None) => std::str::from_utf8(length).ok().and_then(|l| l.parse().ok()),
                    _ => None,
                }
            }
        };
        // HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 only with keep-alive.
        let says = |token: &[u8]| tokens(fields, "connection").any(|t| t.eq_ignore_ascii_case(token));
        let reusable = match version {
            Version::HTTP_11 => !says(b"close"),
            Version::HTTP_10 => says(b"keep-alive"),
            _ => false,
        };
        let after_body = match reusable {
            true => AfterBody::Reuse(server_idle_timeout(fields)),
            false => AfterBody::Close,
        };
        Ok(Framing { content_length, after_body })
    }
}

/// The server's `Keep-Alive: timeout=N` hint, if it gave one.
fn server_idle_timeout(fields: &[(Bytes, Bytes)]) -> Option<Duration> {
    tokens(fields, "keep-alive").find_map(|param| {
        let (name, value) = std::str::from_utf8(param).ok()?.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("timeout") {
            return None;
        }
        let seconds: u64 = value.trim().trim_matches('"').parse().ok()?;
        Some(Duration::from_secs(seconds.min(24 * 3600)))
    })
}

/// The comma-separated tokens of every field named `name` (case-insensitive), in order.
fn tokens<'a>(fields: &'a [(Bytes, Bytes)], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    fields
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(head: &RawHead) -> Vec<(&str, &str)> {
        head.fields
            .iter()
            .map(|(n, v)| (std::str::from_utf8(n).unwrap(), std::str::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn keeps_every_field_in_wire_order_and_case() {
        let raw = b"HTTP/1.1 200 Totally Fine\r\nSet-Cookie: a=1\r\nX-Mixed-Case: v\r\nset-cookie: b=2\r\nContent-Length: 2\r\n\r\nok";
        let head = RawHead::parse(raw, raw.len()).unwrap();
        assert_eq!(
            fields(&head),
            [("Set-Cookie", "a=1"), ("X-Mixed-Case", "v"), ("set-cookie", "b=2"), ("Content-Length", "2")]
        );
        assert_eq!(&head.reason[..], b"Totally Fine");
        assert_eq!(head.body_bytes_read, 2);
    }

    #[test]
    fn skips_interim_responses_and_counts_bytes_not_kept() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\nA: b\r\n\r\n";
        let head = RawHead::parse(raw, raw.len() + 10).unwrap();
        assert_eq!(fields(&head), [("A", "b")]);
        assert_eq!(head.body_bytes_read, 10);
    }

    #[test]
    fn unfolds_obsolete_line_folding() {
        let raw = b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n  b\r\n\tc\r\nY: z\r\n\r\n";
        let head = RawHead::parse(raw, raw.len()).unwrap();
        assert_eq!(fields(&head), [("X-Folded", "a b c"), ("Y", "z")]);
    }

    #[test]
    fn many_fields_and_incomplete_heads() {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..500 {
            raw.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        assert_eq!(RawHead::parse(&raw, raw.len()), None, "no end of head yet");
        raw.extend_from_slice(b"\r\n");
        assert_eq!(RawHead::parse(&raw, raw.len()).unwrap().fields.len(), 500);
    }

    #[test]
    fn capture_records_only_while_on() {
        let c = Capture::default();
        c.record(b"HTTP/1.1 500 before\r\n\r\n");
        c.start();
        c.record(b"HTTP/1.1 200 OK\r\nA: 1\r\n");
        c.record(b"\r\nbody");
        let head = c.finish().0.unwrap();
        assert_eq!((fields(&head), head.body_bytes_read), (vec![("A", "1")], 4));
        c.record(b"more");
        assert_eq!(c.finish(), (None, false));
        c.start();
        c.record(b"HTTP/1.1 2");
        assert_eq!(c.finish(), (None, true), "part of a head arrived");
    }

    #[test]
    fn token_lists() {
        let f = vec![
            (Bytes::from_static(b"Transfer-Encoding"), Bytes::from_static(b"gzip, chunked")),
            (Bytes::from_static(b"transfer-encoding"), Bytes::from_static(b" x ,")),
        ];
        assert_eq!(tokens(&f, "transfer-encoding").collect::<Vec<_>>(), [&b"gzip"[..], b"chunked", b"x"]);
    }
}
