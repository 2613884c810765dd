"""Corpus preparation, tokenizers with exactly V entries, token arrays and the f(V) fit."""

import copy
import hashlib
import json
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    REPO,
    files_of,
    subprocess_env,
    tokenizer_settings,
    train_tokenizer_with_defaults,
)
from tokenizers import Tokenizer

from vocabscale.config import validate_params
from vocabscale.corpus.shards import read_texts, train_shards
from vocabscale.corpus.split import prepare_corpus
from vocabscale.io import OUTPUT_MARKER, read_json, read_tokens
from vocabscale.tokenizer import arrays as arrays_module
from vocabscale.tokenizer import resume as resume_module
from vocabscale.tokenizer.bpe import END_OF_TEXT
from vocabscale.tokenizer.fitting import fit_tokenization
from vocabscale.tokenizer.one_job import tokenize_corpus
from vocabscale.tokenizer.parts import gather_parts, tokenize_part
from vocabscale.tokenizer.resume import PartialWorkError
from vocabscale.tokenizer.training import train_tokenizer


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


def test_tokens_per_character_falls_as_v_grows(tokenized):
    fit = fit_tokenization([read_json(tokenized[v] / "stats.json") for v in (1280, 320, 640)])
    assert [p["vocab_size"] for p in fit["points"]] == [320, 640, 1280]
    measured = [p["tokens_per_character"] for p in fit["points"]]
    assert measured == sorted(measured, reverse=True)
    assert fit["max_abs_residual"] < 1e-9  # three points, three coefficients


# --- tokenization as parallel jobs: parts of the training shards, then a gather -----------


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, tiny_params_dict) -> tuple[Path, Path]:
    """A real corpus in 6 training shards, and a tokenizer trained on it."""
    params = validate_params(copy.deepcopy(tiny_params_dict))
    params["corpus"]["shard_characters"] = 50_000
    root = tmp_path_factory.mktemp("sharded")
    prepare_corpus(params["corpus"], root / "corpus")
    assert len(train_shards(root / "corpus")) == 6
    tokenizer = root / "tokenizer.json"
    train_tokenizer_with_defaults(root / "corpus/tokenizer_sample.parquet", 640, tokenizer)
    return root / "corpus", tokenizer


def tokenize_in_parts(corpus: Path, tokenizer: Path, root: Path, parts: int) -> list[Path]:
    """Every part job of `parts`, one after the other."""
    part_dirs = [root / f"part{part}" for part in range(parts)]
    for part, directory in enumerate(part_dirs):
        tokenize_part(corpus, tokenizer, directory, part, parts, tokenizer_settings())
    return part_dirs


@pytest.mark.parametrize("parts", [3, 4, 9])
def test_parts_and_gather_write_the_bytes_of_one_job(sharded, tmp_path, parts):
    """Every file of the token directory, arrays, unigram counts and stats.json (the digests
    training keys its resume on, the validation's UTF-8 bytes) byte for byte; 9 parts of 6
    shards leave three parts empty."""
    corpus, tokenizer = sharded
    tokenize_corpus(corpus, tokenizer, tmp_path / "one", tokenizer_settings())
    part_dirs = tokenize_in_parts(corpus, tokenizer, tmp_path, parts)
    groups = [read_json(directory / "part.json")["shards"] for directory in part_dirs]
    assert [name for group in groups for name in group] == [
        path.name for path in train_shards(corpus)
    ]
    gather_parts(corpus, tokenizer, part_dirs, tmp_path / "gathered", tokenizer_settings())
    one, gathered = files_of(tmp_path / "one"), files_of(tmp_path / "gathered")
    assert set(one) == {"train.bin", "validation.bin", "unigram_counts.npy", "stats.json"} | {
        OUTPUT_MARKER
    }
    assert gathered == one


def test_gather_refuses_parts_it_cannot_use(sharded, tmp_path):
    """A missing part, a part of another tokenizer, a cut array: an error naming the file,
    and no token directory."""
    corpus, tokenizer = sharded
    part_dirs = tokenize_in_parts(corpus, tokenizer, tmp_path, 3)
    out = tmp_path / "tokens"

    def gather(dirs):
        gather_parts(corpus, tokenizer, dirs, out, tokenizer_settings())

    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'nowhere/part.json'}")):
        gather([*part_dirs[:2], tmp_path / "nowhere"])
    with pytest.raises(ValueError, match=re.escape(f"{part_dirs[1]}/part.json: part 1 of 3")):
        gather(part_dirs[1:])
    other = tmp_path / "other.json"
    train_tokenizer_with_defaults(corpus / "tokenizer_sample.parquet", 320, other)
    tokenize_part(corpus, other, tmp_path / "foreign", 2, 3, tokenizer_settings())
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path}/foreign/part.json: the part was")):
        gather([*part_dirs[:2], tmp_path / "foreign"])
    array = part_dirs[0] / "train.bin"
    array.write_bytes(array.read_bytes()[:-2])
    with pytest.raises(ValueError, match=re.escape(f"{array}: not the")):
        gather(part_dirs)
    assert not out.exists()


# --- partial work: never lost, never removed behind a person's back ------------------------


class Interrupted(Exception):
    pass


