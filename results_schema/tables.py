"""The search's result tables (written by ``search.results``):

* ``trials``: one row per trial of a search stage;
* ``epochs``: one row per epoch of each trial.

These functions are the only place their columns are spelled out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from results_schema import columns as col

# version 2: the model family (model_class, delta, msp_alpha, n_background, session accuracy;
# the kl_u, triplet and msp_latent terms); version 3: reused_from (a fit an earlier stage made), note
# version 4 (trials) and 3 (epochs): the unsupervised latents' activity (docs/latents.md): sigma_x,
# val_mu_var_u, val_kl_u_per_dim, n_active_u, label_leakage_u, val_mi_net, val_tc_net,
# val_dwkl_net; epochs: sigma_x
TRIALS_VERSION = 4
EPOCHS_VERSION = 3
READABLE_VERSIONS = {"trials": (2, 3, 4), "epochs": (2, 3)}
"""Older versions a reader still takes: their missing columns read as null."""

# Per-epoch metric names; each appears as ``train_<name>`` and ``val_<name>`` in ``epochs``.
EPOCH_METRICS: tuple[str, ...] = (
    "loss",
    "nll_frames",
    "nll_labels",
    "kl_s",
    "mi",
    "tc",
    "dwkl",
    "pixel_mse",
    "label_mse",
    "label_r2",
    "kl_u",
    "triplet",
    "msp_latent",
)

_EPOCH_METRIC_TEXT = {
    "loss": "objective of the model class, mean per frame (ps-vae: nll_frames + alpha*nll_labels + kl_s "
    "+ k_e*(mi + dwkl) + beta_e*tc; see the README for the others)",
    "nll_frames": "Gaussian negative log-likelihood of the frames, mean per frame",
    "nll_labels": "Gaussian negative log-likelihood of the labels, mean per frame",
    "kl_s": "KL of the supervised latents to N(0, I)",
    "mi": "index-code mutual information of the unsupervised latents",
    "tc": "total correlation of the unsupervised latents (beta-TCVAE estimate with log(N*M) constants)",
    "dwkl": "dimension-wise KL of the unsupervised latents",
    "pixel_mse": "mean squared error of the reconstructed frames over unmasked pixels",
    "label_mse": "mean squared error of the predicted labels, z-scored units, over unmasked entries",
    "label_r2": "R^2 of the predicted labels, variance-weighted over labels",
    "kl_u": "vae: analytic KL of all latents to N(0, I), weighted by beta_e; 0 for other classes",
    "triplet": "msps-vae: triplet loss on the background means (margin 1), weighted by delta; "
    "0 for other classes",
    "msp_latent": "cond-ae-msp: mean squared difference between z and P^T y_hat, weighted by "
    "msp_alpha; 0 for other classes",
}

_EPOCH_PREFIX_TEXT = {
    "train": "average over the epoch's training batches with the annealed weights",
    "val": "validation set, posterior means and the full weights",
}

# (name, type, nullable, description) of the key columns shared by both tables.
_KEYS: list[tuple[str, pa.DataType, bool, str]] = [
    (col.RUN_ID, pa.string(), False, "identifier of the search run"),
    (col.STAGE, pa.string(), False, "search stage that ran the trial (e.g. alpha, beta, seeds)"),
    (col.TRIAL_ID, pa.string(), False, "trial identifier, unique within the run"),
]


_F64, _I32 = pa.float64(), pa.int32()

LATENT_COLUMNS: list[tuple[str, pa.DataType, bool, str]] = [
    (
        col.SIGMA_X,
        _F64,
        True,
        "the sigma_x the fit used: the configured number, or for auto and auto-epoch the value "
        "calibrated in the best epoch (docs/latents.md)",
    ),
    (
        col.VAL_MU_VAR_U,
        pa.list_(_F64),
        True,
        "per unsupervised latent: variance over the validation frames of its posterior mean "
        "(about 0 for a collapsed latent; the prior's is 1)",
    ),
    (
        col.VAL_KL_U_PER_DIM,
        pa.list_(_F64),
        True,
        "per unsupervised latent: mean KL(q(z_d|x) || N(0, 1)) on the validation frames, in nats "
        "(about 0 for a collapsed latent); null for the autoencoders",
    ),
    (
        col.N_ACTIVE_U,
        _I32,
        True,
        "unsupervised latents whose val_mu_var_u is at least 0.01 (active units); null for the "
        "autoencoders, which have no prior to measure against",
    ),
    (
        col.LABEL_LEAKAGE_U,
        _F64,
        True,
        "R^2 of the labels predicted from the unsupervised latents by a ridge regression on their "
        "cubic polynomial features, fit on the training frames and scored on the validation "
        "frames (held-out trials), variance-weighted over labels: about 1 when a latent copies a "
        "label, about 0 when none leaks",
    ),
    (
        col.VAL_MI_NET,
        _F64,
        True,
        "val_mi - log N (N: validation frames): 0 for a posterior equal to the prior",
    ),
    (
        col.VAL_TC_NET,
        _F64,
        True,
        "val_tc - (U - 1) log N: 0 for a posterior equal to the prior",
    ),
    (
        col.VAL_DWKL_NET,
        _F64,
        True,
        "val_dwkl + U log N: 0 for a posterior equal to the prior",
    ),
]
"""The trials columns of version 4 that :func:`trial_columns_from_metrics` fills."""

_PER_DIM = (col.VAL_MU_VAR_U, col.VAL_KL_U_PER_DIM)  # list columns, from the keys <column>_<i>


def trial_columns_from_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`LATENT_COLUMNS` of one trials row from a fit's flat metrics (the trainer's
    ``FitSummary.metrics``, as Tune reports them): the lists are assembled from the
    ``<name>_<i>`` keys in order of i. Missing values are NaN (floats) or null (lists, counts).
    """

    def number(key: str) -> float:
        value = metrics.get(key)
        return math.nan if value is None else float(value)

    row: dict[str, Any] = {}
    for column in _PER_DIM:
        pattern = re.compile(rf"{column}_(\d+)")
        found = {int(m.group(1)): float(v) for k, v in metrics.items() if (m := pattern.fullmatch(k))}
        row[column] = [found[i] for i in sorted(found)] if found else None
    active = metrics.get(col.N_ACTIVE_U)
    row[col.N_ACTIVE_U] = None if active is None or not math.isfinite(float(active)) else int(active)
    for key in (col.SIGMA_X, col.LABEL_LEAKAGE_U, col.VAL_MI_NET, col.VAL_TC_NET, col.VAL_DWKL_NET):
        row[key] = number(key)
    return row


