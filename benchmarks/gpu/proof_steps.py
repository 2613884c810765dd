"""Part "steps": the training step's throughput and MFU, and its peak memory against the
plan's estimate.

Each case is vocabscale's own optimizer step (`Trainer.optimizer_step`: the batch of a step
read from a token array, the micro-batches under the run's autocast through the model and its
chunked loss head, gradient clipping, fused AdamW on CUDA) with the paper preset's settings
(bf16, micro-batch, context, loss head), at one of the paper's shapes and vocabulary sizes,
with `torch.compile` of each block on or off. SDPA is restricted to the flash backend while
it runs (a step that cannot use it fails), and a profiled micro-batch counts the flash kernels.

MFU = tokens/s x FLOPs per token (6 (Nnv + V d) + 12 n_layer context d, as `accounting`
counts them) / the device's dense bf16 peak. Peak memory is `torch.cuda.max_memory_allocated`
from before the model is built to the last step (on a CPU, the process's RSS high-water mark),
against `sweep.parallelism`'s estimate for the same run on one GPU: the figure
`vocabscale plan` prints as its memory per GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from bench_train import bf16_peak, device_description, peak_rss, reset_peak_rss, sync
from proof_common import PAPER_PRESET, PartLog, Settings, phrase_tokens
from torch.nn.attention import SDPBackend, sdpa_kernel

from vocabscale.config import load_params
from vocabscale.sweep import model_specs, parallelism
from vocabscale.train.config import TrainConfig
from vocabscale.train.data import RunData, training_batch
from vocabscale.train.distributed import Process
from vocabscale.train.loop import Trainer, accumulate_gradients
from vocabscale.train.plan import RunPlan


def planned_cases(settings: Settings) -> list[dict[str, Any]]:
    """Eager first (every shape: throughput and memory against the plan, cheaply), then
    compiled, largest shape first (the shapes the 45% goal is for)."""
    eager = [(shape, False) for shape in settings.shapes]
    compiled = [(shape, True) for shape in reversed(settings.shapes)]
    return [
        {"shape": shape, "vocab_size": vocab_size, "compile": compiled, "status": "pending"}
        for shape, compiled in eager + compiled
        for vocab_size in settings.vocab_sizes
    ]


def paper_params(settings: Settings, device: torch.device) -> dict[str, Any]:
    """The paper preset, validated, on this device (the smoke's context is shorter)."""
    params = load_params(PAPER_PRESET)
    params["train"].update(device=device.type, context=settings.context, evals=1)
    return params


def synthetic_data(vocab_size: int, tokens: int) -> RunData:
    """A token array of `tokens` ids at `vocab_size`, as `RunData` (no files)."""
    split = {"tokens": tokens, "characters": 4 * tokens, "sha256": f"synthetic-{vocab_size}"}
    stats = {"vocab_size": vocab_size, "splits": {"train": split, "validation": split}}
    array = phrase_tokens(vocab_size, tokens)
    return RunData(stats, array, array[: 4 * 1024])


@contextlib.contextmanager
def compile_backend(backend: str | None) -> Iterator[None]:
    """`Module.compile` with another backend than Inductor while this lasts (the smoke run:
    the same dynamo and AOTAutograd tracing, without compiling kernels)."""
    if backend is None:
        yield
        return
    original = torch.nn.Module.compile

    def compile_with(module: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        original(module, *args, **{"backend": backend, **kwargs})

    torch.nn.Module.compile = compile_with  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.compile = original  # type: ignore[method-assign]


def flash_events(trainer: Trainer, micro_batch: int, device: torch.device) -> int:
    """Profiler events (operators and kernels) whose name says flash attention, in the
    forward and backward pass of one micro-batch through the trainer's model."""
    from torch.profiler import ProfilerActivity, profile

    inputs, targets = training_batch(trainer.plan.data.train, trainer.plan.order, 0, micro_batch)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        model, autocast = trainer.train_model, trainer.autocast
        accumulate_gradients(model, inputs, targets, micro_batch, autocast, 1.0)
        sync(device)
    trainer.optimizer.zero_grad(set_to_none=True)
    return sum("flash" in event.name.lower() for event in prof.events())


def build_trainer(
    case: dict[str, Any], settings: Settings, params: dict, device: torch.device, work: Path
) -> Trainer:
    """The trainer `vocabscale train` would build for this case (built on the device, so
    that a 1.13B model is not initialised on the CPU first), and the plan's memory estimate."""
    micro = params["train"]["micro_batch_size"]
    batch_tokens = micro * settings.accumulation * settings.context
    steps = settings.warmup_steps + settings.timed_steps + 1
    spec = model_specs(params)[case["shape"]]
    spec = dataclasses.replace(
        spec,
        shape=settings.shapes[case["shape"]],
        train_tokens=batch_tokens * steps,
        gpus=1,
        nodes=1,
    )
    train = {**params["train"], "batch_tokens": batch_tokens, "compile": case["compile"]}
    config = TrainConfig.from_params(train)
    data = synthetic_data(case["vocab_size"], batch_tokens * steps + settings.context + 1)
    with torch.device(device):
        run_plan = RunPlan.make(spec, data, config, Process(0, 1, device))
        trainer = Trainer(run_plan, work / "checkpoint")
    plan = parallelism(spec, case["vocab_size"], params).memory_bytes
    case.update(micro_batch=micro, accumulation=settings.accumulation, context=config.context)
    case.update(precision=trainer.plan.precision, loss_head=config.loss_head, plan_bytes=plan)
    return trainer


def seconds(step: Callable[[], None], count: int, device: torch.device) -> float:
    """How long `count` calls of `step` take, the device's queue drained before and after."""
    sync(device)
    started = time.perf_counter()
    for _ in range(count):
        step()
    sync(device)
    return time.perf_counter() - started


def measure(
    case: dict[str, Any], settings: Settings, params: dict, device: torch.device, work: Path
) -> None:
    """Warm-up steps (compilation among them), a profiled micro-batch, the timed steps."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()
    trainer = build_trainer(case, settings, params, device, work)
    lr, data_step = trainer.plan.config.lr, iter(range(10**9))

    def step() -> None:
        trainer.optimizer_step(next(data_step), lr, False)

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        case["warmup_s"] = round(seconds(step, settings.warmup_steps, device), 2)
        case["flash_events"] = flash_events(trainer, case["micro_batch"], device)
        elapsed = seconds(step, settings.timed_steps, device)
    tokens = settings.timed_steps * trainer.plan.config.batch_tokens
    case.update(tokens_per_s=tokens / elapsed, flops_per_token=trainer.plan.flops_per_token)
    case["achieved_flops"] = case["tokens_per_s"] * trainer.plan.flops_per_token
    case["train_loss"] = trainer.last_loss
    case["peak_bytes"] = torch.cuda.max_memory_allocated(device) if cuda else peak_rss()
    if cuda:
        case["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    case["peak_over_plan"] = case["peak_bytes"] / case["plan_bytes"]


def run(log: PartLog, settings: Settings, device: torch.device) -> None:
    """Every planned case while the part's time lasts; a case that breaks is recorded and
    the next one runs."""
    params = paper_params(settings, device)
    peak, note = bf16_peak(device, None)
    log.data.update(peak_flops=peak, peak_note=note, device=device_description(device))
    if device.type == "cuda":  # what `train_run` sets for the fp32 matmuls that remain
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    compiled_shape = None
    with compile_backend(settings.compile_backend):
        for case in log.cases_in_time(margin=5):
            if case["compile"] and case["shape"] != compiled_shape:
                torch._dynamo.reset()  # fresh graphs per shape: no automatic dynamic shapes
                compiled_shape = case["shape"]
            print(f"  steps: {describe(case)} ...", flush=True)
            action = functools.partial(measure, case, settings, params, device, log.path.parent)
            log.attempt(case, device, action)
            if peak and case["status"] == "ok":
                case["mfu"] = case["achieved_flops"] / peak
            print(f"  steps: {describe(case)}: {summary(case)}", flush=True)
    log.save()


def describe(case: dict[str, Any]) -> str:
    compiled = "compiled" if case["compile"] else "eager"
    return f"{case['shape']} V={case['vocab_size']:,} {compiled}"


def summary(case: dict[str, Any]) -> str:
    if case["status"] != "ok":
        return case["status"]
    mfu = f", MFU {100 * case['mfu']:.1f}%" if "mfu" in case else ""
    return (
        f"{case['tokens_per_s']:,.0f} tokens/s, {case['achieved_flops'] / 1e12:.3g} TFLOP/s{mfu}"
        f", peak {case['peak_bytes'] / 1e9:.2f} GB (plan {case['plan_bytes'] / 1e9:.2f} GB)"
        f", {case['flash_events']} flash events"
    )
