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


# -- what the unsupervised latents carry, on hand-built codes (docs/latents.md) -----------------


def _labelled_codes(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.normal(size=(n, 2))
    mask = np.ones_like(labels)
    return rng, labels, mask


def test_a_constant_latent_is_inactive_and_a_varying_one_active():
    from psvae.metrics import ACTIVE_VAR, latent_summary

    rng, labels, mask = _labelled_codes()
    z_u = np.column_stack([np.full(len(labels), 0.3), rng.normal(size=len(labels))])
    logvar = np.column_stack([np.zeros(len(labels)), np.full(len(labels), np.log(0.1))])
    half = len(labels) // 2
    s = latent_summary(
        z_u[:half],
        labels[:half],
        mask[:half],
        z_u[half:],
        labels[half:],
        mask[half:],
        z_u[half:],
        logvar[half:],
    )
    assert s.mu_var[0] == pytest.approx(0.0, abs=1e-20) and s.mu_var[1] == pytest.approx(1.0, abs=0.15)
    assert s.n_active == 1 and ACTIVE_VAR == 0.01
    # a constant posterior equal to N(0.3, 1) has KL 0.3^2 / 2; the other 1/2 (0.1 + 1 - 1 - ln 0.1) + ...
    assert s.kl_per_dim[0] == pytest.approx(0.045, rel=1e-6)
    assert s.kl_per_dim[1] == pytest.approx(0.5 * (0.1 + (z_u[half:, 1] ** 2).mean() - 1 - np.log(0.1)))
    flat = s.flat()
    assert flat["n_active_u"] == 1.0 and flat["val_mu_var_u_0"] < 1e-20 and "val_kl_u_per_dim_1" in flat
    # the deterministic autoencoders have no prior: no KL, and activity is not counted
    ae = latent_summary(
        z_u[:half], labels[:half], mask[:half], z_u[half:], labels[half:], mask[half:], z_u[half:], None
    )
    assert ae.n_active is None and ae.kl_per_dim is None and "n_active_u" not in ae.flat()


def test_a_latent_copying_a_label_leaks_about_one_and_noise_about_zero():
    from psvae.metrics import heldout_r2

    rng, labels, mask = _labelled_codes(n=1000)
    train, test = slice(0, 700), slice(700, None)
    copy = np.column_stack([labels[:, 0], np.tanh(labels[:, 1])])  # a saturating copy counts too
    leak = heldout_r2(copy[train], labels[train], mask[train], copy[test], labels[test], mask[test])
    assert leak > 0.97
    noise = rng.normal(size=(1000, 2))
    none = heldout_r2(noise[train], labels[train], mask[train], noise[test], labels[test], mask[test])
    assert -0.05 < none < 0.03
    # a tiny-variance latent that still follows a label leaks it: collapse does not hide leakage
    faint = 1e-3 * labels[:, :1] + 1e-5 * rng.normal(size=(1000, 1))
    assert heldout_r2(faint[train], labels[train], mask[train], faint[test], labels[test], mask[test]) > 0.45
    # masked label entries are left out of the fit and of the score
    holes = mask.copy()
    holes[::3, 0] = 0
    bad = labels.copy()
    bad[::3, 0] = 1e6
    masked = heldout_r2(copy[train], bad[train], holes[train], copy[test], bad[test], holes[test])
    assert masked == pytest.approx(leak, abs=0.02)
