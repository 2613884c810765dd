"""Benchmark: corpus preparation, tokenizer training and tokenization at scale.

Generates a corpus deterministically (documents of sentences sampled from the builtin
python-docs corpus, written as .jsonl.zst shards), then runs the real stages as the pipeline
does (`vocabscale prepare-corpus`, `train-tokenizer`, `tokenize`, each in its own process) and
prints characters/s and peak RSS of each, next to the raw throughput of tokenizers' own
`encode_batch` on the same text, in the same batches, in the same run (only the time inside
`encode_batch` counts for the raw figure). The stage calls `encode_batch_fast` (same ids, no
character offsets), so its raw throughput is measured too, on every batch right after
`encode_batch`, and the stage is compared with both. Raw and stage passes alternate, so
load from other processes falls on both. With `--scales 1 2` it repeats everything on a
corpus twice as large, to show that the stages' peak memory does not grow with the corpus.

    python benchmarks/bench_tokenize.py                      # 200 MB and 400 MB, V=16384
    python benchmarks/bench_tokenize.py --megabytes 20 --scales 1 --repeats 1   # a quick look

Goal (issue 8): tokenization >= 80% of raw encode_batch throughput; its peak RSS within 20%
when the corpus doubles. On a shared machine, compare the best passes (least disturbed) and
read the CPU-second figures, which load from other processes disturbs less than wall time.
The generated text draws its words from Python's documentation, so it holds about 21,700
BPE merges at min_frequency 2: keep --vocab-size below that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from machine import cpu_model, memory_gib, usable_cores

REPO = Path(__file__).resolve().parents[1]


# --- the machine --------------------------------------------------------------------------


def machine() -> dict[str, str]:
    import tokenizers

    return {
        "cpu": cpu_model(),
        "cores": f"{usable_cores()} usable of {os.cpu_count()}",
        "memory": f"{memory_gib():.1f} GiB",
        "python": platform.python_version(),
        "tokenizers": tokenizers.__version__,
    }


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# --- the corpus ---------------------------------------------------------------------------


def sentences() -> list[str]:
    from vocabscale.corpus.sources import python_docs

    out = []
    for doc in python_docs():
        for sentence in re.split(r"(?<=[.!?:])\s+", doc):
            sentence = sentence.strip()
            if 20 <= len(sentence) <= 400:
                out.append(sentence)
    return out


def corpus_settings(source: Path, sample_characters: int) -> dict:
    """The corpus section of params for the generated files in `source`."""
    return {
        "source": str(source / "*.jsonl.zst"),
        "validation_fraction": 0.01,
        "validation_characters": 2_000_000,
        "tokenizer_sample_characters": sample_characters,
    }


def generate(directory: Path, megabytes: float, seed: int = 0) -> int:
    """Documents of 1 to ~60 sentences in paragraphs, as .jsonl.zst shards of ~64 MB of text;
    deterministic for a seed. Returns the characters written."""
    import zstandard

    pool = sentences()
    rng = random.Random(seed)
    target = int(megabytes * 1e6)
    directory.mkdir(parents=True, exist_ok=True)
    written = shard = 0
    while written < target:
        path = directory / f"part-{shard:04d}.jsonl.zst"
        shard_written = 0
        with open(path, "wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw) as out:
            while shard_written < 64e6 and written < target:
                paragraphs = [
                    " ".join(rng.choices(pool, k=rng.randint(1, 8)))
                    for _ in range(max(1, int(rng.lognormvariate(1.0, 0.8))))
                ]
                text = "\n\n".join(paragraphs)
                out.write((json.dumps({"text": text, "id": written}) + "\n").encode())
                shard_written += len(text)
                written += len(text)
        shard += 1
    return written


# --- running the stages -------------------------------------------------------------------


def run(command: list[str], log: Path) -> dict[str, float]:
    """Run one process; its wall time, CPU time (all threads) and peak RSS, from the kernel's
    rusage of the child."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    started = time.perf_counter()
    with open(log, "a") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=stream, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode:
        sys.exit(f"failed ({process.returncode}): {' '.join(command)}; see {log}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall": wall, "cpu": cpu, "peak_rss_mib": usage.ru_maxrss / 1024}


def stage(name: str, args: list[str], log: Path) -> dict[str, float]:
    return run([sys.executable, "-m", "vocabscale", name, *args, "--log", str(log)], log)


