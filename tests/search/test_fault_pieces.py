"""The pieces of the fault handling, on real files and real processes, without a Ray cluster:
Tune's file system on a real full tmpfs, a trial's fallback from a damaged checkpoint, and the
driver lock held by a live process and released by a killed one."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from psvae.data import load_data
from psvae.errors import UserError
from psvae.trainer import Trainer
from search.rundir import LOCK, DriverLock
from search.storage import AtomicLocalHandler, disk_full
from tests.conftest import REPO, small_config, small_tmpfs, wait_for


# -- Tune's writes ------------------------------------------------------------------------------
def test_tunes_files_are_written_whole_or_not_at_all_on_a_full_disk(tmp_path):
    fs = pafs.PyFileSystem(AtomicLocalHandler())
    assert pickle.loads(pickle.dumps(fs)) == fs  # what the trials' workers get
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "experiment_state.json").write_bytes(b"x" * 3_000_000)  # more than the disk holds
    (staging / "small.json").write_text('{"new": 1}')
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        (disk / "experiment_state.json").write_text('{"old": 1}')
        with pytest.raises(OSError) as raised:
            pafs.copy_files(
                str(staging), str(disk), source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
            )
        assert disk_full(raised.value)
        assert (disk / "experiment_state.json").read_text() == '{"old": 1}'  # the old file, whole

        def no_temporary_file() -> bool:
            # a stream pyarrow dropped without closing it removes its temporary file when it is
            # collected, which another of copy_files' threads may still hold for a moment
            gc.collect()
            return not [p.name for p in disk.iterdir() if ".psvae-tmp-" in p.name]

        wait_for(no_temporary_file, 10, "the failed copy's temporary files to go")
        # with room, the same copy replaces it, whole
        (staging / "experiment_state.json").write_text('{"newer": 2}')
        pafs.copy_files(
            str(staging), str(disk), source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
        )
        assert json.loads((disk / "experiment_state.json").read_text()) == {"newer": 2}
        assert sorted(p.name for p in disk.iterdir()) == ["experiment_state.json", "small.json"]


# -- a trial's checkpoints ---------------------------------------------------------------------------
@pytest.fixture
def checkpoints(tmp_path, synthetic_file) -> tuple[Path, list[Path], object]:
    """A trial folder with a checkpoint after each of its first three epochs, as the trainable
    writes them (trainer.pt, history.json), and a factory of fresh trainers."""
    cfg = small_config(**{"train.epochs": 6})
    data = load_data([str(synthetic_file)], cfg.data.split, cfg.data.split_seed)
    trainer = Trainer(cfg, data)
    trial = tmp_path / "tune" / "alpha-t1"
    folders = []
    for i, _ in zip(range(3), trainer.epochs(), strict=False):
        folder = trial / f"checkpoint_{i:06d}"
        folder.mkdir(parents=True)
        trainer.save_checkpoint(folder / "trainer.pt")
        (folder / "history.json").write_text(json.dumps(trainer.history))
        folders.append(folder)
    return trial, folders, lambda: Trainer(cfg, data)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_damaged_checkpoint_falls_back_to_the_trials_previous_one(checkpoints):
    from ray import tune

    from search.trainable import _restore

    _, folders, new_trainer = checkpoints
    truncate(folders[2] / "trainer.pt")
    trainer, used, final, note = _restore(new_trainer, tune.Checkpoint(str(folders[2])))
    assert final is None and used.path.endswith("checkpoint_000001")
    assert trainer.epoch == 2  # it goes on after the second epoch
    assert note.startswith("continued from checkpoint_000001: checkpoint_000002 is damaged (")


def test_a_trial_whose_every_checkpoint_is_damaged_runs_again_from_epoch_0(checkpoints):
    from ray import tune

    from search.trainable import _restore

    _, folders, new_trainer = checkpoints
    truncate(folders[2] / "trainer.pt")
    (folders[1] / "trainer.pt").write_bytes(b"")
    (folders[0] / "trainer.pt").unlink()
    trainer, used, final, note = _restore(new_trainer, tune.Checkpoint(str(folders[2])))
    assert used is None and final is None and trainer.epoch == 0
    assert note.startswith("re-run from epoch 0: checkpoint_000002 is damaged")
    assert "checkpoint_000001 is damaged" in note and "checkpoint_000000 is damaged" in note


def test_an_intact_checkpoint_is_used_without_a_note(checkpoints):
    from ray import tune

    from search.trainable import _restore

    _, folders, new_trainer = checkpoints
    trainer, used, final, note = _restore(new_trainer, tune.Checkpoint(str(folders[2])))
    assert note is None and final is None and used.path == str(folders[2]) and trainer.epoch == 3


def test_a_damaged_final_checkpoint_is_not_taken_for_the_fits_outcome(checkpoints):
    from ray import tune

    from search.trainable import _restore

    trial, folders, new_trainer = checkpoints
    final = trial / "checkpoint_000003"
    final.mkdir()
    (final / "summary.json").write_text('{"fit_status": "compl')  # cut short
    (final / "history.json").write_text("[]")
    trainer, used, outcome, note = _restore(new_trainer, tune.Checkpoint(str(final)))
    assert outcome is None and used.path == str(folders[2]) and trainer.epoch == 3
    assert note.startswith("continued from checkpoint_000002: checkpoint_000003 is damaged (JSONDecodeError")


# -- the driver lock -------------------------------------------------------------------------------
HOLD = """
import sys, time
from search.rundir import DriverLock
from pathlib import Path
DriverLock(Path(sys.argv[1])).acquire("the run")
print("held", flush=True)
time.sleep(600)
"""


def test_the_driver_lock_is_held_by_a_live_process_only(tmp_path):
    path = tmp_path / LOCK
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        with pytest.raises(
            UserError, match=rf"another psvae driver is running this run \(pid {holder.pid} on "
        ):
            DriverLock(path).acquire("the run")
        os.kill(holder.pid, signal.SIGKILL)  # the kernel releases its lock; the file stays
        holder.wait()
        assert f"pid {holder.pid}" in path.read_text()
        lock = DriverLock(path)
        lock.acquire("the run")  # a stale lock file does not block
        assert f"pid {os.getpid()}" in path.read_text()
        with pytest.raises(UserError, match="another psvae driver"):
            DriverLock(path).acquire("the run")  # one driver even within one process
        lock.release()
        wait_for(lambda: DriverLock(path).acquire("the run") is None, 5, "the lock, released")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# -- psvae fit on a full disk ------------------------------------------------------------------------
@pytest.mark.slow
def test_a_full_disk_during_psvae_fit_is_one_line_and_the_same_command_resumes(tmp_path, synthetic_file):
    from tests.conftest import env_for

    sets = ["model.channels=[4,8,8,8,8]", "train.epochs=40", "train.batch_size=32", "loss.anneal_epochs=1"]
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        out = disk / "fit"
        argv = [sys.executable, "-m", "search.cli", "fit", "--data", str(synthetic_file), "--out", str(out),
                "--quiet", *(f"--set={s}" for s in sets)]  # fmt: skip
        env = env_for(tmp_path)
        fit = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: (out / "checkpoint.pt").is_file(), 120, "the first checkpoint", fit)
            ballast = disk / "ballast"
            with contextlib.suppress(OSError), open(ballast, "wb") as f:
                while True:
                    f.write(b"\0" * (1 << 16))
                    f.flush()
            _, err = fit.communicate(timeout=300)
        finally:
            if fit.poll() is None:
                fit.kill()
                fit.wait()
        assert fit.returncode == 2, err
        assert err.count("\n") == 1 and err.startswith("psvae: error: ") and "Traceback" not in err, err
        assert "no space left on device" in err.lower() and "free space there and run" in err, err
        assert str(out) in err
        ballast.unlink()
        again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-2000:]
        assert (out / "model" / "weights.pt").is_file() and "done: 40 epochs" in again.stdout
