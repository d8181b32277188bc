"""Metrics of a fit (``docs/model.md`` §6). Names match the loss terms and the result columns.

Per epoch (train and val): the loss terms, ``pixel_mse`` (mean over unmasked pixels),
``label_mse`` (z-scored units, over unmasked entries) and ``label_r2`` (variance-weighted over
labels, masks honoured per column).

Per finished fit: the same on val and test with the best weights, ``label_r2_<name>`` per
label, and the beta selection statistic ``mean_abs_corr_u``: the mean |Pearson r| over all
pairs of unsupervised latents (posterior means) on the training frames. With several sessions,
``session_acc``: how well the session can be told from the unsupervised latents (chance = 1/S).
Whether the unsupervised latents carry anything at all (:func:`latent_summary`, see
``docs/latents.md``): per dimension the variance of the posterior means over the validation
frames and its KL to the prior, the number of active dimensions, and how well the labels can
be predicted from the unsupervised latents (label leakage).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from psvae.losses import TERMS
from psvae.thresholds import ACTIVE_VAR


def r2_per_column(y: np.ndarray, y_hat: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """R^2 of each label column over its own unmasked entries, (K,).

    The reference flattened all labels into one vector when masks were present; here each
    column has its own mean and residuals.
    """
    acc = R2Accumulator(y.shape[1])
    acc.add(torch.as_tensor(y), torch.as_tensor(y_hat), None if mask is None else torch.as_tensor(mask))
    return acc.per_column()


class R2Accumulator:
    """Running sums for per-column and variance-weighted R^2 with masks, in float64."""

    def __init__(self, n_columns: int, device: torch.device | str = "cpu") -> None:
        zeros = lambda: torch.zeros(n_columns, dtype=torch.float64, device=device)  # noqa: E731
        self.n, self.sum_y, self.sum_y2, self.sum_res2 = zeros(), zeros(), zeros(), zeros()

    def add(self, y: Tensor, y_hat: Tensor, mask: Tensor | None) -> None:
        y, y_hat = y.double(), y_hat.double()
        m = torch.ones_like(y) if mask is None else mask.double()
        self.n += m.sum(0)
        self.sum_y += (m * y).sum(0)
        self.sum_y2 += (m * y.square()).sum(0)
        self.sum_res2 += (m * (y - y_hat).square()).sum(0)

    def _ss(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.n.cpu().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            ss_tot = self.sum_y2.cpu().numpy() - self.sum_y.cpu().numpy() ** 2 / n
        return self.sum_res2.cpu().numpy(), ss_tot

    def per_column(self) -> np.ndarray:
        ss_res, ss_tot = self._ss()
        with np.errstate(invalid="ignore", divide="ignore"):
            return 1.0 - ss_res / ss_tot

    def weighted(self) -> float:
        """1 - sum_k SS_res,k / sum_k SS_tot,k over the columns that have data."""
        ss_res, ss_tot = self._ss()
        ok = np.isfinite(ss_tot) & (ss_tot > 0)
        if not ok.any():
            return float("nan")
        return float(1.0 - ss_res[ok].sum() / ss_tot[ok].sum())


class EpochAccumulator:
    """Frame-weighted sums of the loss terms and errors over the batches of one pass.

    Sums stay on the device and are read once, in :meth:`result`, so a GPU is not
    synchronised every step.
    """

    def __init__(self, n_labels: int, device: torch.device | str) -> None:
        self.device = device
        self.sums = torch.zeros(len(TERMS), dtype=torch.float64, device=device)
        self.n_frames = 0
        self.pixel_sse = torch.zeros((), dtype=torch.float64, device=device)
        self.pixel_n = torch.zeros((), dtype=torch.float64, device=device)
        self.label_sse = torch.zeros((), dtype=torch.float64, device=device)
        self.label_n = torch.zeros((), dtype=torch.float64, device=device)
        self.r2 = R2Accumulator(n_labels, device)

    @torch.no_grad()
    def add(
        self,
        terms: dict[str, Tensor],
        frames: Tensor,
        recon: Tensor,
        labels: Tensor,
        predicted: Tensor | None,
        label_mask: Tensor,
        pixel_mask: Tensor | None,
    ) -> None:
        """``predicted`` is None for classes that predict no labels: their label metrics are NaN."""
        m = frames.shape[0]
        zero = torch.zeros((), dtype=torch.float64, device=self.sums.device)
        self.sums += torch.stack([terms[n].detach().double() if n in terms else zero for n in TERMS]) * m
        self.n_frames += m
        sq = (frames - recon.float()).square()
        if pixel_mask is None:
            self.pixel_sse += sq.sum(dtype=torch.float64)
            self.pixel_n += sq.numel()
        else:
            self.pixel_sse += (sq * pixel_mask).sum(dtype=torch.float64)
            self.pixel_n += pixel_mask.sum(dtype=torch.float64)
        if predicted is None:
            return
        predicted = predicted.float()
        self.label_sse += (label_mask * (labels - predicted).square()).sum(dtype=torch.float64)
        self.label_n += label_mask.sum(dtype=torch.float64)
        self.r2.add(labels, predicted, label_mask)

    def per_frame_errors(self) -> dict[str, float]:
        """Means per frame of the squared pixel error summed over unmasked pixels
        (``pixel_sse``), of the number of those pixels (``pixels``) and of the squared label
        error summed over unmasked labels (``label_sse``): what a Gaussian likelihood needs to
        be scored again at another sigma_x."""
        n = max(self.n_frames, 1)
        return {
            "pixel_sse": float(self.pixel_sse) / n,
            "pixels": float(self.pixel_n) / n,
            "label_sse": float(self.label_sse) / n,
        }

    def result(self) -> dict[str, float]:
        sums = (self.sums / max(self.n_frames, 1)).tolist()
        out = dict(zip(TERMS, sums, strict=True))
        out["pixel_mse"] = float(self.pixel_sse / self.pixel_n)
        out["label_mse"] = float(self.label_sse / self.label_n) if self.label_n > 0 else float("nan")
        out["label_r2"] = self.r2.weighted()
        return out


def mean_abs_pairwise_corr(latents: np.ndarray) -> float:
    """Mean |Pearson r| over all U(U-1)/2 pairs of columns of (N, U); NaN when U < 2.

    This is the guide's beta selection statistic, computed on the unsupervised latents of the
    training frames. A constant column counts as uncorrelated (r = 0).
    """
    n_dims = latents.shape[1]
    if n_dims < 2:
        return float("nan")
    pairs = list(itertools.combinations(range(n_dims), 2))
    return float(np.mean([abs(pearson_r(latents[:, i], latents[:, j])) for i, j in pairs]))


def abs_corr_first_two(latents: np.ndarray) -> float:
    """|r| between unsupervised dims 0 and 1 only: the reference's variant, for comparison."""
    if latents.shape[1] < 2:
        return float("nan")
    return abs(pearson_r(latents[:, 0], latents[:, 1]))


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def session_accuracy(
    train_latents: np.ndarray,
    train_session: np.ndarray,
    val_latents: np.ndarray,
    val_session: np.ndarray,
    n_sessions: int,
    n_steps: int = 200,
) -> float:
    """Accuracy on validation frames of a classifier predicting the session from latents.

    The classifier is multinomial logistic regression (weak L2 penalty, 1e-3) on the latents
    standardised with the training frames' mean and standard deviation, fit by L-BFGS on the
    training frames' posterior means. Latents free of session information score near chance,
    1 / ``n_sessions``. NaN when there are no latents, fewer than two sessions or no
    validation frames.
    """
    if train_latents.shape[1] == 0 or n_sessions < 2 or len(val_latents) == 0 or len(train_latents) == 0:
        return float("nan")
    x = torch.as_tensor(train_latents, dtype=torch.float64)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    x = (x - mean) / std
    y = torch.as_tensor(train_session, dtype=torch.int64)
    with torch.enable_grad():
        weight = torch.zeros(x.shape[1], n_sessions, dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(n_sessions, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=n_steps, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + 1e-3 * weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
    with torch.no_grad():
        xv = (torch.as_tensor(val_latents, dtype=torch.float64) - mean) / std
        predicted = (xv @ weight + bias).argmax(1).numpy()
    return float((predicted == np.asarray(val_session)).mean())


def polynomial_features(x: np.ndarray, degree: int = 3) -> np.ndarray:
    """Every monomial of the columns of ``x`` (N, d) of degree 1 to ``degree``, (N, P), float64.

    With ``degree`` 3 a regression on these features follows smooth monotone or curved codes
    (a latent that saturates, or a factor spread over two rotated latents). d = 0 gives (N, 0).
    """
    x = np.asarray(x, np.float64)
    columns = [
        np.prod(x[:, list(combo)], axis=1)
        for deg in range(1, degree + 1)
        for combo in itertools.combinations_with_replacement(range(x.shape[1]), deg)
    ]
    return np.stack(columns, axis=1) if columns else np.zeros((len(x), 0))


def fit_predict(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    train_mask: np.ndarray | None = None,
    degree: int = 3,
    ridge: float = 1e-3,
) -> np.ndarray:
    """Predictions (N_test, K) of ``train_y`` (N, K) from codes, by ridge regression on the
    polynomial features of the codes standardised with the training codes' statistics.

    Each target column is fit on its own unmasked rows (``train_mask`` (N, K), 1 = use). A
    constant code is read as 0. The ridge penalty is ``ridge`` times the number of rows, on
    standardised features, so it only steadies near-collinear features; the intercept is free.
    """
    train_x = np.asarray(train_x, np.float64)
    mean, std = train_x.mean(0), train_x.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    f_train = polynomial_features((train_x - mean) / std, degree)
    f_test = polynomial_features((np.asarray(test_x, np.float64) - mean) / std, degree)
    f_mean, f_std = f_train.mean(0), f_train.std(0)
    f_std = np.where(f_std > 1e-12, f_std, 1.0)
    f_train, f_test = (f_train - f_mean) / f_std, (f_test - f_mean) / f_std
    train_y = np.asarray(train_y, np.float64)
    mask = np.ones_like(train_y, bool) if train_mask is None else np.asarray(train_mask) > 0
    predicted = np.zeros((len(f_test), train_y.shape[1]))
    for k in range(train_y.shape[1]):
        rows = mask[:, k]
        if not rows.any():
            predicted[:, k] = np.nan
            continue
        f, y = f_train[rows], train_y[rows, k]
        y_mean = y.mean()
        f_centre = f.mean(0)
        f = f - f_centre
        gram = f.T @ f + ridge * len(f) * np.eye(f.shape[1])
        coef = np.linalg.solve(gram, f.T @ (y - y_mean)) if f.shape[1] else np.zeros(0)
        predicted[:, k] = y_mean + (f_test - f_centre) @ coef
    return predicted


def heldout_r2(
    train_x: np.ndarray,
    train_y: np.ndarray,
    train_mask: np.ndarray | None,
    test_x: np.ndarray,
    test_y: np.ndarray,
    test_mask: np.ndarray | None,
) -> float:
    """R^2 (variance-weighted over target columns, masks honoured per column) on the test rows
    of :func:`fit_predict` fit on the training rows: how much of the targets the codes carry,
    measured on frames the regression never saw. NaN without targets or test rows."""
    if train_y.shape[1] == 0 or len(test_x) == 0 or len(train_x) == 0:
        return float("nan")
    predicted = fit_predict(train_x, train_y, test_x, train_mask)
    acc = R2Accumulator(test_y.shape[1])
    mask = None if test_mask is None else torch.as_tensor(np.asarray(test_mask, np.float64))
    acc.add(torch.as_tensor(np.asarray(test_y, np.float64)), torch.as_tensor(np.nan_to_num(predicted)), mask)
    return acc.weighted()


def kl_per_dim(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Mean over frames of KL(N(mu_d, exp(logvar_d)) || N(0, 1)) for each dimension d, (U,)."""
    mu, logvar = np.asarray(mu, np.float64), np.asarray(logvar, np.float64)
    return (0.5 * (np.exp(logvar) + mu**2 - 1.0 - logvar)).mean(0)


@dataclass(frozen=True)
class LatentSummary:
    """What the unsupervised latents of a fit carry, without ground truth (docs/latents.md)."""

    mu_var: np.ndarray  # (U,) variance over validation frames of each posterior mean
    kl_per_dim: np.ndarray | None  # (U,) mean KL of each dimension to N(0, 1); None: not variational
    n_active: int | None  # dimensions with mu_var >= ACTIVE_VAR; None: not variational
    label_leakage: float  # held-out R^2 of the labels from the unsupervised latents

    def flat(self) -> dict[str, float]:
        """The trainer's flat metrics: ``val_mu_var_u_<i>``, ``val_kl_u_per_dim_<i>``,
        ``n_active_u``, ``label_leakage_u``."""
        out = {f"val_mu_var_u_{i}": float(v) for i, v in enumerate(self.mu_var)}
        if self.kl_per_dim is not None:
            out.update({f"val_kl_u_per_dim_{i}": float(v) for i, v in enumerate(self.kl_per_dim)})
        if self.n_active is not None:
            out["n_active_u"] = float(self.n_active)
        out["label_leakage_u"] = self.label_leakage
        return out


def latent_summary(
    train_u: np.ndarray,
    train_labels: np.ndarray,
    train_label_mask: np.ndarray,
    val_u: np.ndarray,
    val_labels: np.ndarray,
    val_label_mask: np.ndarray,
    val_mu_u: np.ndarray,
    val_logvar_u: np.ndarray | None,
) -> LatentSummary:
    """Activity, KL per dimension and label leakage of the unsupervised latents.

    ``*_u``: posterior means (N, U) of the unsupervised latents; labels (N, K) z-scored with
    masks (N, K). ``val_logvar_u``: their log-variances on the validation frames, None for the
    deterministic autoencoders (no KL, and no prior to measure activity against). Label leakage
    is :func:`heldout_r2` of the labels from the unsupervised latents: fit on the training
    frames, scored on the validation frames (held-out trials); about 1 when a latent copies a
    label, about 0 (or slightly below) when it carries none of them.
    """
    mu_var = np.asarray(val_mu_u, np.float64).var(0) if len(val_mu_u) else np.full(val_mu_u.shape[1], np.nan)
    kl = None if val_logvar_u is None else kl_per_dim(val_mu_u, val_logvar_u)
    n_active = None if val_logvar_u is None else int((mu_var >= ACTIVE_VAR).sum())
    leakage = heldout_r2(train_u, train_labels, train_label_mask, val_u, val_labels, val_label_mask)
    return LatentSummary(mu_var, kl, n_active, leakage)
