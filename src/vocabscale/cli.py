"""The `vocabscale` command: one subcommand per pipeline stage, plus tools for users. Each
lives in a module of its own (`add_arguments(parser)`, `run(args)`); this file only dispatches,
importing only the module asked for (torch, matplotlib and scipy are slow to import). Bad input,
an output path holding what the command did not write, and an output another process is still
writing print one clear message and exit with status 2; an output that process wrote, running
the same command, while this one waited leaves nothing to do (status 0); any other exception is
a bug, printed with its traceback (to the log file too), status 1."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time

from vocabscale.config import ParamsError
from vocabscale.io import OutputLocked, WrittenMeanwhile, running, setup_logging

log = logging.getLogger("vocabscale")

#: Every subcommand: the module that owns it, and one line of help. The stages come first, in
#: pipeline order (each Snakemake rule and dvc.yaml stage runs one of them).
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-corpus": ("vocabscale.corpus.prepare", "read, split and shard the corpus"),
    "train-tokenizer": (
        "vocabscale.tokenizer.train",
        "train a byte-level BPE of exactly V entries",
    ),
    "tokenize": ("vocabscale.tokenizer.tokenize", "tokenize the corpus into token arrays"),
    "fit-tokenization": ("vocabscale.tokenizer.fit", "fit f(V), tokens per character"),
    "train": ("vocabscale.train.stage", "train one model x V run (torchrun when gpus > 1)"),
    "normalize": (
        "vocabscale.runs.normalize",
        "loss, unigram-normalized loss, bpc and bpb of a run",
    ),
    "collect": ("vocabscale.runs.collect", "gather every run of the grid into the runs table"),
    "downstream-tasks": (
        "vocabscale.downstream.tasks",
        "fingerprint the task files and lm-evaluation-harness the scores depend on",
    ),
    "downstream": (
        "vocabscale.downstream.evaluate",
        "export one run to Hugging Face and score it with lm-evaluation-harness",
    ),
    "collect-downstream": (
        "vocabscale.downstream.collect",
        "gather the downstream scores of the grid into one table",
    ),
    "estimate-<approach>": ("vocabscale.estimate.stage", "fit one approach on the runs table"),
    "backtest": (
        "vocabscale.estimate.backtest_command",
        "judge every approach on held-out runs; choose the recommendation's rule",
    ),
    "report": ("vocabscale.report.stage", "write the prediction report"),
    "estimate": ("vocabscale.estimate.estimate_command", "fit every approach on any runs table"),
    "predict": ("vocabscale.estimate.predict_command", "predict V for a model from coefficients"),
    "plan": ("vocabscale.cluster.command", "per-run FLOPs, GPU-hours and SLURM jobs of the grid"),
    "dvc-commit": ("vocabscale.handover_command", "record a finished Snakemake run with DVC"),
    "export-hf": ("vocabscale.export_command", "write a run as a Hugging Face model directory"),
}


def command_entry(name: str) -> tuple[str, str] | None:
    """(module, help) of a subcommand; `estimate-<approach>` stands for one per approach."""
    if name.startswith("estimate-"):
        return COMMANDS["estimate-<approach>"]
    return COMMANDS.get(name.replace("_", "-"))


def overview() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "commands:\n" + "\n".join(lines) + "\n\n`vocabscale COMMAND --help` lists its options."


def build_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one subcommand, from its module."""
    entry = command_entry(name)
    if entry is None:
        print(f"vocabscale: unknown command {name!r}\n\n{overview()}", file=sys.stderr)
        raise SystemExit(2)
    module_name, help_text = entry
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"vocabscale {name}", description=help_text)
    parser.add_argument("--log", help="also append the log to this file")
    module.add_arguments(parser)
    parser.set_defaults(handler=module.run, command=name)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: vocabscale COMMAND [options]\n\n{__doc__.splitlines()[0]}\n\n{overview()}")
        raise SystemExit(0 if argv else 2)
    args = build_parser(argv[0]).parse_args(argv[1:])
    args.argv = argv
    setup_logging(args.log)
    started = time.perf_counter()
    log.info("vocabscale %s", " ".join(argv))
    if "SLURM_JOB_ID" in os.environ:
        log.info(
            "running in SLURM job %s on %s",
            os.environ["SLURM_JOB_ID"],
            os.environ.get("SLURMD_NODENAME", "?"),
        )
    try:
        with running(argv):
            args.handler(args)
        log.info("%s finished in %.1f s", args.command, time.perf_counter() - started)
    except WrittenMeanwhile as done:
        log.info("%s", done)
    except (ParamsError, FileNotFoundError, ValueError, OutputLocked) as error:
        log.error("%s", error)
        sys.exit(2)
    except Exception:
        log.exception("%s failed: an unexpected error (a bug), its traceback follows", args.command)
        sys.exit(1)


if __name__ == "__main__":
    main()
