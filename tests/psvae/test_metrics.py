import numpy as np
import pytest

from psvae.metrics import abs_corr_first_two, mean_abs_pairwise_corr, pearson_r, r2_per_column


def _r2(y, y_hat):
    return 1 - ((y - y_hat) ** 2).sum() / ((y - y.mean()) ** 2).sum()


def test_masked_r2_is_computed_per_column():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(200, 2)) * [1.0, 10.0] + [0.0, 50.0]
    y_hat = y + rng.normal(size=(200, 2)) * [0.5, 1.0]
    mask = rng.random((200, 2)) > 0.3
    got = r2_per_column(y, y_hat, mask.astype(float))
    for k in range(2):
        assert got[k] == pytest.approx(_r2(y[mask[:, k], k], y_hat[mask[:, k], k]), rel=1e-9)
    # Flattening both columns into one vector (the reference's way) gives a different number.
    flat = _r2(
        np.concatenate([y[mask[:, 0], 0], y[mask[:, 1], 1]]),
        np.concatenate([y_hat[mask[:, 0], 0], y_hat[mask[:, 1], 1]]),
    )
    assert not np.isclose(flat, got.mean(), atol=1e-3)


def test_r2_is_nan_for_a_column_without_data():
    y = np.ones((5, 2))
    got = r2_per_column(y, y, np.array([[1, 0]] * 5, dtype=float))
    assert np.isnan(got[1])


def test_mean_abs_pairwise_corr_uses_every_pair():
    rng = np.random.default_rng(1)
    a = rng.normal(size=5000)
    b = rng.normal(size=5000)
    latents = np.stack([a, b, a + 0.1 * rng.normal(size=5000)], axis=1)
    expected = np.mean([abs(pearson_r(latents[:, i], latents[:, j])) for i, j in [(0, 1), (0, 2), (1, 2)]])
    assert mean_abs_pairwise_corr(latents) == pytest.approx(expected)
    assert 0.3 < mean_abs_pairwise_corr(latents) < 0.4  # one strong pair of three
    # the reference's variant looks at dims 0 and 1 only and misses the correlated pair
    assert abs_corr_first_two(latents) < 0.05


def test_pairwise_corr_edge_cases():
    assert np.isnan(mean_abs_pairwise_corr(np.zeros((10, 1))))
    assert pearson_r(np.ones(10), np.arange(10.0)) == 0.0
    assert mean_abs_pairwise_corr(np.stack([np.arange(10.0), -np.arange(10.0)], 1)) == pytest.approx(1.0)
