"""Configuration: arguments > TASKNEST_* environment > TOML file > defaults."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tasknest.config import ConfigError, effective, get

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def conf(tmp_path, monkeypatch):
    path = tmp_path / "tasknest.toml"
    monkeypatch.setenv("TASKNEST_CONFIG", str(path))
    for var in ("TASKNEST_SCHEDULER_PORT", "TASKNEST_WORKER_NTHREADS", "TASKNEST_LOG_LEVEL"):
        monkeypatch.delenv(var, raising=False)
    return path


def test_arguments_then_environment_then_file_then_defaults(conf, monkeypatch):
    conf.write_text('[scheduler]\nport = 9999\nheartbeat-timeout = 5\n[worker]\nnthreads = 3\n')
    assert get("scheduler.port") == 9999 and get("scheduler.heartbeat-timeout") == 5.0
    monkeypatch.setenv("TASKNEST_SCHEDULER_PORT", "7777")
    assert get("scheduler.port") == 7777
    assert get("scheduler.port", 1234) == 1234
    values = effective()
    assert values["scheduler.port"] == (7777, "$TASKNEST_SCHEDULER_PORT")
    assert values["worker.nthreads"] == (3, str(conf))
    assert values["client.timeout"] == (10.0, "default")


def test_unknown_or_mistyped_keys_are_errors_naming_them(conf, monkeypatch):
    conf.write_text("[scheduler]\nprot = 1\n")
    with pytest.raises(ConfigError, match="scheduler.prot"):
        get("scheduler.port")
    conf.write_text('[worker]\nnthreads = "many"\n')
    with pytest.raises(ConfigError, match="worker.nthreads"):
        get("worker.nthreads")
    conf.write_text("")
    monkeypatch.setenv("TASKNEST_WORKER_NTHREADS", "lots")
    with pytest.raises(ConfigError, match="TASKNEST_WORKER_NTHREADS"):
        get("worker.nthreads")


def test_tasknest_config_prints_values_and_sources(conf):
    conf.write_text("[worker]\nnthreads = 4\n")
    out = subprocess.run([sys.executable, "-m", "tasknest", "config"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert f"worker.nthreads = 4    # {conf}" in out.stdout
    assert "scheduler.port = 8786    # default" in out.stdout
    conf.write_text("[worker]\nthreds = 4\n")
    bad = subprocess.run([sys.executable, "-m", "tasknest", "config"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "worker.threds" in bad.stderr