RAW_METHODS = ("encode_batch", "encode_batch_fast")


def raw_encode(corpus: Path, tokenizer_path: Path, batch_documents: int, batch_characters: int):
    """Only tokenizers' own calls on the stage's batches, each method on every batch in turn:
    the wall and CPU time inside each call is counted."""
    from tokenizers import Tokenizer

    from vocabscale.corpus.shards import train_shards
    from vocabscale.tokenizer.batching import read_batches

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    seconds = dict.fromkeys(RAW_METHODS, 0.0)
    cpu = dict.fromkeys(RAW_METHODS, 0.0)
    characters = 0
    for paths in (train_shards(corpus), [corpus / "validation.parquet"]):
        for batch in read_batches(paths, (0, 0), batch_documents, batch_characters):
            for method in RAW_METHODS:
                started, cpu_started = time.perf_counter(), time.process_time()
                getattr(tokenizer, method)(batch.texts, add_special_tokens=False)
                seconds[method] += time.perf_counter() - started
                cpu[method] += time.process_time() - cpu_started
            characters += batch.characters
    print(json.dumps({"characters": characters, "seconds": seconds, "cpu": cpu}))


def bench_scale(args, scale: int, root: Path) -> dict:
    work = root / f"x{scale}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "bench.log"
    print(f"\n== corpus x{scale}: generating {args.megabytes * scale:.0f} MB ...", flush=True)
    started = time.perf_counter()
    generated = generate(work / "source", args.megabytes * scale)
    print(f"   generated {generated:,} characters in {time.perf_counter() - started:.0f} s")

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["corpus"] = corpus_settings(work / "source", args.sample_characters)
    params["tokenizer"] = {
        "vocab_sizes": [args.vocab_size],
        "min_frequency": 2,
        "batch_documents": args.batch_documents,
        "batch_characters": args.batch_characters,
    }
    params_path = work / "params.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    corpus, tokenizer, tokens = work / "corpus", work / "tokenizer.json", work / "tokens"

    result: dict = {"scale": scale, "generated_characters": generated}
    prepare = stage("prepare-corpus", ["--params", str(params_path), "--out", str(corpus)], log)
    stats = json.loads((corpus / "stats.json").read_text())["splits"]
    characters = stats["train"]["characters"] + stats["validation"]["characters"]
    result["prepare"] = {**prepare, "chars_per_s": generated / prepare["wall"]}
    print(f"   prepare-corpus: {prepare['wall']:.0f} s, peak RSS {prepare['peak_rss_mib']:.0f} MiB")

    common = ["--params", str(params_path), "--corpus", str(corpus)]
    vocab = ["--vocab-size", str(args.vocab_size)]
    training = stage("train-tokenizer", [*common, *vocab, "--out", str(tokenizer)], log)
    sample = stats["tokenizer_sample"]["characters"]
    result["train_tokenizer"] = {
        **training,
        "characters": sample,
        "chars_per_s": sample / training["wall"],
    }
    print(f"   train-tokenizer: {training['wall']:.0f} s on {sample:,} characters")

    result["raw"], result["tokenize"] = [], []
    for repeat in range(args.repeats):
        raw_log = work / f"raw-{repeat}.json"
        batches = [str(args.batch_documents), str(args.batch_characters)]
        command = [sys.executable, __file__, "raw", str(corpus), str(tokenizer), *batches]
        process = run(command, raw_log)
        measured = json.loads(raw_log.read_text().strip().splitlines()[-1])
        raw = {
            method: {
                "wall": measured["seconds"][method],
                "chars_per_s": measured["characters"] / measured["seconds"][method],
                "chars_per_cpu_s": measured["characters"] / measured["cpu"][method],
                "peak_rss_mib": process["peak_rss_mib"],
            }
            for method in RAW_METHODS
        }
        result["raw"].append(raw)
        shutil.rmtree(tokens, ignore_errors=True)
        out = ["--tokenizer", str(tokenizer), "--out", str(tokens)]
        timed = stage("tokenize", [*common, *out], log)
        timed["chars_per_s"] = characters / timed["wall"]
        timed["chars_per_cpu_s"] = characters / timed["cpu"]
        result["tokenize"].append(timed)
        print(
            f"   pass {repeat + 1}: raw encode_batch "
            f"{raw['encode_batch']['chars_per_s'] / 1e6:.2f}, encode_batch_fast "
            f"{raw['encode_batch_fast']['chars_per_s'] / 1e6:.2f}, "
            f"tokenize stage {timed['chars_per_s'] / 1e6:.2f} M chars/s "
            f"(load average {load()})",
            flush=True,
        )
    result["tokenized_characters"] = characters
    result["token_stats"] = json.loads((tokens / "stats.json").read_text())
    if not args.keep:
        shutil.rmtree(work)
    return result


