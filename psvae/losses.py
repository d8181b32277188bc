"""The PS-VAE objective (``docs/model.md`` §4) as pure functions.

    loss = NLL_frames + alpha * NLL_labels' + KL_s + k_e * MI_u + beta_e * TC_u + k_e * DWKL_u

NLL_labels' is NLL_labels with its squared error divided by sigma_x^2 (:func:`scaled_label_term`):
alpha weighs the labels in units of the frame term's precision 1 / sigma_x^2, so that alpha
keeps its meaning when sigma_x changes; at sigma_x = 1 this is the reference's objective (see
``docs/latents.md``). sigma_x is a number, or a tensor calibrated from the batch
(:func:`calibrated_sigma_x`).

Every function takes tensors and returns tensors: no ``backward()``, no ``.item()``, no
logging. :func:`psvae_loss` returns the named terms so that the trainer, the result tables
and the plots all use the same names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)

TERMS = ("loss", "nll_frames", "nll_labels", "kl_s", "mi", "tc", "dwkl", "kl_u", "triplet", "msp_latent")
"""Every named term any class of the family reports; a class without a term reports 0."""


@dataclass(frozen=True)
class LossWeights:
    """The weights in force for one epoch."""

    alpha: float  # label log-likelihood, in units of 1 / sigma_x^2; never annealed
    beta_e: float  # total correlation, = beta * k_e
    k_e: float  # index-code MI and dimension-wise KL; ramps 0 -> 1
    sigma_x: float | Tensor = 1.0  # std of the Gaussian frame likelihood (a scalar tensor if calibrated)
    delta: float = 0.0  # msps-vae: triplet loss on the background means; never annealed
    msp_alpha: float = 0.0  # cond-ae-msp: label and projection terms


def anneal_weight(epoch: int, anneal_epochs: int) -> float:
    """k_e: 0 at epoch 0, rising linearly to 1 at epoch ``anneal_epochs`` and 1 afterwards.

    ``anneal_epochs = 0`` means full weight from the start.
    """
    if anneal_epochs <= 0:
        return 1.0
    return min(1.0, epoch / anneal_epochs)


def weights_for_epoch(
    epoch: int,
    alpha: float,
    beta: float,
    anneal_epochs: int,
    sigma_x: float | Tensor = 1.0,
    delta: float = 0.0,
    msp_alpha: float = 0.0,
) -> LossWeights:
    k_e = anneal_weight(epoch, anneal_epochs)
    return LossWeights(
        alpha=alpha, beta_e=beta * k_e, k_e=k_e, sigma_x=sigma_x, delta=delta, msp_alpha=msp_alpha
    )


SIGMA_X_FLOOR = 1.0 / 255.0
"""The least calibrated sigma_x: one grey level of 8-bit video. Pixels are known no better than
that, and the floor keeps the frame term finite when a reconstruction is (nearly) exact."""


def gaussian_nll_frames(
    frames: Tensor, recon: Tensor, sigma_x: float | Tensor, pixel_mask: Tensor | None = None
) -> Tensor:
    """Per-frame Gaussian negative log-likelihood, (M,).

    1/2 * sum_pixels m * (x - x_hat)^2 / sigma_x^2 + 1/2 * D_m * ln(2 pi sigma_x^2), where D_m
    is the number of unmasked pixels of the frame.
    """
    sq = (frames - recon).square()
    if pixel_mask is None:
        n_pixels = torch.full((frames.shape[0],), float(frames[0].numel()), device=frames.device)
    else:
        sq = sq * pixel_mask
        n_pixels = pixel_mask.flatten(1).sum(1)
    log_sigma = torch.log(torch.as_tensor(sigma_x, dtype=sq.dtype, device=sq.device))
    return 0.5 * sq.flatten(1).sum(1) / sigma_x**2 + 0.5 * n_pixels * (LOG_2PI + 2 * log_sigma)


def calibrated_sigma_x(
    frames: Tensor, recon: Tensor, pixel_mask: Tensor | None = None, floor: float = SIGMA_X_FLOOR
) -> Tensor:
    """The maximum-likelihood sigma_x of a batch: the root of its mean squared pixel error over
    unmasked pixels, at least ``floor``; a scalar, detached.

    This is the "optimal sigma" of Rybkin et al. 2021 (calibrated decoders): with sigma_x^2 set
    to the batch's MSE, the frame term's gradient is that of D/2 * ln(MSE), so the decoder's
    precision follows its own error instead of a fixed 1, and the KL terms weigh about as
    much, relative to the frames, as the reconstruction error is small. Detached: it is the
    variance the frames are scored with, not a quantity to minimise.
    """
    sq = (frames - recon).detach().float().square()
    mse = sq.mean() if pixel_mask is None else (sq * pixel_mask).sum() / pixel_mask.sum().clamp_min(1)
    return mse.clamp_min(floor**2).sqrt()


def gaussian_nll_labels(labels: Tensor, predicted: Tensor, label_mask: Tensor) -> Tensor:
    """Per-frame unit-variance Gaussian NLL of the labels, masked entries ignored, (M,)."""
    return 0.5 * (label_mask * ((labels - predicted).square() + LOG_2PI)).sum(1)


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """Analytic KL(N(mu, exp(logvar)) || N(0, I)) per frame, summed over dims, (M,)."""
    return 0.5 * (logvar.exp() + mu.square() - 1.0 - logvar).sum(1)


def gaussian_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise log N(z; mu, exp(logvar))."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).square() * torch.exp(-logvar))


def decomposed_kl(z: Tensor, mu: Tensor, logvar: Tensor, n_data: int) -> tuple[Tensor, Tensor, Tensor]:
    """Index-code MI, total correlation and dimension-wise KL by minibatch-weighted sampling.

    z, mu, logvar: (M, U). ``n_data`` is N, the number of frames in the dataset the batch was
    drawn from. The log(N * M) constants of beta-TCVAE are kept (the reference drops them), so
    that MI + TC + DWKL equals mean_j [log q(z_j | x_j) - log p(z_j)] exactly. Each of the
    U + 1 log-density estimates carries -log(N * M), which shifts TC by (U - 1) log(N * M)
    against a constant-free estimate and by (U - 1) log N against the 1/M-weighted one: TC
    values compare within a dataset, not across datasets. The estimates are biased for small
    M. Gradients do not depend on the constants. Returns three scalars.
    """
    m = z.shape[0]
    log_nm = math.log(n_data * m)
    # l[j, i, d] = log N(z_jd; mu_id, sigma^2_id): code j scored under posterior i
    l = gaussian_log_density(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))  # (M, M, U)
    log_qz = torch.logsumexp(l.sum(2), dim=1) - log_nm  # (M,)
    log_prod_qz = (torch.logsumexp(l, dim=1) - log_nm).sum(1)  # (M,)
    log_qz_given_x = torch.diagonal(l, dim1=0, dim2=1).sum(0)  # (M,)
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)  # (M,)
    mi = (log_qz_given_x - log_qz).mean()
    tc = (log_qz - log_prod_qz).mean()
    dwkl = (log_prod_qz - log_pz).mean()
    return mi, tc, dwkl


def scaled_label_term(
    labels: Tensor, predicted: Tensor, label_mask: Tensor, nll_labels: Tensor, sigma_x: float | Tensor
) -> Tensor:
    """NLL_labels with its squared error in units of the frames' precision: mean over frames of
    1/2 * sum_k m * (y - y_hat)^2 / sigma_x^2, plus NLL_labels' constant 1/2 * K_m * ln(2 pi).

    Weighted by alpha, the labels count as much against the frames at any sigma_x as they do
    at sigma_x = 1, where this is NLL_labels itself (the reference's objective, constant
    included). The constant is not scaled, so that a calibrated sigma_x, which shrinks as the
    fit improves, does not inflate the loss of later epochs (``docs/latents.md``).
    """
    squared = 0.5 * (label_mask * (labels - predicted).square()).sum(1).mean()
    return squared / sigma_x**2 + (nll_labels - squared)


def psvae_loss(
    frames: Tensor,
    recon: Tensor,
    labels: Tensor,
    predicted_labels: Tensor,
    label_mask: Tensor,
    pixel_mask: Tensor | None,
    z: Tensor,
    mu: Tensor,
    logvar: Tensor,
    n_labels: int,
    n_background: int,
    n_data: int,
    weights: LossWeights,
) -> dict[str, Tensor]:
    """The six terms and their weighted sum, each a scalar (mean over the M frames).

    Latents are laid out [supervised K | background B | unsupervised U]; the background
    block gets no KL term here (the multi-session model adds its own). The labels' squared
    error is weighted alpha / sigma_x^2 (:func:`scaled_label_term`, ``docs/latents.md``).
    """
    k, first_u = n_labels, n_labels + n_background
    nll_frames = gaussian_nll_frames(frames, recon, weights.sigma_x, pixel_mask).mean()
    nll_labels = gaussian_nll_labels(labels, predicted_labels, label_mask).mean()
    kl_s = kl_standard_normal(mu[:, :k], logvar[:, :k]).mean()
    if z.shape[1] > first_u:
        mi, tc, dwkl = decomposed_kl(z[:, first_u:], mu[:, first_u:], logvar[:, first_u:], n_data)
    else:
        mi = tc = dwkl = torch.zeros((), device=z.device)
    loss = (
        nll_frames
        + weights.alpha * scaled_label_term(labels, predicted_labels, label_mask, nll_labels, weights.sigma_x)
        + kl_s
        + weights.k_e * mi
        + weights.beta_e * tc
        + weights.k_e * dwkl
    )
    return {
        "loss": loss,
        "nll_frames": nll_frames,
        "nll_labels": nll_labels,
        "kl_s": kl_s,
        "mi": mi,
        "tc": tc,
        "dwkl": dwkl,
    }


# -- the other members of the family (``docs/model.md`` §7) --------------------------------


def triplet_loss(mu_b: Tensor, session: Tensor, margin: float = 1.0) -> Tensor:
    """Triplet loss on the background means, over every triplet of the batch.

    mu_b: (M, B), session: (M,) int. For each anchor a, each positive p != a of the same
    session and each negative n of another session: max(|a - p| - |a - n| + margin, 0), with
    Euclidean distances; the mean over all such triplets (0 if the batch has none). Using
    every triplet keeps the loss a deterministic function of the batch.
    """
    sq = (mu_b.unsqueeze(1) - mu_b.unsqueeze(0)).square().sum(2)  # (M, M)
    # the clamp keeps the gradient finite where two means coincide
    dist = sq.clamp_min(1e-12).sqrt()
    same = session.unsqueeze(1) == session.unsqueeze(0)  # (M, M)
    eye = torch.eye(len(session), dtype=torch.bool, device=session.device)
    positive = same & ~eye
    negative = ~same
    # hinge[a, p, n] = d(a, p) - d(a, n) + margin
    hinge = (dist.unsqueeze(2) - dist.unsqueeze(1) + margin).clamp_min(0)  # (M, M, M)
    valid = positive.unsqueeze(2) & negative.unsqueeze(1)
    n_valid = valid.sum()
    if n_valid == 0:
        return mu_b.sum() * 0.0
    return (hinge * valid).sum() / n_valid


def pixel_mse_frames(frames: Tensor, recon: Tensor, pixel_mask: Tensor | None = None) -> Tensor:
    """Mean squared pixel error of each frame over its unmasked pixels, (M,)."""
    sq = (frames - recon).square()
    if pixel_mask is None:
        return sq.flatten(1).mean(1)
    return (sq * pixel_mask).flatten(1).sum(1) / pixel_mask.flatten(1).sum(1).clamp_min(1)


def masked_label_mse(labels: Tensor, predicted: Tensor, label_mask: Tensor) -> Tensor:
    """Mean squared label error over the unmasked entries of the batch, a scalar."""
    return (label_mask * (labels - predicted).square()).sum() / label_mask.sum().clamp_min(1)


def _zero(like: Tensor) -> Tensor:
    return torch.zeros((), device=like.device)


def _record(loss: Tensor, like: Tensor, **terms: Tensor) -> dict[str, Tensor]:
    """All of TERMS, the ones a class does not have as 0."""
    return {name: loss if name == "loss" else terms.get(name, _zero(like)) for name in TERMS}


@dataclass(frozen=True)
class LossInputs:
    """One batch's tensors and constants, as every objective of the family reads them."""

    frames: Tensor  # (M, C, H, W) in [0, 1]
    recon: Tensor  # (M, C, H, W)
    labels: Tensor  # (M, K) z-scored, 0 where masked
    predicted_labels: Tensor | None  # (M, K); None for classes that predict no labels
    label_mask: Tensor  # (M, K)
    pixel_mask: Tensor | None  # (M, C, H, W)
    z: Tensor  # (M, L_enc)
    mu: Tensor  # (M, L_enc)
    logvar: Tensor  # (M, L_enc)
    n_labels: int
    n_background: int
    n_data: int
    weights: LossWeights
    session: Tensor | None  # (M,) int, for the triplet loss
    projection: Tensor | None  # P (K x L), for the matrix subspace projection

    def nll_frames(self) -> Tensor:
        return gaussian_nll_frames(self.frames, self.recon, self.weights.sigma_x, self.pixel_mask).mean()


