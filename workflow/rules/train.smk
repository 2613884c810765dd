rule train:
    input:
        "results/tokens/v{vocab}",
    output:
        directory("results/runs/{model}-v{vocab}"),
    params:
        section=lambda wildcards: [PARAMS["train"], PARAMS["models"][wildcards.model]],
    threads: max(1, PARAMS["train"]["threads"])
    resources:
        **train_resource_callables(PARAMS),
    # a run longer than one job's time limit continues from its checkpoint on each retry
    retries: train_retries(PARAMS)
    log:
        "logs/train/{model}-v{vocab}.log",
    shell:
        "vocabscale train --params {PARAMS_FILE} --model {wildcards.model} --tokens {input} "
        "--out {output} --checkpoint-dir results/checkpoints/{wildcards.model}-v{wildcards.vocab} "
        "--log {log}"


rule normalize:
    input:
        run="results/runs/{model}-v{vocab}",
        tokens="results/tokens/v{vocab}",
    output:
        "results/normalized/{model}-v{vocab}.csv",
    params:
        section=PARAMS["normalize"],
    log:
        "logs/normalize/{model}-v{vocab}.log",
    shell:
        "vocabscale normalize --params {PARAMS_FILE} --run {input.run} --tokens {input.tokens} "
        "--out {output} --log {log}"


rule collect:
    input:
        expand("results/runs/{run}", run=RUNS),
        expand("results/normalized/{run}.csv", run=RUNS),
    output:
        "results/runs.csv",
    log:
        "logs/collect.log",
    shell:
        "vocabscale collect --params {PARAMS_FILE} --runs-dir results/runs "
        "--normalized-dir results/normalized --out {output} --log {log}"
