"""``raft.data_dir``: private to the user that runs the node, checked before anything in it is read.

pysyncobj unpickles its journal, its ``.meta`` side file and its snapshot at start: whoever can write
them runs code as this user. So before the node reads them, :func:`secure_data_dir`

- creates the directory 0700 if it is missing;
- refuses to start (:class:`~raftpg.consensus.settings.RaftConfigError`, one line naming
  ``raft.data_dir``) if the directory or anything in it is owned by another user, is writable by
  group or others, or is a symbolic link (inside the directory; the directory itself may be one).
  A file that was writable may already have been altered: the operator has to look, then fix the mode;
- tightens what is merely readable by others: directories to 0700, files to 0600, whoever created
  them (an older raftpg, a restore with ``cp``, a process with a loose umask).

Files the node writes later are made 0600 as they appear (journal.py, recovery.py).
"""

from __future__ import annotations

import logging
import os
import stat

from raftpg.consensus.settings import RaftConfigError

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
_WHY = ("Raft unpickles its files at start, so whoever can write them can run code as this user: "
        "check they were not altered")


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def _check(path: str, st: os.stat_result, uid: int) -> None:
    if st.st_uid != uid:
        raise RaftConfigError(f"raft.data_dir: {path} is owned by {_owner(st.st_uid)}, not by "
                              f"{_owner(uid)} that runs this node; {_WHY}, then chown it")
    if st.st_mode & 0o022:
        raise RaftConfigError(f"raft.data_dir: {path} is writable by group or others (mode "
                              f"{stat.S_IMODE(st.st_mode):04o}); {_WHY}, then chmod go-w it")


def _tighten(path: str, st: os.stat_result, mode: int) -> None:
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
        log.info("raft: %s was mode %04o, now %04o", path, stat.S_IMODE(st.st_mode), mode)


def secure_data_dir(data_dir: str) -> None:
    uid = os.geteuid()
    try:
        os.makedirs(data_dir, mode=DIR_MODE, exist_ok=True)
        top = os.stat(data_dir)
    except OSError as exc:
        raise RaftConfigError(f"raft.data_dir: cannot create {data_dir}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(top.st_mode):
        raise RaftConfigError(f"raft.data_dir: {data_dir} is not a directory")
    _check(data_dir, top, uid)
    checked: list[tuple[str, os.stat_result, int]] = [(data_dir, top, DIR_MODE)]
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                raise RaftConfigError(f"raft.data_dir: {path} is a symbolic link; the Raft files must be "
                                      "regular files of this user")
            _check(path, st, uid)
            checked.append((path, st, DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE))
    for path, st, mode in checked:  # nothing is changed unless everything passed
        try:
            _tighten(path, st, mode)
        except OSError as exc:
            raise RaftConfigError(f"raft.data_dir: cannot chmod {path}: {exc.strerror or exc}") from None