def _ps_vae(x: LossInputs) -> dict[str, Tensor]:
    assert x.predicted_labels is not None
    terms = psvae_loss(
        x.frames, x.recon, x.labels, x.predicted_labels, x.label_mask, x.pixel_mask, x.z, x.mu, x.logvar,
        x.n_labels, x.n_background, x.n_data, x.weights,
    )  # fmt: skip
    return _record(terms.pop("loss"), x.z, **terms)


def _msps_vae(x: LossInputs) -> dict[str, Tensor]:
    """The PS-VAE terms (the background block gets no KL) + delta * triplet on the background means."""
    assert x.session is not None
    terms = _ps_vae(x)
    k = x.n_labels
    triplet = triplet_loss(x.mu[:, k : k + x.n_background], x.session)
    return {**terms, "loss": terms["loss"] + x.weights.delta * triplet, "triplet": triplet}


def _vae(x: LossInputs) -> dict[str, Tensor]:
    nll_frames = x.nll_frames()
    kl_u = kl_standard_normal(x.mu, x.logvar).mean()
    return _record(nll_frames + x.weights.beta_e * kl_u, x.z, nll_frames=nll_frames, kl_u=kl_u)


def _beta_tcvae(x: LossInputs) -> dict[str, Tensor]:
    nll_frames = x.nll_frames()
    mi, tc, dwkl = decomposed_kl(x.z, x.mu, x.logvar, x.n_data)
    w = x.weights
    loss = nll_frames + w.k_e * mi + w.beta_e * tc + w.k_e * dwkl
    return _record(loss, x.z, nll_frames=nll_frames, mi=mi, tc=tc, dwkl=dwkl)


