# Downstream evaluation (off while downstream.tasks is empty): each finished run exported to
# Hugging Face and scored with lm-evaluation-harness, then one table for the report. The jobs
# exist either way, so that both engines run the same stages; with no tasks they only record
# that evaluation is off, on the submitting host.

from vocabscale.cluster.slurm import downstream_resources
from vocabscale.downstream.tasks import task_fingerprint

DOWNSTREAM_ON = bool(PARAMS["downstream"]["tasks"])


# The task files under downstream.include_path and lm-evaluation-harness' version, read now:
# as a param, a change of either reruns this rule, and so every downstream job after it.
rule downstream_tasks:
    input:
        code=STAGES.code("downstream_tasks"),
    output:
        "results/downstream_tasks.json",
    params:
        file=PARAMS_FILE,
        settings=settings_of("downstream_tasks"),
        fingerprint=task_fingerprint(PARAMS["downstream"]),
    localrule: True
    log:
        "logs/downstream_tasks.log",
    shell:
        "vocabscale downstream-tasks --params {params.file:q} --out {output:q} --log {log:q}"


rule downstream:
    input:
        run="results/runs/{model}-v{vocab}",
        tokenizer="results/tokenizers/v{vocab}/tokenizer.json",
        tasks="results/downstream_tasks.json",
        code=STAGES.code("downstream"),
    output:
        "results/downstream/{model}-v{vocab}.json",
    params:
        file=PARAMS_FILE,
        settings=settings_of("downstream"),
    localrule: not DOWNSTREAM_ON
    resources:
        **(downstream_resources(PARAMS) if DOWNSTREAM_ON else {}),
    log:
        "logs/downstream/{model}-v{vocab}.log",
    shell:
        "vocabscale downstream --params {params.file:q} --run {input.run:q} "
        "--tokenizer {input.tokenizer:q} --tasks {input.tasks:q} --out {output:q} --log {log:q}"


rule collect_downstream:
    input:
        scores=expand("results/downstream/{run}.json", run=RUNS),
        code=STAGES.code("collect_downstream"),
    output:
        report(
            "results/downstream.csv",
            caption="../report/downstream.rst",
            category="Downstream evaluation",
        ),
    params:
        file=PARAMS_FILE,
        settings=settings_of("collect_downstream"),
    localrule: True
    log:
        "logs/collect_downstream.log",
    shell:
        "vocabscale collect-downstream --params {params.file:q} --results-dir results/downstream "
        "--out {output:q} --log {log:q}"
