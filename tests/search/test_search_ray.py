"""The staged search with a real local Ray, driven through the command line.

Each search runs in its own process with HOME pinned to the test's folder (Ray writes its
token there) and the Ray auth variables cleared. Processes are found through psutil and ended
by pid: only the ones these tests started.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from cluster.local.head import alive, descendants
from results_schema import epochs_schema, trials_schema
from search.rundir import FINAL
from tests.conftest import SMALL_NET, env_for, psvae, trial_folders, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.ray]

FIT = {
    **SMALL_NET,
    "train.epochs": 4,
    "train.batch_size": 32,
    "train.lr": 1e-3,
    "loss.anneal_epochs": 1,
}


def write_spec(
    tmp_path: Path, data: Path, stages: list, fit: dict | None = None, name: str = "s.yaml"
) -> Path:
    spec = {
        "data": [str(data)],
        "fit": {**FIT, **(fit or {})},
        "stages": stages,
        "max_failures": 2,
        "checkpoint_every_s": 0,  # every epoch, so the fault tests can count re-run epochs
        "dashboard": False,  # a third of Ray's start; the quick demo's tests cover the dashboard
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def start(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "search.cli", *args], env=env, stdout=out, stderr=out)


def cmdline(pid: int) -> str:
    """The process's command line, one string; "" once it is gone."""
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def end_all(pids: set[int], timeout: float = 20) -> None:
    """SIGKILL exactly these processes and wait until they are gone."""
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if alive(p)], "processes left behind"


@pytest.fixture
def tracked() -> Iterator[set[int]]:
    """Pids to end after the test, whatever happens."""
    pids: set[int] = set()
    yield pids
    end_all(pids)


def trial_dirs(run_dir: Path, stage: str) -> list[str]:
    """The stage's trial folders in the run's one Tune experiment."""
    return sorted(p.name for p in (run_dir / "tune").glob(f"{stage}-*") if p.is_dir())


