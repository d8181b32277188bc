"""The limbs benchmark scene: labelled limbs, small nuisance parts where the limbs never go."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from psvae import synthetic


@pytest.fixture(scope="module")
def scene():
    spec = synthetic.SyntheticSpec(n_trials=12, scene="limbs", seed=4)
    frames, factors = synthetic.generate(spec)
    background = synthetic._default_background(np.random.default_rng(0), spec.size)
    return frames, factors, background


def _changed(background, rows_a, rows_b, threshold=0.1):
    """Pixels (S, S) that differ by more than ``threshold`` between any pair of rendered rows."""
    a = synthetic.render_limbs(rows_a[None], background)[0]
    b = synthetic.render_limbs(rows_b[None], background)[0]
    return (np.abs(a - b) > threshold).any(0)


def test_nuisance_parts_are_small_and_lie_where_the_limbs_never_go(scene):
    _, factors, background = scene
    f = factors.reshape(-1, 6)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(f), 300)
    base = np.repeat(f[:1], 300, 0)
    limbs = base.copy()
    limbs[:, :4] = f[pick, :4]
    limb_pixels = _changed(background, base, limbs)
    assert limb_pixels.mean() > 0.2  # the labels drive large parts of the frame
    for column, name in ((4, "jaw"), (5, "tail")):
        low, high = f[:1].copy(), f[:1].copy()
        low[0, column], high[0, column] = f[:, column].min(), f[:, column].max()
        between_extremes = _changed(background, low, high).mean()
        assert 0.01 <= between_extremes <= 0.035, (name, between_extremes)
        moved = base.copy()
        moved[:, column] = f[pick, column]
        assert not (_changed(background, base, moved) & limb_pixels).any(), name


def test_factors_are_smooth_within_trials_and_independent(scene):
    frames, factors, _ = scene
    assert frames.shape == (12, 100, 1, 64, 64) and frames.dtype == np.uint8
    span = factors.reshape(-1, 6).max(0) - factors.reshape(-1, 6).min(0)
    steps = np.abs(np.diff(factors, axis=1)).max(axis=(0, 1))
    assert (steps < 0.15 * span).all()
    corr = np.corrcoef(factors.reshape(-1, 6).T)
    assert np.abs(corr[np.triu_indices(6, 1)]).max() < 0.3


def test_the_limbs_file_labels_the_limb_tips_and_keeps_the_factors_beside_it(tmp_path):
    from search.cli import main

    out = tmp_path / "limbs.h5"
    assert main(["synthetic", "--out", str(out), "--scene", "limbs", "--trials", "4"]) == 0
    with h5py.File(out) as f:
        assert list(f["labels"].attrs["names"]) == ["left_x", "left_y", "right_x", "right_y"]
        labels = f["labels/trial_0001"][()]
    assert synthetic.read_factor_names(out) == synthetic.LIMBS_FACTOR_NAMES
    factors = synthetic.read_factors(out)["trial_0001"]
    assert factors.shape == (100, 6)
    ok = ~np.isnan(labels).any(1)
    assert np.abs(labels[ok] - factors[ok, :4]).max() < 2.0  # the labels are the tips, with tracking noise
    assert synthetic.read_factor_names(
        synthetic.write(tmp_path / "b.h5", synthetic.SyntheticSpec(n_trials=2))
    ) == (
        "x",
        "y",
        "scale",
        "brightness",
    )
