"""Runs tables from other training stacks: renames, bad cells, exclusions, run grouping."""

import logging

import numpy as np
import pandas as pd
import pytest

from vocabscale.estimate import synthetic
from vocabscale.estimate.anchor import empirical_anchor
from vocabscale.estimate.approaches import fit_approach
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.runs.table import (
    RunsTableError,
    load_runs,
    parse_renames,
    prepare_runs,
    width_from_runs,
)
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    law = synthetic.parametric_law(PAPER_COEFFICIENTS["parametric"])
    return synthetic.runs_table(law, synthetic.paper_models(3), (4096, 8192, 16384), 6)


def test_missing_columns_are_named(table, tmp_path):
    path = tmp_path / "runs.csv"
    table.drop(columns=["loss_u", "flops"]).to_csv(path, index=False)
    with pytest.raises(RunsTableError, match=r"runs\.csv: missing column\(s\) flops, loss_u"):
        load_runs(path, PAPER_TOKENS_PER_CHAR)


def test_renames_map_their_columns_to_ours(table, tmp_path):
    path = tmp_path / "theirs.csv"
    table.rename(columns={"non_vocab_params": "nnv", "loss_u": "unigram_loss"}).to_csv(
        path, index=False
    )
    renames = parse_renames(["nnv=non_vocab_params", "unigram_loss=loss_u"])
    runs = load_runs(path, PAPER_TOKENS_PER_CHAR, renames)
    assert len(runs.frame) == len(table)
    with pytest.raises(RunsTableError, match="--column names params"):
        load_runs(path, PAPER_TOKENS_PER_CHAR, {"params": "non_vocab_params"})
    with pytest.raises(RunsTableError, match="expected THEIRS=OURS"):
        parse_renames(["nnv"])


def test_non_numeric_cell_names_line_and_column(table, tmp_path):
    bad = table.astype({"flops": object})
    bad.loc[4, "flops"] = "n/a?"
    path = tmp_path / "runs.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(RunsTableError, match=r"runs\.csv: line 6, column flops: 'n/a\?' is not "
                       r"a number$"):  # fmt: skip
        load_runs(path, PAPER_TOKENS_PER_CHAR)
    bad.loc[[7, 9, 10, 11, 12], "flops"] = "?"
    bad.to_csv(path, index=False)
    with pytest.raises(RunsTableError, match=r"'n/a\?' is not a number \(also lines 9, 11, 12 "
                       r"and 2 more\)"):  # fmt: skip
        load_runs(path, PAPER_TOKENS_PER_CHAR)


def test_a_blank_vocab_params_cell_is_v_d_as_an_absent_column_is(table, tmp_path):
    """It reached the parametric fit as nan."""
    blank = table.copy()
    blank.loc[[3, 8], "vocab_params"] = np.nan
    path = tmp_path / "runs.csv"
    blank.to_csv(path, index=False)
    assert pd.read_csv(path)["vocab_params"].isna().sum() == 2  # a blank cell
    frame = load_runs(path, PAPER_TOKENS_PER_CHAR).frame
    assert np.isfinite(frame["vocab_params"]).all()
    np.testing.assert_array_equal(frame["vocab_params"], frame["vocab_size"] * frame["d_model"])


def test_blank_steps_beside_given_ones_are_an_error_naming_the_lines(table, tmp_path):
    """A checkpoint without its step cannot be told from another; a column of blank steps is
    no column (checkpoints told apart by flops), and a diverged row needs none."""
    blank = table.copy()
    blank.loc[[2, 5], "step"] = np.nan
    path = tmp_path / "runs.csv"
    blank.to_csv(path, index=False)
    with pytest.raises(RunsTableError, match=r"runs\.csv: lines 4, 7, column step: blank where "
                       r"other rows give the step"):  # fmt: skip
        load_runs(path, PAPER_TOKENS_PER_CHAR)
    blank.assign(diverged=[row in (2, 5) for row in range(len(table))]).to_csv(path, index=False)
    assert len(load_runs(path, PAPER_TOKENS_PER_CHAR).frame) == len(table) - 2
    blank.assign(step=np.nan).to_csv(path, index=False)
    assert len(load_runs(path, PAPER_TOKENS_PER_CHAR).frame) == len(table)


