//! Waiting at a limit: first come first served, timeouts, cancellation, tickets as futures.

use super::*;

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
