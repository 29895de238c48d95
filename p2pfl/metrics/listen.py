"""The ``[metrics] listen`` address: ``HOST:PORT`` (``[IPv6]:PORT``), checked where it is configured."""

from __future__ import annotations

import ipaddress

from p2pfl.errors import ConfigError


def parse_listen(text: str, section: str | None = "metrics", key: str | None = "listen") -> tuple[str, int]:
    """``(host, port)`` of ``"127.0.0.1:9464"``, ``"[::1]:9464"`` or ``"localhost:9464"``; port 0 takes a free
    port. Anything else is a :class:`ConfigError` naming ``[section] key``, so a typo stops the peer at start
    with one line instead of leaving it without its endpoint."""
    if not isinstance(text, str):
        raise ConfigError(section, key, f"expected 'HOST:PORT', got {type(text).__name__} {text!r}")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(section, key, f"expected 'HOST:PORT' (e.g. '127.0.0.1:9464'), got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(section, key, f"an IPv6 address needs brackets ('[::1]:9464'), got {text!r}")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(section, key, f"{host!r} is not an IP address (or 'localhost')") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(section, key, f"port must be an integer in 0..65535, got {port_text!r}")
    return host, int(port_text)
