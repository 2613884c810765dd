rule estimate:
    input:
        runs="results/runs.csv",
        tokenization="results/tokenization/fit.json",
    output:
        "results/estimates/{approach}.json",
    params:
        file=PARAMS_FILE,
        section=lambda wildcards: [
            PARAMS["estimate"][wildcards.approach],
            PARAMS["estimate"]["bootstrap"],
            PARAMS["estimate"]["tokenization"],
            PARAMS["estimate"]["method"],
            PARAMS["report"]["compare_authors"],
        ],
    log:
        "logs/estimate/{approach}.log",
    shell:
        "vocabscale estimate-{wildcards.approach} --params {params.file} --runs {input.runs} "
        "--tokenization {input.tokenization} --out {output} --log {log}"
