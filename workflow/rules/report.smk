rule report:
    input:
        estimates=expand(
            "results/estimates/{approach}.json",
            approach=["isoflops", "derivative", "parametric"],
        ),
        runs="results/runs.csv",
    output:
        directory("results/report"),
    params:
        section=PARAMS["report"],
    log:
        "logs/report.log",
    shell:
        "vocabscale report --params {PARAMS_FILE} --estimates results/estimates "
        "--runs {input.runs} --out {output} --log {log}"
