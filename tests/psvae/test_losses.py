import math

import numpy as np
import pytest
import torch

from psvae.losses import (
    anneal_weight,
    decomposed_kl,
    gaussian_log_density,
    gaussian_nll_frames,
    gaussian_nll_labels,
    kl_standard_normal,
    psvae_loss,
    weights_for_epoch,
)


def test_kl_is_zero_at_the_prior():
    mu, logvar = torch.zeros(7, 3), torch.zeros(7, 3)
    assert kl_standard_normal(mu, logvar).abs().max().item() == 0.0


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(kl_standard_normal(mu, logvar), expected)


def test_decomposition_sums_to_the_kl_sample_estimate():
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(64, 3, generator=g, dtype=torch.float64)
    logvar = torch.randn(64, 3, generator=g, dtype=torch.float64) * 0.5 - 1
    z = mu + torch.randn(64, 3, generator=g, dtype=torch.float64) * torch.exp(0.5 * logvar)
    mi, tc, dwkl = decomposed_kl(z, mu, logvar, n_data=5000)
    log_q = gaussian_log_density(z, mu, logvar).sum(1)
    log_p = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    expected = (log_q - log_p).mean()
    assert (mi + tc + dwkl).item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-12)


def test_decomposition_keeps_the_log_nm_constants():
    # log q(z) and each log q(z_l) carry -log(N*M); doubling N shifts MI by +log 2,
    # TC by +(U - 1) log 2 and DWKL by -U log 2, and their sum not at all.
    g = torch.Generator().manual_seed(2)
    mu, logvar = torch.randn(32, 3, generator=g), torch.zeros(32, 3)
    z = mu.clone()
    mi1, tc1, dwkl1 = decomposed_kl(z, mu, logvar, n_data=100)
    mi2, tc2, dwkl2 = decomposed_kl(z, mu, logvar, n_data=200)
    u = 3
    assert (mi2 - mi1).item() == pytest.approx(math.log(2), abs=1e-4)
    assert (tc2 - tc1).item() == pytest.approx((u - 1) * math.log(2), abs=1e-4)
    assert (dwkl2 - dwkl1).item() == pytest.approx(-u * math.log(2), abs=1e-4)


def _codes(correlated: bool, n: int = 2000, sigma: float = 0.2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 1, generator=g, dtype=torch.float64)
    b = torch.randn(n, 1, generator=g, dtype=torch.float64)
    if correlated:
        b = 0.98 * a + math.sqrt(1 - 0.98**2) * b
    mu = torch.cat([a, b], 1)
    logvar = torch.full_like(mu, math.log(sigma**2))
    z = mu + torch.randn(mu.shape, generator=g, dtype=torch.float64) * sigma
    return z, mu, logvar


def test_total_correlation_near_zero_for_independent_codes_and_positive_for_correlated():
    # The whole dataset is the batch (N = M = 2000). The log(N*M) constants of the
    # minibatch-weighted estimator add exactly (U - 1) * log N to TC (see the test above);
    # net of that documented offset, TC estimates the total correlation itself.
    n, u = 2000, 2
    offset = (u - 1) * math.log(n)
    _, tc_independent, _ = decomposed_kl(*_codes(False, n), n_data=n)
    _, tc_correlated, _ = decomposed_kl(*_codes(True, n), n_data=n)
    # codes z = mu + 0.2 eps with corr(mu) = 0.98 have r = 0.94: TC = -0.5 log(1 - r^2) = 1.08 nats
    assert abs(tc_independent.item() - offset) < 0.1
    assert tc_correlated.item() - offset == pytest.approx(1.08, abs=0.15)
    assert tc_correlated.item() - tc_independent.item() > 0.8


def test_annealing_end_points():
    assert anneal_weight(0, 100) == 0.0
    assert anneal_weight(50, 100) == 0.5
    assert anneal_weight(100, 100) == 1.0
    assert anneal_weight(250, 100) == 1.0
    assert anneal_weight(0, 0) == 1.0
    w = weights_for_epoch(0, alpha=50, beta=10, anneal_epochs=4)
    assert (w.k_e, w.beta_e, w.alpha) == (0.0, 0.0, 50)  # alpha is never annealed
    w = weights_for_epoch(4, alpha=50, beta=10, anneal_epochs=4)
    assert (w.k_e, w.beta_e) == (1.0, 10.0)


def test_frame_nll_is_the_gaussian_log_likelihood_with_masks():
    g = torch.Generator().manual_seed(3)
    x, xh = torch.rand(4, 1, 5, 6, generator=g), torch.rand(4, 1, 5, 6, generator=g)
    sigma = 0.3
    expected = -torch.distributions.Normal(xh, sigma).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_nll_frames(x, xh, sigma), expected)
    mask = (torch.rand(4, 1, 5, 6, generator=g) > 0.5).float()
    expected_masked = -(torch.distributions.Normal(xh, sigma).log_prob(x) * mask).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_nll_frames(x, xh, sigma, mask), expected_masked)