def partial_work(corpus: Path, tokenizer: Path, out: Path, monkeypatch, batches: int) -> Path:
    """The partial directory of `out` as a tokenization stopped after `batches` batches
    leaves it."""
    real_encode, calls = arrays_module.encode, []

    def encode(tokenizer, texts):
        calls.append(1)
        if len(calls) > batches:
            raise Interrupted
        return real_encode(tokenizer, texts)

    with monkeypatch.context() as patch:
        patch.setattr(arrays_module, "encode", encode)
        with pytest.raises(Interrupted):
            settings = tokenizer_settings(batch_documents=4, checkpoint_seconds=0)
            tokenize_corpus(corpus, tokenizer, out, settings)
    work = out.parent / f".{out.name}.partial"
    assert (work / "progress.json").exists()
    return work


def tree(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        (lambda work: (work / "progress.json").write_text('{"fingerprint": "ab'), "not valid JSON"),
        (lambda work: (work / "progress.json").write_text("{}"), "not a progress record"),
        (lambda work: (work / "progress.json").unlink(), "missing"),
        (lambda work: (work / "train.bin").write_bytes(b""), "shorter than the"),
    ],
    ids=["torn", "foreign", "missing", "array cut"],
)
def test_partial_work_that_cannot_be_read_is_an_error_and_kept(
    corpus_dir, tokenized, tmp_path, monkeypatch, damage, cause
):
    """The issue's case: an unreadable progress.json removed all partial work. Now: an error
    naming the file and the cause, and how to start over; every byte kept."""
    tokenizer = tokenized[640].parent / "v640/tokenizer.json"
    out = tmp_path / "v640"
    work = partial_work(corpus_dir, tokenizer, out, monkeypatch, batches=5)
    damage(work)
    before = tree(work)
    with pytest.raises(PartialWorkError) as refused:
        tokenize_corpus(corpus_dir, tokenizer, out, tokenizer_settings())
    message = str(refused.value)
    assert message.startswith(
        str(work / ("train.bin" if cause == "shorter than the" else "progress.json"))
    )
    assert cause in message and f"to start over, delete it (rm -r {work})" in message
    assert tree(work) == before and not out.exists()


def test_unreadable_unigram_counts_are_an_error_and_kept(
    corpus_dir, tokenized, tmp_path, monkeypatch
):
    tokenizer = tokenized[640].parent / "v640/tokenizer.json"
    out = tmp_path / "v640"
    train_batches = -(-read_json(corpus_dir / "stats.json")["splits"]["train"]["documents"] // 4)
    work = partial_work(corpus_dir, tokenizer, out, monkeypatch, batches=train_batches + 1)
    assert list(json.loads((work / "progress.json").read_text())["done"]) == ["train"]
    (work / "unigram_counts.npy").write_bytes(b"")  # what a power loss could leave before
    with pytest.raises(
        PartialWorkError, match=re.escape(f"{work}/unigram_counts.npy: cannot be read")
    ):
        tokenize_corpus(corpus_dir, tokenizer, out, tokenizer_settings())
    assert (work / "train.bin").stat().st_size > 0


def test_unigram_counts_are_durable_before_the_record_says_the_split_is_done(
    corpus_dir, tokenized, tmp_path, monkeypatch, disk_events
):
    """Every fsync and rename in order: the counts' bytes are synced and renamed into place
    before the progress record that first has the training split done is written."""
    real_save = resume_module.Progress.save

    def save(progress, path: Path) -> None:
        disk_events.append(("record", ",".join(progress.done)))
        real_save(progress, path)

    monkeypatch.setattr(resume_module.Progress, "save", save)
    tokenizer = tokenized[320].parent / "v320/tokenizer.json"
    tokenize_corpus(corpus_dir, tokenizer, tmp_path / "v320", tokenizer_settings())
    done = disk_events.index(("record", "train"))
    counts = [i for i, (kind, what) in enumerate(disk_events) if kind == "rename"
              and what.endswith("/unigram_counts.npy")]  # fmt: skip
    assert counts and counts[0] < done, disk_events
    temporary = disk_events[counts[0]][1].split(" -> ")[0]
    assert ("fsync", temporary) in disk_events[: counts[0]]


KILLED_WHILE_PUBLISHING = """
import os, signal, sys
from pathlib import Path
from vocabscale import io
from vocabscale.tokenizer import one_job
from vocabscale.tokenizer.batching import Batching
real_fsync = io.fsync
def fsync(path):
    if Path(path).name == "train.bin" and Path(path).parent.name.endswith(".partial"):
        if (Path(path).parent / "stats.json").exists():  # the publish's sync of the arrays
            os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(path)
io.fsync = fsync
one_job.tokenize_corpus(sys.argv[1], sys.argv[2], sys.argv[3], Batching(64, 10**9, 0))
"""


def test_a_kill_while_publishing_loses_no_work(corpus_dir, tokenized, tmp_path):
    """SIGKILL while the finished arrays are synced before the rename (long, on a large
    corpus): the progress record is still there, so the next run publishes at once, encoding
    nothing again."""
    reference = tokenized[640]
    tokenizer = reference.parent / "v640/tokenizer.json"
    out = tmp_path / "tokens" / "v640"
    work = out.parent / ".v640.partial"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_PUBLISHING, str(corpus_dir), str(tokenizer), str(out)],
        env=subprocess_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not out.exists() and (work / "progress.json").exists()
    command = ["vocabscale", "tokenize", "--params", str(REPO / "params.yaml")]
    command += ["--corpus", str(corpus_dir), "--tokenizer", str(tokenizer), "--out", str(out)]
    again = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        "resuming partial work" in again.stderr
        and "train and validation: 0 characters" in again.stderr
    )
    assert not work.exists()
    for name in ("train.bin", "validation.bin", "unigram_counts.npy", "stats.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
