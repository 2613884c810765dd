"""The Llama-style decoder the sweep trains: RMSNorm, RoPE, SwiGLU, no biases, untied embeddings.

Kept to one screen of math on purpose: the parameter count of this module is the one the scaling
laws use (see `vocabscale.accounting`), so a reader should be able to check it by eye.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vocabscale.accounting import ModelShape


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + self.eps)).type_as(x) * self.weight


def rope_tables(head_dim: int, context: int, base: float = 10000.0) -> tuple[torch.Tensor, ...]:
    """Cosine and sine tables for rotary position embeddings, shape (context, head_dim // 2)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (even, odd) of x (batch, heads, time, head_dim) by position angles."""
    x_even, x_odd = x.float()[..., 0::2], x.float()[..., 1::2]
    rotated = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.n_head = shape.n_head
        self.head_dim = shape.d_model // shape.n_head
        self.wq = nn.Linear(shape.d_model, shape.d_model, bias=False)
        self.wk = nn.Linear(shape.d_model, shape.d_model, bias=False)
        self.wv = nn.Linear(shape.d_model, shape.d_model, bias=False)
        self.wo = nn.Linear(shape.d_model, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, time, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, time, self.n_head, self.head_dim).transpose(1, 2)

        q = apply_rope(heads(self.wq(x)), cos, sin)
        k = apply_rope(heads(self.wk(x)), cos, sin)
        y = F.scaled_dot_product_attention(q, k, heads(self.wv(x)), is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(batch, time, width))


class SwiGLU(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.gate = nn.Linear(shape.d_model, shape.ffn, bias=False)
        self.up = nn.Linear(shape.d_model, shape.ffn, bias=False)
        self.down = nn.Linear(shape.ffn, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.attention_norm = RMSNorm(shape.d_model)
        self.attention = Attention(shape)
        self.mlp_norm = RMSNorm(shape.d_model)
        self.mlp = SwiGLU(shape)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    """Decoder-only transformer; `forward` returns final hidden states, the head is applied by
    `summed_cross_entropy` so that the (tokens x V) logits never have to exist at once."""

    def __init__(self, shape: ModelShape, vocab_size: int, context: int):
        super().__init__()
        self.shape, self.vocab_size, self.context = shape, vocab_size, context
        self.embedding = nn.Embedding(vocab_size, shape.d_model)
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.n_layer))
        self.final_norm = RMSNorm(shape.d_model)
        self.output = nn.Linear(shape.d_model, vocab_size, bias=False)
        cos, sin = rope_tables(shape.d_model // shape.n_head, context)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2 style: scale the projections that write into the residual stream by depth.
        for name, param in self.named_parameters():
            if name.endswith(("wo.weight", "down.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * shape.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        time = tokens.shape[1]
        cos, sin = self.rope_cos[:time], self.rope_sin[:time]
        x = self.embedding(tokens)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.final_norm(x)

    def non_vocab_parameters(self) -> int:
        """Every parameter except the input embedding and the output projection."""
        vocab = {id(self.embedding.weight), id(self.output.weight)}
        return sum(p.numel() for p in self.parameters() if id(p) not in vocab)


def _chunk_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor):
    logits = hidden @ weight.t()
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def summed_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_tokens: int = 4096
) -> torch.Tensor:
    """Sum of token cross-entropies (nats) of the output head `weight` (V x d) over `targets`.

    The logits are built `chunk_tokens` rows at a time and recomputed in the backward pass, so
    peak memory grows with chunk_tokens x V instead of all tokens x V: a V = 256,000 head fits
    where the plain `F.cross_entropy(model_logits)` would not.
    """
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1)
    if hidden.shape[0] <= chunk_tokens:
        return _chunk_cross_entropy(hidden, weight, targets)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_tokens):
        rows = slice(start, start + chunk_tokens)
        if torch.is_grad_enabled():
            total = total + checkpoint(
                _chunk_cross_entropy, hidden[rows], weight, targets[rows], use_reentrant=False
            )
        else:
            total = total + _chunk_cross_entropy(hidden[rows], weight, targets[rows])
    return total
