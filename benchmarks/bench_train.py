"""Training throughput, model FLOP utilization and memory of the real training step.

    python benchmarks/bench_train.py                 # paper shapes 33M..1.13B x V in {4096,
                                                     # 32768, 96256}, then the loss head
    python benchmarks/bench_train.py --shapes 302M --vocab-sizes 32768 --steps 20

Each case builds the model and optimizer the `train` stage builds (`vocabscale.train`) and
times full optimizer steps: forward and backward over the micro-batches of a step
(`accumulate_gradients`), gradient clipping, AdamW. FLOPs per token are
6 (Nnv + V d) + 12 n_layer context d (attention included, the count MFU is usually quoted with;
docs/design.md, "The science"). MFU = achieved FLOP/s / the device's stated dense bf16 peak.

The loss-head part measures forward + backward of each head `train.loss_head` offers (ours,
torch's linear_cross_entropy, Liger-Kernel's on CUDA) alone at V = 32,768 and V = 256,000
(and the plain all-logits head where it fits): its time, its peak memory above what existed
before, and the part of that which is working memory (the peak less the two gradients the
head must return, V x d and tokens x d in float32, which any head produces). Each case is
timed on its second pass.

On CUDA the figures are torch.cuda.max_memory_allocated; on a CPU there is no bf16 peak to
divide by (achieved FLOP/s is reported instead), the cases are shortened (context 256, one
sequence, two steps), shapes whose fp32 training state does not fit `--max-state-gb` are
skipped, and memory is the process's resident set as the kernel's high-water mark (VmHWM,
reset before each case; Linux), for the loss head in a fresh process per case.

The output, with date and device, goes to stdout and to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import cpu_model, memory_gib, record_section

from vocabscale import accounting
from vocabscale.accounting import PAPER_SHAPES
from vocabscale.config import defaults
from vocabscale.sweep import ModelSpec
from vocabscale.train.config import TrainConfig, autocast_for, resolved_precision
from vocabscale.train.model import (
    Attention,
    check_loss_head,
    head_chunk_rows,
    head_loss,
    rope_tables,
)
from vocabscale.train.step import accumulate_gradients, build_model, build_optimizer

GB = 1e9
HEADS_HEADING = "# Loss heads: forward + backward"

#: Stated dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by a fragment of the name torch
#: reports. First match wins, so the more specific names come first.
BF16_DENSE_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM5 (reported as "NVIDIA H100 80GB HBM3")
    ("H200", 989.4),
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("A10G", 70.0),
    ("L4", 121.0),
)

#: Micro-batch (sequences of 2048 tokens) per shape on a GPU with 80 GB.
GPU_MICRO_BATCH = {"33M": 16, "85M": 16, "151M": 16, "302M": 8, "631M": 8, "1.13B": 4}


@dataclass
class Case:
    shape: str
    vocab_size: int
    micro_batch: int
    accumulation: int
    context: int
    tokens_per_second: float = float("nan")
    flops_per_token: float = float("nan")
    peak_memory: float = float("nan")
    note: str = ""


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    return (
        f"CPU only, no GPU: {cpu_model()}, {os.cpu_count()} cores visible, "
        f"{torch.get_num_threads()} torch threads, {memory_gib():.0f} GiB"
    )


def bf16_peak(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """The peak MFU divides by, in FLOP/s, and where it comes from."""
    if override:
        return override * 1e12, f"{override:g} TFLOP/s (given with --peak-tflops)"
    if device.type != "cuda":
        return None, "none: a CPU has no stated bf16 tensor peak, so no MFU; achieved FLOP/s shown"
    name = torch.cuda.get_device_name(device)
    for fragment, tflops in BF16_DENSE_PEAK_TFLOPS:
        if fragment in name:
            return tflops * 1e12, f"{tflops:g} TFLOP/s, the stated dense bf16 peak of {name}"
    return None, f"unknown for {name}: pass --peak-tflops"


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> None:
    """Linux: set this process's RSS high-water mark (VmHWM) back to its current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int:
    return 1024 * _proc_status_kib("VmHWM")


def current_rss() -> int:
    return 1024 * _proc_status_kib("VmRSS")


