"""Data that cannot be fit is refused in one line before anything is allocated or written: a
trial of 0 frames, more frames than memory holds, a symbolic link loop, no validation frames."""

from __future__ import annotations

import h5py
import numpy as np
import psutil
import pytest

from psvae.data import Trial, bytes_needed, check_splits, load_data
from psvae.errors import DataError
from search.cli import main
from tests.conftest import SMALL_NET, make_trials, write_h5


def _fit(capsys, data, out):
    code = main(
        [
            "fit",
            "--data",
            str(data),
            "--out",
            str(out),
            "--quiet",
            f"--set=model.channels={SMALL_NET['model.channels']}",
        ]
    )
    return code, capsys.readouterr().err


def test_a_trial_of_0_frames_is_refused(tmp_path, capsys):
    groups = make_trials(n_trials=10)
    groups["images"]["trial_0004"] = np.zeros((0, 1, 32, 32), np.uint8)
    groups["labels"]["trial_0004"] = np.zeros((0, 2), np.float32)
    path = write_h5(tmp_path / "empty_trial.h5", groups)
    code, err = _fit(capsys, path, tmp_path / "out")
    assert code == 2
    expected = f"{path}: images/trial_0004: has 0 frames; every trial needs at least one (remove the trial)"
    assert err == f"psvae: error: {expected}\n"
    assert not (tmp_path / "out").exists()


def test_a_file_declaring_more_frames_than_memory_holds_is_refused_before_allocating(tmp_path, capsys):
    """The file declares ~63 GB of frames but stores none (HDF5 allocates chunks only when written),
    so the test itself needs no memory; the refusal comes before numpy allocates anything."""
    n_trials, n_frames, shape = 10, 2000, (3, 1024, 1024)
    assert bytes_needed(n_trials * n_frames, shape, 2, False) > psutil.virtual_memory().total
    path = tmp_path / "huge.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for i in range(n_trials):
            f.create_dataset(
                f"images/trial_{i:04d}", shape=(n_frames, *shape), dtype=np.uint8, chunks=(1, *shape)
            )
            f.create_dataset(f"labels/trial_{i:04d}", data=rng.normal(size=(n_frames, 2)))
    assert path.stat().st_size < 10_000_000
    peak_before = psutil.Process().memory_info().rss
    code, err = _fit(capsys, path, tmp_path / "out")
    assert code == 2 and err.count("\n") == 1
    assert f"{path}: 20000 frames of 3x1024x1024 need 58.6 GiB of memory, but " in err
    assert "GiB is available; use fewer sessions or smaller frames" in err
    assert psutil.Process().memory_info().rss - peak_before < 2**30
    assert not (tmp_path / "out").exists()


def test_a_symbolic_link_loop_is_named_as_one(tmp_path, capsys):
    loop = tmp_path / "loop.h5"
    loop.symlink_to(tmp_path / "loop.h5")
    code, err = _fit(capsys, loop, tmp_path / "out")
    assert code == 2 and err == f"psvae: error: {loop}: is a symbolic link loop\n"
    dangling = tmp_path / "dangling.h5"
    dangling.symlink_to(tmp_path / "gone.h5")
    code, err = _fit(capsys, dangling, tmp_path / "out")
    assert (
        code == 2
        and err
        == f"psvae: error: {dangling}: is a symbolic link to {tmp_path / 'gone.h5'}, which does not exist\n"
    )
    assert not (tmp_path / "out").exists()


def test_data_with_no_validation_frames_is_refused():
    trials = [
        Trial("a.h5", "trial_0000", 0, 0, 10, "train"),
        Trial("a.h5", "trial_0001", 0, 10, 10, "val"),  # an empty validation trial
        Trial("a.h5", "trial_0002", 0, 10, 20, "test"),
    ]
    with pytest.raises(DataError, match=r"^a\.h5: no val frames under data\.split"):
        check_splits(trials, ["a.h5"])
    check_splits([*trials[:1], Trial("a.h5", "trial_0001", 0, 10, 11, "val"), trials[2]], ["a.h5"])


def test_label_names_default_to_column_numbers(tmp_path):
    path = write_h5(tmp_path / "plain.h5", make_trials(n_trials=10, n_labels=3))
    assert load_data([str(path)]).label_stats.names == ("0", "1", "2")
