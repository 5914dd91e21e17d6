"""A node's Raft files, and recovery when a majority of the voters is permanently lost.

Files in ``data_dir`` (``<stem>`` is the node's ``self_addr`` with ``:`` replaced):

- ``<stem>.journal`` (+ ``.meta``) and ``<stem>.dump``: pysyncobj's log (mmap, no fsync per entry),
  its term/vote/commit-index side file, and its snapshot after log compaction;
- ``<stem>.members.json``: the voters this node last saw (written when membership changes). On restart
  it replaces the configured ``partner_addrs``, so a node started with an out-of-date partner list
  still rejoins the current members. Using the *current* members as the starting point is exact:
  pysyncobj replays the membership entries of its log on top, and each entry sets one member's presence,
  so replaying them over a list that already includes them changes nothing;
- ``force-new-cluster.seed.json`` / ``force-new-cluster.applied.json``: see below.

Majority loss (``force_new_cluster``), the procedure of docs and tests:

1. Stop the survivor. Make sure the lost members never come back with their old data (their old log
   could elect a leader of the old configuration: two clusters). Wipe them before re-adding them.
2. Start the survivor once with ``force_new_cluster`` (its partners are ignored: it starts alone).
   :func:`prepare_new_cluster` rebuilds the KV state offline from the dump plus *every* entry of the
   journal (entries past the last commit index it wrote are included, as etcd's
   ``--force-new-cluster`` does: with the majority gone, this log is the best record left) and writes
   it to ``force-new-cluster.seed.json`` (fsynced); :func:`start_from_seed` then moves the old files to
   ``before-force-new-cluster-<n>/`` (kept, never deleted).
3. The node starts a fresh log as a one-node cluster, commits the seed as its first command (a
   ``restore`` command, so members added later replay it from the log), and writes
   ``force-new-cluster.applied.json``. A crash anywhere in between resumes from the seed file on the
   next start, flag or not; ``restore`` only applies to an empty store, so it can never clobber data.
4. Remove the setting, then add members back one at a time with ``add_member``. A start that still
   carries the setting after a successful recovery is refused (the marker file says so), because
   forcing again would throw the re-added members out.

Only this package imports pysyncobj (see __init__.py).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import pysyncobj.pickle as syncobj_pickle
from pysyncobj.journal import FileJournal

from raftpg.consensus.durability import fsync_path
from raftpg.kv import KvState, decode

log = logging.getLogger(__name__)

_REGULAR_ENTRY = 0  # pysyncobj's _COMMAND_TYPE.REGULAR: a call of a @replicated method


class RecoveryError(RuntimeError):
    """The data directory cannot be recovered as asked; the message says why and what to do."""


@dataclass(frozen=True)
class RaftFiles:
    data_dir: str
    stem: str

    @classmethod
    def for_node(cls, data_dir: str, self_addr: str) -> RaftFiles:
        return cls(data_dir, self_addr.replace(":", "_").replace("/", "_"))

    def path(self, suffix: str) -> str:
        return os.path.join(self.data_dir, self.stem + suffix)

    @property
    def journal(self) -> str:
        return self.path(".journal")

    @property
    def dump(self) -> str:
        return self.path(".dump")

    @property
    def members(self) -> str:
        return self.path(".members.json")

    @property
    def seed(self) -> str:
        return os.path.join(self.data_dir, "force-new-cluster.seed.json")

    @property
    def applied_marker(self) -> str:
        return os.path.join(self.data_dir, "force-new-cluster.applied.json")

    def raft_files(self) -> list[str]:
        return [p for p in (self.journal, self.journal + ".meta", self.dump) if os.path.exists(p)]

    # -- members
    def remembered_members(self) -> list[str] | None:
        """The partners this node last saw, if it has a log to go with them."""
        if not os.path.exists(self.journal) and not os.path.exists(self.dump):
            return None
        try:
            with open(self.members, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        partners = data.get("partners") if isinstance(data, dict) else None
        if not isinstance(partners, list) or not all(isinstance(p, str) for p in partners):
            log.warning("raft: ignoring malformed %s", self.members)
            return None
        return partners

    def remember_members(self, self_addr: str, partners: list[str]) -> None:
        write_json_durably(self.members, {"self": self_addr, "partners": sorted(partners)})


def write_json_durably(path: str, document: Any) -> None:
    tmp = path + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a leftover may have another mode; O_EXCL below creates it 0600
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as f:
        json.dump(document, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(os.path.dirname(path) or ".")


# ---------------------------------------------------------------------------------- reading old state


@dataclass(frozen=True)
class RecoveredState:
    snapshot: dict[str, Any]
    dump_index: int | None  # last log index covered by the dump, if there was one
    last_index: int  # last log index replayed
    commit_index_on_disk: int  # what pysyncobj last wrote as committed (lags by up to a second)
    commands_replayed: int


def read_state(files: RaftFiles) -> RecoveredState:
    """Rebuild the KV state from a stopped node's dump and journal, without starting Raft."""
    state = KvState()
    dump_index: int | None = None
    if os.path.exists(files.dump):
        with open(files.dump, "rb") as f, gzip.GzipFile(fileobj=f) as g:
            data = syncobj_pickle.load(g)  # our own file, written by pysyncobj's serializer
        # (state, last applied entry, the entry before it, cluster); state is [SyncObj fields, consumers...]
        state = KvState.from_snapshot(data[0][1])
        dump_index = int(data[1][1])
    last_index = dump_index or 0
    replayed = 0
    if os.path.exists(files.journal):
        journal = FileJournal(files.journal)
        try:
            for position in range(len(journal)):
                command, index, _term = journal[position]
                if index <= last_index:
                    continue
                last_index = index
                if not command or command[0] != _REGULAR_ENTRY:
                    continue  # no-op, membership or code-version entries: not ours
                call = syncobj_pickle.loads(command[1:])
                payload = call[1][0] if isinstance(call, tuple) and len(call) >= 2 and call[1] else None
                state.apply(decode(payload) if isinstance(payload, bytes) else decode(b""))
                replayed += 1
        finally:
            journal._destroy()
    commit = 0
    try:
        with open(files.journal + ".meta", "rb") as f:
            commit = int(syncobj_pickle.loads(f.read()).get("raftCommitIndex", 0))
    except (OSError, ValueError, AttributeError, TypeError, EOFError):
        pass
    return RecoveredState(state.to_snapshot(), dump_index, last_index, commit, replayed)


