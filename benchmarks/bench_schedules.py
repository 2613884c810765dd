"""Is a checkpoint half way through a run a valid data point? Each schedule against a run of
that length with its own decay.

    python benchmarks/bench_schedules.py                   # 3 seeds, T = 400,000 tokens
    python benchmarks/bench_schedules.py --batch-tokens 1024   # the same tokens in 4x the steps

For a run of T tokens, the unigram-normalized loss L_u at T/2 of
  (a) its wsd point (a branch off the peak-rate trajectory, cooled down to zero over
      `train.cooldown_fraction` of its tokens, ending at T/2),
  (b) its constant-rate checkpoint (the authors' trainer),
  (c) its cosine checkpoint (the cosine decays over T),
each against (d) a separate run of length T/2 with its own full cosine decay, over several
seeds (a seed sets the initial weights and the data order). Approaches 1 and 3 fit every
checkpoint as if it were a finished run of its length: the smaller |x - d|, the truer the
point. Beside them, (e) a separate wsd run of T/2 (its one point: its own full cooldown), which
(a) should equal but for the warmup (10% of T against 10% of T/2).

Everything is real: the builtin corpus (the documentation that ships with Python), a BPE
tokenizer, the token arrays, the `train` stage's own `train_run` and the `normalize` stage's
L_u, on CPU with one thread per run. The settings are the embedded default's but for the
model and T. The output, with the machine, goes to stdout and into benchmarks/RESULTS.md
(a section per T and batch, replaced when run again).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import statistics
import tempfile
import time
from pathlib import Path

from machine import cpu_model, memory_gib, usable_cores

from vocabscale.accounting import ModelShape
from vocabscale.config import read_yaml, validate_params
from vocabscale.corpus.split import prepare_corpus
from vocabscale.io import write_csv
from vocabscale.runs.normalized_loss import normalize_run
from vocabscale.sweep import ModelSpec
from vocabscale.tokenizer.batching import Batching
from vocabscale.tokenizer.one_job import tokenize_corpus
from vocabscale.tokenizer.training import train_tokenizer
from vocabscale.train.config import TrainConfig
from vocabscale.train.loop import train_run

REPO = Path(__file__).resolve().parents[1]
SECTION = "# Schedules: is a checkpoint at T/2 a run of T/2?"

#: (label, schedule, length of the run in halves of T): the four L_u compared at T/2.
CASES = (
    ("a", "wsd", 2),
    ("b", "constant", 2),
    ("c", "cosine", 2),
    ("d", "cosine", 1),
    ("e", "wsd", 1),
)
NAMES = {
    "a": "wsd branch at T/2 of a run of T",
    "b": "constant-rate checkpoint at T/2 of a run of T",
    "c": "cosine checkpoint at T/2 of a run of T",
    "d": "a run of T/2 with its own full cosine decay",
    "e": "a wsd run of T/2",
}


def default_params(vocab_size: int) -> dict:
    """The embedded default, validated, with one vocabulary size."""
    params = copy.deepcopy(read_yaml(REPO / "params.yaml"))
    params["tokenizer"]["vocab_sizes"] = [vocab_size]
    return validate_params(params, "params.yaml")


def prepare_tokens(params: dict, work: Path) -> Path:
    """Corpus, tokenizer and token arrays of the default corpus at the one V of `params`."""
    vocab_size = params["tokenizer"]["vocab_sizes"][0]
    corpus, tokens = work / "corpus", work / "tokens"
    tokenizer = work / "tokenizer.json"
    settings = params["tokenizer"]
    prepare_corpus(params["corpus"], corpus)
    train_tokenizer(
        corpus / "tokenizer_sample.parquet",
        vocab_size,
        tokenizer,
        settings["min_frequency"],
        settings["batch_documents"],
    )
    tokenize_corpus(corpus, tokenizer, tokens, Batching.from_params(settings))
    return tokens


def loss_u_at_half(params: dict, args, tokens: Path, work: Path, case: tuple, seed: int) -> float:
    """Train one run of `case` and return its L_u at T/2."""
    label, schedule, halves = case
    batch = args.batch_tokens
    half = args.train_tokens // (2 * batch) * batch  # T/2, in whole steps
    settings = {**params["train"], "seed": seed, "schedule": schedule, "threads": 1}
    settings["batch_tokens"] = batch
    settings.update(evals=halves, device="cpu")  # points at T/2 (and T)
    config = TrainConfig.from_params(settings)
    spec = ModelSpec(
        "bench", ModelShape(*args.shape), half * halves, gpus=1, nodes=1, parallel="auto"
    )
    run = work / f"{label}-seed{seed}-T{args.train_tokens}-b{batch}"
    train_run(spec, tokens, config, run / "out", run / "state")
    pseudocount = params["normalize"]["unigram_pseudocount"]
    points = normalize_run(run / "out", tokens, pseudocount)
    write_csv(run / "normalized.csv", points)
    return float(points.loc[points["tokens"] == half, "loss_u"].iloc[0])


def warmup_note(train: dict) -> str:
    if train["warmup_tokens"] is not None:
        return f"over {train['warmup_tokens']:,.0f} tokens in every run"
    return f"over {train['warmup_fraction']:.0%} of each run's steps"


def gap(results: dict[str, list[float]], label: str, reference: str) -> list[float]:
    return [x - r for x, r in zip(results[label], results[reference], strict=True)]


def summarise(results: dict[str, list[float]], seeds: list[int]) -> list[str]:
    """The table of L_u per seed, the differences to (d), and which case is closest."""
    gaps = {label: gap(results, label, "d") for label in "abc"}
    header = "| seed | " + " | ".join(f"({label}) L_u" for label in "abcde") + " |"
    lines = [header + " (a)-(d) | (b)-(d) | (c)-(d) | (a)-(e) |", "|" + "---|" * 10]
    for i, seed in enumerate(seeds):
        values = [f"{results[label][i]:.4f}" for label in "abcde"]
        differences = [f"{gaps[label][i]:+.4f}" for label in "abc"]
        differences.append(f"{gap(results, 'a', 'e')[i]:+.4f}")
        lines.append(f"| {seed} | " + " | ".join(values + differences) + " |")
    spread = statistics.stdev(results["d"])
    lines += ["", f"Seed-to-seed spread of (d): standard deviation {spread:.4f} nats.", ""]
    for label in "abc":
        mean = statistics.mean(gaps[label])
        lines.append(
            f"- ({label}) {NAMES[label]}: {mean:+.4f} +- {statistics.stdev(gaps[label]):.4f} "
            f"nats from (d) (mean +- sd over seeds), {abs(mean) / spread:.1f}x the spread"
        )
    by_distance = sorted("abc", key=lambda label: abs(statistics.mean(gaps[label])))
    best, *others = by_distance
    lines.append(
        f"\nClosest to (d): ({best}), {abs(statistics.mean(gaps[best])):.4f} nats away on "
        "average, against "
        + ", ".join(f"({x}) {abs(statistics.mean(gaps[x])):.4f}" for x in others)
        + f"; the seed-to-seed spread is {spread:.4f}."
    )
    to_e = gap(results, "a", "e")
    lines.append(
        f"(a) against (e), {NAMES['e']}: {statistics.mean(to_e):+.4f} +- "
        f"{statistics.stdev(to_e):.4f} nats."
    )
    return lines


def write_section(title: str, text: str, path: Path) -> None:
    """Replace the section `title` of RESULTS.md (to the next title), or add it."""
    old = path.read_text() if path.exists() else ""
    start = old.find(title)
    if start < 0:
        path.write_text(old.rstrip("\n") + "\n\n" + text)
        return
    end = old.find("\n# ", start + len(title))
    path.write_text(old[:start] + text + (old[end + 1 :] if end >= 0 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--train-tokens", type=int, default=400_000, help="T")
    parser.add_argument("--vocab-size", type=int, default=640)
    parser.add_argument(
        "--batch-tokens", type=int, help="tokens per step (default: the embedded default's)"
    )
    parser.add_argument(
        "--shape", nargs=4, type=int, default=[2, 4, 64, 176], help="n_layer n_head d ffn"
    )
    parser.add_argument("--work", help="where to keep corpus and runs (default: a temporary dir)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    args = parser.parse_args()
    if len(args.seeds) < 3:
        parser.error("--seeds: at least 3, or there is no spread to compare with")

    load_at_start = os.getloadavg()
    started = time.perf_counter()
    params = default_params(args.vocab_size)
    args.batch_tokens = args.batch_tokens or params["train"]["batch_tokens"]
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        tokens = prepare_tokens(params, work)
        results: dict[str, list[float]] = {label: [] for label, *_ in CASES}
        for seed in args.seeds:
            for case in CASES:
                results[case[0]].append(loss_u_at_half(params, args, tokens, work, case, seed))
                print(f"seed {seed} ({case[0]}): L_u {results[case[0]][-1]:.4f}", flush=True)
    train = params["train"]
    title = f"{SECTION} (T = {args.train_tokens:,} tokens, {args.batch_tokens:,} per step)"
    report = [
        title,
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {cpu_model()}, {usable_cores()} cores usable, {memory_gib():.0f} GiB; "
        f"load average {' '.join(f'{x:.2f}' for x in load_at_start)} at the start, "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end (shared machine); "
        f"{time.perf_counter() - started:.0f} s in all",
        f"- command: `python benchmarks/bench_schedules.py --train-tokens {args.train_tokens} "
        f"--batch-tokens {args.batch_tokens}`",
        f"- T = {args.train_tokens:,} tokens, V = {args.vocab_size}, model (n_layer, n_head, d, "
        f"ffn) = {tuple(args.shape)}, the embedded default's training settings: context "
        f"{train['context']}, {args.batch_tokens} tokens per step, peak lr {train['lr']:g}, "
        f"warmup {warmup_note(train)}, cosine floor "
        f"{train['min_lr_ratio']:g} x lr, wsd cooldown {train['cooldown_fraction']:g} of the "
        f"tokens so far, shape {train['cooldown_shape']}; CPU, fp32, one thread per run",
        "- L_u in nats per token on the corpus's held-out text (lower is better); a seed sets "
        "the initial weights and the data order",
        "",
        *summarise(results, args.seeds),
        "",
    ]
    text = "\n".join(report)
    print("\n" + text)
    write_section(title, text, Path(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
