rule prepare_corpus:
    input:
        code=STAGES.code("prepare_corpus"),
    output:
        directory("results/corpus"),
    params:
        file=PARAMS_FILE,
        settings=settings_of("prepare_corpus"),
    threads: 4
    resources:
        **CPU_JOB_RESOURCES,
    log:
        "logs/prepare_corpus.log",
    shell:
        "vocabscale prepare-corpus --params {params.file} --out {output} --log {log}"
