rule report:
    input:
        estimates=expand(
            "results/estimates/{approach}.json",
            approach=APPROACHES,
        ),
        backtest="results/backtest",
        runs="results/runs.csv",
        tokenization="results/tokenization/fit.json",
        downstream="results/downstream.csv",
        code=STAGES.code("report"),
    output:
        # `snakemake --report report.zip` shows the page, the tables and every figure
        report(
            directory("results/report"),
            patterns=["{name}.html", "{name}.md", "{name}.csv", "figures/{name}.png"],
            caption="../report/report.rst",
            category="Prediction report",
        ),
    params:
        file=PARAMS_FILE,
        settings=settings_of("report"),
    log:
        "logs/report.log",
    shell:
        "vocabscale report --params {params.file:q} --estimates results/estimates "
        "--backtest {input.backtest:q} --runs {input.runs:q} "
        "--tokenization {input.tokenization:q} --downstream {input.downstream:q} "
        "--out {output:q} --log {log:q}"
