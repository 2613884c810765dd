"""A real SLURM cluster for the tests: munge, slurmctld and two slurmd from the distribution.

Two nodes, `n1` and `n2`, run on this host (one slurmd each, on ports of their own), each
declaring 4 GPUs of type h100 and more CPUs and memory than the machine has
(`SlurmdParameters=config_overrides`). The GPUs are device files of NVIDIA's major number made
with mknod (empty files where mknod is not allowed: SLURM still counts and allocates them, but
then sets no CUDA_VISIBLE_DEVICES), so that SLURM schedules GPU jobs as it would on a GPU
cluster; nothing can compute on them.

The cluster gets its own configuration (SLURM_CONF), state directory and ports, so it does not
touch a SLURM the machine may already run; only the daemons started here are stopped, by pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

#: What the tests run: the daemons and the commands that talk to them.
COMMANDS = (
    "munged",
    "slurmctld",
    "slurmd",
    "sbatch",
    "srun",
    "squeue",
    "scancel",
    "scontrol",
    "sinfo",
)
REQUIRE_VARIABLE = "VOCABSCALE_REQUIRE_SLURM"
NODES = ("n1", "n2")
GPU_TYPE = "h100"
GPUS_PER_NODE = 4
NODE_CPUS = 16
NODE_MEMORY_MB = 16000
NVIDIA_MAJOR = 195
#: srun inside a job reads the system path, not SLURM_CONF, so the test cluster's
#: configuration is copied there for the duration of the tests (never over someone else's).
SYSTEM_CONFIG = Path("/etc/slurm/slurm.conf")
MARKER = "# written by the vocabscale tests"


def missing_reason() -> str | None:
    """Why a SLURM cluster cannot be started here (None when it can)."""
    absent = [name for name in COMMANDS if shutil.which(name) is None]
    if absent:
        return f"SLURM is not installed ({', '.join(absent)} not found)"
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    if SYSTEM_CONFIG.exists() and MARKER not in SYSTEM_CONFIG.read_text(errors="replace"):
        return f"{SYSTEM_CONFIG} belongs to another SLURM installation; it is left alone"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class SlurmCluster:
    root: Path
    env: dict[str, str]
    started: list[subprocess.Popen]
    gpu_devices: bool = False  # the GPUs are character devices (CUDA_VISIBLE_DEVICES is set)

    def run(self, *command: str, check: bool = True) -> str:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True)
        if check and result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr}")
        return result.stdout

    def jobs(self) -> list[dict[str, str]]:
        """Queued and running jobs: id, name, state."""
        out = self.run("squeue", "--noheader", "--format=%i|%j|%T|%k")
        return [
            dict(zip(("id", "name", "state", "comment"), line.split("|"), strict=False))
            for line in out.splitlines()
            if line.strip()
        ]

    def show_jobs(self) -> list[dict[str, str]]:
        """`scontrol show job` of every job slurmctld remembers (finished ones for MinJobAge),
        each as key -> value."""
        out = self.run("scontrol", "show", "job", "--oneliner")
        return [
            dict(item.split("=", 1) for item in line.split() if "=" in item)
            for line in out.splitlines()
            if line.startswith("JobId=")
        ]


def _write_config(root: Path, host: str) -> Path:
    config = root / "slurm.conf"
    nodes = "\n".join(
        f"NodeName={node} NodeHostname={host} Port={_free_port()} CPUs={NODE_CPUS} "
        f"RealMemory={NODE_MEMORY_MB} Gres=gpu:{GPU_TYPE}:{GPUS_PER_NODE} State=UNKNOWN"
        for node in NODES
    )
    config.write_text(
        f"""{MARKER}
ClusterName=vocabscale-test
SlurmctldHost={host}
SlurmctldPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=15
SchedulerParameters=sched_interval=1
SlurmdParameters=config_overrides
GresTypes=gpu
{nodes}
PartitionName=test Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP
"""
    )
    # gres.conf is read from the directory of the configuration slurmd is started with
    (root / "gres.conf").write_text(
        f"NodeName={','.join(NODES)} Name=gpu Type={GPU_TYPE} "
        f"File={root}/dev/nvidia[0-{GPUS_PER_NODE - 1}]\n"
    )
    (root / "state").mkdir(exist_ok=True)
    for node in NODES:
        (root / "spool" / node).mkdir(parents=True, exist_ok=True)
    return config


def _make_gpu_devices(root: Path) -> bool:
    """The fake GPUs' device files: character devices where mknod is allowed (True), else
    empty files."""
    devices = root / "dev"
    devices.mkdir(exist_ok=True)
    try:
        for index in range(GPUS_PER_NODE):
            os.mknod(
                devices / f"nvidia{index}", 0o600 | stat.S_IFCHR, os.makedev(NVIDIA_MAJOR, index)
            )
        return True
    except OSError:
        for index in range(GPUS_PER_NODE):
            (devices / f"nvidia{index}").unlink(missing_ok=True)
            (devices / f"nvidia{index}").touch()
        return False


def _munge_works(env: dict[str, str]) -> bool:
    probe = subprocess.run("munge -n | unmunge", shell=True, env=env, capture_output=True)
    return probe.returncode == 0


def start(root: Path, timeout: float = 60) -> SlurmCluster:
    """Start munged (unless one answers already), slurmctld and a slurmd per node; wait for
    the nodes."""
    host = socket.gethostname()
    config = _write_config(root, host)
    gpu_devices = _make_gpu_devices(root)
    SYSTEM_CONFIG.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config, SYSTEM_CONFIG)
    env = {**os.environ, "SLURM_CONF": str(config)}
    started: list[subprocess.Popen] = []
    if not _munge_works(env):
        socket_dir = Path("/run/munge")
        socket_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(socket_dir, "munge", "munge")
        munged = subprocess.Popen(
            ["runuser", "-u", "munge", "--", "munged", "--foreground"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(munged)
        for _ in range(50):
            if _munge_works(env):
                break
            time.sleep(0.1)
        else:
            stop(SlurmCluster(root, env, started))
            raise RuntimeError("munged did not start")
    daemons = [["slurmctld"], *(["slurmd", "-N", node] for node in NODES)]
    for daemon in daemons:
        started.append(
            subprocess.Popen(
                [*daemon, "-D", "-f", str(config)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    cluster = SlurmCluster(root, env, started, gpu_devices)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = cluster.run("sinfo", "--noheader", "--Node", "--format=%T", check=False).split()
        if len(states) == len(NODES) and set(states) <= {"idle", "mixed", "allocated"}:
            return cluster
        time.sleep(0.5)
    logs = "".join(p.read_text()[-2000:] for p in root.glob("slurm*.log"))
    stop(cluster)
    raise RuntimeError(f"the SLURM node did not become idle within {timeout} s:\n{logs}")


def stop(cluster: SlurmCluster) -> None:
    """Cancel what is left in the queue and end the daemons started here, by pid."""
    subprocess.run(
        ["scancel", "--full", "--user", str(os.geteuid())], env=cluster.env, capture_output=True
    )
    for process in reversed(cluster.started):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if SYSTEM_CONFIG.exists() and MARKER in SYSTEM_CONFIG.read_text(errors="replace"):
        SYSTEM_CONFIG.unlink()
