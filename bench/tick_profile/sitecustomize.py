"""Loaded by every Python process started with this directory on PYTHONPATH (``kv_scale.py ticks``).

With ``RAFTPG_TICK_PROFILE_DIR`` set, pysyncobj's ``SyncObj._onTick`` runs under cProfile measuring the
thread's CPU time (its poll's waiting is not counted), and after ``RAFTPG_TICK_PROFILE_S`` seconds of ticks
the profile is written to ``tick-<pid>.prof`` in that directory. Without the variable it does nothing.
Bench-only: nothing in raftpg loads it.
"""

import os

if os.environ.get("RAFTPG_TICK_PROFILE_DIR"):
    import cProfile
    import time

    import pysyncobj.syncobj as _syncobj

    _tick = _syncobj.SyncObj._onTick
    _state: dict = {"profile": None, "since": 0.0, "written": False}
    _seconds = float(os.environ.get("RAFTPG_TICK_PROFILE_S", "40"))

    def _profiled_tick(self, timeToWait=0.0):  # noqa: N803 - pysyncobj's name
        if _state["profile"] is None:
            _state["profile"], _state["since"] = cProfile.Profile(time.thread_time), time.monotonic()
        profile = _state["profile"]
        profile.enable()
        try:
            return _tick(self, timeToWait)
        finally:
            profile.disable()
            if not _state["written"] and time.monotonic() - _state["since"] > _seconds:
                path = os.path.join(os.environ["RAFTPG_TICK_PROFILE_DIR"], f"tick-{os.getpid()}.prof")
                profile.dump_stats(path)
                _state["written"] = True

    _syncobj.SyncObj._onTick = _profiled_tick
