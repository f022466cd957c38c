"""Where a callback may go: never inward, unless the operator says so.

A callback URL comes from an API caller, and the POST carries the run (outputs and
errors).  Without a check, any ``runs:write`` caller could make the workers call their own
Redis, a cloud metadata endpoint (``169.254.169.254``) or a private service.  So a
callback's host is resolved and every address it resolves to must be *global*: not
loopback, link-local, private (RFC 1918), unique-local (``fc00::/7``), shared
(``100.64.0.0/10``), multicast, reserved or unspecified, including the IPv4 inside an
IPv4-mapped IPv6 address.  ``Settings.callback_allowed_networks`` (CIDRs) lets named
networks through.

The check runs twice: when the callback is registered (the API answers 422), and at
every try, on the addresses the connection then uses (the POST goes to the checked
address, with the URL's host as ``Host`` and TLS server name), so a name that resolves
elsewhere later (DNS rebinding) is refused too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class DestinationRefused(ValueError):
    """A callback URL's host is, or resolves to, an address callbacks may not reach."""


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """Parse CIDRs (``10.0.0.0/8``, ``::1/128``, a bare address).

    Raises:
        ValueError: one does not parse; the message names it.
    """
    out: list[Network] = []
    for c in cidrs:
        try:
            out.append(ipaddress.ip_network(c.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{c!r} is not a network; write a CIDR such as 10.1.0.0/16 "
                             "or an address such as 192.0.2.7") from None
    return tuple(out)


def why_inward(ip: IPAddress) -> str | None:
    """Why callbacks may not reach ``ip`` (e.g. ``loopback``), or None if it is global."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return why_inward(ip.ipv4_mapped)
    for name in ("loopback", "link_local", "multicast", "unspecified", "reserved",
                 "private"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    if not ip.is_global:
        return "not globally routable"
    return None


def check_address(ip: IPAddress, allowed: Sequence[Network], host: str) -> None:
    """Refuse ``ip`` (an address ``host`` resolved to) unless it is global or allowed.

    Raises:
        DestinationRefused: it is neither; the message names the address, why, and the fix.
    """
    why = why_inward(ip)
    if why is None or any(ip in n for n in allowed if n.version == ip.version):
        return
    where = str(ip) if host == str(ip) else f"{host} (resolves to {ip})"
    raise DestinationRefused(
        f"callback_url points at {where}, a {why} address: callbacks never go to "
        "internal addresses. Fix: use a public receiver, or have the operator allow that "
        "network in ORCH_CALLBACK_ALLOWED_NETWORKS")


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an address literal: itself).

    Raises:
        DestinationRefused: the name does not resolve.
    """
    literal = host.strip("[]")
    try:
        return [ipaddress.ip_address(literal)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(literal, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DestinationRefused(f"callback_url host {host!r} does not resolve ({exc}). "
                                 "Fix: give a host name that resolves, or an address") from None
    return list(dict.fromkeys(ipaddress.ip_address(str(i[4][0]).split("%")[0])
                              for i in infos))


def checked(host: str, port: int, allowed: Sequence[Network]) -> list[IPAddress]:
    """Resolve ``host`` and check every address it resolves to; return them.

    Raises:
        DestinationRefused: it does not resolve, or one address may not be reached.
    """
    addresses = resolve(host, port)
    for ip in addresses:
        check_address(ip, allowed, host)
    return addresses
