"""One httpx-shaped library as the transports see it: httpx, or httpx2 (the openai SDK's since 3.x).

The two share their API and their transport protocol, but not their classes: each client checks
``isinstance`` against its own byte-stream base, raises its own exception classes and traces with
its own httpcore. So the transports are written once against a ``Library``, and each library gets
thin transport classes of its own (``fast_litellm.HTTPTransport`` for httpx,
``fast_litellm.httpx2.HTTPTransport`` for httpx2) through ``Library.stream_class``.
"""

from __future__ import annotations

import importlib
from typing import Any

from fast_litellm import _core, _locks

__all__ = ["Library"]

# The engine's exceptions, by the name of the class each library has for them.
_ERROR_NAMES = {
    _core.PoolTimeout: "PoolTimeout",
    _core.ConnectError: "ConnectError",
    _core.ConnectTimeout: "ConnectTimeout",
    _core.ReadTimeout: "ReadTimeout",
    _core.WriteTimeout: "WriteTimeout",
    _core.ReadError: "ReadError",
    _core.WriteError: "WriteError",
    _core.RemoteProtocolError: "RemoteProtocolError",
    _core.LocalProtocolError: "LocalProtocolError",
    _core.UnsupportedProtocol: "UnsupportedProtocol",
    _core.ProxyError: "ProxyError",
}
# What the engine raises (every request-level error is a TransportError, but a pool timeout).
ENGINE_ERRORS = (_core.TransportError, _core.PoolTimeout)

# The httpcore that goes with each library, for the `trace` extension's request objects.
_CORES = {"httpx": "httpcore", "httpx2": "httpcore2"}


class Library:
    """The names the transports use of one library (``module``: httpx or httpx2), read once."""

    _known: dict = {}
    _lock = _locks.lock()

    def __init__(self, module: Any) -> None:
        self.module = module
        self.name: str = module.__name__
        self.Response = module.Response
        self.ByteStream = module.ByteStream
        self.SyncByteStream = module.SyncByteStream
        self.AsyncByteStream = module.AsyncByteStream
        self.URL = module.URL
        self.Proxy = module.Proxy
        self.RequestNotRead = module.RequestNotRead
        self.LocalProtocolError = module.LocalProtocolError
        self.TransportError = module.TransportError
        # httpx's own transports, for the proxies only they can carry (socks; an own SSL context).
        self.HTTPTransport = module.HTTPTransport
        self.AsyncHTTPTransport = module.AsyncHTTPTransport
        # How httpx matches proxy keys and reads the environment's proxies: the same rules here.
        self.URLPattern = module._utils.URLPattern
        self.environment_proxies = module._utils.get_environment_proxies
        self._errors = {engine: getattr(module, name) for engine, name in _ERROR_NAMES.items()}
        self._core: Any = None

    @classmethod
    def of(cls, module: Any) -> "Library":
        """The one ``Library`` of ``module`` (with ``httpx2.alias_httpx()``, httpx is httpx2: one)."""
        library = cls._known.get(module.__name__)
        if library is None:
            with cls._lock:
                library = cls._known.setdefault(module.__name__, cls(module))
        return library

    def error(self, exc: BaseException, request: Any) -> Any:
        """The library's exception for an engine exception, with the engine's message."""
        return self._errors.get(type(exc), self.TransportError)(str(exc), request=request)

    @property
    def core(self) -> Any:
        """The library's httpcore (imported on first use: only the ``trace`` extension needs it)."""
        if self._core is None:
            self._core = importlib.import_module(_CORES.get(self.name, "httpcore"))
        return self._core

    def stream_class(self, mixin: type, is_async: bool) -> type:
        """``mixin`` (a byte stream written for any library) as a byte stream of this one."""
        base = self.AsyncByteStream if is_async else self.SyncByteStream
        return type(mixin.__name__, (mixin, base), {"__module__": mixin.__module__, "library": self})
