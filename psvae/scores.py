"""Ground-truth scores of a fitted model's latents, where the true factors are known.

Only benchmark data has ground truth (``psvae synthetic`` writes it beside the file as
``<file>.factors.npz``); nothing in fitting or selection reads it. ``psvae score`` reports, for
a model bundle, a data file and its factors (see ``docs/latents.md``):

- the model's label R^2 (its predicted labels against the file's labels);
- the R^2 of each factor predicted from the unsupervised latents z_u and from the supervised
  latents z_s: a ridge regression on the codes' cubic polynomial features
  (:func:`psvae.metrics.fit_predict`), cross-validated over five folds of whole trials;
- label leakage: the same R^2 of the labels from z_u (about 0 when z_u carries no label);
- MIG, the mutual information gap (Chen et al. 2018) over the *nuisance* factors (the factors
  that are not labels; all factors when every factor is a label): for each factor, the gap
  between the two codes that share the most information with it, over the factor's entropy,
  averaged over factors. Factors are cut into 20 equal-frequency bins, codes into 20
  equal-width histogram bins; the codes are all of the model's latents [z_s | z_b | z_u];
- the per-dimension variance of z_u over the frames (a collapsed latent is about 0).

The same scores for a pixel-PCA baseline of the same shape: the top L principal components of
the frames (L the model's latents), in order of variance, split like the model's layout (the
first K as its z_s, the last U as its z_u): a linear autoencoder as wide as the model. A model
whose z_u is no better than this floor has learnt nothing a linear method would not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from psvae.errors import DataError
from psvae.metrics import R2Accumulator, fit_predict

N_FOLDS = 5
FACTOR_BINS = 20
CODE_BINS = 20
PCA_FIT_FRAMES = 2000  # principal components are fit on at most this many frames, evenly spaced


# -- information-theoretic pieces -------------------------------------------------------------


def equal_frequency_bins(values: np.ndarray, n_bins: int = FACTOR_BINS) -> np.ndarray:
    """Bin index (N,) of each value, bins holding about equal numbers of values (ties kept
    together, so a factor with few distinct values gets fewer bins)."""
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    raw = (ranks * n_bins) // max(len(values), 1)
    # equal values must share a bin: give each value the bin of its first occurrence in order
    order = np.argsort(values, kind="stable")
    sorted_values, sorted_bins = values[order], raw[order]
    first = np.searchsorted(sorted_values, sorted_values, side="left")
    out = np.empty_like(raw)
    out[order] = sorted_bins[first]
    return out


def histogram_bins(values: np.ndarray, n_bins: int = CODE_BINS) -> np.ndarray:
    """Bin index (N,) of each value in ``n_bins`` equal-width bins over its range (one bin for
    a constant)."""
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return np.zeros(len(values), np.int64)
    return np.minimum(((values - low) / (high - low) * n_bins).astype(np.int64), n_bins - 1)


def entropy(bins: np.ndarray) -> float:
    """Plug-in entropy of a discrete variable, in nats."""
    p = np.bincount(bins) / len(bins)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information of two discrete variables (N,) each, in nats."""
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= len(a)
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def mig(factors: np.ndarray, codes: np.ndarray) -> tuple[float, np.ndarray]:
    """Mutual information gap of ``codes`` (N, C) for ``factors`` (N, F): (mean, per factor (F,)).

    For factor k: (I(v_k; c_first) - I(v_k; c_second)) / H(v_k), the two codes sharing the most
    information with it; with one code the gap is its information. 1: one code per factor and
    nothing of it elsewhere; about 0: every factor spread over several codes.
    """
    code_bins = [histogram_bins(codes[:, j]) for j in range(codes.shape[1])]
    gaps = []
    for k in range(factors.shape[1]):
        v = equal_frequency_bins(factors[:, k])
        h = entropy(v)
        if h == 0 or not code_bins:
            gaps.append(np.nan)
            continue
        info = [*sorted((mutual_information(v, c) for c in code_bins), reverse=True), 0.0]
        gaps.append((info[0] - info[1]) / h)
    per_factor = np.array(gaps)
    return (float(np.nanmean(per_factor)) if np.isfinite(per_factor).any() else float("nan")), per_factor


