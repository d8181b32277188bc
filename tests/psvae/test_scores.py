"""Ground-truth scores (psvae.scores) against known answers, and psvae score on real files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from psvae.metrics import mean_abs_pairwise_corr
from psvae.scores import equal_frequency_bins, grouped_cv_r2, histogram_bins, mig, mutual_information


def _factors(n: int = 4000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, 2))


def test_aligned_codes_have_a_high_mig_and_a_45_degree_rotation_a_low_one_with_low_r():
    factors = _factors()
    noise = np.random.default_rng(1).normal(scale=0.02, size=factors.shape)
    aligned = factors + noise
    high, per_factor = mig(factors, aligned)
    assert high > 0.6 and per_factor.min() > 0.6
    rotation = np.array([[1.0, 1.0], [-1.0, 1.0]]) / np.sqrt(2)
    rotated = aligned @ rotation
    low, _ = mig(factors, rotated)
    assert low < 0.1
    # the beta statistic cannot tell the two apart: both pairs are uncorrelated
    assert mean_abs_pairwise_corr(rotated) < 0.05 and mean_abs_pairwise_corr(aligned) < 0.05
    # an uninformative extra code changes nothing; a duplicated code closes the gap
    assert mig(factors, np.column_stack([aligned, noise[:, :1]]))[0] == pytest.approx(high, abs=0.02)
    assert mig(factors, np.column_stack([aligned, aligned[:, :1]]))[1][0] == pytest.approx(0.0, abs=1e-9)


def test_bins_and_information_on_known_cases():
    values = np.arange(100.0)
    assert np.bincount(equal_frequency_bins(values, 20)).tolist() == [5] * 20
    ties = np.repeat([0.0, 1.0], 50)  # two values: two bins, whatever was asked
    assert sorted(set(equal_frequency_bins(ties, 20).tolist())) == [0, 10]
    assert histogram_bins(np.array([0.0, 0.5, 1.0]), 2).tolist() == [0, 1, 1]
    assert histogram_bins(np.ones(3)).tolist() == [0, 0, 0]
    a = np.repeat([0, 1], 50)
    assert mutual_information(a, a) == pytest.approx(np.log(2))
    assert mutual_information(a, np.tile([0, 1], 50)) == pytest.approx(0.0, abs=1e-12)


def test_cross_validation_holds_out_whole_trials():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(10), 50)
    codes = rng.normal(size=(500, 1))
    # a target that is the trial's identity cannot be predicted from a code unrelated to it,
    # though a frame-wise split would learn each trial's level from its neighbours
    offsets = rng.normal(size=10)[groups]
    per_column, weighted = grouped_cv_r2(codes, offsets[:, None], groups)
    assert weighted < 0.05 and per_column.shape == (1,)
    curved = np.column_stack([np.tanh(codes[:, 0]), codes[:, 0] ** 2])
    assert grouped_cv_r2(codes, curved, groups)[0].min() > 0.95


@pytest.fixture(scope="module")
def limbs(tmp_path_factory):
    from psvae import synthetic

    path = tmp_path_factory.mktemp("limbs") / "limbs.h5"
    synthetic.write(path, synthetic.SyntheticSpec(n_trials=10, n_frames=30, size=32, seed=1, scene="limbs"))
    return path


@pytest.fixture(scope="module")
def limbs_model(limbs, tmp_path_factory):
    from psvae.fit import run_fit
    from tests.conftest import small_config

    out = tmp_path_factory.mktemp("fit") / "fit"
    run_fit([str(limbs)], small_config(**{"train.epochs": 2}), out, progress=False)
    return out / "model"


def test_score_command_prints_and_writes_the_scores(limbs, limbs_model, tmp_path, capsys):
    from search.cli import main

    out = tmp_path / "scores.json"
    code = main(
        [
            "score",
            "--model",
            str(limbs_model),
            "--data",
            str(limbs),
            "--factors",
            f"{limbs}.factors.npz",
            "--json",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["nuisance"] == ["jaw", "tail"] and report["frames"] == 300
    assert set(report["model"]["factor_r2_from_u"]) == {
        "left_x",
        "left_y",
        "right_x",
        "right_y",
        "jaw",
        "tail",
    }
    assert len(report["model"]["mu_var_u"]) == 2 and set(report["model"]["mig_per_factor"]) == {"jaw", "tail"}
    # the baseline: the top L = 4 + 2 principal components, split like the model's latents
    pca = report["pca"]
    assert pca["mu_var_u"] == pytest.approx([1.0, 1.0]) and 0 < pca["label_r2"] <= 1
    assert set(pca["factor_r2_from_s"]) == set(report["factor_names"])
    printed = capsys.readouterr().out
    assert "MIG (jaw, tail)" in printed and "pixel PCA" in printed


def _bad_factors(limbs, tmp_path, change):
    arrays = dict(np.load(f"{limbs}.factors.npz"))
    change(arrays)
    path = tmp_path / "bad.factors.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda a: a.update(trial_0003=a["trial_0003"][:-1]),
            "trial 'trial_0003': 29 frames of factors, but {data} has 30",
            id="frame-count",
        ),
        pytest.param(
            lambda a: a.pop("trial_0007"), "trial 'trial_0007': missing (it is in {data})", id="missing-trial"
        ),
        pytest.param(
            lambda a: a.update(trial_0099=a["trial_0000"]),
            "trial 'trial_0099': not a trial of {data}",
            id="extra-trial",
        ),
        pytest.param(
            lambda a: a.update(trial_0002=a["trial_0002"][:, :3]),
            "trial 'trial_0002': shape (30, 3), expected (frames, 6)",
            id="columns",
        ),
    ],
)
def test_a_factors_file_that_does_not_match_the_data_is_one_line_and_exit_2(
    limbs, limbs_model, tmp_path, capsys, change, message
):
    from search.cli import main

    factors = _bad_factors(limbs, tmp_path, change)
    out = tmp_path / "scores.json"
    code = main(
        [
            "score",
            "--model",
            str(limbs_model),
            "--data",
            str(limbs),
            "--factors",
            str(factors),
            "--json",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"psvae: error: {factors}: ")
    assert message.format(data=limbs) in err
    assert not out.exists()  # nothing written
