//! The response head exactly as the server sent it, and what it means for its body and its
//! connection.
//!
//! httpx gives every field line in wire order with its original case
//! (`response.headers.raw`), and cookies and links depend on repeats: the head is kept as
//! parsed (httparse, the parser hyper uses), not folded into an `http::HeaderMap`.

use super::HttpError;
use bytes::Bytes;
use http::Version;
use std::time::Duration;

/// The largest response head accepted, as httpx (h11 under httpcore) accepts: 100 KiB.
pub const MAX_HEAD_SIZE: usize = 100 * 1024;

/// A final (non-1xx) response head as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHead {
    pub status: u16,
    pub version: Version,
    pub reason: Bytes,
    /// Every field line in wire order: the name as sent, the value with obs-folds unfolded.
    pub fields: Vec<(Bytes, Bytes)>,
    /// The bytes it took, with the interim heads before it.
    pub len: usize,
}

impl RawHead {
    /// The first head at the start of `bytes` that is not an interim (1xx but 101) response,
    /// those before it skipped; `Ok(None)` until its end has arrived, an error (httpx's
    /// `RemoteProtocolError`) for a head that does not parse or is too large.
    pub fn parse(bytes: &[u8]) -> Result<Option<RawHead>, HttpError> {
        let mut config = httparse::ParserConfig::default();
        config.allow_obsolete_multiline_headers_in_responses(true);
        let mut offset = 0;
        loop {
            let rest = &bytes[offset..];
            let Some(lines) = field_lines(rest) else {
                return match rest.len() > MAX_HEAD_SIZE {
                    true => Err(HttpError::RemoteProtocol("the response head is too large (over 100 KiB)".into())),
                    false => Ok(None),
                };
            };
            let mut fields = vec![httparse::EMPTY_HEADER; lines];
            let mut response = httparse::Response::new(&mut fields);
            let len = match config.parse_response(&mut response, rest) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(HttpError::RemoteProtocol(format!("the response head does not parse ({e})"))),
            };
            let code = response.code.expect("a complete head has a status");
            if (100..200).contains(&code) && code != 101 {
                offset += len;
                continue;
            }
            return Ok(Some(RawHead {
                status: code,
                version: if response.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 },
                reason: Bytes::copy_from_slice(response.reason.unwrap_or("").as_bytes()),
                fields: response
                    .headers
                    .iter()
                    .map(|h| (Bytes::copy_from_slice(h.name.as_bytes()), unfold(h.value)))
                    .collect(),
                len: offset + len,
            }));
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
    /// The body comes in chunked coding.
    pub chunked: bool,
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
        // A Transfer-Encoding takes precedence over a Content-Length (RFC 9112 §6.3). Repeats
        // of one length are one length; lengths that differ, or are not numbers, are refused (as
        // h11 and hyper refuse them).
        let mut content_length = None;
        if !chunked {
            for length in tokens(fields, "content-length") {
                let parsed = match length.iter().all(u8::is_ascii_digit) {
                    true => std::str::from_utf8(length).ok().and_then(|l| l.parse::<u64>().ok()),
                    false => None,
                };
                match (parsed, content_length) {
                    (Some(n), None) => content_length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => return Err(HttpError::RemoteProtocol("invalid Content-Length in the response".into())),
                }
            }
        }
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
        Ok(Framing { content_length, chunked, after_body })
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
        let head = RawHead::parse(raw).unwrap().unwrap();
        assert_eq!(
            fields(&head),
            [("Set-Cookie", "a=1"), ("X-Mixed-Case", "v"), ("set-cookie", "b=2"), ("Content-Length", "2")]
        );
        assert_eq!((head.status, head.version, &head.reason[..]), (200, Version::HTTP_11, &b"Totally Fine"[..]));
        assert_eq!(head.len, raw.len() - 2);
    }

    #[test]
    fn skips_interim_responses() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.0 204 No Content\r\nA: b\r\n\r\n";
        let head = RawHead::parse(raw).unwrap().unwrap();
        assert_eq!((fields(&head), head.status, head.version, head.len), (vec![("A", "b")], 204, Version::HTTP_10, raw.len()));
    }

    #[test]
    fn unfolds_obsolete_line_folding() {
        let raw = b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n  b\r\n\tc\r\nY: z\r\n\r\n";
        let head = RawHead::parse(raw).unwrap().unwrap();
        assert_eq!(fields(&head), [("X-Folded", "a b c"), ("Y", "z")]);
    }

    #[test]
    fn many_fields_and_incomplete_heads() {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..500 {
            raw.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        assert_eq!(RawHead::parse(&raw), Ok(None), "no end of head yet");
        raw.extend_from_slice(b"\r\n");
        assert_eq!(RawHead::parse(&raw).unwrap().unwrap().fields.len(), 500);
    }

    #[test]
    fn heads_that_do_not_parse_or_are_too_large() {
        for raw in [&b"HTTP/1.1 2x0 OK\r\n\r\n"[..], b"HTTP/1.1 200 OK\r\nBad Name: v\r\n\r\n", b"SSH-2.0-OpenSSH\r\n\r\n"] {
            assert!(matches!(RawHead::parse(raw), Err(HttpError::RemoteProtocol(_))), "{:?}", String::from_utf8_lossy(raw));
        }
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        raw.resize(MAX_HEAD_SIZE + 10, b'x');
        assert!(matches!(RawHead::parse(&raw), Err(HttpError::RemoteProtocol(_))));
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
