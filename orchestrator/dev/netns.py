"""Test hosts on one machine: Linux network namespaces on a private bridge.

Each :class:`Host` is a network namespace with one veth pair: the end inside is ``eth0``
and holds the host's address on a private /24; the other end is attached to a bridge in
this (the root) namespace, which holds the subnet's first address. So every host reaches
every other over the bridge, and this process reaches every host, as machines on one
switch would. :meth:`Network.cut` takes a host's link down: its processes keep running,
their connections hang, as when a cable is pulled; :meth:`Network.restore` plugs it back.

Needs root and iproute2 (``ip``). Every namespace, link and bridge a :class:`Network`
makes is named ``<prefix>-<name>``; :meth:`Network.create` first deletes whatever an
earlier run left with the same prefix (a process that was SIGKILLed cannot clean up), and
:meth:`Network.close` deletes everything it made, namespaces first. Processes started in a
namespace (``ip netns exec``, :meth:`Host.command`) must be stopped by their owner before
:meth:`Network.close`: a namespace lives on, unnamed, while a process is in it.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from orchestrator.errors import OrchestratorError

IFNAMSIZ = 15
"""Longest interface name Linux accepts."""


class NetworkUnavailable(OrchestratorError):
    """Test hosts cannot be made here: not root, no ``ip``, or an ``ip`` command failed."""


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (not root, no ``ip``), or None if they can."""
    if os.geteuid() != 0:
        return ("test hosts are network namespaces, which need root: run as root (CI "
                "does), or in a container with CAP_NET_ADMIN and CAP_SYS_ADMIN")
    if shutil.which("ip") is None:
        return "test hosts need iproute2's `ip`: apt-get install iproute2"
    return None


def _ip(*args: str) -> str:
    """Run ``ip ARGS``; return its output.

    Raises:
        NetworkUnavailable: it failed (the message holds its error output).
    """
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetworkUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}; "
                                 "check that this is root with CAP_NET_ADMIN and that "
                                 "the subnet is free")
    return done.stdout


def _names(prefix: str) -> tuple[list[str], list[str]]:
    """(namespaces, links) whose names start with ``<prefix>-``."""
    tag = f"{prefix}-"
    namespaces = [line.split()[0] for line in _ip("netns", "list").splitlines()
                  if line.strip() and line.split()[0].startswith(tag)]
    links = []
    for line in _ip("-o", "link", "show").splitlines():
        # "7: orhx-w1@if6: <BROADCAST,...> ..." -> "orhx-w1"
        name = line.split(":", 2)[1].strip().split("@", 1)[0] if ":" in line else ""
        if name.startswith(tag):
            links.append(name)
    return namespaces, links


def clear(prefix: str) -> list[str]:
    """Delete every namespace and link named ``<prefix>-…``; return what was deleted.

    Deleting a namespace deletes the veth ends inside it, and so their pairs; links that
    remain (the bridge, a veth whose namespace is gone) are deleted after.
    """
    namespaces, _ = _names(prefix)
    for ns in namespaces:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    _, links = _names(prefix)
    for link in links:
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
    return [*namespaces, *links]


@dataclass(frozen=True)
class Host:
    """One test host: a network namespace with one address.

    Attributes:
        name: the host's short name (``"redis"``, ``"w1"``).
        netns: its namespace (``<prefix>-<name>``).
        address: its address on the network.
        link: the root-side end of its veth pair (on the bridge); down means cut off.
    """

    name: str
    netns: str
    address: str
    link: str

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` run inside this host's namespace (``ip netns exec``, which execs them:
        the process keeps the pid it was started with)."""
        return ["ip", "netns", "exec", self.netns, *args]


class Network:
    """A private /24 on a bridge in the root namespace, and the hosts on it.

    Use it as a context manager, or call :meth:`create` and :meth:`close`::

        with Network("orhx", "10.213.16.0/24") as net:
            redis_host = net.add("redis")
    """

    def __init__(self, prefix: str, subnet: str) -> None:
        """Configure the network; nothing is made before :meth:`create`.

        Args:
            prefix: starts every name this network makes; make it unique to its user (two
                networks with one prefix delete each other's hosts).
            subnet: a private IPv4 /24 that nothing on this machine uses.

        Raises:
            ValueError: the prefix is too long for interface names, or the subnet is not a
                private /24.
        """
        net = ipaddress.IPv4Network(subnet)
        if net.prefixlen != 24 or not net.is_private:
            raise ValueError(f"{subnet} is not a private /24; pass e.g. 10.213.16.0/24")
        if not prefix or len(prefix) > 6 or not prefix.isalnum():
            raise ValueError(f"prefix {prefix!r}: 1 to 6 letters or digits (interface "
                             f"names have at most {IFNAMSIZ} characters)")
        self.prefix = prefix
        self.subnet = net
        self.bridge = f"{prefix}-br"
        self.gateway = str(net.network_address + 1)
        self.hosts: dict[str, Host] = {}

    def create(self) -> Self:
        """Delete what an earlier network with this prefix left, then make the bridge.

        Returns:
            self.

        Raises:
            NetworkUnavailable: not root, no ``ip``, or an ``ip`` command failed.
        """
        reason = unavailable_reason()
        if reason is not None:
            raise NetworkUnavailable(reason)
        clear(self.prefix)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def add(self, name: str) -> Host:
        """Make host ``name``: a namespace, its veth pair on the bridge, the next address.

        Raises:
            ValueError: the name is taken, or too long for an interface name.
            NetworkUnavailable: an ``ip`` command failed.
        """
        netns = f"{self.prefix}-{name}"
        if name in self.hosts or len(netns) > IFNAMSIZ or not name.isalnum():
            raise ValueError(f"host name {name!r}: taken, not alphanumeric, or longer than "
                             f"{IFNAMSIZ - len(self.prefix) - 1} characters")
        address = str(self.subnet.network_address + 10 + len(self.hosts))
        host = Host(name, netns, address, link=netns)
        _ip("netns", "add", netns)
        _ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", host.link, "master", self.bridge)
        _ip("link", "set", host.link, "up")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        self.hosts[name] = host
        return host

    def cut(self, host: Host) -> None:
        """Take ``host``'s link down: nothing reaches it, it reaches nothing (its own
        loopback aside); open connections hang rather than fail."""
        _ip("link", "set", host.link, "down")

    def restore(self, host: Host) -> None:
        """Bring ``host``'s link back up."""
        _ip("link", "set", host.link, "up")

    def close(self) -> None:
        """Delete every host and the bridge (also what a failed :meth:`create` left)."""
        clear(self.prefix)
        self.hosts.clear()

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
