"""Stage group downstream: each finished run exported to Hugging Face and evaluated with
lm-evaluation-harness (`evaluate`: `vocabscale downstream`), the scores of the grid in one
table (`collect`: `vocabscale collect-downstream`)."""
