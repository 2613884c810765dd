# Read by every step of the workflow: the params file the stages are given, validated (a bad
# key stops here, before any job runs), what the steps and their resources are made from, and
# what each step depends on besides its inputs (its code and settings, declared in dvc.yaml for
# both engines: each rule takes its stage's code as inputs and its settings as params).

import sys

from vocabscale.cluster.cpu_jobs import CPU_JOBS
from vocabscale.cluster.plan import cpu_job_warning, data_warning, plan
from vocabscale.cluster.rules import (
    cpu_job_resource_callables,
    train_resource_callables,
    train_retries,
)
from vocabscale.config import load_params
from vocabscale.engines import declared_stages
from vocabscale.estimate.approaches import APPROACHES
from vocabscale.sweep import run_grid


def params_file():
    """The params file the stages read: the last --configfile, else params.yaml."""
    given = list(workflow.overwrite_configfiles or [])
    if workflow.config_settings.overwrite_config and not given:
        raise WorkflowError(
            "--config overrides are not seen by the stages, which read a params file: put the "
            "settings in a copy of params.yaml and pass it with --configfile"
        )
    return str(given[-1]) if given else "params.yaml"


PARAMS_FILE = params_file()
PARAMS = load_params(PARAMS_FILE)  # validated; a bad key stops here, before any job runs
# every training run's cost, computed once: the training jobs' resources and retries come from
# it, and the runs that need more tokens than the corpus holds are said before any job runs (the
# corpus size is counted once tokenized, estimated from corpus.max_characters before)
PLAN = plan(PARAMS)
if REPEATS := data_warning(PLAN.table):
    print(f"WARNING: {REPEATS}", file=sys.stderr)
# the corpus and tokenizer-training jobs cannot resume: one estimated to outlast its time limit
# would start over on every retry, so it is said before any job runs
if TOO_LONG := cpu_job_warning(PARAMS):
    print(f"WARNING: {TOO_LONG}", file=sys.stderr)
VOCAB_SIZES = PARAMS["tokenizer"]["vocab_sizes"]
MODELS = list(PARAMS["models"])
RUNS = run_grid(PARAMS)
STAGES = declared_stages(workflow.basedir)


def settings_of(stage):
    """A job's settings, as its dvc.yaml stage declares them, for its wildcards."""
    return lambda wildcards: STAGES.settings(stage, PARAMS_FILE, wildcards)
