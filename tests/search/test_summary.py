"""One summary.json shape: ``psvae fit`` writes it into its folder and a search trial into its
last checkpoint (FitSummary.to_json); the trial's report to Tune, and so the trials table, is
read from it, after a restore too, and a last checkpoint written before the shapes were one
still restores."""

from __future__ import annotations

import json

import pytest

from psvae.fit import SUMMARY, run_fit
from search import rundir
from search.scheduler import TrialOutcome, trial_rows
from search.trainable import _restore, final_report, summary_record
from tests.conftest import small_config


@pytest.fixture(scope="module")
def fitted(synthetic_file, tmp_path_factory):
    cfg = small_config(**{"train.epochs": 2, "loss.anneal_epochs": 0})
    out = tmp_path_factory.mktemp("fit") / "fit"
    summary = run_fit([str(synthetic_file)], cfg, out, progress=False)
    return cfg, summary, json.loads((out / SUMMARY).read_text())


def test_psvae_fit_and_a_search_trial_write_the_same_summary(fitted):
    _, summary, written = fitted
    assert SUMMARY == rundir.SUMMARY
    record = json.loads(json.dumps(summary_record(summary)))  # as the checkpoint holds it
    assert record == written
    assert set(written) == {"status", "precision", "epochs_run", "best_epoch", "label_names", "metrics"}
    assert written["label_names"] == list(summary.label_names) and written["metrics"]
    noted = summary_record(summary, restarted="continued from checkpoint_000001: ...")
    assert set(noted) - set(written) == {"restarted"}


def test_the_trials_row_comes_from_the_summary(fitted):
    cfg, _, written = fitted
    report = {**final_report(written), "done": True}
    assert (
        report["fit_status"] == "completed"
        and json.loads(report["label_names_json"]) == written["label_names"]
    )
    config = {"base": cfg.flat(), "set": {}}
    row, _ = trial_rows(TrialOutcome("t1", config, report, None, [], None), "run-1", "alpha")
    assert row["status"] == "completed" and row["epochs_run"] == written["epochs_run"]
    assert row["val_label_r2"] == pytest.approx(written["metrics"]["val_label_r2"])


def test_a_finished_trials_checkpoint_restores_its_outcome_in_either_shape(fitted, tmp_path):
    from ray import tune

    _, summary, written = fitted
    old_flat = final_report(written)  # what last checkpoints held before the shapes were one
    for name, record in (("checkpoint_000002", summary_record(summary)), ("checkpoint_000001", old_flat)):
        folder = tmp_path / "tune" / "alpha-t1" / name
        folder.mkdir(parents=True)
        (folder / rundir.SUMMARY).write_text(json.dumps(record))
        (folder / rundir.HISTORY).write_text("[]")
        _, used, final, note = _restore(lambda: None, tune.Checkpoint(str(folder)))  # type: ignore[arg-type]
        assert note is None and used.path == str(folder)
        assert final == old_flat
