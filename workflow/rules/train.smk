rule train:
    input:
        tokens="results/tokens/v{vocab}",
        code=STAGES.code("train"),
    output:
        directory("results/runs/{model}-v{vocab}"),
    params:
        file=PARAMS_FILE,
        settings=settings_of("train"),
    threads: max(1, PARAMS["train"]["threads"])
    resources:
        **train_resource_callables(PLAN, PARAMS),
    # a run longer than one job's time limit continues from its checkpoint on each retry
    # only the head process retries: inside a SLURM job (remote execution) a retry would rerun
    # the run in an allocation that its time limit, or its failure, already ended
    retries: train_retries(PLAN) if workflow.is_main_process else 0
    log:
        "logs/train/{model}-v{vocab}.log",
    shell:
        "vocabscale train --params {params.file:q} --model {wildcards.model} "
        "--tokens {input.tokens:q} --out {output:q} "
        "--checkpoint-dir results/checkpoints/{wildcards.model}-v{wildcards.vocab} --log {log:q}"
