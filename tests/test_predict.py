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
    answer = predict(PAPER_COEFFICIENTS, nnv, d)["approaches"]
    assert answer["isoflops"]["vocab_size"] == pytest.approx(v1, rel=0.005)
    assert answer["derivative"]["vocab_size"] == pytest.approx(v2, rel=0.005)
    assert answer["parametric"]["vocab_size"] == pytest.approx(v3, rel=0.005)


@pytest.mark.parametrize(("multiple", "expected"), [(0.2, 10_187), (1, 15_758), (6, 25_707)])
def test_parametric_under_and_over_training_at_302m(multiple, expected):
    optimal = predict(PAPER_COEFFICIENTS, 302e6, 1024)["flops"]
    answer = predict(PAPER_COEFFICIENTS, 302e6, 1024, multiple * optimal)
    assert answer["approaches"]["parametric"]["vocab_size"] == pytest.approx(expected, rel=0.005)


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
    llama = predict(PAPER_COEFFICIENTS, 70e9, 8192)["approaches"]
    assert min(a["vocab_size"] for a in llama.values()) > 210_000
