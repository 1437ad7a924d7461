"""Kubernetes resource quantities as numbers: memory in bytes, CPU in millicores.

``3417969Ki`` (the original's scalar request), ``16Gi``, ``4G``, ``512M``, ``1e9`` and plain bytes
for memory; ``8``, ``0.5``, ``500m`` for CPU. The same grammar as Kubernetes' ``resource.Quantity``
(binary suffixes Ki Mi Gi Ti Pi Ei, decimal k M G T P E, ``m`` for milli, decimal exponents), so a
service type written for Kubernetes reads the same here and in the Kubernetes backend.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from roost.cluster.errors import QuantityError

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal(10**3),
            "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15),
            "E": Decimal(10**18)}
_QUANTITY = re.compile(r"^([+]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")
#: The largest quantity accepted (beyond any real node).
_MAX = Decimal(2**62)


def parse_quantity(text: str | int | float, what: str = "quantity") -> Decimal:
    """``text`` as a number (``"16Gi"`` -> 17179869184); refused with ``QUANTITY_INVALID`` naming ``what``."""
    if isinstance(text, bool):
        raise QuantityError(f"{what}: {text!r} is not a quantity (like 16Gi, 512Mi, 8 or 500m)")
    raw = str(text).strip()
    match = _QUANTITY.fullmatch(raw)
    if match is None:
        raise QuantityError(f"{what}: {raw!r} is not a quantity (like 16Gi, 512Mi, 8 or 500m)")
    number, exponent, suffix = match.groups()
    try:
        value = Decimal(number)
        if exponent:
            value *= Decimal(10) ** int(exponent[1:])
        elif suffix in _BINARY:
            value *= _BINARY[suffix]
        else:
            value *= _DECIMAL[suffix or ""]
    except (InvalidOperation, OverflowError) as err:
        raise QuantityError(f"{what}: {raw!r} is out of range") from err
    if value > _MAX:
        raise QuantityError(f"{what}: {raw!r} is larger than any node")
    return value


def memory_bytes(text: str | int | float, what: str = "memory") -> int:
    """A memory quantity in bytes (rounded up, as Kubernetes rounds)."""
    value = parse_quantity(text, what)
    whole = int(value.to_integral_value(rounding="ROUND_CEILING"))
    return whole


def cpu_millis(text: str | int | float, what: str = "cpu") -> int:
    """A CPU quantity in millicores (``"500m"`` -> 500, ``2`` -> 2000)."""
    value = parse_quantity(text, what) * 1000
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


def format_memory(value: int) -> str:
    """Bytes in the largest binary unit that divides them (``17179869184`` -> ``16Gi``)."""
    for suffix, factor in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
        if value and value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)


def format_cpu(millis: int) -> str:
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def parse_capacity(text: str) -> dict[str, int]:
    """``memory=16Gi,cpu=8,nvidia.com/gpu=1`` as ``{"memory": bytes, "cpu": millicores, "nvidia.com/gpu": 1}``.

    Keys other than memory and cpu are accelerators (whole counts). An empty or repeated key is refused.
    """
    out: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise QuantityError(f"--capacity: {part!r} is not KEY=QUANTITY (like memory=16Gi,cpu=8)")
        if key in out:
            raise QuantityError(f"--capacity: {key} is given twice")
        if key == "memory":
            out[key] = memory_bytes(value, "--capacity memory")
        elif key == "cpu":
            out[key] = cpu_millis(value, "--capacity cpu")
        else:
            count = parse_quantity(value, f"--capacity {key}")
            if count != count.to_integral_value() or count < 0:
                raise QuantityError(f"--capacity {key}: an accelerator count must be a whole number, not {value!r}")
            out[key] = int(count)
    return out


__all__ = ["cpu_millis", "format_cpu", "format_memory", "memory_bytes", "parse_capacity", "parse_quantity"]
