"""Stages train-tokenizer (`train`), tokenize (`tokenize`) and fit-tokenization (`fit`): one
byte-level BPE per vocabulary size (`bpe`), the corpus under each, and f(V) from their counts."""
