"""The authors' method (`vocabscale estimate --method authors`) on a table in the layout the
authors publish (exp_data.csv), checked against an independent step-by-step implementation of
their scripts written here."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.interpolate import griddata, interp1d
from scipy.optimize import minimize
from scipy.special import huber

from vocabscale.accounting import width_for_nnv
from vocabscale.estimate import parametric, synthetic
from vocabscale.estimate.approaches import fit_approach
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.runs.table import prepare_runs
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR

F = PAPER_TOKENS_PER_CHAR
#: exp_data.csv's columns, and ours
AUTHORS_COLUMNS = {
    "vocab_size": "vocab_size",
    "embed_dim": "d_model",
    "num_characters": "characters",
    "Non_vocab_parameters": "non_vocab_params",
    "FLOPs": "flops",
    "Lossu": "loss_u",
}


@pytest.fixture(scope="module")
def exp_data(tmp_path_factory) -> pd.DataFrame:
    """A paper-like table in the authors' layout: 4 of the paper's models x 6 vocabularies x 8
    checkpoints, L_u from the published approach-3 law with seed and checkpoint noise."""
    law = synthetic.parametric_law(PAPER_COEFFICIENTS["parametric"])
    vocabularies = (4096, 6144, 8192, 16384, 32768, 64512)
    frame = synthetic.runs_table(law, synthetic.paper_models(4), vocabularies, 8)
    frame = synthetic.add_noise(frame, 0.005, 0.003, np.random.default_rng(0))
    return frame.rename(columns={ours: theirs for theirs, ours in AUTHORS_COLUMNS.items()})[
        list(AUTHORS_COLUMNS)
    ]


def authors_fit(log_c, log_y, exponent):
    """L-BFGS-B (scipy's defaults) on the summed Huber loss from every start; the result with
    the smallest relative MSE."""
    best = None
    for k in np.linspace(-20, 15, 20):
        for e in np.linspace(0, 1, 20) if exponent is None else [exponent]:
            start = [k, e] if exponent is None else [k]

            def model(p, exponent=exponent):
                return p[0] + (p[1] if exponent is None else exponent) * log_c

            result = minimize(
                lambda p, model=model: np.sum(huber(1e-3, log_y - model(p))),
                start,
                method="L-BFGS-B",
            )
            error = np.mean((log_y - model(result.x)) ** 2) / np.mean(log_y) ** 2
            if best is None or error < best[0]:
                best = (error, result.x[0], result.x[1] if exponent is None else exponent)
    return best[1], best[2]


def authors_envelope(table: pd.DataFrame) -> pd.DataFrame:
    """The authors' approach 1 up to its envelope, step by step."""
    table = table.assign(tokens=table["num_characters"] * F(table["vocab_size"]))
    nnv_grid = np.logspace(
        np.log10(table["Non_vocab_parameters"].min()),
        np.log10(table["Non_vocab_parameters"].max()),
        50,
    )
    h_grid = np.logspace(
        np.log10(table["num_characters"].min()), np.log10(table["num_characters"].max()), 50
    )
    widths = np.array([width_for_nnv(n) for n in nnv_grid])
    points = [table[["Non_vocab_parameters", "vocab_size", "embed_dim", "num_characters"]]]
    points[0] = points[0].assign(FLOPs=table["FLOPs"], Lossu=table["Lossu"])
    for vocab_size, rows in table.groupby("vocab_size"):
        loss = griddata(
            rows[["Non_vocab_parameters", "num_characters"]].to_numpy(),
            rows["Lossu"].to_numpy(),
            (nnv_grid, h_grid),
            method="cubic",
        )
        flops = 6 * (nnv_grid + vocab_size * widths) * h_grid * F(vocab_size)
        points.append(
            pd.DataFrame(
                {
                    "Non_vocab_parameters": nnv_grid,
                    "vocab_size": vocab_size,
                    "embed_dim": widths,
                    "num_characters": h_grid,
                    "FLOPs": flops,
                    "Lossu": loss,
                }
            )
        )
    for nnv, rows in table.groupby("Non_vocab_parameters"):
        last = rows.loc[rows.groupby("vocab_size")["tokens"].idxmax()].sort_values("vocab_size")
        curve = interp1d(
            last["vocab_size"], last["Lossu"], kind="quadratic", fill_value="extrapolate"
        )
        vocab = np.logspace(
            np.log10(last["vocab_size"].min()), np.log10(last["vocab_size"].max()), 20
        )
        tokens = rows["tokens"].max()
        d = width_for_nnv(nnv)
        points.append(
            pd.DataFrame(
                {
                    "Non_vocab_parameters": nnv,
                    "vocab_size": vocab,
                    "embed_dim": d,
                    "num_characters": tokens / F(vocab),
                    "FLOPs": 6 * (nnv + vocab * d) * tokens,
                    "Lossu": curve(vocab),
                }
            )
        )
    points = pd.concat(points).dropna().sort_values(["FLOPs", "Lossu"])
    best, envelope = np.inf, []
    for row in points.itertuples(index=False):
        if row.Lossu < best:
            best = row.Lossu
            envelope.append(row)
    return pd.DataFrame(envelope)


def authors_approach_1(table: pd.DataFrame) -> dict[str, float]:
    """The authors' approach 1: power laws on the envelope."""
    envelope = authors_envelope(table)
    log_c = np.log(envelope["FLOPs"].to_numpy())
    k1, _ = authors_fit(log_c, np.log(envelope["Non_vocab_parameters"].to_numpy()), 0.5)
    nv = envelope["vocab_size"] * envelope["embed_dim"]
    k2, gamma = authors_fit(log_c, np.log(nv.to_numpy()), None)
    return {"K1": k1, "K2": k2, "gamma": gamma, "envelope": len(envelope)}


def authors_anchor(table: pd.DataFrame) -> float:
    """The authors' anchor: the smallest model's best V at 2.7e17 FLOPs, each V's L_u there
    from a quadratic spline over its checkpoints' compute (extrapolated)."""
    smallest = table[table["Non_vocab_parameters"] == table["Non_vocab_parameters"].min()]
    losses = {
        vocab_size: float(
            interp1d(rows["FLOPs"], rows["Lossu"], kind="quadratic", fill_value="extrapolate")(
                2.7e17
            )
        )
        for vocab_size, rows in smallest.groupby("vocab_size")
    }
    return min(losses, key=losses.get)


@pytest.fixture(scope="module")
def estimated(exp_data, tmp_path_factory) -> dict:
    """`vocabscale estimate --method authors` on the table in the authors' layout."""
    root = tmp_path_factory.mktemp("authors")
    exp_data.to_csv(root / "exp_data.csv", index=False)
    columns = [f"--column={theirs}={ours}" for theirs, ours in AUTHORS_COLUMNS.items()]
    subprocess.run(
        [
            sys.executable, "-m", "vocabscale", "estimate", "--runs", str(root / "exp_data.csv"),
            "--out", str(root / "fits"), *columns, "--tokenization", "paper",
            "--method", "authors", "--bootstrap", "0", "--min-flops", "1e17",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return json.loads((root / "fits" / "coefficients.json").read_text())


def test_authors_approach_1_matches_the_step_by_step_implementation(exp_data, estimated):
    expected = authors_approach_1(exp_data)
    fitted = estimated["isoflops"]
    assert fitted["method"] == "authors" and fitted["options"]["method"] == "authors"
    envelope = pd.DataFrame(fitted["envelope"])
    steps = authors_envelope(exp_data)
    assert len(envelope) == len(steps) == expected["envelope"]
    np.testing.assert_allclose(envelope["flops"], steps["FLOPs"], rtol=1e-12)
    np.testing.assert_allclose(envelope["loss_u"], steps["Lossu"], rtol=1e-12)
    for key in ("K1", "K2", "gamma"):
        assert fitted[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), key


def test_authors_approach_2_matches_the_step_by_step_implementation(exp_data, estimated):
    fitted = estimated["derivative"]
    assert fitted["anchor"]["vocab_size"] == authors_anchor(exp_data)
    assert fitted["anchor"]["flops"] == 2.7e17
    assert fitted["anchor"]["anchor_method"] == "argmin"
    # gamma as the corrected method computes it: through the anchor model's own solution
    runs = prepare_runs(exp_data.rename(columns=AUTHORS_COLUMNS), F)
    corrected = fit_approach("derivative", runs, F).coefficients["gamma"]
    assert fitted["gamma"] == pytest.approx(corrected)


def test_authors_approach_3_is_the_compatibility_switch(exp_data, estimated):
    runs = prepare_runs(exp_data.rename(columns=AUTHORS_COLUMNS), F)
    switch = fit_approach("parametric", runs, F, {"min_flops": 1e17, "authors_tokenization": True})
    fitted = estimated["parametric"]
    for name in parametric.PARAMETERS:
        assert fitted[name] == pytest.approx(switch.coefficients[name], rel=1e-9), name
    assert fitted["options"]["authors_tokenization"] is True


def test_corrected_method_stays_the_default(exp_data, tmp_path):
    frame = exp_data.rename(columns=AUTHORS_COLUMNS)
    fitted = fit_approach("isoflops", prepare_runs(frame, F), F)
    assert fitted.options["method"] == "corrected"
