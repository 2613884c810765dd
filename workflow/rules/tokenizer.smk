rule train_tokenizer:
    input:
        "results/corpus",
    output:
        "results/tokenizers/v{vocab}/tokenizer.json",
    params:
        file=PARAMS_FILE,
        section=PARAMS["tokenizer"]["min_frequency"],
    threads: 8
    resources:
        **CPU_JOB_RESOURCES,
    log:
        "logs/train_tokenizer/v{vocab}.log",
    shell:
        "vocabscale train-tokenizer --params {params.file} --corpus {input} "
        "--vocab-size {wildcards.vocab} --out {output} --log {log}"


rule tokenize:
    input:
        corpus="results/corpus",
        tokenizer="results/tokenizers/v{vocab}/tokenizer.json",
    output:
        directory("results/tokens/v{vocab}"),
    threads: 8
    resources:
        **CPU_JOB_RESOURCES,
    params:
        file=PARAMS_FILE,
    log:
        "logs/tokenize/v{vocab}.log",
    shell:
        "vocabscale tokenize --params {params.file} --corpus {input.corpus} "
        "--tokenizer {input.tokenizer} --out {output} --log {log}"


rule fit_tokenization:
    input:
        expand("results/tokens/v{vocab}", vocab=VOCAB_SIZES),
    output:
        "results/tokenization/fit.json",
    params:
        file=PARAMS_FILE,
    log:
        "logs/fit_tokenization.log",
    shell:
        "vocabscale fit-tokenization --params {params.file} --tokens-dir results/tokens "
        "--out {output} --log {log}"
