"""The package type-checks (mypy, configured in pyproject.toml)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_mypy_finds_no_errors():
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=ROOT,
                         capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


@pytest.mark.timeout(300)
def test_the_message_catalogue_is_typed(tmp_path):
    """A message is a declared class: mypy checks its fields where it is built and read."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from tasknest.protocol import messages as m\n"
        "ok = m.Submit(key='k', func=b'f', args=b'a', deps=[], priority=[0, 0, 0], retries=0,\n"
        "              workers=None, resources=None, loose=False)\n"
        "n: int = ok.retries\n"
        "bad_type = m.Submit(key=1, func=b'f', args=b'a', deps=[], priority=[], retries=0,\n"
        "                    workers=None, resources=None, loose=False)\n"
        "bad_name = m.Free(key='k')\n"
        "s: str = ok.retries\n"
        "ok.nonsense\n")
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent",
                          str(probe)], cwd=ROOT, capture_output=True, text=True, timeout=280)
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    lines = sorted({int(line.split(":")[1]) for line in errors})
    assert lines == [5, 7, 8, 9], out.stdout
