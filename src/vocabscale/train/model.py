"""The Llama-style decoder the sweep trains: RMSNorm, RoPE, SwiGLU, no biases, untied embeddings.

Kept to one screen of math on purpose: the parameter count of this module is the one the scaling
laws use (see `vocabscale.accounting`), so a reader should be able to check it by eye.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vocabscale.accounting import ModelShape

#: RMSNorm's epsilon and the rotary base: what an exported config must repeat (`export`).
NORM_EPS = 1e-6
ROPE_BASE = 10000.0

#: The loss heads `train.loss_head` chooses from (`head_loss`).
LOSS_HEADS = ("chunked", "torch", "liger")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + self.eps)).type_as(x) * self.weight


def rope_tables(head_dim: int, context: int, base: float = ROPE_BASE) -> tuple[torch.Tensor, ...]:
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
    """Decoder-only transformer. `model(tokens)` returns the final hidden states;
    `model(tokens, targets)` returns the summed cross-entropy (nats) of the output head over
    `targets`, computed in chunks so that the (tokens x V) logits never exist at once (by the
    `loss_head` of `LOSS_HEADS`)."""

    def __init__(
        self,
        shape: ModelShape,
        vocab_size: int,
        context: int,
        head_chunk_tokens: int = 8192,
        loss_head: str = "chunked",
    ):
        super().__init__()
        self.shape, self.vocab_size, self.context = shape, vocab_size, context
        self.head_chunk_tokens, self.loss_head = head_chunk_tokens, loss_head
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

    def forward(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor | None = None,
        chunk_tokens: int | None = None,
    ) -> torch.Tensor:
        time = tokens.shape[1]
        cos, sin = self.rope_cos[:time], self.rope_sin[:time]
        x = self.embedding(tokens)
        for block in self.blocks:
            x = block(x, cos, sin)
        hidden = self.final_norm(x)
        if targets is None:
            return hidden
        rows = self.head_chunk_tokens if chunk_tokens is None else chunk_tokens
        return head_loss(self.loss_head, hidden, self.output.weight, targets, rows)

    def non_vocab_parameters(self) -> int:
        """Every parameter except the input embedding and the output projection."""
        vocab = {id(self.embedding.weight), id(self.output.weight)}
        return sum(p.numel() for p in self.parameters() if id(p) not in vocab)


def head_chunk_rows(vocab_size: int, max_tokens: int, max_logits: int) -> int:
    """Tokens per chunk of the loss head: at most `max_logits` logits at once, so the head's
    working memory is the same at V = 256,000 as at V = 32,768."""
    return max(1, min(max_tokens, max_logits // vocab_size))


def _chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, rows: int, grads: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Sum over tokens of CE = logsumexp(logits) - logits[target], `rows` tokens at a time.

    With `grads`, also the gradients of that sum, worked out chunk by chunk while the chunk's
    logits exist: d CE / d logits = softmax(logits) - onehot(target) =: G, then
    d/d hidden = G @ W and d/d W = G^T @ hidden. Under autocast the matmuls run in its dtype
    (the weight is cast once, not once per chunk); the softmax and every sum run in float32
    (float64 for float64 inputs).
    """
    exact = torch.promote_types(hidden.dtype, torch.float32)
    device = hidden.device.type
    fast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else exact
    h_all, w = hidden.to(fast), weight.to(fast)
    vocab, width = weight.shape
    vocab_slice = max(1, min(rows, hidden.shape[0]) * vocab // width)
    total = torch.zeros((), dtype=exact, device=hidden.device)
    grad_hidden = torch.zeros_like(hidden) if grads else None
    grad_weight = torch.zeros_like(weight) if grads else None
    for start in range(0, hidden.shape[0], rows):
        h, y = h_all[start : start + rows], targets[start : start + rows]
        logits = (h @ w.t()).to(exact)
        lse = torch.logsumexp(logits, dim=-1)
        total += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
        if grads:
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in the logits' own buffer
            probs[torch.arange(len(y), device=y.device), y] -= 1.0
            g = probs.to(fast)
            del logits, probs
            grad_hidden[start : start + rows] = g @ w
            # G^T @ h is V x d: add it a slice of the vocabulary at a time, so the temporary
            # stays within the chunk's budget of rows x V elements.
            for first in range(0, vocab, vocab_slice):
                part = slice(first, first + vocab_slice)
                grad_weight[part] += g[:, part].t() @ h
    return total, grad_hidden, grad_weight


class _FusedCrossEntropy(torch.autograd.Function):
    """The chunked head with gradients computed in the forward pass: nothing is kept for the
    backward pass but the two gradients, and no logits are recomputed."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, rows):
        total, ctx.grad_hidden, ctx.grad_weight = _chunked_cross_entropy(
            hidden, weight, targets, rows, grads=True
        )
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight = ctx.grad_hidden, ctx.grad_weight
        if grad_hidden is None:
            raise RuntimeError("the fused loss head supports one backward pass per forward pass")
        ctx.grad_hidden = ctx.grad_weight = None  # let autograd own (and free) them
        return grad_hidden.mul_(grad_total), grad_weight.mul_(grad_total), None, None


def summed_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_tokens: int = 4096
) -> torch.Tensor:
    """Sum of token cross-entropies (nats) of the output head `weight` (V x d) over `targets`.

    The logits are built `chunk_tokens` rows at a time, so peak memory grows with
    chunk_tokens x V instead of tokens x V: with chunk_tokens ~ budget / V (`head_chunk_rows`)
    a V = 256,000 head trains where `F.cross_entropy(all_logits)` would not fit.
    """
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _FusedCrossEntropy.apply(hidden, weight, targets, chunk_tokens)
    return _chunked_cross_entropy(hidden, weight, targets, chunk_tokens, grads=False)[0]


def check_loss_head(name: str, device: str) -> None:
    """Fail before any compute when the loss head cannot run here (`device`: cpu, cuda or
    auto, which means CUDA when torch sees it)."""
    if name not in LOSS_HEADS:
        raise ValueError(f"train.loss_head: {name!r} is not one of {', '.join(LOSS_HEADS)}")
    if name == "torch" and not hasattr(F, "linear_cross_entropy"):
        raise ValueError(
            f"train.loss_head: torch needs torch.nn.functional.linear_cross_entropy (torch "
            f">= 2.13); this is torch {torch.__version__}"
        )
    if name == "liger":
        cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if not cuda:
            raise ValueError(
                "train.loss_head: liger runs on CUDA only (Liger-Kernel's Triton kernels); "
                "use chunked or torch on this machine"
            )
        try:
            import liger_kernel  # noqa: F401
        except ImportError:
            raise ValueError(
                "train.loss_head: liger needs Liger-Kernel: pip install liger-kernel"
            ) from None


def head_loss(
    name: str, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, rows: int
) -> torch.Tensor:
    """Summed cross-entropy (nats) of the output head by one of `LOSS_HEADS`, `rows` tokens
    per chunk: ours (`summed_cross_entropy`), torch's `F.linear_cross_entropy` (chunked by
    `LinearCrossEntropyOptions`; by default it would build every logit) or Liger-Kernel's
    fused linear cross-entropy (CUDA). All three return the gradients of the same sum."""
    if name == "chunked":
        return summed_cross_entropy(hidden, weight, targets, chunk_tokens=rows)
    hidden, targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    if name == "torch":
        options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=rows)
        return F.linear_cross_entropy(hidden, weight, targets, reduction="sum", options=options)
    if name == "liger":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        return LigerFusedLinearCrossEntropyLoss(reduction="sum")(weight, hidden, targets)
    raise ValueError(f"train.loss_head: {name!r} is not one of {', '.join(LOSS_HEADS)}")