def grouped_cv_r2(
    codes: np.ndarray, targets: np.ndarray, groups: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Cross-validated R^2 of ``targets`` (N, K) from ``codes`` (N, C): whole groups (trials)
    are held out together, in :data:`N_FOLDS` folds (group i in fold i mod 5). Returns the R^2
    of each column and the variance-weighted R^2, masks (N, K) honoured per column."""
    import torch

    unique = np.unique(groups)
    fold_of = {g: i % N_FOLDS for i, g in enumerate(unique)}
    fold = np.array([fold_of[g] for g in groups])
    predicted = np.zeros(targets.shape)
    for f in range(min(N_FOLDS, len(unique))):
        test = fold == f
        train_mask = None if mask is None else mask[~test]
        predicted[test] = fit_predict(codes[~test], targets[~test], codes[test], train_mask)
    acc = R2Accumulator(targets.shape[1])
    acc.add(
        torch.as_tensor(targets, dtype=torch.float64),
        torch.as_tensor(np.nan_to_num(predicted), dtype=torch.float64),
        None if mask is None else torch.as_tensor(mask, dtype=torch.float64),
    )
    return acc.per_column(), acc.weighted()


# -- the data, its labels and factors ---------------------------------------------------------


@dataclass(frozen=True)
class GroundTruth:
    """Every frame of a data file with its labels and true factors, in file order."""

    frames: np.ndarray  # (N, C, H, W) uint8
    trials: np.ndarray  # (N,) trial index: the cross-validation groups
    trial_names: tuple[str, ...]
    labels: np.ndarray  # (N, K) original units, NaN where missing
    label_mask: np.ndarray  # (N, K) 1 = use
    label_names: tuple[str, ...]
    factors: np.ndarray  # (N, F)
    factor_names: tuple[str, ...]

    @property
    def nuisance(self) -> list[int]:
        """Columns of the factors that are not labels (all of them if every factor is a label)."""
        columns = [i for i, n in enumerate(self.factor_names) if n not in self.label_names]
        return columns or list(range(len(self.factor_names)))


def read_ground_truth(data_path: str | Path, factors_path: str | Path) -> GroundTruth:
    """Read a data file and its factors file, checking that they describe the same frames.

    The factors file is an ``.npz`` with ``names`` (F,) and one (T, F) array per trial, named
    as in the data's ``images`` group (what ``psvae synthetic`` writes). A missing or extra
    trial, a trial whose frame count differs, or a wrong number of columns is a DataError that
    names the file, the trial and the value.
    """
    from psvae.data import read_trials

    data_path, factors_path = Path(data_path), Path(factors_path)
    if not factors_path.is_file():
        raise DataError(f"{factors_path}: no such factors file")
    try:
        npz = np.load(factors_path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{factors_path}: not a factors file (.npz of per-trial arrays): {err}") from None
    with npz:
        if "names" not in npz.files:
            raise DataError(f"{factors_path}: names: missing (the factors' names, one per column)")
        factor_names = tuple(str(n) for n in npz["names"])
        per_trial = {k: npz[k] for k in npz.files if k not in ("names", "session")}
    frames, trial_of, names, factors = [], [], [], []
    for i, (name, x) in enumerate(read_trials(str(data_path))):
        if name not in per_trial:
            raise DataError(f"{factors_path}: trial {name!r}: missing (it is in {data_path})")
        f = per_trial.pop(name)
        if f.ndim != 2 or f.shape[1] != len(factor_names):
            raise DataError(
                f"{factors_path}: trial {name!r}: shape {tuple(f.shape)}, expected (frames, "
                f"{len(factor_names)}) for the {len(factor_names)} names"
            )
        if len(f) != len(x):
            raise DataError(
                f"{factors_path}: trial {name!r}: {len(f)} frames of factors, but {data_path} has {len(x)}"
            )
        frames.append(x)
        factors.append(f.astype(np.float64))
        trial_of.append(np.full(len(x), i))
        names.append(name)
    if per_trial:
        extra = sorted(per_trial)[0]
        raise DataError(f"{factors_path}: trial {extra!r}: not a trial of {data_path}")
    labels, mask, label_names = _labels(data_path, names)
    return GroundTruth(
        frames=np.concatenate(frames),
        trials=np.concatenate(trial_of),
        trial_names=tuple(names),
        labels=labels,
        label_mask=mask,
        label_names=label_names,
        factors=np.concatenate(factors),
        factor_names=factor_names,
    )


def _labels(data_path: Path, trials: list[str]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Labels (N, K), their mask (NaN entries and ``labels_masks`` zeros masked) and names."""
    from psvae.data import read_labels

    raw = read_labels(str(data_path))
    labels = np.concatenate([raw[t] for t in trials]).astype(np.float64)
    mask = np.isfinite(labels).astype(np.float64)
    with h5py.File(data_path, "r") as f:
        if "labels_masks" in f:
            mask *= np.concatenate([f["labels_masks"][t][()] for t in trials]).astype(np.float64) > 0
        stored = f["labels"].attrs.get("names")
    k = labels.shape[1]
    names = tuple(str(n) for n in stored) if stored is not None and len(stored) == k else None
    return labels, mask, names or tuple(f"label_{i}" for i in range(k))


# -- scores -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeScores:
    """The scores of one set of codes: a model's latents or the PCA baseline."""

    factor_r2_from_u: dict[str, float]
    factor_r2_from_s: dict[str, float]
    label_leakage_u: float
    mig: float
    mig_per_factor: dict[str, float]
    mu_var_u: list[float]
    label_r2: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label_r2": self.label_r2,
            "factor_r2_from_u": self.factor_r2_from_u,
            "factor_r2_from_s": self.factor_r2_from_s,
            "label_leakage_u": self.label_leakage_u,
            "mig": self.mig,
            "mig_per_factor": self.mig_per_factor,
            "mu_var_u": self.mu_var_u,
            **self.extra,
        }


