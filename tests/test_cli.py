"""The command line: bad input is one clear line and exit status 2; a bug shows its traceback
and exits with 1."""

from __future__ import annotations

import pytest
from conftest import REPO

from vocabscale import cli
from vocabscale.cluster import command as plan_command
from vocabscale.io import write_json

PAPER = REPO / "workflow/presets/paper.yaml"


def test_a_bug_shows_its_traceback_and_exits_with_1(monkeypatch, capsys, tmp_path):
    """A KeyError was printed as the bare key name, "tokenizer_sha256", exit 2."""

    def buggy(args):
        return {}["tokenizer_sha256"]

    monkeypatch.setattr(plan_command, "run", buggy)
    log = tmp_path / "plan.log"
    with pytest.raises(SystemExit) as stopped:
        cli.main(["plan", "--log", str(log)])
    assert stopped.value.code == 1
    said = capsys.readouterr().err
    assert "plan failed: an unexpected error (a bug)" in said
    assert "Traceback" in said and "KeyError: 'tokenizer_sha256'" in said
    assert "KeyError: 'tokenizer_sha256'" in log.read_text()  # the rule's log keeps it too


def test_a_record_without_a_field_is_one_line_naming_the_file_and_the_key(capsys, tmp_path):
    stats = tmp_path / "v4096" / "stats.json"
    write_json(stats, {"splits": {"train": {"characters": 10}}})
    with pytest.raises(SystemExit) as stopped:
        cli.main(["plan", "--params", str(PAPER), "--tokens-dir", str(tmp_path)])
    assert stopped.value.code == 2
    said = capsys.readouterr().err
    assert f"{stats}: no 'splits.train.tokens' (written by another version" in said
    assert "Traceback" not in said
