"""The pool's invariants (no id leased to two users at once,
counters that only grow, limits a server can see, every lease ends), tried where they broke.

Every check here compares the pool against something independent of it: what the test did,
a ledger the test keeps, or what a TCP server counts from its side. Pool calls hold the GIL, so
Python threads interleave only between pool calls (and while acquire waits, which it does
without the GIL); true concurrency inside the pool is exercised by the pool's background reaper
(a Rust thread) here, and by the Rust tests (cargo test)."""

import _thread
import functools
import os
import random
import signal
import socket
import sys
import threading
import time
import uuid

import httpx
import pytest

from fast_litellm import HTTPTransport, PoolTimeout, SimpleConnectionPool
from pool_ledger import run_id_api_stress
from servers import Server

EP = "http://h.example"


def fresh(**settings):
    return SimpleConnectionPool(f"inv-{uuid.uuid4()}", reaper_interval=None, **settings)


def active(pool, endpoint=None):
    s = pool.get_stats()
    if endpoint is None:
        return s["active_connections"]
    return sum(e["active"] for origin, e in s["endpoints"].items() if origin.startswith(endpoint))


# --- 1. a stale id cannot touch the next user's lease ---------------------------------------


class Checkout:
    """B's lease, taken one of the three ways the id API offers."""

    def __init__(self, pool, how, endpoint):
        self.pool, self.how, self.ctx, self.endpoint = pool, how, None, endpoint
        if how == "get_connection":
            self.cid = pool.get_connection(endpoint)
        elif how == "acquire":
            self.cid = pool.acquire(endpoint, timeout=1)
        else:
            self.ctx = pool.connection(endpoint, timeout=1)
            self.cid = self.ctx.__enter__()
        assert self.cid is not None

    def end(self):
        if self.ctx is not None:
            self.ctx.__exit__(None, None, None)
        else:
            assert self.pool.return_connection(self.cid) is True, "B could not return its own lease"
        s = self.pool.get_stats()
        assert (s["active_connections"], s["idle_connections"]) == (0, 1), s


@pytest.fixture
def server():
    """Accepts connections and keeps them open. health_check is True only for a connection
    whose socket is open, so B's lease gets a real one."""
    with Server() as s:
        yield s


def stale_x_and_b(how, connected_by, server):
    """A gets X and returns it; B then takes the same slot (limit 1). The slot's socket is
    opened by A before returning it (`connected_by="a"`: B inherits an open connection) or by B
    after taking it (`"b"`): either way B's id is healthy, and X must not be."""
    pool = fresh(max_connections_per_endpoint=1)
    x = pool.get_connection(server.url)
    if connected_by == "a":
        assert pool.connect(x) is True
    assert pool.return_connection(x) is True
    b = Checkout(pool, how, server.url)
    if connected_by == "b":
        assert pool.connect(b.cid) is True
    assert pool.connect(x) is False, "A's stale id opened (or vouched for) B's socket"
    assert pool.get_stats()["connections_created"] == 1 and server.connections <= 1
    return pool, x, b


def b_still_holds(pool, b):
    s = pool.get_stats()
    assert s["active_connections"] == 1, f"B's lease is gone: {s}"
    assert pool.get_connection(b.endpoint) is None, "C got a connection while B holds the only one"
    assert pool.health_check(b.cid) is True, "B's own id no longer names a live, connected lease"


HOW = ["get_connection", "acquire", "connection"]
stale_cases = pytest.mark.parametrize("how, connected_by", [(h, c) for h in HOW for c in ("a", "b")])


@stale_cases
def test_a_late_return_of_a_stale_id_is_refused_and_changes_nothing(how, connected_by, server):
    pool, x, b = stale_x_and_b(how, connected_by, server)
    ignored = pool.get_stats()["ignored_returns"]
    assert pool.return_connection(x) is False, "A's stale id ended B's lease"
    assert pool.get_stats()["ignored_returns"] == ignored + 1
    b_still_holds(pool, b)
    b.end()


