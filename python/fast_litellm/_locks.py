"""Every lock of the package, made anew in a forked child.

A child keeps only the thread that forked: a lock another thread held at that moment would stay
held in the child for ever (that thread is not there to release it), and the child's first use of
it would hang. So the package's locks are made here, and its after-fork step
(fast_litellm/__init__.py) resets them all, as the logging module does for its handlers' locks.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

_made: "weakref.WeakSet[Any]" = weakref.WeakSet()


def lock() -> Any:
    made = threading.Lock()
    _made.add(made)
    return made


def rlock() -> Any:
    made = threading.RLock()
    _made.add(made)
    return made


def reset_after_fork() -> None:
    """In a forked child: every lock made here is released (whoever held it in the parent)."""
    for made in list(_made):
        made._at_fork_reinit()
