"""One finished run evaluated on downstream tasks with lm-evaluation-harness, as the paper
validated its predicted vocabulary sizes: the run exported to a Hugging Face directory beside
the output (`vocabscale.export`), scored with the harness' `hf` model, and removed afterwards
(or, after a kill, by the next writer of the output: it is named as its temporaries are). With
no tasks (the embedded default) nothing is evaluated and the record says so."""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from vocabscale import accounting
from vocabscale.config import ParamsError
from vocabscale.downstream import RUN_COLUMNS
from vocabscale.io import read_json, write_json

log = logging.getLogger(__name__)


def run_record(run: dict[str, Any]) -> dict[str, Any]:
    """The run's identity, size and compute (the paper's C = 6 (Nnv + V d) D), from its
    run.json, so that the scores table stands alone."""
    record = {key: run[key] for key in RUN_COLUMNS if key != "flops"}
    record["flops"] = accounting.flops(
        run["non_vocab_params"], run["vocab_size"], run["d_model"], run["train_tokens"]
    )
    return record


def task_manager(tasks: list[str], include_path: str | None):
    """lm-evaluation-harness' task index. Indexing its thousands of built-in tasks takes
    seconds, so when every task is defined in `include_path` only that directory is read."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ParamsError(
            "downstream.tasks: lm-evaluation-harness is not installed: pip install -e '.[hf]'"
        ) from None

    if include_path:
        if not Path(include_path).is_dir():
            raise ParamsError(f"downstream.include_path: {include_path} is not a directory")
        local = TaskManager(include_path=include_path, include_defaults=False)
        if set(tasks) <= set(local.all_tasks):
            return local
    manager = TaskManager(include_path=include_path)
    unknown = sorted(set(tasks) - set(manager.all_tasks))
    if unknown:
        where = f" nor in {include_path}" if include_path else ""
        raise ParamsError(
            f"downstream.tasks: {', '.join(unknown)}: not tasks of lm-evaluation-harness{where}"
        )
    return manager


def scores(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per task, lm-evaluation-harness' metrics without their filter suffix
    (`acc,none` -> `acc`, `acc_stderr,none` -> `acc_stderr`), the documents scored and the
    shots."""
    out = {}
    for task, metrics in results["results"].items():
        values = {
            re.sub(r",none$", "", key): value
            for key, value in metrics.items()
            if "," in key and isinstance(value, (int, float))
        }
        values["samples"] = (results.get("n-samples") or {}).get(task, {}).get("effective")
        values["num_fewshot"] = (results.get("n-shot") or {}).get(task)
        out[task] = values
    return out


def evaluate_model(model_dir: Path, settings: dict[str, Any], manager) -> dict[str, Any]:
    """lm-evaluation-harness on a Hugging Face directory; its scores, per task."""
    import lm_eval
    import torch

    device = settings["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model_dir), "dtype": settings["dtype"]},
        tasks=list(settings["tasks"]),
        num_fewshot=settings["num_fewshot"],
        limit=settings["limit"],
        batch_size=settings["batch_size"],
        device=device,
        task_manager=manager,
        log_samples=False,
    )
    return {"lm_eval_version": lm_eval.__version__, "device": device, "tasks": scores(results)}


def evaluate_run(
    run_dir: str | Path,
    tokenizer: str | Path,
    out: str | Path,
    settings: dict[str, Any],
    fingerprint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export one run, evaluate it on `settings["tasks"]` and write its record (with the
    fingerprint of the task files and harness it was scored with)."""
    run_dir, out = Path(run_dir), Path(out)
    record = run_record(read_json(run_dir / "run.json"))
    record["settings"] = settings
    record["task_fingerprint"] = fingerprint
    if not settings["tasks"]:
        log.info("downstream evaluation is off (downstream.tasks is empty): nothing to evaluate")
        record["tasks"] = {}
    else:
        manager = task_manager(settings["tasks"], settings["include_path"])  # before any work
        out.parent.mkdir(parents=True, exist_ok=True)
        # beside the output (a node's /tmp may not hold a large model), named as temporaries
        # are, which DVC ignores (.dvcignore); removed when done, also after a failure, and
        # after a kill by the next run under the output's lock (`remove_stale_temporaries`)
        scratch = tempfile.TemporaryDirectory(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        with scratch as tmp:
            from vocabscale.export import export_run  # torch: only when there is a task

            model_dir = export_run(run_dir, tokenizer, Path(tmp) / "hf")
            record.update(evaluate_model(model_dir, settings, manager))
        for task, values in record["tasks"].items():
            log.info("%s on %s: %s", record["run_id"], task, values)
    write_json(out, record)
    return record
