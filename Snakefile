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

from snakemake.utils import min_version

min_version("8.20")

# SIGTERM to the head process: exit once the submitted jobs have ended, never a hang (Snakemake's
# handler runs in a thread of its own; vocabscale.cluster.head says why)
from vocabscale.cluster.head import defer_graceful_exit

defer_graceful_exit()


configfile: "params.yaml"


# `snakemake --report report.zip`: this description, then the outputs flagged with report()
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


# Cheap rules run on the submitting host under `--profile cluster`; the corpus, the tokenizers
# and the training runs go to SLURM (see cluster/config.yaml and vocabscale.cluster).
localrules:
    all,
    fit_tokenization,
    normalize,
    collect,
    estimate,
    backtest,
    report,


wildcard_constraints:
    model="[A-Za-z0-9][A-Za-z0-9_.]*",
    vocab=r"\d+",
    approach="|".join(APPROACHES),


include: "workflow/rules/corpus.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/runs.smk"
include: "workflow/rules/downstream.smk"
include: "workflow/rules/estimate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "results/report",
    default_target: True
