"""A randomized workload on the pool's id API, checked against a ledger the test keeps itself.

Used by tests/python/test_pool_invariants.py (a few seconds) and tests/stress/test_stress.py
(a minute or more). The ledger, not the pool's own statistics, is the oracle:

- an id held by one thread is never handed (by get_connection, acquire or connection()) to
  another thread, or to the same one, while it is held;
- returning or removing an id the thread holds gives True;
- a stale id (one this thread returned or removed earlier) returns False, and while another
  thread holds a lease it can neither return, remove nor vouch for that lease (health False);
- at the end, once every held id is returned, active_connections == 0.

Pool calls hold the GIL, so the threads interleave between pool calls (and while acquire waits,
which it does without the GIL), never inside one; the pool's own many-thread tests are in Rust
(cargo test)."""

from __future__ import annotations

import random
import threading
import time
import uuid

from fast_litellm import PoolTimeout, SimpleConnectionPool

ENDPOINTS = ("http://a.example", "http://b.example", "http://c.example")
OPS = ("get", "acquire", "with", "return", "remove", "stale_return", "stale_remove", "stale_health",
       "health", "cleanup", "configure")
WEIGHTS = (12, 8, 8, 12, 3, 5, 3, 3, 4, 2, 2)


class _Boom(Exception):
    """Raised inside a connection() block: the connection is removed on exit."""


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holder: dict[str, int] = {}  # id -> the worker holding it
        self.violations: list[str] = []
        self.stop = threading.Event()

    def violation(self, text: str) -> None:
        self.violations.append(text)
        self.stop.set()  # fail fast: the first broken rule is the interesting one

    def take(self, cid: str, me: int, how: str) -> None:
        """Records a freshly handed-out id (after the pool call, under the ledger lock)."""
        with self.lock:
            owner = self.holder.get(cid)
            if owner is not None:
                self.violation(f"{how} handed out {cid}, which worker {owner} still holds (worker {me})")
                return
            self.holder[cid] = me


def run_id_api_stress(seconds: float, workers: int = 8, seed: int = 0) -> dict:
    """Runs the workload; returns a summary. Raises AssertionError on the first broken rule."""
    pool = SimpleConnectionPool(f"ledger-{uuid.uuid4()}", reaper_interval=None, idle_timeout=0.005,
                                max_connections_per_endpoint=2)
    ledger = Ledger()
    held: list[list[str]] = [[] for _ in range(workers)]
    stale: list[list[str]] = [[] for _ in range(workers)]
    done = [dict.fromkeys(OPS, 0) for _ in range(workers)]
    deadline = time.monotonic() + seconds

    def forget(me: int, cid: str) -> None:
        held[me].remove(cid)
        stale[me].append(cid)
        del stale[me][:-64]

    def worker(me: int) -> None:
        rng = random.Random(seed * 1000 + me)
        mine, old, L = held[me], stale[me], ledger
        while not L.stop.is_set() and time.monotonic() < deadline:
            op = rng.choices(OPS, WEIGHTS)[0]
            if len(mine) >= 3 and op in ("get", "acquire", "with"):
                op = "return"
            ep = rng.choice(ENDPOINTS)
            done[me][op] += 1  # attempted (a full pool or an empty hand makes some a no-op)
            if op == "get":
                cid = pool.get_connection(ep)
                if cid is not None:
                    L.take(cid, me, "get_connection")
                    mine.append(cid)
            elif op == "acquire":
                try:
                    cid = pool.acquire(ep, timeout=rng.choice((0, 0.001, 0.005)))
                except PoolTimeout:
                    continue
                L.take(cid, me, "acquire")
                mine.append(cid)
            elif op == "with":
                raise_inside = rng.random() < 0.2
                try:
                    with pool.connection(ep, timeout=rng.choice((0, 0.002))) as cid:
                        L.take(cid, me, "connection()")
                        if pool.health_check(cid) is not True:
                            L.violation(f"health_check of {cid}, held in a connection() block, is not True")
                        with L.lock:
                            if L.holder.get(cid) == me:
                                del L.holder[cid]
                        if raise_inside:
                            raise _Boom
                except PoolTimeout:
                    continue
                except _Boom:
                    pass
                old.append(cid)
            elif op in ("return", "remove", "health"):
                if not mine:
                    continue
                cid = rng.choice(mine)
                if op == "health":
                    if pool.health_check(cid) is not True:
                        L.violation(f"health_check of held {cid} is not True")
                    continue
                call = pool.return_connection if op == "return" else pool.remove_connection
                with L.lock:  # the pop and the pool call together: no one can take it in between
                    L.holder.pop(cid, None)
                    result = call(cid)
                forget(me, cid)
                if result is not True:
                    L.violation(f"{op} of held {cid} gave {result!r}, not True")
            elif op.startswith("stale_"):
                if not old:
                    continue
                cid = rng.choice(old)
                with L.lock:  # nobody records or gives up an id while we look and call
                    owner = L.holder.get(cid)
                    if owner == me:  # handed back to this very worker: not stale any more
                        continue
                    if op == "stale_return":
                        result = pool.return_connection(cid)
                        if result is not False:
                            L.violation(f"return of stale {cid} gave {result!r} (held by worker {owner})")
                    elif op == "stale_remove":
                        result = pool.remove_connection(cid)
                        if owner is not None and result is not False:
                            L.violation(f"remove of stale {cid} gave {result!r}: worker {owner}'s lease")
                    else:
                        result = pool.health_check(cid)
                        if owner is not None and result is not False:
                            L.violation(f"health_check of stale {cid} gave {result!r}: worker {owner}'s lease")
            elif op == "cleanup":
                pool.cleanup()
            elif op == "configure":
                pool.configure(max_connections_per_endpoint=rng.randint(1, 4))

    threads = [threading.Thread(target=worker, args=(n,), name=f"ledger-{n}") for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
        assert not t.is_alive(), "a worker hung"
    assert not ledger.violations, f"seed {seed}: {ledger.violations[:5]}"

    # Everything still held goes back: each return is True, then nothing is active.
    for me, mine in enumerate(held):
        for cid in list(mine):
            assert pool.return_connection(cid) is True, f"final return of worker {me}'s {cid}"
    stats = pool.get_stats()
    assert (stats["active_connections"], stats["waiting_requests"]) == (0, 0), stats
    ops = {op: sum(d[op] for d in done) for op in OPS}
    return {"ops": ops, "stats": stats}
