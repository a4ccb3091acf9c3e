"""``python -m fast_litellm status`` / ``python -m fast_litellm check URL`` (see _cli.py)."""

import sys

from fast_litellm._cli import main

sys.exit(main())
