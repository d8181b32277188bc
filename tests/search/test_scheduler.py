"""The staged plan without Ray: what it suggests, when it decides, what it reuses and how it
takes up a restarted experiment (a stage's last trials taking idle slots: test_threads.py).
Trials "run" by being given a made-up outcome whose metrics a rule can decide on; the run
directory, manifest and Parquet files are real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from search.rundir import Manifest, RunDir
from search.scheduler import FINISHED, StagedSearch, TrialOutcome, fit_key
from search.spec import parse_spec
from tests.conftest import SMALL_NET


def test_the_thread_count_is_not_part_of_what_a_fit_is() -> None:
    a = {"loss.alpha": 50.0, "train.num_threads": 1}
    assert fit_key(a) == fit_key({**a, "train.num_threads": 2})
    assert fit_key(a) != fit_key({**a, "loss.alpha": 100.0})


def make_search(tmp_path: Path, synthetic_file: Path, stages: list[Any], slots: int = 2) -> StagedSearch:
    raw = {"data": [str(synthetic_file)], "fit": {**SMALL_NET, "train.epochs": 3}, "stages": stages}
    spec = parse_spec(raw, "search.yaml", tmp_path)
    folder = tmp_path / "runs" / "r1"
    folder.mkdir(parents=True)
    run = RunDir(folder, str(folder), "r1")
    manifest = Manifest("r1", spec.spec_hash(), spec.to_dict(), {})
    run.write(manifest)
    return StagedSearch(spec, run, manifest, log=lambda line: None, slots=slots)


def finish(
    search: StagedSearch, trial_id: str, config: dict[str, Any], corr: float, pixel: float = 0.01
) -> None:
    """Tell the plan the trial completed, with the selection metrics given."""
    metrics = {
        "done": True, "fit_status": "completed", "epochs_run": 3, "best_epoch": 2, "label_names_json": "[]",
        "val_pixel_mse": pixel, "val_label_mse": 0.1, "val_label_r2": 0.9, "train_mean_abs_corr_u": corr,
        "time_total_s": 1.0,
    }  # fmt: skip
    history = [{"epoch": e, "status": "running"} for e in range(3)]
    search.trial_ended(
        TrialOutcome(trial_id, config, metrics, f"tune/{trial_id}/checkpoint_000002", history, None)
    )


def suggest_all(search: StagedSearch, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    while isinstance(config := search.suggest(f"{prefix}{len(out)}"), dict):
        out.append((f"{prefix}{len(out)}", {**config, "base": search.base_flat}))
    return out


def test_the_plan_decides_each_stage_and_reuses_fits_an_earlier_stage_made(tmp_path, synthetic_file):
    stages = [{"name": "alpha", "values": [50, 100]}, {"name": "beta", "values": [1, 5, 10]}]
    search = make_search(tmp_path, synthetic_file, stages)
    alpha = suggest_all(search, "a")
    assert [c["set"]["loss.alpha"] for _, c in alpha] == [50.0, 100.0]
    assert search.suggest("wait") is None  # the beta stage waits for alpha's decision
    for (trial_id, config), pixel in zip(alpha, (0.02, 0.01), strict=True):
        finish(search, trial_id, config, corr=0.5, pixel=pixel)
    beta = suggest_all(search, "b")  # alpha decided: alpha = 100 (the lower pixel MSE)
    manifest = json.loads(search.run.manifest_path.read_text())
    assert manifest["stages"]["alpha"]["fixes"] == {"loss.alpha": 100.0}
    # beta = 1 at alpha = 100 is the alpha stage's fit: not suggested again
    assert manifest["stages"]["beta"]["reused"] == ["a1@beta"]
    assert [c["set"]["loss.beta"] for _, c in beta] == [5.0, 10.0]
    assert all(c["set"]["loss.alpha"] == 100.0 and c["hp"]["alpha"] == 100.0 for _, c in beta)
    for (trial_id, config), corr in zip(beta, (0.4, 0.6), strict=True):
        finish(search, trial_id, config, corr=corr)
    assert search.suggest("x") == FINISHED
    manifest = json.loads(search.run.manifest_path.read_text())
    assert manifest["status"] == "done" and manifest["selected"]["trial_id"] == "b0"
    rows = {r["trial_id"]: r for r in search._rows_of_done_stages()}
    assert (
        rows["a1@beta"]["reused_from"] == "a1"
        and rows["a1@beta"]["checkpoint"] == "tune/a1/checkpoint_000002"
    )


def test_after_a_restart_the_plan_takes_up_the_trials_tune_restored(tmp_path, synthetic_file):
    stages = [{"name": "alpha", "values": [50, 100, 500]}]
    first = make_search(tmp_path, synthetic_file, stages)
    trials = suggest_all(first, "a")
    # the driver dies: one trial had ended, one was running, one never reached Tune's state
    ended_id, ended_config = trials[0]
    running_id, running_config = trials[1]
    again = StagedSearch(first.spec, first.run, first.run.read(), log=lambda line: None, slots=2)
    outcome = TrialOutcome(ended_id, ended_config, {
        "done": True, "fit_status": "completed", "epochs_run": 3, "label_names_json": "[]",
        "val_pixel_mse": 0.01, "val_label_mse": 0.1, "train_mean_abs_corr_u": 0.2,
    }, "tune/x/checkpoint_000002", [], None)  # fmt: skip
    again.restore([(ended_id, ended_config, outcome), (running_id, running_config, None)])
    lost = again.suggest("a9")
    assert isinstance(lost, dict) and lost["set"]["loss.alpha"] == 500.0  # only the lost one again
    assert again.suggest("a10") is None  # the running one is Tune's to finish
    finish(again, running_id, running_config, corr=0.3)
    finish(again, "a9", {**lost, "base": again.base_flat}, corr=0.3)
    assert again.suggest("a11") == FINISHED
    rows = again.run.results / "trials" / "stage-alpha" / "part-0.parquet"
    import pyarrow.parquet as pq

    assert sorted(pq.read_table(rows).column("trial_id").to_pylist()) == sorted([ended_id, running_id, "a9"])


def test_a_stage_whose_rule_finds_nothing_fails_the_search_in_one_line(tmp_path, synthetic_file):
    search = make_search(tmp_path, synthetic_file, [{"name": "alpha", "values": [50]}])
    (trial_id, config), *_ = suggest_all(search, "a")
    search.trial_ended(
        TrialOutcome(trial_id, config, {"done": True}, None, [], "RuntimeError: out of memory")
    )
    assert search.suggest("x") == FINISHED
    assert search.failed is not None and "\n" not in search.failed and "out of memory" in search.failed
    manifest = json.loads(search.run.manifest_path.read_text())
    assert manifest["status"] == "failed" and manifest["stages"]["alpha"]["status"] == "failed"


def test_a_trial_folder_tunes_state_never_recorded_is_set_aside_and_its_trial_goes_on_from_it(
    tmp_path, synthetic_file
):
    stages = [{"name": "alpha", "values": [50, 100, 500]}]
    first = make_search(tmp_path, synthetic_file, stages)
    trials = suggest_all(first, "a")
    # the driver dies: a1 is in Tune's state; a2's worker had written a checkpoint, but Tune's
    # state was saved before a2 was recorded; a folder of a3 (no such trial) holds a checkpoint
    # that never got its files
    experiment = first.run.local / "tune"
    for trial_id, config in trials[1:]:
        for n, files in ((0, ("trainer.pt", "trial_config.json")), (1, ("trainer.pt",))):
            folder = experiment / f"alpha-{trial_id}" / f"checkpoint_00000{n}"
            folder.mkdir(parents=True)
            for name in files:
                (folder / name).write_text(json.dumps(config) if name.endswith(".json") else "state")
    (experiment / "alpha-a3" / "checkpoint_000000").mkdir(parents=True)
    (experiment / "beta-zz").mkdir()  # another stage's: not this stage's to take up
    lines: list[str] = []
    again = StagedSearch(first.spec, first.run, first.run.read(), log=lines.append, slots=2)
    again.restore([(trials[1][0], trials[1][1], None)])
    assert (experiment / "alpha-a1").is_dir() and (experiment / "beta-zz").is_dir()  # known / other
    aside = first.run.local / "tune-set-aside"
    assert sorted(p.name for p in aside.iterdir()) == ["alpha-a2", "alpha-a3"]
    assert not (experiment / "alpha-a2").exists() and not (experiment / "alpha-a3").exists()
    assert any(
        "alpha-a2: a trial folder Tune's state did not record" in line
        and "goes on from checkpoint_000000" in line
        for line in lines
    ), lines
    assert any(line.startswith("alpha-a3:") and "nothing in it to go on from" in line for line in lines), (
        lines
    )
    # the first trial (never in Tune's state either, no folder) and a2 are suggested again; a2
    # goes on from its set-aside checkpoint that has its config, not the newer one without it
    suggested = {c["set"]["loss.alpha"]: c for c in (again.suggest("n0"), again.suggest("n1"))}
    assert sorted(suggested) == [50.0, 500.0] and again.suggest("n2") is None
    assert "continue_from" not in suggested[50.0]
    assert suggested[500.0]["continue_from"] == str(aside / "alpha-a2" / "checkpoint_000000")


def test_a_set_aside_folder_of_the_same_name_is_kept_and_the_new_one_numbered(tmp_path):
    from search.rundir import set_aside_unrecorded

    folder = tmp_path / "runs" / "r1"
    run = RunDir(folder, str(folder), "r1")
    for name in ("alpha-x", "alpha-x.1"):  # set aside by two earlier resumes
        (folder / "tune-set-aside" / name).mkdir(parents=True)
        (folder / "tune-set-aside" / name / "kept").write_text(name)
    (folder / "tune" / "alpha-x" / "checkpoint_000000").mkdir(parents=True)
    found = set_aside_unrecorded(run, "alpha", known=set())
    assert [f.folder.name for f in found] == ["alpha-x.2"] and found[0].checkpoint is None
    assert (found[0].folder / "checkpoint_000000").is_dir() and not (folder / "tune" / "alpha-x").exists()
    for name in ("alpha-x", "alpha-x.1"):
        assert (folder / "tune-set-aside" / name / "kept").read_text() == name
