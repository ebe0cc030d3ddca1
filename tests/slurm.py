"""A real one-node SLURM cluster for the tests, in a temporary folder: munged with a
key of its own, slurmctld and slurmd on ports of their own (SLURM_CONF points the
commands at it), CPUs as many as this machine has; stopped after. Debian 12's
slurm-wlm and munge; installed as root when missing (apt), else the tests skip,
saying why."""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "mungekey")


def missing():
    return [d for d in DAEMONS if not shutil.which(d)]


def install():
    """apt-get install slurm-wlm munge (as root); None, or why it could not be done."""
    if not missing():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{', '.join(missing())} not installed, and apt-get needs root here"
    r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if r.returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=900)
        r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
                           capture_output=True, text=True, timeout=900,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if r.returncode != 0:
        return f"apt-get install {' '.join(PACKAGES)} failed: {r.stderr.strip()[-200:]}"
    return None if not missing() else f"{', '.join(missing())} still missing after apt-get"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONF = """ClusterName=fcntest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={d}/munge.sock
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=3600
KillWait=30
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=fcnnode NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes=fcnnode Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    """The daemons of one cluster; ``env`` (SLURM_CONF) points sbatch & co at it."""

    def __init__(self, folder):
        self.d = Path(folder)
        for sub in ("state", "spool"):
            (self.d / sub).mkdir(parents=True)
        self.conf = self.d / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}     # (add to a command's environment)
        self.run_env = {**os.environ, **self.env}

    def start(self):
        d = self.d
        subprocess.run(["mungekey", "-c", "-f", "-k", str(d / "munge.key")], check=True,
                       capture_output=True)
        os.chmod(d / "munge.key", 0o600)
        subprocess.run(["munged", f"--key-file={d}/munge.key", f"--socket={d}/munge.sock",
                        f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log",
                        f"--seed-file={d}/munge.seed", "--force"], check=True,
                       capture_output=True)
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2 ** 20 - 2048
        self.conf.write_text(CONF.format(d=d, ctld_port=free_port(), d_port=free_port(),
                                         cpus=os.cpu_count(), mem=mem))
        subprocess.run(["slurmctld", "-f", str(self.conf)], check=True, capture_output=True,
                       env=self.run_env)
        subprocess.run(["slurmd", "-f", str(self.conf), "-N", "fcnnode"], check=True,
                       capture_output=True, env=self.run_env)
        for _ in range(60):
            r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                               env=self.run_env)
            if r.stdout.strip() == "idle":
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the test cluster did not come up: {r.stdout} {r.stderr}; "
                           f"{(d / 'slurmctld.log').read_text()[-1000:]}")

    def stop(self):
        subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True, env=self.run_env)
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.d / f"{name}.pid"
            try:
                os.kill(int(pid.read_text()), 15)
            except (OSError, ValueError):
                pass
        time.sleep(1)

    def queued(self, job_ids):
        """Those of the jobs SLURM lists as pending or running."""
        r = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True,
                           env=self.run_env)
        return [j for j, state in (l.split() for l in r.stdout.splitlines())
                if j in job_ids and state in ("PENDING", "RUNNING", "CONFIGURING",
                                              "COMPLETING")]

    def wait(self, job_ids, timeout=900):
        """Until SLURM lists none of the jobs as pending or running."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            if not self.queued(job_ids):
                return
            time.sleep(1)
        raise TimeoutError(f"jobs {job_ids} still queued after {timeout} s")
