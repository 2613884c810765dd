"""A trained run as a Hugging Face model directory, which transformers'
`AutoModelForCausalLM` and `AutoTokenizer.from_pretrained(DIR)` load with no extra code, so
that lm-evaluation-harness, vLLM or a hub upload take the model as it is. Needs torch,
safetensors and the tokenizer file, not transformers.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from vocabscale.io import atomic_dir, follow_umask, read_json, write_json
from vocabscale.tokenizer.bpe import END_OF_TEXT
from vocabscale.train.model import NORM_EPS, ROPE_BASE

log = logging.getLogger(__name__)

#: vocabscale's parameter names -> transformers' LlamaForCausalLM names ({i}: the block).
WEIGHT_NAMES = {
    "embedding.weight": "model.embed_tokens.weight",
    "blocks.{i}.attention_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blocks.{i}.attention.wq.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blocks.{i}.attention.wk.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blocks.{i}.attention.wv.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blocks.{i}.attention.wo.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blocks.{i}.mlp_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blocks.{i}.mlp.gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blocks.{i}.mlp.up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blocks.{i}.mlp.down.weight": "model.layers.{i}.mlp.down_proj.weight",
    "final_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
#: generation_config.json's tokens, all end-of-text (id 0): no BOS is prepended in training.
GENERATION_TOKENS = ("bos_token_id", "eos_token_id", "pad_token_id")
#: The projections whose rows carry the rotary pairs.
ROTARY_WEIGHTS = ("attention.wq.weight", "attention.wk.weight")


def rotary_rows_to_half_split(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """wq or wk (n_head * head_dim, d) with each head's output rows reordered evens first,
    then odds: vocabscale rotates the channel pairs (2j, 2j+1) of each head, transformers'
    Llama the pairs (j, j + head_dim/2), by the same angles. q and k are reordered alike, so
    q.k and the logits are unchanged (tests/test_export.py)."""
    rows, width = weight.shape
    head_dim = rows // n_head
    order = torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)))
    return weight.view(n_head, head_dim, width)[:, order].reshape(rows, width)


def hf_name(name: str) -> str:
    """transformers' name of one vocabscale parameter."""
    generic = re.sub(r"^blocks\.\d+\.", "blocks.{i}.", name)
    if generic not in WEIGHT_NAMES:
        raise ValueError(f"{name}: not a parameter of vocabscale's Llama")
    block = re.match(r"^blocks\.(\d+)\.", name)
    return WEIGHT_NAMES[generic].format(i=block[1] if block else "")


def hf_state_dict(weights: dict[str, torch.Tensor], n_head: int) -> dict[str, torch.Tensor]:
    """The weights in transformers' names and rotary layout, each a contiguous tensor of its
    own (safetensors stores no shared or strided storage)."""
    converted = {}
    for name, tensor in weights.items():
        if name.endswith(ROTARY_WEIGHTS):
            tensor = rotary_rows_to_half_split(tensor, n_head)
        converted[hf_name(name)] = tensor.detach().to("cpu").contiguous().clone()
    return converted


def hf_config(run: dict[str, Any], dtype: str = "float32") -> dict[str, Any]:
    """config.json of a run (its run.json). Written for transformers 4.x and 5.x alike: the
    rotary base both as `rope_theta` (4.x) and `rope_parameters` (5.x), the dtype both as
    `torch_dtype` and `dtype`. `max_position_embeddings` is the training context, which is
    what evaluation harnesses take as the longest input."""
    eot = 0  # tokenizer.bpe puts the end-of-text token first
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": run["vocab_size"],
        "hidden_size": run["d_model"],
        "intermediate_size": run["ffn"],
        "num_hidden_layers": run["n_layer"],
        "num_attention_heads": run["n_head"],
        "num_key_value_heads": run["n_head"],
        "head_dim": run["d_model"] // run["n_head"],
        "hidden_act": "silu",
        "max_position_embeddings": run["context"],
        "rms_norm_eps": NORM_EPS,
        "rope_theta": ROPE_BASE,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_BASE},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "pretraining_tp": 1,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": None,
        "dtype": dtype,
        "torch_dtype": dtype,
    }


