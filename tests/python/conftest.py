import os
import sys
from pathlib import Path

import pytest

# The counting servers are shared with the demo.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "demo"))

# FAST_LITELLM_TEST_LIBRARY=httpx2 runs the suite with `import httpx` resolving to httpx2
# (httpx2.alias_httpx(), before anything imports httpx): every test then drives fast_litellm's
# transports as httpx2 clients see them, and compares with httpx2's own transport. `make test`
# runs the behaviour suites this way too (Makefile: HTTPX2_SUITES).
if os.environ.get("FAST_LITELLM_TEST_LIBRARY") == "httpx2":
    import httpx2

    httpx2.alias_httpx()

from servers import Server  # noqa: E402 - after the alias: servers.py imports httpx


@pytest.fixture
def server():
    """The counting HTTP/1.1 server of servers.py, on 127.0.0.1, for one test (a file with a peer
    of its own defines its own `server`)."""
    with Server() as s:
        yield s

