"""The pool's Python API: every documented behaviour, each rule for bad input."""

import os
import random
import subprocess
import sys
import threading
import time
import uuid

import pytest

import fast_litellm
from fast_litellm import PoolTimeout, SimpleConnectionPool
from servers import Server, wait_for

SECRET = "sk-PLANTED-SECRET-0123456789"
# An endpoint's counts before any of its connections has a socket.
# What an endpoint whose slots have no socket yet reports besides its counts: no connection of
# either HTTP version, no TLS handshake, no connect time observed.
_BOUNDS = [bound for bound, _ in fast_litellm.get_connection_pool_stats()["wait_seconds"]["buckets"]]
NOT_CONNECTED = {
    "http1_connections": 0, "http2_connections": 0, "streams_in_use": 0,
    "tls_handshakes_full": 0, "tls_handshakes_resumed": 0,
    "connect_seconds": {"buckets": [(bound, 0) for bound in _BOUNDS], "sum": 0.0, "count": 0},
}


def fresh(**settings):
    """A pool of its own for one test (pool names are process-wide)."""
    return SimpleConnectionPool(f"test-{uuid.uuid4()}", reaper_interval=None, **settings)


def counts(pool):
    """(active, idle), after checking the open connections against the counters: every
    connection created and not yet closed is open. (`total == active + idle` would prove
    nothing: the stats compute the total as that sum.)"""
    s = pool.get_stats()
    closed = sum(s["connections_closed"].values())
    assert s["total_connections"] == s["connections_created"] - closed, s
    return s["active_connections"], s["idle_connections"]


@pytest.fixture
def server():
    """A local HTTP/1.1 server that accepts connections and keeps them open: health_check is
    True only for an id whose socket was opened (pool.connect), so these tests need one."""
    with Server() as s:
        yield s


# --- the documented examples, run as written -------------------------------------------------


def test_reference_direct_api_example():
    pool = SimpleConnectionPool(pool_name="my_pool")
    conn_id = pool.get_connection("https://api.openai.com")
    if conn_id:
        try:
            pass
        finally:
            pool.return_connection(conn_id)
    stats = pool.get_stats()
    assert stats.get("total_connections", 0) == stats.get("idle_connections", 0) >= 1
    assert stats.get("active_connections", 0) == 0


def test_reference_standalone_functions_example():
    before = fast_litellm.get_connection_pool_stats()
    conn_id = fast_litellm.get_connection("https://api.openai.com")
    fast_litellm.return_connection(conn_id)
    assert fast_litellm.remove_connection(conn_id) is True
    assert fast_litellm.health_check_connection(conn_id) is False
    assert isinstance(fast_litellm.cleanup_expired_connections(), int)
    stats = fast_litellm.get_connection_pool_stats()
    assert stats["pool_name"] == "default"
    assert stats["connections_closed"]["removed"] == before["connections_closed"]["removed"] + 1


def test_always_return_pattern_is_safe_when_the_pool_is_full():
    pool = fresh(max_connections=1)
    held = pool.get_connection("http://h")
    conn_id = pool.get_connection("http://h")
    assert conn_id is None
    try:
        pass
    finally:
        assert pool.return_connection(conn_id) is False
    assert counts(pool) == (1, 0)
    pool.return_connection(held)


# --- endpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, origin",
    [
        ("https://api.openai.com", "https://api.openai.com:443"),
        ("HTTPS://API.OpenAI.com/v1/chat/completions", "https://api.openai.com:443"),
        ("http://localhost:8080/", "http://localhost:8080"),
        ("http://[::1]:9000/v1", "http://[::1]:9000"),
        ("https://[2001:DB8::1]", "https://[2001:db8::1]:443"),
        ("http://10.0.0.1", "http://10.0.0.1:80"),
    ],
)
def test_endpoints_are_normalized_origins(given, origin):
    pool = fresh()
    conn_id = pool.get_connection(given)
    assert list(pool.get_stats()["endpoints"]) == [origin]
    assert pool.get_stats()["endpoints"][origin] == {"active": 1, "idle": 0, "total": 1, **NOT_CONNECTED}
    pool.return_connection(conn_id)


