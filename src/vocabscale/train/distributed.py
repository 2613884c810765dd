"""Several processes for one run: `vocabscale train` reruns itself under torchrun (one node) or
`srun torchrun` (several nodes of a SLURM job), so both engines keep one command line; each
worker joins the process group (NCCL on CUDA, gloo on CPU). At SIGTERM all ranks stop at the
same step and tell the launcher so (`stop_together`); docs/design.md, "On a cluster"."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from vocabscale.io import read_json, write_json

log = logging.getLogger(__name__)

#: What rank 0 writes into the checkpoint directory once a SIGTERM'd run has saved its state.
PREEMPTED = "preempted.json"


@dataclass(frozen=True)
class Process:
    """Where this process stands: its rank among `world` processes and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints and outputs and shows progress."""
        return self.rank == 0


def launched() -> bool:
    """True inside a process started by torchrun."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def resolve_device(setting: str) -> torch.device:
    """`auto` takes CUDA when torch sees it; a worker takes the GPU of its LOCAL_RANK."""
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("train.device is 'cuda' but torch sees no CUDA device")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def check_devices(processes: int, setting: str) -> None:
    """Refuse, before launching anything, a run that asks for more GPUs than there are; say
    which GPUs the job was given when torch does not see them (`auto` then trains on CPU)."""
    device = resolve_device(setting)
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if device.type == "cpu" and setting != "cpu" and given:
        log.warning(
            "the job was given GPUs (CUDA_VISIBLE_DEVICES=%s) but torch sees none: "
            "training on the CPU",
            given,
        )
    if device.type == "cuda" and torch.cuda.device_count() < processes:
        raise ValueError(
            f"the run asks for {processes} GPUs per node (models.<name>.gpus) but this machine "
            f"has {torch.cuda.device_count()}"
        )


def setup(setting: str) -> Process:
    """Join the process group torchrun set up (a no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    device = resolve_device(setting)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        die_with_parent()  # torchrun's worker: stop (and checkpoint) if torchrun is killed
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return Process(rank(), world, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(proc: Process) -> None:
    """Wait until every process is here (nothing to wait for with one)."""
    if proc.world > 1:
        dist.barrier()


def gather(value: Any, proc: Process) -> list[Any]:
    """Every process's `value` (anything picklable), in rank order, on every process.
    Collective."""
    if proc.world == 1:
        return [value]
    values: list[Any] = [None] * proc.world
    dist.all_gather_object(values, value)
    return values


def all_sum(values: torch.Tensor, proc: Process) -> torch.Tensor:
    """Element-wise sum over every process (the tensor itself for one process)."""
    if proc.world > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def stop_together(proc: Process, checkpoint_dir: Path, step: int) -> None:
    """At SIGTERM, once the state is saved: rank 0 records the step the run stopped at, and
    every rank waits for it, so that none exits (and has torchrun end the others) while rank
    0 still writes. (Under FSDP every rank writes its shards; the save is collective and
    returns once rank 0 has written the file that names them, before the record.)"""
    if proc.main:
        write_json(checkpoint_dir / PREEMPTED, {"step": step})
    barrier(proc)


def preempted_step(checkpoint_dir: Path) -> int | None:
    """The step a run's workers stopped at after SIGTERM, their state saved; None if they
    did not."""
    marker = checkpoint_dir / PREEMPTED
    return read_json(marker)["step"] if marker.exists() else None


def die_with_parent() -> None:  # pragma: no cover - also runs in a child before exec
    """Linux: this process gets SIGTERM when its parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# --- launching -------------------------------------------------------------------------------


def torchrun_arguments(
    nodes: int,
    per_node: int,
    argv: list[str],
    shutdown_timeout: int,
    endpoint: str | None = None,
    run_id: str | None = None,
) -> list[str]:
    """torchrun's options and script for `vocabscale <argv>` with `per_node` processes on each
    of `nodes` nodes; several nodes meet at `endpoint` (host:port) under `run_id`."""
    if nodes == 1:
        rendezvous = ["--standalone"]
    else:
        rendezvous = [
            f"--nnodes={nodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}",
            f"--rdzv-id={run_id}",
        ]
    return [
        *rendezvous,
        f"--nproc-per-node={per_node}",
        f"--shutdown-timeout={shutdown_timeout}",
        "-m",
        "vocabscale",
        "--",  # or torchrun would take `--log` for an abbreviation of its own `--log-dir`
        *argv,
    ]


def torchrun_command(*args, **kwargs) -> list[str]:
    """The torchrun command line of one node (see `torchrun_arguments`)."""
    return [sys.executable, "-m", "torch.distributed.run", *torchrun_arguments(*args, **kwargs)]


def slurm_job() -> dict[str, str]:
    """`scontrol show job` of the SLURM job this process runs in, as key -> value. (The
    Snakemake executor removes most SLURM_* variables from a rule's environment.)"""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return {}
    shown = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", job], capture_output=True, text=True, check=True
    ).stdout
    return dict(item.split("=", 1) for item in shown.split() if "=" in item)


def srun_torchrun_command(
    nodes: int, per_node: int, argv: list[str], shutdown_timeout: int
) -> list[str]:
    """`srun torchrun` over the `nodes` nodes of this SLURM job: one task per node, with the
    job's CPUs per task, the rendezvous on this node (the job's first). Each node's torchrun
    gives its own host name as its address: the default, Python's fully qualified name, can
    be `localhost`, and rank 0's address is where the other nodes' workers connect."""
    job = slurm_job()
    if not job:
        agent = torchrun_arguments(
            nodes, per_node, argv, shutdown_timeout, "<first node>:<port>", "<run id>"
        )
        raise ValueError(
            f"a run over {nodes} nodes (models.<name>.nodes) starts inside a SLURM job of "
            f"{nodes} nodes, one task each (`snakemake --profile cluster` asks for it); "
            f"elsewhere start it on every node yourself: {shlex.join(['torchrun', *agent])}"
        )
    allocated = int(job["NumNodes"].split("-")[0])
    if allocated != nodes:
        raise ValueError(
            f"SLURM job {job['JobId']} has {allocated} node(s), but the run asks for {nodes} "
            "(models.<name>.nodes)"
        )
    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    endpoint = f"{socket.gethostname()}:{port}"
    arguments = torchrun_arguments(nodes, per_node, argv, shutdown_timeout, endpoint, job["JobId"])
    return [
        "srun",
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={job['CPUs/Task']}",
        "--kill-on-bad-exit=1",
        "bash",
        "-c",
        'exec "$0" -m torch.distributed.run --local-addr="$(hostname)" "$@"',
        sys.executable,
        *arguments,
    ]


def launch(command: list[str], checkpoint_dir: Path) -> tuple[int, bool]:
    """Run torchrun (or srun over torchrun) and wait for it, passing SIGTERM on. Returns its
    exit status (128 + N for signal N) and whether the run stopped at a SIGTERM: its workers
    saved their state (`preempted.json`), or SIGTERM reached this process."""
    (checkpoint_dir / PREEMPTED).unlink(missing_ok=True)
    log.info(
        "launching (CUDA_VISIBLE_DEVICES=%s): %s",
        os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
        shlex.join(command),
    )
    child = subprocess.Popen(command, preexec_fn=die_with_parent)
    terminated = False

    def forward(signum, frame) -> None:
        nonlocal terminated
        terminated = True
        child.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        status = child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    stopped_at = preempted_step(checkpoint_dir)
    if stopped_at is not None:
        log.warning("the workers stopped at step %d with their state saved", stopped_at)
    return (128 - status if status < 0 else status), terminated or stopped_at is not None
