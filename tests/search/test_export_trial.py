"""``psvae export RUN --trial ID`` on the quick demo's finished run: any trial, not only the
selected one; a trial that is not in the run is one line and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from psvae.export import load_model
from results_schema.columns import CHECKPOINT, REUSED_FROM, STAGE, TRIAL_ID
from search.cli import main
from search.rundir import RunDir
from tests.search.conftest import QuickDemo

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # the quick demo


def test_export_trial_writes_that_trials_bundle_and_names_it(quick_demo: QuickDemo, tmp_path: Path) -> None:
    run_dir = quick_demo.run_dir
    manifest = json.loads((run_dir / "manifest.json").read_text())
    trials = RunDir.open(run_dir).results_table("trials")
    # a beta trial with a fit of its own that is not the selected model's fit (the selected seed
    # trial may be a reuse of a beta trial: that one has the selected weights)
    others = trials[trials[REUSED_FROM].isna() & (trials[CHECKPOINT] != manifest["selected"]["checkpoint"])]
    row = others[others[STAGE] == "beta"].iloc[0]
    out = tmp_path / "beta-trial"
    assert main(["export", str(run_dir), "--trial", row[TRIAL_ID], "--out", str(out)]) == 0
    model = load_model(out)
    assert model.network.n_unsupervised == row["n_unsupervised"]
    selection = json.loads((out / "selection.json").read_text())
    assert selection["exported"]["trial_id"] == row[TRIAL_ID] and selection["exported"]["stage"] == "beta"
    assert selection["exported"]["is_selected"] is False
    assert selection["selected"]["trial_id"] == manifest["selected"]["trial_id"]
    # its own weights: those of its checkpoint, not the selected model's
    own = run_dir / row[CHECKPOINT] / "model" / "weights.pt"
    chosen = run_dir / manifest["selected"]["checkpoint"] / "model" / "weights.pt"
    assert (out / "weights.pt").read_bytes() == own.read_bytes() != chosen.read_bytes()


def test_export_of_a_trial_not_in_the_run_is_one_line_and_writes_nothing(
    quick_demo: QuickDemo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = quick_demo.run_dir
    out = tmp_path / "nothing"
    assert main(["export", str(run_dir), "--trial", "n0such1d", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("psvae: error: ") and "Traceback" not in err, err
    assert "n0such1d" in err and str(run_dir) in err, err
    assert not out.exists() and list(tmp_path.iterdir()) == []
