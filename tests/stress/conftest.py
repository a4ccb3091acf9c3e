import sys
from pathlib import Path

# The counting servers are shared with the demo.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "demo"))
