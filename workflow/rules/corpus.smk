rule prepare_corpus:
    output:
        directory("results/corpus"),
    params:
        file=PARAMS_FILE,
        section=PARAMS["corpus"],
    threads: CPU_JOBS["prepare_corpus"].threads
    resources:
        **cpu_job_resource_callables(PARAMS, "prepare_corpus"),
    log:
        "logs/prepare_corpus.log",
    shell:
        "vocabscale prepare-corpus --params {params.file} --out {output} --log {log}"
