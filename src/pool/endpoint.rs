//! Endpoints: the normalized origin a connection belongs to.
//!
//! Only scheme, host and port survive parsing. Userinfo, path, query and fragment are dropped
//! before anything is stored, and error messages never repeat the input, because API keys
//! travel in exactly those parts.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Longest endpoint string accepted; real base URLs are far shorter.
pub const MAX_ENDPOINT_LEN: usize = 8192;
const MAX_HOST_LEN: usize = 253;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A pool key: `scheme://host:port`, plus the id of the TLS settings its connections were made
/// with, so that connections with different verification or client certificates never mix, and
/// the proxy they go through, if any.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    scheme: Scheme,
    /// Lowercase name, dotted IPv4, or IPv6 in brackets (`[::1]`).
    host: Arc<str>,
    port: u16,
    tls_profile: u32,
    via: Option<Via>,
}

/// A proxy connections go through: its number (which also stands for its credentials, kept
/// by the layer above) and its origin, as keys show it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Via {
    pub id: u32,
    pub origin: Arc<str>,
}

/// Why an endpoint string was refused. The messages name the problem, never the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    Empty,
    TooLong(usize),
    ControlCharacter,
    MissingScheme,
    UnsupportedScheme(String),
    EmptyHost,
    InvalidHost,
    NonAsciiHost,
    InvalidPort,
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointError::Empty => f.write_str("endpoint is empty"),
            EndpointError::TooLong(n) => write!(
                f,
                "endpoint is too long ({n} characters; at most {MAX_ENDPOINT_LEN})"
            ),
            EndpointError::ControlCharacter => {
                f.write_str("endpoint contains a control character (CR, LF, NUL, ...)")
            }
            EndpointError::MissingScheme => {
                f.write_str("endpoint has no scheme: it must start with http:// or https://")
            }
            EndpointError::UnsupportedScheme(s) => write!(
                f,
                "endpoint scheme '{s}' is not supported: use http:// or https://"
            ),
            EndpointError::EmptyHost => f.write_str("endpoint has an empty host"),
            EndpointError::InvalidHost => f.write_str(
                "endpoint host is not a valid name, IPv4 address or bracketed IPv6 address",
            ),
            EndpointError::NonAsciiHost => f.write_str(
                "endpoint host is not ASCII: write internationalized names in punycode (xn--...)",
            ),
            EndpointError::InvalidPort => {
                f.write_str("endpoint port is not a number between 1 and 65535")
            }
        }
    }
}

impl std::error::Error for EndpointError {}

impl Endpoint {
    /// Parses a URL or origin (`https://user:key@api.openai.com/v1?x=y`) into its origin.
    pub fn parse(input: &str) -> Result<Endpoint, EndpointError> {
        if input.is_empty() {
            return Err(EndpointError::Empty);
        }
        if input.len() > MAX_ENDPOINT_LEN {
            return Err(EndpointError::TooLong(input.chars().count()));
        }
        if input.chars().any(char::is_control) {
            return Err(EndpointError::ControlCharacter);
        }
        let (scheme_str, rest) = input.split_once("://").ok_or(EndpointError::MissingScheme)?;
        let scheme = if scheme_str.eq_ignore_ascii_case("https") {
            Scheme::Https
        } else if scheme_str.eq_ignore_ascii_case("http") {
            Scheme::Http
        } else if scheme_str.is_empty() {
            return Err(EndpointError::MissingScheme);
        } else if scheme_str.len() <= 16
            && scheme_str
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Err(EndpointError::UnsupportedScheme(scheme_str.to_ascii_lowercase()));
        } else {
            return Err(EndpointError::MissingScheme);
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        // Userinfo ends at the last '@' of the authority; it is dropped here.
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let (host, port) = split_host_port(host_port)?;
        let port = match port {
            None => scheme.default_port(),
            Some(p) => parse_port(p)?,
        };
        Ok(Endpoint { scheme, host: host.into(), port, tls_profile: 0, via: None })
    }

