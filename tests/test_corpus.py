"""Real corpora: every input format, bad input, hub streaming, bounded reading, resumable
tokenization. All on real text (the builtin python-docs corpus) and real tokenizers."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from conftest import REPO, tokenizer_settings

import vocabscale
from vocabscale.config import read_yaml, validate_params
from vocabscale.corpus import shards as shards_module
from vocabscale.corpus import sources as sources_module
from vocabscale.corpus.duplicates import SeenDocuments, document_digest
from vocabscale.corpus.shards import read_texts, train_shards
from vocabscale.corpus.sources import python_docs
from vocabscale.corpus.split import is_validation, prepare_corpus
from vocabscale.io import read_json
from vocabscale.tokenizer import arrays as arrays_module
from vocabscale.tokenizer import resume as resume_module
from vocabscale.tokenizer.batching import read_batches
from vocabscale.tokenizer.one_job import tokenize_corpus


def corpus_section(tiny_params_dict: dict, source, **overrides) -> dict:
    params = dict(tiny_params_dict, corpus={**tiny_params_dict["corpus"], "source": source})
    params["corpus"].update(
        validation_fraction=0.1,
        validation_characters=10**9,
        tokenizer_sample_characters=20_000,
        max_characters=None,
        shard_characters=30_000,
    )
    params["corpus"].update(overrides)
    return validate_params(params)["corpus"]


@pytest.fixture(scope="module")
def documents() -> list[str]:
    """Real, distinct documents that survive every format unchanged: no blank lines (a paragraph
    is a document in .txt), no line breaks at the ends."""
    out = []
    for text in python_docs():
        lines = [line for line in text.split("\n") if line and not line.isspace()]
        text = "\n".join(lines).strip()
        if text and "\r" not in text and text not in out:
            out.append(text)
        if len(out) == 150:
            return out
    raise AssertionError("the builtin corpus has fewer than 150 documents")


def write_format(directory: Path, name: str, documents: list[str]) -> str:
    """The documents as one input format; returns the corpus.source for them."""
    directory.mkdir(parents=True)
    half = len(documents) // 2
    jsonl = [json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(documents)]
    if name == "jsonl":  # two files, one glob
        (directory / "a.jsonl").write_text("".join(jsonl[:half]))
        (directory / "b.jsonl").write_text("".join(jsonl[half:]))
        return str(directory / "*.jsonl")
    if name == "parquet":
        for part, chunk in (("a", documents[:half]), ("b", documents[half:])):
            table = pa.table({"id": list(range(len(chunk))), "text": chunk})
            pq.write_table(table, directory / f"{part}.parquet", row_group_size=20)
        return str(directory / "*.parquet")
    if name == "txt":
        (directory / "a.txt").write_text("\n\n".join(documents) + "\n")
        return str(directory / "a.txt")
    if name == "json-array":
        (directory / "a.json").write_text(json.dumps([{"text": d} for d in documents]))
        return str(directory / "a.json")
    if name == "jsonl.gz+bz2":  # compressed, two codecs, given as a list of globs
        (directory / "a.jsonl.gz").write_bytes(gzip.compress("".join(jsonl[:half]).encode()))
        (directory / "b.jsonl.bz2").write_bytes(bz2.compress("".join(jsonl[half:]).encode()))
        return [str(directory / "*.gz"), str(directory / "*.bz2")]
    if name == "txt.zst":  # two zstd frames in one file, as parallel compressors write them
        data = ("\n\n".join(documents) + "\n").encode()
        compressor = zstandard.ZstdCompressor()
        frames = compressor.compress(data[: len(data) // 2]) + compressor.compress(
            data[len(data) // 2 :]
        )
        (directory / "a.txt.zst").write_bytes(frames)
        return str(directory / "a.txt.zst")
    raise ValueError(name)


FORMATS = ["jsonl", "parquet", "txt", "json-array", "jsonl.gz+bz2", "txt.zst"]


def test_every_format_gives_identical_token_arrays(
    documents, tmp_path, tiny_params_dict, tokenized
):
    tokenizer = tokenized[640].parent / "v640" / "tokenizer.json"
    arrays = {}
    for name in FORMATS:
        source = write_format(tmp_path / "sources" / name, name, documents)
        corpus = tmp_path / "corpus" / name
        stats = prepare_corpus(corpus_section(tiny_params_dict, source), corpus)
        texts = [t for shard in train_shards(corpus) for t in read_texts(shard)]
        texts += list(read_texts(corpus / "validation.parquet"))
        assert sorted(texts) == sorted(documents), name
        assert stats["skipped"] == {"empty": 0, "non_utf8": 0, "malformed": 0, "too_long": 0}, name
        assert stats["train_shards"] > 1
        tokens = tmp_path / "tokens" / name
        tokenize_corpus(corpus, tokenizer, tokens, tokenizer_settings(batch_documents=7))
        arrays[name] = {
            file: (tokens / file).read_bytes()
            for file in ("train.bin", "validation.bin", "unigram_counts.npy", "stats.json")
        }
    reference = arrays.pop("jsonl")
    assert len(reference["train.bin"]) > 10_000
    for name, files in arrays.items():
        assert files == reference, name


BAD_JSONL = [
    b'{"text": "The first good document."}',
    b'{"text": "bad \xff byte"}',  # line 2: non_utf8
    b"",  # 3: empty (a blank line)
    b'{"text": ""}',  # 4: empty
    b'{"text": "   \\n "}',  # 5: empty (only whitespace)
    b'{"text": null}',  # 6: empty
    b'{"text": "cut off',  # 7: malformed (not JSON)
    b'["text", "a list"]',  # 8: malformed (not an object)
    b'{"body": "wrong field"}',  # 9: malformed
    b'{"text": 42}',  # 10: malformed (not a string)
    b'{"text": "lone \\ud800 surrogate"}',  # 11: non_utf8 (not valid Unicode)
    '{"text": "Second good one, naïve café 東京."}'.encode(),
    b'{"text": "Third good document, after all the bad ones."}',
]
GOOD = [
    "The first good document.",
    "Second good one, naïve café 東京.",
    "Third good document, after all the bad ones.",
]


@pytest.mark.parametrize("compressed", [False, True])
def test_bad_bytes_empty_and_malformed_lines_are_counted_and_named(
    tmp_path, tiny_params_dict, caplog, compressed, documents
):
    good = GOOD + documents[:20]
    lines = BAD_JSONL + [json.dumps({"text": text}).encode() for text in documents[:20]]
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / ("bad.jsonl.gz" if compressed else "bad.jsonl")
    path.write_bytes(gzip.compress(data) if compressed else data)
    caplog.set_level(logging.WARNING)
    corpus = corpus_section(tiny_params_dict, str(path), validation_fraction=0.5)
    stats = prepare_corpus(corpus, tmp_path / "corpus")
    assert stats["skipped"] == {"empty": 4, "non_utf8": 2, "malformed": 4, "too_long": 0}
    first = stats["first_skipped"]
    assert first["non_utf8"] == f"{path}:2: byte 14: invalid start byte"
    assert first["empty"] == f"{path}:3: blank line"
    assert first["malformed"].startswith(f"{path}:7: not JSON")
    for where in (f"{path}:2", f"{path}:3", f"{path}:7"):
        assert where in caplog.text  # the first offending line of each kind, in the log
    assert f"{path}:11" not in caplog.text  # later ones are counted, not logged
    splits = stats["splits"]
    assert splits["train"]["documents"] + splits["validation"]["documents"] == len(good)
    assert splits["train"]["characters"] + splits["validation"]["characters"] == sum(map(len, good))
    assert sorted(kept_documents(tmp_path / "corpus")) == sorted(good)


def test_exact_duplicates_are_dropped_before_the_split(tmp_path, tiny_params_dict, documents):
    """Planted copies of documents that went to validation, placed after its cap is reached
    (where they went to train, and were trained on), and of training documents: every text is
    kept once, no validation text is in train, the copies are counted."""
    hashes_to_validation = [is_validation(document_digest(d.encode()), 0.3) for d in documents]
    validation = [d for d, v in zip(documents, hashes_to_validation) if v]
    train = [d for d, v in zip(documents, hashes_to_validation) if not v]
    assert len(validation) > 10 and len(train) > 10
    copies = validation[:3] + train[:5] + validation[:1]
    path = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"text": d}) for d in [*documents, *copies]]
    path.write_text("\n".join(lines) + "\n")
    cap = sum(map(len, validation[:3]))  # validation closes after its first three documents
    corpus = corpus_section(
        tiny_params_dict, str(path), validation_fraction=0.3, validation_characters=cap
    )
    stats = prepare_corpus(corpus, tmp_path / "corpus")
    assert stats["duplicates"] == {
        "documents": len(copies),
        "characters": sum(map(len, copies)),
    }
    kept_validation = list(read_texts(tmp_path / "corpus" / "validation.parquet"))
    kept_train = [t for shard in train_shards(tmp_path / "corpus") for t in read_texts(shard)]
    assert kept_validation == validation[:3]
    assert not set(kept_train) & set(kept_validation)
    assert sorted(kept_train + kept_validation) == sorted(documents)


def test_seen_documents_remember_every_digest_across_merges():
    seen = SeenDocuments()
    seen.SMALLEST_MERGE = seen.merge_at = 1000
    digests = [document_digest(str(i).encode()) for i in range(5000)]
    assert all(seen.add(d) for d in digests)
    assert len(seen.merged) >= 4000  # most of them merged into the sorted array
    assert not any(seen.add(d) for d in digests)
    assert seen.add(document_digest(b"another"))


def test_a_giant_line_or_paragraph_is_skipped_without_being_read_whole(
    tmp_path, tiny_params_dict, documents, monkeypatch
):
    """A jsonl line, a text paragraph of many lines and a text line without a break, each over
    max_document_bytes: skipped and counted, the first named, and no read ever asks for more
    than the bound."""
    limit = 10_000
    small = [d for d in documents if len(d.encode()) < limit // 2][:40]
    jsonl, text = tmp_path / "a.jsonl", tmp_path / "b.txt"
    lines = [json.dumps({"text": d}) for d in small[:20]]
    lines.insert(3, json.dumps({"text": "x" * 50 * limit}))
    jsonl.write_text("\n".join(lines) + "\n")
    many_lines = "\n".join(["a line of a paragraph that never ends"] * limit)
    text.write_text("\n\n".join([*small[20:30], many_lines, *small[30:], "y" * 50 * limit]))
    largest: list[int] = []
    real_open = sources_module.open_binary

    class Recorded:
        def __init__(self, stream):
            self.stream = stream

        def readline(self, size: int = -1) -> bytes:
            assert size > 0, "a line read whole, however long"
            line = self.stream.readline(size)
            largest.append(len(line))
            return line

    @contextlib.contextmanager
    def recorded_open(path):
        with real_open(path) as stream:
            yield Recorded(stream)

    monkeypatch.setattr(sources_module, "open_binary", recorded_open)
    corpus = corpus_section(
        tiny_params_dict, [str(jsonl), str(text)], validation_fraction=0.5, max_document_bytes=limit
    )
    stats = prepare_corpus(corpus, tmp_path / "corpus")
    assert stats["skipped"]["too_long"] == 3
    assert stats["first_skipped"]["too_long"].startswith(f"{jsonl}:4: more than")
    assert max(largest) <= limit + 1
    assert sorted(kept_documents(tmp_path / "corpus")) == sorted(small)


def kept_documents(corpus: Path) -> list[str]:
    kept = [t for shard in train_shards(corpus) for t in read_texts(shard)]
    return kept + list(read_texts(corpus / "validation.parquet"))


def test_a_text_paragraph_with_bad_bytes_is_skipped_whole(tmp_path, tiny_params_dict, documents):
    path = tmp_path / "a.txt"
    more = "\n\n".join(documents[:20]).encode()
    path.write_bytes(
        more + b"\n\nGood paragraph one,\r\nover two lines.\r\n\r\n"
        b"A paragraph whose second line\nis br\xc3ken: \xe9\nand ends here.\n"
        b"\n   \n"
        b"Good paragraph two, the last one, with no final newline."
    )
    bad_line = more.count(b"\n") + 7  # the line with "br\xc3ken"
    corpus = corpus_section(tiny_params_dict, str(path), validation_fraction=0.5)
    stats = prepare_corpus(corpus, tmp_path / "corpus")
    assert stats["skipped"] == {"empty": 0, "non_utf8": 1, "malformed": 0, "too_long": 0}
    assert (
        stats["first_skipped"]["non_utf8"]
        == f"{path}:{bad_line}: byte 5: invalid continuation byte"
    )
    assert sorted(kept_documents(tmp_path / "corpus")) == sorted(
        [
            *documents[:20],
            "Good paragraph one,\r\nover two lines.",
            "Good paragraph two, the last one, with no final newline.",
        ]
    )


def test_a_hub_dataset_is_streamed_through_datasets(
    monkeypatch, tmp_path, tiny_params_dict, documents
):
    """The hub path without a network: `datasets.load_dataset` hands back a real streaming
    IterableDataset built locally; what the stage asks it for is checked."""
    import datasets

    texts = [*GOOD, "", None, "Fourth good document.", *documents[:20]]
    rows = {"text": texts, "url": [f"https://example.org/{i}" for i in range(len(texts))]}
    local = datasets.Dataset.from_dict(rows).to_iterable_dataset(num_shards=2)
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return local

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    corpus = corpus_section(
        tiny_params_dict,
        "hub:someone/corpus",
        hub_config="en",
        split="train",
        validation_fraction=0.5,
    )
    stats = prepare_corpus(corpus, tmp_path / "corpus")
    assert calls == [(("someone/corpus", "en"), {"split": "train", "streaming": True})]
    assert stats["skipped"] == {"empty": 2, "non_utf8": 0, "malformed": 0, "too_long": 0}
    assert stats["first_skipped"]["empty"] == "hub:someone/corpus row 3: empty text"
    splits = stats["splits"]
    assert splits["train"]["documents"] + splits["validation"]["documents"] == 24

    with pytest.raises(ValueError, match="no field 'content'"):
        prepare_corpus({**corpus, "text_field": "content"}, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_an_unreadable_source_is_an_error_before_anything_is_written(tmp_path, tiny_params_dict):
    with pytest.raises(FileNotFoundError, match=r"no file matches .*\*\.csv"):
        prepare_corpus(corpus_section(tiny_params_dict, str(tmp_path / "*.csv")), tmp_path / "c")
    (tmp_path / "a.csv").write_text("text\nhello\n")
    with pytest.raises(ValueError, match=r"cannot tell the format of .*a\.csv"):
        prepare_corpus(corpus_section(tiny_params_dict, str(tmp_path / "*")), tmp_path / "c")
    all_bad = tmp_path / "bad.jsonl"
    all_bad.write_text('{"body": "x"}\n' * 3)
    with pytest.raises(ValueError, match=r"split is empty.*bad\.jsonl:1: no field 'text'"):
        prepare_corpus(corpus_section(tiny_params_dict, str(all_bad)), tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_the_tokenizer_sample_is_bounded_exactly(corpus_dir, tiny_params_dict):
    stats = read_json(corpus_dir / "stats.json")
    cap = tiny_params_dict["corpus"]["tokenizer_sample_characters"]
    assert stats["splits"]["train"]["characters"] > cap
    sample = list(read_texts(corpus_dir / "tokenizer_sample.parquet"))
    assert sum(map(len, sample)) == stats["splits"]["tokenizer_sample"]["characters"] == cap
    train = [t for shard in train_shards(corpus_dir) for t in read_texts(shard)]
    assert sample[:-1] == train[: len(sample) - 1]  # a prefix of the training text
    assert train[len(sample) - 1].startswith(sample[-1])


def test_reading_from_any_position_gives_the_rest(tmp_path, monkeypatch, documents):
    """Resuming reads from a (file, row) position: row groups before it are skipped, and the
    documents after it come out exactly once."""
    monkeypatch.setattr(shards_module, "ROW_GROUP_CHARACTERS", 3000)
    paths = []
    for part in range(3):
        path = tmp_path / f"{part:05d}.parquet"
        writer = shards_module.TextWriter(path)
        for text in documents[part * 50 : (part + 1) * 50]:
            writer.add(text)
        writer.close()
        paths.append(path)
    assert pq.ParquetFile(paths[0]).num_row_groups > 3
    batches = list(read_batches(paths, (0, 0), batch_documents=9, batch_characters=5000))
    assert [t for b in batches for t in b.texts] == documents
    for i, batch in enumerate(batches):
        rest = read_batches(paths, batch.position, batch_documents=4, batch_characters=10**9)
        assert [t for b in rest for t in b.texts] == [t for b in batches[i + 1 :] for t in b.texts]


class Interrupted(Exception):
    pass


def test_an_interrupted_tokenization_resumes_byte_identical(
    corpus_dir, tokenized, tmp_path, monkeypatch, caplog
):
    reference = tokenized[640]
    tokenizer = reference.parent / "v640" / "tokenizer.json"
    out = tmp_path / "v640"
    work = tmp_path / ".v640.partial"
    real_encode = arrays_module.encode
    calls = []

    def failing_encode(tokenizer, texts):
        calls.append(len(texts))
        if len(calls) == 6:
            raise Interrupted
        return real_encode(tokenizer, texts)

    monkeypatch.setattr(arrays_module, "encode", failing_encode)
    with pytest.raises(Interrupted):
        tokenize_corpus(
            corpus_dir,
            tokenizer,
            out,
            tokenizer_settings(batch_documents=4, checkpoint_seconds=0),
        )
    assert not out.exists() and (work / "progress.json").exists()
    checkpoint = json.loads((work / "progress.json").read_text())
    assert checkpoint["documents"] == 4 * 5  # every batch written before the failure
    with open(work / "train.bin", "ab") as stream:  # written after the checkpoint: cut off
        stream.write(b"\x07" * (reference / "train.bin").stat().st_size)

    counted = []
    monkeypatch.setattr(
        arrays_module, "encode", lambda t, texts: counted.append(1) or real_encode(t, texts)
    )
    caplog.set_level(logging.INFO)
    tokenize_corpus(
        corpus_dir, tokenizer, out, tokenizer_settings(batch_documents=4, checkpoint_seconds=0)
    )
    assert "resuming partial work" in caplog.text
    total = read_json(corpus_dir / "stats.json")["splits"]
    batches = -(-total["train"]["documents"] // 4) + -(-total["validation"]["documents"] // 4)
    assert batches > 10
    assert len(counted) == batches - 5  # the first 5 batches were not encoded again
    assert not work.exists()
    for name in ("train.bin", "validation.bin", "unigram_counts.npy", "stats.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


KILLER = """
import os, signal, sys
from vocabscale.tokenizer import arrays, one_job
from vocabscale.tokenizer.batching import Batching
real_write, writes = arrays.SplitWriter.write, []
def write(self, batch, ids):
    writes.append(1)
    if len(writes) == int(sys.argv[4]):  # half a batch reaches the file, no checkpoint
        self.out.write(memoryview(b"\\x07" * 999))
        self.out.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(self, batch, ids)
