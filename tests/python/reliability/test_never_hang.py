"""Every async request finishes, whatever its timeouts and wherever a cancellation lands: the
short run of never_hang.py (`make stress` runs the long one). It fails on any request still
pending at its bound, any task left pending, or a connection left active in the pool."""

import asyncio
import socket

import httpx
import pytest

import fast_litellm
from fast_litellm import _loops
from never_hang import run_never_hang
from servers import Server

N = 1500  # per run (HTTP/1.1, HTTP/2, trio): a few seconds on the 2-core VM


@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed", [1])
def test_every_request_finishes_and_the_pool_empties(seed):
    result = run_never_hang(N, seed)
    outcomes = result["outcomes"]
    assert outcomes.get("hung", 0) == 0, result
    assert outcomes.get("tasks left pending", 0) == 0, result
    assert result["active_connections"] == 0, result
    finished = sum(v for k, v in outcomes.items() if k not in ("hung", "tasks left pending"))
    assert finished == result["requests"], result
    # The run reached what it is for: timeouts of several kinds, cancellations, and responses.
    assert outcomes.get("response", 0) and outcomes.get("cancelled", 0), result
    assert {"PoolTimeout", "ReadTimeout", "ConnectTimeout"} & set(outcomes), result


def test_a_stale_selector_entry_on_the_bridges_descriptor_number_does_not_hang_the_loop():
    """A socket closed while its loop still watched it (a bug of other code, or a library's)
    leaves its number in asyncio's selector map. The bridge's eventfd, opened next, gets that
    number: registered by updating the stale entry, the kernel never watched it and every
    request of the loop stayed pending forever, the loop idle in select. httpx's own transport
    is no reference here (it fails its connect on that number: ConnectError)."""
    server = Server()
    try:
        async def main():
            loop = asyncio.get_running_loop()
            stale, other = socket.socketpair()
            loop.add_reader(stale.fileno(), lambda: None)
            number = stale.fileno()
            stale.close()  # no remove_reader: the loop's map keeps `number`
            other.close()
            async with httpx.AsyncClient(transport=fast_litellm.AsyncHTTPTransport()) as client:
                response = await asyncio.wait_for(client.get(server.url + "/json"), 10)
            # What the test is about: the bridge's eventfd took the stale number.
            assert _loops.backend()[1].fileno() == number
            return response

        response = asyncio.run(main())
        assert response.status_code == 200 and response.json()
        assert server.requests == 1
    finally:
        server.close()
