"""fast_litellm's integration with LiteLLM: the hooks (hooks.py), the settings of LiteLLM's they
read (settings.py), and their state (state.py), which the metrics, prewarming and the LiteLLM
Proxy callback read."""

from fast_litellm.litellm.hooks import install, status, uninstall
from fast_litellm.litellm.state import transports

__all__ = ["install", "status", "transports", "uninstall"]