def score_codes(
    truth: GroundTruth, z_s: np.ndarray, z_u: np.ndarray, all_codes: np.ndarray, labels_z: np.ndarray
) -> CodeScores:
    """Scores of codes for every frame of ``truth``: supervised ``z_s`` (N, K_s), unsupervised
    ``z_u`` (N, U), ``all_codes`` (N, L) for MIG, and ``labels_z`` the labels (N, K) in the units
    the leakage is measured in (z-scored)."""
    groups = truth.trials
    factor_from_u, _ = grouped_cv_r2(z_u, truth.factors, groups)
    factor_from_s, _ = grouped_cv_r2(z_s, truth.factors, groups)
    _, leakage = grouped_cv_r2(z_u, np.nan_to_num(labels_z), groups, truth.label_mask)
    nuisance = truth.nuisance
    mean_gap, gaps = mig(truth.factors[:, nuisance], all_codes)
    names = truth.factor_names
    return CodeScores(
        factor_r2_from_u={n: float(v) for n, v in zip(names, factor_from_u, strict=True)},
        factor_r2_from_s={n: float(v) for n, v in zip(names, factor_from_s, strict=True)},
        label_leakage_u=leakage,
        mig=mean_gap,
        mig_per_factor={names[i]: float(g) for i, g in zip(nuisance, gaps, strict=True)},
        mu_var_u=[float(v) for v in z_u.var(0)],
    )


def zscore_labels(truth: GroundTruth) -> np.ndarray:
    """The file's labels z-scored with their own (unmasked) statistics, 0 where masked."""
    labels = np.where(truth.label_mask > 0, truth.labels, np.nan)
    mean, std = np.nanmean(labels, 0), np.nanstd(labels, 0)
    return np.nan_to_num((labels - mean) / np.where(std > 0, std, 1.0))


def top_components(x: np.ndarray, k: int) -> np.ndarray:
    """(k, D): the top k right singular vectors of ``x`` (M, D), from the eigenvectors of the
    smaller of its two Gram matrices: a full SVD of (2000, 4096) frames takes many times as long,
    and the report scores every candidate with it."""
    x = x.astype(np.float64)
    if len(x) <= x.shape[1]:
        eigenvalues, u = np.linalg.eigh(x @ x.T)  # (M,), (M, M), ascending
        top = np.argsort(eigenvalues)[::-1][:k]
        v = u[:, top].T @ x  # (k, D): each row is its singular value times the right vector
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), np.finfo(float).tiny)
    eigenvalues, w = np.linalg.eigh(x.T @ x)  # (D,), (D, D)
    return w[:, np.argsort(eigenvalues)[::-1][:k]].T


def pca_baseline(truth: GroundTruth, n_supervised: int, n_other: int, n_unsupervised: int) -> CodeScores:
    """The scores of the pixel-PCA baseline (module doc): the top n_supervised + n_other +
    n_unsupervised principal components of the frames, in order of variance, split like the
    model's layout (the first as its z_s, the last n_unsupervised as its z_u), each scaled to
    unit variance. Its label R^2 is the cross-validated R^2 of the labels from its z_s."""
    n_codes = n_supervised + n_other + n_unsupervised
    x = truth.frames.reshape(len(truth.frames), -1).astype(np.float32) / 255.0  # (N, D)
    fit_rows = np.linspace(0, len(x) - 1, min(len(x), PCA_FIT_FRAMES)).astype(int)
    centre = x[fit_rows].mean(0)
    vt = top_components(x[fit_rows] - centre, n_codes)
    codes = ((x - centre) @ vt.T).astype(np.float64)  # (N, L)
    codes = codes / np.where(codes.std(0) > 0, codes.std(0), 1.0)
    labels_z = zscore_labels(truth)
    z_s, z_u = codes[:, :n_supervised], codes[:, n_codes - n_unsupervised :]
    scores = score_codes(truth, z_s, z_u, codes, labels_z)
    _, label_r2 = grouped_cv_r2(z_s, labels_z, truth.trials, truth.label_mask)
    return CodeScores(**{**scores.__dict__, "label_r2": label_r2})


