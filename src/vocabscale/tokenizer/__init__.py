"""Stages train-tokenizer (command `train`, work `training`), tokenize (`tokenize`; `one_job`,
`parts`) and fit-tokenization (`fit`; `fitting`): one byte-level BPE per vocabulary size
(`bpe`), the corpus under each, and f(V) from their counts."""
