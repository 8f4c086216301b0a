"""Which callback URLs we may connect to (SSRF): only public addresses, unless allowed.

An address is refused when it, or an IPv4 address wrapped inside it (IPv4-mapped,
6to4, NAT64, Teredo, IPv4-compatible), is loopback, private, link-local (cloud metadata
lives there), multicast, reserved, unspecified or otherwise not globally routable.
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from router.errors import ValidationError

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip))
    return None


def is_public(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None and not is_public(str(inner)):
            return False
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def parse_callback_url(url: str) -> tuple[str, str]:
    """Syntax check: returns (scheme, host) or raises invalid_callback_url."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValidationError("invalid_callback_url", "callback_url is not a valid URL", "callback_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("invalid_callback_url", "callback_url must be an http(s) URL with a host",
                              "callback_url")
    if parts.username or parts.password:
        raise ValidationError("invalid_callback_url", "callback_url must not carry credentials", "callback_url")
    del port
    return parts.scheme, parts.hostname


def literal_address(host: str) -> str | None:
    """The address a host names without DNS: IP literals and the odd numeric spellings
    (2130706433, 0x7f.1, 127.1, 0177.0.0.1) that resolvers accept as IPv4."""
    host = host.strip("[]")
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        pass
    parts = host.split(".")
    if parts and all(p and (p.isdigit() or p.lower().startswith("0x")) for p in parts):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            return "0.0.0.0"  # numeric but malformed: treat as not public
    return None
