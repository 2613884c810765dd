"""The byte-level BPE both tokenizer stages use, and the thread pool of `tokenizers`.

Entry 0 of every tokenizer is the end-of-text token, then the 256 byte symbols, then the
merges learnt from the corpus's tokenizer sample.
"""

from __future__ import annotations

import logging
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

log = logging.getLogger(__name__)

#: The token that separates documents; it is entry 0 of every tokenizer.
END_OF_TEXT = "<|endoftext|>"


def build_trainer(vocab_size: int, min_frequency: int) -> trainers.BpeTrainer:
    return trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )


def empty_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def set_threads(threads: int | None) -> None:
    """Cap the threads of tokenizers' pool (RAYON_NUM_THREADS); 0 or None: every core.

    Only effective before the pool starts, i.e. before the first parallel call in the process,
    which is how the CLI uses it."""
    if threads:
        os.environ["RAYON_NUM_THREADS"] = str(threads)


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_parallelism() -> None:
    """Log how many threads `encode_batch` can use and warn when tokenizers' parallelism is
    switched off (TOKENIZERS_PARALLELISM=false, often set to silence fork warnings)."""
    cores = available_cores()
    threads = int(os.environ.get("RAYON_NUM_THREADS") or 0) or cores
    setting = os.environ.get("TOKENIZERS_PARALLELISM", "")
    if setting.strip().lower() in ("0", "false", "f", "off", "no", "n"):
        log.warning(
            "TOKENIZERS_PARALLELISM=%s: encode_batch runs on one core (unset it to use %d)",
            setting,
            cores,
        )
        return
    log.info("encode_batch on %d threads (%d cores available to this process)", threads, cores)