def _cond_ae(x: LossInputs) -> dict[str, Tensor]:
    pixel = pixel_mse_frames(x.frames, x.recon, x.pixel_mask).mean()
    return _record(pixel, x.z, nll_frames=x.nll_frames())


def _cond_ae_msp(x: LossInputs) -> dict[str, Tensor]:
    assert x.predicted_labels is not None and x.projection is not None
    pixel = pixel_mse_frames(x.frames, x.recon, x.pixel_mask).mean()
    label = masked_label_mse(x.labels, x.predicted_labels, x.label_mask)
    msp_latent = (x.z - x.predicted_labels @ x.projection).square().mean()
    nll_labels = gaussian_nll_labels(x.labels, x.predicted_labels, x.label_mask).mean()
    loss = pixel + x.weights.msp_alpha * (label + msp_latent)
    return _record(loss, x.z, nll_frames=x.nll_frames(), nll_labels=nll_labels, msp_latent=msp_latent)


OBJECTIVES: dict[str, Callable[[LossInputs], dict[str, Tensor]]] = {
    "ps-vae": _ps_vae,
    "msps-vae": _msps_vae,
    "vae": _vae,
    "beta-tcvae": _beta_tcvae,
    "cond-ae": _cond_ae,
    "cond-ae-msp": _cond_ae_msp,
}
"""The objective of each model class (psvae.family.FAMILY has the same names)."""


