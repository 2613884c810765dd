rule normalize:
    input:
        run="results/runs/{model}-v{vocab}",
        tokens="results/tokens/v{vocab}",
        code=STAGES.code("normalize"),
    output:
        "results/normalized/{model}-v{vocab}.csv",
    params:
        file=PARAMS_FILE,
        settings=settings_of("normalize"),
    log:
        "logs/normalize/{model}-v{vocab}.log",
    shell:
        "vocabscale normalize --params {params.file:q} --run {input.run:q} --tokens {input.tokens:q} "
        "--out {output:q} --log {log:q}"


rule collect:
    input:
        runs=expand("results/runs/{run}", run=RUNS),
        normalized=expand("results/normalized/{run}.csv", run=RUNS),
        code=STAGES.code("collect"),
    output:
        "results/runs.csv",
    params:
        file=PARAMS_FILE,
        settings=settings_of("collect"),
    log:
        "logs/collect.log",
    shell:
        "vocabscale collect --params {params.file:q} --runs-dir results/runs "
        "--normalized-dir results/normalized --out {output:q} --log {log:q}"
