"""A network namespace joined to the host by a veth pair, and ``tc`` faults on it:
netem where the kernel has it; else tbf (tail-drop loss, queueing delay) and link down.

Only private addresses on that pair are used (``10.213.N.1`` on the host end, ``.2`` in the
namespace); nothing else on the machine is touched. :meth:`Netns.close` removes the
namespace (and with it the pair) and is called from a ``finally``.
"""

from __future__ import annotations

import os
import shutil
import subprocess

PREFIX = 30


def netns_missing() -> str | None:
    """Why namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` (Debian iproute2) is not installed"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


class Netns:
    def __init__(self, name: str) -> None:
        self.name = name
        octet = os.getpid() % 250  # two runs at once get different /30s
        self.host_addr, self.ns_addr = f"10.213.{octet}.1", f"10.213.{octet}.2"
        self.net = f"10.213.{octet}.0/{PREFIX}"
        self.has_netem = False
        self.host_if, self.ns_if = f"{name[-12:]}-h", f"{name[-12:]}-c"

    def open(self) -> None:
        self.close()  # a leftover from a killed run
        try:
            _ip("netns", "add", self.name)
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.name)
            _ip("addr", "add", f"{self.host_addr}/{PREFIX}", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            self.exec_ip("addr", "add", f"{self.ns_addr}/{PREFIX}", "dev", self.ns_if)
            self.exec_ip("link", "set", self.ns_if, "up")
            self.exec_ip("link", "set", "lo", "up")
            self.probe_netem()
        except subprocess.CalledProcessError:
            self.close()
            raise

    def exec_ip(self, *args: str) -> None:
        _ip("netns", "exec", self.name, "ip", *args)

    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def _qdisc(self, *spec: str, check: bool = True) -> bool:
        """``tc qdisc replace ... root SPEC`` on both ends; False if the kernel refuses it."""
        ok = True
        for cmd in (
            ["tc", "qdisc", "replace", "dev", self.host_if, "root", *spec],
            [*self.prefix(), "tc", "qdisc", "replace", "dev", self.ns_if, "root", *spec],
        ):
            done = subprocess.run(cmd, capture_output=True, check=False, timeout=10)
            ok = ok and done.returncode == 0
            if check and done.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.decode().strip()}")
        return ok

    def probe_netem(self) -> bool:
        """Whether this kernel has ``sch_netem`` (some VM kernels do not)."""
        self.has_netem = self._qdisc("netem", "delay", "1ms", check=False)
        self.clear()
        return self.has_netem

    def impl(self) -> str:
        return (
            "tc netem"
            if self.has_netem
            else "tc tbf (tail-drop loss, queueing delay), link down (no sch_netem)"
        )

    def loss(self) -> None:
        if self.has_netem:
            self._qdisc("netem", "loss", "30%")
        else:  # a queue of one packet at a low rate: bursts are dropped
            self._qdisc("tbf", "rate", "96kbit", "burst", "1600", "limit", "1600")

    def delay(self) -> None:
        if self.has_netem:
            self._qdisc("netem", "delay", "150ms", "50ms")
        else:  # a slow link with a deep queue: every packet waits
            self._qdisc("tbf", "rate", "256kbit", "burst", "1600", "latency", "800ms")

    def partition(self) -> None:
        if self.has_netem:
            self._qdisc("netem", "loss", "100%")
        else:
            _ip("link", "set", self.host_if, "down")

    def clear(self) -> None:
        _ip("link", "set", self.host_if, "up", check=False)
        for cmd in (
            ["tc", "qdisc", "del", "dev", self.host_if, "root"],
            [*self.prefix(), "tc", "qdisc", "del", "dev", self.ns_if, "root"],
        ):
            subprocess.run(cmd, capture_output=True, check=False, timeout=10)

    def close(self) -> None:
        _ip("link", "del", self.host_if, check=False)
        _ip("netns", "del", self.name, check=False)
