"""Watchdogs: a hardware/softdog device that resets the machine if the agent stops kicking it.

- ``base.py``: the mode setting and ``NullWatchdog`` (mode off).
- ``linux.py``: /dev/watchdog through its ioctls (set timeout, keepalive, get timeout, magic close).
- ``double.py``: a software double that records what was asked of it (no /dev/watchdog on CI machines).

The fencing of a stranded primary that does not need a device lives in ``raftpg.pg.supervisor``.
May import: stdlib only.
"""
