//! The id API: return rules, stale ids, held ids lending their slot, ids as UUIDv4 naming their
//! endpoint, ids crossing threads.

use super::*;

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
