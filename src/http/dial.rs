//! The TCP connect over a name's answers: each address of a dual-stack host tried in turn,
//! staggered (happy eyeballs, RFC 8305).

use super::error::{python_os_message, HttpError};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};

/// How long a started connect attempt gets before the next address is tried alongside it
/// (RFC 8305's recommended "Connection Attempt Delay").
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Connects to the first address that answers. Families alternate (the first answer's family
/// first), and while an attempt is pending the next one starts after [`ATTEMPT_DELAY`], or at
/// once when it fails. With a local address only its family is tried (httpx's
/// `local_address="0.0.0.0"` is how LiteLLM's `force_ipv4` asks for IPv4).
pub async fn connect(answers: &[SocketAddr], local: Option<IpAddr>) -> Result<TcpStream, HttpError> {
    let order = interleave(answers, local);
    if order.is_empty() {
        return Err(HttpError::Connect("name resolution gave no address of the local address's family".into()));
    }
    let mut attempts = tokio::task::JoinSet::new();
    let mut next = 0;
    let mut last_error = None;
    loop {
        if next < order.len() {
            attempts.spawn(attempt(order[next], local));
            next += 1;
        }
        let wait_for_next = async {
            match next < order.len() {
                true => tokio::time::sleep(ATTEMPT_DELAY).await,
                false => std::future::pending().await,
            }
        };
        tokio::select! {
            done = attempts.join_next() => match done {
                Some(Ok(Ok(stream))) => return Ok(stream),
                Some(Ok(Err(e))) => last_error = Some(e),
                // Never aborted while we wait: a panicked attempt counts as a failed one.
                Some(Err(_)) | None => {}
            },
            _ = wait_for_next => {}
        }
        if attempts.is_empty() && next >= order.len() {
            let message = last_error.map_or_else(|| "no address could be tried".to_string(), |e| python_os_message(&e));
            return Err(HttpError::Connect(message));
        }
    }
}

async fn attempt(addr: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(local) = local {
        socket.bind(SocketAddr::new(local, 0))?;
    }
    socket.connect(addr).await
}

/// The answers in the order to try them: families alternating, starting with the first
/// answer's (the system's preference); with a local address, its family only.
fn interleave(answers: &[SocketAddr], local: Option<IpAddr>) -> Vec<SocketAddr> {
    let usable: Vec<SocketAddr> = answers.iter().copied().filter(|a| local.is_none_or(|l| l.is_ipv4() == a.is_ipv4())).collect();
    let Some(first_is_ipv4) = usable.first().map(SocketAddr::is_ipv4) else { return usable };
    let (preferred, other): (Vec<SocketAddr>, Vec<SocketAddr>) = usable.into_iter().partition(|a| a.is_ipv4() == first_is_ipv4);
    let mut order = Vec::with_capacity(preferred.len() + other.len());
    let (mut p, mut o) = (preferred.into_iter(), other.into_iter());
    loop {
        match (p.next(), o.next()) {
            (None, None) => return order,
            (a, b) => order.extend(a.into_iter().chain(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn families_alternate_from_the_first_answers() {
        let answers = [addr("[::1]:80"), addr("[::2]:80"), addr("1.1.1.1:80"), addr("[::3]:80"), addr("2.2.2.2:80")];
        let order = interleave(&answers, None);
        assert_eq!(order, vec![addr("[::1]:80"), addr("1.1.1.1:80"), addr("[::2]:80"), addr("2.2.2.2:80"), addr("[::3]:80")]);
        let ipv4 = interleave(&answers, Some("0.0.0.0".parse().unwrap()));
        assert_eq!(ipv4, vec![addr("1.1.1.1:80"), addr("2.2.2.2:80")]);
    }

    #[tokio::test]
    async fn an_address_that_does_not_answer_is_passed_over() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good = listener.local_addr().unwrap();
        // A refused port first, then an address that never answers (TEST-NET-1), then the server.
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let started = Instant::now();
        let stream = connect(&[refused, addr("192.0.2.1:9"), good], None).await.unwrap();
        assert_eq!(stream.peer_addr().unwrap(), good);
        assert!(started.elapsed() < Duration::from_secs(5), "the silent address did not hold it up");
        let err = connect(&[refused], None).await.unwrap_err();
        assert!(matches!(err, HttpError::Connect(m) if m.contains("refused")));
    }
}
