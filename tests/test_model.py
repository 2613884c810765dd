"""The model: the chunked loss head is exactly cross-entropy, the parameter counts are the
closed form the scaling laws use, and attention is causal."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from vocabscale.accounting import PAPER_SHAPES, ModelShape
from vocabscale.train.model import (
    LOSS_HEADS,
    Llama,
    check_loss_head,
    head_chunk_rows,
    head_loss,
    summed_cross_entropy,
)


def plain_cross_entropy(hidden, weight, targets):
    """The reference: all logits at once, PyTorch's own cross-entropy and autograd."""
    return F.cross_entropy(hidden @ weight.t(), targets, reduction="sum")


def head_inputs(tokens: int, width: int, vocab: int, dtype=torch.float32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(tokens, width, generator=generator, dtype=dtype)
    weight = torch.randn(vocab, width, generator=generator, dtype=dtype) / width**0.5
    targets = torch.randint(0, vocab, (tokens,), generator=generator)
    return hidden, weight, targets


def loss_and_grads(loss_fn, hidden, weight, targets, scale=0.37):
    hidden = hidden.clone().requires_grad_()
    weight = weight.clone().requires_grad_()
    loss = loss_fn(hidden, weight, targets)
    (loss * scale).backward()  # a scale, as the trainer's 1 / batch_tokens
    return loss.detach(), hidden.grad, weight.grad


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_loss_and_gradients_equal_plain_cross_entropy(chunk):
    hidden, weight, targets = head_inputs(tokens=200, width=24, vocab=301)
    plain = loss_and_grads(plain_cross_entropy, hidden, weight, targets)
    chunked = loss_and_grads(
        lambda h, w, y: summed_cross_entropy(h, w, y, chunk_tokens=chunk), hidden, weight, targets
    )
    assert chunked[0].item() == pytest.approx(plain[0].item(), rel=1e-5)
    for ours, reference in zip(chunked[1:], plain[1:]):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_chunked_head_is_the_exact_math_in_float64():
    hidden, weight, targets = head_inputs(tokens=50, width=8, vocab=40, dtype=torch.float64)
    plain = loss_and_grads(plain_cross_entropy, hidden, weight, targets)
    chunked = loss_and_grads(
        lambda h, w, y: summed_cross_entropy(h, w, y, chunk_tokens=9), hidden, weight, targets
    )
    for ours, reference in zip(chunked, plain):
        torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)


def test_evaluation_path_gives_the_training_path_loss():
    hidden, weight, targets = head_inputs(tokens=100, width=16, vocab=90)
    with torch.no_grad():
        evaluated = summed_cross_entropy(hidden, weight, targets, chunk_tokens=13)
    trained = summed_cross_entropy(hidden, weight.clone().requires_grad_(), targets, 13)
    assert evaluated.item() == trained.item()


def test_bf16_autocast_head_stays_close_and_keeps_float32_gradients():
    hidden, weight, targets = head_inputs(tokens=64, width=32, vocab=500)
    plain = loss_and_grads(plain_cross_entropy, hidden, weight, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = loss_and_grads(
            lambda h, w, y: summed_cross_entropy(h, w, y, chunk_tokens=16), hidden, weight, targets
        )
    assert ours[0].dtype == torch.float32  # the sum is kept in float32
    assert ours[0].item() == pytest.approx(plain[0].item(), rel=2e-2)
    for grad, reference in zip(ours[1:], plain[1:]):
        assert grad.dtype == torch.float32
        assert (grad - reference).norm() < 0.05 * reference.norm()


def test_the_model_head_equals_plain_cross_entropy_of_its_logits():
    torch.manual_seed(0)
    model = Llama(ModelShape(2, 2, 16, 32), vocab_size=97, context=12, head_chunk_tokens=5)
    tokens = torch.randint(0, 97, (3, 13))
    summed = model(tokens[:, :-1], tokens[:, 1:])
    logits = model.output(model(tokens[:, :-1]))
    reference = F.cross_entropy(logits.reshape(-1, 97), tokens[:, 1:].reshape(-1), reduction="sum")
    assert summed.item() == pytest.approx(reference.item(), rel=1e-6)


def runs_here(head: str) -> bool:
    """Whether a loss head's backend runs on this machine (liger: CUDA and Liger-Kernel)."""
    try:
        check_loss_head(head, "auto")
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("head", [h for h in LOSS_HEADS if h != "chunked"])
@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_every_loss_head_gives_the_chunked_heads_loss_and_gradients(head, chunk):
    if not runs_here(head):
        pytest.skip(f"the {head} loss head does not run on this machine")
    device = "cuda" if head == "liger" else "cpu"
    inputs = [t.to(device) for t in head_inputs(tokens=200, width=24, vocab=301)]
    chunked = loss_and_grads(lambda h, w, y: head_loss("chunked", h, w, y, chunk), *inputs)
    other = loss_and_grads(lambda h, w, y: head_loss(head, h, w, y, chunk), *inputs)
    assert other[0].item() == pytest.approx(chunked[0].item(), rel=1e-5)
    for theirs, ours in zip(other[1:], chunked[1:]):
        torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)