def trials_columns() -> list[tuple[str, pa.DataType, bool, str]]:
    """(name, type, nullable, description) of every ``trials`` column, in order."""
    f64, i32, s = pa.float64(), pa.int32(), pa.string()
    cols = list(_KEYS)
    cols += [
        (col.STATUS, s, False, "how the trial ended: completed, diverged or failed"),
        (col.ERROR, s, True, "why the trial diverged or failed; null when it completed"),
        (
            col.MODEL_CLASS,
            s,
            True,
            "the model: ps-vae, msps-vae, cond-ae, cond-ae-msp, vae (beta-VAE) or beta-tcvae",
        ),
        (col.ALPHA, f64, True, "hyperparameter alpha: weight of the label log-likelihood"),
        (
            col.BETA,
            f64,
            True,
            "hyperparameter beta: weight of the total correlation of the unsupervised latents",
        ),
        (
            col.DELTA,
            f64,
            True,
            "hyperparameter delta (msps-vae): weight of the triplet loss on the background latents",
        ),
        (
            col.MSP_ALPHA,
            f64,
            True,
            "hyperparameter msp_alpha (cond-ae-msp): weight of the label and projection terms",
        ),
        (col.N_UNSUPERVISED, i32, True, "hyperparameter: number of unsupervised latents"),
        (col.N_BACKGROUND, i32, True, "number of background latents (msps-vae; 0 for the other classes)"),
        (col.SEED_MODEL, i32, True, "hyperparameter: seed of the network initialisation"),
        (col.EPOCHS_RUN, i32, True, "number of epochs trained"),
        (
            col.BEST_EPOCH,
            i32,
            True,
            "epoch (from 0) with the lowest validation loss; its weights give the metrics",
        ),
        (col.PRECISION, s, True, "numeric precision of training as resolved (float32 or bf16)"),
        (col.WALL_SECONDS, f64, True, "wall-clock time of the trial in seconds"),
        (col.VAL_LOSS, f64, True, "validation loss with the best weights, mean per frame"),
        (col.VAL_PIXEL_MSE, f64, True, "validation mean squared error of the frames over unmasked pixels"),
        (col.VAL_LABEL_MSE, f64, True, "validation mean squared error of the labels (z-scored units)"),
        (col.VAL_LABEL_R2, f64, True, "validation R^2 of the labels, variance-weighted over labels"),
        (col.VAL_MI, f64, True, "validation index-code mutual information of the unsupervised latents"),
        (col.VAL_TC, f64, True, "validation total correlation of the unsupervised latents"),
        (col.VAL_DWKL, f64, True, "validation dimension-wise KL of the unsupervised latents"),
        (col.TEST_LOSS, f64, True, "test loss with the best weights, mean per frame"),
        (col.TEST_PIXEL_MSE, f64, True, "test mean squared error of the frames over unmasked pixels"),
        (col.TEST_LABEL_MSE, f64, True, "test mean squared error of the labels (z-scored units)"),
        (col.TEST_LABEL_R2, f64, True, "test R^2 of the labels, variance-weighted over labels"),
        (
            col.TRAIN_MEAN_ABS_CORR_U,
            f64,
            True,
            "beta selection statistic: mean |r| over all pairs of unsupervised latents on training frames",
        ),
        (
            col.TEST_ABS_CORR_U01,
            f64,
            True,
            "|r| of unsupervised latents 0 and 1 on test frames (the reference implementation's variant)",
        ),
        (
            col.VAL_SESSION_ACC,
            f64,
            True,
            "with several sessions: accuracy on validation frames of a logistic-regression classifier "
            "predicting the session from the unsupervised latents (fit on training frames); "
            "near session_chance means no session information",
        ),
        (col.SESSION_CHANCE, f64, True, "1 / number of sessions: session_acc of a classifier that guesses"),
        *LATENT_COLUMNS,
        (col.LABEL_NAMES, pa.list_(s), True, "names of the labels, in model order"),
        (
            col.VAL_LABEL_R2_PER_LABEL,
            pa.list_(f64),
            True,
            "validation R^2 of each label, in label_names order",
        ),
        (col.TEST_LABEL_R2_PER_LABEL, pa.list_(f64), True, "test R^2 of each label, in label_names order"),
        (col.CONFIG_JSON, s, True, "the trial's full fit config as JSON, flat dotted keys"),
        (
            col.CHECKPOINT,
            s,
            True,
            "the trial's last checkpoint, relative to the run directory "
            "(runs of psvae-tune 0.1: a path or URI)",
        ),
        (
            col.NOTE,
            s,
            True,
            "what happened to the trial on its way, e.g. re-run from epoch 0 because its checkpoint "
            "was damaged",
        ),
        (
            col.REUSED_FROM,
            s,
            True,
            "the trial of an earlier stage whose fit this row reuses (the same full fit config: not run "
            "again; its results and checkpoint are that trial's); null for a trial that ran",
        ),
    ]
    return cols