def test_secrets_in_the_url_are_never_stored():
    pool = fresh()
    url = f"https://user:{SECRET}@api.openai.com/v1?key={SECRET}#{SECRET}"
    conn_id = pool.get_connection(url)
    assert list(pool.get_stats()["endpoints"]) == ["https://api.openai.com:443"]
    assert pool.get_connection("https://api.openai.com") is not None
    seen = repr(pool.get_stats()) + repr(pool) + repr(pool.settings) + conn_id
    assert SECRET not in seen


@pytest.mark.parametrize(
    "bad, exc, words",
    [
        ("api.openai.com", ValueError, "no scheme"),
        ("ftp://files.example.com", ValueError, "'ftp' is not supported"),
        ("https://", ValueError, "empty host"),
        (f"https://u:{SECRET}@/v1", ValueError, "empty host"),
        ("https://bad host", ValueError, "not a valid name"),
        ("https://bücher.de", ValueError, "punycode"),
        ("https://h:99999", ValueError, "port"),
        (f"https://h/\r\nAuthorization: {SECRET}", ValueError, "control character"),
        ("https://h/" + "a" * 10_000, ValueError, "too long"),
        ("", ValueError, "empty"),
        (None, TypeError, "endpoint must be a str, not NoneType"),
        (b"https://h", TypeError, "endpoint must be a str, not bytes"),
        (443, TypeError, "endpoint must be a str, not int"),
    ],
)
def test_bad_endpoints_raise_clear_errors_and_change_nothing(bad, exc, words):
    pool = fresh()
    with pytest.raises(exc) as info:
        pool.get_connection(bad)
    assert words in str(info.value)
    assert SECRET not in str(info.value)
    with pytest.raises(exc):
        pool.acquire(bad, timeout=0)
    with pytest.raises(exc):
        pool.connection(bad)
    assert counts(pool) == (0, 0)
    assert pool.get_stats()["endpoints"] == {}


# --- connections, reuse, limits -------------------------------------------------------------


def test_ids_are_uuid4_strings_and_the_most_recent_idle_is_reused(server):
    pool = fresh()
    a = pool.get_connection(server.url)
    b = pool.get_connection(server.url)
    assert uuid.UUID(a).version == 4 and str(uuid.UUID(a)) == a
    assert a != b
    # Both connected, so health_check tells whether an id still names its connection.
    assert pool.connect(a) is True and pool.connect(b) is True
    wait_for(lambda: server.connections == 2)  # the server counts in its own thread
    pool.return_connection(a)
    pool.return_connection(b)
    assert pool.health_check(a) and pool.health_check(b), "returned ids name their idle connections"
    # Ids name one checkout: a reused connection comes under a new id, and its old id names
    # nothing any more. The most recently returned one (b's) is taken first.
    c = pool.get_connection(server.url)
    assert c not in (a, b) and uuid.UUID(c).version == 4
    assert not pool.health_check(b) and pool.health_check(a), "c took b's connection, a's is idle"
    assert pool.health_check(c), "c has b's open socket"
    d = pool.get_connection(server.url)
    assert d not in (a, b, c) and not pool.health_check(a) and pool.health_check(d)
    s = pool.get_stats()
    assert (s["connections_created"], s["connections_reused"]) == (2, 2)
    time.sleep(0.05)
    assert server.connections == 2, "reuse opened no socket"
    pool.return_connection(c)
    pool.return_connection(d)


def test_per_endpoint_and_overall_limits():
    pool = fresh(max_connections=3, max_connections_per_endpoint=2)
    a1, a2 = pool.get_connection("http://a"), pool.get_connection("http://a")
    assert pool.get_connection("http://a") is None
    b1 = pool.get_connection("http://b")
    assert pool.get_connection("http://c") is None
    pool.return_connection(a1)
    # At the overall limit, an idle connection of another endpoint makes room.
    c1 = pool.get_connection("http://c")
    assert c1 is not None
    s = pool.get_stats()
    assert s["total_connections"] == 3
    assert s["connections_closed"]["evicted"] == 1
    for conn_id in (a2, b1, c1):
        assert pool.return_connection(conn_id)


