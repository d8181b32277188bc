import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from psvae.data import read_trials
from psvae.errors import UserError
from psvae.export import load_model
from psvae.fit import run_fit
from tests.conftest import small_config


@pytest.fixture(scope="module")
def fit_dir(synthetic_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "fit"
    run_fit([str(synthetic_file)], small_config(), out, progress=False)
    return out


def test_fit_directory_layout(fit_dir):
    assert sorted(p.name for p in fit_dir.iterdir()) == ["fit.json", "metrics.csv", "model", "summary.json"]
    lines = (fit_dir / "metrics.csv").read_text().splitlines()
    assert len(lines) == 1 + 3 and lines[0].startswith("epoch,train_loss")
    summary = json.loads((fit_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == 3


def test_bundle_has_no_pickled_objects(fit_dir):
    state = torch.load(fit_dir / "model" / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    meta = json.loads((fit_dir / "model" / "config.json").read_text())
    assert meta["format"] == "psvae-bundle" and meta["frame_shape"] == [1, 32, 32]


def test_encode_and_decode(fit_dir, synthetic_file):
    model = load_model(fit_dir / "model")
    _, frames = next(read_trials(str(synthetic_file)))
    enc = model.encode(frames)
    assert (
        enc.supervised.shape == (40, 2)
        and enc.unsupervised.shape == (40, 2)
        and enc.background.shape == (40, 0)
    )
    stats = model.label_stats
    np.testing.assert_allclose(
        enc.labels, enc.labels_z * np.array(stats.std) + np.array(stats.mean), rtol=1e-6
    )
    decoded = model.decode(enc.latents)
    assert decoded.shape == (40, 1, 32, 32) and decoded.min() >= 0 and decoded.max() <= 1
    assert model.encode(frames[0]).supervised.shape == (1, 2)
    with pytest.raises(ValueError, match="uint8"):
        model.encode(frames.astype(np.float32))


def test_bundle_loads_in_a_fresh_process_without_the_run_directory(fit_dir, tmp_path, synthetic_file):
    import shutil

    moved = tmp_path / "elsewhere"
    shutil.copytree(fit_dir / "model", moved)
    code = (
        "import sys, numpy as np, psvae\n"
        f"m = psvae.load_model({str(moved)!r})\n"
        "x = np.zeros((3, 1, 32, 32), dtype=np.uint8)\n"
        "e = m.encode(x)\n"
        "print(e.labels.shape, m.decode(e.latents).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(3, 2) (3, 1, 32, 32)"


def test_load_model_refuses_a_directory_that_is_not_a_bundle(tmp_path):
    with pytest.raises(UserError, match="not a model bundle"):
        load_model(tmp_path)
