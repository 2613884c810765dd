"""The `vocabscale` command: one subcommand per pipeline stage, plus `estimate` and `predict`.

Stage subcommands take explicit input and output paths; those that need settings read the
named sections of a validated params file (`--params`), never anything else behind the
engine's back. Errors from bad input print one clear message and exit with status 2.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
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
    from vocabscale.config import model_specs
    from vocabscale.train import EXIT_PREEMPTED, Preempted, TrainConfig, train_run

    params = _params(args)
    specs = model_specs(params)
    if args.model not in specs:
        raise ParamsError(
            f"{args.params}: models.{args.model} does not exist (models: {', '.join(specs)})"
        )
    try:
        train_run(
            specs[args.model],
            args.tokens,
            TrainConfig.from_params(params["train"]),
            args.out,
            args.checkpoint_dir,
        )
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

    build_report(args.estimates, args.runs, _params(args)["report"], args.out)


def cmd_estimate(args) -> None:
    from vocabscale.config import DEFAULTS
    from vocabscale.estimate import estimate_all, resolve_tokenization
    from vocabscale.estimators.runs import parse_renames, prepare_runs, read_runs_csv

    frame = read_runs_csv(args.runs, parse_renames(args.column))
    f, tokenization = resolve_tokenization(args.tokenization, frame, args.runs)
    runs = prepare_runs(frame, f, args.runs)
    options = copy.deepcopy(DEFAULTS["estimate"])
    options["isoflops"].update(
        densify=not args.no_densify,
        free_exponents=args.free_exponents,
        huber_delta=args.huber_delta,
    )
    options["derivative"].update(
        anchor_flops=args.derivative_anchor_flops, huber_delta=args.huber_delta
    )
    if args.derivative_anchor:
        nnv, vocab_size, d_model = args.derivative_anchor
        options["derivative"].update(
            anchor_nnv=nnv, anchor_vocab_size=vocab_size, anchor_d_model=int(d_model)
        )
    options["parametric"].update(
        min_flops=args.min_flops,
        huber_delta=args.huber_delta,
        authors_tokenization=args.authors_tokenization,
    )
    options["bootstrap"].update(samples=args.bootstrap, seed=args.seed)
    estimate_all(runs, f, tokenization, options, args.out)
    print(f"wrote {Path(args.out) / 'coefficients.json'} and {Path(args.out) / 'predictions.csv'}")


def cmd_predict(args) -> None:
    from vocabscale.predict import load_coefficients, predict

    answer = predict(load_coefficients(args.coefficients), args.nnv, args.d_model, args.flops)
    if args.json:
        print(json.dumps(answer))
        return
    print(f"Nnv = {answer['nnv']:.4g}, d = {answer['d_model']}, C = {answer['flops']:.4g} FLOPs")
    for approach, value in answer["approaches"].items():
        print(
            f"  {approach:<10}  V = {value['vocab_size']:>12,.0f}   Nv = "
            f"{value['vocab_params']:.4g}"
        )


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
    c = stage("train", cmd_train, "train one model x V run")
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
    c.add_argument("--runs", required=True)
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
        help="approach 2: budget at which the smallest model's best Nv is read",
    )
    c.add_argument(
        "--derivative-anchor",
        type=float,
        nargs=3,
        metavar=("NNV", "V", "D"),
        help="approach 2: an explicit anchor instead of the runs",
    )
    c.add_argument(
        "--min-flops",
        type=float,
        default=2.18e17,
        help="approach 3: fit on points with C >= this (default 2.18e17)",
    )
    c.add_argument(
        "--authors-tokenization",
        action="store_true",
        help="approach 3: reproduce the authors' f(V/1000) in the fit",
    )
    c.add_argument("--huber-delta", type=float, default=1e-3)
    c.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples (0: none)")
    c.add_argument("--seed", type=int, default=0)

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
    try:
        args.handler(args)
        log.info("%s finished in %.1f s", args.command, time.perf_counter() - started)
    except (ParamsError, FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        log.error("%s", message)
        sys.exit(2)


if __name__ == "__main__":
    main()
