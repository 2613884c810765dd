"""Part "heads": each loss head's peak memory and time, forward + backward alone, at a
32,768 and a 256,000 vocabulary (`bench_train.head_memory`: the project's heads through
`model.head_loss`, under the autocast training uses, timed on their second pass).

A head must return the gradients of the weight (V x d) and of the hidden states (tokens x d),
in float32: those are unavoidable. The goal for the chunked head is a peak within 1.5x of
them at V = 256,000; the plain all-logits head is measured for reference where it fits.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from bench_train import HEADS, HeadCase, head_memory, head_not_run
from proof_common import PartLog, Settings

from vocabscale.config import defaults


def planned_cases(settings: Settings) -> list[dict[str, Any]]:
    return [
        {"vocab_size": vocab_size, "head": head, "status": "pending"}
        for vocab_size in settings.head_vocab_sizes
        for head in HEADS
    ]


def head_case(case: dict[str, Any], settings: Settings) -> HeadCase:
    budget = settings.head_chunk_logits or defaults("train.head_chunk_logits")
    sizes = (case["vocab_size"], settings.head_width, settings.head_tokens, budget)
    return HeadCase(*sizes, head=case["head"])


def measure(case: dict[str, Any], settings: Settings, device: torch.device) -> None:
    """One head at one V; a head that cannot run here is skipped with the reason."""
    spec = head_case(case, settings)
    reason = head_not_run(spec, device.type == "cuda")
    if reason:
        case["status"] = "skipped: " + reason.removeprefix("not run: ")
        return
    peak, seconds = head_memory(spec, device)
    gradients = 4 * (spec.vocab_size + spec.tokens) * spec.width
    case.update(
        width=spec.width, tokens=spec.tokens, rows=spec.rows, chunk_logits=spec.chunk_logits
    )
    case.update(peak_bytes=peak, gradient_bytes=gradients, seconds=seconds, status="ok")
    case["peak_over_gradients"] = peak / gradients


def run(log: PartLog, settings: Settings, device: torch.device) -> None:
    for case in log.cases_in_time(margin=3):
        log.attempt(case, device, functools.partial(measure, case, settings, device))
        print(f"  heads: V={case['vocab_size']:,} {case['head']}: {summary(case)}", flush=True)
    log.save()


def summary(case: dict[str, Any]) -> str:
    if case["status"] != "ok":
        return case["status"]
    return (
        f"peak {case['peak_bytes'] / 1e9:.3f} GB = {case['peak_over_gradients']:.2f}x the "
        f"gradients, {case['seconds'] * 1e3:.1f} ms"
    )