def report(results: list[dict], info: dict, args) -> None:
    print("\n## Benchmark: vocabscale tokenization (issue 8)\n")
    for key, value in info.items():
        print(f"- {key}: {value}")
    print(
        f"- V = {args.vocab_size}, batches of {args.batch_documents} documents / "
        f"{args.batch_characters:,} characters, {args.repeats} alternating passes per size\n"
    )
    print("| corpus | step | characters | wall s | M chars/s | M chars/CPU-s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        size = f"{r['generated_characters'] / 1e6:.0f} MB"
        rows = [
            ("prepare-corpus", r["generated_characters"], r["prepare"]),
            ("train-tokenizer", r["train_tokenizer"]["characters"], r["train_tokenizer"]),
        ]
        for i, (raw, timed) in enumerate(zip(r["raw"], r["tokenize"]), 1):
            for method in RAW_METHODS:
                rows.append((f"raw {method}, pass {i}", r["tokenized_characters"], raw[method]))
            rows.append((f"tokenize stage, pass {i}", r["tokenized_characters"], timed))
        for name, characters, m in rows:
            per_cpu = m.get("chars_per_cpu_s", characters / m["cpu"] if m.get("cpu") else 0)
            print(
                f"| {size} | {name} | {characters:,} | {m['wall']:.1f} | "
                f"{m['chars_per_s'] / 1e6:.2f} | {per_cpu / 1e6:.2f} | {m['peak_rss_mib']:.0f} |"
            )
    print()
    for r in results:
        for label, pick in (("best", max), ("median", statistics.median)):
            timed = pick(m["chars_per_s"] for m in r["tokenize"])
            timed_cpu = pick(m["chars_per_cpu_s"] for m in r["tokenize"])
            for method in RAW_METHODS:
                raw = pick(m[method]["chars_per_s"] for m in r["raw"])
                raw_cpu = pick(m[method]["chars_per_cpu_s"] for m in r["raw"])
                print(
                    f"x{r['scale']}, {label} passes: tokenize stage / raw {method} = "
                    f"{timed / raw:.1%} of the throughput ({timed / 1e6:.2f} vs "
                    f"{raw / 1e6:.2f} M chars/s; goal >= 80%), {timed_cpu / raw_cpu:.1%} per "
                    f"CPU-second (the whole stage process against the {method} calls alone)"
                )
        print(f"x{r['scale']}: {r['token_stats']['tokens_per_character']:.4f} tokens per character")
    if len(results) > 1:
        base = results[0]
        for r in results[1:]:
            for name in ("tokenize", "train_tokenizer", "prepare"):
                first = base[name] if name != "tokenize" else base[name][0]
                this = r[name] if name != "tokenize" else r[name][0]
                growth = this["peak_rss_mib"] / first["peak_rss_mib"] - 1
                print(
                    f"peak RSS {name}, x{r['scale']} vs x{base['scale']}: "
                    f"{first['peak_rss_mib']:.0f} -> {this['peak_rss_mib']:.0f} MiB "
                    f"({growth:+.1%}; goal within 20%)"
                )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "raw":
        corpus, tokenizer, documents, characters = sys.argv[2:6]
        raw_encode(Path(corpus), Path(tokenizer), int(documents), int(characters))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=200, help="corpus size at scale 1")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--vocab-size", type=int, default=16384)
    parser.add_argument("--sample-characters", type=int, default=30_000_000)
    parser.add_argument("--batch-documents", type=int, default=1000)
    parser.add_argument("--batch-characters", type=int, default=4_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/vocabscale-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    info = machine()
    info["load average at start"] = load()
    print("machine:", json.dumps(info))
    results = [bench_scale(args, scale, args.workdir) for scale in args.scales]
    info["load average at end"] = load()
    report(results, info, args)
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
