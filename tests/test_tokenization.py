"""Corpus preparation, tokenizers with exactly V entries, token arrays and the f(V) fit."""

import hashlib
import json
import logging
import re

import numpy as np
import pytest
from conftest import train_tokenizer_with_defaults
from tokenizers import Tokenizer

from vocabscale.corpus.shards import read_texts
from vocabscale.io import read_json, read_tokens
from vocabscale.tokenizer.bpe import END_OF_TEXT
from vocabscale.tokenizer.fit import fit_tokenization
from vocabscale.tokenizer.train import train_tokenizer


def test_corpus_splits_are_disjoint_and_counted_exactly(corpus_dir):
    stats = read_json(corpus_dir / "stats.json")
    train = [
        t for shard in sorted((corpus_dir / "train").glob("*.parquet")) for t in read_texts(shard)
    ]
    validation = list(read_texts(corpus_dir / "validation.parquet"))
    assert stats["splits"]["train"] == {"documents": len(train), "characters": sum(map(len, train))}
    assert stats["splits"]["validation"]["characters"] == sum(map(len, validation))
    assert not set(train) & set(validation)


@pytest.mark.parametrize("vocab_size", [320, 640, 1280])
def test_tokenizer_has_exactly_v_entries(tokenized, vocab_size):
    tokenizer = Tokenizer.from_file(
        str(tokenized[vocab_size].parent / f"v{vocab_size}" / "tokenizer.json")
    )
    assert tokenizer.get_vocab_size() == vocab_size
    assert tokenizer.token_to_id(END_OF_TEXT) == 0
    text = "Byte-level BPE round-trips any text: naïve café — 東京 🙂"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_tokenizer_training_is_deterministic_and_logs_time_and_memory(corpus_dir, tmp_path, caplog):
    """The same bytes every time, whatever the batches the sample is fed in (so DVC need not
    rerun the tokenizers when tokenizer.batch_documents changes)."""
    caplog.set_level(logging.INFO)
    digests = []
    for attempt, batch_documents in enumerate((1000, 7)):
        out = tmp_path / f"{attempt}.json"
        train_tokenizer(corpus_dir / "tokenizer_sample.parquet", 500, out, 2, batch_documents)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    sample = read_json(corpus_dir / "stats.json")["splits"]["tokenizer_sample"]["characters"]
    assert re.search(
        rf"V=500 trained on {sample} characters in [\d.]+ s \(\d+ characters/s, .*\), "
        r"peak RSS [1-9]\d* MiB",
        caplog.text,
    )


def test_a_vocabulary_the_sample_cannot_fill_is_an_error(corpus_dir, tmp_path):
    with pytest.raises(ValueError, match="supports only"):
        train_tokenizer_with_defaults(
            corpus_dir / "tokenizer_sample.parquet", 2_000_000, tmp_path / "t.json"
        )
    assert not (tmp_path / "t.json").exists()


def test_token_arrays_match_the_tokenizer(tokenized, corpus_dir):
    tokens_dir = tokenized[640]
    stats = read_json(tokens_dir / "stats.json")
    assert stats["dtype"] == "uint16"
    validation = read_tokens(tokens_dir / "validation.bin", 640)
    assert len(validation) == stats["splits"]["validation"]["tokens"]
    tokenizer = Tokenizer.from_file(str(tokens_dir.parent / "v640" / "tokenizer.json"))
    first = next(read_texts(corpus_dir / "validation.parquet"))
    expected = [0, *tokenizer.encode(first).ids]  # every document starts with end-of-text
    assert validation[: len(expected)].tolist() == expected
    counts = np.load(tokens_dir / "unigram_counts.npy")
    assert counts.sum() == stats["splits"]["train"]["tokens"] and len(counts) == 640
    for split in ("train", "validation"):  # the content digest training keys its resume on
        content = (tokens_dir / f"{split}.bin").read_bytes()
        assert stats["splits"][split]["sha256"] == hashlib.sha256(content).hexdigest()


def test_tokens_per_character_falls_as_v_grows(tokenized, tmp_path):
    fit = fit_tokenization(
        [tokenized[v] / "stats.json" for v in (320, 640, 1280)], tmp_path / "fit.json"
    )
    measured = [p["tokens_per_character"] for p in fit["points"]]
    assert measured == sorted(measured, reverse=True)
    assert fit["max_abs_residual"] < 1e-9  # three points, three coefficients
    saved = json.loads((tmp_path / "fit.json").read_text())
    assert saved["a"] == fit["a"]