def flash_attention_check(device: torch.device, context: int) -> str:
    """Whether the model's own attention runs on the flash kernel (SDPA raises if the inputs
    do not qualify when it is the only backend allowed)."""
    if device.type != "cuda":
        return "not applicable on CPU"
    from torch.nn.attention import SDPBackend, sdpa_kernel

    shape = PAPER_SHAPES["302M"][0]
    attention = Attention(shape).to(device)
    cos, sin = (t.to(device) for t in rope_tables(shape.d_model // shape.n_head, context))
    x = torch.randn(1, context, shape.d_model, device=device)
    try:
        with autocast_for(device, "bf16"), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            attention(x, cos, sin).sum().backward()
    except RuntimeError as error:
        return f"NOT used: {str(error).splitlines()[0]}"
    return "used (the model's attention ran with only the flash kernel allowed)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_state_bytes(shape_name: str, vocab_size: int) -> float:
    """fp32 weights, gradients and the two AdamW moments: 16 bytes per parameter."""
    shape = PAPER_SHAPES[shape_name][0]
    return 16.0 * (shape.non_vocab_params + 2 * vocab_size * shape.d_model)


def run_case(case: Case, args, device: torch.device) -> Case:
    shape = PAPER_SHAPES[case.shape][0]
    spec = ModelSpec(case.shape, shape, train_tokens=1, gpus=1, nodes=1, parallel="auto")
    train = {
        **defaults("train"),
        "seed": 0,
        "context": case.context,
        "batch_tokens": case.micro_batch * case.accumulation * case.context,
        "micro_batch_size": case.micro_batch,
        "lr": 3e-4,
        "evals": 1,
        "device": device.type,
        "precision": args.precision,
        "compile": args.compile,
    }
    config = TrainConfig.from_params(train)
    case.flops_per_token = accounting.flops_per_token_with_attention(
        shape.non_vocab_params, case.vocab_size, shape.d_model, shape.n_layer, case.context
    )
    if device.type == "cuda":
        torch._dynamo.reset()  # fresh graphs per shape: no automatic dynamic shapes
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = build_model(spec, case.vocab_size, config, device)
    optimizer = build_optimizer(model, config, device)
    autocast = autocast_for(device, config.precision)
    sequences = case.micro_batch * case.accumulation
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, case.vocab_size, (sequences, case.context + 1), generator=generator)
    inputs, targets = batch[:, :-1], batch[:, 1:]
    if device.type == "cuda":
        inputs, targets = inputs.pin_memory(), targets.pin_memory()

    def step() -> float:
        """One optimizer step, as `train._train` takes it."""
        loss = accumulate_gradients(
            model, inputs, targets, case.micro_batch, autocast, 1 / targets.numel()
        )
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)  # the trainer reads the loss once a step, too

    if device.type == "cpu":
        reset_peak_rss()
    for _ in range(args.warmup):
        step()
    sync(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    elapsed = time.perf_counter() - started
    case.tokens_per_second = args.steps * sequences * case.context / elapsed
    if device.type == "cuda":
        case.peak_memory = torch.cuda.max_memory_allocated(device)
    else:
        case.peak_memory = peak_rss()
    return case


#: The heads measured: `train.loss_head`'s choices, and the all-logits head for reference.
HEADS = {
    "chunked": "chunked (ours)",
    "torch": "torch linear_cross_entropy",
    "liger": "liger fused (CUDA)",
    "plain": "plain (all logits)",
}


@dataclass(frozen=True)
class HeadCase:
    vocab_size: int
    width: int
    tokens: int
    chunk_logits: int
    head: str  # a `train.loss_head`, or plain: F.cross_entropy(hidden @ weight.T)

    @property
    def rows(self) -> int:
        if self.head == "plain":
            return self.tokens
        most_tokens = defaults("train.head_chunk_tokens")
        return head_chunk_rows(self.vocab_size, most_tokens, self.chunk_logits)


def head_memory(case: HeadCase, device: torch.device) -> tuple[int, float]:
    """Forward + backward of the loss head alone, after one untimed pass (kernels, allocator):
    peak memory above what was held before, and the seconds it took."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(case.tokens, case.width, generator=generator).to(device)
    weight = torch.randn(case.vocab_size, case.width, generator=generator).to(device)
    targets = torch.randint(0, case.vocab_size, (case.tokens,), generator=generator).to(device)

    def one_pass() -> None:
        h, w = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
        with autocast_for(device, "auto"):
            if case.head == "plain":
                loss = F.cross_entropy((h @ w.t()).float(), targets, reduction="sum")
            else:
                loss = head_loss(case.head, h, w, targets, case.rows)
        (loss / case.tokens).backward()
        sync(device)

    one_pass()
    gc.collect()
    if device.type == "cuda":
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        start = current_rss()
        reset_peak_rss()
    # on a CPU, this process's CPU time: what the head costs, whatever else the machine runs
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    started = clock()
    one_pass()
    seconds = clock() - started
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - start, seconds
    return peak_rss() - start, seconds


def head_memory_in_fresh_process(case: HeadCase) -> tuple[int, float]:
    """CPU: a fresh process per case, whose buffers above 64 KiB are mmapped (and so returned
    to the system when freed), so that its resident set follows its live memory."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # as many threads as this process
    command = [sys.executable, __file__, "--head-case", json.dumps(asdict(case))]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    peak, seconds = result.stdout.strip().splitlines()[-1].split()
    return int(peak), float(seconds)


def loss_head_section(args, device: torch.device) -> list[str]:
    """Peak memory of the chunked head against the plain one, at each of --head-vocab-sizes."""
    cuda = device.type == "cuda"
    cast = 2 if resolved_precision(device, "auto") == "bf16" else 0  # bf16 copy of W
    rows, working = [], {}
    for vocab_size in args.head_vocab_sizes:
        for head, name in HEADS.items():
            sizes = (vocab_size, args.head_width, args.head_tokens, args.head_chunk_logits)
            case = HeadCase(*sizes, head=head)
            note = head_not_run(case, cuda)
            if note:
                rows.append([f"{vocab_size:,}", name, "-", "-", "-", "-", "-", note])
                continue
            try:
                measure = head_memory if cuda else head_memory_in_fresh_process
                peak, seconds = measure(case, device) if cuda else measure(case)
            except torch.cuda.OutOfMemoryError:
                gc.collect()
                torch.cuda.empty_cache()
                rows.append([f"{vocab_size:,}", name, str(case.rows), "-", "-", "-", "-", "OOM"])
                continue
            # what any head holds that grows with V x d: the weight's float32 gradient and,
            # under autocast, its bf16 copy; and the float32 gradient of the hidden states
            weight_sized = (4 + cast) * vocab_size * case.width
            rest = peak - weight_sized - 4 * case.tokens * case.width
            if head == "chunked":
                working[vocab_size] = rest
            figures = [f"{peak / GB:.3f}", f"{weight_sized / GB:.3f}", f"{rest / GB:.3f}"]
            rows.append([f"{vocab_size:,}", name, str(case.rows), *figures, f"{seconds:.3f}", ""])
            print("  " + " | ".join(rows[-1]), flush=True)
    header = ["V", "head", "tokens per chunk", "peak GB", "of which V x d buffers GB"]
    header += ["working GB", "fwd+bwd s" if cuda else "fwd+bwd CPU s", "note"]
    lines = [
        "",
        f"{args.head_tokens} tokens, d = {args.head_width}. Chunk budget "
        f"{args.head_chunk_logits:,} logits (--head-chunk-logits; the training default, "
        f"train.head_chunk_logits, is {defaults('train.head_chunk_logits'):,}). Peak: "
        "memory above what was held before the head ran. V x d buffers: the float32 gradient "
        "of the weight" + (" and its bf16 copy under autocast" if cast else "") + ", which "
        "any head holds. Working: the peak less those and the float32 gradient of the hidden "
        "states (tokens x d): the memory the head's own method costs.",
        "",
        markdown_table(header, rows),
    ]
    if len(working) >= 2:
        first, *_, last = working
        lines.append(
            f"\nWorking memory of the chunked head, V = {last:,} against V = {first:,}: "
            f"{working[last] / working[first]:.2f}x; peak including the V x d buffers: see table."
        )
    return lines


def head_not_run(case: HeadCase, cuda: bool) -> str:
    """Why a loss-head case is not measured here, or ''."""
    logits_bytes = 4 * case.tokens * case.vocab_size
    if case.head == "plain" and not cuda and logits_bytes > 2 * GB:
        return f"not run on CPU: its fp32 logits alone are {logits_bytes / GB:.1f} GB"
    if case.head != "plain":
        try:
            check_loss_head(case.head, "cuda" if cuda else "cpu")
        except ValueError as error:
            return f"not run: {str(error).removeprefix('train.loss_head: ')}"
    return ""


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shapes = ["33M", "85M", "151M", "302M", "631M", "1.13B"]
    parser.add_argument("--shapes", nargs="+", default=shapes, choices=list(PAPER_SHAPES))
    parser.add_argument("--vocab-sizes", nargs="+", type=int, default=[4096, 32768, 96256])
    parser.add_argument("--context", type=int, help="default: 2048 on CUDA, 256 on CPU")
    parser.add_argument("--micro-batch", type=int, help="sequences; default per shape / 1 on CPU")
    parser.add_argument("--accumulation", type=int, help="micro-batches per step (4 / 1 on CPU)")
    parser.add_argument("--steps", type=int, help="timed steps (10 on CUDA, 2 on CPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (3 on CUDA, 1 on CPU)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile each block (default: on CUDA)",
    )
    parser.add_argument("--peak-tflops", type=float, help="override the device's bf16 peak")
    parser.add_argument("--max-state-gb", type=float, help="skip larger cases (CPU: 8)")
    parser.add_argument("--head-vocab-sizes", nargs="+", type=int, default=[32768, 256000])
    parser.add_argument("--head-width", type=int, help="d of the head (2048 CUDA / 512 CPU)")
    parser.add_argument("--head-tokens", type=int, help="tokens (8192 on CUDA, 2048 on CPU)")
    parser.add_argument(
        "--head-chunk-logits", type=int, help="default: train.head_chunk_logits; 2^23 on CPU"
    )
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    parser.add_argument("--head-case", help=argparse.SUPPRESS)  # JSON of a HeadCase
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.head_case:  # a child process of head_memory_in_fresh_process
        print(*head_memory(HeadCase(**json.loads(args.head_case)), device))
        return
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    args.context = args.context or (2048 if cuda else 256)
    args.steps = args.steps or (10 if cuda else 2)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    args.accumulation = args.accumulation or (4 if cuda else 1)
    args.compile = cuda if args.compile is None else args.compile
    args.head_width = args.head_width or (2048 if cuda else 512)
    args.head_tokens = args.head_tokens or (8192 if cuda else 2048)
    default_budget = defaults("train.head_chunk_logits") if cuda else 2**23
    args.head_chunk_logits = args.head_chunk_logits or default_budget
    if args.max_state_gb is None:
        memory = torch.cuda.get_device_properties(device).total_memory if cuda else 8 * GB
        args.max_state_gb = memory / GB
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    peak, peak_note = bf16_peak(device, args.peak_tflops)
    precision = "bf16" if args.precision == "auto" and cuda else args.precision
    precision = "fp32" if precision == "auto" else precision

    report = [
        "# Training benchmark",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- device: {device_description(device)}",
        f"- torch {torch.__version__}, {precision}, torch.compile {'on' if args.compile else 'off'}"
        f", {args.warmup} warm-up + {args.steps} timed optimizer steps per case",
        f"- MFU peak: {peak_note}",
        f"- SDPA flash attention: {flash_attention_check(device, args.context)}",
        "- FLOPs per token: 6 (Nnv + V d) + 12 n_layer context d (attention included)",
        f"- command: `python benchmarks/bench_train.py {' '.join(argv or sys.argv[1:])}`",
    ]
    if not cuda:
        report.append(
            f"- **No GPU was available.** CPU figures, shortened: context {args.context} (not "
            f"2048), {args.accumulation} micro-batch(es) of {args.micro_batch or 1} sequence(s) "
            f"per step, shapes whose fp32 training state exceeds {args.max_state_gb:g} GB "
            "skipped. With so few tokens per step the AdamW update over every parameter is a "
            "large share of each step, so FLOP/s are far below what this CPU reaches on real "
            "batches. The machine was shared with other jobs: timings are noisy."
        )
    print("\n".join(report), flush=True)

    if not args.skip_training:
        rows = []
        for shape in args.shapes:
            for vocab_size in args.vocab_sizes:
                micro = args.micro_batch or (GPU_MICRO_BATCH[shape] if cuda else 1)
                case = Case(shape, vocab_size, micro, args.accumulation, args.context)
                state = training_state_bytes(shape, vocab_size)
                if state > args.max_state_gb * GB:
                    case.note = f"skipped: fp32 state {state / GB:.1f} GB > {args.max_state_gb:g}"
                else:
                    try:
                        run_case(case, args, device)
                    except torch.cuda.OutOfMemoryError:
                        case.note = f"out of memory at micro-batch {micro}"
                    gc.collect()  # the case's model and optimizer
                    if cuda:
                        torch.cuda.empty_cache()
                achieved = case.tokens_per_second * case.flops_per_token
                p = PAPER_SHAPES[shape][0]
                rows.append(
                    [
                        shape,
                        f"{vocab_size:,}",
                        f"{p.non_vocab_params / 1e6:.1f}M",
                        f"{vocab_size * p.d_model / 1e6:.1f}M",
                        f"{case.micro_batch}x{case.accumulation}x{case.context}",
                        f"{case.tokens_per_second:,.0f}" if not case.note else "-",
                        f"{achieved / 1e12:.3g}" if not case.note else "-",
                        f"{100 * achieved / peak:.1f}%" if peak and not case.note else "-",
                        f"{case.peak_memory / GB:.2f}" if not case.note else "-",
                        case.note,
                    ]
                )
                print("  " + " | ".join(rows[-1]), flush=True)
        memory = "peak allocated GB" if cuda else "peak RSS GB (whole process)"
        header = ["shape", "V", "Nnv", "Nv", "tokens/step (mb x acc x ctx)", "tokens/s"]
        header += ["achieved TFLOP/s", "MFU", memory, "note"]
        table = markdown_table(header, rows)
        report += ["", "## Training step", "", table]
        record_section(args.out, report[0], "\n".join(report) + "\n")

    heads = [
        HEADS_HEADING,
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- device: {device_description(device)}",
        f"- torch {torch.__version__}; command: "
        f"`python benchmarks/bench_train.py {' '.join(argv or sys.argv[1:])}`",
        *loss_head_section(args, device),
    ]
    record_section(args.out, HEADS_HEADING, "\n".join(heads) + "\n")
    print("\n".join(heads))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