def family_loss(
    model_class: str,
    frames: Tensor,
    recon: Tensor,
    labels: Tensor,
    predicted_labels: Tensor | None,
    label_mask: Tensor,
    pixel_mask: Tensor | None,
    z: Tensor,
    mu: Tensor,
    logvar: Tensor,
    n_labels: int,
    n_background: int,
    n_data: int,
    weights: LossWeights,
    session: Tensor | None = None,
    projection: Tensor | None = None,
) -> dict[str, Tensor]:
    """The objective of ``model_class`` and its named terms (every name of TERMS), scalars.

    - ps-vae: :func:`psvae_loss`.
    - msps-vae: the PS-VAE terms (the background block gets no KL) + delta * triplet on the
      background means, grouped by ``session``.
    - vae: nll_frames + beta_e * kl_u (analytic KL of all latents; beta stays after annealing).
    - beta-tcvae: nll_frames + k_e * mi + beta_e * tc + k_e * dwkl over all latents.
    - cond-ae: the mean squared pixel error.
    - cond-ae-msp: pixel MSE + msp_alpha * (label MSE + msp_latent), msp_latent the mean
      squared difference between z and P^T y_hat (``projection`` is P, K x L).
    """
    objective = OBJECTIVES.get(model_class)
    if objective is None:
        raise ValueError(f"unknown model class {model_class!r}")
    inputs = LossInputs(
        frames, recon, labels, predicted_labels, label_mask, pixel_mask, z, mu, logvar,
        n_labels, n_background, n_data, weights, session, projection,
    )  # fmt: skip
    return objective(inputs)