def test_the_model_trains_and_evaluates_through_the_chosen_head():
    """(batch, time) inputs, the training and the evaluation paths: the torch head's model
    gives the chunked head's loss and gradients."""
    if not runs_here("torch"):
        pytest.skip("torch.nn.functional.linear_cross_entropy needs torch >= 2.13")
    tokens = torch.randint(0, 97, (3, 13), generator=torch.Generator().manual_seed(1))
    results = []
    for head in ("chunked", "torch"):
        torch.manual_seed(0)
        model = Llama(ModelShape(2, 2, 16, 32), 97, 12, head_chunk_tokens=5, loss_head=head)
        loss = model(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        with torch.no_grad():
            evaluated = model(tokens[:, :-1], tokens[:, 1:])
        results.append((loss.item(), evaluated.item(), model.output.weight.grad))
    (loss, evaluated, grad), (torch_loss, torch_evaluated, torch_grad) = results
    assert torch_loss == pytest.approx(loss, rel=1e-6)
    assert torch_evaluated == pytest.approx(evaluated, rel=1e-6)
    torch.testing.assert_close(torch_grad, grad, rtol=1e-5, atol=1e-6)


def test_a_loss_head_that_cannot_run_here_is_refused_before_training():
    with pytest.raises(ValueError, match=r"train\.loss_head: liger runs on CUDA only"):
        check_loss_head("liger", "cpu")
    with pytest.raises(ValueError, match=r"train\.loss_head: 'fused' is not one of"):
        check_loss_head("fused", "cpu")


def test_head_chunks_hold_a_fixed_number_of_logits():
    budget = 2**25
    assert head_chunk_rows(32_768, 8192, budget) == 1024
    assert head_chunk_rows(256_000, 8192, budget) == 131  # 131 x 256,000 <= 2^25 logits
    assert head_chunk_rows(4096, 8192, budget) == 8192  # capped by head_chunk_tokens
    assert head_chunk_rows(10**9, 8192, budget) == 1


def test_attention_is_causal():
    torch.manual_seed(0)
    model = Llama(ModelShape(2, 2, 16, 32), vocab_size=50, context=10).eval()
    tokens = torch.randint(0, 50, (1, 10))
    changed = tokens.clone()
    changed[0, 6] = (tokens[0, 6] + 1) % 50
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    torch.testing.assert_close(before[:, :6], after[:, :6])
    assert not torch.allclose(before[:, 6:], after[:, 6:])


def closed_form_non_vocab(n_layer: int, d: int, ffn: int) -> int:
    """Per block: q, k, v, o (4 d^2), SwiGLU gate, up, down (3 d ffn), two RMSNorm gains (2 d);
    plus the final RMSNorm gain (d). No biases."""
    return n_layer * (4 * d * d + 3 * d * ffn + 2 * d) + d


@pytest.mark.parametrize("name", list(PAPER_SHAPES))
def test_parameter_counts_of_the_paper_presets_match_the_closed_form(name):
    shape, _ = PAPER_SHAPES[name]
    vocab = 32_768
    with torch.device("meta"):  # shapes only: the 2.87B model is never allocated
        model = Llama(shape, vocab_size=vocab, context=2048)
    nnv = closed_form_non_vocab(shape.n_layer, shape.d_model, shape.ffn)
    assert model.non_vocab_parameters() == nnv == shape.non_vocab_params
    # untied embeddings: the input embedding and the output head, V x d each
    assert sum(p.numel() for p in model.parameters()) == nnv + 2 * vocab * shape.d_model
    assert model.embedding.weight.shape == model.output.weight.shape == (vocab, shape.d_model)


def test_a_run_records_its_loss_head_and_learns_the_same_with_each(tokenized, tmp_path):
    from vocabscale.config import defaults
    from vocabscale.io import read_json
    from vocabscale.sweep import ModelSpec
    from vocabscale.train.config import TrainConfig
    from vocabscale.train.loop import train_run

    spec = ModelSpec(
        "t", ModelShape(n_layer=1, n_head=2, d_model=32, ffn=64), 16 * 1024, 1, 1, "auto"
    )
    losses = {}
    for head in ("chunked", "torch"):
        train = defaults("train") | {"seed": 0, "context": 32, "batch_tokens": 1024, "lr": 1e-2}
        train |= {"micro_batch_size": 32, "evals": 2, "device": "cpu", "loss_head": head}
        out = tmp_path / head
        checkpoints = tmp_path / f"{head}-state"
        run = train_run(spec, tokenized[320], TrainConfig.from_params(train), out, checkpoints)
        assert read_json(out / "run.json")["loss_head"] == run["loss_head"] == head
        losses[head] = pd.read_csv(out / "evals.csv")["eval_ce_sum"].to_numpy()
    np.testing.assert_allclose(losses["torch"], losses["chunked"], rtol=1e-4)
