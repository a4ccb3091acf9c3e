"""A randomized workload on the pool's id API, checked against a ledger the test keeps itself.

Used by tests/python/pool/test_pool_invariants.py (a few seconds) and tests/stress/test_stress.py
(a minute or more). The ledger, not the pool's own statistics, is the oracle:

- an id held by one thread is never handed (by get_connection, acquire or connection()) to
  another thread, or to the same one, while it is held;
- returning or removing an id the thread holds gives True;
- a stale id (one this thread returned or removed earlier) returns False and connects nothing
  (connect False); a removed one is also never healthy and cannot be removed again; and were
  the pool ever to hand a stale id out again, while another thread holds that lease the stale
  id could neither return, remove nor vouch for it (health False, also once connected);
- connecting an id the thread holds gives True, and from then on, while the thread holds it,
  health_check is True (the endpoints are local servers that accept connections and keep them
  open; a held id never connected may also be healthy, with a socket its slot's earlier holder
  opened, so it is not checked);
- at the end, once every held id is returned, active_connections == 0.

Pool calls hold the GIL, so the threads interleave between pool calls (and while acquire waits,
which it does without the GIL), never inside one; the pool's own many-thread tests are in Rust
(cargo test)."""

from __future__ import annotations

import random
import selectors
import socket
import threading
import time
import uuid

from fast_litellm import PoolTimeout, SimpleConnectionPool

OPS = ("get", "acquire", "with", "return", "remove", "connect", "stale_return", "stale_remove",
       "stale_health", "stale_connect", "health", "cleanup", "configure")
WEIGHTS = (12, 8, 8, 12, 3, 2, 5, 3, 3, 2, 4, 2, 2)