def test_limits_hold_under_many_threads():
    # Pool calls hold the GIL, so these threads make one pool call at a time: this checks the
    # limits across interleavings of calls, not concurrency inside the pool (the Rust tests do
    # that: cargo test).
    pool = fresh(max_connections=6, max_connections_per_endpoint=4)
    endpoints = ["http://a", "http://b", "http://c"]
    errors = []
    held_ids = set()
    lock = threading.Lock()

    def worker(n):
        for i in range(2000):
            conn_id = pool.get_connection(endpoints[(n + i) % 3])
            if conn_id is None:
                continue
            with lock:
                if conn_id in held_ids:
                    errors.append("leased twice")
                held_ids.add(conn_id)
            s = pool.get_stats()
            if s["total_connections"] > 6 or any(e["total"] > 4 for e in s["endpoints"].values()):
                errors.append(s)
            with lock:
                held_ids.discard(conn_id)
            pool.return_connection(conn_id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert counts(pool)[0] == 0


# --- waiting --------------------------------------------------------------------------------


def test_acquire_times_out_with_pool_timeout():
    pool = fresh(max_connections_per_endpoint=1)
    held = pool.acquire("http://h")
    start = time.monotonic()
    with pytest.raises(PoolTimeout) as info:
        pool.acquire("http://h", timeout=0.1)
    assert time.monotonic() - start >= 0.09
    assert isinstance(info.value, TimeoutError)
    assert "http://h:80" in str(info.value)
    s = pool.get_stats()
    assert (s["wait_timeouts"], s["waiting_requests"], s["active_connections"]) == (1, 0, 1)
    pool.return_connection(held)


def test_acquire_releases_the_gil_and_waiters_are_served_in_order():
    pool = fresh(max_connections_per_endpoint=1)
    held = pool.acquire("http://h")
    order = []

    def waiter(n):
        conn_id = pool.acquire("http://h", timeout=10)
        order.append(n)
        pool.return_connection(conn_id)

    threads = []
    for n in range(4):
        t = threading.Thread(target=waiter, args=(n,))
        t.start()
        threads.append(t)
        # This loop runs while the waiters block: they do so without holding the GIL.
        while pool.get_stats()["waiting_requests"] < n + 1:
            time.sleep(0.001)
    pool.return_connection(held)
    for t in threads:
        t.join(timeout=10)
    assert order == [0, 1, 2, 3]
    assert pool.get_stats()["waits"] == 4


def test_invalid_timeouts():
    pool = fresh()
    with pytest.raises(ValueError, match="timeout"):
        pool.acquire("http://h", timeout=-1)
    with pytest.raises(TypeError):
        pool.acquire("http://h", timeout="soon")


def test_connection_context_manager_returns_or_removes(server):
    pool = fresh()
    with pool.connection(server.url) as conn_id:
        assert counts(pool) == (1, 0)
        assert pool.connect(conn_id) is True
    assert counts(pool) == (0, 1)
    assert pool.health_check(conn_id), "returned: the id names its idle, open connection"

    with pytest.raises(RuntimeError):
        with pool.connection(server.url) as conn_id2:
            assert pool.health_check(conn_id2) and not pool.health_check(conn_id)
            raise RuntimeError("request failed")
    assert conn_id2 != conn_id, "a new checkout, a new id"
    assert pool.get_stats()["connections_reused"] == 1
    assert counts(pool) == (0, 0)
    assert pool.get_stats()["connections_closed"]["removed"] == 1
    assert not pool.health_check(conn_id2)
    # Removed means the socket closed (the server counts in its own thread).
    wait_for(lambda: (server.connections, server.open_connections) == (1, 0))


def test_connection_context_manager_times_out():
    pool = fresh(max_connections_per_endpoint=1)
    held = pool.get_connection("http://h")
    with pytest.raises(PoolTimeout):
        with pool.connection("http://h", timeout=0.05):
            pass
    assert counts(pool) == (1, 0)
    pool.return_connection(held)


# --- returning, removing, health -----------------------------------------------------------


def test_return_rules_never_corrupt_counts():
    pool = fresh()
    conn_id = pool.get_connection("http://h")
    assert pool.return_connection(conn_id) is True
    assert pool.return_connection(conn_id) is False, "double return"
    assert pool.return_connection(str(uuid.uuid4())) is False, "unknown id"
    assert pool.return_connection(None) is False
    assert counts(pool) == (0, 1)

    conn_id = pool.get_connection("http://h")
    assert pool.remove_connection(conn_id) is True
    assert pool.return_connection(conn_id) is False, "return after remove"
    assert pool.remove_connection(conn_id) is False
    assert counts(pool) == (0, 0)
    s = pool.get_stats()
    assert s["ignored_returns"] == 3  # double, unknown, after remove (None names nothing)
    assert s["connections_closed"]["removed"] == 1


@pytest.mark.parametrize("bad", ["not-a-uuid", "", SECRET, "x" * 36])
def test_malformed_ids_raise_value_error(bad):
    pool = fresh()
    for method in (pool.return_connection, pool.remove_connection, pool.health_check, pool.connect):
        with pytest.raises(ValueError, match="UUID") as info:
            method(bad)
        assert SECRET not in str(info.value)


@pytest.mark.parametrize("bad", [123, b"id", 1.5, ["id"]])
def test_ids_of_the_wrong_type_raise_type_error(bad):
    pool = fresh()
    for method in (pool.return_connection, pool.remove_connection, pool.health_check, pool.connect):
        with pytest.raises(TypeError, match="connection id must be a str"):
            method(bad)


def test_health_check(server):
    pool = fresh()
    conn_id = pool.get_connection(server.url)
    assert pool.health_check(conn_id) is False, "checked out, but no socket yet"
    assert server.connections == 0
    assert pool.connect(conn_id) is True
    assert pool.health_check(conn_id) is True
    pool.return_connection(conn_id)
    assert pool.health_check(conn_id) is True, "idle, open, and not checked out again"
    assert pool.health_check(str(uuid.uuid4())) is False
    assert pool.health_check(None) is False
    pool.remove_connection(conn_id)
    assert pool.health_check(conn_id) is False
    wait_for(lambda: (server.connections, server.open_connections) == (1, 0))


# --- expiry ---------------------------------------------------------------------------------


def test_idle_timeout_and_cleanup(server):
    pool = fresh(idle_timeout=0.05)
    conn_id = pool.get_connection(server.url)
    assert pool.connect(conn_id) is True
    pool.return_connection(conn_id)
    assert pool.health_check(conn_id) is True
    assert pool.cleanup() == 0
    time.sleep(0.1)
    assert pool.health_check(conn_id) is False, "idle past idle_timeout"
    assert pool.cleanup() == 1
    assert counts(pool) == (0, 0)
    assert pool.get_stats()["connections_closed"]["idle_timeout"] == 1
    wait_for(lambda: (server.connections, server.open_connections) == (1, 0))


def test_max_lifetime_never_closes_an_active_connection(server):
    pool = fresh(max_lifetime=0.3)
    conn_id = pool.get_connection(server.url)
    assert pool.connect(conn_id) is True
    assert pool.health_check(conn_id) is True
    wait_for(lambda: server.open_connections == 1)
    time.sleep(0.4)
    assert pool.cleanup() == 0
    assert counts(pool) == (1, 0)
    assert pool.health_check(conn_id) is False, "held past max_lifetime"
    time.sleep(0.05)  # time for the server to see a close, were there one
    assert server.open_connections == 1, "expired, but still its holder's: not closed"
    assert pool.return_connection(conn_id) is True
    assert counts(pool) == (0, 0)
    assert pool.get_stats()["connections_closed"]["max_lifetime"] == 1
    wait_for(lambda: server.open_connections == 0)


def test_background_reaper_closes_idle_connections():
    pool = fresh(idle_timeout=0.05)
    pool.configure(reaper_interval=0.02)
    pool.return_connection(pool.get_connection("http://h"))
    deadline = time.monotonic() + 5
    while counts(pool) != (0, 0):
        assert time.monotonic() < deadline, "the reaper never ran"
        time.sleep(0.01)
    assert pool.get_stats()["connections_closed"]["idle_timeout"] == 1


# --- stats ----------------------------------------------------------------------------------


def test_stats_schema():
    pool = fresh(max_connections=50, max_connections_per_endpoint=5, idle_timeout=None)
    conn_id = pool.get_connection("https://api.openai.com")
    s = pool.get_stats()
    assert s["settings"] == {
        "max_connections": 50,
        "max_connections_per_endpoint": 5,
        "idle_timeout": None,
        "max_lifetime": 300.0,
        "reaper_interval": None,
    }
    assert set(s) >= {
        "pool_name", "total_connections", "active_connections", "idle_connections",
        "waiting_requests", "connections_created", "connections_reused", "connections_closed",
        "waits", "wait_timeouts", "ignored_returns", "endpoints",
    }
    assert set(s["connections_closed"]) == {
        "idle_timeout", "max_lifetime", "unhealthy", "removed", "evicted", "not_reusable",
        "connect_failed",
    }
    assert s["endpoints"] == {"https://api.openai.com:443": {"active": 1, "idle": 0, "total": 1, **NOT_CONNECTED}}
    assert repr(pool) == f"SimpleConnectionPool({pool.pool_name!r}, active=1, idle=0, waiting=0)"
    pool.return_connection(conn_id)


def test_endpoint_stats_count_open_connections_by_http_version(server):
    pool = fresh()
    origin = server.url  # http://127.0.0.1:<port>, already an origin
    a, b = pool.get_connection(server.url), pool.get_connection(server.url)
    assert pool.get_stats()["endpoints"][origin] == {"active": 2, "idle": 0, "total": 2, **NOT_CONNECTED}
    assert pool.connect(a) is True
    stats = pool.get_stats()["endpoints"][origin]
    assert {k: stats[k] for k in ("active", "idle", "total", "http1_connections", "http2_connections")} == {
        "active": 2, "idle": 0, "total": 2, "http1_connections": 1, "http2_connections": 0,
    }, "one of the two has a socket (HTTP/1.1); a slot not yet connected is neither version"
    assert stats["connect_seconds"]["count"] == 1 and stats["tls_handshakes_full"] == 0
    pool.return_connection(a)
    assert pool.get_stats()["endpoints"][origin]["http1_connections"] == 1, "idle, still open"
    pool.remove_connection(b)
    pool.remove_connection(a)
    assert pool.get_stats()["endpoints"] == {}


def test_counts_match_the_tests_own_ledger_at_every_observation():
    """Threads take and give back connections and write down what they hold; an observer
    compares each snapshot with that ledger. A lock around each pool call and its ledger entry
    (and around each observation) makes the comparison exact.

    Pool calls hold the GIL, so these threads make one pool call at a time: this checks the
    counts across interleavings of calls, not concurrency inside the pool (the Rust tests do
    that: cargo test)."""
    pool = fresh(max_connections_per_endpoint=3)
    origins = {"http://a": "http://a:80", "http://b": "http://b:80"}
    lock = threading.Lock()
    held = {}  # id -> origin, what the threads hold
    given_back = [0]
    stop = threading.Event()
    errors = []

    def churn(n):
        rng = random.Random(n)
        mine = []
        while not stop.is_set():
            with lock:
                if mine and (len(mine) >= 3 or rng.random() < 0.5):
                    cid = mine.pop(rng.randrange(len(mine)))
                    del held[cid]
                    if pool.return_connection(cid) is not True:
                        errors.append(f"return of held {cid} was not True")
                    given_back[0] += 1
                else:
                    endpoint = rng.choice(list(origins))
                    cid = pool.get_connection(endpoint)
                    if cid is not None:
                        if cid in held:
                            errors.append(f"{cid} leased twice")
                        held[cid] = origins[endpoint]
                        mine.append(cid)
        with lock:
            for cid in mine:
                del held[cid]
                pool.return_connection(cid)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(2000):
            with lock:
                s = pool.get_stats()
                expected = {o: sum(1 for v in held.values() if v == o) for o in origins.values()}
                assert s["active_connections"] == len(held), (s, held)
                for origin, n in expected.items():
                    assert s["endpoints"].get(origin, {"active": 0})["active"] == n, (origin, s, held)
                    assert s["endpoints"].get(origin, {"total": 0})["total"] <= 3, s
                assert s["total_connections"] == s["connections_created"] - sum(s["connections_closed"].values())
                assert s["connections_created"] + s["connections_reused"] == len(held) + given_back[0], s
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert given_back[0] > 100, "the threads hardly ran"
    assert counts(pool)[0] == 0


# --- named pools and settings ---------------------------------------------------------------


def test_named_pools_are_independent_and_shared_by_name():
    name = f"test-{uuid.uuid4()}"
    a, a_again, b = SimpleConnectionPool(name), SimpleConnectionPool(name), fresh()
    conn_id = a.get_connection("http://h")
    assert counts(a_again) == (1, 0)
    assert counts(b) == (0, 0)
    assert a_again.return_connection(conn_id) is True
    assert a.pool_name == name


def test_conflicting_settings_raise_and_configure_applies_them():
    name = f"test-{uuid.uuid4()}"
    pool = SimpleConnectionPool(name, max_connections=10)
    SimpleConnectionPool(name, max_connections=10)  # the same settings are fine
    with pytest.raises(ValueError, match="already exists with other settings.*configure"):
        SimpleConnectionPool(name, max_connections=20)
    pool.configure(max_connections=20, idle_timeout=1.5)
    assert pool.settings["max_connections"] == 20
    assert pool.settings["idle_timeout"] == 1.5


@pytest.mark.parametrize(
    "settings, exc, words",
    [
        ({"max_connections": 0}, ValueError, "max_connections: must be at least 1"),
        ({"max_connections_per_endpoint": -3}, ValueError, "max_connections_per_endpoint"),
        ({"max_connections": "10"}, TypeError, "max_connections must be an int"),
        ({"max_connections": True}, TypeError, "max_connections must be an int"),
        ({"idle_timeout": 0}, ValueError, "idle_timeout: must be a positive number"),
        ({"max_lifetime": float("nan")}, ValueError, "max_lifetime"),
        ({"reaper_interval": "1s"}, TypeError, "reaper_interval must be a number"),
        ({"max_conections": 5}, TypeError, "unknown pool setting 'max_conections'"),
    ],
)
def test_bad_settings(settings, exc, words):
    with pytest.raises(exc, match=words):
        SimpleConnectionPool(f"test-{uuid.uuid4()}", **settings)
    pool = fresh()
    with pytest.raises(exc, match=words):
        pool.configure(**settings)


@pytest.mark.parametrize("name", ["", "x" * 300, "a\nb"])
def test_bad_pool_names(name):
    with pytest.raises(ValueError, match="pool_name"):
        SimpleConnectionPool(name)
    with pytest.raises(TypeError, match="pool_name must be a str"):
        SimpleConnectionPool(5)


def run_python(code, **env):
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result


def test_default_pool_settings_come_from_the_environment():
    code = "import fast_litellm; print(fast_litellm.get_connection_pool_stats()['settings'])"
    r = run_python(
        code,
        FAST_LITELLM_MAX_CONNECTIONS="7",
        FAST_LITELLM_MAX_CONNECTIONS_PER_ENDPOINT="3",
        FAST_LITELLM_IDLE_TIMEOUT="2.5",
        FAST_LITELLM_MAX_LIFETIME="none",
        FAST_LITELLM_REAPER_INTERVAL="off",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (
        "{'max_connections': 7, 'max_connections_per_endpoint': 3, 'idle_timeout': 2.5, "
        "'max_lifetime': None, 'reaper_interval': None}"
    )
    r = run_python(code, FAST_LITELLM_MAX_CONNECTIONS="lots")
    assert r.returncode == 1
    assert "ValueError: invalid pool setting FAST_LITELLM_MAX_CONNECTIONS" in r.stderr


# --- fork -----------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_with_empty_pools():
    pool = fresh(max_connections_per_endpoint=1)
    held = pool.get_connection("http://h")
    stop = threading.Event()

    def churn():  # keeps the pool's locks busy around the fork
        other = SimpleConnectionPool(pool.pool_name)
        while not stop.is_set():
            other.get_stats()

    t = threading.Thread(target=churn)
    t.start()
    try:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            try:
                ok = counts(pool) == (0, 0)
                child_id = pool.get_connection("http://h")
                ok = ok and child_id is not None and child_id != held
                ok = ok and pool.return_connection(child_id)
                ok = ok and SimpleConnectionPool(pool.pool_name).get_stats()["idle_connections"] == 1
                os.write(write_fd, b"ok" if ok else b"bad")
            finally:
                os._exit(0)
        os.close(write_fd)
        _, status = os.waitpid(pid, 0)
        assert os.read(read_fd, 16) == b"ok"
        assert status == 0
    finally:
        stop.set()
        t.join()
    assert counts(pool) == (1, 0), "the parent's pool is untouched"
    assert pool.return_connection(held)
