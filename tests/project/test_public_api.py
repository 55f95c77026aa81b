"""The public API says what it is: ``__all__`` is exactly what the package exports, every
exception it exports is a TasknestError, the package ships its types (py.typed), and the
calls users make document their arguments (Args:), results (Returns:) and errors (Raises:).
"""
from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pytest

import tasknest
from tasknest import errors

pytestmark = pytest.mark.timeout(60)

# the classes whose methods users call; their public methods are checked one by one
DOCUMENTED_CLASSES = ["Client", "Future", "LocalCluster", "as_completed"]


def public_names(module: types.ModuleType) -> set[str]:
    """What ``from module import *`` would bring without ``__all__``, minus submodules and
    ``from __future__`` features."""
    return {name for name, value in vars(module).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)
            and name != "annotations"}


def test_all_lists_exactly_the_public_names():
    exported = set(tasknest.__all__)
    assert len(exported) == len(tasknest.__all__), "a name is listed twice in __all__"
    assert exported - {"__version__"} == public_names(tasknest)
    for name in tasknest.__all__:
        assert hasattr(tasknest, name), name


@pytest.mark.parametrize("module_name", ["tasknest.deploy.security"])
def test_submodule_all_names_exist(module_name):
    import importlib
    module = importlib.import_module(module_name)
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name}"


def test_every_error_is_a_tasknest_error_and_exported():
    classes = [v for v in vars(errors).values() if isinstance(v, type)
               and issubclass(v, BaseException) and v.__module__ == errors.__name__]
    assert classes
    for cls in classes:
        if cls is errors.RemoteTraceback:     # the __cause__ carrying remote frames, not raised
            continue
        assert issubclass(cls, tasknest.TasknestError), cls
        assert cls.__name__ in tasknest.__all__, f"{cls.__name__} is not exported"


def test_errors_are_also_what_the_standard_library_callers_expect():
    import concurrent.futures as cf
    assert issubclass(tasknest.FutureCancelledError, cf.CancelledError)
    assert issubclass(tasknest.TimedOutError, TimeoutError)
    assert issubclass(tasknest.ConnectError, TimeoutError)
    assert issubclass(tasknest.ConnectError, ConnectionError)
    assert issubclass(tasknest.NotFoundError, KeyError)
    assert issubclass(tasknest.CallerError, ValueError)
    assert issubclass(tasknest.CallerError, TypeError)
    assert issubclass(tasknest.ClusterStartError, RuntimeError)
    assert str(tasknest.NotFoundError("no dataset named 'x'")) == "no dataset named 'x'"


def test_package_ships_its_types():
    assert (Path(tasknest.__file__).parent / "py.typed").exists()
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert re.search(r'tasknest\s*=\s*\[[^\]]*"py\.typed"', pyproject), \
        "py.typed is not in the package data"


# -- docstrings ----------------------------------------------------------------------------------
def _params(fn) -> list[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values() if p.name not in ("self", "cls")]


def _section(doc: str, title: str) -> str:
    """The text of a Google-style section (up to the next section or the end)."""
    match = re.search(rf"^\s*{title}:\s*$(.*?)(?=^\s*(?:Args|Returns|Raises|Yields|Example"
                      rf"|Examples|Note):\s*$|\Z)", doc, re.M | re.S)
    return match.group(1) if match else ""


def _problems(name: str, fn) -> list[str]:
    doc = inspect.getdoc(fn) or ""
    if not doc:
        return [f"{name}: no docstring"]
    out = []
    params = _params(fn)
    if params:
        args = _section(doc, "Args")
        if not args:
            out.append(f"{name}: no Args: section")
        for p in params:
            # a line may describe several: "fifo_timeout, actors: ..." / "*args, **kwargs: ..."
            if not re.search(rf"^\s*(?:\**\w+,\s*)*\**{re.escape(p)}\b", args, re.M):
                out.append(f"{name}: Args: does not describe {p!r}")
    return out


def documented_callables():
    for name in tasknest.__all__:
        obj = getattr(tasknest, name)
        if inspect.isfunction(obj):
            yield name, obj
    for cls_name in DOCUMENTED_CLASSES:
        cls = getattr(tasknest, cls_name)
        for attr in dir(cls):
            if attr.startswith("_"):
                continue
            raw = inspect.getattr_static(cls, attr)
            if isinstance(raw, property):
                continue
            fn = getattr(raw, "__func__", raw)
            if callable(fn) and not isinstance(fn, type):
                yield f"{cls_name}.{attr}", fn


def test_public_calls_document_their_arguments():
    problems = [p for name, fn in documented_callables() for p in _problems(name, fn)]
    assert not problems, "\n".join(problems)


def test_the_docstring_check_notices_a_missing_argument():
    def f(a, b):
        """Do it.

        Args:
            a: the first.
        """
    assert _problems("f", f) == ["f: Args: does not describe 'b'"]