def score_model(model_dir: str | Path, data_path: str | Path, factors_path: str | Path) -> dict[str, Any]:
    """Score a model bundle on a data file with its factors, beside the PCA baseline; a plain
    JSON-ready dict (``model``, ``pca``, and what was scored)."""
    from psvae.export import load_model

    truth = read_ground_truth(data_path, factors_path)
    model = load_model(model_dir)
    scores = score_fitted(model, truth, data_path)
    shape = model.network
    return {
        "model": scores.to_dict(),
        "pca": pca_baseline(truth, shape.n_supervised, shape.n_background, shape.n_unsupervised).to_dict(),
        "frames": len(truth.frames),
        "trials": len(truth.trial_names),
        "label_names": list(truth.label_names),
        "factor_names": list(truth.factor_names),
        "nuisance": [truth.factor_names[i] for i in truth.nuisance],
    }


def score_fitted(model: Any, truth: GroundTruth, data_path: str | Path) -> CodeScores:
    """The scores of a loaded model (``psvae.export.FittedModel``) on ``truth``, read from
    ``data_path``: apart from :func:`score_model` so that several models of one run can be
    scored against one reading of the data (the report scores every candidate)."""
    if tuple(truth.frames.shape[1:]) != model.frame_shape:
        raise DataError(
            f"{data_path}: frames of shape {tuple(truth.frames.shape[1:])}, but the model expects "
            f"{model.frame_shape}"
        )
    if len(truth.label_names) != model.network.n_labels:
        raise DataError(
            f"{data_path}: {len(truth.label_names)} labels, but the model was fit with "
            f"{model.network.n_labels}"
        )
    conditional = model.network.kind.conditional
    encoded = [
        model.encode(
            truth.frames[truth.trials == i], labels=truth.labels[truth.trials == i] if conditional else None
        )
        for i in range(len(truth.trial_names))
    ]
    z_s = np.concatenate([e.supervised for e in encoded]).astype(np.float64)
    z_b = np.concatenate([e.background for e in encoded]).astype(np.float64)
    z_u = np.concatenate([e.unsupervised for e in encoded]).astype(np.float64)
    predicted = np.concatenate([e.labels_z for e in encoded]).astype(np.float64)
    labels_z = np.nan_to_num(model.label_stats.zscore(truth.labels))
    scores = score_codes(truth, z_s, z_u, np.column_stack([z_s, z_b, z_u]), labels_z)
    label_r2 = float("nan")
    if np.isfinite(predicted).all():
        import torch

        acc = R2Accumulator(labels_z.shape[1])
        acc.add(torch.as_tensor(labels_z), torch.as_tensor(predicted), torch.as_tensor(truth.label_mask))
        label_r2 = acc.weighted()
    return CodeScores(**{**scores.__dict__, "label_r2": label_r2})


def score_table(report: dict[str, Any]) -> str:
    """The scores as a plain-text table: one row per score, columns model and pixel PCA."""
    rows: list[tuple[str, str, str]] = []
    model, pca = report["model"], report["pca"]

    def fmt(value: float) -> str:
        return "nan" if value is None or not np.isfinite(value) else f"{value:.3f}"

    rows.append(("label R2 (model: predicted; PCA: from z_s)", fmt(model["label_r2"]), fmt(pca["label_r2"])))
    for name in report["factor_names"]:
        kind = "nuisance" if name in report["nuisance"] else "label"
        rows.append(
            (
                f"R2 {name} ({kind}) from z_u",
                fmt(model["factor_r2_from_u"][name]),
                fmt(pca["factor_r2_from_u"][name]),
            )
        )
    for name in report["factor_names"]:
        if name not in report["nuisance"]:
            rows.append(
                (
                    f"R2 {name} from z_s",
                    fmt(model["factor_r2_from_s"][name]),
                    fmt(pca["factor_r2_from_s"][name]),
                )
            )
    rows.append(("label leakage into z_u (R2)", fmt(model["label_leakage_u"]), fmt(pca["label_leakage_u"])))
    rows.append((f"MIG ({', '.join(report['nuisance'])})", fmt(model["mig"]), fmt(pca["mig"])))
    rows.append(
        (
            "z_u variance per dim",
            " ".join(fmt(v) for v in model["mu_var_u"]),
            " ".join(fmt(v) for v in pca["mu_var_u"]),
        )
    )
    width = max(len(r[0]) for r in rows)
    cwidth = max(12, *(len(r[1]) for r in rows))
    lines = [f"{'score':<{width}}  {'model':>{cwidth}}  pixel PCA"]
    lines += [f"{a:<{width}}  {b:>{cwidth}}  {c}" for a, b, c in rows]
    return "\n".join(lines)
