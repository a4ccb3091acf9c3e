"""A transport given by default to every client of an httpx (or httpx2) Client subclass that other
code constructs: LiteLLM's ``OpenAIHTTPClient`` classes, the openai SDK's default clients.

Such classes build their clients with no ``transport`` argument, so httpx makes a transport of its
own for each (an SSL context and a connection pool: 19 ms and a new connection per client, measured
for ``httpx.Client()`` on the 2-core VM). A class between the subclass and its base, whose
``__init__`` only adds ``transport=`` when none is given, changes that and nothing else: the
subclass's own ``__init__`` still runs with its arguments (timeouts, redirects), and its instances
are still instances of everything they were. Taken out again by ``remove``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DefaultTransport"]


class DefaultTransport:
    """``transport`` for every client of ``cls`` made without one, until ``remove()``."""

    def __init__(self, cls: type, transport: Any) -> None:
        self.cls = cls
        (self.base,) = cls.__bases__  # the classes this is used on have one base

        def __init__(client: Any, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("transport") is None:
                kwargs["transport"] = transport
            super(between, client).__init__(*args, **kwargs)

        doc = f"{self.base.__name__}, with fast_litellm's transport when none is given ({__name__})."
        between = type(f"{cls.__name__}OnFastLiteLLM", (self.base,),
                       {"__init__": __init__, "__module__": __name__, "__doc__": doc})
        cls.__bases__ = (between,)

    def remove(self) -> None:
        self.cls.__bases__ = (self.base,)
