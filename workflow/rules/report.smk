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
        "vocabscale report --params {params.file} --estimates results/estimates "
        "--backtest {input.backtest} --runs {input.runs} --tokenization {input.tokenization} "
        "--downstream {input.downstream} --out {output} --log {log}"
