"""The `vocabscale` command: one subcommand per pipeline stage, plus `estimate` and `predict`.

Stage subcommands take explicit input and output paths; those that need settings read the
named sections of a validated params file (`--params`), never anything else behind the
engine's back. Errors from bad input print one clear message and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from vocabscale.config import ParamsError, load_params
from vocabscale.io import setup_logging

log = logging.getLogger("vocabscale")


def _params(args) -> dict:
    return load_params(args.params)


def cmd_prepare_corpus(args) -> None:
    from vocabscale.prepare_corpus import prepare_corpus

    prepare_corpus(_params(args)["corpus"], args.out)


def cmd_train_tokenizer(args) -> None:
    from vocabscale.tokenize_corpus import set_threads
    from vocabscale.train_tokenizer import train_tokenizer

    section = _params(args)["tokenizer"]
    set_threads(args.threads)
    train_tokenizer(
        Path(args.corpus) / "tokenizer_sample.parquet",
        args.vocab_size,
        args.out,
        section["min_frequency"],
        section["batch_documents"],
    )


def cmd_tokenize(args) -> None:
    from vocabscale.tokenize_corpus import set_threads, tokenize_corpus

    section = _params(args)["tokenizer"]
    set_threads(args.threads)
    tokenize_corpus(
        args.corpus,
        args.tokenizer,
        args.out,
        section["batch_documents"],
        section["batch_characters"],
        section["checkpoint_seconds"],
    )


def cmd_fit_tokenization(args) -> None:
    from vocabscale.fit_tokenization import fit_tokenization

    vocab_sizes = _params(args)["tokenizer"]["vocab_sizes"]
    fit_tokenization(
        [Path(args.tokens_dir) / f"v{v}" / "stats.json" for v in vocab_sizes], args.out
    )


def cmd_train(args) -> None:
    from vocabscale import distributed
    from vocabscale.config import model_specs
    from vocabscale.train import EXIT_PREEMPTED, Preempted, TrainConfig, train_run

    params = _params(args)
    specs = model_specs(params)
    if args.model not in specs:
        raise ParamsError(
            f"{args.params}: models.{args.model} does not exist (models: {', '.join(specs)})"
        )
    spec, config = specs[args.model], TrainConfig.from_params(params["train"])
    if spec.gpus > 1 and not distributed.launched():
        # One process per GPU: rerun this very command under torchrun.
        distributed.check_devices(spec.gpus, config.device)
        argv = ["train", "--params", args.params, "--model", args.model, "--tokens", args.tokens]
        argv += ["--out", args.out, "--checkpoint-dir", args.checkpoint_dir]
        argv += ["--log", args.log] if args.log else []
        status, terminated = distributed.launch(spec.gpus, argv)
        if status:
            log.error("torchrun exited with status %d", status)
            sys.exit(EXIT_PREEMPTED if terminated else status)
        return
    if distributed.rank() > 0:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 speaks for the run
    try:
        train_run(spec, args.tokens, config, args.out, args.checkpoint_dir)
    except Preempted as stop:
        log.warning("%s", stop)
        sys.exit(EXIT_PREEMPTED)


def cmd_normalize(args) -> None:
    from vocabscale.normalize import normalize_run

    normalize_run(
        args.run, args.tokens, args.out, _params(args)["normalize"]["unigram_pseudocount"]
    )


def cmd_collect(args) -> None:
    from vocabscale.collect import collect_runs
    from vocabscale.config import run_grid

    collect_runs(run_grid(_params(args)), args.runs_dir, args.normalized_dir, args.out)


def _stage_estimate(approach: str):
    def command(args) -> None:
        from vocabscale.estimate import estimate_approach
        from vocabscale.estimators.runs import RunsTableError, load_runs
        from vocabscale.fit_tokenization import load_tokens_per_char
        from vocabscale.io import write_json

        section = _params(args)["estimate"]
        spec = "paper" if section["tokenization"] == "paper" else args.tokenization
        f = load_tokens_per_char(spec)
        runs = load_runs(args.runs, f)
        try:
            result = estimate_approach(approach, runs, f, section[approach], section["bootstrap"])
        except (RunsTableError, RuntimeError) as error:
            # The other approaches may still fit: record why this one did not, for the report.
            log.error("%s could not be fitted: %s", approach, error)
            result = {"approach": approach, "error": str(error)}
        result["tokenization"] = {**f.as_dict(), "source": str(spec)}
        write_json(args.out, result)

    return command


def cmd_report(args) -> None:
    from vocabscale.report import build_report

    result = build_report(
        args.estimates, args.runs, _params(args)["report"], args.out, args.tokenization
    )
    print(
        f"wrote {Path(args.out) / 'report.md'} (and report.html): "
        f"{len(result['predictions'])} predictions, {len(result['doubts'])} warning(s)"
    )


def cmd_estimate(args) -> None:
    from vocabscale.estimate import estimate_all, options_from_args, resolve_tokenization
    from vocabscale.estimators.runs import parse_renames, prepare_runs, read_runs_csv

    frame = read_runs_csv(args.runs, parse_renames(args.column))
    f, tokenization = resolve_tokenization(args.tokenization, frame, args.runs)
    runs = prepare_runs(frame, f, args.runs)
    estimate_all(runs, f, tokenization, options_from_args(args), args.out)
    print(f"wrote {Path(args.out) / 'coefficients.json'} and {Path(args.out) / 'predictions.csv'}")


def cmd_dvc_commit(args) -> None:
    from vocabscale.handover import HandOverError, dvc_commit

    try:
        dvc_commit()
    except HandOverError as error:
        log.error("%s", error)
        sys.exit(1)


def cmd_plan(args) -> None:
    from vocabscale.cluster import format_plan, plan

    params = _params(args)
    table = plan(params)
    if args.csv:
        table.to_csv(sys.stdout, index=False)
    else:
        print(format_plan(table, params))


def cmd_predict(args) -> None:
    from vocabscale.predict import bootstrap_interval, load_coefficients, predict

    coefficients = load_coefficients(args.coefficients)
    answer = predict(coefficients, args.nnv, args.d_model, args.flops)
    for approach, value in answer["approaches"].items():
        confidence = coefficients[approach].get("bootstrap_confidence", 0.9)
        interval = bootstrap_interval(
            coefficients, approach, answer["nnv"], answer["d_model"], answer["flops"], confidence
        )
        if interval:
            value.update(vocab_size_interval=list(interval), confidence=confidence)
    if args.json:
        print(json.dumps(answer))
        return
    print(f"Nnv = {answer['nnv']:.4g}, d = {answer['d_model']}, C = {answer['flops']:.4g} FLOPs")
    for approach, value in answer["approaches"].items():
        line = f"  {approach:<10}  V = {value['vocab_size']:>12,.0f}"
        line += f"   Nv = {value['vocab_params']:.4g}"
        if "vocab_size_interval" in value:
            low, high = value["vocab_size_interval"]
            line += f"   {value['confidence']:.0%} interval {low:,.0f} - {high:,.0f}"
        if value.get("at_search_bound"):
            line += "   (at the edge of the V searched: the fit gives only a bound)"
        print(line)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vocabscale", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def stage(name: str, handler, help_text: str, params: bool = True):
        command = sub.add_parser(
            name, help=help_text, aliases=[name.replace("-", "_")] if "-" in name else []
        )
        command.set_defaults(handler=handler)
        if params:
            command.add_argument("--params", default="params.yaml", help="validated params file")
        command.add_argument("--log", help="also append the log to this file")
        return command

    c = stage("prepare-corpus", cmd_prepare_corpus, "read, split and shard the corpus")
    c.add_argument("--out", required=True)
    c = stage(
        "train-tokenizer", cmd_train_tokenizer, "train a byte-level BPE with exactly V entries"
    )
    c.add_argument("--corpus", required=True)
    c.add_argument("--vocab-size", type=int, required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--threads", type=int, default=0, help="CPU threads (default 0: all cores)")
    c = stage(
        "tokenize",
        cmd_tokenize,
        "tokenize the corpus into memory-mapped arrays (resumes an interrupted run)",
    )
    c.add_argument("--corpus", required=True)
    c.add_argument("--tokenizer", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--threads", type=int, default=0, help="CPU threads (default 0: all cores)")
    c = stage("fit-tokenization", cmd_fit_tokenization, "fit f(V) tokens per character")
    c.add_argument("--tokens-dir", required=True, help="holds v<V>/stats.json for every V")
    c.add_argument("--out", required=True)
    c = stage("train", cmd_train, "train one model x V run (under torchrun when gpus > 1)")
    c.add_argument("--model", required=True)
    c.add_argument("--tokens", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--checkpoint-dir", required=True)
    c = stage("normalize", cmd_normalize, "loss, unigram-normalized loss and bpc of one run")
    c.add_argument("--run", required=True)
    c.add_argument("--tokens", required=True)
    c.add_argument("--out", required=True)
    c = stage("collect", cmd_collect, "gather every run of the grid into the runs table")
    c.add_argument("--runs-dir", required=True, help="holds <model>-v<V>/run.json")
    c.add_argument("--normalized-dir", required=True, help="holds <model>-v<V>.csv")
    c.add_argument("--out", required=True)
    for approach in ("isoflops", "derivative", "parametric"):
        c = stage(f"estimate-{approach}", _stage_estimate(approach), f"fit approach {approach}")
        c.add_argument("--runs", required=True)
        c.add_argument("--tokenization", required=True, help="fit.json of fit-tokenization")
        c.add_argument("--out", required=True)
    c = stage("report", cmd_report, "write the prediction report")
    c.add_argument("--estimates", required=True, help="estimates directory or coefficients.json")
    c.add_argument("--runs", help="runs table (CSV); without it the runs' figures are skipped")
    c.add_argument(
        "--tokenization",
        help="fit.json of fit-tokenization, for the measured points of the f(V) figure "
        "(default: read them from the runs table)",
    )
    c.add_argument("--out", required=True)

    c = stage("estimate", cmd_estimate, "fit all three approaches on any runs table", params=False)
    c.add_argument("--runs", required=True, help="runs table (CSV)")
    c.add_argument("--out", required=True, help="output directory")
    c.add_argument(
        "--column",
        action="append",
        metavar="THEIRS=OURS",
        help="rename a column of the table (repeatable)",
    )
    c.add_argument("--tokenization", help="paper or a fit.json; default: fit f(V) on the table")
    c.add_argument("--no-densify", action="store_true", help="approach 1: plain envelope")
    c.add_argument(
        "--free-exponents",
        action="store_true",
        help="approach 1: fit the Nnv and H exponents instead of fixing them at 0.5",
    )
    c.add_argument(
        "--derivative-anchor-flops",
        type=float,
        help="approach 2: budget at which the smallest model's best Nv is read (default: the "
        "largest every vocabulary's run reaches)",
    )
    c.add_argument(
        "--derivative-anchor",
        type=float,
        nargs=3,
        metavar=("NNV", "V", "D"),
        help="approach 2: an explicit anchor instead of the runs",
    )
    c.add_argument(
        "--derivative-grid-widths",
        choices=["runs", "paper"],
        help="approach 2: widths of the Nnv grid learnt from the trained models (default) or "
        "the paper's mapping",
    )
    c.add_argument(
        "--derivative-nnv-grid",
        type=float,
        nargs="+",
        metavar="NNV",
        help="approach 2: the Nnv at which dC/dV = 0 is solved (default: the trained models')",
    )
    c.add_argument(
        "--derivative-free-intercept",
        action="store_true",
        help="approach 2: fit gamma with a free intercept instead of through the anchor model",
    )
    c.add_argument(
        "--min-flops",
        type=float,
        help="approach 3: fit on points with C >= this (default 2.18e17, the paper's)",
    )
    c.add_argument(
        "--authors-tokenization",
        action="store_true",
        help="approach 3: reproduce the authors' f(V/1000) in the fit (compatibility switch)",
    )
    c.add_argument("--huber-delta", type=float, help="every Huber fit (default 1e-3)")
    c.add_argument("--bootstrap", type=int, help="bootstrap resamples (default 100; 0: none)")
    c.add_argument("--confidence", type=float, help="bootstrap interval (default 0.9)")
    c.add_argument("--seed", type=int, help="bootstrap seed (default 0)")

    stage(
        "dvc-commit",
        cmd_dvc_commit,
        "after a finished `snakemake` run of params.yaml, record its results in dvc.lock and "
        "the DVC cache (run at the repository root)",
        params=False,
    )

    c = stage("plan", cmd_plan, "per-run FLOPs and GPU-hours of the grid, before submitting")
    c.add_argument("--csv", action="store_true", help="print the table as CSV")

    c = stage("predict", cmd_predict, "predict V for a model", params=False)
    c.add_argument("--nnv", type=float, required=True, help="non-vocabulary parameters")
    c.add_argument("--d-model", type=int, help="width (default: the paper's mapping)")
    c.add_argument("--flops", type=float, help="budget (default: compute-optimal)")
    c.add_argument("--coefficients", required=True, help="paper, coefficients.json or a directory")
    c.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(args.log)
    started = time.perf_counter()
    log.info("vocabscale %s", " ".join(sys.argv[1:] if argv is None else argv))
    if "SLURM_JOB_ID" in os.environ:
        log.info(
            "running in SLURM job %s on %s",
            os.environ["SLURM_JOB_ID"],
            os.environ.get("SLURMD_NODENAME", "?"),
        )
    try:
        args.handler(args)
        log.info("%s finished in %.1f s", args.command, time.perf_counter() - started)
    except (ParamsError, FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        log.error("%s", message)
        sys.exit(2)


if __name__ == "__main__":
    main()
