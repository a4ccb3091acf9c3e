"""The opt-in that puts the openai SDK's own clients on fast_litellm's pool: ``openai.OpenAI()`` and
``openai.AsyncOpenAI()`` made without an ``http_client`` (their default clients,
``SyncHttpxClientWrapper`` / ``AsyncHttpxClientWrapper``) get fast_litellm's transports, so an
application that calls the SDK beside LiteLLM shares the same connections.

Off by default (it changes a library LiteLLM does not own): ``fast_litellm.install_openai_sdk()``,
or ``FAST_LITELLM_OPENAI_SDK=1`` at import. Works whether openai is imported before or after; its
clients made before keep their own transport. openai 3.x builds on httpx2, older releases on httpx:
the transports are those of the library the SDK's client class is built on.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from fast_litellm import _locks
from fast_litellm._after_import import AfterImport
from fast_litellm._client_default import DefaultTransport

__all__ = ["install_openai_sdk", "openai_sdk_status", "uninstall_openai_sdk", "wanted_by_environment"]

SDK_MODULE = "openai._base_client"
_CLIENT_CLASSES = (("SyncHttpxClientWrapper", False), ("AsyncHttpxClientWrapper", True))


class _State:
    def __init__(self) -> None:
        self.lock = _locks.lock()
        self.wanted = False
        self.finder: Optional[AfterImport] = None
        self.defaults: list[DefaultTransport] = []
        self.transports: dict[tuple, Any] = {}  # (library name, is_async) -> the shared transport
        self.problem: Optional[str] = None


_state = _State()


def _our_transport_classes() -> list:
    """(sync, async) transport classes of each library loaded: httpx's, and httpx2's when httpx2 is
    (the SDK's client classes are built on one of them). Imports: never called under the lock."""
    from fast_litellm import _transport

    classes = [(_transport.HTTPTransport, _transport.AsyncHTTPTransport)]
    if "httpx2" in sys.modules:
        from fast_litellm import httpx2 as ours2

        classes.append((ours2.HTTPTransport, ours2.AsyncHTTPTransport))
    return classes


def _transport_for(cls: type, is_async: bool, classes: list) -> Any:
    """The shared transport of the library ``cls`` is a client of, made once; None for neither."""
    for pair in classes:
        chosen = pair[is_async]
        library = chosen.library.module
        if issubclass(cls, library.AsyncClient if is_async else library.Client):
            key = (chosen.library.name, is_async)
            if key not in _state.transports:
                _state.transports[key] = chosen()
            return _state.transports[key]
    return None


def _patch(module: Any, classes: list) -> None:
    """Called with the lock held (also inside openai's import: it must never raise there)."""
    for name, is_async in _CLIENT_CLASSES:
        cls = getattr(module, name, None)
        transport = None
        if isinstance(cls, type) and len(cls.__bases__) == 1:
            transport = _transport_for(cls, is_async, classes)
        if transport is None:
            _state.problem = (f"this openai release has no {name} built on httpx or httpx2: its default "
                              "clients keep their own transport")
            continue
        _state.defaults.append(DefaultTransport(cls, transport))


def _patch_as_it_loads(finder: AfterImport, fullname: str, module: Any) -> None:
    classes = _our_transport_classes()  # the SDK's import has loaded its httpx(2) by now
    with _state.lock:
        finder.remove()
        _state.finder = None
        if _state.wanted:
            _patch(module, classes)


def wanted_by_environment() -> bool:
    """``FAST_LITELLM_OPENAI_SDK`` set to anything but 0/false/no/off (as FAST_LITELLM_DISABLE)."""
    from fast_litellm.litellm.settings import env_flag

    return bool(env_flag("FAST_LITELLM_OPENAI_SDK"))


def install_openai_sdk() -> None:
    """Gives the openai SDK's default clients (``openai.OpenAI()``, ``openai.AsyncOpenAI()`` without
    ``http_client``) fast_litellm's transports over the default pool. Safe to call again."""
    classes = _our_transport_classes()
    with _state.lock:
        if _state.wanted:
            return
        _state.wanted = True
        module = sys.modules.get(SDK_MODULE)
        if module is not None:
            _patch(module, classes)
        else:
            _state.finder = AfterImport({SDK_MODULE}, _patch_as_it_loads)
            sys.meta_path.insert(0, _state.finder)


def uninstall_openai_sdk() -> None:
    """Puts the SDK's default clients back on their own transports (clients made before keep ours)."""
    with _state.lock:
        _state.wanted = False
        if _state.finder is not None:
            _state.finder.remove()
            _state.finder = None
        for default in _state.defaults:
            default.remove()
        _state.defaults.clear()
        _state.problem = None


def openai_sdk_status() -> dict:
    """Whether the opt-in is on, and where it stands: ``hooked`` (the SDK's client classes get our
    transports), ``waiting for openai's import``, or off; the requests its transports sent."""
    with _state.lock:
        if not _state.wanted:
            hook = "off"
        elif _state.finder is not None:
            hook = "waiting for openai's import"
        else:
            hook = "fast_litellm" if _state.defaults else "missing in this openai"
        return {"hook": hook, "problem": _state.problem,
                "requests": sum(t.stats()["requests"] for t in _state.transports.values())}
