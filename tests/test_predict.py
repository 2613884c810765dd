"""`vocabscale predict --coefficients paper` reproduces the paper's published predictions."""

import json
import subprocess
import sys

import pytest

from vocabscale.estimate.predict import predict
from vocabscale.estimate.published import PAPER_COEFFICIENTS

# Nnv, d, approach 1, approach 2, approach 3 (docs/design.md, "The paper's numbers")
PUBLISHED = [
    (2.87e9, 3200, 37_942, 40_993, 35_271),
    (7e9, 4096, 62_280, 67_450, 59_547),
    (13e9, 5120, 83_429, 90_503, 81_347),
    (30e9, 6048, 141_711, 154_071, 141_898),
    (70e9, 8192, 211_860, 230_861, 217_961),
    (130e9, 12288, 236_500, 258_138, 248_187),
    (300e9, 16384, 355_894, 389_324, 383_659),
]


@pytest.mark.parametrize(("nnv", "d", "v1", "v2", "v3"), PUBLISHED)
def test_published_predictions(nnv, d, v1, v2, v3):
    answer = predict(PAPER_COEFFICIENTS, nnv, d).approaches
    assert answer["isoflops"].answer.vocab_size == pytest.approx(v1, rel=0.005)
    assert answer["derivative"].answer.vocab_size == pytest.approx(v2, rel=0.005)
    assert answer["parametric"].answer.vocab_size == pytest.approx(v3, rel=0.005)


@pytest.mark.parametrize(("multiple", "expected"), [(0.2, 10_187), (1, 15_758), (6, 25_707)])
def test_parametric_under_and_over_training_at_302m(multiple, expected):
    optimal = predict(PAPER_COEFFICIENTS, 302e6, 1024).flops
    answer = predict(PAPER_COEFFICIENTS, 302e6, 1024, multiple * optimal)
    assert answer.approaches["parametric"].answer.vocab_size == pytest.approx(expected, rel=0.005)


def test_cli_json_shape():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vocabscale",
            "predict",
            "--nnv",
            "7e9",
            "--d-model",
            "4096",
            "--coefficients",
            "paper",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    answer = json.loads(result.stdout)
    assert answer["nnv"] == 7e9 and answer["d_model"] == 4096
    assert answer["flops"] == pytest.approx(7.05e21, rel=0.01)
    for approach in ("isoflops", "derivative", "parametric"):
        assert set(answer["approaches"][approach]) >= {"vocab_size", "vocab_params"}
    # Llama2-70B "should have had at least 216K"
    llama = predict(PAPER_COEFFICIENTS, 70e9, 8192).approaches
    assert min(a.answer.vocab_size for a in llama.values()) > 210_000


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--nnv", "7e9", "--d-model", "0"],
            "argument --d-model: must be a positive whole number, not 0",
        ),
        (
            ["--nnv", "7e9", "--flops=-1e20"],
            "argument --flops: must be a positive finite number, not -1e20",
        ),
        (["--nnv", "nan"], "argument --nnv: must be a positive finite number, not nan"),
        (["--nnv=-7e9"], "argument --nnv: must be a positive finite number, not -7e9"),
        (
            ["--nnv", "7e9", "--flops", "inf"],
            "argument --flops: must be a positive finite number, not inf",
        ),
    ],
)
def test_cli_refuses_impossible_values_naming_the_option(arguments, message):
    """No silent default width, no plausible V from a negative budget, no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "vocabscale", "predict", *arguments, "--coefficients", "paper"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_refuses_impossible_values():
    with pytest.raises(ValueError, match="d_model must be a positive finite number, not 0"):
        predict(PAPER_COEFFICIENTS, 7e9, 0)
    with pytest.raises(ValueError, match="nnv must be a positive finite number"):
        predict(PAPER_COEFFICIENTS, float("nan"))
