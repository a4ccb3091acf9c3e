"""The ``python -m fast_litellm`` entry point: ``status`` / ``check URL``, run by _cli.py."""

import sys

from fast_litellm._cli import main

sys.exit(main())
