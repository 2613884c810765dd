"""Parameter and FLOPs accounting: the numbers every estimator is built on."""

import math

import pytest
import torch

from vocabscale import accounting
from vocabscale.accounting import PAPER_SHAPES, ModelShape
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR
from vocabscale.train.model import Llama

SHAPES = [ModelShape(2, 2, 48, 128), ModelShape(3, 4, 96, 256), ModelShape(1, 1, 8, 8)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_non_vocab_params_match_the_built_model(shape):
    model = Llama(shape, vocab_size=300, context=16)
    every_param = sum(p.numel() for p in model.parameters())
    assert model.non_vocab_parameters() == shape.non_vocab_params
    # the two vocabulary matrices (untied) are all that is left
    assert every_param - shape.non_vocab_params == 2 * 300 * shape.d_model


@pytest.mark.parametrize("name", list(PAPER_SHAPES))
def test_paper_presets_have_the_sizes_their_names_say(name):
    shape, _ = PAPER_SHAPES[name]
    scale = 1e9 if name.endswith("B") else 1e6
    stated = float(name[:-1]) * scale
    assert shape.non_vocab_params == pytest.approx(stated, rel=0.02)
    with torch.device("meta"):  # counts parameters without allocating them
        model = Llama(shape, vocab_size=32768, context=2048)
    assert model.non_vocab_parameters() == shape.non_vocab_params


def test_closed_form_of_the_33m_shape():
    # 8 blocks x (4 d^2 + 3 d ffn + 2 d) + d, with d = 512, ffn = 2048
    assert PAPER_SHAPES["33M"][0].non_vocab_params == 8 * (4 * 512**2 + 3 * 512 * 2048 + 1024) + 512


def test_flops_follow_the_paper_convention():
    nnv, vocab, d, tokens = 33e6, 4096, 512, 1.2e9
    assert accounting.flops(nnv, vocab, d, tokens) == 6 * (nnv + vocab * d) * tokens
    attention = accounting.flops_per_token_with_attention(nnv, vocab, d, n_layer=8, context=2048)
    assert attention - 6 * (nnv + vocab * d) == 12 * 8 * 2048 * d


def test_paper_tokens_per_char_falls_with_v_and_is_clamped():
    f = PAPER_TOKENS_PER_CHAR
    values = [f(v) for v in (4096, 16384, 65536, 131072)]
    assert values == sorted(values, reverse=True)
    assert f(10**6) == f(200_000)
    # f(V) = a ln(V)^2 + b ln(V) + c
    log_v = math.log(32768)
    assert f(32768) == pytest.approx(f.a * log_v**2 + f.b * log_v + f.c)
    step = 1e-3 * 32768
    assert f.derivative(32768) == pytest.approx(
        (f(32768 + step) - f(32768 - step)) / (2 * step), rel=1e-5
    )


@pytest.mark.parametrize(
    ("nnv", "width"),
    [
        (33e6, 512),
        (85e6, 768),
        (302e6, 1024),
        (2.87e9, 3200),
        (7e9, 4096),
        (70e9, 8192),
        (300e9, 16384),
        (2e12, 24576),
    ],
)
def test_width_mapping(nnv, width):
    assert accounting.width_for_nnv(nnv) == width