class HoldingServer:
    """A TCP listener on 127.0.0.1 that accepts every connection and keeps it open until the
    client closes it (what it sends is read and dropped). One thread, a selector: cheap however
    many connections the workload opens. `accepted` counts connections from the server's side."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1024)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"holding-{self.port}")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                sock = key.fileobj
                if sock is self._listener:
                    try:
                        conn, _ = self._listener.accept()
                    except OSError:
                        continue
                    conn.setblocking(False)
                    self._selector.register(conn, selectors.EVENT_READ)
                    self.accepted += 1
                    continue
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:  # the client closed it
                    self._selector.unregister(sock)
                    sock.close()
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


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
    servers = [HoldingServer() for _ in range(3)]
    try:
        return _run(servers, seconds, workers, seed)
    finally:
        for server in servers:
            server.close()


def _run(servers: list[HoldingServer], seconds: float, workers: int, seed: int) -> dict:
    endpoints = tuple(server.url for server in servers)
    # No max_lifetime: a held, connected id stays healthy however long the run.
    pool = SimpleConnectionPool(f"ledger-{uuid.uuid4()}", reaper_interval=None, idle_timeout=0.005,
                                max_lifetime=None, max_connections_per_endpoint=2)
    ledger = Ledger()
    held: list[list[str]] = [[] for _ in range(workers)]
    connected: list[set[str]] = [set() for _ in range(workers)]  # held ids this worker connected
    # id -> "returned" or "removed", the last 64 ids each worker gave up, oldest first.
    stale: list[dict[str, str]] = [{} for _ in range(workers)]
    done = [dict.fromkeys(OPS, 0) for _ in range(workers)]
    healthy_connected = [0] * workers  # health checks of connected held ids (each one True)
    deadline = time.monotonic() + seconds

    def forget(me: int, cid: str, ended: str) -> None:
        if cid in held[me]:
            held[me].remove(cid)
        connected[me].discard(cid)
        stale[me][cid] = ended
        while len(stale[me]) > 64:
            del stale[me][next(iter(stale[me]))]

    def connect(me: int, cid: str, where: str) -> bool:
        try:
            result = pool.connect(cid, timeout=5)
        except Exception as exc:  # noqa: BLE001 - the servers accept everything: any error is one
            ledger.violation(f"connect of {where} {cid} raised {exc!r}")
            return False
        if result is not True:
            ledger.violation(f"connect of {where} {cid} gave {result!r}, not True")
            return False
        return True

    def worker(me: int) -> None:
        rng = random.Random(seed * 1000 + me)
        mine, old, L = held[me], stale[me], ledger
        while not L.stop.is_set() and time.monotonic() < deadline:
            op = rng.choices(OPS, WEIGHTS)[0]
            if len(mine) >= 3 and op in ("get", "acquire", "with"):
                op = "return"
            ep = rng.choice(endpoints)
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
                        if rng.random() < 0.25 and connect(me, cid, "connection() block's"):
                            if pool.health_check(cid) is not True:
                                L.violation(f"health_check of {cid}, connected in a connection() block, is not True")
                            healthy_connected[me] += 1
                        with L.lock:
                            if L.holder.get(cid) == me:
                                del L.holder[cid]
                        if raise_inside:
                            raise _Boom
                except PoolTimeout:
                    continue
                except _Boom:
                    forget(me, cid, "removed")
                else:
                    forget(me, cid, "returned")
            elif op in ("return", "remove", "health", "connect"):
                if not mine:
                    continue
                cid = rng.choice(mine)
                if op == "connect":
                    if connect(me, cid, "held"):
                        connected[me].add(cid)
                    continue
                if op == "health":
                    result = pool.health_check(cid)
                    if cid in connected[me]:
                        if result is not True:
                            L.violation(f"health_check of held, connected {cid} gave {result!r}, not True")
                        healthy_connected[me] += 1
                    elif not isinstance(result, bool):
                        L.violation(f"health_check of held {cid} gave {result!r}")
                    continue
                call = pool.return_connection if op == "return" else pool.remove_connection
                with L.lock:  # the pop and the pool call together: no one can take it in between
                    L.holder.pop(cid, None)
                    result = call(cid)
                forget(me, cid, "returned" if op == "return" else "removed")
                if result is not True:
                    L.violation(f"{op} of held {cid} gave {result!r}, not True")
            elif op.startswith("stale_"):
                if not old:
                    continue
                cid = rng.choice(list(old))
                ended = old[cid]
                with L.lock:  # nobody records or gives up an id while we look and call
                    owner = L.holder.get(cid)
                    if owner == me:  # handed back to this very worker: not stale any more
                        continue
                    if op == "stale_return":
                        result = pool.return_connection(cid)
                        if result is not False:
                            L.violation(f"return of stale {cid} gave {result!r} (held by worker {owner})")
                    elif op == "stale_remove":
                        # A returned id still names its idle connection until it is checked out
                        # again: removing it may close that one (True). Then it is removed.
                        result = pool.remove_connection(cid)
                        if owner is not None and result is not False:
                            L.violation(f"remove of stale {cid} gave {result!r}: worker {owner}'s lease")
                        elif ended == "removed" and result is not False:
                            L.violation(f"remove of removed {cid} gave {result!r}")
                        elif result is True:
                            old[cid] = "removed"
                    elif op == "stale_connect":
                        # Not checked out under this id (returned, removed, or someone else's
                        # lease now): False, and no socket opened.
                        result = pool.connect(cid, timeout=5)
                        if result is not False:
                            L.violation(f"connect of stale {cid} gave {result!r} (held by worker {owner})")
                    else:
                        result = pool.health_check(cid)
                        if owner is not None and result is not False:
                            how = "connected" if cid in connected[owner] else "not connected by it"
                            L.violation(f"health_check of stale {cid} gave {result!r}: worker {owner}'s lease ({how})")
                        elif ended == "removed" and result is not False:
                            L.violation(f"health_check of removed {cid} gave {result!r}")
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
    time.sleep(0.01)  # past idle_timeout: the idle sockets close before the servers stop
    pool.cleanup()
    ops = {op: sum(d[op] for d in done) for op in OPS}
    return {"ops": ops, "stats": stats, "healthy_connected": sum(healthy_connected),
            "server_connections": sum(server.accepted for server in servers)}
