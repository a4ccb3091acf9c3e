//! The pool core on its own, by concern: limits and reuse, expiry, waiters, ids; the helpers they
//! share (endpoints, pools, a manual clock, connections whose health or life a test watches).

mod expiry;
mod ids;
mod limits;
mod waiters;

use super::*;
use super::near::NEAR_ENDPOINTS;
use std::thread;
use uuid::Uuid;
use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::future::Future;
use std::sync::Barrier;

fn ep(s: &str) -> Endpoint {
    Endpoint::parse(s).unwrap()
}

fn settings(total: usize, per_endpoint: usize) -> Settings {
    Settings {
        max_connections: total,
        max_connections_per_endpoint: per_endpoint,
        reaper_interval: None,
        ..Settings::default()
    }
}

fn pool(total: usize, per_endpoint: usize) -> Pool<()> {
    Pool::new(settings(total, per_endpoint)).unwrap()
}

fn manual(s: Settings) -> (Pool<()>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    (Pool::with_clock(s, clock.clone()).unwrap(), clock)
}

fn assert_consistent<C: Connection>(p: &Pool<C>) {
    let s = p.stats();
    assert_eq!(s.total(), s.active + s.idle);
    let sum: usize = s.endpoints.iter().map(|(_, c)| c.total()).sum();
    assert_eq!(sum, s.total());
    assert_eq!(p.shared.open.load(SeqCst), s.total(), "open counter drifted");
}

/// A connection whose health the test controls.
struct Flag(Arc<AtomicBool>);
impl Connection for Flag {
    type PerEndpoint = ();

    fn is_open(&self) -> bool {
        self.0.load(SeqCst)
    }
}

/// A connection that counts how many are alive (not yet dropped, that is closed), per endpoint
/// and overall, and checks the limits when it opens.
struct Live {
    alive: [Arc<AtomicUsize>; 2],
    open: AtomicBool,
}

impl Live {
    fn open(endpoint: &Arc<AtomicUsize>, overall: &Arc<AtomicUsize>, limits: (usize, usize)) -> Live {
        let here = endpoint.fetch_add(1, SeqCst) + 1;
        let all = overall.fetch_add(1, SeqCst) + 1;
        assert!(here <= limits.0, "{here} connections alive to one endpoint with a limit of {}", limits.0);
        assert!(all <= limits.1, "{all} connections alive with a limit of {}", limits.1);
        Live { alive: [endpoint.clone(), overall.clone()], open: AtomicBool::new(true) }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        for a in &self.alive {
            a.fetch_sub(1, SeqCst);
        }
    }
}

impl Connection for Live {
    type PerEndpoint = ();

    fn is_open(&self) -> bool {
        self.open.load(SeqCst)
    }
}
