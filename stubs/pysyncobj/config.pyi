from typing import Any

class FAIL_REASON:
    SUCCESS: int
    QUEUE_FULL: int
    MISSING_LEADER: int
    DISCARDED: int
    NOT_LEADER: int
    LEADER_CHANGED: int
    REQUEST_DENIED: int
    UNKNOWN_OUTCOME: int

class SyncObjConf:
    # Every option is a keyword with a default (pysyncobj/config.py); only those raftpg reads are listed.
    bindAddress: str | None
    connectionTimeout: float
    sendBufferSize: int
    recvBufferSize: int
    tcp_keepalive: tuple[int, int, int] | None
    def __init__(self, **kwargs: Any) -> None: ...
