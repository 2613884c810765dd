# Read by every step of the workflow: the params file the stages are given, validated (a bad
# key stops here, before any job runs), and what the steps and their resources are made from.

import sys

from vocabscale.cluster import (
    data_warning,
    job_resources,
    plan,
    train_resource_callables,
    train_retries,
)
from vocabscale.config import load_params
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
# runs that need more tokens than the corpus holds, said before any job runs (the corpus size is
# counted once tokenized, estimated from corpus.max_characters before; see vocabscale.cluster)
if REPEATS := data_warning(plan(PARAMS)):
    print(f"WARNING: {REPEATS}", file=sys.stderr)
VOCAB_SIZES = PARAMS["tokenizer"]["vocab_sizes"]
MODELS = list(PARAMS["models"])
RUNS = run_grid(PARAMS)
CPU_JOB_RESOURCES = job_resources(PARAMS)
