rule prepare_corpus:
    input:
        code=STAGES.code("prepare_corpus"),
    output:
        directory("results/corpus"),
    params:
        file=PARAMS_FILE,
        settings=settings_of("prepare_corpus"),
    threads: CPU_JOBS["prepare_corpus"].threads
    resources:
        **cpu_job_resource_callables(PARAMS, "prepare_corpus"),
    log:
        "logs/prepare_corpus.log",
    shell:
        "vocabscale prepare-corpus --params {params.file:q} --out {output:q} --log {log:q}"
