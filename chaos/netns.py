"""A network namespace joined to the host by a veth pair, and ``tc netem`` faults on it.

Only private addresses on that pair are used (HOST_ADDR on the host end, NS_ADDR in the
namespace); nothing else on the machine is touched. :meth:`Netns.close` removes the
namespace (and with it the pair) and is called from a ``finally``.
"""

from __future__ import annotations

import os
import shutil
import subprocess

HOST_ADDR, NS_ADDR, PREFIX = "10.213.77.1", "10.213.77.2", 30
NET = "10.213.77.0/30"


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
        self.host_if, self.ns_if = f"{name[:8]}-h", f"{name[:8]}-c"

    def open(self) -> None:
        self.close()  # a leftover from a killed run
        try:
            _ip("netns", "add", self.name)
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.name)
            _ip("addr", "add", f"{HOST_ADDR}/{PREFIX}", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            self.exec_ip("addr", "add", f"{NS_ADDR}/{PREFIX}", "dev", self.ns_if)
            self.exec_ip("link", "set", self.ns_if, "up")
            self.exec_ip("link", "set", "lo", "up")
        except subprocess.CalledProcessError:
            self.close()
            raise

    def exec_ip(self, *args: str) -> None:
        _ip("netns", "exec", self.name, "ip", *args)

    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def netem(self, *spec: str) -> None:
        """Apply a netem qdisc (e.g. ``loss 20%``, ``delay 80ms 20ms``) on both ends."""
        for cmd in (
            ["tc", "qdisc", "replace", "dev", self.host_if, "root", "netem", *spec],
            [*self.prefix(), "tc", "qdisc", "replace", "dev", self.ns_if, "root", "netem", *spec],
        ):
            subprocess.run(cmd, capture_output=True, check=True, timeout=10)

    def clear(self) -> None:
        for cmd in (
            ["tc", "qdisc", "del", "dev", self.host_if, "root"],
            [*self.prefix(), "tc", "qdisc", "del", "dev", self.ns_if, "root"],
        ):
            subprocess.run(cmd, capture_output=True, check=False, timeout=10)

    def close(self) -> None:
        _ip("link", "del", self.host_if, check=False)
        _ip("netns", "del", self.name, check=False)
