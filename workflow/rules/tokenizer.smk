# Tokenizer jobs first: they take seconds and hold every core, so once a training job runs they
# would wait for all of them; run first, they make every training job ready at once.
TOKENIZER_PRIORITY = 10


rule train_tokenizer:
    input:
        corpus="results/corpus",
        code=STAGES.code("train_tokenizer"),
    output:
        "results/tokenizers/v{vocab}/tokenizer.json",
    params:
        file=PARAMS_FILE,
        settings=settings_of("train_tokenizer"),
    threads: CPU_JOBS["train_tokenizer"].threads
    priority: TOKENIZER_PRIORITY
    resources:
        **cpu_job_resource_callables(PARAMS, "train_tokenizer"),
    log:
        "logs/train_tokenizer/v{vocab}.log",
    shell:
        "vocabscale train-tokenizer --params {params.file:q} --corpus {input.corpus:q} "
        "--vocab-size {wildcards.vocab} --out {output:q} --log {log:q}"


# tokenizer.tokenize_jobs > 1: each V is tokenized as that many part jobs, each a contiguous group
# of the training shards, then the tokenize job gathers them into the very directory (the same
# bytes) it writes alone. The parts are temporary: gone once gathered, and not needed again
# while the tokens are up to date. dvc.yaml keeps the one job (docs/design.md, On a cluster).
TOKENIZE_JOBS = PARAMS["tokenizer"]["tokenize_jobs"]
TOKEN_PARTS = "results/token_parts/v{vocab}/{part}"


rule tokenize_part:
    input:
        corpus="results/corpus",
        tokenizer="results/tokenizers/v{vocab}/tokenizer.json",
        code=STAGES.code("tokenize"),
    output:
        temp(directory(TOKEN_PARTS)),
    wildcard_constraints:
        part=r"\d+",
    threads: CPU_JOBS["tokenize_part"].threads
    priority: TOKENIZER_PRIORITY
    resources:
        **cpu_job_resource_callables(PARAMS, "tokenize_part"),
    params:
        file=PARAMS_FILE,
        settings=settings_of("tokenize"),
    log:
        "logs/tokenize/v{vocab}-part{part}.log",
    shell:
        "vocabscale tokenize --params {params.file:q} --corpus {input.corpus:q} "
        "--tokenizer {input.tokenizer:q} --part {wildcards.part} --out {output:q} --log {log:q}"


rule tokenize:
    input:
        corpus="results/corpus",
        tokenizer="results/tokenizers/v{vocab}/tokenizer.json",
        parts=(
            expand(TOKEN_PARTS, part=range(TOKENIZE_JOBS), allow_missing=True)
            if TOKENIZE_JOBS > 1
            else []
        ),
        code=STAGES.code("tokenize"),
    output:
        directory("results/tokens/v{vocab}"),
    threads: CPU_JOBS["tokenize"].threads
    priority: TOKENIZER_PRIORITY
    resources:
        **cpu_job_resource_callables(PARAMS, "tokenize"),
    params:
        file=PARAMS_FILE,
        settings=settings_of("tokenize"),
    log:
        "logs/tokenize/v{vocab}.log",
    shell:
        "vocabscale tokenize --params {params.file:q} --corpus {input.corpus:q} "
        "--tokenizer {input.tokenizer:q} "
        + ("--parts {input.parts:q} " if TOKENIZE_JOBS > 1 else "")
        + "--out {output:q} --log {log:q}"


rule fit_tokenization:
    input:
        tokens=expand("results/tokens/v{vocab}", vocab=VOCAB_SIZES),
        code=STAGES.code("fit_tokenization"),
    output:
        "results/tokenization/fit.json",
    params:
        file=PARAMS_FILE,
        settings=settings_of("fit_tokenization"),
    log:
        "logs/fit_tokenization.log",
    shell:
        "vocabscale fit-tokenization --params {params.file:q} --tokens-dir results/tokens "
        "--out {output:q} --log {log:q}"
