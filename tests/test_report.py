"""The report stage on a synthetic runs table made from a known law: every figure is a real
PNG, every prediction row is there, and the doubt section fires on planted problems and stays
quiet on a clean table."""

from __future__ import annotations

import copy
import json
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vocabscale.accounting import PAPER_SHAPES, flops
from vocabscale.config import defaults, validate_params
from vocabscale.estimate import parametric, synthetic
from vocabscale.estimate.approaches import APPROACHES
from vocabscale.estimate.backtest import BacktestSettings, run_backtest
from vocabscale.estimate.fit import estimate_approach
from vocabscale.estimate.predict import predict
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.io import read_json, write_json
from vocabscale.report.contents import FIGURES
from vocabscale.report.doubts import anchor_budget_doubts, design_line
from vocabscale.report.evidence import ReportInputs, round_to_multiple
from vocabscale.report.stage import build_report
from vocabscale.runs.table import prepare_runs
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR, TokensPerCharFit

SHAPES = ("33M", "85M", "151M", "302M")
VOCABULARIES = (4096, 6144, 8192, 16384, 32768, 64512)
#: Inside the data: two of the trained shapes.
TARGETS = [
    {"name": "151M", "nnv": 1.51e8, "d_model": 768},
    {"name": "302M", "nnv": 3.02e8, "d_model": 1024},
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_runs(
    shapes=SHAPES, vocabularies=VOCABULARIES, checkpoints: int = 8, noise: float = 0.002
) -> pd.DataFrame:
    """A runs table whose L_u follows the paper's published approach-3 law (plus a little
    noise), with the paper's f(V) and model shapes: the estimators should roughly agree."""
    law = PAPER_COEFFICIENTS["parametric"]
    f = PAPER_TOKENS_PER_CHAR
    rng = np.random.default_rng(0)
    rows = []
    for name in shapes:
        shape, max_tokens = PAPER_SHAPES[name]
        nnv, d = shape.non_vocab_params, shape.d_model
        for vocab_size in vocabularies:
            for step in range(1, checkpoints + 1):
                tokens = max_tokens * step / checkpoints
                loss_u = float(parametric.loss_u(law, nnv, vocab_size * d, tokens))
                rows.append(
                    {
                        "run_id": f"{name}-v{vocab_size}",
                        "model": name,
                        "vocab_size": vocab_size,
                        "d_model": d,
                        "non_vocab_params": nnv,
                        "vocab_params": vocab_size * d,
                        "step": step,
                        "tokens": tokens,
                        "characters": tokens / float(f(vocab_size)),
                        "flops": flops(nnv, vocab_size, d, tokens),
                        "loss_u": loss_u + rng.normal(0.0, noise),
                        "diverged": False,
                    }
                )
    return pd.DataFrame(rows)


def synthetic_downstream(runs: pd.DataFrame, samples: int = 500) -> pd.DataFrame:
    """results/downstream.csv for the last checkpoint of every synthetic run: accuracies that
    rise from chance as L_u falls, with the binomial standard error of `samples` documents."""
    last = runs.sort_values("step").groupby("run_id", sort=False).tail(1)
    loss = last["loss_u"].to_numpy()
    better = (loss.max() - loss) / (loss.max() - loss.min())
    rows = []
    for task, chance in (("arc_easy", 0.25), ("piqa", 0.5)):
        acc = chance + 0.3 * better
        stderr = np.sqrt(acc * (1 - acc) / samples)
        rows.append(
            last.assign(
                train_tokens=last["tokens"],
                task=task,
                num_fewshot=0,
                samples=samples,
                acc=acc,
                acc_stderr=stderr,
                acc_norm=acc + 0.01,
                acc_norm_stderr=stderr,
            )
        )
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict[str, Path]:
    """The synthetic table and the three approaches fitted on it, as the estimate stages
    write them (a few bootstrap refits, so the intervals exist)."""
    root = tmp_path_factory.mktemp("synthetic")
    frame = synthetic_runs()
    frame.to_csv(root / "runs.csv", index=False)
    f = PAPER_TOKENS_PER_CHAR
    runs = prepare_runs(frame, f, "synthetic")
    options = defaults("estimate")
    options["isoflops"].update(nnv_points=20, vocab_points=10)  # lighter densification
    for approach in APPROACHES:
        result = estimate_approach(
            approach, runs, f, options[approach], {"samples": 4, "seed": 0, "confidence": 0.9}
        )
        result.tokenization = {**f.as_dict(), "source": "paper"}
        write_json(root / "estimates" / f"{approach}.json", result.to_json())
    synthetic_downstream(frame).to_csv(root / "downstream.csv", index=False)
    settings = BacktestSettings(
        {**options, "bootstrap": {**options["bootstrap"], "samples": 4}}, 0.5, 2, 20
    )
    backtest = run_backtest(runs, TokensPerCharFit(f), settings)
    (root / "backtest").mkdir()
    backtest.comparisons.to_csv(root / "backtest" / "backtest.csv", index=False)
    write_json(root / "backtest" / "summary.json", backtest.summary)
    return {
        "root": root,
        "runs": root / "runs.csv",
        "estimates": root / "estimates",
        "downstream": root / "downstream.csv",
        "backtest": root / "backtest",
    }


def report_section(default_params: dict, **changes) -> dict:
    """params.yaml's report section (validated, defaults filled in) for the synthetic targets."""
    params = copy.deepcopy(default_params)
    params["report"] = {"round_to": 128, "targets": copy.deepcopy(TARGETS), **changes}
    return validate_params(params)["report"]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_figures(out: Path, expected: set[str]) -> None:
    for name in expected:
        path = out / "figures" / f"{name}.png"
        assert path.stat().st_size > 15_000, f"{name}.png is nearly empty"
        width, height = png_size(path)
        assert width >= 700 and height >= 450, (name, width, height)


def kinds(out: Path) -> dict[str, list]:
    found: dict[str, list] = {}
    for doubt in read_json(out / "doubts.json"):
        found.setdefault(doubt["kind"], []).append(doubt["target"])
    return found


@pytest.fixture(scope="module")
def clean_report(clean, tmp_path_factory, default_params) -> Path:
    out = tmp_path_factory.mktemp("clean") / "report"
    settings = report_section(default_params)
    inputs = ReportInputs(
        clean["estimates"],
        clean["runs"],
        downstream=clean["downstream"],
        backtest=clean["backtest"],
    )
    build_report(inputs, settings, out)
    return out


def test_every_figure_is_a_real_png(clean_report):
    assert_figures(clean_report, {spec.name for spec in FIGURES})
    markdown = (clean_report / "report.md").read_text()
    for spec in FIGURES:
        assert f"](figures/{spec.name}.png)" in markdown
    assert "Not drawn" not in markdown


def test_the_downstream_scores_reach_the_report(clean_report, clean):
    markdown = (clean_report / "report.md").read_text()
    table = pd.read_csv(clean["downstream"])
    for row in table.itertuples():
        assert f"{row.acc:.3f} ± {row.acc_stderr:.3f}" in markdown
    # the best V of each model and task is in bold, and each approach predicts a V per model
    assert markdown.count("| **") >= table.groupby(["task", "model"]).ngroups
    section = markdown.split("What each approach predicts for these models")[1]
    section = section.split("## Coefficients")[0]
    for model in table["model"].unique():
        assert f"\n| {model} |" in section


def test_the_report_leads_with_the_recommendation_and_the_backtest(clean_report):
    """The first section answers "what V should I use" for every target, with an interval that
    holds it and a flat band around it; the second says how each approach did on held-out
    runs, with its figure."""
    markdown = (clean_report / "report.md").read_text()
    sections = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert sections[:3] == [
        "## What V to use",
        "## How well each approach predicted your own largest runs",
        "## The three approaches",
    ]
    table = pd.read_csv(clean_report / "predictions.csv")
    recommended = table[table["approach"] == "recommended"].set_index("target")
    assert list(recommended.index) == [t["name"] for t in TARGETS]
    assert (recommended["vocab_size_low"] <= recommended["vocab_size"]).all()
    assert (recommended["vocab_size"] <= recommended["vocab_size_high"]).all()
    assert (recommended["band_low"] <= recommended["vocab_size_rounded"]).all()
    assert (recommended["vocab_size_rounded"] <= recommended["band_high"]).all()
    assert (recommended["band_low"] % 128 == 0).all() and recommended["rule"].str.startswith(
        "weighted"
    ).all()
    for name, row in recommended.iterrows():
        assert (
            f"**{name}**" in markdown and f"**V = {int(row['vocab_size_rounded']):,}**" in markdown
        )
    assert "(figures/backtest.png)" in markdown and "| 302M | 302M |" in markdown
    summary = read_json(clean_report / "summary.json")
    assert summary["vocab_size.302M.recommended"] == pytest.approx(
        recommended.loc["302M", "vocab_size"], rel=1e-3
    )


def test_every_prediction_row_is_present(clean_report):
    markdown = (clean_report / "report.md").read_text()
    table = pd.read_csv(clean_report / "predictions.csv")
    assert len(table) == len(TARGETS) * (len(APPROACHES) + 1)
    titles = {"isoflops": "IsoFLOPs", "derivative": "Derivative", "parametric": "Parametric"}
    for target in TARGETS:
        rows = [line for line in markdown.splitlines() if line.startswith(f"| {target['name']} |")]
        assert {row.split("|")[4].strip() for row in rows} >= set(titles.values()), rows
        published = predict(PAPER_COEFFICIENTS, target["nnv"], target["d_model"]).approaches
        for approach in APPROACHES:
            row = table[(table["target"] == target["name"]) & (table["approach"] == approach)]
            assert len(row) == 1
            row = row.iloc[0]
            assert row["vocab_size_low"] <= row["vocab_size"] * 1.05
            assert row["vocab_size_high"] >= row["vocab_size"] * 0.95
            assert row["vocab_size_rounded"] % 128 == 0
            assert row["vocab_params"] == pytest.approx(row["vocab_size"] * target["d_model"])
            assert row["paper_vocab_size"] == pytest.approx(
                published[approach].answer.vocab_size, rel=1e-6
            )
            assert f"{row['vocab_size']:,.0f} ({row['vocab_size_rounded']:,})" in markdown


def test_the_law_is_recovered(clean_report):
    """Approach 3 fitted on data made from the published law predicts what that law does."""
    table = pd.read_csv(clean_report / "predictions.csv").set_index(["target", "approach"])
    for target in TARGETS:
        row = table.loc[(target["name"], "parametric")]
        truth = predict(PAPER_COEFFICIENTS, target["nnv"], target["d_model"], row["flops"])
        assert row["vocab_size"] == pytest.approx(
            truth.approaches["parametric"].answer.vocab_size, rel=0.1
        )


def test_a_clean_table_raises_no_doubt_but_its_design(clean_report):
    """The clean table trains the paper's shapes to their 35-39 tokens per parameter: its
    design sets approach 1's K1, which is its one doubt."""
    doubts = read_json(clean_report / "doubts.json")
    assert [d["kind"] for d in doubts] == ["design_sets_k1"]
    assert "35.1 to 38.7 tokens per parameter" in doubts[0]["message"]
    markdown = (clean_report / "report.md").read_text()
    assert "The sweep's design sets approach 1's compute-optimal relation" in markdown


def test_the_design_doubt_fires_on_one_tokens_per_parameter_ratio_only():
    """One ratio for every model (the paper's grid, 35-58 tokens per parameter) traces a line;
    an IsoFLOPs design (several sizes at each budget) does not."""
    f = PAPER_TOKENS_PER_CHAR
    law = synthetic.parametric_law(PAPER_COEFFICIENTS["parametric"])
    paper = prepare_runs(synthetic.runs_table(law, synthetic.paper_models(7), checkpoints=4), f)
    ratios, k = design_line(paper.frame)
    assert len(ratios) == 7 and 1.6 < ratios.max() / ratios.min() < 1.7
    assert k == pytest.approx(-2.8, abs=0.05)  # the published K1 is -2.48
    assert design_line(prepare_runs(synthetic.profile_table(), f).frame) is None
    assert design_line(paper.frame[paper.frame["non_vocab_params"] < 1e8]) is None  # 2 models


def test_an_anchor_held_to_the_runs_range_is_a_doubt():
    anchor = {
        "flops": 2.5e17,
        "compute_optimal_flops": 4e17,
        "budget_clamped": "above",
        "budget_range": [3e16, 2.5e17],
    }
    ((message, target),) = anchor_budget_doubts("Derivative", anchor)
    assert target is None
    assert "4.00e17 FLOPs, above the range every run of it reaches" in message
    assert "read at 2.50e17" in message and "smaller than the optimum" in message
    fallback = {"flops": 2.5e17, "compute_optimal_unavailable": "1 distinct compute level(s)"}
    ((message, _),) = anchor_budget_doubts("Derivative", fallback)
    assert "approach 1 could not be fitted (1 distinct compute level(s))" in message


def test_summary_is_flat_and_numeric(clean_report):
    summary = read_json(clean_report / "summary.json")
    assert summary["doubts"] == len(read_json(clean_report / "doubts.json"))
    assert all(isinstance(v, (int, float)) for v in summary.values()), summary
    for target in TARGETS:
        for approach in APPROACHES:
            assert summary[f"vocab_size.{target['name']}.{approach}"] > 0


def test_envelope_points_for_dvc_plots(clean_report, clean):
    envelope = pd.read_csv(clean_report / "isoflops_envelope.csv")
    fitted = read_json(clean["estimates"] / "isoflops.json")["envelope"]
    assert len(envelope) == len(fitted) > 0
    assert envelope["flops"].is_monotonic_increasing
    assert np.allclose(envelope["vocab_params"], envelope["vocab_size"] * envelope["d_model"])


def test_html_is_self_contained(clean_report):
    page = (clean_report / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert 'src="figures/' not in page
    assert "<table>" in page and "What to doubt" in page


@pytest.fixture(scope="module")
def planted(clean, tmp_path_factory, default_params) -> Path:
    """The clean inputs with one problem of every kind planted, and a far target."""
    root = tmp_path_factory.mktemp("planted")
    runs = pd.read_csv(clean["runs"])
    bad = runs["run_id"] == "85M-v16384"
    runs.loc[bad, "diverged"] = True
    runs.loc[bad, "loss_u"] = runs.loc[bad, "loss_u"] + 3.0  # what a blown-up run looks like
    runs.to_csv(root / "runs.csv", index=False)
    estimates = root / "estimates"
    estimates.mkdir()
    coefficients = {a: read_json(clean["estimates"] / f"{a}.json") for a in APPROACHES}
    for fitted in coefficients.values():
        fitted["excluded_rows"] = {"diverged": int(bad.sum()), "non_finite": 0}
    # the derivative anchor 3x too large: the approaches disagree
    anchor = coefficients["derivative"]["anchor"]
    anchor["vocab_params"] *= 3
    for replicate in coefficients["derivative"]["bootstrap"]:
        replicate["anchor"] = {**replicate["anchor"], "vocab_params": anchor["vocab_params"]}
    # approach 1's refits all well below its estimate: its interval ends at the estimate
    for replicate in coefficients["isoflops"]["bootstrap"]:
        replicate["K2"] -= 1.0
    # a parameter of approach 3 on its bound, and the compatibility switch on
    fitted = coefficients["parametric"]
    fitted["fit"]["on_bound"] = ["alpha2"]
    fitted["options"]["authors_tokenization"] = True
    fitted["true_tokenization"] = {
        **{k: fitted[k] for k in ("E", "A1", "A2", "B", "alpha1", "alpha2", "beta")},
        "fit": {**fitted["fit"], "on_bound": []},
    }
    for approach, value in coefficients.items():
        write_json(estimates / f"{approach}.json", value)
    targets = [*TARGETS, {"name": "70B", "nnv": 7e10, "d_model": 8192}]
    out = root / "report"
    settings = report_section(default_params, targets=targets)
    build_report(ReportInputs(estimates, root / "runs.csv"), settings, out)
    return out


def test_doubts_fire_on_planted_problems(planted):
    found = kinds(planted)
    assert set(found) >= {
        "diverged",
        "disagreement",
        "extrapolation",
        "on_bound",
        "compatibility_switch",
    }, found
    assert found["extrapolation"] == ["70B"]  # and not the targets near the data
    assert {"151M", "302M"} <= set(found["disagreement"])
    markdown = (planted / "report.md").read_text()
    assert "85M-v16384" in markdown  # the diverged run is named
    assert "alpha2" in markdown
    assert read_json(planted / "summary.json")["doubts"] == len(read_json(planted / "doubts.json"))


def test_an_estimate_lies_in_its_interval_even_when_every_refit_errs_one_way(planted):
    """Approach 1's refits all land below its estimate (planted): its interval ends at it."""
    table = pd.read_csv(planted / "predictions.csv").dropna(subset=["vocab_size_low"])
    assert (table["vocab_size_low"] <= table["vocab_size"] * (1 + 1e-9)).all()
    assert (table["vocab_size"] <= table["vocab_size_high"] * (1 + 1e-9)).all()
    isoflops = table[table["approach"] == "isoflops"]
    assert (isoflops["vocab_size_high"] == isoflops["vocab_size"]).all()


def test_compatibility_switch_shows_both_fits(planted):
    table = pd.read_csv(planted / "predictions.csv")
    assert set(table["approach"]) == {*APPROACHES, "parametric_true_tokens", "recommended"}
    markdown = (planted / "report.md").read_text()
    assert "Parametric (true D)" in markdown


def test_diverged_rows_are_drawn_but_not_fitted(planted):
    assert_figures(planted, {"loss_vs_compute", "parametric_fit"})


def test_search_bound_and_sweep_edge(clean, tmp_path, default_params):
    """Approach 3 with its vocabulary term switched off has no interior optimum; a derivative
    anchor at the smallest V swept is at the edge of the sweep."""
    estimates = tmp_path / "estimates"
    estimates.mkdir()
    for approach in APPROACHES:
        fitted = read_json(clean["estimates"] / f"{approach}.json")
        if approach == "parametric":
            fitted["A2"] = 0.0
            fitted["bootstrap"] = []
        if approach == "derivative":
            losses = fitted["anchor"]["losses"]
            smallest = min(row["vocab_size"] for row in losses)
            fitted["anchor"].update(vocab_size=smallest, best_swept_vocab_size=smallest)
        write_json(estimates / f"{approach}.json", fitted)
    out = tmp_path / "report"
    result = build_report(
        ReportInputs(estimates, clean["runs"]), report_section(default_params), out
    )
    found = kinds(out)
    assert set(found["no_answer"]) == {"151M", "302M"}
    assert "sweep_edge" in found and "no_intervals" in found
    table = result["predictions"]
    parametric_rows = table[table["approach"] == "parametric"]
    assert parametric_rows["at_search_bound"].all() and parametric_rows["vocab_size"].isna().all()
    assert parametric_rows["reason"].str.contains("smallest V it searched").all()
    markdown = (out / "report.md").read_text()
    assert "no answer: its optimum is at the smallest V it searched" in markdown
    assert not re.search(r"(?<![\d,])257(?![\d,])", markdown)  # the search floor: no answer
    assert "vocab_size.151M.parametric" not in read_json(out / "summary.json")


def test_report_without_runs_table_or_with_a_failed_approach(clean, tmp_path, default_params):
    """Pulled results may lack the runs table, and an approach may have failed: the figures
    that need what is missing are replaced by a note, the rest still build."""
    estimates = tmp_path / "estimates"
    estimates.mkdir()
    for approach in ("derivative", "parametric"):
        (estimates / f"{approach}.json").write_text(
            (clean["estimates"] / f"{approach}.json").read_text()
        )
    write_json(estimates / "isoflops.json", {"approach": "isoflops", "error": "too few points"})
    targets = [{**TARGETS[0], "flops": 2e19}, TARGETS[1]]  # only the first has a budget
    out = tmp_path / "report"
    settings = report_section(default_params, targets=targets)
    result = build_report(ReportInputs(estimates), settings, out)
    markdown = (out / "report.md").read_text()
    assert "Not drawn" in markdown and "needs the runs table" in markdown
    assert "IsoFLOPs, which was not fitted (too few points)" in markdown
    assert "failed_approach" in kinds(out)
    assert pd.read_csv(out / "isoflops_envelope.csv").empty  # the header alone
    drawn = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"tokens_per_char", "vocab_vs_nnv", "budget_multiple"} <= drawn
    assert_figures(out, drawn)
    table = result["predictions"]
    # approach 3 answers where a budget exists; approach 2 everywhere
    answered = table[table["approach"] != "recommended"]
    assert set(answered[answered["target"] == "151M"]["approach"]) == {"derivative", "parametric"}
    assert set(answered[answered["target"] == "302M"]["approach"]) == {"derivative"}


def test_report_from_a_coefficients_file_and_from_the_paper(clean, tmp_path, default_params):
    combined = {a: read_json(clean["estimates"] / f"{a}.json") for a in APPROACHES}
    combined["tokenization"] = combined["isoflops"]["tokenization"]
    write_json(tmp_path / "coefficients.json", combined)
    out = tmp_path / "from-file"
    settings = report_section(default_params)
    build_report(ReportInputs(tmp_path / "coefficients.json", clean["runs"]), settings, out)
    assert len(pd.read_csv(out / "predictions.csv")) == len(TARGETS) * (len(APPROACHES) + 1)
    out = tmp_path / "paper"
    build_report(ReportInputs("paper"), settings, out)
    table = pd.read_csv(out / "predictions.csv")
    table = table[table["approach"] != "recommended"]
    assert (table["vocab_size"] == table["paper_vocab_size"]).all()


def test_cli(clean, tmp_path, default_params):
    from vocabscale.cli import main

    params = copy.deepcopy(default_params)
    params["report"]["targets"] = TARGETS
    (tmp_path / "params.yaml").write_text(json.dumps(params))  # JSON is YAML
    out = tmp_path / "report"
    main(
        [
            "report",
            "--params",
            str(tmp_path / "params.yaml"),
            "--estimates",
            str(clean["estimates"]),
            "--runs",
            str(clean["runs"]),
            "--out",
            str(out),
        ]
    )
    assert (out / "report.md").exists() and (out / "report.html").exists()
    assert not list(tmp_path.glob(".report.*"))  # no temporary directory left behind


@pytest.mark.parametrize(
    ("value", "multiple", "expected"),
    [(736.1, 128, 768), (257.0, 128, 384), (63_999, 128, 64_000), (1674, 64, 1664)],
)
def test_round_to_multiple(value, multiple, expected):
    assert round_to_multiple(value, multiple) == expected


def test_doubts_on_fits_that_did_not_converge_or_hold(clean, tmp_path, default_params):
    """A fit stopped before converging, approach 2's solutions at the end of the V searched and
    its vertex outside the sweep, approach 3 weakly identified with alpha2 > 1, and refits left
    out of an interval beyond the 10% the report accepts: each is a doubt."""
    estimates = tmp_path / "estimates"
    estimates.mkdir()
    for approach in APPROACHES:
        fitted = read_json(clean["estimates"] / f"{approach}.json")
        if approach == "isoflops":
            fitted["fit"]["nnv"]["converged"] = False
        if approach == "derivative":
            fitted["exponent_fit"]["solutions_at_search_bound"] = 1
            fitted["exponent_fit"]["solutions"][0].update(at_search_bound=True)
            fitted["anchor"]["outside_sweep"] = True
        if approach == "parametric":
            fitted["alpha2"] = 1.4
            fitted["fit"]["identification"]["weak"] = ["A2"]
            for replicate in fitted["bootstrap"][:2]:  # 2 of 4 refits collapsed
                replicate["flags"] = ["A2 on its bound"]
        write_json(estimates / f"{approach}.json", fitted)
    out = tmp_path / "report"
    build_report(ReportInputs(estimates, clean["runs"]), report_section(default_params), out)
    found = kinds(out)
    assert {
        "not_converged", "derivative_bound", "anchor", "weak_identification",
        "unreliable_interval",
    } <= set(found), found  # fmt: skip
    assert set(found["unreliable_interval"]) == {"151M", "302M"}
    markdown = (out / "report.md").read_text()
    assert "IsoFLOPs: fit nnv." in markdown and "alpha2 = 1.4 > 1" in markdown
    assert "| 50% |" in markdown  # the share of refits the interval left out