def tokenizer_config(context: int) -> dict[str, Any]:
    """tokenizer_config.json: the fast tokenizer of tokenizer.json as it is (no BOS or EOS
    added, no space clean-up, which would break the round trip), end-of-text as every special
    token, so that padding and end of generation work."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": context,
        **dict.fromkeys(("bos_token", "eos_token", "unk_token", "pad_token"), END_OF_TEXT),
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            "0": {
                "content": END_OF_TEXT,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
        },
    }


def check_tokenizer(tokenizer_path: Path, run: dict[str, Any], run_dir: Path) -> None:
    """The tokenizer must be the run's: V entries, end-of-text first."""
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    if tokenizer.get_vocab_size() != run["vocab_size"]:
        raise ValueError(
            f"{tokenizer_path} has {tokenizer.get_vocab_size()} entries, but {run_dir} was "
            f"trained with V={run['vocab_size']}: give the run's tokenizer with --tokenizer"
        )
    if tokenizer.token_to_id(END_OF_TEXT) != 0:
        raise ValueError(f"{tokenizer_path}: {END_OF_TEXT} is not entry 0")


def export_run(
    run_dir: str | Path, tokenizer_path: str | Path, out_dir: str | Path, force: bool = False
) -> Path:
    """Write the Hugging Face directory of one run (atomically: all of it or nothing):

    config.json              a LlamaConfig of the run's exact shape (`hf_config`)
    generation_config.json   end-of-text (id 0) as BOS, EOS and padding
    model.safetensors        the weights, in transformers' names and rotary layout
    tokenizer.json           the run's tokenizer, unchanged
    tokenizer_config.json    PreTrainedTokenizerFast, end-of-text as eos/bos/pad/unk token,
    special_tokens_map.json  no token added to what the text encodes
    vocabscale_run.json      the run's run.json, for provenance

    `out_dir` may hold only an earlier export (`force`: with files added to it); anything
    else is refused before the weights are read (`io.check_out_dir`)."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ValueError("export needs safetensors: pip install -e '.[hf]'") from None

    run_dir, tokenizer_path, out_dir = Path(run_dir), Path(tokenizer_path), Path(out_dir)
    run = read_json(run_dir / "run.json")
    check_tokenizer(tokenizer_path, run, run_dir)
    weights = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    tensors = hf_state_dict(weights, run["n_head"])
    with atomic_dir(out_dir, force) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        follow_umask(tmp / "model.safetensors")  # safetensors makes it 0600
        write_json(tmp / "config.json", hf_config(run))
        write_json(tmp / "generation_config.json", dict.fromkeys(GENERATION_TOKENS, 0))
        shutil.copyfile(tokenizer_path, tmp / "tokenizer.json")
        write_json(tmp / "tokenizer_config.json", tokenizer_config(run["context"]))
        special = dict.fromkeys(("bos_token", "eos_token", "unk_token", "pad_token"), END_OF_TEXT)
        write_json(tmp / "special_tokens_map.json", special)
        shutil.copyfile(run_dir / "run.json", tmp / "vocabscale_run.json")
    log.info("exported %s (V=%d) to %s", run_dir, run["vocab_size"], out_dir)
    return out_dir


def run_tokenizer(run_dir: Path) -> Path:
    """The tokenizer the pipeline trained the run with: results/tokenizers/v<V>/tokenizer.json
    beside the run's results/runs/ directory."""
    vocab_size = read_json(run_dir / "run.json")["vocab_size"]
    path = run_dir.resolve().parent.parent / "tokenizers" / f"v{vocab_size}" / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no tokenizer for {run_dir}; give it with --tokenizer")
    return path
