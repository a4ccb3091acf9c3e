"""What many tests share: a pool of their own, and waiting for a condition.

(The peers tests talk to are in servers.py; the HTTP/2 one in h2server.py.)"""

from __future__ import annotations

import time
import uuid

from fast_litellm import SimpleConnectionPool


def new_pool(**settings) -> SimpleConnectionPool:
    """A pool of the test's own (a fresh name), its reaper off unless the test asks for one."""
    settings.setdefault("reaper_interval", None)
    return SimpleConnectionPool(f"test-{uuid.uuid4()}", **settings)


def eventually(condition, timeout: float = 5.0) -> bool:
    """Whether `condition` became true within `timeout` seconds (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
