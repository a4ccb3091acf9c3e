//! HTTP/1.1's wire format, without I/O: a request head as it is written, and a response body's
//! framing (Content-Length, chunked coding, or the connection's close) taken off the bytes read.

use super::super::RequestParts;
use bytes::Bytes;
use std::cmp::Ordering;
use std::ops::Range;

/// The longest chunk-size or trailer line accepted: real ones are a few bytes (a size and
/// perhaps an extension); a longer one is a server that does not speak chunked coding.
const MAX_LINE: usize = 8 * 1024;

/// A request's head and body as they go on the wire, in at most three slices (head, body, the
/// chunked coding's end), with the body's framing as httpx's own transport (h11) would write it.
pub(crate) struct Encoded {
    pub head: Vec<u8>,
    pub body: Bytes,
    pub tail: &'static [u8],
}

/// Encodes a request. `target` is what goes on the request line (origin or absolute form),
/// `extra` a field the connection adds (a proxy's credentials). The caller's fields go out in
/// its order. The body is framed by the caller's `Content-Length` or `Transfer-Encoding:
/// chunked` when it gave one (a chunked body is in memory: it goes as one chunk), else by a
/// `Content-Length` added when there is a body (an empty body goes without one, as hyper
/// wrote it). Framing fields h11 refuses are refused with its words, before any byte is sent
/// (h11 finds a body that does not match its length only as it sends it).
pub(crate) fn encode(request: &RequestParts, target: &[u8], extra: Option<(&str, &[u8])>) -> Result<Encoded, String> {
    let length = request.body.len();
    let (declared, chunked) = framing(request)?;
    if let (Some(declared), false) = (declared, chunked) {
        match (length as u64).cmp(&declared) {
            Ordering::Less => return Err("Too little data for declared Content-Length".into()),
            Ordering::Greater => return Err("Too much data for declared Content-Length".into()),
            Ordering::Equal => {}
        }
    }
    let size = request.method.as_str().len()
        + target.len()
        + request.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum::<usize>()
        + 16;
    let mut head = Vec::with_capacity(size + 32);
    head.extend_from_slice(request.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target);
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &request.headers {
        // With a Transfer-Encoding the Content-Length does not count (RFC 9112 §6.3): not sent.
        if chunked && name == http::header::CONTENT_LENGTH {
            continue;
        }
        field(&mut head, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some((name, value)) = extra {
        field(&mut head, name.as_bytes(), value);
    }
    if !chunked && declared.is_none() && length > 0 {
        field(&mut head, b"content-length", length.to_string().as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let tail: &'static [u8] = match chunked {
        true if length > 0 => {
            head.extend_from_slice(format!("{length:x}\r\n").as_bytes());
            b"\r\n0\r\n\r\n"
        }
        true => b"0\r\n\r\n",
        false => b"",
    };
    Ok(Encoded { head, body: request.body.clone(), tail })
}

/// The request's own framing, checked as h11 checks it: the `Content-Length` it declares (one
/// value, however many fields repeat it) and whether it is chunked (`Transfer-Encoding:
/// chunked`, the one coding h11 writes).
fn framing(request: &RequestParts) -> Result<(Option<u64>, bool), String> {
    let (mut declared, mut chunked) = (None, false);
    for (name, value) in &request.headers {
        if name == http::header::CONTENT_LENGTH {
            let mut lengths = value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii);
            let first = lengths.next().unwrap_or_default();
            if lengths.any(|other| other != first) {
                return Err("conflicting Content-Length headers".into());
            }
            // (h11 takes at most 20 digits.)
            if first.is_empty() || first.len() > 20 || !first.iter().all(u8::is_ascii_digit) {
                return Err("bad Content-Length".into());
            }
            let Some(length) = std::str::from_utf8(first).ok().and_then(|d| d.parse::<u64>().ok()) else {
                return Err("bad Content-Length".into());
            };
            if declared.is_some_and(|seen| seen != length) {
                return Err("conflicting Content-Length headers".into());
            }
            declared = Some(length);
        } else if name == http::header::TRANSFER_ENCODING {
            if chunked {
                return Err("multiple Transfer-Encoding headers".into());
            }
            if !value.as_bytes().eq_ignore_ascii_case(b"chunked") {
                return Err("Only Transfer-Encoding: chunked is supported".into());
            }
            chunked = true;
        }
    }
    Ok((declared, chunked))
}

/// The request asks that its connection close after the response (`Connection: close`).
pub(crate) fn asks_to_close(request: &RequestParts) -> bool {
    request
        .headers
        .iter()
        .filter(|(name, _)| name == http::header::CONNECTION)
        .flat_map(|(_, v)| v.as_bytes().split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

fn field(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// A response body's decoder: how the body is framed, and how far it has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoder {
    /// No body: a response to HEAD, a 204 or a 304.
    Empty,
    /// `Content-Length`: this many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// Neither: the body ends when the server closes the connection.
    UntilClose,
}

/// Where a chunked body's reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Within a chunk's data: this many bytes are still to come.
    Data(u64),
    /// After a chunk's data, at its line break.
    DataEnd,
    /// After the last chunk, at the trailer fields (skipped, as httpx does) and the empty line.
    Trailers,
}

/// One step of a body's reading over the bytes at hand.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Body data (a range of the input); `used` bytes of the input are taken.
    Data { data: Range<usize>, used: usize },
    /// Decoder only: `used` bytes taken, no data.
    Framing { used: usize },
    /// The body ended after `used` bytes of the input.
    End { used: usize },
    /// Nothing can be taken before more bytes arrive.
    More,
}

impl Decoder {
    /// The decoder of a response to `method` with this status and head: no body for a HEAD
    /// request, a 1xx, 204 or 304 (RFC 9112 §6.3), else as the head frames it.
    pub(crate) fn of(method: &http::Method, status: u16, chunked: bool, content_length: Option<u64>) -> Decoder {
        if method == http::Method::HEAD || status < 200 || status == 204 || status == 304 {
            Decoder::Empty
        } else if chunked {
            Decoder::Chunked(Chunk::Size)
        } else if let Some(length) = content_length {
            Decoder::Length(length)
        } else {
            Decoder::UntilClose
        }
    }

    /// The next step over `input` (bytes read and not yet taken).
    pub(crate) fn step(&mut self, input: &[u8]) -> Result<Step, String> {
        match self {
            Decoder::Empty | Decoder::Length(0) => Ok(Step::End { used: 0 }),
            _ if input.is_empty() => Ok(Step::More),
            Decoder::Length(left) => {
                let n = (*left).min(input.len() as u64);
                *left -= n;
                Ok(Step::Data { data: 0..n as usize, used: n as usize })
            }
            Decoder::UntilClose => Ok(Step::Data { data: 0..input.len(), used: input.len() }),
            Decoder::Chunked(chunk) => chunk.step(input),
        }
    }

    /// What the end of the connection's stream means here: the end of the body (true), or a
    /// body cut short (false).
    pub(crate) fn ends_at_close(&self) -> bool {
        matches!(self, Decoder::UntilClose | Decoder::Empty | Decoder::Length(0))
    }
}

impl Chunk {
    fn step(&mut self, input: &[u8]) -> Result<Step, String> {
        match *self {
            Chunk::Size => {
                let Some(line) = line(input)? else { return Ok(Step::More) };
                let text = trim_line(&input[..line]);
                // The size, then perhaps whitespace and extensions (`;name=value`), ignored.
                let digits = text.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                let rest = text[digits..].trim_ascii_start();
                if digits == 0 || digits > 16 || !(rest.is_empty() || rest[0] == b';') {
                    return Err("invalid chunk size line".into());
                }
                let size = u64::from_str_radix(std::str::from_utf8(&text[..digits]).expect("hex digits"), 16)
                    .map_err(|_| "invalid chunk size line".to_string())?;
                *self = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
                Ok(Step::Framing { used: line })
            }
            Chunk::Data(left) => {
                let n = left.min(input.len() as u64);
                *self = if n == left { Chunk::DataEnd } else { Chunk::Data(left - n) };
                Ok(Step::Data { data: 0..n as usize, used: n as usize })
            }
            Chunk::DataEnd => match input {
                [b'\r', b'\n', ..] | [b'\n', ..] => {
                    *self = Chunk::Size;
                    Ok(Step::Framing { used: if input[0] == b'\r' { 2 } else { 1 } })
                }
                [b'\r'] => Ok(Step::More),
                _ => Err("a chunk's data is not followed by a line break".into()),
            },
            Chunk::Trailers => {
                let Some(line) = line(input)? else { return Ok(Step::More) };
                match trim_line(&input[..line]).is_empty() {
                    true => Ok(Step::End { used: line }),
                    false => Ok(Step::Framing { used: line }),
                }
            }
        }
    }
}

/// The length of the line at the start of `input`, its line break included; `None` until it
/// has arrived.
fn line(input: &[u8]) -> Result<Option<usize>, String> {
    match input.iter().take(MAX_LINE).position(|&b| b == b'\n') {
        Some(end) => Ok(Some(end + 1)),
        None if input.len() >= MAX_LINE => Err("a chunk size or trailer line is too long".into()),
        None => Ok(None),
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.trim_ascii_end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Timeouts;
    use crate::pool::Endpoint;
    use http::Method;

    /// The body data a framing takes from `input` fed in pieces of `piece` bytes, as a reader
    /// keeps what it could not take yet; and whether the body ended.
    fn read(mut decoder: Decoder, input: &[u8], piece: usize) -> Result<(Vec<u8>, bool, usize), String> {
        let (mut kept, mut data, mut fed) = (Vec::new(), Vec::new(), 0);
        loop {
            match decoder.step(&kept)? {
                Step::Data { data: range, used } => {
                    data.extend_from_slice(&kept[range]);
                    kept.drain(..used);
                }
                Step::Framing { used } => drop(kept.drain(..used)),
                Step::End { used } => {
                    kept.drain(..used);
                    return Ok((data, true, kept.len() + input.len() - fed));
                }
                Step::More if fed == input.len() => return Ok((data, false, kept.len())),
                Step::More => {
                    let next = (fed + piece).min(input.len());
                    kept.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_in_any_pieces() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
        for piece in [1, 2, 3, 7, wire.len()] {
            let (data, ended, left) = read(Decoder::Chunked(Chunk::Size), wire, piece).unwrap();
            assert_eq!((&data[..], ended, left), (&b"hello, world"[..], true, 0), "pieces of {piece}");
        }
        // Bare line feeds, and upper-case hex digits.
        let (data, ended, _) = read(Decoder::Chunked(Chunk::Size), b"A\nabcdefghij\n0\n\n", 4).unwrap();
        assert_eq!((&data[..], ended), (&b"abcdefghij"[..], true));
    }

    #[test]
    fn bytes_beyond_a_body_are_left_over() {
        let (_, ended, left) = read(Decoder::Chunked(Chunk::Size), b"1\r\na\r\n0\r\n\r\nHTTP/1.1", 100).unwrap();
        assert_eq!((ended, left), (true, 8));
        let (data, ended, left) = read(Decoder::Length(3), b"abcdef", 100).unwrap();
        assert_eq!((&data[..], ended, left), (&b"abc"[..], true, 3));
    }

    #[test]
    fn a_chunked_body_cut_short_has_not_ended() {
        let (data, ended, _) = read(Decoder::Chunked(Chunk::Size), b"5\r\nhel", 2).unwrap();
        assert_eq!((&data[..], ended), (&b"hel"[..], false));
    }

    #[test]
    fn bad_chunked_framing_is_an_error() {
        for wire in [&b"zz\r\n"[..], b"\r\n", b"5\r\nhelloXX", b"11111111111111111\r\n", b"5 x\r\nhello\r\n"] {
            assert!(read(Decoder::Chunked(Chunk::Size), wire, 100).is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
        assert!(read(Decoder::Chunked(Chunk::Size), &vec![b'1'; MAX_LINE + 1], 1000).is_err(), "an endless size line");
    }

    #[test]
    fn what_ends_at_close() {
        assert!(Decoder::UntilClose.ends_at_close() && Decoder::Empty.ends_at_close());
        assert!(!Decoder::Length(1).ends_at_close() && !Decoder::Chunked(Chunk::Trailers).ends_at_close());
    }

    fn request(method: Method, headers: &[(&'static str, &'static str)], body: &'static [u8]) -> RequestParts {
        RequestParts {
            method,
            endpoint: Endpoint::parse("http://127.0.0.1:1").unwrap(),
            target: Bytes::from_static(b"/p?q"),
            headers: headers
                .iter()
                .map(|(n, v)| (http::HeaderName::from_static(n), http::HeaderValue::from_static(v)))
                .collect(),
            body: Bytes::from_static(body),
            timeouts: Timeouts::default(),
        }
    }

    fn wire(e: &Encoded) -> Vec<u8> {
        [&e.head[..], &e.body, e.tail].concat()
    }

    #[test]
    fn requests_as_h11_writes_them() {
        let get = encode(&request(Method::GET, &[("host", "a"), ("accept", "*/*")], b""), b"/p?q", None).unwrap();
        assert_eq!(wire(&get), b"GET /p?q HTTP/1.1\r\nhost: a\r\naccept: */*\r\n\r\n");
        let post = encode(&request(Method::POST, &[("host", "a")], b"{}"), b"/p", Some(("proxy-authorization", b"Basic x"))).unwrap();
        assert_eq!(wire(&post), b"POST /p HTTP/1.1\r\nhost: a\r\nproxy-authorization: Basic x\r\ncontent-length: 2\r\n\r\n{}");
        let declared = encode(&request(Method::PUT, &[("content-length", "2")], b"{}"), b"/", None).unwrap();
        assert_eq!(wire(&declared), b"PUT / HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}");
        let chunked = encode(&request(Method::POST, &[("transfer-encoding", "chunked")], b"hello, world"), b"/", None).unwrap();
        assert_eq!(wire(&chunked), b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nc\r\nhello, world\r\n0\r\n\r\n");
        let empty = encode(&request(Method::POST, &[("transfer-encoding", "chunked")], b""), b"/", None).unwrap();
        assert_eq!(wire(&empty), b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n");
    }

    #[test]
    fn framing_h11_refuses_is_refused_in_its_words() {
        let refused = |headers: &[(&'static str, &'static str)]| encode(&request(Method::POST, headers, b"{}"), b"/", None).err();
        let words = |w: &str| Some(w.to_string());
        assert_eq!(refused(&[("content-length", "3")]), words("Too little data for declared Content-Length"));
        assert_eq!(refused(&[("content-length", "1")]), words("Too much data for declared Content-Length"));
        assert_eq!(refused(&[("content-length", "2, 3")]), words("conflicting Content-Length headers"));
        assert_eq!(refused(&[("content-length", "2"), ("content-length", "3")]), words("conflicting Content-Length headers"));
        assert_eq!(refused(&[("content-length", "two")]), words("bad Content-Length"));
        assert_eq!(refused(&[("content-length", "+2")]), words("bad Content-Length"));
        assert_eq!(refused(&[("transfer-encoding", "gzip")]), words("Only Transfer-Encoding: chunked is supported"));
        assert_eq!(refused(&[("transfer-encoding", "gzip, chunked")]), words("Only Transfer-Encoding: chunked is supported"));
        let twice = [("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")];
        assert_eq!(refused(&twice), words("multiple Transfer-Encoding headers"));
        assert_eq!(refused(&[("content-length", "2, 2"), ("content-length", "2")]), None);
        assert_eq!(refused(&[("transfer-encoding", "Chunked")]), None);
    }
}
