"""fast_litellm's transports for httpx2 clients (the openai SDK's since 3.x): the same pool, engine,
arguments and behaviour as ``fast_litellm.HTTPTransport`` / ``AsyncHTTPTransport``, with httpx2's
byte streams and exception classes::

    import httpx2, fast_litellm.httpx2
    client = httpx2.Client(transport=fast_litellm.httpx2.HTTPTransport())

Needs httpx2 installed (CPython 3.11+); importing this module imports it.
"""

import httpx2

from fast_litellm._transport import HTTPTransport as _HttpxTransport
from fast_litellm._transport import AsyncHTTPTransport as _HttpxAsyncTransport
from fast_litellm._transport import AsyncPoolTransport, SyncPoolTransport

__all__ = ["AsyncHTTPTransport", "HTTPTransport"]


class HTTPTransport(SyncPoolTransport, httpx2.BaseTransport, library=httpx2):
    __doc__ = _HttpxTransport.__doc__


class AsyncHTTPTransport(AsyncPoolTransport, httpx2.AsyncBaseTransport, library=httpx2):
    __doc__ = _HttpxAsyncTransport.__doc__