    /// An origin from its parts, as an HTTP client has them (an IPv6 host without brackets).
    pub fn from_parts(scheme: Scheme, host: &str, port: Option<u16>) -> Result<Endpoint, EndpointError> {
        if host.chars().any(char::is_control) {
            return Err(EndpointError::ControlCharacter);
        }
        let host = if host.contains(':') && !host.starts_with('[') {
            let addr: Ipv6Addr = host.parse().map_err(|_| EndpointError::InvalidHost)?;
            format!("[{addr}]")
        } else {
            split_host_port(host)?.0
        };
        let port = match port {
            Some(0) => return Err(EndpointError::InvalidPort),
            Some(p) => p,
            None => scheme.default_port(),
        };
        Ok(Endpoint { scheme, host: host.into(), port, tls_profile: 0, via: None })
    }

    /// True if `input` is only `scheme://host[:port]` (with at most a trailing `/`): nothing in
    /// it would be dropped by [`Endpoint::parse`], so it holds no userinfo, path or query.
    pub fn is_bare_origin(input: &str) -> bool {
        match input.split_once("://") {
            Some((_, rest)) => {
                let rest = rest.strip_suffix('/').unwrap_or(rest);
                !rest.contains(['/', '?', '#', '@'])
            }
            None => false,
        }
    }

    /// The same origin under another TLS settings id (0 is the default settings).
    pub fn with_tls_profile(mut self, profile: u32) -> Endpoint {
        self.tls_profile = profile;
        self
    }

    /// The same origin reached through a proxy.
    pub fn with_proxy(mut self, via: Via) -> Endpoint {
        self.via = Some(via);
        self
    }

    /// The proxy this key's connections go through.
    pub fn via(&self) -> Option<&Via> {
        self.via.as_ref()
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host as it goes into a URL: IPv6 addresses keep their brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host as it goes to DNS or a TLS server name: IPv6 without brackets.
    pub fn host_bare(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// `https://api.openai.com:443`, with ` via http://proxy:3128` through a proxy (its origin only)
/// and ` (tls settings #N)` when not the default settings.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)?;
        if let Some(via) = &self.via {
            write!(f, " via {}", via.origin)?;
        }
        if self.tls_profile != 0 {
            write!(f, " (tls settings #{})", self.tls_profile)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

fn split_host_port(host_port: &str) -> Result<(String, Option<&str>), EndpointError> {
    if host_port.is_empty() {
        return Err(EndpointError::EmptyHost);
    }
    if let Some(after_bracket) = host_port.strip_prefix('[') {
        let (inside, tail) = after_bracket.split_once(']').ok_or(EndpointError::InvalidHost)?;
        let addr: Ipv6Addr = inside.parse().map_err(|_| EndpointError::InvalidHost)?;
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':').ok_or(EndpointError::InvalidHost)?),
        };
        return Ok((format!("[{addr}]"), port.filter(|p| !p.is_empty())));
    }
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => (h, Some(p).filter(|p| !p.is_empty())),
        None => (host_port, None),
    };
    if host.is_empty() {
        return Err(EndpointError::EmptyHost);
    }
    if !host.is_ascii() {
        return Err(EndpointError::NonAsciiHost);
    }
    if host.len() > MAX_HOST_LEN
        || !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        || host.starts_with('.')
        || host.contains("..")
    {
        return Err(EndpointError::InvalidHost);
    }
    let host = host.to_ascii_lowercase();
    // A name made only of digits and dots must be a real IPv4 address (not "999.1").
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') && host.parse::<Ipv4Addr>().is_err() {
        return Err(EndpointError::InvalidHost);
    }
    Ok((host, port))
}