def check_results(run_dir: Path, n_epochs: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One trials row per trial, one epochs row per trial-epoch, schemas as declared."""
    for name, schema in (("trials", trials_schema()), ("epochs", epochs_schema())):
        for part in (run_dir / "results" / name).glob("*/*.parquet"):
            assert pq.read_schema(part).equals(schema, check_metadata=False), part
    trials = pd.read_parquet(run_dir / "results" / "trials")
    epochs = pd.read_parquet(run_dir / "results" / "epochs")
    assert not trials.duplicated(["stage", "trial_id"]).any()
    assert not epochs.duplicated(["stage", "trial_id", "epoch"]).any()
    ran = trials[trials.reused_from.isna()]
    assert ran.trial_id.is_unique  # each fit once in the whole run
    for row in ran.itertuples():
        n = len(epochs[(epochs.stage == row.stage) & (epochs.trial_id == row.trial_id)])
        assert n == (n_epochs if row.status == "completed" else row.epochs_run), row
    for row in trials[trials.reused_from.notna()].itertuples():
        source = ran[ran.trial_id == row.reused_from]  # a completed fit of an earlier stage
        assert len(source) == 1 and source.stage.iloc[0] != row.stage and source.status.iloc[0] == "completed"
        assert source.config_json.iloc[0] == row.config_json and source.checkpoint.iloc[0] == row.checkpoint
        assert not (epochs.trial_id == row.trial_id).any()  # its epochs are the source's
    for stage in trials.stage.unique():
        assert len(ran[ran.stage == stage]) == len(trial_dirs(run_dir, stage)), stage
    return trials, epochs


def test_quick_demo_records_three_decisions_and_exports_a_loadable_model(tmp_path, quick_demo):
    run_dir = quick_demo.run_dir
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert [manifest["stages"][s]["status"] for s in ("alpha", "beta", "seeds")] == ["done"] * 3
    for stage in ("alpha", "beta", "seeds"):
        decision = manifest["stages"][stage]["decision"]
        assert decision["rule"] and decision["table"] and decision["explanation"]
    trials, _ = check_results(run_dir, n_epochs=2)
    assert sorted(trials.groupby("stage").size().items()) == [("alpha", 4), ("beta", 4), ("seeds", 3)]
    # the guide's plan fits 9 models, not 11: beta = 1 at the chosen alpha is the alpha stage's
    # choice, and the default seed is the beta stage's
    assert trials.reused_from.notna().sum() == 2 and len(trial_folders(run_dir)) == 9
    alpha_choice = manifest["stages"]["alpha"]["decision"]["trial_id"]
    assert trials[(trials.stage == "beta") & (trials.beta == 1)].reused_from.tolist() == [alpha_choice]
    beta_choice = manifest["stages"]["beta"]["decision"]["trial_id"]
    beta_fit = trials[trials.trial_id == beta_choice].reused_from.fillna(beta_choice).iloc[0]
    assert trials[(trials.stage == "seeds") & (trials.seed_model == 0)].reused_from.tolist() == [beta_fit]
    # every trial asks for the same CPUs, so a worker serves one trial after another; beta fits
    # 3 models on 2 slots, and the one that runs alone at its end takes the idle slot as threads
    params = {p.name: json.loads((p / "params.json").read_text()) for p in trial_folders(run_dir)}
    assert all("resources" not in p and "train.num_threads" not in p["set"] for p in params.values())
    reports = {name: map(json.loads, (run_dir / "tune" / name / "result.json").open()) for name in params}
    threads = {name: [r["threads"] for r in lines if "threads" in r] for name, lines in reports.items()}
    assert all(t and set(t) <= {1, 2} for t in threads.values()), threads
    assert any(2 in threads[name] for name in params if params[name]["stage"] == "beta"), threads
    assert (run_dir / "report" / "index.html").is_file()  # written by the search itself
    # the export loads in a fresh process that knows nothing of the run directory
    code = (
        "import numpy as np, psvae\n"
        "m = psvae.load_model('export')\n"
        "print(m.encode(np.zeros((2, 1, 64, 64), np.uint8)).labels.shape)"
    )
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copytree(run_dir / "export", moved / "export")
    out = subprocess.run([sys.executable, "-c", code], cwd=moved, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(2, 4)"  # the limbs scene's four labels
    assert json.loads((moved / "export" / "selection.json").read_text())["selected"]["stage"] == "seeds"
    # an existing directory is never overwritten without --force
    (moved / "export" / "note.txt").write_text("mine")
    refused = psvae("export", str(run_dir), "--out", str(moved / "export"), env=env_for(tmp_path))
    assert refused.returncode == 2 and "already exists" in refused.stderr
    assert (moved / "export" / "note.txt").read_text() == "mine"
    forced = psvae("export", str(run_dir), "--out", str(moved / "export"), "--force", env=env_for(tmp_path))
    assert forced.returncode == 0 and not (moved / "export" / "note.txt").exists()


def finished_reports(run_dir: Path) -> dict[str, str]:
    """Trial folder -> its result.json, for the trials that reported their end."""
    out = {}
    for result in (run_dir / "tune").glob("*/result.json"):
        text = result.read_text()
        if '"done": true' in text:
            out[result.parent.name] = text
    return out


def test_a_driver_killed_in_beta_then_in_seeds_resumes_without_rerunning_a_trial(
    tmp_path, synthetic_file, tracked
):
    # about resuming, not the latents: tiny fits whose latents barely vary may still be chosen
    screen = {"rule_params": {"min_active_var": 1e-9}}
    stages = [
        {"name": "alpha", "values": [50, 100]},
        {"name": "beta", "values": [1, 5], **screen},
        {"name": "seeds", "values": [0, 1], **screen},
    ]
    spec = write_spec(tmp_path, synthetic_file, stages, fit={"train.epochs": 12})
    env, storage = env_for(tmp_path), tmp_path / "runs"
    run_dir = storage / "r1"
    names = [s["name"] for s in stages]
    rows_before: dict[str, pd.DataFrame] = {}
    ended_before: dict[str, str] = {}
    # the search, SIGKILLed once its beta stage has a checkpoint; then its resume, SIGKILLed
    # once the seeds stage has one
    for n, (command, kill_in) in enumerate(
        [(["search", "--config", str(spec), "--run-id", "r1", "--storage", str(storage)], "beta"),
         (["resume", str(run_dir)], "seeds")]
    ):  # fmt: skip
        proc = start(*command, env=env, log=tmp_path / f"driver-{n}.log")
        tracked.add(proc.pid)

        def checkpointed(proc: subprocess.Popen[bytes] = proc, kill_in: str = kill_in) -> bool:
            tracked.update(descendants(proc.pid))
            # a checkpoint whose files have all arrived: the driver has logged its report
            return any(
                (c / "trial_config.json").is_file() and (c.parent / "result.json").stat().st_size > 0
                for c in (run_dir / "tune").glob(f"{kill_in}-*/checkpoint_*")
                if (c.parent / "result.json").is_file()
            )

        wait_for(checkpointed, 400, f"a checkpoint in the {kill_in} stage", proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        end_all(tracked)  # the local Ray processes the driver had started
        if kill_in == "beta":
            # as when the kill falls after the beta trial's first checkpoint but before Tune's
            # next save of its state: the state does not list the trial (a race seen here)
            unrecorded = forget_running_trials(run_dir, "beta")
        ended = finished_reports(run_dir)
        assert {name: ended[name] for name in ended_before} == ended_before  # none re-ran
        ended_before = ended
        decided = names[: names.index(kill_in)]
        for stage in decided:  # a decided stage's rows, written once
            rows = pd.read_parquet(run_dir / "results" / "trials" / f"stage-{stage}")
            if stage in rows_before:
                pd.testing.assert_frame_equal(rows, rows_before[stage])
            rows_before[stage] = rows

        # the interrupted run's status: the stages before decided, this one in progress, its trials
        status = psvae("status", str(run_dir), env=env)
        assert status.returncode == 0, status.stderr
        assert all(f"{s:<10} done" in status.stdout for s in decided), status.stdout
        assert f"{kill_in:<10} running" in status.stdout
        assert re.search(rf"{kill_in}\s+\S+\s+running\s+\S+=\S+\s+\d+/12", status.stdout), status.stdout

    # the first resume set that trial's folder aside and went on from its checkpoint
    first_resume = (tmp_path / "driver-1.log").read_text()
    assert f"{unrecorded}: a trial folder Tune's state did not record" in first_resume, first_resume[-3000:]
    assert "its trial goes on from checkpoint_" in first_resume
    assert (run_dir / "tune-set-aside" / unrecorded).is_dir() and not (run_dir / "tune" / unrecorded).exists()
    resumed = psvae("resume", str(run_dir), env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert all(f"stage {s}: done earlier" in resumed.stdout for s in ("alpha", "beta"))
    trials, _ = check_results(run_dir, n_epochs=12)
    # every trial that had ended was restored, not re-run; nothing new started for work begun
    after = finished_reports(run_dir)
    assert {name: after[name] for name in ended_before} == ended_before
    assert len(trial_folders(run_dir)) == 4  # 2 alpha + 1 beta + 1 seed; two reused
    for stage, before in rows_before.items():
        now = trials[trials.stage == stage].reset_index(drop=True)
        pd.testing.assert_frame_equal(now, before.reset_index(drop=True), check_dtype=False)
    assert sorted(trials.groupby("stage").size().items()) == [("alpha", 2), ("beta", 2), ("seeds", 2)]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["selected"]["stage"] == "seeds"
    # the beta fit went on: its new trial began past epoch 0, and its epochs are all there once
    beta = trials[(trials.stage == "beta") & trials.reused_from.isna()].iloc[0]
    assert beta.note.startswith(f"continued from {unrecorded}/checkpoint_"), beta.note
    reports = (run_dir / "tune" / f"beta-{beta.trial_id}" / "result.json").read_text().splitlines()
    assert json.loads(reports[0])["epoch"] > 0


def forget_running_trials(run_dir: Path, stage: str) -> str:
    """Remove the stage's one unfinished trial from Tune's newest experiment state (as a state
    saved just before that trial was recorded); returns its folder's name."""
    state = sorted((run_dir / "tune").glob("experiment_state-*.json"))[-1]
    data = json.loads(state.read_text())
    finished = set(finished_reports(run_dir))
    running = [
        entry for entry in data["trial_data"]
        if f"{stage}-{json.loads(entry[0])['trial_id']}" not in finished
        and json.loads(entry[0])["config"].get("stage") == stage
    ]  # fmt: skip
    assert len(running) == 1, [json.loads(e[0])["trial_id"] for e in data["trial_data"]]
    data["trial_data"].remove(running[0])
    state.write_text(json.dumps(data))
    return f"{stage}-{json.loads(running[0][0])['trial_id']}"


def test_a_killed_trial_is_retried_from_its_checkpoint(tmp_path, synthetic_file, tracked):
    n_epochs = 30
    spec = write_spec(
        tmp_path, synthetic_file, [{"name": "alpha", "values": [50]}], fit={"train.epochs": n_epochs}
    )
    env, storage = env_for(tmp_path), tmp_path / "runs"
    run_dir = storage / "r2"
    proc = start(
        "search",
        "--config",
        str(spec),
        "--run-id",
        "r2",
        "--storage",
        str(storage),
        env=env,
        log=tmp_path / "log",
    )
    tracked.add(proc.pid)

    def reports() -> list[dict]:
        files = list((run_dir / "tune").glob("alpha-*/result.json"))
        if not files:
            return []
        return [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]

    def worker() -> int | None:
        tracked.update(descendants(proc.pid))
        return next((p for p in descendants(proc.pid) if "ImplicitFunc" in cmdline(p)), None)

    wait_for(lambda: len(reports()) >= 5 and worker() is not None, 240, "five epochs reported", proc)
    epochs_before_kill = len(reports())
    victim = worker()
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(timeout=400) == 0, (tmp_path / "log").read_text()[-3000:]

    trials, _epochs = check_results(run_dir, n_epochs=n_epochs)
    assert trials.status.tolist() == ["completed"]
    reported = [r["epoch"] for r in reports() if "epoch" in r and not r.get(FINAL)]
    rerun = len(reported) - len(set(reported))
    # it went on from its last checkpoint: at most the epoch in flight (and one more while the
    # kill was noticed) ran twice, not the whole fit
    # Tune restored the trial (its iteration count since the restore restarted) ...
    assert any(r["iterations_since_restore"] < r["training_iteration"] for r in reports())
    assert set(reported) == set(range(n_epochs))
    assert rerun <= 2, f"{rerun} epochs re-run after the kill at epoch {epochs_before_kill}"
    assert len(reported) < n_epochs + epochs_before_kill
    print(f"trial killed after {epochs_before_kill} epochs; {rerun} epoch(s) re-run after its retry")


def test_a_diverging_trial_is_excluded_and_a_changed_spec_is_refused(tmp_path, synthetic_file, tracked):
    # about divergence, not the latents: three epochs leave them barely varying, chosen all the same
    screen = {"rule_params": {"min_active_var": 1e-9}}
    stages = [{"name": "lr", "key": "train.lr", "values": [1e-3, 1e8], **screen}]
    spec = write_spec(tmp_path, synthetic_file, stages, fit={"train.epochs": 3, "loss.anneal_epochs": 0})
    env, storage = env_for(tmp_path), tmp_path / "runs"
    done = psvae("search", "--config", str(spec), "--run-id", "r3", "--storage", str(storage), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = storage / "r3"
    token = tmp_path / ".ray" / "auth_token"  # written by ray.init() under the pinned HOME
    assert not token.exists() or token.stat().st_mode & 0o777 == 0o600
    trials, _ = check_results(run_dir, n_epochs=3)
    diverged = trials[trials.status == "diverged"]
    assert len(diverged) == 1 and "non-finite loss" in diverged.error.iloc[0]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    decision = manifest["stages"]["lr"]["decision"]
    assert manifest["stages"]["lr"]["fixes"] == {"train.lr": 1e-3}
    excluded = [row for row in decision["table"] if row["excluded"]]
    assert len(excluded) == 1 and excluded[0]["excluded"].startswith("diverged")
    # the report draws a stage with a key of its own and lists the diverged trial with its reason
    assert "was not refreshed" not in done.stdout
    page = (run_dir / "report" / "index.html").read_text()
    failures = page[page.index('<section id="failures"') :]
    assert diverged.trial_id.iloc[0] in failures and "non-finite loss" in failures
    assert page.count("data-figure") >= 3  # the lr sweep, the curves, the label traces

    changed = write_spec(
        tmp_path, synthetic_file, stages, fit={"train.epochs": 4, "loss.anneal_epochs": 0}, name="t.yaml"
    )
    refused = psvae("search", "--config", str(changed), "--run-id", "r3", "--storage", str(storage), env=env)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "different search spec" in refused.stderr
    assert json.loads((run_dir / "manifest.json").read_text()) == manifest  # untouched


def test_an_optuna_stage_samples_a_log_range_into_a_study_in_the_run_directory(
    tmp_path, synthetic_file, tracked
):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    stages = [{"name": "alpha", "algorithm": "optuna", "range": [10, 1000], "n_trials": 3}]
    spec = write_spec(tmp_path, synthetic_file, stages, fit={"train.epochs": 2})
    env, storage = env_for(tmp_path), tmp_path / "runs"
    done = psvae("search", "--config", str(spec), "--run-id", "r4", "--storage", str(storage), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = storage / "r4"
    trials, _ = check_results(run_dir, n_epochs=2)
    assert len(trials) == 3 and trials.alpha.between(10, 1000).all() and trials.alpha.nunique() == 3
    journal = optuna.storages.JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal")))
    study = optuna.load_study(study_name="r4-alpha", storage=journal)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3 and all(len(t.values) == 2 for t in complete)  # pixel and label MSE
    assert sorted(t.params["loss.alpha"] for t in complete) == pytest.approx(sorted(trials.alpha))
    assert study.metric_names == ["val_pixel_mse", "val_label_mse"]  # named in optuna-dashboard
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["alpha"]["decision"]["rule"] == "alpha_label_band"
    assert f"optuna-dashboard {run_dir / 'optuna.journal'}" in (run_dir / "report" / "index.html").read_text()