def test_nan_inf_and_diverged_rows_are_excluded_and_counted(table, caplog):
    bad = table.copy()
    bad.loc[0, "loss_u"] = np.nan
    bad.loc[1, "loss_u"] = np.inf
    bad.loc[2, "flops"] = -np.inf
    bad.loc[[3, 4], "diverged"] = True
    with caplog.at_level(logging.WARNING):
        runs = prepare_runs(bad, PAPER_TOKENS_PER_CHAR, "theirs.csv")
    assert runs.excluded == {"diverged": 2, "non_finite": 3, "non_positive": 0, "repeated": 0}
    assert len(runs.frame) == len(table) - 5
    assert "theirs.csv: excluded 2 diverged, 3 non-finite rows" in caplog.text
    assert "theirs.csv: lines 2, 3, 4: blank, nan or inf in a required column" in caplog.text


def test_a_0_1_diverged_column_with_a_blank_cell_marks_the_ones(table, tmp_path):
    """pandas reads such a column as floats: 1.0 is diverged, the blank is not."""
    marked = table.assign(diverged=[0] * len(table)).astype({"diverged": object})
    marked.loc[[3, 4], "diverged"] = 1
    marked.loc[5, "diverged"] = None
    path = tmp_path / "runs.csv"
    marked.to_csv(path, index=False)
    assert pd.read_csv(path)["diverged"].dtype == float  # 1.0, 0.0 and NaN
    runs = load_runs(path, PAPER_TOKENS_PER_CHAR)
    assert runs.excluded["diverged"] == 2 and len(runs.frame) == len(table) - 2
    marked.loc[6, "diverged"] = "maybe"
    marked.to_csv(path, index=False)
    with pytest.raises(RunsTableError, match=r"runs\.csv: line 8, column diverged: 'maybe'"):
        load_runs(path, PAPER_TOKENS_PER_CHAR)


def test_a_repeated_row_is_dropped_and_counted(table, caplog):
    repeated = pd.concat([table, table.iloc[[2, 7]]], ignore_index=True)
    with caplog.at_level(logging.WARNING):
        runs = prepare_runs(repeated, PAPER_TOKENS_PER_CHAR, "theirs.csv")
    assert runs.excluded["repeated"] == 2 and len(runs.frame) == len(table)
    assert "theirs.csv: excluded 2 repeated rows" in caplog.text


def test_two_different_rows_at_one_checkpoint_are_an_error_naming_the_lines(table):
    clash = pd.concat([table, table.iloc[[2]].assign(loss_u=-1.0)], ignore_index=True)
    with pytest.raises(RunsTableError, match=rf"lines 4 and {len(table) + 2} are two different "
                       rf"rows at step 3 of run {table.at[2, 'run_id']}"):  # fmt: skip
        prepare_runs(clash, PAPER_TOKENS_PER_CHAR, "theirs.csv")


def test_runs_without_run_id_that_share_a_key_are_not_merged(table):
    """Two runs of one (Nnv, V), e.g. two seeds, in a table without run_id: an error that
    says so, not one run with two rows at each checkpoint."""
    one_run = table[table["run_id"] == table.at[0, "run_id"]]
    seeds = pd.concat([table, one_run.assign(loss_u=one_run["loss_u"] + 0.01)], ignore_index=True)
    with pytest.raises(RunsTableError, match=r"lines 2 and \d+ are two different rows at step 1 "
                       r"of \(non_vocab_params, vocab_size\) = .*add run_id"):  # fmt: skip
        prepare_runs(seeds.drop(columns=["run_id"]), PAPER_TOKENS_PER_CHAR, "theirs.csv")
    # two widths under one key are two runs too
    wider = one_run.assign(d_model=one_run["d_model"] * 2, step=one_run["step"] + 100)
    wider["flops"] = 6 * (wider["non_vocab_params"] + wider["vocab_size"] * wider["d_model"])
    wider["flops"] *= wider["tokens"]
    wider["vocab_params"] = wider["vocab_size"] * wider["d_model"]
    merged = pd.concat([table, wider], ignore_index=True).drop(columns=["run_id"])
    with pytest.raises(RunsTableError, match=r"line 2: d_model \S+, \S+ in one run"):
        prepare_runs(merged, PAPER_TOKENS_PER_CHAR, "theirs.csv")


