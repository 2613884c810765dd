"""Benchmark: tokenization of one V as one job against K part jobs and a gather.

On the corpus generator of bench_tokenize.py (400 MB by default, written by prepare-corpus in
16 training shards), tokenizes one V three ways with the real commands, each a process as the
pipeline runs them:

  one job        `vocabscale tokenize` on every core
  parts at once  the K `vocabscale tokenize --part k` jobs started together, as a cluster
                 starts them, then `vocabscale tokenize --parts ...` (the gather)
  parts alone    each part job on its own, on every core: what one cluster node does, so the
                 longest of them plus the gather is the wall time on K nodes

and checks that the gathered directory holds the one job's bytes. Prints wall and CPU seconds,
tokens/s and peak RSS of every process, and the machine; writes its section of RESULTS.md.

    python benchmarks/bench_tokenize_shards.py                 # 400 MB, V=4096, 4 parts
    python benchmarks/bench_tokenize_shards.py --megabytes 20  # a quick look
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from bench_tokenize import REPO, corpus_settings, generate, load, machine, stage
from machine import record_section

HEADING = "# Tokenization as parallel part jobs and a gather"


def start(name: str, args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    command = [sys.executable, "-m", "vocabscale", name, *args, "--log", str(log)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("a"), env=env)


def wait(process: subprocess.Popen, started: float) -> dict[str, float]:
    """Wall time since `started`, CPU time and peak RSS of a started process (its rusage)."""
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"failed: {' '.join(map(str, process.args))}")
    return {
        "wall": time.perf_counter() - started,
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


def prepare(args, work: Path) -> tuple[Path, list[str]]:
    """Generate the corpus, prepare it and train the tokenizer; the params file and the
    arguments every tokenize command shares."""
    print(f"generating {args.megabytes:.0f} MB ...", flush=True)
    generated = generate(work / "source", args.megabytes)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["corpus"] = corpus_settings(work / "source", args.sample_characters)
    params["corpus"]["shard_characters"] = int(generated / args.shards) + 1
    params["tokenizer"] = {"vocab_sizes": [args.vocab_size], "tokenize_jobs": args.parts}
    params_path = work / "params.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    log = work / "prepare.log"
    corpus, tokenizer = work / "corpus", work / "tokenizer.json"
    stage("prepare-corpus", ["--params", str(params_path), "--out", str(corpus)], log)
    common = ["--params", str(params_path), "--corpus", str(corpus)]
    vocab = ["--vocab-size", str(args.vocab_size)]
    stage("train-tokenizer", [*common, *vocab, "--out", str(tokenizer)], log)
    return corpus, [*common, "--tokenizer", str(tokenizer)]


def parts_at_once(args, work: Path, common: list[str]) -> list[dict[str, float]]:
    """The K part jobs started together, one thread each share of the cores."""
    threads = str(max(1, os.cpu_count() // args.parts))
    started = time.perf_counter()
    running = [
        start("tokenize", [*common, "--part", str(k), "--threads", threads, "--out",
                           str(work / "parts" / str(k))], work / f"part{k}.log")
        for k in range(args.parts)
    ]  # fmt: skip
    return [wait(process, started) for process in running]


def bench(args, work: Path) -> dict:
    corpus, common = prepare(args, work)
    splits = json.loads((corpus / "stats.json").read_text())["splits"]
    shards = len(list((corpus / "train").glob("*.parquet")))
    result: dict = {"shards": shards, "characters": sum(s["characters"] for s in splits.values())}
    print(f"tokenizing {result['characters']:,} characters in {shards} shards", flush=True)
    result["one job"] = stage("tokenize", [*common, "--out", str(work / "one")], work / "one.log")
    result["parts at once"] = parts_at_once(args, work, common)
    part_dirs = [str(work / "parts" / str(k)) for k in range(args.parts)]
    result["gather"] = stage(
        "tokenize", [*common, "--parts", *part_dirs, "--out", str(work / "gathered")],
        work / "gather.log",
    )  # fmt: skip
    result["parts alone"] = []
    for k in range(args.parts):
        out = work / "alone" / str(k)
        argv = [*common, "--part", str(k), "--out", str(out)]
        result["parts alone"].append(stage("tokenize", argv, work / "alone.log"))
    names = sorted(path.name for path in (work / "one").iterdir())
    same = filecmp.cmpfiles(work / "one", work / "gathered", names, shallow=False)[0] == names
    result["byte_identical"] = same
    stats = json.loads((work / "one" / "stats.json").read_text())
    result["tokens"] = sum(split["tokens"] for split in stats["splits"].values())
    for key in ("one job", "gather"):
        result[key]["tokens"] = result["tokens"]
    for k, (at_once, alone) in enumerate(zip(result["parts at once"], result["parts alone"])):
        part = json.loads((work / "parts" / str(k) / "part.json").read_text())
        at_once["tokens"] = alone["tokens"] = part["tokens"]
    return result


def report(args, result: dict, info: dict) -> str:
    tokens, one, gather = result["tokens"], result["one job"], result["gather"]
    at_once, alone = result["parts at once"], result["parts alone"]
    rows = [("one job", one)]
    rows += [(f"part {k}, the {args.parts} at once", m) for k, m in enumerate(at_once)]
    rows += [("gather", gather)]
    rows += [(f"part {k}, alone", m) for k, m in enumerate(alone)]
    lines = [HEADING, ""]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    lines += [
        f"- command: `python benchmarks/bench_tokenize_shards.py --megabytes {args.megabytes:g} "
        f"--vocab-size {args.vocab_size} --parts {args.parts}`",
        f"- corpus: the generator of bench_tokenize.py, {result['characters']:,} characters in "
        f"{result['shards']} training shards; V = {args.vocab_size}; {tokens:,} tokens",
        f"- gathered directory byte-identical to the one job's: {result['byte_identical']}",
        "",
        "| process | tokens written | wall s | CPU s | tokens/s (wall) | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        lines.append(
            f"| {name} | {m['tokens']:,} | {m['wall']:.1f} | {m['cpu']:.1f} | "
            f"{m['tokens'] / m['wall'] / 1e6:.2f} M | {m['peak_rss_mib']:.0f} |"
        )
    at_once_wall = max(m["wall"] for m in at_once) + gather["wall"]
    nodes_wall = max(m["wall"] for m in alone) + gather["wall"]
    split_cpu = sum(m["cpu"] for m in at_once) + gather["cpu"]
    lines += [
        "",
        f"- one job: {one['wall']:.1f} s wall, {one['cpu']:.1f} CPU-s, "
        f"{tokens / one['wall'] / 1e6:.2f} M tokens/s",
        f"- {args.parts} parts at once on this machine's cores, then the gather: "
        f"{at_once_wall:.1f} s wall ({one['wall'] / at_once_wall:.2f}x the one job), "
        f"{split_cpu:.1f} CPU-s ({split_cpu / one['cpu'] - 1:+.1%} over the one job); the "
        f"gather alone {gather['wall']:.1f} s (this machine has {os.cpu_count()} cores: the "
        f"{args.parts} jobs share them, so no wall time can be gained here)",
        f"- on {args.parts} nodes of this machine's cores each (the longest part alone, then "
        f"the gather): {nodes_wall:.1f} s wall, {one['wall'] / nodes_wall:.2f}x the speed of "
        f"the one job, {tokens / nodes_wall / 1e6:.2f} M tokens/s",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=400)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--shards", type=int, default=16, help="training shards to prepare")
    parser.add_argument("--sample-characters", type=int, default=30_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/vocabscale-bench-shards"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    info = machine()
    info["load average at start"] = load()
    result = bench(args, args.workdir)
    info["load average at end"] = load()
    text = report(args, result, info)
    print(text)
    record_section(args.out, HEADING, text)
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
