"""Unigram normalization: L_u is 0 for a model that predicts the unigram distribution and
negative for a better one."""

import contextlib
import math

import numpy as np
import pandas as pd
import pytest
import torch

from vocabscale.accounting import ModelShape
from vocabscale.config import defaults
from vocabscale.corpus.shards import read_texts
from vocabscale.io import read_json, read_tokens
from vocabscale.runs.normalized_loss import (
    normalize_evals,
    normalize_run,
    unigram_cross_entropy_sum,
    unigram_log_probs,
)
from vocabscale.sweep import ModelSpec
from vocabscale.train.config import TrainConfig
from vocabscale.train.evaluate import EvalBatching, evaluate
from vocabscale.train.loop import train_run
from vocabscale.train.model import Llama

SHAPE = ModelShape(n_layer=2, n_head=2, d_model=32, ffn=64)


def unigram_model(log_probs: np.ndarray, context: int) -> Llama:
    """A real Llama whose output distribution is p_uni for every input: every token embeds to
    the same vector, the blocks add nothing, and the head reads that vector back as log p_uni."""
    model = Llama(SHAPE, vocab_size=len(log_probs), context=context)
    d = SHAPE.d_model
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.embedding.weight[:, 0] = 1.0
        model.final_norm.weight.fill_(1.0)
        for block in model.blocks:
            block.attention_norm.weight.fill_(1.0)
            block.mlp_norm.weight.fill_(1.0)
        # the residual stream is e_0 everywhere; RMSNorm turns it into sqrt(d) e_0
        model.output.weight[:, 0] = torch.from_numpy(log_probs).float() / math.sqrt(d)
    return model


def test_unigram_probabilities_are_smoothed_and_sum_to_one():
    counts = np.array([10, 0, 5, 0])
    log_probs = unigram_log_probs(counts, pseudocount=1.0)
    assert np.exp(log_probs).sum() == pytest.approx(1.0)
    assert np.all(np.isfinite(log_probs))  # unseen tokens keep a non-zero probability
    assert np.exp(log_probs[1]) == pytest.approx(1 / 19)


def test_a_unigram_model_has_zero_normalized_loss(tokenized):
    tokens_dir = tokenized[640]
    stats = read_json(tokens_dir / "stats.json")
    validation = np.asarray(read_tokens(tokens_dir / "validation.bin", 640))
    log_probs = unigram_log_probs(np.load(tokens_dir / "unigram_counts.npy"), 1.0)
    model = unigram_model(log_probs, context=32)
    ce_sum, count = evaluate(
        model,
        validation,
        EvalBatching(context=32, batch_size=8, chunk_tokens=100),
        contextlib.nullcontext(),
    )
    assert count == len(validation) - 1
    evals = pd.DataFrame({"eval_ce_sum": [ce_sum], "eval_tokens": [count]})
    unigram_sum = unigram_cross_entropy_sum(validation[1:], log_probs)
    split = stats["splits"]["validation"]
    out = normalize_evals(evals, unigram_sum, count, split["characters"], split["utf8_bytes"])
    assert abs(out["loss_u"].iloc[0]) < 1e-6
    assert out["loss"].iloc[0] == pytest.approx(out["unigram_loss"].iloc[0], abs=1e-6)


def test_a_trained_model_has_negative_normalized_loss_and_sane_bpc_and_bpb(
    tokenized, corpus_dir, tmp_path
):
    config = TrainConfig.from_params(
        {
            **defaults("train"),
            "seed": 0,
            "context": 32,
            "batch_tokens": 1024,
            "micro_batch_size": 32,
            "lr": 1e-2,
            "evals": 2,
            "head_chunk_tokens": 4096,
            "device": "cpu",
            "precision": "fp32",
        }
    )
    spec = ModelSpec("t", SHAPE, 96 * 1024, gpus=1, nodes=1, parallel="auto")
    train_run(spec, tokenized[640], config, tmp_path / "run", tmp_path / "ckpt")
    out = normalize_run(tmp_path / "run", tokenized[640], 1.0)
    assert (out["loss_u"] < 0).all()
    assert out["loss_u"].iloc[-1] < out["loss_u"].iloc[0]  # it keeps learning
    # bits per character: total nats over characters, in bits; between 0 and 8 for text. The
    # end-of-text targets are in the numerator, so each counts as one character (the document
    # separator) in the denominator too
    stats = read_json(tokenized[640] / "stats.json")
    validation = np.asarray(read_tokens(tokenized[640] / "validation.bin", 640))
    separators = int(np.sum(validation[1:] == 0))
    assert separators == stats["splits"]["validation"]["documents"] - 1 > 0
    characters = stats["splits"]["validation"]["characters"] + separators
    expected = out["eval_ce_sum"] / (characters * math.log(2))
    assert np.allclose(out["bpc"], expected)
    assert ((out["bpc"] > 0) & (out["bpc"] < 8)).all()
    # bits per byte: the same total over the UTF-8 bytes of the evaluation text, which are
    # at least its characters (more where the text is not ASCII), each separator one byte
    validation = list(read_texts(corpus_dir / "validation.parquet"))
    utf8_bytes = sum(len(text.encode("utf-8")) for text in validation)
    assert stats["splits"]["validation"]["utf8_bytes"] == utf8_bytes
    assert sum(map(len, validation)) == stats["splits"]["validation"]["characters"]
    expected = out["eval_ce_sum"] / ((utf8_bytes + separators) * math.log(2))  # as for bpc
    assert np.allclose(out["bpb"], expected)
    assert (out["bpb"] <= out["bpc"]).all()


def test_records_from_another_tokenizer_are_refused():
    evals = pd.DataFrame({"eval_ce_sum": [10.0], "eval_tokens": [100]})
    with pytest.raises(ValueError, match="do not belong together"):
        normalize_evals(evals, 5.0, eval_tokens=99, eval_characters=400, eval_bytes=420)
