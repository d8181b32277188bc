"""Faults with a real local Ray, through the command line: a second driver on a run, a killed
driver whose run is then damaged and moved, a full disk (a real small tmpfs) and a damaged
checkpoint of a running trial. Each fault ends in one line and a run that resumes, with every
trial's row once and no trial that had ended run again.

Processes are found through psutil and ended by pid: only the ones these tests started.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from cluster.local.head import descendants
from search.rundir import RunDir, check_tune_state
from tests.conftest import env_for, psvae, small_tmpfs, trial_folders, wait_for
from tests.search.test_search_ray import (
    check_results,
    cmdline,
    end_all,
    finished_reports,
    start,
    write_spec,
)

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture
def tracked() -> Iterator[set[int]]:
    """Pids to end after the test, whatever happens."""
    pids: set[int] = set()
    yield pids
    end_all(pids)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of the psvae processes: HOME pinned, Ray's temporary folder our own."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # Ray's sockets: a short path
    yield {**env_for(tmp_path), "RAY_TMPDIR": str(ray_tmp)}
    shutil.rmtree(ray_tmp, ignore_errors=True)


def psvae_lines(stderr: str) -> list[str]:
    """What psvae itself printed on stderr (Ray prints a notice of its own when it starts)."""
    return [line for line in stderr.splitlines() if line.startswith("psvae")]


def one_line(stderr: str) -> bool:
    return len(psvae_lines(stderr)) == 1 and "Traceback" not in stderr


def kill_driver(proc: subprocess.Popen[bytes], tracked: set[int]) -> None:
    """SIGKILL the driver, then the local Ray it had started (its processes, by pid)."""
    tracked.update(descendants(proc.pid))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    end_all(tracked)


def test_one_driver_per_run_and_a_killed_damaged_and_moved_run_resumes(
    tmp_path, synthetic_file, tracked, env
):
    stages = [{"name": "alpha", "values": [50, 100]}, {"name": "beta", "values": [1, 5]}]
    spec = write_spec(tmp_path, synthetic_file, stages, fit={"train.epochs": 60})
    storage = tmp_path / "runs"
    run_dir = storage / "r1"
    args = ["--config", str(spec), "--run-id", "r1", "--storage", str(storage)]
    proc = start("search", *args, env=env, log=tmp_path / "first.log")
    tracked.add(proc.pid)

    def in_beta() -> bool:
        tracked.update(descendants(proc.pid))
        return any((run_dir / "tune").glob("beta-*/checkpoint_00000[2-9]"))

    wait_for(in_beta, 600, "the third checkpoint in the beta stage", proc)

    # 1. one driver per run: a second search of the run, and a resume, are refused in one line
    for refused in (psvae("search", *args, env=env), psvae("resume", str(run_dir), env=env)):
        assert refused.returncode == 2 and one_line(refused.stderr), refused.stderr[-2000:]
        assert f"another psvae driver is running this run (pid {proc.pid} on" in refused.stderr
    assert proc.poll() is None  # the first driver goes on

    def beta_reports() -> int:
        found = sorted((run_dir / "tune").glob("beta-*/result.json"))
        return len(found[0].read_text().splitlines()) if found else 0

    seen = beta_reports()
    wait_for(lambda: beta_reports() > seen, 120, "the first driver's next report", proc)

    # 2. the driver is killed: its lock dies with it
    kill_driver(proc, tracked)
    ended_before = finished_reports(run_dir)
    alpha_rows = pd.read_parquet(run_dir / "results" / "trials" / "stage-alpha")

    # 3. damage, as a kill or a disk leaves it: a report cut short is read around
    beta_result = sorted((run_dir / "tune").glob("beta-*/result.json"))[0]
    text = beta_result.read_text()
    beta_result.write_text(text + text.splitlines()[-1][:40])  # a line being written when killed
    status = psvae("status", str(run_dir), env=env)
    assert status.returncode == 0 and f"{'beta':<10} running" in status.stdout, status.stderr
    assert re.search(r"beta\s+\S+\s+running\s+\S+=\S+\s+\d+/60", status.stdout), status.stdout
    assert "Traceback" not in status.stderr

    # ... Tune's experiment state cut short: one line naming it, nothing started
    state = sorted((run_dir / "tune").glob("experiment_state-*.json"))[-1]
    whole = state.read_bytes()
    state.write_bytes(whole[: len(whole) // 2])
    refused = psvae("resume", str(run_dir), env=env)
    assert refused.returncode == 2 and one_line(refused.stderr), refused.stderr[-2000:]
    assert f"{state}: damaged" in refused.stderr
    state.write_bytes(whole)
    check_tune_state(RunDir.open(run_dir))

    # ... a decided stage's results: one line naming the file (its rows cannot be made again)
    alpha_part = run_dir / "results" / "trials" / "stage-alpha" / "part-0.parquet"
    good = alpha_part.read_bytes()
    alpha_part.write_bytes(good[:100])
    refused = psvae("resume", str(run_dir), env=env)
    assert refused.returncode == 2 and one_line(refused.stderr), refused.stderr[-2000:]
    assert f"{alpha_part}: damaged" in refused.stderr and "the alpha stage is decided" in refused.stderr
    alpha_part.write_bytes(good)

    # ... the running stage's results: set aside and rebuilt from its trials
    beta_part = run_dir / "results" / "trials" / "stage-beta" / "part-0.parquet"
    assert beta_part.is_file()  # written when the stage began: its row reused from alpha
    beta_part.write_bytes(b"\0" * 64)

    # ... the checkpoint Tune's state names is gone (a driver killed between Tune deleting the
    # older checkpoint and saving its state): the trial goes on from the one that is there
    beta_trial = sorted((run_dir / "tune").glob("beta-*"))[0]
    kept = sorted(beta_trial.glob("checkpoint_*"))
    newest = kept[-1]
    later = newest.with_name(f"checkpoint_{int(newest.name.split('_')[1]) + 1:06d}")
    os.rename(newest, later)
    for older in kept[:-1]:
        shutil.rmtree(older)

    # 4. the run folder is moved and renamed: it is still the run
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    os.rename(run_dir, moved)
    status = psvae("status", str(moved), env=env)  # the damaged table is named, with the way out
    assert status.returncode == 2 and one_line(status.stderr), status.stderr[-2000:]
    assert f"{moved}/results/trials/stage-beta/part-0.parquet: damaged" in status.stderr
    assert "rebuilt from its trials by psvae resume" in status.stderr
    resumed = psvae("resume", str(moved), env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "stage alpha: done earlier" in resumed.stdout
    assert f"trial {beta_trial.name}: Tune's state named checkpoint_" in resumed.stdout
    assert f"which is gone; it goes on from {later.name}" in resumed.stdout
    assert "part-0.parquet" in resumed.stdout and "set aside" in resumed.stdout
    assert not run_dir.exists() and not storage.joinpath("renamed").exists()  # nothing at the old place

    trials, _ = check_results(moved, n_epochs=60)
    after = finished_reports(moved)
    assert {name: after[name] for name in ended_before} == ended_before  # nothing that had ended re-ran
    assert len(trial_folders(moved)) == 3  # 2 alpha + 1 beta; beta = 1 is alpha's fit
    pd.testing.assert_frame_equal(
        trials[trials.stage == "alpha"].reset_index(drop=True),
        alpha_rows.reset_index(drop=True),
        check_dtype=False,
    )
    assert sorted(trials.groupby("stage").size().items()) == [("alpha", 2), ("beta", 2)]
    assert (trials.status == "completed").all()
    assert list(moved.joinpath("results", "trials", "stage-beta").glob(".part-0.parquet.damaged-*"))
    manifest_text = (moved / "manifest.json").read_text()
    manifest = json.loads(manifest_text)
    assert manifest["status"] == "done" and str(tmp_path / "runs") not in manifest_text
    assert all(not str(c).startswith("/") for c in trials.checkpoint.dropna())
    for command in (["report", str(moved)], ["export", str(moved), "--out", str(tmp_path / "export")]):
        out = psvae(*command, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "export" / "weights.pt").is_file()
    status = psvae("status", str(moved), env=env)
    assert status.returncode == 0 and "selected: trial" in status.stdout, status.stderr

    # 5. the finished run moved again: every command works from its new place, nothing re-runs
    again = tmp_path / "archive" / "r1-final"
    again.parent.mkdir()
    os.rename(moved, again)
    before = finished_reports(again)
    for command in (
        ["status", str(again)],
        ["report", str(again)],
        ["export", str(again), "--out", str(tmp_path / "export2")],
        ["resume", str(again)],
    ):
        out = psvae(*command, env=env)
        assert out.returncode == 0, (command, out.stderr[-2000:])
    assert "the search is done already: nothing to run" in out.stdout
    assert finished_reports(again) == before and (tmp_path / "export2" / "weights.pt").is_file()


# -- a full disk ------------------------------------------------------------------------------
def fill(folder: Path) -> Path:
    """Write a ballast file until the file system is full."""
    ballast = folder / "ballast"
    chunk = b"\0" * (1 << 16)
    with contextlib.suppress(OSError), open(ballast, "wb") as f:
        while True:
            f.write(chunk)
            f.flush()
    return ballast


def test_a_full_disk_stops_the_search_in_one_line_and_resume_completes_it(
    tmp_path, synthetic_file, tracked, env
):
    stages = [{"name": "alpha", "values": [50, 100]}, {"name": "beta", "values": [1, 5]}]
    spec = write_spec(tmp_path, synthetic_file, stages, fit={"train.epochs": 16})
    with small_tmpfs(tmp_path / "disk", "64m") as disk:
        storage = disk / "runs"
        run_dir = storage / "r1"
        proc = start(
            "search", "--config", str(spec), "--run-id", "r1", "--storage", str(storage),
            env=env, log=tmp_path / "first.log",
        )  # fmt: skip
        tracked.add(proc.pid)

        def checkpointed() -> bool:
            tracked.update(descendants(proc.pid))
            return any((run_dir / "tune").glob("alpha-*/checkpoint_*"))

        wait_for(checkpointed, 400, "a checkpoint in the alpha stage", proc)
        ballast = fill(disk)
        assert proc.wait(timeout=400) == 2
        log = (tmp_path / "first.log").read_text()
        assert one_line(log), log[-3000:]
        line = psvae_lines(log)[0]
        assert "no space left on device" in line and str(run_dir) in line
        assert f"free space there, then continue with: psvae resume {run_dir}" in line
        end_all(tracked)

        # nothing the search keeps was left half-written
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["status"] == "running"
        for trial in manifest_rows(run_dir):
            assert trial["status"] == "completed", trial  # no trial was failed for the full disk
        check_tune_state(RunDir.open(run_dir))  # Tune's experiment state and tuner.pkl are whole
        for state in (run_dir / "tune").glob("experiment_state-*.json"):
            json.loads(state.read_text())
        for result in (run_dir / "tune").glob("*/result.json"):
            for line in result.read_text().splitlines():
                json.loads(line)
        assert not [p for p in run_dir.rglob("*") if ".psvae-tmp-" in p.name]

        ballast.unlink()
        resumed = psvae("resume", str(run_dir), env=env, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        trials, _ = check_results(run_dir, n_epochs=16)
        assert sorted(trials.groupby("stage").size().items()) == [("alpha", 2), ("beta", 2)]
        assert (trials.status == "completed").all()
        assert json.loads((run_dir / "manifest.json").read_text())["status"] == "done"
        end_all(tracked)


def manifest_rows(run_dir: Path) -> list[dict]:
    """The trials rows written so far (none, if no trial had ended)."""
    folder = run_dir / "results" / "trials"
    return pd.read_parquet(folder).to_dict("records") if list(folder.glob("*/part-0.parquet")) else []


# -- a damaged checkpoint ---------------------------------------------------------------------------
def test_a_damaged_checkpoint_of_a_running_trial_reruns_it_and_says_so(
    tmp_path, synthetic_file, tracked, env
):
    n_epochs = 24
    spec = write_spec(
        tmp_path, synthetic_file, [{"name": "alpha", "values": [50]}], fit={"train.epochs": n_epochs}
    )
    storage = tmp_path / "runs"
    run_dir = storage / "r1"
    proc = start(
        "search", "--config", str(spec), "--run-id", "r1", "--storage", str(storage),
        env=env, log=tmp_path / "log",
    )  # fmt: skip
    tracked.add(proc.pid)

    def worker() -> int | None:
        tracked.update(descendants(proc.pid))
        return next((p for p in descendants(proc.pid) if "ImplicitFunc" in cmdline(p)), None)

    def checkpoints() -> list[Path]:
        return sorted((run_dir / "tune").glob("alpha-*/checkpoint_*"))

    def five_epochs() -> bool:
        found = checkpoints()
        return bool(found) and found[-1].name >= "checkpoint_000004" and worker() is not None

    wait_for(five_epochs, 300, "five epochs checkpointed", proc)
    victim = worker()
    assert victim is not None
    os.kill(victim, signal.SIGSTOP)  # no checkpoint is written while we damage them
    damaged = [c.name for c in checkpoints()]
    for checkpoint in checkpoints():
        state = checkpoint / "trainer.pt"
        if state.exists():
            state.write_bytes(state.read_bytes()[: state.stat().st_size // 3])
    os.kill(victim, signal.SIGKILL)  # Tune retries the trial from its (damaged) checkpoint
    assert proc.wait(timeout=600) == 0, (tmp_path / "log").read_text()[-3000:]

    trials, epochs = check_results(run_dir, n_epochs=n_epochs)
    row = trials.iloc[0]
    assert row.status == "completed"
    assert row.note.startswith("re-run from epoch 0: ") and "is damaged" in row.note, row.note
    assert any(name in row.note for name in damaged), row.note
    assert sorted(epochs.epoch) == list(range(n_epochs))
    status = psvae("status", str(run_dir), env=env)
    assert status.returncode == 0 and "completed" in status.stdout
