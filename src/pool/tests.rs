//! The pool core on its own: limits, exact counts, stale ids, expiry, waiters, under many threads.

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

#[test]
fn reuses_the_most_recently_used_idle_connection() {
    let p = pool(10, 10);
    let e = ep("https://api.openai.com");
    let a = p.try_get(&p.endpoint_ref(&e)).unwrap();
    let b = p.try_get(&p.endpoint_ref(&e)).unwrap();
    let (ida, idb) = (a.id(), b.id());
    assert!(!a.is_reused());
    drop(a);
    drop(b);
    let c = p.try_get(&p.endpoint_ref(&e)).unwrap();
    assert_eq!(c.id().slot_key(), idb.slot_key());
    assert_ne!(c.id(), idb, "a new checkout gets a new id");
    assert!(c.is_reused());
    let d = p.try_get(&p.endpoint_ref(&e)).unwrap();
    assert_eq!(d.id().slot_key(), ida.slot_key());
    let s = p.stats();
    assert_eq!((s.active, s.idle, s.counters.created, s.counters.reused), (2, 0, 2, 2));
}

#[test]
fn per_endpoint_and_global_limits_hold() {
    let p = pool(3, 2);
    let (a, b) = (p.endpoint_ref(&ep("http://a")), p.endpoint_ref(&ep("http://b")));
    let a1 = p.try_get(&a).unwrap();
    let _a2 = p.try_get(&a).unwrap();
    assert_eq!(p.try_get(&a).unwrap_err(), AtLimit::Endpoint);
    let _b1 = p.try_get(&b).unwrap();
    assert_eq!(p.try_get(&b).unwrap_err(), AtLimit::Pool);
    drop(a1);
    // One idle connection of `a` is evicted to make room for `b`.
    let _b2 = p.try_get(&b).unwrap();
    let s = p.stats();
    assert_eq!((s.active, s.idle), (3, 0));
    assert_eq!(s.counters.closed_by(CloseReason::Evicted), 1);
    assert_consistent(&p);
}

#[test]
fn id_api_return_rules() {
    let p = pool(10, 10);
    let e = ep("http://h");
    let id = p.check_out_by_id(p.try_get(&p.endpoint_ref(&e)).unwrap());
    assert!(p.is_healthy(id));
    assert!(p.return_by_id(id));
    assert!(!p.return_by_id(id), "double return is ignored");
    assert!(p.is_healthy(id), "an idle connection is healthy");
    assert!(!p.return_by_id(ConnId::new()), "unknown id is ignored");
    let s = p.stats();
    assert_eq!((s.active, s.idle, s.counters.ignored_returns), (0, 1, 2));

    let id = p.check_out_by_id(p.try_get(&p.endpoint_ref(&e)).unwrap());
    assert!(p.remove_by_id(id));
    assert!(!p.return_by_id(id), "return after remove is ignored");
    assert!(!p.is_healthy(id));
    assert!(!p.remove_by_id(id));
    let s = p.stats();
    assert_eq!((s.active, s.idle), (0, 0));
    assert_eq!(s.counters.closed_by(CloseReason::Removed), 1);
    assert_consistent(&p);
}

#[test]
fn remove_closes_an_idle_connection_too() {
    let p = pool(10, 10);
    let id = p.check_out_by_id(p.try_get(&p.endpoint_ref(&ep("http://h"))).unwrap());
    p.return_by_id(id);
    assert!(p.remove_by_id(id));
    assert_eq!(p.stats().total(), 0);
}

