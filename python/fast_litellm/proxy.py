"""The LiteLLM Proxy callback: turns fast_litellm on with one line of config, in every worker.

.. code-block:: yaml

    litellm_settings:
      callbacks: ["fast_litellm.proxy.callback", "prometheus"]

The proxy's config loader imports this module in each worker that loads the config (any
``--num_workers``) and takes :data:`callback` from it. Importing it installs the hooks (unless
``FAST_LITELLM_DISABLE=1``) and, once prometheus_client is loaded (the ``prometheus``
callback loads it), exports the pool's figures to the proxy's ``/metrics``. See
docs/litellm-proxy.md.

:data:`callback` itself does nothing per request: it is a ``CustomLogger`` whose hooks are
LiteLLM's no-op defaults, there because the loader wants a callback object.
"""

from __future__ import annotations

import logging
import os

import fast_litellm
from fast_litellm import _prewarm
from fast_litellm.litellm.settings import env_flag
from fast_litellm.litellm.state import state
from litellm.integrations.custom_logger import CustomLogger

__all__ = ["FastLiteLLMCallback", "callback"]

logger = logging.getLogger("fast_litellm")


class FastLiteLLMCallback(CustomLogger):
    """What ``fast_litellm.proxy.callback`` names: a LiteLLM callback whose import installed
    fast_litellm in this worker. ``status()`` is :func:`fast_litellm.status`."""

    def status(self) -> dict:
        return fast_litellm.status()

    def __repr__(self) -> str:
        shown = "installed" if state.installed else "not installed"
        if env_flag("FAST_LITELLM_DISABLE"):
            shown += " (FAST_LITELLM_DISABLE)"
        return f"<fast_litellm {fast_litellm.__version__} {shown}, pid {os.getpid()}>"


# `import fast_litellm` above installed the hooks (LiteLLM is loaded: they go in at once, and
# the clients LiteLLM cached are dropped). Installing again is a no-op; kept explicit so that
# this module's purpose reads from its code.
fast_litellm.install()
if state.installed:
    # FAST_LITELLM_PREWARM=N: N connections to each deployment, once the config's router is up.
    _prewarm.start_for_proxy()
callback = FastLiteLLMCallback()
logger.info("fast_litellm: %r", callback)
