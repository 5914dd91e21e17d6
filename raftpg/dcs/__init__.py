"""The distributed configuration store seen by the HA loop.

- ``base.py``: the Dcs port (each method's deadline and consistency) and DcsError.
- ``keys.py``: the key layout ``<namespace><scope>/{initialize,config,leader,members/,failover,sync,history,status}``.
- ``codec.py``: stored documents <-> ClusterView (parsing at the edge; bad documents never stop the loop);
  ``documents.py``: reading one stored document defensively (strict JSON, typed and bounded fields).
- ``kvdcs.py``: the port on the replicated KV; ``raft.py`` (embedded Raft) and ``memory.py`` (tests) build it.
- ``etcd.py`` (+ ``etcd_gateway.py``, etcd v3's JSON gateway), ``consul.py``: the same port on external
  stores; ``http.py``: their shared host-failover rule (a conditional write sent without an answer is
  never retried: it is an unknown outcome).

May import: raftpg.model, raftpg.kv, raftpg.consensus, stdlib, an HTTP client. Never raftpg.ha or raftpg.pg.
"""

from raftpg.dcs.base import Dcs, DcsError
from raftpg.dcs.keys import KeyLayout

__all__ = ["Dcs", "DcsError", "KeyLayout"]
