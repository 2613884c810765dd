"""Parameter and FLOPs accounting shared by every stage and estimator.

The paper's conventions (docs/design.md, "The science"): non-vocabulary parameters Nnv count
everything but the input embedding and the output projection, Nv = V * d,
C = 6 * (Nnv + Nv) * D. Tokens per character, f(V), is in `vocabscale.tokens_per_char`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: A byte-level BPE holds at least the 256 byte tokens and the end-of-text token.
MIN_VOCAB_SIZE = 257


@dataclass(frozen=True)
class ModelShape:
    n_layer: int
    n_head: int
    d_model: int
    ffn: int

    @property
    def non_vocab_params(self) -> int:
        """Closed-form Nnv of `vocabscale.train.model.Llama`: per block the four attention
        projections (4 d^2), the three SwiGLU matrices (3 d ffn) and two RMSNorm gains (2 d);
        plus the final RMSNorm gain (d)."""
        d = self.d_model
        per_block = 4 * d * d + 3 * d * self.ffn + 2 * d
        return self.n_layer * per_block + d


#: The seven shapes of the paper's grid, with the maximum training tokens of each.
PAPER_SHAPES: dict[str, tuple[ModelShape, float]] = {
    "33M": (ModelShape(8, 8, 512, 2048), 1.2e9),
    "85M": (ModelShape(12, 12, 768, 2048), 3.0e9),
    "151M": (ModelShape(16, 12, 768, 3072), 5.3e9),
    "302M": (ModelShape(18, 16, 1024, 4096), 11.7e9),
    "631M": (ModelShape(20, 24, 1536, 4800), 27.7e9),
    "1.13B": (ModelShape(22, 32, 2048, 5632), 54.8e9),
    "2.87B": (ModelShape(24, 32, 3200, 8192), 165.5e9),
}

#: Width of a target model by its Nnv when the user gives none: (upper bound of Nnv, d).
WIDTH_BY_NNV: tuple[tuple[float, int], ...] = (
    (50e6, 512),
    (200e6, 768),
    (500e6, 1024),
    (1e9, 1536),
    (2e9, 2048),
    (5e9, 3200),
    (10e9, 4096),
    (20e9, 5120),
    (50e9, 6048),
    (100e9, 8192),
    (200e9, 12288),
    (500e9, 16384),
    (1e12, 20480),
)
WIDTH_ABOVE_1T = 24576


def width_for_nnv(nnv: float) -> int:
    """The model width d the paper assumes for a model with `nnv` non-vocabulary parameters."""
    for upper, width in WIDTH_BY_NNV:
        if nnv <= upper:
            return width
    return WIDTH_ABOVE_1T


def vocab_params(vocab_size: float, d_model: float) -> float:
    """Nv = V * d (the paper's convention: one V x d matrix, although embeddings are untied)."""
    return vocab_size * d_model


def flops(non_vocab: float, vocab_size: float, d_model: float, tokens: float) -> float:
    """The paper's training compute C = 6 (Nnv + V d) D."""
    return 6.0 * (non_vocab + vocab_size * d_model) * tokens


def flops_per_token_with_attention(
    non_vocab: float, vocab_size: float, d_model: float, n_layer: int, context: int
) -> float:
    """Training FLOPs per token including attention scores: 6 N + 12 n_layer seq_len d."""
    return 6.0 * (non_vocab + vocab_size * d_model) + 12.0 * n_layer * context * d_model


#: fp32 weights and gradients, and AdamW's two fp32 moments
TRAINING_BYTES_PER_PARAMETER = 16
#: fp32 weight and gradient of a parameter FSDP has gathered whole while it is in use
GATHERED_BYTES_PER_PARAMETER = 8
#: What a block keeps for its backward pass, bytes per token, by precision: (per unit of
#: d_model, per unit of ffn). Counted with torch's saved-tensor hooks on `train.model.Block`,
#: eager (torch.compile keeps less); bf16 autocast keeps the residual stream, the norms and the
#: rotary embedding in fp32.
ACTIVATION_BYTES = {"fp32": (44, 16), "bf16": (36, 8)}
#: fp32 logits of the loss head's chunk and their softmax
HEAD_BYTES_PER_LOGIT = 8


def training_memory(
    shape: ModelShape,
    vocab_size: int,
    micro_batch_tokens: int,
    precision: str,
    head_logits: int,
    shards: int,
) -> float:
    """Bytes one GPU holds to train, an estimate for planning (not measured):

        state        16 N, N = Nnv + 2 V d (fp32 weights and gradients, AdamW's two moments);
                     FSDP over `shards` processes: 16 N / shards + 8 (2 V d + d + 2 block)
                     for what it gathers whole (the root's embedding, head and final norm for
                     the whole step; the block in use and the one prefetched)
        activations  micro_batch_tokens x n_layer x (44 d + 16 ffn) in fp32,
                     (36 d + 8 ffn) under bf16 autocast
        loss head    8 x min(head_logits, micro_batch_tokens x V)

    `shards` 1 is DDP (or a single process): every process holds everything."""
    d = shape.d_model
    block = (shape.non_vocab_params - d) / shape.n_layer
    parameters = shape.non_vocab_params + 2 * vocab_params(vocab_size, d)
    state = TRAINING_BYTES_PER_PARAMETER * parameters / shards
    if shards > 1:
        gathered = 2 * vocab_params(vocab_size, d) + d + 2 * block
        state += GATHERED_BYTES_PER_PARAMETER * gathered
    per_d_model, per_ffn = ACTIVATION_BYTES[precision]
    per_token = per_d_model * d + per_ffn * shape.ffn
    activations = micro_batch_tokens * shape.n_layer * per_token
    head = HEAD_BYTES_PER_LOGIT * min(head_logits, micro_batch_tokens * vocab_size)
    return state + activations + head


def log_spaced(low: float, high: float, count: int) -> np.ndarray:
    """`count` points evenly spaced in log between low and high (inclusive)."""
    return np.exp(np.linspace(math.log(low), math.log(high), count))
