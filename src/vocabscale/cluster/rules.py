"""The `resources:` and `retries:` of the workflow's SLURM rules, in the form Snakemake takes:
one callable per resource, of a job's wildcards (and input), evaluated for each job.

The training jobs' come from the plan the Snakefile computes once when it is read, looked up
per job; the CPU jobs' are sized when their job is ready, from the input it then has.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vocabscale.cluster.plan import TOKENS_DIR, Plan, planned_run
from vocabscale.cluster.slurm import cpu_job_resources, train_resources
from vocabscale.sweep import model_specs, run_id


def train_resource_callables(plan: Plan, params: dict[str, Any]) -> dict[str, Callable]:
    """Every training job's resources, made once from the plan and looked up by the rule's
    wildcards; a resource one run does not set is None for it (Snakemake leaves it out)."""
    by_run = {run: train_resources(cost, params) for run, cost in plan.runs.items()}
    names = dict.fromkeys(name for resources in by_run.values() for name in resources)

    def resources_of(wildcards: Any) -> dict[str, Any]:
        model, vocab_size = wildcards.model, int(wildcards.vocab)
        run = run_id(model, vocab_size)
        if run not in by_run:  # a run outside the grid, asked for by its path
            cost = planned_run(model_specs(params)[model], vocab_size, params, TOKENS_DIR)
            by_run[run] = train_resources(cost, params)
        return by_run[run]

    def resource(name: str) -> Callable:
        return lambda wildcards: resources_of(wildcards).get(name)

    return {name: resource(name) for name in names}


def train_retries(plan: Plan) -> int:
    """Retries of a training job: enough for the longest run to finish in time-limited pieces,
    plus two for preemption."""
    return max(cost.jobs for cost in plan.runs.values()) + 2


def cpu_job_resource_callables(params: dict[str, Any], step: str) -> dict[str, Callable]:
    """`slurm.cpu_job_resources` for a rule's `resources:`. Snakemake evaluates them again when
    the job is ready to run, when its input (the prepared corpus) exists and says its size."""

    def resource(name: str) -> Callable:
        def value(wildcards: Any, input: Any) -> Any:
            corpus = next((Path(f) for f in input if (Path(f) / "stats.json").is_file()), None)
            return cpu_job_resources(params, step, corpus)[name]

        return value

    return {name: resource(name) for name in cpu_job_resources(params, step)}