def test_negative_tokens_are_excluded_and_counted(table):
    bad = table.copy()
    bad.loc[[1, 2], "tokens"] = -bad.loc[[1, 2], "tokens"]
    runs = prepare_runs(bad, PAPER_TOKENS_PER_CHAR)
    assert runs.excluded["non_positive"] == 2 and (runs.frame["tokens"] > 0).all()


@pytest.mark.parametrize(
    ("column", "factor", "formula"),
    [("flops", 1.2, r"6 \(Nnv \+ V d\) D"), ("vocab_params", 2.0, "V d")],
)
def test_compute_in_another_convention_is_an_error_naming_the_line(table, column, factor, formula):
    """flops with attention, or both embedding matrices in Nv: every fit would be in another
    unit of compute than the predictions."""
    bad = table.copy()
    bad.loc[4, column] *= factor
    with pytest.raises(RunsTableError, match=rf"theirs.csv: line 6, column {column}: .* is not "
                       rf"{formula}"):  # fmt: skip
        prepare_runs(bad, PAPER_TOKENS_PER_CHAR, "theirs.csv")


def test_tokens_are_derived_from_characters_when_absent(table):
    runs = prepare_runs(table.drop(columns=["tokens"]), PAPER_TOKENS_PER_CHAR)
    np.testing.assert_allclose(runs.frame["tokens"], table["tokens"], rtol=1e-12)
    with pytest.raises(RunsTableError, match="no 'tokens' column"):
        prepare_runs(table.drop(columns=["tokens"]), None)


def test_runs_are_grouped_by_columns_not_row_order(table):
    """Without run_id, runs are (non_vocab_params, vocab_size); shuffled rows give the same
    fit as ordered ones."""
    plain = table.drop(columns=["run_id"])
    shuffled = plain.sample(frac=1.0, random_state=1).reset_index(drop=True)
    runs, mixed = (prepare_runs(t, PAPER_TOKENS_PER_CHAR) for t in (plain, shuffled))
    assert sorted(mixed.run_ids) == sorted(runs.run_ids)
    assert len(mixed.run_ids) == table["run_id"].nunique()
    f = PAPER_TOKENS_PER_CHAR
    anchor, anchor_mixed = (empirical_anchor(r) for r in (runs, mixed))
    assert anchor_mixed["vocab_size"] == anchor["vocab_size"]
    assert anchor_mixed["flops"] == anchor["flops"]
    assert fit_approach("derivative", mixed, f).coefficients["gamma"] == pytest.approx(
        fit_approach("derivative", runs, f).coefficients["gamma"], rel=1e-12
    )


def test_bootstrap_subset_keeps_repeated_runs_apart(table):
    runs = prepare_runs(table, PAPER_TOKENS_PER_CHAR)
    first = runs.run_ids[0]
    sample = runs.subset([first, first, runs.run_ids[1]])
    assert sample.frame["run"].nunique() == 3
    assert len(sample.frame) == 3 * 6
    assert (sample.frame.groupby("run")["step"].apply(list) == [list(range(1, 7))] * 3).all()


def test_width_from_runs_interpolates_and_extends():
    frame = pd.DataFrame({"non_vocab_params": [1e6, 8e6, 64e6], "d_model": [100, 200, 400]})
    width = width_from_runs(frame)
    np.testing.assert_allclose(width([1e6, 8e6, 64e6]), [100, 200, 400])
    assert width(np.sqrt(8e6 * 64e6)) == pytest.approx(np.sqrt(200 * 400))
    assert width(512e6) == pytest.approx(800)  # d ∝ Nnv^(1/3) continued beyond the models
    with pytest.raises(RunsTableError, match="single trained model size"):
        width_from_runs(frame.iloc[:1])
