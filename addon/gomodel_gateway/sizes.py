"""Byte counts as options spell them: 10485760, 512KiB, 10MiB or 10MB."""

import re

SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_size(value: str, allow_zero: bool = False) -> int:
    """A byte count such as 10485760, 512KiB, 10MiB or 10MB; ValueError when malformed."""
    match = SIZE.match(value.lower())
    if not match or match.group(2) not in SIZE_UNITS:
        raise ValueError(f"{value!r} is not a size (e.g. 10MiB, 512KiB, 1048576)")
    size = int(float(match.group(1)) * SIZE_UNITS[match.group(2)])
    if size < 0 or (size == 0 and not allow_zero):
        raise ValueError(f"{value!r} must be more than 0 bytes")
    return size
