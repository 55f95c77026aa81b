"""One configuration, in this order: arguments, ``TASKNEST_*`` environment variables,
a TOML file, defaults.

The file is ``$TASKNEST_CONFIG`` if set, else ``~/.config/tasknest/tasknest.toml``
(absent is fine). Keys are dotted (``scheduler.port``); in the file they sit in
tables (``[scheduler]`` / ``port = 8786``); in the environment a key is
``TASKNEST_`` + the key upper-cased with dots and dashes as underscores
(``TASKNEST_SCHEDULER_PORT``). A key the file names that tasknest does not know is
an error naming it (a typo would otherwise be ignored silently).
``tasknest config`` prints every effective value and where it came from.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from .errors import CallerError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10
    import tomli as tomllib

# key -> (type, default, what it is)
KEYS: dict[str, tuple[type, Any, str]] = {
    "log-level": (str, "WARNING", "logging level of the command-line processes"),
    "scheduler.host": (str, "127.0.0.1", "interface the scheduler listens on"),
    "scheduler.port": (int, 8786, "port the scheduler listens on"),
    "scheduler.heartbeat-timeout": (float, 30.0, "seconds without heartbeat before a worker "
                                                 "is declared dead"),
    "scheduler.allowed-failures": (int, 3, "worker deaths a task may witness"),
    "scheduler.dashboard-address": (str, "127.0.0.1:8787", "HOST:PORT of the web dashboard "
                                                           "(the next free port if taken)"),
    "worker.nthreads": (int, 1, "task threads per worker"),
    "worker.memory-limit": (str, "0", "e.g. 4GB; 0 for none"),
    "worker.resources": (str, "", 'what tasks may ask for, e.g. "GPU=2,MEM=16e9"'),
    "worker.reconnect-timeout": (float, 60.0, "seconds to keep trying a lost scheduler"),
    "receive-pool": (str, "1GiB", "memory kept warm for large received arrays after they are "
                                  "dropped (each process; 0 turns it off)"),
    "client.timeout": (float, 10.0, "seconds to wait for the scheduler to answer a connect"),
    "client.reconnect-timeout": (float, 60.0, "seconds a client waits for a lost scheduler "
                                              "to come back before its futures fail"),
}


class ConfigError(CallerError):
    """The configuration file or an environment variable is invalid."""


def config_path() -> Path:
    given = os.environ.get("TASKNEST_CONFIG")
    if given:
        return Path(given)
    return Path.home() / ".config" / "tasknest" / "tasknest.toml"


def env_name(key: str) -> str:
    return "TASKNEST_" + key.upper().replace(".", "_").replace("-", "_")


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(_flatten(value, key + "."))
        else:
            out[key] = value
    return out


def _convert(key: str, value: Any, where: str) -> Any:
    typ = KEYS[key][0]
    try:
        if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if typ is int and isinstance(value, str) or typ is float and isinstance(value, str):
            return typ(value)
        if isinstance(value, typ) and not isinstance(value, bool):
            return value
        if typ is str and isinstance(value, (int, float)):
            return str(value)
    except ValueError:
        pass
    raise ConfigError(f"{where}: {key} must be a {typ.__name__}, got {value!r}")


def read_file(path: Path | None = None) -> dict[str, Any]:
    path = config_path() if path is None else path
    if not path.exists():
        return {}
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    values = _flatten(raw)
    for key in values:
        if key not in KEYS:
            raise ConfigError(f"{path}: unknown configuration key {key!r} (known: "
                              f"{', '.join(sorted(KEYS))})")
    return {k: _convert(k, v, str(path)) for k, v in values.items()}


def effective() -> dict[str, tuple[Any, str]]:
    """{key: (value, source)} without arguments: environment, file, default."""
    from_file = read_file()
    path = str(config_path())
    out: dict[str, tuple[Any, str]] = {}
    for key, (_, default, _) in KEYS.items():
        name = env_name(key)
        if name in os.environ:
            out[key] = (_convert(key, os.environ[name], name), f"${name}")
        elif key in from_file:
            out[key] = (from_file[key], path)
        else:
            out[key] = (default, "default")
    return out


def get(key: str, argument: Any = None) -> Any:
    """The value of ``key``: the argument if given, else environment, file, default."""
    if key not in KEYS:
        raise ConfigError(f"unknown configuration key {key!r}")
    if argument is not None:
        return argument
    return effective()[key][0]


def describe() -> str:
    """What ``tasknest config`` prints."""
    lines = [f"# configuration file: {config_path()}"]
    for key, (value, source) in effective().items():
        lines.append(f"{key} = {value!r}    # {source}")
    return "\n".join(lines)