def test_label_nll_ignores_masked_entries():
    y = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    y_hat = torch.tensor([[1.0, 100.0], [1.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    nll = gaussian_nll_labels(y, y_hat, mask)
    log_2pi = math.log(2 * math.pi)
    np.testing.assert_allclose(nll.numpy(), [0.5 * log_2pi, 0.5 * (1 + 2 * log_2pi)], rtol=1e-6)


def test_psvae_loss_is_the_weighted_sum_of_its_terms():
    g = torch.Generator().manual_seed(4)
    m, k, u = 16, 2, 3
    mu, logvar = torch.randn(m, k + u, generator=g), torch.randn(m, k + u, generator=g) * 0.1
    z = mu + torch.randn(m, k + u, generator=g) * torch.exp(0.5 * logvar)
    frames, recon = torch.rand(m, 1, 4, 4, generator=g), torch.rand(m, 1, 4, 4, generator=g)
    labels, pred = torch.randn(m, k, generator=g), torch.randn(m, k, generator=g)
    w = weights_for_epoch(1, alpha=50.0, beta=5.0, anneal_epochs=4, sigma_x=0.5)
    t = psvae_loss(frames, recon, labels, pred, torch.ones(m, k), None, z, mu, logvar, k, 0, 1000, w)
    # alpha weighs the labels' squared error in units of 1 / sigma_x^2 (here 1 / 0.25); their
    # NLL's constant 1/2 * K * ln(2 pi) is not scaled
    squared = 0.5 * (labels - pred).square().sum(1).mean()
    total = (
        t["nll_frames"]
        + 50 * (squared / 0.25 + k * 0.5 * math.log(2 * math.pi))
        + t["kl_s"]
        + 0.25 * t["mi"]
        + 1.25 * t["tc"]
        + 0.25 * t["dwkl"]
    )
    torch.testing.assert_close(t["loss"], total)
    assert set(t) == {"loss", "nll_frames", "nll_labels", "kl_s", "mi", "tc", "dwkl"}


def test_the_calibrated_sigma_x_is_the_batch_rmse_and_its_gradient_that_of_half_d_log_mse():
    from psvae.losses import SIGMA_X_FLOOR, calibrated_sigma_x

    g = torch.Generator().manual_seed(7)
    frames = torch.rand(8, 1, 6, 6, generator=g)
    recon = torch.rand(8, 1, 6, 6, generator=g, requires_grad=True)
    sigma = calibrated_sigma_x(frames, recon)
    assert not sigma.requires_grad
    torch.testing.assert_close(sigma, (frames - recon).square().mean().sqrt().detach())
    # Rybkin et al.'s optimal sigma: scored with its own MSE, the frame term's gradient is that
    # of D/2 * ln(MSE) per frame
    gaussian_nll_frames(frames, recon, sigma).mean().backward()
    calibrated = recon.grad.clone()
    recon.grad = None
    (0.5 * 36 * (frames - recon).square().mean().log()).backward()
    torch.testing.assert_close(calibrated, recon.grad)
    # masked pixels do not count, and a perfect reconstruction stops at one grey level
    mask = torch.zeros_like(frames)
    mask[:, :, :3] = 1
    masked = calibrated_sigma_x(frames, recon, mask)
    torch.testing.assert_close(masked, ((frames - recon)[:, :, :3]).square().mean().sqrt().detach())
    assert calibrated_sigma_x(frames, frames.clone()).item() == pytest.approx(SIGMA_X_FLOOR)


def test_alpha_keeps_its_meaning_when_sigma_x_changes():
    from psvae.losses import scaled_label_term

    g = torch.Generator().manual_seed(3)
    labels, pred = torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g)
    mask = torch.ones(16, 2)
    nll = gaussian_nll_labels(labels, pred, mask).mean()
    assert scaled_label_term(labels, pred, mask, nll, 1.0) == pytest.approx(nll.item())  # the reference
    # the gradients of frames and labels keep their ratio at any sigma_x: both scale by 1/sigma^2
    frames, recon = torch.rand(16, 1, 4, 4, generator=g), torch.rand(16, 1, 4, 4, generator=g)
    ratios = []
    for sigma in (1.0, 0.03):
        pred_ = pred.clone().requires_grad_(True)
        recon_ = recon.clone().requires_grad_(True)
        nll_ = gaussian_nll_labels(labels, pred_, mask).mean()
        loss = gaussian_nll_frames(frames, recon_, sigma).mean() + 50 * scaled_label_term(
            labels, pred_, mask, nll_, sigma
        )
        loss.backward()
        ratios.append((pred_.grad.norm() / recon_.grad.norm()).item())
    assert ratios[0] == pytest.approx(ratios[1], rel=1e-5)
