"""Node addresses in URLs."""

from __future__ import annotations


def url_host(address: str) -> str:
    """``address`` as the host part of a URL (an IPv6 address in brackets)."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


__all__ = ["url_host"]
