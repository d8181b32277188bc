"""The command line: every bad input gives one line naming what is wrong, exit code 2, and
no output; good input produces the fit directory, bundle and Parquet latents."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from search.cli import main
from tests.conftest import SMALL_NET, make_trials, write_h5

QUICK = [
    f"--set=model.channels={SMALL_NET['model.channels']}",
    "--set=train.epochs=2",
    "--set=loss.anneal_epochs=1",
]


def _fit(capsys, data: Path | str, out: Path, *extra: str) -> tuple[int, str]:
    code = main(["fit", "--data", str(data), "--out", str(out), "--quiet", *QUICK, *extra])
    return code, capsys.readouterr().err


def _bad(tmp_path: Path, mutate) -> Path:
    groups = make_trials(n_trials=10)
    mutate(groups)
    return write_h5(tmp_path / "bad.h5", groups)


def _set(group: str, trial: str, value):
    def mutate(groups):
        groups[group][trial] = value

    return mutate


BAD_DATA = {
    "not uint8": (
        _set("images", "trial_0003", np.zeros((20, 1, 32, 32), np.float32)),
        r"images/trial_0003: dtype float32, expected uint8",
    ),
    "wrong ndim": (
        _set("images", "trial_0001", np.zeros((20, 32, 32), np.uint8)),
        r"images/trial_0001: shape \(20, 32, 32\) has 3 dimensions",
    ),
    "trial names": (
        lambda g: g["labels"].pop("trial_0007"),
        r"trial names differ between images and labels: trial_0007 is in images",
    ),
    "frame counts": (
        _set("labels", "trial_0002", np.zeros((19, 2), np.float32)),
        r"labels/trial_0002: 19 frames, but images/trial_0002 has 20",
    ),
    "zero variance": (
        lambda g: [v.__setitem__((slice(None), 1), 3.5) for v in g["labels"].values()],
        r"labels column 1 \(1\) has zero variance.*3\.5",
    ),
    "inf label": (
        lambda g: g["labels"]["trial_0004"].__setitem__((6, 0), -np.inf),
        r"labels/trial_0004: value -inf at frame 6, column 0",
    ),
    "too few trials": (
        lambda g: [g[k].pop(f"trial_{i:04d}") for k in ("images", "labels") for i in range(5, 10)],
        r"too few trials.*5 trials, but split '8;1;1;0' needs at least 10",
    ),
    "too small": (
        lambda g: g.update(make_trials(n_trials=10, size=16)),
        r"frames are 16x16, smaller than the network's minimum of 32x32",
    ),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_gives_one_line_and_exit_2(case, tmp_path, capsys):
    mutate, pattern = BAD_DATA[case]
    path = _bad(tmp_path, mutate)
    out = tmp_path / "out"
    code, err = _fit(capsys, path, out)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("psvae: error: ")
    assert str(path) in err
    assert pytest.importorskip("re").search(pattern, err), err
    assert not out.exists()


def test_missing_file_and_not_hdf5(tmp_path, capsys):
    code, err = _fit(capsys, tmp_path / "nope.h5", tmp_path / "out")
    assert code == 2 and f"{tmp_path / 'nope.h5'}: no such file" in err
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    code, err = _fit(capsys, text, tmp_path / "out")
    assert code == 2 and f"{text}: not an HDF5 file" in err
    assert not (tmp_path / "out").exists()


def test_no_images_group(tmp_path, capsys):
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        f.create_group("frames")
    code, err = _fit(capsys, path, tmp_path / "out")
    assert code == 2 and f"{path}: no 'images' group" in err


BAD_CONFIG = {
    "anneal": (
        "loss:\n  anneal_epochs: 10\ntrain:\n  epochs: 10\n",
        r"loss\.anneal_epochs = 10: must be below train\.epochs = 10",
    ),
    "unknown key": ("loss:\n  alpah: 50\n", r"unknown key 'loss\.alpah' \(did you mean 'loss\.alpha'\?\)"),
    "ill-typed": ("train:\n  epochs: ten\n", r"train\.epochs = 'ten': expected an integer"),
    "negative alpha": ("loss.alpha: -1\n", r"loss\.alpha = -1\.0: must be at least 0"),
    "negative beta": ("loss.beta: -5\n", r"loss\.beta = -5\.0: must be at least 0"),
    "bad split": ("data.split: '8;1;0;0'\n", r"data\.split = '8;1;0;0'"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIG))
def test_bad_config_gives_one_line_and_exit_2(case, tmp_path, capsys, synthetic_file):
    text, pattern = BAD_CONFIG[case]
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(text)
    out = tmp_path / "out"
    code = main(["fit", "--data", str(synthetic_file), "--config", str(cfg), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert str(cfg) in err
    assert pytest.importorskip("re").search(pattern, err), err
    assert not out.exists()


def test_unknown_set_key(tmp_path, capsys, synthetic_file):
    code = main(["fit", "--data", str(synthetic_file), "--out", str(tmp_path / "o"), "--set", "loss.gamma=2"])
    assert code == 2 and "unknown key 'loss.gamma'" in capsys.readouterr().err


def test_real_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "search.cli",
            "fit",
            "--data",
            str(tmp_path / "missing.h5"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"psvae: error: {tmp_path / 'missing.h5'}: no such file"
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_fit_resume_and_refusals(tmp_path, capsys, synthetic_file):
    out = tmp_path / "fit"
    code, err = _fit(capsys, synthetic_file, out)
    assert code == 0, err
    assert (out / "model" / "weights.pt").is_file() and not (out / "checkpoint.pt").exists()
    # a finished fit is never overwritten
    before = (out / "model" / "weights.pt").read_bytes()
    code, err = _fit(capsys, synthetic_file, out)
    assert code == 2 and "already holds a finished fit" in err
    assert (out / "model" / "weights.pt").read_bytes() == before
    # a directory with other content is refused
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    code, err = _fit(capsys, synthetic_file, other)
    assert (
        code == 2 and "is not an unfinished psvae fit" in err and (other / "keep.txt").read_text() == "mine"
    )


def test_interrupted_fit_resumes_from_its_checkpoint(tmp_path, capsys, synthetic_file):
    from psvae.fit import run_fit
    from search.cli import load_fit_config

    out = tmp_path / "fit"
    cfg = load_fit_config(None, [q.removeprefix("--set=") for q in QUICK] + ["train.epochs=3"])

    class Stop(Exception):
        pass

    def stop_after_two(result):
        if result.epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        run_fit([str(synthetic_file)], cfg, out, progress=False, on_epoch=stop_after_two)
    assert (out / "checkpoint.pt").is_file() and not (out / "model").exists()
    epochs_seen = []
    summary = run_fit(
        [str(synthetic_file)], cfg, out, progress=False, on_epoch=lambda r: epochs_seen.append(r.epoch)
    )
    assert epochs_seen == [2] and summary.epochs_run == 3
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 3
    # a changed config is refused on resume: nothing else changes
    other = tmp_path / "fit2"
    with pytest.raises(Stop):
        run_fit([str(synthetic_file)], cfg, other, progress=False, on_epoch=stop_after_two)
    code, err = _fit(capsys, synthetic_file, other, "--set=loss.beta=5", "--set=train.epochs=3")
    assert code == 2 and "different config keys loss.beta" in err


def test_encode_writes_parquet_with_the_schema(tmp_path, capsys, synthetic_file):
    from results_schema import latents_schema

    out = tmp_path / "fit"
    assert _fit(capsys, synthetic_file, out)[0] == 0
    parquet = tmp_path / "latents.parquet"
    code = main(
        ["encode", "--model", str(out / "model"), "--data", str(synthetic_file), "--out", str(parquet)]
    )
    assert code == 0, capsys.readouterr().err
    table = pq.read_table(parquet)
    assert table.schema.equals(latents_schema(["x", "y"], 0, 2), check_metadata=False)
    df = pd.read_parquet(parquet)
    assert len(df) == 10 * 40 and df["trial"].nunique() == 10 and df["frame"].max() == 39
    # refuses to overwrite; a data file of another frame size is refused before writing
    assert (
        main(["encode", "--model", str(out / "model"), "--data", str(synthetic_file), "--out", str(parquet)])
        == 2
    )
    assert "already exists" in capsys.readouterr().err
    other = write_h5(tmp_path / "big.h5", make_trials(n_trials=1, size=48))
    code = main(
        ["encode", "--model", str(out / "model"), "--data", str(other), "--out", str(tmp_path / "x.parquet")]
    )
    assert (
        code == 2
        and "frames of shape (1, 48, 48), but the model expects (1, 32, 32)" in capsys.readouterr().err
    )
    assert not (tmp_path / "x.parquet").exists()


def test_synthetic_command_keeps_factors_apart(tmp_path, capsys):
    from psvae.synthetic import factors_path, read_factors

    out = tmp_path / "syn.h5"
    assert main(["synthetic", "--out", str(out), "--seed", "5", "--trials", "40"]) == 0
    with h5py.File(out) as f:
        assert sorted(f.keys()) == ["images", "labels"]  # nothing but the user-facing layout
        assert f["images/trial_0000"].shape == (100, 1, 64, 64) and f["images/trial_0000"].dtype == np.uint8
        labels = f["labels/trial_0000"][()]
    factors = read_factors(out)
    assert factors_path(out).is_file() and factors["trial_0000"].shape == (100, 4)
    ok = ~np.isnan(labels[:, 0])
    assert np.abs(labels[ok, 0] - factors["trial_0000"][ok, 0]).max() < 2.0  # x label tracks the x factor
    assert main(["synthetic", "--out", str(out)]) == 2  # never overwritten without --force
    again = tmp_path / "again.h5"
    main(["synthetic", "--out", str(again), "--seed", "5", "--trials", "40"])
    with h5py.File(out) as a, h5py.File(again) as b:
        assert np.array_equal(a["images/trial_0003"][()], b["images/trial_0003"][()])


def test_sigma_x_takes_a_number_or_a_calibration_and_refuses_anything_else(tmp_path, capsys):
    from psvae.config import FitConfig

    assert FitConfig().loss.sigma_x == "auto"
    assert FitConfig.from_mapping({"loss.sigma_x": 1}).loss.sigma_x == 1.0
    assert FitConfig.from_mapping({"loss.sigma_x": "auto-epoch"}).loss.sigma_x == "auto-epoch"
    assert (
        FitConfig.from_mapping(FitConfig.from_mapping({"loss.sigma_x": "auto"}).flat()).loss.sigma_x == "auto"
    )
    data = tmp_path / "d.h5"
    assert main(["synthetic", "--out", str(data), "--trials", "10", "--seed", "1"]) == 0
    capsys.readouterr()
    for value, message in (
        ("sharp", "loss.sigma_x = 'sharp': must be one of auto, auto-epoch"),
        ("0", "loss.sigma_x = 0.0: must be greater than 0 (or one of auto, auto-epoch)"),
        ("true", "loss.sigma_x = True: expected a number"),
    ):
        out = tmp_path / f"fit-{value}"
        code = main(
            ["fit", "--data", str(data), "--out", str(out), "--quiet", "--set", f"loss.sigma_x={value}"]
        )
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
        assert not out.exists()
