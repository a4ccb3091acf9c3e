"""Code run right after a module's import, whoever imports it: the sys.meta_path finder that
LiteLLM's hooks (litellm/hooks.py) and the Prometheus export (_metrics.py) wait with."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Any, Callable, Iterable


class AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``then(finder, name, module)`` right after one of ``names`` has run its code, before
    its import returns. It loads nothing itself: it finds the module as the path finder would and
    wraps its loader's ``exec_module``. Its owner puts it into ``sys.meta_path`` (first) and takes
    it out with ``remove()``."""

    def __init__(self, names: Iterable[str], then: Callable[[AfterImport, str, Any], None]) -> None:
        self.names = set(names)
        self.then = then

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        original_exec = spec.loader.exec_module
        finder = self

        def exec_module(module: Any) -> None:
            original_exec(module)
            finder.then(finder, fullname, module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)
