"""Loopback-only guard: probatorium sends hostile traffic, so by default it
only ever talks to servers on this machine's loopback interface."""

from __future__ import annotations

import ipaddress
import socket

from probatorium.errors import UsageError


def _strip_brackets(host: str) -> str:
    # URLs and "ready addr=" lines spell IPv6 literals as "[::1]".
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def _is_loopback_ip(text: str) -> bool:
    """True if `text` is an IP literal on loopback; False if it is not (or not an IP)."""
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def is_loopback_host(host: str) -> bool:
    """Return True when every address `host` stands for is a loopback address.

    Accepts IPv4 127.0.0.0/8, IPv6 ``::1`` (bracketed or not), IPv4-mapped
    loopback, and the name ``localhost``. Other names are resolved with
    getaddrinfo and are loopback only if ALL their addresses are (a name that
    resolves to one loopback and one public address is refused). A name that
    does not resolve is not loopback.
    """
    host = _strip_brackets(host.strip())
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    else:
        # An IP literal: decide without any name resolution (no DNS traffic).
        return _is_loopback_ip(host)
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(_is_loopback_ip(str(a)) for a in addresses)


def check_target_allowed(host: str, allow_remote: bool) -> None:
    """Raise UsageError unless `host` is loopback or remote targets were allowed."""
    if allow_remote or is_loopback_host(host):
        return
    raise UsageError(
        f"refusing non-loopback target {host}: pass --allow-remote to send "
        "test traffic to a server on another host"
    )
