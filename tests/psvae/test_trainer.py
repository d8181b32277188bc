import itertools
import math

import pytest
import torch

from psvae.data import load_data
from psvae.trainer import Trainer
from tests.conftest import small_config


def _rows(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.fixture(scope="module")
def data(synthetic_file):
    return load_data([str(synthetic_file)])


def test_resume_reproduces_an_uninterrupted_run(data, tmp_path):
    cfg = small_config(**{"train.epochs": 4, "loss.anneal_epochs": 2})
    whole = Trainer(cfg, data)
    list(whole.epochs())

    first = Trainer(cfg, data)
    for _ in range(2):
        first.run_epoch()
    first.save_checkpoint(tmp_path / "ckpt.pt")
    del first
    resumed = Trainer(cfg, data)
    resumed.restore(tmp_path / "ckpt.pt")
    assert resumed.epoch == 2
    list(resumed.epochs())

    assert _rows(resumed.history) == _rows(whole.history)  # bit-for-bit on the CPU
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert whole.finish().metrics == resumed.finish().metrics


def test_same_seeds_give_the_same_fit_and_other_seeds_do_not(data):
    cfg = small_config(**{"train.epochs": 2})
    a, b = Trainer(cfg, data), Trainer(cfg, data)
    c = Trainer(small_config(**{"train.epochs": 2, "train.seed_model": 1}), data)
    for t in (a, b, c):
        list(t.epochs())
    assert _rows(a.history) == _rows(b.history)
    assert _rows(a.history) != _rows(c.history)


def test_a_non_finite_loss_ends_the_fit_as_diverged(data):
    trainer = Trainer(small_config(**{"train.lr": 1e8, "train.epochs": 20, "loss.anneal_epochs": 0}), data)
    results = list(trainer.epochs())
    assert results[-1].status == "diverged"
    assert len(results) < 20
    assert trainer.finish().status == "diverged"


def test_validation_uses_full_weights_and_test_metrics_come_from_the_best_epoch(data):
    # sigma_x = 1: one sigma_x for every batch, so the terms' means recompose the loss
    cfg = small_config(**{"train.epochs": 4, "loss.anneal_epochs": 3, "loss.sigma_x": 1.0})
    trainer = Trainer(cfg, data)
    results = list(trainer.epochs())
    assert [r.k_e for r in results] == [0.0, 1 / 3, 2 / 3, 1.0]
    val_losses = [r.val["loss"] for r in results]
    best = min(range(4), key=lambda i: val_losses[i])
    assert [r.is_best for r in results].count(True) >= 1 and results[best].is_best
    # the validation loss is the full-weight objective: recompute it from its terms
    r = results[0]
    expected = (
        r.val["nll_frames"]
        + 50 * r.val["nll_labels"]
        + r.val["kl_s"]
        + r.val["mi"]
        + r.val["tc"]
        + r.val["dwkl"]
    )
    assert r.val["loss"] == pytest.approx(expected, rel=1e-5)
    summary = trainer.finish()
    assert summary.best_epoch == best
    assert summary.metrics["val_loss"] == pytest.approx(val_losses[best], rel=1e-6)
    assert {"test_label_r2_x", "test_label_r2_y", "train_mean_abs_corr_u", "test_abs_corr_u01"} <= set(
        summary.metrics
    )


def test_bf16_autocast_trains_close_to_float32(data):
    results = {}
    for precision in ("float32", "bf16"):
        trainer = Trainer(small_config(**{"train.epochs": 2, "train.precision": precision}), data)
        results[precision] = list(trainer.epochs())[-1].val
    assert math.isfinite(results["bf16"]["loss"])
    assert results["bf16"]["loss"] == pytest.approx(results["float32"]["loss"], rel=0.05)


def test_resume_refuses_a_checkpoint_of_another_config(data, tmp_path):
    from psvae.errors import ConfigError

    trainer = Trainer(small_config(), data)
    trainer.run_epoch()
    trainer.save_checkpoint(tmp_path / "c.pt")
    other = Trainer(small_config(**{"loss.beta": 5.0}), data)
    with pytest.raises(ConfigError, match="different config"):
        other.restore(tmp_path / "c.pt")


def test_a_calibrated_sigma_judges_the_best_epoch_at_one_sigma():
    from psvae.trainer import comparable_loss

    # an early epoch (pixels known to sigma 0.05) and a late one that also reconstructs the
    # small parts (sigma 0.025), with the same label error
    early = {"pixel_sse": 0.0025 * 4096, "pixels": 4096.0, "label_sse": 0.026, "others": 3.0}
    late = {"pixel_sse": 0.000625 * 4096, "pixels": 4096.0, "label_sse": 0.026, "others": 8.0}
    alpha = 1000.0
    # each at its own sigma the late epoch looks worse: its labels weigh four times as much
    assert comparable_loss(late, 0.025, alpha) > comparable_loss(early, 0.05, alpha)
    # at one sigma, either of theirs, the late epoch explains more
    for sigma in (0.025, 0.05):
        assert comparable_loss(late, sigma, alpha) < comparable_loss(early, sigma, alpha)
    # at sigma_x = 1 the small parts are not worth their 5 nats of KL: the reference's collapse
    assert comparable_loss(late, 1.0, alpha) > comparable_loss(early, 1.0, alpha)


@pytest.mark.parametrize("sigma_x", ["auto", "auto-epoch"])
def test_calibrated_sigma_x_is_recorded_per_epoch_and_for_the_fit(data, sigma_x):
    trainer = Trainer(small_config(**{"train.epochs": 3, "loss.sigma_x": sigma_x}), data)
    results = list(trainer.epochs())
    sigmas = [r.sigma_x for r in results]
    assert all(1 / 255 <= s < 1 for s in sigmas)
    if sigma_x == "auto-epoch":  # each epoch's sigma is the root of the previous epoch's training MSE
        for before, after in itertools.pairwise(results):
            assert after.sigma_x == pytest.approx(math.sqrt(before.train["pixel_mse"]), rel=1e-6)
    summary = trainer.finish()
    m = summary.metrics
    assert m["sigma_x"] == pytest.approx(sigmas[summary.best_epoch])
    assert {"val_mu_var_u_0", "val_mu_var_u_1", "val_kl_u_per_dim_0", "val_kl_u_per_dim_1"} <= set(m)
    assert {"n_active_u", "label_leakage_u", "val_mi_net", "val_tc_net", "val_dwkl_net"} <= set(m)
    log_n = math.log(data.n_frames("val"))
    assert m["val_mi_net"] == pytest.approx(m["val_mi"] - log_n)
    assert m["val_dwkl_net"] == pytest.approx(m["val_dwkl"] + 2 * log_n)
    assert all(isinstance(v, float) for v in m.values())  # flat scalars, as Tune reports them


def test_a_fit_follows_its_thread_budget_once_its_precision_is_settled(data, monkeypatch):
    monkeypatch.setattr("psvae.trainer.THREAD_CHECK_S", 0.0)  # look at every batch
    before = torch.get_num_threads()
    try:
        trainer = Trainer(small_config(**{"train.epochs": 2, "train.num_threads": 1}), data)
        precisions = []

        def budget() -> int | None:
            precisions.append(trainer._precision)  # what the fit had settled when it asked
            return 2

        trainer.thread_budget = budget
        list(trainer.epochs())
        assert trainer.threads == 2
        assert precisions and None not in precisions  # never before the precision probe's answer
        trainer.thread_budget = lambda: None  # no budget any more: the fit's own count
        trainer.finish()
        assert trainer.threads == 1
    finally:
        torch.set_num_threads(before)