#[test]
fn idle_timeout_and_max_lifetime_with_a_manual_clock() {
    let (p, clock) = manual(Settings {
        idle_timeout: Some(Duration::from_secs(10)),
        max_lifetime: Some(Duration::from_secs(60)),
        ..settings(10, 10)
    });
    let e = ep("http://h");
    let id = p.check_out_by_id(p.try_get(&p.endpoint_ref(&e)).unwrap());
    p.return_by_id(id);
    clock.advance(Duration::from_secs(9));
    assert_eq!(p.cleanup(), 0);
    assert!(p.is_healthy(id));
    clock.advance(Duration::from_secs(1));
    assert!(!p.is_healthy(id), "expired idle connections are unhealthy");
    assert_eq!(p.cleanup(), 1);
    assert_eq!(p.stats().counters.closed_by(CloseReason::IdleTimeout), 1);

    // Active connections are never closed under their user; past max_lifetime they are retired
    // when returned.
    let id = p.check_out_by_id(p.try_get(&p.endpoint_ref(&e)).unwrap());
    clock.advance(Duration::from_secs(61));
    assert_eq!(p.cleanup(), 0);
    assert_eq!(p.stats().active, 1);
    assert!(!p.is_healthy(id));
    assert!(p.return_by_id(id));
    let s = p.stats();
    assert_eq!((s.active, s.idle), (0, 0));
    assert_eq!(s.counters.closed_by(CloseReason::MaxLifetime), 1);
}

#[test]
fn expired_idle_connections_are_skipped_at_checkout() {
    let (p, clock) = manual(Settings { idle_timeout: Some(Duration::from_secs(5)), ..settings(10, 10) });
    let e = ep("http://h");
    let old = p.try_get(&p.endpoint_ref(&e)).unwrap().id();
    clock.advance(Duration::from_secs(6));
    let fresh = p.try_get(&p.endpoint_ref(&e)).unwrap();
    assert_ne!(fresh.id(), old);
    assert!(!fresh.is_reused());
    assert_eq!(p.stats().counters.closed_by(CloseReason::IdleTimeout), 1);
}

#[test]
fn broken_connections_are_never_reused() {
    let p: Pool<Flag> = Pool::new(settings(10, 10)).unwrap();
    let e = ep("http://h");
    let alive = Arc::new(AtomicBool::new(true));
    let mut lease = p.try_get(&p.endpoint_ref(&e)).unwrap();
    lease.set_conn(Flag(alive.clone()));
    let id = p.check_out_by_id(lease);
    p.return_by_id(id);
    assert!(p.is_healthy(id));
    alive.store(false, SeqCst); // the peer closes the idle socket
    assert!(!p.is_healthy(id));
    let next = p.try_get(&p.endpoint_ref(&e)).unwrap();
    assert_ne!(next.id(), id);
    assert!(next.conn().is_none());
    assert_eq!(p.stats().counters.closed_by(CloseReason::Unhealthy), 1);
}

#[test]
fn waiters_are_served_in_order() {
    let p = pool(1, 1);
    let e = ep("http://h");
    let held = p.try_get(&p.endpoint_ref(&e)).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 0..5 {
        let (p2, e, order) = (p.clone(), e.clone(), order.clone());
        threads.push(thread::spawn(move || {
            let lease = p2.wait(&p2.endpoint_ref(&e), Some(Duration::from_secs(10))).unwrap();
            order.lock().push(i);
            drop(lease);
        }));
        while p.stats().waiting < i + 1 {
            thread::yield_now();
        }
    }
    drop(held);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*order.lock(), vec![0, 1, 2, 3, 4]);
    let s = p.stats();
    assert_eq!((s.waiting, s.active, s.idle, s.counters.waited), (0, 0, 1, 5));
}

#[test]
fn a_waiter_times_out_and_leaves_the_queue() {
    let p = pool(1, 1);
    let e = ep("http://h");
    let _held = p.try_get(&p.endpoint_ref(&e)).unwrap();
    assert_eq!(p.wait(&p.endpoint_ref(&e), Some(Duration::from_millis(20))).unwrap_err(), WaitTimeout);
    let s = p.stats();
    assert_eq!((s.waiting, s.counters.wait_timeouts), (0, 1));
}

#[test]
fn a_waiter_blocked_by_the_global_limit_gets_room_from_another_endpoint() {
    let p = pool(1, 5);
    let held = p.try_get(&p.endpoint_ref(&ep("http://a"))).unwrap();
    let p2 = p.clone();
    let t = thread::spawn(move || p2.wait(&p2.endpoint_ref(&ep("http://b")), Some(Duration::from_secs(10))).map(|l| l.endpoint().to_string()));
    while p.stats().waiting == 0 {
        thread::yield_now();
    }
    drop(held); // parked idle on `a`, then evicted for the waiter on `b`
    assert_eq!(t.join().unwrap().unwrap(), "http://b:80");
    assert_consistent(&p);
}

