"""``python -m tasknest ...`` commands in processes of their own, as a user would start them."""
from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time


class Proc:
    """A tasknest command in its own process; reads its first stdout line (the address)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("TASKNEST_TOKEN", "TASKNEST_PARENT_PID")}
        paths = [p for p in sys.path if p and os.path.isdir(p)]   # workers import the
        if os.environ.get("PYTHONPATH"):                            # tests' functions
            paths.append(os.environ["PYTHONPATH"])
        full_env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        full_env.update(env or {})
        self.args = args
        self.proc = subprocess.Popen([sys.executable, "-m", "tasknest", *args], env=full_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.stderr = b""

    def _read_until(self, stream, done, timeout: float) -> bytes:
        sel = selectors.DefaultSelector()
        sel.register(stream, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + timeout
        try:
            while not done(buf):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.args[0]}: no output within {timeout} s; "
                                         f"got {buf!r}")
                if sel.select(remaining):
                    chunk = os.read(stream.fileno(), 65536)
                    if not chunk:
                        break
                    buf += chunk
        finally:
            sel.close()
        return buf

    def first_line(self, timeout: float = 30) -> str:
        out = self._read_until(self.proc.stdout, lambda b: b"\n" in b, timeout)
        assert b"\n" in out, f"{self.args[0]} exited (code {self.proc.poll()}) " \
                             f"without an address: {self.proc.stderr.read()!r}"
        return out.split(b"\n", 1)[0].decode().strip()

    def generated_token(self, timeout: float = 30) -> str:
        err = self._read_until(self.proc.stderr, lambda b: b"token" in b and
                               b.rstrip().count(b"\n") >= 2 and b.endswith(b"\n"), timeout)
        self.stderr += err
        return err.decode().strip().splitlines()[-1].strip()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20) -> int:
        code = self.proc.wait(timeout)
        self.stderr += self.proc.stderr.read()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
