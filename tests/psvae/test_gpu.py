"""The trainer on a CUDA device, where there is one (a lent GPU machine; CI has none): a fit in
float32 and in bf16 autocast runs, stays finite, and resumes from its checkpoint with the same
numbers as an uninterrupted fit."""

from __future__ import annotations

import math

import pytest
import torch

from psvae.data import load_data
from psvae.trainer import Trainer
from tests.conftest import small_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_a_fit_on_the_gpu_is_finite_and_resumes_exactly(tmp_path, synthetic_file, precision):
    cfg = small_config(**{"train.device": "cuda", "train.precision": precision, "train.epochs": 3})
    data = load_data([str(synthetic_file)])
    whole = Trainer(cfg, data)
    losses = [r.val["loss"] for r in whole.epochs()]
    assert whole.device.type == "cuda" and all(math.isfinite(v) for v in losses)

    first = Trainer(cfg, data)
    first.run_epoch()
    first.save_checkpoint(tmp_path / "c.pt")
    second = Trainer(cfg, data)
    second.restore(tmp_path / "c.pt")
    resumed = [first.history[0]["val_loss"], *(r.val["loss"] for r in second.epochs())]
    assert resumed == pytest.approx(losses, rel=1e-6)