@stale_cases
def test_a_late_remove_of_a_stale_id_leaves_the_lease_alone(how, connected_by, server):
    pool, x, b = stale_x_and_b(how, connected_by, server)
    removed = pool.get_stats()["connections_closed"]["removed"]
    assert pool.remove_connection(x) is False, "A's stale id closed B's connection"
    assert pool.get_stats()["connections_closed"]["removed"] == removed
    b_still_holds(pool, b)
    b.end()


@stale_cases
def test_a_stale_id_does_not_vouch_for_the_next_lease(how, connected_by, server):
    # Whether B's id equals X is the pool's business; whatever it is, X was A's checkout, and
    # that checkout ended: X must not report on B's lease (whose socket is open), and B's id must.
    pool, x, b = stale_x_and_b(how, connected_by, server)
    assert pool.health_check(x) is False, "health_check of A's stale id reports on B's lease"
    b_still_holds(pool, b)
    b.end()


# --- 2. a signal during acquire never loses a lease --------------------------------------------


class Interrupted(Exception):
    """What the test's signal handler raises (a stand-in for KeyboardInterrupt)."""


class Alarm:
    """A signal handler that raises Interrupted once per arming. Restores what was there before
    (pytest-timeout's SIGALRM handler and timer among them)."""

    def __init__(self, signum):
        self.signum = signum
        self.armed = False

    def __call__(self, signum, frame):
        if self.armed:
            self.armed = False
            raise Interrupted

    def __enter__(self):
        self.old_handler = signal.signal(self.signum, self)
        self.old_timer = signal.getitimer(signal.ITIMER_REAL) if self.signum == signal.SIGALRM else (0, 0)
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc):
        if self.signum == signal.SIGALRM:
            signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(self.signum, self.old_handler)
        if self.old_timer[0] > 0:
            left = self.old_timer[0] - (time.monotonic() - self.started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), self.old_timer[1])


