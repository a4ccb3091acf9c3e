"""The one definition of a latency percentile (p90, p99) that every benchmark and report uses."""

from __future__ import annotations

from typing import Iterable


def nearest_rank(values: Iterable[float], percent: int) -> float:
    """The nearest-rank percentile: the smallest value with at least ``percent``% of the values at
    or below it, i.e. the ``ceil(percent / 100 * n)``-th smallest (so p99 of up to 100 values is
    the largest). Whole percents in integer arithmetic: no float rounding picks the rank."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], not {percent!r}")
    rank = -(-percent * len(ordered) // 100)  # ceil without floats
    return ordered[rank - 1]
