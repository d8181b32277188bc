"""The CPU smoke fit: the default (paper) network on the built-in data learns the labels."""

import time

import pytest

from psvae import synthetic
from psvae.config import FitConfig
from psvae.data import load_data
from psvae.trainer import Trainer

SMOKE = {"train.epochs": 20, "train.lr": 1e-3, "train.batch_size": 128, "loss.anneal_epochs": 5}


@pytest.mark.slow
def test_default_network_reaches_label_r2_of_0_9_within_its_epochs(tmp_path):
    """How fast it trains is bench/train_throughput.py's to measure; here, that it learns."""
    path = synthetic.write(tmp_path / "syn.h5")  # the built-in dataset as `psvae demo` makes it
    start = time.perf_counter()
    trainer = Trainer(FitConfig.from_mapping(SMOKE), load_data([str(path)]))
    assert sum(p.numel() for p in trainer.model.parameters()) > 8_000_000  # the paper's network
    best = 0.0
    for result in trainer.epochs():
        best = max(best, result.val["label_r2"])
        elapsed = time.perf_counter() - start
        print(f"epoch {result.epoch}: val label R2 {result.val['label_r2']:.3f} after {elapsed:.0f} s")
        if best >= 0.9:
            break
    assert best >= 0.9, f"val label R2 {best:.3f} after {result.epoch + 1} of {SMOKE['train.epochs']} epochs"
