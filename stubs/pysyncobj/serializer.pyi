from collections.abc import Callable
from typing import Any

# Re-exported from pysyncobj.atomic_replace (os.rename off Windows); raftpg wraps it (journal.py, durability.py).
atomicReplace: Callable[[str, str], Any]
