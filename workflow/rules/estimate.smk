rule estimate:
    input:
        runs="results/runs.csv",
        tokenization="results/tokenization/fit.json",
        code=STAGES.code("estimate"),
    output:
        "results/estimates/{approach}.json",
    params:
        file=PARAMS_FILE,
        settings=settings_of("estimate"),
    log:
        "logs/estimate/{approach}.log",
    shell:
        "vocabscale estimate-{wildcards.approach} --params {params.file:q} --runs {input.runs:q} "
        "--tokenization {input.tokenization:q} --out {output:q} --log {log:q}"


rule backtest:
    input:
        runs="results/runs.csv",
        tokenization="results/tokenization/fit.json",
        code=STAGES.code("backtest"),
    output:
        directory("results/backtest"),
    params:
        file=PARAMS_FILE,
        settings=settings_of("backtest"),
    log:
        "logs/backtest.log",
    shell:
        "vocabscale backtest --params {params.file:q} --runs {input.runs:q} "
        "--tokenization {input.tokenization:q} --out {output:q} --log {log:q}"
