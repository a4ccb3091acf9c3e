//! Name lookups: answers kept for a time-to-live (one lookup per host, not one per new
//! connection). The connect over the answers is `dial`.

use super::HttpError;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};


/// How long an answer is kept (LiteLLM's aiohttp transport keeps them 300 s by default), in
/// nanoseconds; 0: not kept.
static TTL_NANOS: AtomicU64 = AtomicU64::new(300_000_000_000);
/// Lookups made (answers not found in the cache), for tests and stats.
static LOOKUPS: AtomicU64 = AtomicU64::new(0);

pub fn set_ttl(ttl: Option<Duration>) {
    TTL_NANOS.store(ttl.map_or(0, super::clock::nanos), Relaxed);
}

pub fn ttl() -> Option<Duration> {
    match TTL_NANOS.load(Relaxed) {
        0 => None,
        n => Some(Duration::from_nanos(n)),
    }
}

pub fn lookups() -> u64 {
    LOOKUPS.load(Relaxed)
}

type Answers = Arc<[SocketAddr]>;

/// One host's answer: being looked up (everyone asking meanwhile waits for that one lookup, so a
/// burst of new connections makes one, not one each), or known; fresh for the TTL from `since`,
/// when it was asked for.
struct Entry {
    since: Instant,
    answer: Arc<tokio::sync::OnceCell<Result<Answers, HttpError>>>,
}

type Cache = Mutex<HashMap<(String, u16), Entry>>;

/// The cache of one fork generation: a child never takes a lock its parent's threads may have
/// held at the fork (see runtime.rs).
fn cache() -> &'static Cache {
    const DEPTH: usize = 64;
    static CACHES: [OnceLock<Cache>; DEPTH] = [const { OnceLock::new() }; DEPTH];
    CACHES[super::runtime::fork_generation().min(DEPTH - 1)].get_or_init(Mutex::default)
}

/// The addresses of `host`, from the cache while fresh, else looked up (getaddrinfo, on tokio's
/// blocking threads: never on the I/O thread). Failures are not kept.
pub async fn resolve(host: &str, port: u16) -> Result<Answers, HttpError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Arc::from([SocketAddr::new(ip, port)]));
    }
    let Some(ttl) = ttl() else { return lookup(host, port).await };
    let key = (host.to_ascii_lowercase(), port);
    let answer = {
        let mut cache = cache().lock();
        let now = Instant::now();
        let usable = |e: &Entry| match e.answer.get() {
            None => true,
            Some(Ok(_)) => now < e.since + ttl,
            Some(Err(_)) => false,
        };
        if !cache.get(&key).is_some_and(usable) {
            cache.retain(|_, e| e.answer.get().is_none() || usable(e));
            cache.insert(key.clone(), Entry { since: now, answer: Arc::default() });
        }
        cache[&key].answer.clone()
    };
    answer.get_or_init(|| lookup(host, port)).await.clone()
}

async fn lookup(host: &str, port: u16) -> Result<Answers, HttpError> {
    LOOKUPS.fetch_add(1, Relaxed);
    let answers: Answers = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| HttpError::Connect(format!("name resolution failed: {e}")))?
        .collect();
    if answers.is_empty() {
        return Err(HttpError::Connect("name resolution gave no address".into()));
    }
    Ok(answers)
}
