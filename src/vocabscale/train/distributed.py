"""Several processes for one run: DDP launched through `torchrun`.

`vocabscale train` for a model with `gpus: N > 1` reruns itself under
`torchrun --standalone --nproc-per-node N`, so the Snakemake rule and the DVC stage keep one
command line. Each worker takes its share of every global batch (see `data.sample_batch`) and
its share of the evaluation batches; DDP averages the gradients. On CUDA the processes talk
over NCCL, one GPU each; on CPU (`train.device: cpu`, used by the tests) over gloo.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


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
    """Refuse, before launching anything, a run that asks for more GPUs than there are."""
    device = resolve_device(setting)
    if device.type == "cuda" and torch.cuda.device_count() < processes:
        raise ValueError(
            f"the run asks for {processes} GPUs (models.<name>.gpus) but this machine has "
            f"{torch.cuda.device_count()}"
        )


def setup(setting: str) -> Process:
    """Join the process group torchrun set up (a no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    device = resolve_device(setting)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return Process(rank(), world, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: torch.Tensor, proc: Process) -> torch.Tensor:
    """Element-wise sum over every process (the tensor itself for one process)."""
    if proc.world > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: torchrun gets SIGTERM when the process that launched it dies, even by SIGKILL,
    so a killed job never leaves workers training behind it."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def launch(processes: int, argv: list[str]) -> tuple[int, bool]:
    """Run `vocabscale <argv>` under torchrun with `processes` workers and wait for it.

    SIGTERM is passed on to torchrun, which passes it to the workers (they checkpoint and stop).
    Returns torchrun's exit status and whether a SIGTERM arrived.
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "vocabscale",
        "--",  # or torchrun would take `--log` for an abbreviation of its own `--log-dir`
        *argv,
    ]
    log.info("launching %d processes: %s", processes, shlex.join(command))
    child = subprocess.Popen(command, preexec_fn=_die_with_parent)
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
    return status, terminated