def spin(seconds):
    """Waits while keeping the GIL."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def check_round(pool, n, outcome):
    s = pool.get_stats()
    assert (s["active_connections"], s["waiting_requests"]) == (0, 0), (
        f"round {n} ({outcome}): a lease outlived its round: {s['active_connections']} active, "
        f"{s['waiting_requests']} waiting"
    )
    cid = pool.get_connection(EP)
    assert cid is not None, f"round {n} ({outcome}): the endpoint is unusable"
    assert pool.return_connection(cid) is True


needs_signals = pytest.mark.skipif(not hasattr(signal, "setitimer") or os.name != "posix", reason="POSIX signals")


@needs_signals
@pytest.mark.parametrize("form", ["acquire", "connection"])
def test_an_interrupt_as_the_connection_frees_up_never_loses_it(form):
    """The holder thread frees the only connection and interrupts the main thread (in random
    order, microseconds apart, a random few milliseconds into the wait) while the main thread
    waits in acquire. The holder keeps the GIL across both, so the signal is always pending by
    the time acquire could return: acquire must then either return an id the caller gets, or
    raise with nothing leased. (A signal that arrives after acquire's own last look, in the
    instant before the caller stores the result, is CPython's business, not the pool's: that
    case is left to the next test.)"""
    pool = fresh(max_connections_per_endpoint=1)
    rng = random.Random(16)
    outcomes = {"returned": 0, "interrupted": 0}
    with Alarm(signal.SIGUSR1) as alarm:
        for n in range(300):
            held = pool.get_connection(EP)
            delay, gap, first = rng.uniform(0.0002, 0.003), rng.uniform(0, 0.0001), rng.random() < 0.5

            def holder(held=held, delay=delay, gap=gap, first=first):
                time.sleep(delay)
                if first:
                    _thread.interrupt_main(signal.SIGUSR1)
                spin(gap)
                assert pool.return_connection(held) is True
                spin(gap)
                if not first:
                    _thread.interrupt_main(signal.SIGUSR1)

            t = threading.Thread(target=holder)
            got = []
            try:
                try:
                    alarm.armed = True
                    t.start()
                    if form == "acquire":
                        cid = pool.acquire(EP, timeout=2)
                        got.append(cid)
                    else:
                        with pool.connection(EP, timeout=2) as cid:
                            got.append(cid)
                            spin(0.0001)
                finally:
                    alarm.armed = False
                outcome = "returned"
            except Interrupted:
                outcome = "interrupted"
            t.join()
            outcomes[outcome] += 1
            if form == "acquire":
                for cid in got:
                    assert pool.return_connection(cid) is True
            check_round(pool, n, f"{form}, {outcome}, ids seen {got}")
    assert sum(outcomes.values()) == 300


@needs_signals
@pytest.mark.parametrize("form", ["acquire", "connection"])
def test_a_timer_signal_around_the_handover_never_loses_a_lease(form):
    """A real asynchronous signal (setitimer) at a jittered moment around the one at which the
    holder frees the connection. acquire's id is stored from C (list.extend over map), so no
    Python bytecode runs between acquire's return and the store: what is checked is the pool's
    own promise, an id returned or an exception with nothing leased."""
    pool = fresh(max_connections_per_endpoint=1)
    rng = random.Random(61)
    outcomes = {"returned": 0, "interrupted": 0}
    acquire = functools.partial(pool.acquire, timeout=2)
    with Alarm(signal.SIGALRM) as alarm:
        for n in range(350):
            held = pool.get_connection(EP)
            delay = rng.uniform(0.0005, 0.003)
            fire = max(delay + rng.uniform(-0.0012, 0.0012), 0.0001)
            t = threading.Thread(target=lambda held=held, delay=delay: (time.sleep(delay), pool.return_connection(held)))
            got = []
            t.start()
            try:
                try:
                    alarm.armed = True
                    signal.setitimer(signal.ITIMER_REAL, fire)
                    if form == "acquire":
                        got.extend(map(acquire, [EP]))
                    else:
                        with pool.connection(EP, timeout=2) as cid:
                            got.append(cid)
                            spin(0.0001)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    alarm.armed = False
                outcome = "returned"
            except Interrupted:
                outcome = "interrupted"
            t.join()
            outcomes[outcome] += 1
            if form == "acquire":
                for cid in got:
                    assert pool.return_connection(cid) is True
            check_round(pool, n, f"{form}, {outcome}, ids seen {got}")
    assert min(outcomes.values()) > 0, f"the timings never raced: {outcomes}"


# --- 3. the server never sees more connections than the limit ---------------------------------


class PeekServer:
    """A slow HTTP/1.1 server (answers after `delay`) that, at every accept, counts how many of
    the connections it accepted are still open from the client's side, and keeps the maximum."""

    def __init__(self, delay=0.02):
        self.delay = delay
        self.lock = threading.Lock()
        self.open = set()
        self.accepted = 0
        self.max_established = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @staticmethod
    def _established(sock):
        """Not yet closed by the client. On Linux the kernel's TCP state says so exactly
        (ESTABLISHED, not CLOSE_WAIT or CLOSED), whatever unread request bytes wait before the
        client's FIN; elsewhere a non-blocking peek (b"": the client closed)."""
        try:
            if hasattr(socket, "TCP_INFO"):
                return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == 1  # TCP_ESTABLISHED
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            return True  # nothing to read, not closed
        except OSError:  # reset: closed
            return False

    def _accept_loop(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                # The new one counts too, unless the client already closed it (it may have
                # waited in the accept queue past its client's timeout).
                self.open = {s for s in self.open | {conn} if self._established(s)}
                self.max_established = max(self.max_established, len(self.open))
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                _, buffer = buffer.split(b"\r\n\r\n", 1)
                time.sleep(self.delay)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass
        finally:
            with self.lock:
                self.open.discard(conn)
            conn.close()

    def close(self):
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


def test_the_server_never_sees_more_connections_than_the_limit():
    server = PeekServer(delay=0.02)
    pool = fresh(max_connections_per_endpoint=2)
    timeouts, answered, errors = [], [], []

    def client():
        try:
            with httpx.Client(transport=HTTPTransport(pool), timeout=httpx.Timeout(5.0, read=0.005)) as c:
                for _ in range(40):
                    try:
                        c.get(f"http://127.0.0.1:{server.port}/")
                        answered.append(1)
                    except httpx.ReadTimeout:
                        timeouts.append(1)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    try:
        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=50)
            assert not t.is_alive(), "a client thread hung"
    finally:
        server.close()
    assert errors == []
    assert len(timeouts) > 100, "the read timeouts did not fire: the test proves nothing"
    assert active(pool) == 0
    assert server.max_established <= 2, (
        f"the server saw {server.max_established} connections from the client open at once "
        f"(limit 2; {server.accepted} accepted, {len(timeouts)} read timeouts)"
    )


