"""Sizes as the API and the command line take them: bytes, or '4GB', '512MiB', '1e9'."""
from __future__ import annotations

from .errors import CallerError

_UNITS = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "b": 1, "": 1}


def parse_size(text: str | int) -> int:
    """A number of bytes.

    Args:
        text: an int, or a number with an optional unit (kB, MB, GB, TB decimal;
            KiB, MiB, GiB, TiB binary; B), case and spaces ignored.

    Returns:
        The size in bytes (an int; may be zero or negative, callers judge the range).

    Raises:
        CallerError: the text is not a size (also a ValueError).
    """
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    s = str(text).strip().lower().replace(" ", "")
    for unit in sorted(_UNITS, key=len, reverse=True):
        if unit and s.endswith(unit):
            s, scale = s[: -len(unit)], _UNITS[unit]
            break
    else:
        scale = 1
    try:
        return int(float(s) * scale)
    except (ValueError, OverflowError):
        raise CallerError(f"{text!r} is not a size: use bytes or a string such as "
                          "'64MiB', '4GB'") from None
