rule normalize:
    input:
        run="results/runs/{model}-v{vocab}",
        tokens="results/tokens/v{vocab}",
    output:
        "results/normalized/{model}-v{vocab}.csv",
    params:
        file=PARAMS_FILE,
        section=PARAMS["normalize"],
    log:
        "logs/normalize/{model}-v{vocab}.log",
    shell:
        "vocabscale normalize --params {params.file} --run {input.run} --tokens {input.tokens} "
        "--out {output} --log {log}"


rule collect:
    input:
        expand("results/runs/{run}", run=RUNS),
        expand("results/normalized/{run}.csv", run=RUNS),
    output:
        "results/runs.csv",
    params:
        file=PARAMS_FILE,
    log:
        "logs/collect.log",
    shell:
        "vocabscale collect --params {params.file} --runs-dir results/runs "
        "--normalized-dir results/normalized --out {output} --log {log}"