def epochs_columns() -> list[tuple[str, pa.DataType, bool, str]]:
    """(name, type, nullable, description) of every ``epochs`` column, in order."""
    f64 = pa.float64()
    cols = list(_KEYS)
    cols += [
        (col.EPOCH, pa.int32(), False, "epoch index, from 0"),
        (col.STATUS, pa.string(), True, "running, or diverged if a loss was not finite"),
        (col.ALPHA, f64, True, "weight of the label log-likelihood (never annealed)"),
        (col.BETA_E, f64, True, "weight of the total correlation in force this epoch (beta * k_e)"),
        (col.K_E, f64, True, "annealing weight of the unsupervised KL terms this epoch, 0 to 1"),
        (
            col.SIGMA_X,
            f64,
            True,
            "sigma_x in force this epoch: the configured number; auto: the mean over the epoch's "
            "training batches of each batch's calibrated value; auto-epoch: the value calibrated "
            "from the previous epoch (docs/latents.md)",
        ),
        (col.IS_BEST, pa.bool_(), True, "whether this epoch had the lowest validation loss so far"),
        (col.SECONDS, f64, True, "wall-clock time of the epoch (training and validation) in seconds"),
    ]
    for prefix in ("train", "val"):
        cols += [
            (
                col.epoch_metric(prefix, name),
                f64,
                True,
                f"{_EPOCH_METRIC_TEXT[name]}; {_EPOCH_PREFIX_TEXT[prefix]}",
            )
            for name in EPOCH_METRICS
        ]
    return cols


def _schema(table: str, version: int, columns: list[tuple[str, pa.DataType, bool, str]]) -> pa.Schema:
    fields = [
        pa.field(name, dtype, nullable=nullable, metadata={"description": text})
        for name, dtype, nullable, text in columns
    ]
    return pa.schema(fields, metadata={"table": table, "version": str(version)})


def trials_schema() -> pa.Schema:
    return _schema("trials", TRIALS_VERSION, trials_columns())


def epochs_schema() -> pa.Schema:
    return _schema("epochs", EPOCHS_VERSION, epochs_columns())


def _type_name(dtype: pa.DataType) -> str:
    if isinstance(dtype, pa.ListType):
        return f"list<{_type_name(dtype.value_type)}>"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_float64(dtype):
        return "float64"
    return str(dtype)


def describe(schema: pa.Schema) -> str:
    """A Markdown table of the schema's columns: name, type, whether it may be null, meaning."""
    lines = ["| column | type | null | meaning |", "|---|---|---|---|"]
    for field in schema:
        meta = field.metadata or {}
        text = meta.get(b"description", b"").decode().replace("|", "\\|")
        lines.append(
            f"| `{field.name}` | {_type_name(field.type)} | {'yes' if field.nullable else 'no'} | {text} |"
        )
    return "\n".join(lines) + "\n"
