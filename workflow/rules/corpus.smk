rule prepare_corpus:
    output:
        directory("results/corpus"),
    params:
        section=PARAMS["corpus"],
    threads: 4
    resources:
        **CPU_JOB_RESOURCES,
    log:
        "logs/prepare_corpus.log",
    shell:
        "vocabscale prepare-corpus --params {PARAMS_FILE} --out {output} --log {log}"