fn parse_port(p: &str) -> Result<u16, EndpointError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EndpointError::InvalidPort);
    }
    match p.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(EndpointError::InvalidPort),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> String {
        Endpoint::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalizes_origins() {
        assert_eq!(origin("https://api.openai.com"), "https://api.openai.com:443");
        assert_eq!(origin("HTTP://API.Example.COM/"), "http://api.example.com:80");
        assert_eq!(origin("https://api.openai.com:443/v1"), "https://api.openai.com:443");
        assert_eq!(origin("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(origin("http://[::1]:9000/x"), "http://[::1]:9000");
        assert_eq!(origin("https://[2001:DB8:0:0::1]"), "https://[2001:db8::1]:443");
        assert_eq!(origin("http://host:/p"), "http://host:80");
    }

    #[test]
    fn drops_secrets() {
        let e = Endpoint::parse("https://user:key@api.openai.com/v1?key=SECRET#frag").unwrap();
        assert_eq!(e.to_string(), "https://api.openai.com:443");
        assert!(!format!("{e:?}").contains("SECRET"));
        let e = Endpoint::parse("https://a@b:c@host.example/path@x").unwrap();
        assert_eq!(e.to_string(), "https://host.example:443");
    }

    #[test]
    fn rejects_bad_input_without_echoing_it() {
        use EndpointError::*;
        let cases = [
            ("", Empty),
            ("api.openai.com", MissingScheme),
            ("://host", MissingScheme),
            ("ftp://host", UnsupportedScheme("ftp".into())),
            ("https://", EmptyHost),
            ("https://user:SECRET@/v1", EmptyHost),
            ("https://:443", EmptyHost),
            ("https://ho st", InvalidHost),
            ("https://bücher.de", NonAsciiHost),
            ("https://host:0", InvalidPort),
            ("https://host:65536", InvalidPort),
            ("https://host:12ab", InvalidPort),
            ("https://[::1", InvalidHost),
            ("https://[zz::1]", InvalidHost),
            ("https://999.1.1.1", InvalidHost),
            ("https://a..b", InvalidHost),
            ("https://host\r\nX: y", ControlCharacter),
        ];
        for (input, want) in cases {
            let err = Endpoint::parse(input).unwrap_err();
            assert_eq!(err, want, "{input:?}");
            assert!(!err.to_string().contains("SECRET"));
        }
        let long = format!("https://h/{}", "a".repeat(MAX_ENDPOINT_LEN));
        assert!(matches!(Endpoint::parse(&long), Err(TooLong(_))));
    }

    #[test]
    fn from_parts() {
        let e = Endpoint::from_parts(Scheme::Https, "API.openai.com", None).unwrap();
        assert_eq!(e.to_string(), "https://api.openai.com:443");
        let e = Endpoint::from_parts(Scheme::Http, "::1", Some(8080)).unwrap();
        assert_eq!((e.to_string().as_str(), e.host_bare()), ("http://[::1]:8080", "::1"));
        assert_eq!(Endpoint::from_parts(Scheme::Http, "", None), Err(EndpointError::EmptyHost));
        assert_eq!(Endpoint::from_parts(Scheme::Http, "a:b", None), Err(EndpointError::InvalidHost));
    }

    #[test]
    fn bare_origins() {
        assert!(Endpoint::is_bare_origin("https://api.openai.com"));
        assert!(Endpoint::is_bare_origin("http://[::1]:80/"));
        assert!(!Endpoint::is_bare_origin("https://api.openai.com/v1"));
        assert!(!Endpoint::is_bare_origin("https://u:k@api.openai.com"));
        assert!(!Endpoint::is_bare_origin("https://api.openai.com?key=x"));
        assert!(!Endpoint::is_bare_origin("https://api.openai.com#x"));
    }

    #[test]
    fn tls_profile_is_part_of_the_key() {
        let a = Endpoint::parse("https://h").unwrap();
        let b = a.clone().with_tls_profile(2);
        assert_ne!(a, b);
        assert_eq!(b.to_string(), "https://h:443 (tls settings #2)");
        let via = Via { id: 1, origin: "http://proxy:3128".into() };
        let c = b.clone().with_proxy(via);
        assert_ne!(b, c);
        assert_eq!(c.to_string(), "https://h:443 via http://proxy:3128 (tls settings #2)");
    }
}
