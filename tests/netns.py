"""Several "hosts" on one machine: network namespaces joined by a bridge, for tests.

Needs root and iproute2 (``ip``). Every name carries a random suffix and every
address is in 10.231.X.0/24 with a random X, so runs do not collide; ``down()``
removes the namespaces, and with them every veth.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess


def missing() -> str:
    if shutil.which("ip") is None:
        return "iproute2's `ip` command is not installed (Debian package iproute2)"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    return ""


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")


class Network:
    """A bridge namespace with a leg to the host and one per namespace in ``names``."""

    def __init__(self, names: list[str]) -> None:
        tag = f"{os.getpid() % 10000:04d}{random.randrange(100):02d}"
        self.tag = tag
        self.subnet = f"10.231.{random.randrange(1, 250)}"
        self.bridge_ns = f"tnbr{tag}"
        self.ns = {n: f"tn{n}{tag}" for n in names}
        self.addr = {n: f"{self.subnet}.{i + 1}" for i, n in enumerate(names)}
        self.host_addr = f"{self.subnet}.254"
        self.legs: dict[str, str] = {}       # name -> its veth end on the bridge
        self.host_if = f"tnh{tag}"

    def up(self) -> "Network":
        ip("netns", "add", self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for i, (name, ns) in enumerate(self.ns.items()):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            inner, outer = f"tni{i}{self.tag}", f"tno{i}{self.tag}"
            ip("link", "add", inner, "type", "veth", "peer", "name", outer)
            ip("link", "set", inner, "netns", ns)
            ip("link", "set", outer, "netns", self.bridge_ns)
            ip("-n", ns, "link", "set", inner, "name", "eth0")
            ip("-n", ns, "addr", "add", f"{self.addr[name]}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", self.bridge_ns, "link", "set", outer, "master", "br0")
            ip("-n", self.bridge_ns, "link", "set", outer, "up")
            self.legs[name] = outer
        # the host's leg: the only thing added outside our namespaces, gone with them
        peer = f"tnp{self.tag}"
        ip("link", "add", self.host_if, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "set", peer, "master", "br0")
        ip("-n", self.bridge_ns, "link", "set", peer, "up")
        ip("addr", "add", f"{self.host_addr}/24", "dev", self.host_if)
        ip("link", "set", self.host_if, "up")
        return self

    def cut(self, name: str) -> None:
        """Take ``name``'s link down: its packets vanish, nobody is told."""
        ip("-n", self.bridge_ns, "link", "set", self.legs[name], "down")

    def down(self) -> None:
        errors = []
        for ns in [*self.ns.values(), self.bridge_ns]:
            # deleting a namespace deletes the veths in it, and so their peers
            result = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
            if result.returncode != 0 and "No such file" not in result.stderr:
                errors.append(result.stderr.strip())
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        if errors:
            raise RuntimeError(f"could not remove test namespaces: {errors}")