# ---------------------------------------------------------------------------------- force new cluster


def prepare_new_cluster(files: RaftFiles) -> None:
    """Step 2 of the procedure: rebuild the state offline and write the seed file (fsynced)."""
    if os.path.exists(files.applied_marker):
        raise RecoveryError(
            f"raft.force_new_cluster is set, but {files.data_dir} already formed a new cluster "
            f"(see {files.applied_marker}); remove the setting. To force again after another majority "
            "loss, delete that marker file first.")
    if pending_seed(files) is not None:
        return  # an earlier attempt got as far as the seed: resume it
    recovered = read_state(files)
    past_commit = max(0, recovered.last_index - recovered.commit_index_on_disk)
    log.warning("raft: forcing a new one-node cluster from %s: revision %d, %d keys, %d commands "
                "replayed up to log index %d (%d entries past the last commit index written to disk "
                "are kept)", files.data_dir, recovered.snapshot["revision"], len(recovered.snapshot["keys"]),
                recovered.commands_replayed, recovered.last_index, past_commit)
    write_json_durably(files.seed, {"snapshot": recovered.snapshot, "from_log_index": recovered.last_index})


def start_from_seed(files: RaftFiles) -> dict[str, Any] | None:
    """If a seed is pending, move every Raft file aside and return the seed: the node starts afresh.

    Until the seed's ``restore`` commits and :func:`finish_new_cluster` runs, the only thing a fresh log
    can hold is that restore, so moving a half-started fresh log aside loses nothing.
    """
    seed = pending_seed(files)
    if seed is None:
        return None
    old = files.raft_files() + ([files.members] if os.path.exists(files.members) else [])
    if old:
        n = 1
        while os.path.exists(os.path.join(files.data_dir, f"before-force-new-cluster-{n}")):
            n += 1
        aside = os.path.join(files.data_dir, f"before-force-new-cluster-{n}")
        os.makedirs(aside, mode=0o700)
        for path in old:
            os.replace(path, os.path.join(aside, os.path.basename(path)))
        fsync_path(files.data_dir)
        log.warning("raft: the previous log and snapshot are kept in %s", aside)
    return seed


def pending_seed(files: RaftFiles) -> dict[str, Any] | None:
    try:
        with open(files.seed, encoding="utf-8") as f:
            snapshot: dict[str, Any] = json.load(f)["snapshot"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RecoveryError(f"cannot read {files.seed} ({exc}); it holds the data of an interrupted "
                            "force_new_cluster: repair or remove it by hand") from None
    return snapshot


def finish_new_cluster(files: RaftFiles) -> None:
    os.replace(files.seed, files.applied_marker)
    fsync_path(files.data_dir)
