"""CPU training speed of vocabscale's model against the reference implementation, transformers'
LlamaForCausalLM, at the same shape, threads and precision, in one process.

    python benchmarks/bench_reference.py                     # the paper's 33M shape, V = 32,768
    python benchmarks/bench_reference.py --shape 85M --rounds 6

Both models hold the same weights (the transformers one is made by `vocabscale.export`, so the
first losses agree) and take full optimizer steps the way the train stage does: forward,
backward, gradient clipping, AdamW with decay on matrices only. Variants:

  vocabscale     `accumulate_gradients`: the summed cross-entropy through the fused, chunked
                 loss head, scaled to the mean
  hf_sum         transformers' logits, then F.cross_entropy(reduction="sum") / tokens: the same
                 loss and scale
  hf_labels      transformers' own `model(input_ids, labels=...)` mean loss (one target fewer
                 per sequence: it shifts the labels itself)

The variants alternate in rounds of a few steps, so that a machine shared with other work
slows them alike; the figures are medians over rounds, of wall-clock time and of this process's
CPU time. The ratio is vocabscale's tokens/s over each transformers variant's.

The output, with date and machine, goes to stdout and replaces this benchmark's section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from machine import cpu_model, memory_gib, record_section, usable_cores

from vocabscale.accounting import PAPER_SHAPES
from vocabscale.config import defaults
from vocabscale.export import hf_config, hf_state_dict
from vocabscale.sweep import ModelSpec
from vocabscale.train.config import TrainConfig
from vocabscale.train.step import accumulate_gradients, build_model, build_optimizer

HEADING = "# CPU speed against transformers' Llama"


def models(args) -> tuple[torch.nn.Module, torch.nn.Module, TrainConfig]:
    """vocabscale's model and transformers' LlamaForCausalLM with the same weights."""
    shape = PAPER_SHAPES[args.shape][0]
    train = defaults("train") | {"seed": 0, "context": args.context, "lr": 3e-4, "evals": 1}
    train |= {"batch_tokens": args.batch * args.context, "micro_batch_size": args.batch}
    train |= {"device": "cpu", "precision": "fp32"}
    config = TrainConfig.from_params(train)
    spec = ModelSpec(args.shape, shape, train_tokens=1, gpus=1, nodes=1, parallel="auto")
    ours = build_model(spec, args.vocab_size, config, torch.device("cpu"))
    run = {"vocab_size": args.vocab_size, "context": args.context, **shape.__dict__}
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_config(run)))
    reference.load_state_dict(hf_state_dict(ours.state_dict(), shape.n_head), strict=True)
    return ours, reference, config


def step_functions(ours, reference, config, inputs, targets) -> dict:
    """One optimizer step of each variant, as a function returning its loss."""
    tokens = targets.numel()
    optimizers = {
        "vocabscale": build_optimizer(ours, config, torch.device("cpu")),
        "hf": build_optimizer(reference, config, torch.device("cpu")),
    }

    def finish(model, optimizer) -> None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def vocabscale() -> float:
        loss = accumulate_gradients(
            ours, inputs, targets, config.micro_batch_size, contextlib.nullcontext(), 1 / tokens
        )
        finish(ours, optimizers["vocabscale"])
        return float(loss) / tokens

    def hf_sum() -> float:
        logits = reference(input_ids=inputs).logits
        loss = F.cross_entropy(
            logits.view(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
        )
        (loss / tokens).backward()
        finish(reference, optimizers["hf"])
        return float(loss.detach()) / tokens

    def hf_labels() -> float:
        loss = reference(input_ids=inputs, labels=inputs).loss
        loss.backward()
        finish(reference, optimizers["hf"])
        return float(loss.detach())

    return {"vocabscale": vocabscale, "hf_sum": hf_sum, "hf_labels": hf_labels}


def measure(steps: dict, args) -> dict[str, dict[str, list[float]]]:
    """Seconds per step of each variant, wall-clock and CPU, one value per round."""
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times = {name: {"wall": [], "cpu": []} for name in steps}
    for round_index in range(args.rounds):
        for name, step in steps.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step()
            times[name]["wall"].append((time.perf_counter() - wall) / args.steps)
            times[name]["cpu"].append((time.process_time() - cpu) / args.steps)
        load = os.getloadavg()[0]
        print(
            f"  round {round_index}: load {load:.1f}, "
            + ", ".join(f"{n} {t['wall'][-1]:.3f} s" for n, t in times.items()),
            flush=True,
        )
    return times


def report(args, first_losses: dict, times: dict) -> str:
    tokens = args.batch * args.context
    shape = PAPER_SHAPES[args.shape][0]
    lines = [
        HEADING,
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {cpu_model()}, {usable_cores()} usable cores, {memory_gib():.0f} GiB, no GPU; "
        f"load average {os.getloadavg()[0]:.1f} at the end (shared with other work)",
        f"- torch {torch.__version__}, transformers {transformers.__version__}, fp32, "
        f"{torch.get_num_threads()} thread(s), attention: SDPA in both",
        f"- shape {args.shape} (n_layer {shape.n_layer}, d {shape.d_model}, ffn {shape.ffn}), "
        f"V = {args.vocab_size:,}, {args.batch} sequence(s) of {args.context} tokens per step",
        f"- {args.warmup} warm-up steps each, then {args.rounds} rounds of {args.steps} steps per "
        "variant, alternating; medians over rounds",
        "- first losses (same weights): "
        + ", ".join(f"{name} {loss:.6f}" for name, loss in first_losses.items()),
        f"- command: `python benchmarks/bench_reference.py {' '.join(sys.argv[1:])}`",
        "",
        "| variant | s/step (wall) | tokens/s (wall) | s/step (CPU) | vocabscale's tokens/s over "
        "this (wall) | (CPU) |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    ours = {kind: statistics.median(times["vocabscale"][kind]) for kind in ("wall", "cpu")}
    for name, measured in times.items():
        wall, cpu = (statistics.median(measured[kind]) for kind in ("wall", "cpu"))
        lines.append(
            f"| {name} | {wall:.3f} | {tokens / wall:,.1f} | {cpu:.3f} | "
            f"{wall / ours['wall']:.3f} | {cpu / ours['cpu']:.3f} |"
        )
    lines += [
        "",
        "CPU time is this process's: on a machine busy with other work (a load average above "
        "its cores) wall-clock time is set by the scheduler, and the CPU-time ratio is the "
        "comparison to read.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="33M", choices=list(PAPER_SHAPES))
    parser.add_argument("--vocab-size", type=int, default=32768)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1, help="sequences per step")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ours, reference, config = models(args)
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, args.vocab_size, (args.batch, args.context + 1), generator=generator)
    inputs, targets = batch[:, :-1], batch[:, 1:]
    steps = step_functions(ours, reference, config, inputs, targets)
    with torch.no_grad():
        first = {
            "vocabscale": float(ours(inputs, targets)) / targets.numel(),
            "transformers": float(
                F.cross_entropy(reference(input_ids=inputs).logits.flatten(0, 1), targets.flatten())
            ),
        }
    text = report(args, first, measure(steps, args))
    print(text)
    record_section(args.out, HEADING, text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
