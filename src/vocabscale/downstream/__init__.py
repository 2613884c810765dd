"""Stage group downstream: each finished run exported to Hugging Face and evaluated with
lm-evaluation-harness (command `evaluate`: `vocabscale downstream`; work `harness`), the scores
of the grid in one table (`collect`: `vocabscale collect-downstream`; `grid_table`)."""

#: What each run's record says about the run, for the scores table: identity, size, compute.
RUN_COLUMNS = (
    "run_id",
    "model",
    "vocab_size",
    "d_model",
    "non_vocab_params",
    "vocab_params",
    "train_tokens",
    "flops",
)
