"""A real single-node SLURM for tests, started without systemd: munged (its own key
and socket), slurmctld and slurmd (our own ports, state and spool directories),
as root with ProctrackType=proctrack/pgid and TaskPlugin=task/none, no cgroup.conf."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")


def missing() -> str:
    absent = [d for d in DAEMONS if not os.path.exists(d)]
    absent += [c for c in ("sbatch", "squeue", "scancel", "sinfo") if shutil.which(c) is None]
    if absent:
        return (f"SLURM is not installed ({', '.join(absent)} missing; Debian packages "
                "slurmctld, slurmd, slurm-client, munge)")
    if os.geteuid() != 0:
        return "a single-node SLURM started by the test runs as root"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Slurm:
    def __init__(self, directory: str, cpus: int = 8) -> None:
        self.dir = directory
        d = directory
        for sub in ("state", "spool", "munge"):
            os.makedirs(os.path.join(d, sub), mode=0o700, exist_ok=True)
        key = os.path.join(d, "munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o600)
        self.socket = os.path.join(d, "munge", "sock")
        self.node = socket.gethostname().split(".")[0]
        self.conf = os.path.join(d, "slurm.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join([
                "ClusterName=tntest", f"SlurmctldHost={self.node}(127.0.0.1)",
                f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
                "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
                f"AuthInfo=socket={self.socket}", "CredType=cred/munge",
                f"StateSaveLocation={d}/state", f"SlurmdSpoolDir={d}/spool",
                f"SlurmctldPidFile={d}/slurmctld.pid", f"SlurmdPidFile={d}/slurmd.pid",
                f"SlurmctldLogFile={d}/slurmctld.log", f"SlurmdLogFile={d}/slurmd.log",
                "ProctrackType=proctrack/pgid", "TaskPlugin=task/none",
                "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
                "SlurmdParameters=config_overrides", "JobCompType=jobcomp/none",
                "AccountingStorageType=accounting_storage/none",
                "JobAcctGatherType=jobacct_gather/none", "MpiDefault=none",
                "ReturnToService=2", "SchedulerType=sched/backfill",
                "SchedulerParameters=sched_interval=1", "InactiveLimit=0", "KillWait=5",
                "MinJobAge=2", "PlugStackConfig=/dev/null",
                f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=8000 "
                "State=UNKNOWN",
                f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                ""]))
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self.procs: list[subprocess.Popen] = []

    def start(self, timeout: float = 30.0) -> "Slurm":
        d = self.dir
        subprocess.run(["/usr/sbin/munged", "--force", f"--key-file={d}/munge/munge.key",
                        f"--socket={self.socket}", f"--pid-file={d}/munge/pid",
                        f"--log-file={d}/munge/log", f"--seed-file={d}/munge/seed"],
                       check=True, capture_output=True, timeout=30)
        for cmd in (["/usr/sbin/slurmctld", "-D", "-i", "-f", self.conf],
                    ["/usr/sbin/slurmd", "-D", "-f", self.conf]):
            self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL,
                                               start_new_session=True))
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env,
                                 capture_output=True, text=True, timeout=30)
            if out.stdout.strip() in ("idle", "mixed", "allocated"):
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"SLURM did not come up: {out.stdout} {out.stderr}\n"
                                   + self.log())
            time.sleep(0.2)

    def log(self) -> str:
        text = []
        for name in ("slurmctld.log", "slurmd.log"):
            try:
                with open(os.path.join(self.dir, name)) as f:
                    text.append(f.read()[-3000:])
            except OSError:
                pass
        return "\n".join(text)

    def stop(self) -> None:
        subprocess.run(["scancel", "--user=root"], env=self.env, capture_output=True, timeout=30)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        try:
            with open(os.path.join(self.dir, "munge", "pid")) as f:
                os.kill(int(f.read().strip()), 15)
        except (OSError, ValueError):
            pass
