"""The network of one run: a namespace per node, a bridge in its own namespace, the harness in the root one.

::

      root namespace (harness, clients)          jl<k>-br (bridge namespace)          jl<k>-n1 ...
      jl<k>h 10.213.<k>.254/24  <--veth-->  ph ─┐
                                                br0 ── p1 <--veth--> eth0 10.213.<k>.1/24  (node n1)
                                                    ── p2 <--veth--> eth0 10.213.<k>.2/24  (node n2) ...

``<k>`` (1..250) is claimed per run by creating the bridge namespace ``jl<k>-br``, which fails if another run
holds it, so two runs never share names or a subnet. Only the root side of the harness veth lives in the
root namespace; every other interface is created directly inside a namespace of this run.

Partitions are ``Cut``\\ s: packets from ``src`` do not reach ``dst``. They are nftables rules in ``dst``'s
namespace (table ``inet jepsen_lite``, input hook), as Jepsen's "grudge": a two-way cut is two cuts. A cut of
mode ``"new"`` drops only packets opening a connection (``ct state new``): ``src`` cannot connect to
``dst`` but ``dst`` can still connect to ``src`` (pysyncobj: the larger address initiates). A cut with
``loss_pct`` P drops each packet with probability P % (``numgen random mod 100 < P``: packet loss). The
harness address is never cut: clients reach every node whatever the partition (FAULTS.md §5.1).

Cuts live in named *layers* (one per active fault, so overlapping faults compose): ``apply(cuts, layer)``
replaces one layer, ``heal(layer)`` removes it, ``heal()`` removes them all; the rules installed are the
union of every layer.

``socket_in(ns, ...)`` makes a socket inside a namespace without a process (a short thread ``setns``\\ es
into it; a socket stays in the namespace it was created in), which the probes use to prove a cut.
``destroy()`` removes everything ``create()`` made, also after a partial ``create()``, and is idempotent.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

NETNS_DIR = "/run/netns"
NFT_TABLE = "jepsen_lite"
HARNESS = "harness"
HARNESS_HOST = 254
SUBNET = "10.213"
CLONE_NEWNET = 0x40000000
CMD_TIMEOUT_S = 10.0
_libc = ctypes.CDLL(None, use_errno=True)


class TopologyError(RuntimeError):
    pass


@dataclass(frozen=True)
class Cut:
    """Packets from ``src`` are dropped at ``dst`` (all of them, or only those opening a connection)."""

    src: str
    dst: str
    mode: str = "all"  # "all" | "new"
    loss_pct: int = 0  # 0: drop every packet; 1..99: drop each one with this probability

    def describe(self) -> str:
        loss = f" ({self.loss_pct}% loss)" if self.loss_pct else ""
        return f"{self.src}-x->{self.dst}" + (" (new connections)" if self.mode == "new" else "") + loss

    def rule(self, src_addr: str) -> str:
        new = " ct state new" if self.mode == "new" else ""
        loss = f" numgen random mod 100 < {self.loss_pct}" if self.loss_pct else ""
        return f"ip saddr {src_addr}{new}{loss} drop"


def run(argv: Sequence[str], *, stdin: str | None = None, check: bool = True,
        timeout_s: float = CMD_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run a short command; raise TopologyError with its stderr on failure (when ``check``)."""
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout_s)
    if check and proc.returncode != 0:
        raise TopologyError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def socket_in(netns: str | None, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket created inside network namespace ``netns`` (None: the caller's namespace)."""
    if netns is None:
        return socket.socket(family, kind)
    result: dict[str, object] = {}

    def enter_and_create() -> None:  # runs in a fresh OS thread that dies afterwards, so setns is harmless
        try:
            fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
                result["sock"] = socket.socket(family, kind)
            finally:
                os.close(fd)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=enter_and_create, name=f"setns-{netns}", daemon=True)
    thread.start()
    thread.join(5)
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    if "sock" not in result:
        raise TopologyError(f"could not create a socket in {netns}")
    return result["sock"]  # type: ignore[return-value]


class Topology:
    """Namespaces, bridge and veths of one run, and the nftables cuts between its nodes."""

    def __init__(self, names: Sequence[str], k: int | None = None) -> None:
        if not names or len(names) > 200:
            raise ValueError("between 1 and 200 nodes")
        self.names = tuple(names)
        self.k: int | None = k
        self.layers: dict[str, frozenset[Cut]] = {}
        self._installed: frozenset[Cut] = frozenset()
        self._created: list[str] = []  # namespaces, in creation order
        self._harness_if: str | None = None

    # ------------------------------------------------------------------ naming
    @property
    def prefix(self) -> str:
        assert self.k is not None, "create() first"
        return f"jl{self.k}"

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}-br"

    def netns(self, name: str) -> str | None:
        """The namespace of a node, None for the harness (root namespace)."""
        if name == HARNESS:
            return None
        if name not in self.names:
            raise KeyError(name)
        return f"{self.prefix}-{name}"

    def addr(self, name: str) -> str:
        assert self.k is not None, "create() first"
        host = HARNESS_HOST if name == HARNESS else self.names.index(name) + 1
        return f"{SUBNET}.{self.k}.{host}"

    def name_of(self, addr: str) -> str | None:
        host = addr.split(":")[0]
        for name in (*self.names, HARNESS):
            if self.addr(name) == host:
                return name
        return None

    def exec_prefix(self, name: str) -> list[str]:
        """argv prefix running a command inside the node's namespace, without forking (PID = the command)."""
        return ["nsenter", f"--net={NETNS_DIR}/{self.netns(name)}"]

    # ------------------------------------------------------------------ lifecycle
    def create(self) -> None:
        try:
            self._claim()
            br = self.bridge_ns
            run(["ip", "-n", br, "link", "set", "lo", "up"])
            run(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
            run(["ip", "-n", br, "link", "set", "br0", "up"])
            for i, name in enumerate(self.names, start=1):
                ns = self.netns(name)
                assert ns is not None
                run(["ip", "netns", "add", ns])
                self._created.append(ns)
                run(["ip", "-n", br, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", ns])
                run(["ip", "-n", br, "link", "set", f"p{i}", "master", "br0", "up"])
                run(["ip", "-n", ns, "addr", "add", f"{self.addr(name)}/24", "dev", "eth0"])
                run(["ip", "-n", ns, "link", "set", "eth0", "up"])
                run(["ip", "-n", ns, "link", "set", "lo", "up"])
            host_if = f"{self.prefix}h"
            run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "ph", "netns", br])
            self._harness_if = host_if
            run(["ip", "-n", br, "link", "set", "ph", "master", "br0", "up"])
            run(["ip", "addr", "add", f"{self.addr(HARNESS)}/24", "dev", host_if])
            run(["ip", "link", "set", host_if, "up"])
            self._wait_reachable()
        except BaseException:
            self.destroy()
            raise

    def _claim(self) -> None:
        """Claim a free k by creating the bridge namespace (atomic: fails if it exists)."""
        in_use = run(["ip", "-4", "-o", "addr"]).stdout + run(["ip", "-4", "route"]).stdout
        candidates = [self.k] if self.k is not None else [((os.getpid() + i) % 250) + 1 for i in range(250)]
        for k in candidates:
            assert k is not None
            if f"{SUBNET}.{k}." in in_use:
                continue
            if run(["ip", "netns", "add", f"jl{k}-br"], check=False).returncode == 0:
                self.k = k
                self._created.append(f"jl{k}-br")
                return
        raise TopologyError("no free 10.213.<k>.0/24 subnet / jl<k>-br namespace")

    def _wait_reachable(self, timeout_s: float = 10.0) -> None:
        """Each node answers the harness (a TCP connect to a closed port is refused = reachable)."""
        deadline = time.monotonic() + timeout_s
        pending = list(self.names)
        while pending and time.monotonic() < deadline:
            pending = [n for n in pending if not reachable(None, self.addr(n), 9, timeout_s=0.5)]
            if pending:
                time.sleep(0.2)
        if pending:
            raise TopologyError(f"nodes {pending} unreachable from the harness after {timeout_s:g}s")

    def destroy(self) -> None:
        """Remove the namespaces (their nft tables and veths go with them) and the harness veth."""
        for ns in reversed(self._created):
            result = run(["ip", "netns", "del", ns], check=False)
            if result.returncode != 0 and netns_exists(ns):
                log.warning("could not delete namespace %s: %s", ns, result.stderr.strip())
        self._created.clear()
        self.layers, self._installed = {}, frozenset()
        if self._harness_if is not None:
            # deleting the bridge namespace deletes the peer and so the pair; make sure anyway
            for _ in range(20):
                if run(["ip", "link", "show", self._harness_if], check=False).returncode != 0:
                    break
                run(["ip", "link", "del", self._harness_if], check=False)
                time.sleep(0.1)
            self._harness_if = None

    def leftovers(self) -> list[str]:
        """Anything of this run still present (for tests of destroy())."""
        if self.k is None:
            return []
        found = [ns for ns in os.listdir(NETNS_DIR) if ns.startswith(f"{self.prefix}-")] \
            if os.path.isdir(NETNS_DIR) else []
        if run(["ip", "link", "show", f"{self.prefix}h"], check=False).returncode == 0:
            found.append(f"{self.prefix}h")
        return found

    # ------------------------------------------------------------------ partitions
    @property
    def cuts(self) -> frozenset[Cut]:
        """Every cut of every layer (what is installed)."""
        return self._installed

    def full_cuts(self) -> frozenset[tuple[str, str]]:
        """(src, dst) pairs whose every packet is dropped (loss cuts excluded)."""
        return frozenset((c.src, c.dst) for c in self._installed if not c.loss_pct)

    def touched(self) -> frozenset[tuple[str, str]]:
        """(src, dst) pairs with any rule at all (a partial cut or packet loss)."""
        return frozenset((c.src, c.dst) for c in self._installed)

    def apply(self, cuts: Iterable[Cut], layer: str = "default") -> None:
        """Replace layer ``layer`` by ``cuts``; each node's table is swapped atomically."""
        cuts = frozenset(cuts)
        for cut in cuts:
            if cut.src not in self.names or cut.dst not in self.names or cut.src == cut.dst:
                raise ValueError(f"bad cut {cut}")
            if not 0 <= cut.loss_pct < 100:
                raise ValueError(f"bad loss percentage in {cut}")
        layers = {**self.layers, layer: cuts} if cuts else {k: v for k, v in self.layers.items() if k != layer}
        self._install(layers)

    def heal(self, layer: str | None = None) -> None:
        """Remove one layer, or (None) every layer."""
        self._install({} if layer is None else {k: v for k, v in self.layers.items() if k != layer})

    def _install(self, layers: dict[str, frozenset[Cut]]) -> None:
        union = frozenset().union(*layers.values()) if layers else frozenset()
        for name in self.names:
            mine = _sorted_cuts(c for c in union if c.dst == name)
            before = _sorted_cuts(c for c in self._installed if c.dst == name)
            if mine != before:
                self._nft(name, self._ruleset(mine))
        self.layers, self._installed = layers, union

    def _ruleset(self, cuts: Sequence[Cut]) -> str:
        rules = [f"    {c.rule(self.addr(c.src))}" for c in cuts]
        lines = [f"table inet {NFT_TABLE} {{}}", f"delete table inet {NFT_TABLE}"]
        if rules:
            lines += [f"table inet {NFT_TABLE} {{", "  chain input {",
                      "    type filter hook input priority 0; policy accept;", *rules, "  }", "}"]
        return "\n".join(lines) + "\n"

    def _nft(self, name: str, script: str) -> None:
        run([*self.exec_prefix(name), "nft", "-f", "-"], stdin=script)

    def nft_ruleset(self, name: str) -> str:
        return run([*self.exec_prefix(name), "nft", "list", "ruleset"]).stdout

    # ------------------------------------------------------------------ probes
    def udp_delivers(self, src: str, dst: str, tries: int = 3, wait_s: float = 0.3) -> bool:
        """True if a UDP datagram sent from ``src`` arrives at ``dst`` (one-way evidence)."""
        return udp_delivers(self.netns(src), self.netns(dst), self.addr(dst), tries, wait_s)

    def udp_loss(self, src: str, dst: str, count: int = 200) -> float:
        """Fraction of ``count`` UDP datagrams from ``src`` that did not arrive at ``dst``."""
        return udp_loss(self.netns(src), self.netns(dst), self.addr(dst), count)

    def tcp_connects(self, src: str, dst: str, timeout_s: float = 0.5) -> bool:
        """True if ``src`` can open a TCP connection to a listener in ``dst`` (needs both directions)."""
        return tcp_connects(self.netns(src), self.netns(dst), self.addr(dst), timeout_s)


def reachable(netns: str | None, addr: str, port: int, timeout_s: float = 0.5) -> bool:
    """A TCP connect from ``netns`` gets any answer (accepted or refused) within the timeout."""
    sock = socket_in(netns)
    sock.settimeout(timeout_s)
    try:
        sock.connect((addr, port))
        return True
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        sock.close()


def udp_delivers(src_ns: str | None, dst_ns: str | None, dst_addr: str, tries: int = 3,
                 wait_s: float = 0.3) -> bool:
    receiver = socket_in(dst_ns, socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket_in(src_ns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind((dst_addr, 0))
        receiver.settimeout(wait_s)
        port = receiver.getsockname()[1]
        token = os.urandom(8)
        for _ in range(tries):
            try:
                sender.sendto(token, (dst_addr, port))
            except OSError:
                pass
            try:
                data, _ = receiver.recvfrom(64)
                if data == token:
                    return True
            except TimeoutError:
                continue
        return False
    finally:
        receiver.close()
        sender.close()


def udp_loss(src_ns: str | None, dst_ns: str | None, dst_addr: str, count: int = 200,
             wait_s: float = 0.5) -> float:
    """Send ``count`` numbered datagrams, then count the distinct ones received within ``wait_s``."""
    receiver = socket_in(dst_ns, socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket_in(src_ns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        receiver.bind((dst_addr, 0))
        port = receiver.getsockname()[1]
        token = os.urandom(4)
        for i in range(count):
            with contextlib.suppress(OSError):
                sender.sendto(token + i.to_bytes(4, "big"), (dst_addr, port))
            if i % 50 == 49:
                time.sleep(0.005)  # let the receiver drain: the loss measured must be the rule's only
        seen: set[int] = set()
        receiver.settimeout(wait_s)
        while len(seen) < count:
            try:
                data, _ = receiver.recvfrom(64)
            except TimeoutError:
                break
            if data[:4] == token:
                seen.add(int.from_bytes(data[4:8], "big"))
        return 1.0 - len(seen) / count
    finally:
        receiver.close()
        sender.close()


def _sorted_cuts(cuts: Iterable[Cut]) -> list[Cut]:
    return sorted(cuts, key=lambda c: (c.src, c.mode, c.loss_pct))


def tcp_connects(src_ns: str | None, dst_ns: str | None, dst_addr: str, timeout_s: float = 0.5) -> bool:
    listener = socket_in(dst_ns)
    client = socket_in(src_ns)
    try:
        listener.bind((dst_addr, 0))
        listener.listen(4)
        client.settimeout(timeout_s)
        try:
            client.connect((dst_addr, listener.getsockname()[1]))
            return True
        except OSError:
            return False
    finally:
        client.close()
        listener.close()
