"""Every async request finishes, whatever its timeouts and wherever a cancellation lands: the
short run of never_hang.py (`make stress` runs the long one). It fails on any request still
pending at its bound, any task left pending, or a connection left active in the pool."""

import pytest

from never_hang import run_never_hang

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