arrays.SplitWriter.write = write
one_job.tokenize_corpus(sys.argv[1], sys.argv[2], sys.argv[3], Batching(4, 10**9, 0))
"""


def test_a_killed_tokenization_resumes_byte_identical(corpus_dir, tokenized, tmp_path):
    """SIGKILL in the middle of a batch, once in the train split and once in the validation
    split: no cleanup runs; the command run again finishes with the same bytes."""
    reference = tokenized[640]
    tokenizer = reference.parent / "v640" / "tokenizer.json"
    out = tmp_path / "tokens" / "v640"
    progress_path = out.parent / ".v640.partial" / "progress.json"
    env = dict(os.environ, PYTHONPATH=str(Path(vocabscale.__file__).parents[1]))
    train_batches = -(-read_json(corpus_dir / "stats.json")["splits"]["train"]["documents"] // 4)
    assert train_batches > 5
    for kill_at, expected_documents in ((4, 4 * 3), (train_batches - 3 + 1, None)):
        killed = subprocess.run(
            [sys.executable, "-c", KILLER, str(corpus_dir), str(tokenizer), str(out), str(kill_at)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert not out.exists()
        progress = json.loads(progress_path.read_text())
        if expected_documents:  # killed in the train split
            assert progress["split"] == "train" and progress["documents"] == expected_documents
        else:  # the train split finished, killed in the validation split
            assert list(progress["done"]) == ["train"]
            assert (progress_path.parent / "validation.bin").stat().st_size > 0
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    command = ["tokenize", "--corpus", str(corpus_dir), "--tokenizer", str(tokenizer)]
    finished = subprocess.run(
        [sys.executable, "-m", "vocabscale", *command, "--out", str(out), "--params", str(params)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "resuming partial work" in finished.stderr
    assert not progress_path.parent.exists()
    for name in ("train.bin", "validation.bin", "unigram_counts.npy", "stats.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_partial_work_for_another_tokenizer_is_discarded(
    corpus_dir, tokenized, tmp_path, monkeypatch, caplog
):
    out = tmp_path / "v"
    real_encode = arrays_module.encode

    def failing_encode(tokenizer, texts):
        raise Interrupted

    monkeypatch.setattr(arrays_module, "encode", failing_encode)
    with pytest.raises(Interrupted):
        tokenize_corpus(
            corpus_dir,
            tokenized[320].parent / "v320" / "tokenizer.json",
            out,
            tokenizer_settings(),
        )
    assert (tmp_path / ".v.partial" / "progress.json").exists()
    monkeypatch.setattr(arrays_module, "encode", real_encode)
    caplog.set_level(logging.INFO)
    tokenize_corpus(
        corpus_dir, tokenized[640].parent / "v640" / "tokenizer.json", out, tokenizer_settings()
    )
    assert "discarding partial work" in caplog.text and "changed since" in caplog.text
    for name in ("train.bin", "validation.bin", "stats.json"):
        assert (out / name).read_bytes() == (tokenized[640] / name).read_bytes(), name


@pytest.mark.parametrize("change", ["tokenizers version", "tokenize code"])
def test_partial_work_of_other_code_or_libraries_is_discarded(
    change, corpus_dir, tokenized, tmp_path, monkeypatch, caplog
):
    """Arrays encoded by another version of `tokenizers` or of the stage's code are not
    continued: the two parts of one array could differ."""
    out, tokenizer = tmp_path / "v", tokenized[320].parent / "v320" / "tokenizer.json"
    real_encode = arrays_module.encode
    monkeypatch.setattr(arrays_module, "encode", lambda *_: (_ for _ in ()).throw(Interrupted))
    with pytest.raises(Interrupted):
        tokenize_corpus(corpus_dir, tokenizer, out, tokenizer_settings())
    assert (tmp_path / ".v.partial" / "progress.json").exists()
    monkeypatch.setattr(arrays_module, "encode", real_encode)
    if change == "tokenizers version":
        monkeypatch.setattr(resume_module.tokenizers, "__version__", "0.0.1")
    else:  # the module that encodes as it would be after an edit: its file's bytes differ
        edited = tmp_path / "arrays.py"
        edited.write_text(Path(arrays_module.__file__).read_text() + "# an edit\n")
        monkeypatch.setattr(arrays_module, "__file__", str(edited))
    caplog.set_level(logging.INFO)
    tokenize_corpus(corpus_dir, tokenizer, out, tokenizer_settings())
    assert "discarding partial work" in caplog.text and "changed since" in caplog.text
    assert (out / "train.bin").read_bytes() == (tokenized[320] / "train.bin").read_bytes()


def test_the_resume_fingerprint_covers_the_code_of_the_stage(tmp_path, monkeypatch, corpus_dir):
    """The fingerprint reads every module of the tokenize stage (its code in dvc.yaml): an edit
    to any of them discards partial work and refuses parts made before it."""
    deps = read_yaml(REPO / "dvc.yaml")["stages"]["tokenize"]["deps"]
    code = {dep for dep in deps if dep.startswith("src/") and not dep.endswith("__init__.py")}
    assert {f"src/{name.replace('.', '/')}.py" for name in resume_module.STAGE_CODE} == code
    inputs, tokenizer = [corpus_dir / "validation.parquet"], tmp_path / "tokenizer.json"
    tokenizer.write_text("{}")
    unchanged = resume_module.fingerprint(inputs, tokenizer)
    for name in resume_module.STAGE_CODE:
        module = importlib.import_module(name)
        edited = tmp_path / f"{name}.py"
        edited.write_text(Path(module.__file__).read_text() + "# an edit\n")
        with monkeypatch.context() as patch:
            patch.setattr(module, "__file__", str(edited))
            assert resume_module.fingerprint(inputs, tokenizer) != unchanged, name
    assert resume_module.fingerprint(inputs, tokenizer) == unchanged


def test_preparing_twice_gives_identical_bytes(documents, tmp_path, tiny_params_dict):
    source = write_format(tmp_path / "source", "jsonl.gz+bz2", documents)
    outputs = []
    for attempt in range(2):
        out = tmp_path / f"corpus{attempt}"
        prepare_corpus(corpus_section(tiny_params_dict, source), out)
        outputs.append({str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.*")})
    assert len(outputs[0]) > 4 and outputs[0] == outputs[1]