# --- 4. counters never go down ----------------------------------------------------------------


def test_counters_are_monotonic_while_cleanup_retires_endpoints():
    """get/return on 64 endpoints, cleanup() from Python and from the pool's own reaper (a Rust
    thread: the only caller that runs inside the pool while another pool call does), idle
    connections expiring after 1 ms so endpoints retire, and a reader comparing snapshots."""
    pool = fresh(idle_timeout=0.001)
    pool.configure(reaper_interval=0.0005)
    endpoints = [f"http://h{i}.example" for i in range(64)]
    stop = threading.Event()
    decreases = []
    reads = [0]

    def churn():
        i = 0
        while not stop.is_set():
            ids = [pool.get_connection(endpoints[(i + k) % 64]) for k in range(4)]
            for cid in ids:
                pool.return_connection(cid)
            i += 1

    def cleaner():
        while not stop.is_set():
            pool.cleanup()

    def reader():
        prev = None
        while not stop.is_set():
            s = pool.get_stats()
            reads[0] += 1
            cur = {"connections_reused": s["connections_reused"], "connections_created": s["connections_created"],
                   **{f"closed.{k}": v for k, v in s["connections_closed"].items()}}
            if prev is not None:
                down = {k: (prev[k], cur[k]) for k in cur if cur[k] < prev[k]}
                if down:
                    decreases.append(down)
                    if len(decreases) >= 5:
                        stop.set()
            prev = cur

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=f) for f in (churn, cleaner, reader)]
        for t in threads:
            t.start()
        stop.wait(3)
        stop.set()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
        pool.configure(reaper_interval=None)
    assert reads[0] > 1000
    assert decreases == [], f"counters went down between consecutive reads ({len(decreases)}+ times): {decreases[:3]}"
    assert pool.get_stats()["connections_closed"]["idle_timeout"] > 0, "no endpoint was ever retired"


