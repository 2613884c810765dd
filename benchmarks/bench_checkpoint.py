"""How fast the resume state is written, against the grace window that SIGTERM leaves for it.

    python benchmarks/bench_checkpoint.py                     # into benchmarks/.checkpoints
    python benchmarks/bench_checkpoint.py --dir /scratch/me   # the filesystem the runs use

For each paper shape x V it builds the run's real model, gives every parameter AdamW's two
moments (what the optimizer holds after its first step), writes the state with the train
stage's own `save_state` (to a temporary file renamed into place, as the stage does; the time
is until it returns, as a process that is then killed has written it) and reads back the
file's size.
It prints the size next to `preemption.state_bytes` (the estimate the grace window is made
from), the write time and MB/s, and the grace window at the default
`cluster.checkpoint_write_mb_per_s` next to the one at the measured speed. Set that key to what
your cluster's filesystem achieves; the grace window must exceed two writes.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import time
from pathlib import Path

import torch
from machine import cpu_model, memory_gib, usable_cores

from vocabscale.accounting import PAPER_SHAPES
from vocabscale.config import defaults
from vocabscale.preemption import grace_seconds, state_bytes
from vocabscale.train.checkpoint import save_state
from vocabscale.train.model import Llama


def resume_state(shape, vocab_size: int) -> dict:
    """A run's resume state as the loop saves it: weights, AdamW's moments, the step."""
    model = Llama(shape, vocab_size, context=2048)
    optimizer = torch.optim.AdamW(model.parameters())
    for parameter in model.parameters():
        optimizer.state[parameter] = {
            "step": torch.tensor(1.0),
            "exp_avg": torch.zeros_like(parameter),
            "exp_avg_sq": torch.zeros_like(parameter),
        }
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 1}


def measure(directory: Path, preset: str, vocab_size: int) -> str:
    shape = PAPER_SHAPES[preset][0]
    state = resume_state(shape, vocab_size)
    path = directory / f"{preset}-v{vocab_size}.pt"
    started = time.perf_counter()
    save_state(path, state)
    seconds = time.perf_counter() - started
    size = path.stat().st_size
    path.unlink()
    cluster = defaults("cluster")
    speed = size / seconds / 1e6
    measured = {**cluster, "checkpoint_write_mb_per_s": speed}
    cells = [
        preset,
        f"{vocab_size:,}",
        f"{size / 1e9:.3f}",
        f"{state_bytes(shape, vocab_size) / 1e9:.3f}",
        f"{seconds:.2f}",
        f"{speed:.0f}",
        grace_seconds(shape, vocab_size, cluster),
        grace_seconds(shape, vocab_size, measured),
    ]
    return "| " + " | ".join(map(str, cells)) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(Path(__file__).with_name(".checkpoints")))
    parser.add_argument("--shapes", nargs="+", default=["33M", "85M", "151M", "302M"])
    parser.add_argument("--vocab-sizes", nargs="+", type=int, default=[4096, 96256])
    args = parser.parse_args()
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    default_speed = defaults("cluster.checkpoint_write_mb_per_s")
    print(f"# Checkpoint write benchmark\n\n- date: {datetime.date.today()}")
    print(f"- machine: {cpu_model()}, {usable_cores()} cores, {memory_gib():.1f} GiB")
    free = shutil.disk_usage(directory).free / 1e9
    print(f"- written to: {directory.resolve()} ({free:.0f} GB free)")
    print("- command: `python benchmarks/bench_checkpoint.py` (defaults of the options)")
    print(
        "\n| shape | V | written GB | estimate GB | seconds | MB/s "
        f"| grace s at {default_speed:.0f} MB/s | grace s at the measured speed |"
    )
    print("|---" * 8 + "|")
    for preset in args.shapes:
        for vocab_size in args.vocab_sizes:
            print(measure(directory, preset, vocab_size), flush=True)


if __name__ == "__main__":
    main()
