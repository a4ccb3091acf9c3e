//! Expiry and cleanup: idle timeout and lifetime, the reaper, endpoints forgotten while counters and
//! the threads that remember them stay right.

use super::*;

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