#[test]
fn a_dropped_ticket_that_was_served_gives_the_connection_back() {
    let p = pool(1, 1);
    let e = ep("http://h");
    let held = p.try_get(&p.endpoint_ref(&e)).unwrap();
    let ticket = p.get_or_queue(&p.endpoint_ref(&e)).unwrap_err();
    drop(held); // served to the ticket
    assert_eq!(p.stats().active, 1);
    drop(ticket);
    let s = p.stats();
    assert_eq!((s.active, s.idle, s.waiting), (0, 1, 0));
}

#[test]
fn ticket_is_a_future() {
    use std::task::{Wake, Waker};
    struct Flagged(AtomicBool);
    impl Wake for Flagged {
        fn wake(self: Arc<Self>) {
            self.0.store(true, SeqCst);
        }
    }
    let p = pool(1, 1);
    let e = ep("http://h");
    let held = p.try_get(&p.endpoint_ref(&e)).unwrap();
    let mut ticket = Box::pin(p.get_or_queue(&p.endpoint_ref(&e)).unwrap_err());
    let flag = Arc::new(Flagged(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(ticket.as_mut().poll(&mut cx).is_pending());
    drop(held);
    assert!(flag.0.load(SeqCst), "serving wakes the task");
    match ticket.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(lease) => assert!(lease.is_reused()),
        std::task::Poll::Pending => panic!("served ticket must be ready"),
    }
}

#[test]
fn cleanup_forgets_empty_endpoints_and_lookups_still_work() {
    let p = pool(10, 10);
    let e = ep("http://h");
    let id = p.check_out_by_id(p.try_get(&p.endpoint_ref(&e)).unwrap());
    p.remove_by_id(id);
    p.cleanup();
    assert!(p.shared.entries.is_empty());
    let lease = p.try_get(&p.endpoint_ref(&e)).unwrap();
    assert_eq!(p.stats().endpoints, vec![("http://h:80".to_string(), EndpointCounts { active: 1, idle: 0 })]);
    drop(lease);
}

#[test]
fn reaper_closes_expired_idle_connections() {
    let p = pool(10, 10);
    p.configure(Settings {
        idle_timeout: Some(Duration::from_millis(20)),
        reaper_interval: Some(Duration::from_millis(10)),
        ..settings(10, 10)
    })
    .unwrap();
    drop(p.try_get(&p.endpoint_ref(&ep("http://h"))).unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.stats().idle > 0 {
        assert!(Instant::now() < deadline, "the reaper never ran");
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(p.stats().counters.closed_by(CloseReason::IdleTimeout), 1);
}

#[test]
fn lowering_a_limit_retires_connections_above_it_on_return() {
    let p = pool(10, 4);
    let e = ep("http://h");
    let leases: Vec<_> = (0..4).map(|_| p.try_get(&p.endpoint_ref(&e)).unwrap()).collect();
    p.configure(settings(10, 2)).unwrap();
    drop(leases);
    assert_eq!(p.stats().idle, 2);
    assert_consistent(&p);
}

#[test]
fn invariants_hold_under_many_threads() {
    const THREADS: usize = 16;
    const ROUNDS: usize = 2_000;
    let p = pool(12, 5);
    let endpoints: Vec<EndpointRef<()>> = ["http://a", "http://b", "http://c"].iter().map(|s| p.endpoint_ref(&ep(s))).collect();
    // The same many-thread loop as the live-connections test below, here checking that no id is
    // leased twice (there: that a server never sees more connections than the limits).
    let leased: Arc<Mutex<HashSet<SlotKey>>> = Arc::default();
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (p, endpoints, leased, start) = (p.clone(), endpoints.clone(), leased.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                for i in 0..ROUNDS {
                    let e = &endpoints[(t + i) % endpoints.len()];
                    let got = if i % 3 == 0 { p.wait(e, Some(Duration::from_secs(10))).ok() } else { p.try_get(e).ok() };
                    let Some(lease) = got else { continue };
                    assert!(leased.lock().insert(lease.id().slot_key()), "a connection was leased twice");
                    // Per-endpoint counts are read under each endpoint's lock; the overall
                    // count against the limit is the reservation counter.
                    assert!(p.shared.open.load(SeqCst) <= 12);
                    assert!(p.stats().endpoints.iter().all(|(_, c)| c.total() <= 5));
                    assert!(leased.lock().remove(&lease.id().slot_key()));
                    match i % 7 {
                        0 => Lease::discard(lease, CloseReason::NotReusable),
                        1 => {
                            let id = p.check_out_by_id(lease);
                            assert!(p.return_by_id(id));
                        }
                        _ => drop(lease),
                    }
                    if i % 97 == 0 {
                        p.cleanup();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = p.stats();
    assert_eq!((s.active, s.waiting), (0, 0));
    assert!(s.idle <= 12);
    assert_consistent(&p);
    assert_eq!(s.counters.created, s.idle as u64 + s.counters.closed_total());
}

#[test]
fn cancelled_waits_never_lose_a_connection() {
    // Port of deadpool's cancellation stress: tickets dropped at random moments, some after
    // they were served.
    let p = pool(3, 3);
    let e = ep("http://h");
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (p, e) = (p.clone(), e.clone());
            thread::spawn(move || {
                for i in 0..1_000 {
                    match p.get_or_queue(&p.endpoint_ref(&e)) {
                        Ok(lease) => drop(lease),
                        Err(mut ticket) => {
                            if (t + i) % 2 == 0 {
                                drop(ticket);
                            } else {
                                drop(ticket.wait_until(Some(Instant::now() + Duration::from_micros(50))));
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = p.stats();
    assert_eq!((s.active, s.waiting), (0, 0));
    assert!(s.idle <= 3);
    assert!(p.shared.waiters.lock().is_empty());
    assert_consistent(&p);
}

#[test]
fn a_stale_id_cannot_touch_a_later_checkout() {
    let p = pool(10, 1);
    let r = p.endpoint_ref(&ep("http://h"));
    let x = p.try_get_id(&r).unwrap();
    assert!(p.return_by_id(x));
    let b = p.try_get_id(&r).unwrap();
    assert_eq!(b.slot_key(), x.slot_key(), "the same connection");
    assert_ne!(b, x, "under a new id");
    assert!(!p.return_by_id(x), "a late second return is refused");
    assert!(!p.remove_by_id(x), "a late remove is refused");
    assert!(!p.is_healthy(x), "a stale id names nothing");
    assert!(p.is_healthy(b));
    assert_eq!(p.try_get_id(&r), Err(AtLimit::Endpoint), "b still holds the only connection");
    assert_eq!(p.stats().active, 1);
    assert!(p.return_by_id(b));
    assert_consistent(&p);
}

#[test]
fn a_lowered_limit_holds_for_reuse_too() {
    let p = pool(10, 4);
    let r = p.endpoint_ref(&ep("http://h"));
    let leases: Vec<_> = (0..4).map(|_| p.try_get(&r).unwrap()).collect();
    drop(leases);
    p.configure(settings(10, 1)).unwrap();
    let a = p.try_get(&r).unwrap();
    assert_eq!(p.try_get(&r).unwrap_err(), AtLimit::Endpoint);
    assert_eq!(p.try_get_id(&r), Err(AtLimit::Endpoint));
    let s = p.stats();
    assert_eq!((s.active, s.idle), (1, 0), "the surplus idle connections are closed");
    assert_eq!(s.counters.closed_by(CloseReason::Evicted), 3);
    drop(a);

    // The overall limit, lowered below the idle connections of one endpoint.
    let p = pool(4, 4);
    let r = p.endpoint_ref(&ep("http://h"));
    drop((0..4).map(|_| p.try_get(&r).unwrap()).collect::<Vec<_>>());
    p.configure(settings(1, 4)).unwrap();
    let a = p.try_get(&r).unwrap();
    assert_eq!(p.try_get(&r).unwrap_err(), AtLimit::Pool);
    assert_eq!(p.stats().total(), 1);
    drop(a);
    assert_consistent(&p);
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

#[test]
fn a_connection_counts_until_it_is_closed() {
    // Invariant 3 as a server sees it: a new connection is opened only once an old one is
    // really closed, whichever way it goes (discarded, broken, expired, evicted).
    const THREADS: usize = 8;
    let p: Pool<Live> = Pool::new(Settings { idle_timeout: Some(Duration::from_millis(1)), ..settings(3, 2) }).unwrap();
    let endpoint_refs: Vec<EndpointRef<Live>> = ["http://a", "http://b"].iter().map(|s| p.endpoint_ref(&ep(s))).collect();
    let alive: Vec<Arc<AtomicUsize>> = (0..endpoint_refs.len()).map(|_| Arc::default()).collect();
    let overall: Arc<AtomicUsize> = Arc::default();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (p, endpoint_refs, alive, overall) = (p.clone(), endpoint_refs.clone(), alive.clone(), overall.clone());
            thread::spawn(move || {
                for i in 0..20_000usize {
                    let e = (t + i) % endpoint_refs.len();
                    let mut lease = p.wait(&endpoint_refs[e], Some(Duration::from_secs(10))).expect("starved");
                    if lease.conn().is_none() {
                        lease.set_conn(Live::open(&alive[e], &overall, (2, 3)));
                    }
                    match (i * 7 + t) % 5 {
                        0 => Lease::discard(lease, CloseReason::NotReusable),
                        1 => {
                            lease.conn().unwrap().open.store(false, SeqCst);
                            drop(lease);
                        }
                        _ => drop(lease),
                    }
                    if i % 50 == 0 {
                        p.cleanup();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = p.stats();
    assert_eq!(s.active, 0);
    assert_eq!(overall.load(SeqCst), s.idle, "every connection the pool no longer holds is closed");
}

#[test]
fn counters_never_go_down_while_cleanup_retires_endpoints() {
    let p = pool(100, 10);
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (p, stop) = (p.clone(), stop.clone());
        thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(SeqCst) {
                let r = p.endpoint_ref(&ep(&format!("http://h{}", i % 50)));
                drop(p.try_get(&r).unwrap());
                // Reused, then closed: the endpoint is empty with one reuse to its name.
                Lease::discard(p.try_get(&r).unwrap(), CloseReason::NotReusable);
                i += 1;
            }
        })
    };
    let cleaner = {
        let (p, stop) = (p.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(SeqCst) {
                p.cleanup();
            }
        })
    };
    let deadline = Instant::now() + Duration::from_millis(700);
    let mut last = p.stats().counters;
    let mut reads = 0u64;
    while Instant::now() < deadline {
        let now = p.stats().counters;
        assert!(now.reused >= last.reused, "reused went down: {} then {}", last.reused, now.reused);
        assert!(now.created >= last.created);
        assert!(now.closed_total() >= last.closed_total());
        last = now;
        reads += 1;
    }
    stop.store(true, SeqCst);
    worker.join().unwrap();
    cleaner.join().unwrap();
    assert!(reads > 100 && last.reused > 100, "the race was exercised ({reads} reads, {} reuses)", last.reused);
}

#[test]
fn a_held_id_lends_its_slot_and_gets_it_back_under_the_same_id() {
    let p: Pool<Flag> = Pool::new(settings(4, 4)).unwrap();
    let endpoint_ref = p.endpoint_ref(&ep("http://h.example"));
    let id = p.try_get_id(&endpoint_ref).unwrap();
    assert!(!p.is_connected(id));
    let mut lent = p.lend_parked(id).expect("held: lent");
    assert!(p.lend_parked(id).is_none(), "one request at a time");
    assert!(!p.return_by_id(id), "lent: not returnable meanwhile");
    let alive = Arc::new(AtomicBool::new(true));
    lent.set_conn(Flag(alive.clone()));
    assert_eq!((p.stats().active, p.stats().idle), (1, 0), "lending changes no count");
    drop(lent);
    assert!(p.is_connected(id) && p.is_healthy(id), "back under its id, connected");
    // A request that failed on it: its connection is closed, the id stays held.
    Lease::discard(p.lend_parked(id).unwrap(), CloseReason::NotReusable);
    assert!(!p.is_connected(id));
    // The peer closed it while it was lent: back without it.
    let mut lent = p.lend_parked(id).unwrap();
    lent.set_conn(Flag(alive.clone()));
    alive.store(false, SeqCst);
    drop(lent);
    assert!(!p.is_connected(id));
    assert_eq!(p.stats().active, 1);
    assert!(p.return_by_id(id));
    assert!(p.lend_parked(id).is_none(), "returned: nothing to lend");
    assert_eq!((p.stats().active, p.stats().idle), (0, 1));
    assert_consistent(&p);
}

#[test]
fn ids_name_their_endpoint_and_stay_uuid_v4() {
    let p = pool(100, 50);
    let refs: Vec<_> = ["http://a", "http://b", "http://c"].iter().map(|s| p.endpoint_ref_str(s).unwrap()).collect();
    let mut keys = HashSet::new();
    for r in &refs {
        for _ in 0..20 {
            let id = p.try_get_id(r).unwrap();
            assert_eq!(p.shared.naming.endpoint_number(id), r.0.number);
            let uuid = Uuid::parse_str(&id.to_string()).unwrap();
            assert_eq!((uuid.get_version_num(), uuid.get_variant()), (4, uuid::Variant::RFC4122));
            assert!(keys.insert(id.slot_key()), "two slots share a name");
        }
    }
    // Another pool's mask differs: its ids name no endpoint of this one.
    let other = pool(100, 50);
    let foreign = other.try_get_id(&other.endpoint_ref_str("http://a").unwrap()).unwrap();
    assert!(!p.return_by_id(foreign));
    assert_eq!(p.stats().active, 60);
    assert_consistent(&p);
}

#[test]
fn a_connection_taken_on_one_thread_is_returned_on_another() {
    // The taking thread knows the endpoint (its near endpoints); the returning one finds it
    // through the shared map.
    let p = pool(10, 10);
    let id = p.with_endpoint_ref_str("http://h", |r| p.try_get_id(r)).unwrap().unwrap();
    let q = p.clone();
    assert!(thread::spawn(move || q.return_by_id(id) && !q.return_by_id(id)).join().unwrap());
    assert!(!p.return_by_id(id), "a stale id is ignored on the taking thread too");
    let again = p.with_endpoint_ref_str("http://h", |r| p.try_get_id(r)).unwrap().unwrap();
    assert_eq!(again.slot_key(), id.slot_key(), "the idle connection is reused");
    let s = p.stats();
    assert_eq!((s.active, s.idle, s.counters.ignored_returns), (1, 0, 2));
    assert_consistent(&p);
}

#[test]
fn a_retired_endpoint_is_not_used_from_a_thread_that_remembers_it() {
    let p = pool(10, 10);
    let first = p.with_endpoint_ref_str("http://h", |r| r.0.clone()).unwrap();
    let id = p.with_endpoint_ref_str("http://h", |r| p.try_get_id(r)).unwrap().unwrap();
    assert!(p.remove_by_id(id));
    p.cleanup();
    assert!(first.retired.load(SeqCst), "cleanup retired the empty endpoint");
    let id = p.with_endpoint_ref_str("http://h", |r| p.try_get_id(r)).unwrap().unwrap();
    let now = p.with_endpoint_ref_str("http://h", |r| r.0.clone()).unwrap();
    assert!(!Arc::ptr_eq(&first, &now), "the endpoint was looked up again");
    assert_eq!(p.shared.naming.endpoint_number(id), now.number);
    assert!(p.return_by_id(id));
    let s = p.stats();
    assert_eq!((s.active, s.idle, s.counters.created), (0, 1, 2));
    assert_eq!(s.endpoints.len(), 1);
    assert_consistent(&p);
}

#[test]
fn more_endpoints_than_a_thread_remembers() {
    let p = pool(1000, 10);
    let names: Vec<String> = (0..3 * NEAR_ENDPOINTS).map(|i| format!("http://h{i}")).collect();
    for _ in 0..3 {
        let ids: Vec<ConnId> = names.iter().map(|n| p.with_endpoint_ref_str(n, |r| p.try_get_id(r)).unwrap().unwrap()).collect();
        assert!(ids.iter().all(|id| p.return_by_id(*id)));
    }
    let s = p.stats();
    assert_eq!((s.active, s.idle, s.counters.created), (0, names.len(), names.len() as u64));
    assert_consistent(&p);
}
