"""The event loops' side of async requests: one bridge per asyncio loop or trio run, through which
the Rust runtime hands results to Python, and the futures they are set on.

A bridge (``_core.LoopBridge``) queues results from the runtime's threads and wakes the loop
through an eventfd the loop watches; the loop then sets them on their futures, many per
wake-up under load. asyncio watches it with ``loop.add_reader``; trio with a system task of each
run, and its futures are parked trio tasks.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

import sniffio

from fast_litellm import _core, _locks

# Trio names itself here while it runs (also in guest mode); asyncio leaves it None, so the
# asyncio path costs one attribute load.
_running_library = sniffio.thread_local
logger = logging.getLogger("fast_litellm")

# One bridge per asyncio event loop, held only by that loop: its reader (a _Reader, registered
# with loop.add_reader) holds the bridge, and this module holds neither strongly. Why: a bridge
# can hold results not yet set on their futures when its loop ends (they arrived after the
# loop's last poll), and those futures refer to the loop; a strong reference here would keep an
# ended loop alive through them (the garbage collector cannot see inside the Rust bridge). An
# asyncio loop drops its readers when it is closed, and with them the bridge and its eventfd.
# Keyed by id(loop): a live reader holds its loop, so the id names that loop while the entry lives.
_readers: "weakref.WeakValueDictionary[int, _Reader]" = weakref.WeakValueDictionary()
_lock = _locks.lock()


class _Reader:
    """What the loop calls when its bridge's descriptor is readable; it holds the bridge."""

    __slots__ = ("loop", "bridge", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.bridge = _core.LoopBridge()

    def __call__(self) -> None:
        self.bridge.deliver_ready()


def _no_reader() -> None:
    return None


# The reader looked up last, replaced as one reference: the common case is one loop, whose
# bridge is then found with one weak-reference call.
_last_reader: Any = _no_reader


def _asyncio_bridge(loop: asyncio.AbstractEventLoop) -> Any:
    global _last_reader
    reader = _last_reader()
    if reader is not None and reader.loop is loop:
        return reader.bridge
    with _lock:
        reader = _readers.get(id(loop))
        if reader is None:
            reader = _Reader(loop)
            _watch(loop, reader.bridge.fileno(), reader)
            _readers[id(loop)] = reader
    _last_reader = weakref.ref(reader)
    return reader.bridge


def _watch(loop: asyncio.AbstractEventLoop, fd: int, reader: _Reader) -> None:
    """Has the loop watch the bridge's new eventfd. A descriptor that other code of this loop
    closed while it was still watched leaves its number in the loop's selector map; if the
    eventfd gets that number, ``add_reader`` would only update that entry (same events: no
    ``epoll_ctl``) and the kernel would never watch the eventfd: every result of the loop would
    arrive with nobody woken, its requests pending forever. Whatever entry the number has is
    stale (the eventfd was just opened), so it goes first and ``add_reader`` registers anew."""
    loop.remove_reader(fd)
    loop.remove_writer(fd)
    loop.add_reader(fd, reader)


def forget_bridges() -> None:
    """In a forked child: the parent's loops and their descriptors are not ours."""
    global _last_reader
    _readers.clear()
    _last_reader = _no_reader


# Under trio the bridge is the same; the future is a parked trio task, and a system task of
# each trio run watches that run's bridge.

_trio_bridges: Any = None  # a trio.lowlevel.RunVar: each trio run's bridge, forgotten at run end


def in_trio() -> bool:
    """Whether the caller runs under trio (also under anyio, and in trio's guest mode)."""
    return _running_library.name is not None and sniffio.current_async_library() == "trio"


def backend() -> tuple:
    """A future factory and the bridge for the running event loop: asyncio's, or a trio run's
    (also under anyio)."""
    if in_trio():
        return _TrioFuture, _trio_bridge()
    loop = asyncio.get_running_loop()
    return loop.create_future, _asyncio_bridge(loop)


def _trio_bridge() -> Any:
    global _trio_bridges
    import trio

    if _trio_bridges is None:
        with _lock:
            if _trio_bridges is None:
                _trio_bridges = trio.lowlevel.RunVar("fast_litellm.bridge")
    bridge = _trio_bridges.get(None)
    if bridge is None:
        bridge = _core.LoopBridge()
        _trio_bridges.set(bridge)
        trio.lowlevel.spawn_system_task(_serve_trio_bridge, bridge, name="fast_litellm bridge")
    return bridge


async def _serve_trio_bridge(bridge: Any) -> None:
    """Sets the results the runtime hands over; cancelled (its fd watch ended) at run end."""
    import trio

    fd = bridge.fileno()
    try:
        while True:
            await trio.lowlevel.wait_readable(fd)
            try:
                bridge.deliver_ready()
            except Exception:  # an error here must not end the user's trio run
                logger.exception("fast_litellm: handing results to trio failed")
    finally:
        # The bridge and its eventfd go with the run, not at the next garbage collection.
        _trio_bridges.set(None)


class _TrioFuture:
    """What the bridge sets a result on for a trio task: the task is parked until then. A
    cancelled task marks it cancelled, so its result is dropped (which returns or closes its
    connection); the awaiting code cancels the request itself."""

    __slots__ = ("_task", "_outcome", "_cancelled")

    def __init__(self) -> None:
        self._task: Any = None
        self._outcome: Any = None
        self._cancelled = False

    def cancelled(self) -> bool:
        return self._cancelled

    def set_result(self, value: Any) -> None:
        import outcome

        self._settle(outcome.Value(value))

    def set_exception(self, exc: BaseException) -> None:
        import outcome

        self._settle(outcome.Error(exc))

    def _settle(self, result: Any) -> None:
        if self._outcome is not None or self._cancelled:
            return
        self._outcome = result
        task, self._task = self._task, None
        if task is not None:
            import trio

            trio.lowlevel.reschedule(task, result)

    def _abort(self, raise_cancel: Any) -> Any:
        import trio

        self._cancelled = True
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def __await__(self):
        if self._outcome is not None:
            return self._outcome.unwrap()
        import trio

        self._task = trio.lowlevel.current_task()
        return (yield from trio.lowlevel.wait_task_rescheduled(self._abort).__await__())
