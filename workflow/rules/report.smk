rule report:
    input:
        estimates=expand(
            "results/estimates/{approach}.json",
            approach=APPROACHES,
        ),
        runs="results/runs.csv",
        tokenization="results/tokenization/fit.json",
        code=STAGES.code("report"),
    output:
        directory("results/report"),
    params:
        file=PARAMS_FILE,
        settings=settings_of("report"),
    log:
        "logs/report.log",
    shell:
        "vocabscale report --params {params.file} --estimates results/estimates "
        "--runs {input.runs} --tokenization {input.tokenization} --out {output} --log {log}"
