# vocabscale: BPE tokenizers per V -> tokenized corpus -> model x V training runs ->
# unigram-normalized losses -> three estimators -> prediction report.
#
#   snakemake --cores all                      the embedded default, locally
#   snakemake --profile cluster                the same workflow on SLURM
#   snakemake --configfile workflow/presets/paper.yaml --profile cluster
#
# Every rule runs `vocabscale <stage>` with explicit paths, exactly the command its dvc.yaml
# stage runs, so both engines write the same artifacts. Stages read their settings from the
# params file named on their command line, validated before anything runs.

from vocabscale.cluster import job_resources, train_resource_callables, train_retries
from vocabscale.config import load_params, run_grid

configfile: "params.yaml"


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
VOCAB_SIZES = PARAMS["tokenizer"]["vocab_sizes"]
MODELS = list(PARAMS["models"])
RUNS = run_grid(PARAMS)
CPU_JOB_RESOURCES = job_resources(PARAMS)


# Cheap rules run on the submitting host under `--profile cluster`; the corpus, the tokenizers
# and the training runs go to SLURM (see cluster/config.yaml and vocabscale.cluster).
localrules:
    all,
    fit_tokenization,
    normalize,
    collect,
    estimate,
    report,


wildcard_constraints:
    model="[A-Za-z0-9][A-Za-z0-9_.]*",
    vocab=r"\d+",


include: "workflow/rules/corpus.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/estimate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "results/report",
    default_target: True
