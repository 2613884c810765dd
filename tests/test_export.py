"""`vocabscale export-hf`: a trained run loads in transformers with no extra code and computes
the same logits; its tokenizer gives the pipeline's ids and end-of-text as special token."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
import transformers
from conftest import run_in
from tokenizers import Tokenizer

from vocabscale.accounting import ModelShape
from vocabscale.corpus.shards import read_texts
from vocabscale.export import export_run, hf_name, rotary_rows_to_half_split
from vocabscale.io import read_json, read_tokens
from vocabscale.tokenizer.bpe import END_OF_TEXT
from vocabscale.train.model import Llama

#: Text a tokenizer must give back as it was: spaces, tabs, newlines, scripts, emoji, a
#: zero-width space, the end-of-text token inside text, and nothing.
EDGE_CASES = [
    "  two leading spaces",
    "trailing space ",
    "double  space\tand tab\nand newline\n\n",
    "é ß 漢字 🙂 zero\u200bwidth",
    f"a{END_OF_TEXT}b",
    " . , ! ?",
    "x .",
    "",
]


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    return export_run(
        trained_run,
        trained_run.parents[1] / "tokenizers/v640/tokenizer.json",
        tmp_path_factory.mktemp("hf") / "t-v640",
    )


def vocabscale_model(run_dir) -> Llama:
    run = read_json(run_dir / "run.json")
    shape = ModelShape(run["n_layer"], run["n_head"], run["d_model"], run["ffn"])
    model = Llama(shape, run["vocab_size"], run["context"])
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    return model.eval()


def test_the_exported_model_computes_the_same_logits(exported, trained_run, tokenized):
    hf = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    assert not hf.config.tie_word_embeddings
    ours = vocabscale_model(trained_run)
    validation = np.asarray(read_tokens(tokenized[640] / "validation.bin", 640), np.int64)
    validation = torch.from_numpy(validation)
    batch = validation[: 4 * 32].view(4, 32)  # four sequences of the training context
    with torch.no_grad():
        expected = ours.output(ours(batch))
        logits = hf(input_ids=batch).logits
    assert expected.abs().max() > 1.0  # a trained model's logits, not near-zero ones
    assert (logits - expected).abs().max().item() <= 1e-5


def test_without_the_rotary_reordering_the_logits_would_differ(trained_run):
    """The reordering is needed: the same weights in vocabscale's own row order give other
    attention scores in transformers' rotary layout."""
    weights = torch.load(trained_run / "model.pt", weights_only=True)
    wq = weights["blocks.0.attention.wq.weight"]
    reordered = rotary_rows_to_half_split(wq, n_head=2)
    assert not torch.equal(reordered, wq)
    assert torch.equal(reordered[:8], wq[0:16:2])  # head 0: its even rows first
    assert hf_name("blocks.1.attention.wq.weight") == "model.layers.1.self_attn.q_proj.weight"


def test_the_exported_tokenizer_round_trips_text(exported, corpus_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    raw = Tokenizer.from_file(str(exported / "tokenizer.json"))
    assert tokenizer.is_fast
    for name in ("eos", "bos", "pad", "unk"):
        assert getattr(tokenizer, f"{name}_token") == END_OF_TEXT
        assert getattr(tokenizer, f"{name}_token_id") == 0
    assert len(tokenizer) == 640  # no token added beyond the model's vocabulary
    texts = [*list(read_texts(corpus_dir / "validation.parquet"))[:30], *EDGE_CASES]
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert ids == raw.encode(text, add_special_tokens=False).ids  # nothing prepended
        assert tokenizer.decode(ids) == text
    assert tokenizer(f"a{END_OF_TEXT}b")["input_ids"][1] == 0


def test_the_command_finds_the_runs_tokenizer_and_refuses_another(trained_run, tmp_path):
    out = tmp_path / "hf"
    run_in(tmp_path, "vocabscale", "export-hf", "--run", str(trained_run), "--out", str(out))
    config = read_json(out / "config.json")
    assert (config["vocab_size"], config["max_position_embeddings"]) == (640, 32)
    assert read_json(out / "vocabscale_run.json") == read_json(trained_run / "run.json")

    other = trained_run.parents[1] / "other.json"
    tokenizer = Tokenizer.from_file(str(trained_run.parents[1] / "tokenizers/v640/tokenizer.json"))
    tokenizer.add_tokens(["extra"])
    tokenizer.save(str(other))
    result = run_in(
        tmp_path,
        *("vocabscale", "export-hf", "--run", str(trained_run), "--out", str(tmp_path / "x")),
        *("--tokenizer", str(other)),
        check=False,
    )
    assert result.returncode == 2
    assert "has 641 entries, but" in result.stderr and "V=640" in result.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)], ids=["022", "027"])
def test_every_exported_file_has_the_mode_the_umask_gives(trained_run, tmp_path, umask, mode):
    """model.safetensors too, which safetensors writes 0600: on a shared cluster, colleagues
    read the model as they read the rest."""
    previous = os.umask(umask)
    try:
        out = export_run(
            trained_run,
            trained_run.parents[1] / "tokenizers/v640/tokenizer.json",
            tmp_path / "hf",
        )
    finally:
        os.umask(previous)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in out.iterdir()}
    assert "model.safetensors" in modes
    assert modes == dict.fromkeys(modes, mode)
