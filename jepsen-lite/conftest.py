"""Make ``jepsen_lite`` importable when pytest runs ``jepsen-lite/tests`` from the repository root."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
