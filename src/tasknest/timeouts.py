"""Timeouts as the API takes them: seconds, or dask's strings ("10 ms", "2 s", "1 min")."""
from __future__ import annotations

import re
from typing import Any

from .errors import CallerError

_UNITS = {
    "us": 1e-6, "µs": 1e-6, "microsecond": 1e-6, "microseconds": 1e-6,
    "ms": 1e-3, "millisecond": 1e-3, "milliseconds": 1e-3,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-zµ]*)\s*$", re.I)


def parse_timeout(value: Any, what: str = "timeout") -> float | None:
    """None, or a non-negative number of seconds; strings carry a unit (bare: seconds).

    Raises:
        CallerError: anything else, with what was given.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or value < 0:
            raise CallerError(f"{what} must be None or a non-negative number of seconds, "
                              f"got {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _PATTERN.match(value)
        unit = match.group(2).lower() if match else ""
        if match and (unit in _UNITS or not unit):
            return float(match.group(1)) * _UNITS.get(unit, 1.0)
        raise CallerError(f"{what} {value!r} is not a duration: use seconds or a string such as "
                          "'10 ms', '2 s', '1 min'")
    raise CallerError(f"{what} must be None, a number of seconds or a string such as '2 s', "
                      f"got {type(value).__name__} {value!r:.60}")
