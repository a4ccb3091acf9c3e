"""What many tests share: a pool of their own, waiting for a condition, and one client face
for sync and async transports.

(The peers tests talk to are in servers.py; the HTTP/2 one in h2server.py.)"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx

from fast_litellm import SimpleConnectionPool

# The shared harness (this directory: servers, workloads run as processes of their own) and the
# repository's root; the tests themselves are in subdirectories, one per concern.
HARNESS = Path(__file__).resolve().parent
ROOT = HARNESS.parents[1]


def new_pool(**settings) -> SimpleConnectionPool:
    """A pool of the test's own (a fresh name), its reaper off unless the test asks for one."""
    settings.setdefault("reaper_interval", None)
    return SimpleConnectionPool(f"test-{uuid.uuid4()}", **settings)


def active(pool) -> int:
    """How many of the pool's connections are checked out now."""
    return pool.get_stats()["active_connections"]


def eventually(condition, timeout: float = 5.0) -> bool:
    """Whether `condition` became true within `timeout` seconds (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class SyncFace:
    """An httpx client over a sync or an async transport (`kind` ends with "async"), with a sync
    face: the async one runs on a private event loop, so each test is written once."""

    def __init__(self, kind: str, transport, timeout: float) -> None:
        self.kind = kind
        self.is_async = kind.endswith("async")
        if self.is_async:
            self.loop = asyncio.new_event_loop()
            self.client = httpx.AsyncClient(transport=transport, timeout=timeout)
        else:
            self.client = httpx.Client(transport=transport, timeout=timeout)

    def _run(self, awaitable):
        return self.loop.run_until_complete(awaitable)

    def request(self, method, url, **kw) -> httpx.Response:
        if self.is_async:
            return self._run(self.client.request(method, url, **kw))
        return self.client.request(method, url, **kw)

    def close(self) -> None:
        if self.is_async:
            self._run(self.client.aclose())
            self._run(self.loop.shutdown_asyncgens())
            self.loop.close()
        else:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
