"""The key layout (DESIGN.md section 4): ``<namespace><scope>/`` + a fixed set of names."""

from __future__ import annotations

from dataclasses import dataclass

INITIALIZE = "initialize"
CONFIG = "config"
LEADER = "leader"
MEMBERS = "members/"
FAILOVER = "failover"
SYNC = "sync"
HISTORY = "history"
STATUS = "status"


@dataclass(frozen=True)
class KeyLayout:
    namespace: str
    scope: str

    @property
    def prefix(self) -> str:
        namespace = self.namespace if self.namespace.endswith("/") else self.namespace + "/"
        if not namespace.startswith("/"):
            namespace = "/" + namespace
        return f"{namespace}{self.scope}/"

    def key(self, name: str) -> str:
        return self.prefix + name

    def member(self, name: str) -> str:
        return self.prefix + MEMBERS + name

    def relative(self, key: str) -> str:
        return key[len(self.prefix):] if key.startswith(self.prefix) else key
