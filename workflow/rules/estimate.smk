rule estimate:
    input:
        runs="results/runs.csv",
        tokenization="results/tokenization/fit.json",
    output:
        "results/estimates/{approach}.json",
    params:
        section=lambda wildcards: [
            PARAMS["estimate"][wildcards.approach],
            PARAMS["estimate"]["bootstrap"],
            PARAMS["estimate"]["tokenization"],
        ],
    wildcard_constraints:
        approach="isoflops|derivative|parametric",
    log:
        "logs/estimate/{approach}.log",
    shell:
        "vocabscale estimate-{wildcards.approach} --params {PARAMS_FILE} --runs {input.runs} "
        "--tokenization {input.tokenization} --out {output} --log {log}"
