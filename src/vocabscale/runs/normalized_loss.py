"""Per-checkpoint loss, unigram-normalized loss L_u, bits per character and bits per byte
(of the evaluation text's UTF-8, the tokenizer-independent measure levanter and nanochat
report): what makes runs of different V comparable (docs/design.md, section 3)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from vocabscale.io import read_json, read_tokens
from vocabscale.records import field


def unigram_log_probs(counts: np.ndarray, pseudocount: float) -> np.ndarray:
    """log p_uni for every token id, additively smoothed."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.log(counts + pseudocount) - math.log(counts.sum() + pseudocount * len(counts))


def unigram_cross_entropy_sum(targets: np.ndarray, log_probs: np.ndarray) -> float:
    """-sum_i log p_uni(t_i) over the target tokens, in nats."""
    return float(-np.sum(log_probs[np.asarray(targets, dtype=np.int64)], dtype=np.float64))


#: The end-of-text token's id in every tokenizer of the pipeline.
END_OF_TEXT_ID = 0


def end_of_text_targets(validation: np.ndarray) -> int:
    """End-of-text tokens among the evaluated targets (every token but the first)."""
    return int(np.count_nonzero(np.asarray(validation[1:]) == END_OF_TEXT_ID))


def normalize_evals(
    evals: pd.DataFrame,
    unigram_ce_sum: float,
    eval_tokens: int,
    eval_characters: int,
    eval_bytes: int,
) -> pd.DataFrame:
    """Add loss (nats/token), loss_u, bpc and bpb to evaluation records; `eval_characters` and
    `eval_bytes` count what the targets encode: the text's characters (bytes) and one per
    end-of-text target."""
    if (evals["eval_tokens"] != eval_tokens).any():
        raise ValueError(
            f"evaluation records count {sorted(set(evals['eval_tokens']))} targets, but the "
            f"validation array has {eval_tokens}: the run and the tokens do not belong together"
        )
    out = evals.copy()
    out["loss"] = out["eval_ce_sum"] / eval_tokens
    out["loss_u"] = (out["eval_ce_sum"] - unigram_ce_sum) / eval_tokens
    out["bpc"] = out["eval_ce_sum"] / (eval_characters * math.log(2))
    out["bpb"] = out["eval_ce_sum"] / (eval_bytes * math.log(2))
    out["unigram_loss"] = unigram_ce_sum / eval_tokens
    return out


def normalize_run(run_dir: str | Path, tokens_dir: str | Path, pseudocount: float) -> pd.DataFrame:
    """One run's evaluations with loss, L_u, bpc and bpb, from its run directory and the token
    directory of its V."""
    run_dir, tokens_dir = Path(run_dir), Path(tokens_dir)
    run_path, stats_path = run_dir / "run.json", tokens_dir / "stats.json"
    run, stats = read_json(run_path), read_json(stats_path)
    vocab_size = field(stats, stats_path, "vocab_size")
    if vocab_size != field(run, run_path, "vocab_size"):
        raise ValueError(
            f"{run_dir} was trained with V={run['vocab_size']}, {tokens_dir} holds V={vocab_size}"
        )
    validation = read_tokens(tokens_dir / "validation.bin", vocab_size)
    log_probs = unigram_log_probs(np.load(tokens_dir / "unigram_counts.npy"), pseudocount)
    unigram_sum = unigram_cross_entropy_sum(validation[1:], log_probs)
    evals = pd.read_csv(run_dir / "evals.csv")
    split = field(stats, stats_path, "splits", "validation")
    if "utf8_bytes" not in split:
        raise ValueError(
            f"{tokens_dir}/stats.json has no UTF-8 byte count of the validation text (written "
            "by an older tokenize): run the tokenize stage again"
        )
    separators = end_of_text_targets(validation)
    return normalize_evals(
        evals,
        unigram_sum,
        len(validation) - 1,
        field(split, stats_path, "characters") + separators,
        split["utf8_bytes"] + separators,
    )
