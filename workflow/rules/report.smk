rule report:
    input:
        estimates=expand(
            "results/estimates/{approach}.json",
            approach=["isoflops", "derivative", "parametric"],
        ),
        runs="results/runs.csv",
        tokenization="results/tokenization/fit.json",
    output:
        directory("results/report"),
    params:
        section=PARAMS["report"],
    log:
        "logs/report.log",
    shell:
        "vocabscale report --params {PARAMS_FILE} --estimates results/estimates "
        "--runs {input.runs} --tokenization {input.tokenization} --out {output} --log {log}"