# --- 5. a context made before fork works in the child -----------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_connection_context_made_before_fork_uses_the_childs_pool():
    pool = fresh(max_connections_per_endpoint=1)
    ctx = pool.connection(EP, timeout=1)
    held = pool.get_connection(EP)  # the parent's endpoint is full
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: exit codes say what happened, the pipe says more
        code, note = 1, b"?"
        try:
            start = time.monotonic()
            with ctx as cid:
                elapsed = time.monotonic() - start
                uuid.UUID(cid)
            ok = elapsed < 0.5 and SimpleConnectionPool(pool.pool_name).get_stats()["active_connections"] == 0
            code, note = (0, b"ok") if ok else (1, f"slow or leaked: {elapsed:.3f} s".encode())
        except PoolTimeout as e:
            code, note = 3, f"PoolTimeout: {e}".encode()
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            code, note = 4, repr(e).encode()
        finally:
            os.write(write_fd, note)
            os._exit(code)
    os.close(write_fd)
    try:
        deadline = time.monotonic() + 10
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the child hung entering a context made before the fork")
            time.sleep(0.01)
        note = os.read(read_fd, 4096).decode(errors="replace")
    finally:
        os.close(read_fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child: {note}"
    assert active(pool) == 1, "the parent's pool is untouched"
    assert pool.return_connection(held) is True


# --- 6. a lowered limit holds for reuse -------------------------------------------------------


@pytest.mark.parametrize("setting", ["max_connections_per_endpoint", "max_connections"])
def test_a_lowered_limit_holds_for_idle_connections_too(setting):
    pool = fresh(max_connections_per_endpoint=4)
    ids = [pool.get_connection(EP) for _ in range(4)]
    for cid in ids:
        assert pool.return_connection(cid) is True
    assert pool.get_stats()["idle_connections"] == 4
    pool.configure(**{setting: 1})

    first = pool.get_connection(EP)
    assert first is not None
    second = pool.get_connection(EP)
    assert second is None, f"{setting}=1, yet a second connection was handed out (from the idle ones)"
    assert active(pool, "http://h.example") <= 1
    with pytest.raises(PoolTimeout):
        pool.acquire(EP, timeout=0.02)
    assert active(pool, "http://h.example") <= 1
    assert pool.return_connection(first) is True
    for _ in range(10):  # reuse keeps within the limit
        a, b = pool.get_connection(EP), pool.get_connection(EP)
        assert a is not None and b is None
        assert active(pool, "http://h.example") == 1
        assert pool.return_connection(a) is True
    assert active(pool) == 0


# --- 7. one ConnectionContext, entered from two threads ----------------------------------------


@pytest.mark.parametrize("queued", [True, False], ids=["while-queued", "immediately"])
def test_one_context_entered_from_two_threads_loses_no_lease(queued):
    """Either the second entry is refused (ValueError) or both get distinct ids; either way no
    lease is lost once both have left."""
    pool = fresh(max_connections_per_endpoint=2)
    held = [pool.get_connection(EP), pool.get_connection(EP)] if queued else []
    ctx = pool.connection(EP, timeout=5)
    start = threading.Barrier(2, timeout=10)
    inside = threading.Barrier(2, timeout=10)  # both entered (or refused) before either leaves
    results = {}

    def enter(n):
        start.wait()
        try:
            with ctx as cid:
                results[n] = cid
                inside.wait()
        except ValueError as e:
            results[n] = e
            inside.wait()
        except BaseException as e:  # noqa: BLE001 - reported below
            results[n] = e
            inside.abort()

    threads = [threading.Thread(target=enter, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    if queued:
        deadline = time.monotonic() + 5
        refused = lambda: sum(isinstance(r, ValueError) for r in results.values())  # noqa: E731
        while pool.get_stats()["waiting_requests"] + refused() < 2:
            assert time.monotonic() < deadline, "the two entries never queued"
            time.sleep(0.001)
        for cid in held:
            assert pool.return_connection(cid) is True
    for t in threads:
        t.join(timeout=15)
        assert not t.is_alive()
    ids = [r for r in results.values() if isinstance(r, str)]
    refusals = [r for r in results.values() if isinstance(r, ValueError)]
    assert len(ids) + len(refusals) == 2, results
    assert len(ids) >= 1 and len(set(ids)) == len(ids), results
    s = pool.get_stats()
    assert s["active_connections"] == 0, f"a lease was lost: {s['active_connections']} still active after {results}"


# --- the id API under random use, against the test's ledger -----------------------------------


def test_random_id_api_use_against_a_ledger():
    # About 5 s; the minute-long run is in tests/stress (make stress).
    summary = run_id_api_stress(seconds=5, workers=8)
    ops = summary["ops"]
    assert ops["stale_return"] > 0 and ops["with"] > 0 and ops["acquire"] > 0
    assert ops["connect"] > 0 and ops["stale_connect"] > 0 and ops["stale_health"] > 0
    # Connected held ids were checked (each one True), on sockets the servers accepted.
    assert summary["healthy_connected"] > 0 and summary["server_connections"] > 0, summary
