"""Selection rules: which trial of a finished stage the next stage builds on.

Each rule is a pure function of one stage's results table (a DataFrame, one row per trial) and
returns a :class:`Decision`: the chosen trial, its hyperparameters, every trial of the input with
why it was or was not in the running, and a sentence with the numbers behind the choice.

A trial is *usable* when its status is ``"completed"`` and its hyperparameters and the metrics
the rule reads are finite. Every other trial is kept in ``Decision.table`` with the reason it was
excluded, so a diverged run with a deceptively good last metric is visible but never chosen.

The rules that judge the unsupervised latents (beta, seeds, sigma_x) also exclude a trial of a
variational class whose unsupervised latents have *collapsed*: a dimension whose posterior mean
varies less than ``min_active_var`` over the validation frames (``val_mu_var_u``) carries
nothing, and a low correlation between such latents means nothing either. If every otherwise
usable trial has collapsed, the rule raises :class:`CollapsedStage` with the remedy
(``docs/latents.md``). Tables without ``val_mu_var_u`` (results schemas 2 and 3) are not screened.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from psvae.family import FAMILY
from psvae.files import jsonable
from psvae.thresholds import ACTIVE_VAR
from results_schema import columns as col

HYPERPARAMETERS: tuple[str, ...] = (col.ALPHA, col.BETA, col.N_UNSUPERVISED, col.SEED_MODEL)
"""The hyperparameter columns every results table has, in the order they are reported."""

INTEGER_HYPERPARAMETERS = frozenset({col.N_UNSUPERVISED, col.SEED_MODEL})
"""The hyperparameters reported as Python ints (pandas may hold them as floats beside NaN)."""

PIXEL = col.VAL_PIXEL_MSE
"""Column: mean squared pixel error of the reconstruction on validation frames."""

LABEL = col.VAL_LABEL_MSE
"""Column: mean squared error of the supervised latents against the labels on validation frames."""

CORRELATION = col.TRAIN_MEAN_ABS_CORR_U
"""Column: mean |Pearson r| over all pairs of unsupervised latents on training frames."""

ACTIVITY = col.VAL_MU_VAR_U
"""Column (a list per trial): variance over validation frames of each unsupervised posterior mean."""

LEAKAGE = col.LABEL_LEAKAGE_U
"""Column: held-out R^2 of the labels predicted from the unsupervised latents."""

SIGMA = col.SIGMA_X
"""Column: the sigma_x a trial used (for a calibrated setting, the value it settled at)."""

COLLAPSE_REMEDY = (
    "a smaller loss.sigma_x (or loss.sigma_x: auto), more train.epochs, or fewer model.n_unsupervised"
)
"""What to try when every trial of a stage has collapsed unsupervised latents (docs/latents.md)."""

COMPLETED = "completed"
"""The only status whose trials can be chosen."""

# Two metric values closer than this are a tie: trials that differ only by float noise should be
# ordered by the documented tie-breaks, not by which rounding happened to come out lower.
_TIE_RTOL = 1e-9
_TIE_ATOL = 1e-12

_ORDER = tuple[tuple[str, bool], ...]
"""A tie-break order: (column, larger_is_better) pairs, applied one after another."""


class SelectionError(ValueError):
    """No trial of the stage can be chosen: the table is empty or every trial is excluded."""


class CollapsedStage(SelectionError):
    """Every trial that finished has collapsed unsupervised latents; the message is one line
    naming them and the remedy."""


@dataclass(frozen=True)
class Decision:
    """The outcome of one selection rule applied to one stage's results table."""

    rule: str
    """Name of the rule, a key of :data:`RULES`."""
    params: dict[str, Any]
    """The rule's parameters as used, e.g. ``{"tolerance": 0.05}``."""
    trial_id: str
    """The chosen trial."""
    chosen: dict[str, float | int]
    """The chosen trial's hyperparameters: alpha and beta as floats, n_unsupervised and seed_model as ints."""
    table: list[dict[str, Any]]
    """One entry per input trial, in input order: trial_id, status, hyperparameters, the metrics the
    rule read, ``excluded`` (None or the reason), ``candidate`` and, for alpha_utopia, ``distance``."""
    explanation: str
    """One or two sentences with the numbers that decided the choice."""

    def to_dict(self) -> dict[str, Any]:
        """The decision as plain JSON-serialisable data; NaN and infinities become None."""
        return {
            "rule": self.rule,
            "params": jsonable(self.params),
            col.TRIAL_ID: self.trial_id,
            "chosen": jsonable(self.chosen),
            "table": jsonable(self.table),
            "explanation": self.explanation,
        }


# ---------------------------------------------------------------------------------------------
# Screening: which trials are usable, and why the others are not


@dataclass(frozen=True)
class _Exclusion:
    """Why one trial cannot be chosen, worded for the table and for an error message."""

    reason: str
    """For ``Decision.table``: ``"diverged: non-finite loss at epoch 3"``."""
    summary: str
    """For :class:`SelectionError`: ``"t1 diverged (non-finite loss at epoch 3)"``."""


@dataclass(frozen=True)
class _Screened:
    """A stage's trials in input order, each paired with None or why it cannot be chosen."""

    records: tuple[dict[str, Any], ...]
    """One dict per trial: trial_id and status as str, error as str or None, numbers as float."""
    exclusions: tuple[_Exclusion | None, ...]

    @property
    def usable(self) -> list[dict[str, Any]]:
        """The records that a rule may choose from."""
        return [rec for rec, excl in zip(self.records, self.exclusions, strict=True) if excl is None]

    @property
    def n_excluded(self) -> int:
        """How many trials of the input cannot be chosen."""
        return sum(excl is not None for excl in self.exclusions)


def _error_text(error: object) -> str | None:
    """The error text on one line, or None when there is none."""
    if error is None or error is pd.NA or (isinstance(error, float) and math.isnan(error)):
        return None
    # Tracebacks span lines; the reason has to fit one line of a table or message.
    text = " ".join(str(error).split())
    return text or None


def _exclusion(record: dict[str, Any], metrics: Sequence[str]) -> _Exclusion | None:
    """None when ``record`` is usable for a rule reading ``metrics``, else why it is not."""
    trial_id, status = record[col.TRIAL_ID], record[col.STATUS]
    if status != COMPLETED:
        detail = record[col.ERROR]
        if detail is None:
            return _Exclusion(status, f"{trial_id} {status}")
        return _Exclusion(f"{status}: {detail}", f"{trial_id} {status} ({detail})")
    for kind, names in (("hyperparameter", HYPERPARAMETERS), ("metric", metrics)):
        missing = [name for name in names if not math.isfinite(record[name])]
        if missing:
            reason = f"missing {kind} {', '.join(missing)}"
            return _Exclusion(reason, f"{trial_id} {reason}")
    return None


def _numeric_column(table: pd.DataFrame, name: str) -> np.ndarray:
    """Column ``name`` as float64, missing values as NaN."""
    try:
        return table[name].to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise ValueError(f"table column {name}: must be numeric ({err})") from None


def _inactive_dims(table: pd.DataFrame, min_active_var: float | None) -> list[list[tuple[int, float]]]:
    """Per row, the (dimension, variance) of each inactive unsupervised latent; empty when all
    are active, when ``min_active_var`` is None, when the row's class is not variational (an
    autoencoder's codes have no prior scale) or when activity was not measured."""
    n_rows = len(table)
    if min_active_var is None or ACTIVITY not in table.columns:
        return [[] for _ in range(n_rows)]
    classes = table[col.MODEL_CLASS] if col.MODEL_CLASS in table.columns else [None] * n_rows
    out: list[list[tuple[int, float]]] = []
    for variances, model_class in zip(table[ACTIVITY], classes, strict=True):
        kind = FAMILY.get(str(model_class)) if isinstance(model_class, str) else None
        if variances is None or (kind is not None and not kind.variational):
            out.append([])
            continue
        values = [float(v) for v in variances] if not np.isscalar(variances) else []
        out.append([(d, v) for d, v in enumerate(values) if not v >= min_active_var])
    return out


def _collapse_text(dims: list[tuple[int, float]], threshold: float) -> str:
    """``"z_u dim 0 inactive (posterior-mean variance 0.003 < 0.01)"``."""
    names = ", ".join(str(d) for d, _ in dims)
    values = ", ".join(f"{v:.2g}" for _, v in dims)
    plural = "s" if len(dims) > 1 else ""
    return f"z_u dim{plural} {names} inactive (posterior-mean variance {values} < {threshold:g})"


def _weak_note(
    table: pd.DataFrame, screened: _Screened, chosen: dict[str, Any], min_active_var: float
) -> str:
    """A sentence when ``min_active_var`` was set below the convention and the chosen trial's
    latents are below the convention: a choice among barely active latents is not silent."""
    if min_active_var >= ACTIVE_VAR:
        return ""
    index = [record[col.TRIAL_ID] for record in screened.records].index(chosen[col.TRIAL_ID])
    weak = _inactive_dims(table, ACTIVE_VAR)[index]
    if not weak:
        return ""
    return (
        f" Its unsupervised latents barely vary ({_collapse_text(weak, ACTIVE_VAR).removeprefix('z_u ')} "
        f"by the usual threshold): its |r| means little."
    )


def _records(table: pd.DataFrame, metrics: Sequence[str]) -> list[dict[str, Any]]:
    """The columns a rule needs, one plain dict per row, after checking the table's shape."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table = {type(table).__name__}: must be a pandas DataFrame")
    needed = [col.TRIAL_ID, col.STATUS, col.ERROR, *HYPERPARAMETERS, *metrics]
    missing = [name for name in needed if name not in table.columns]
    if missing:
        raise ValueError(
            f"table: missing column {', '.join(missing)} (has: {', '.join(map(str, table.columns))})"
        )
    trial_ids = [str(value) for value in table[col.TRIAL_ID]]
    counts = pd.Series(trial_ids).value_counts()
    if (counts > 1).any():
        duplicate = str(counts.index[0])
        raise ValueError(f"table: trial_id {duplicate!r} appears {int(counts.iloc[0])} times")
    numbers = {name: _numeric_column(table, name) for name in (*HYPERPARAMETERS, *metrics)}
    return [
        {
            col.TRIAL_ID: trial_id,
            col.STATUS: str(status),
            col.ERROR: _error_text(error),
            **{name: float(values[i]) for name, values in numbers.items()},
        }
        for i, (trial_id, status, error) in enumerate(
            zip(trial_ids, table[col.STATUS], table[col.ERROR], strict=True)
        )
    ]


def _screen(table: pd.DataFrame, metrics: Sequence[str], min_active_var: float | None = None) -> _Screened:
    """Split the stage's trials into usable ones and excluded ones with their reasons; with
    ``min_active_var``, trials with an inactive unsupervised latent are excluded too.

    Raises SelectionError when the table is empty or no trial is usable, CollapsedStage when
    the only reason left is collapse.
    """
    if isinstance(table, pd.DataFrame) and table.empty:
        raise SelectionError("no trials")
    records = _records(table, metrics)
    inactive = _inactive_dims(table, min_active_var)
    exclusions: list[_Exclusion | None] = []
    collapsed: list[str] = []
    for record, dims in zip(records, inactive, strict=True):
        exclusion = _exclusion(record, metrics)
        if exclusion is None and dims:
            assert min_active_var is not None
            text = _collapse_text(dims, min_active_var)
            exclusion = _Exclusion(f"collapsed: {text}", f"{record[col.TRIAL_ID]} {text}")
            collapsed.append(exclusion.summary)
        exclusions.append(exclusion)
    if all(excl is not None for excl in exclusions):
        if collapsed:
            n = len(collapsed)
            raise CollapsedStage(
                f"the unsupervised latents collapsed in {'every one' if n > 1 else 'the one'} of the "
                f"{n} finished trial{'s' if n > 1 else ''} ({'; '.join(collapsed)}): their correlations "
                f"mean nothing, so nothing is chosen; remedy: {COLLAPSE_REMEDY}"
            )
        summaries = "; ".join(excl.summary for excl in exclusions if excl is not None)
        raise SelectionError(f"no usable trial: {summaries}")
    return _Screened(tuple(records), tuple(exclusions))


# ---------------------------------------------------------------------------------------------
# Small numeric helpers


def _close(values: np.ndarray, target: float) -> np.ndarray:
    """Mask of ``values`` equal to ``target`` up to float noise (the rules' notion of a tie)."""
    return np.isclose(values, target, rtol=_TIE_RTOL, atol=_TIE_ATOL)


def _column(records: Iterable[dict[str, Any]], name: str) -> np.ndarray:
    """Values of ``name`` across ``records`` as a float array."""
    return np.array([record[name] for record in records], dtype=float)


def _tied_best(records: Sequence[dict[str, Any]], name: str, larger_is_better: bool) -> list[dict[str, Any]]:
    """The records whose ``name`` ties with the best value (smallest, or largest if asked)."""
    values = _column(records, name)
    best = values.max() if larger_is_better else values.min()
    return [record for record, tied in zip(records, _close(values, best), strict=True) if tied]


def _best(records: Sequence[dict[str, Any]], order: _ORDER) -> dict[str, Any]:
    """The best record by ``order``, each step keeping only ties; the smaller trial_id settles the rest."""
    remaining = list(records)
    for name, larger_is_better in order:
        remaining = _tied_best(remaining, name, larger_is_better)
    return min(remaining, key=lambda record: record[col.TRIAL_ID])


def _min_max(values: np.ndarray) -> np.ndarray:
    """``values`` scaled to [0, 1]; a constant column scales to 0 (no spread, nothing to trade)."""
    span = values.max() - values.min()
    if span == 0:
        return np.zeros_like(values)
    return (values - values.min()) / span


def _pareto_mask(points: np.ndarray) -> np.ndarray:
    """Mask of rows of ``points`` (n x k, lower is better) that no other row dominates.

    A row is dominated by another that is at least as good on every column and strictly better on
    one; identical rows do not dominate each other, so both stay on the front.
    """
    at_least_as_good = np.all(points[None, :, :] <= points[:, None, :], axis=2)
    strictly_better = np.any(points[None, :, :] < points[:, None, :], axis=2)
    return ~np.any(at_least_as_good & strictly_better, axis=1)


# ---------------------------------------------------------------------------------------------
# Reporting


def _hyperparameter(name: str, value: float) -> float | int:
    """A hyperparameter value as the Python type it is reported with."""
    if name in INTEGER_HYPERPARAMETERS and value.is_integer():
        return int(value)
    return value


def _chosen(record: dict[str, Any]) -> dict[str, float | int]:
    """The hyperparameters of a (usable, hence finite) record."""
    return {name: _hyperparameter(name, record[name]) for name in HYPERPARAMETERS}


def _table(
    screened: _Screened,
    metrics: Sequence[str],
    candidates: set[str],
    distances: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """``Decision.table``: every input trial with what the rule read and whether it was in the running."""
    rows = []
    for record, exclusion in zip(screened.records, screened.exclusions, strict=True):
        row: dict[str, Any] = {col.TRIAL_ID: record[col.TRIAL_ID], col.STATUS: record[col.STATUS]}
        for name in HYPERPARAMETERS:
            value = record[name]
            # Excluded trials may lack a hyperparameter; NaN keeps the column float until to_dict.
            row[name] = _hyperparameter(name, value) if math.isfinite(value) else value
        row.update({name: record[name] for name in metrics})
        row["excluded"] = None if exclusion is None else exclusion.reason
        row["candidate"] = record[col.TRIAL_ID] in candidates
        if distances is not None:
            row["distance"] = distances.get(record[col.TRIAL_ID])
        rows.append(row)
    return rows


def _label_names(usable: Sequence[dict[str, Any]], primary: Sequence[str]) -> list[str]:
    """The hyperparameters that name a trial: ``primary`` plus any other that varies among ``usable``."""
    return [
        name for name in HYPERPARAMETERS if name in primary or len({record[name] for record in usable}) > 1
    ]


def _label(record: dict[str, Any], names: Sequence[str]) -> str:
    """``"alpha=500, n_unsupervised=2"`` for ``record``."""
    return ", ".join(f"{name}={_hyperparameter(name, record[name]):g}" for name in names)


def _excluded_note(screened: _Screened) -> str:
    """A sentence counting excluded trials, or nothing when none were."""
    if screened.n_excluded == 0:
        return ""
    return f" {screened.n_excluded} of {len(screened.records)} trials excluded (see table)."


def _tie_note(n_tied: int, metric: str, broken_by: str) -> str:
    """A clause saying a tie on ``metric`` was broken, or nothing when there was no tie."""
    if n_tied <= 1:
        return ""
    others = n_tied - 1
    return f" (tied with {others} other{'s' if others > 1 else ''} on {metric}; {broken_by} wins)"


# ---------------------------------------------------------------------------------------------
# Rules


def _check_number(name: str, value: object, positive: bool = False) -> float:
    """``value`` as a float, or ValueError naming ``name`` when it is not a finite number >= 0
    (> 0 when ``positive``)."""
    bound = "> 0" if positive else ">= 0"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} = {value!r}: must be a number {bound}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise ValueError(f"{name} = {value!r}: must be a number {bound}")
    return number


def _check_tolerance(tolerance: object) -> float:
    """``tolerance`` as a float, or ValueError when it is not a finite number >= 0."""
    return _check_number("tolerance", tolerance)


def _check_active_var(min_active_var: object) -> float:
    """The activity threshold: a finite number > 0 (0 would call every latent active)."""
    return _check_number("min_active_var", min_active_var, positive=True)


PARAM_CHECKS: dict[str, Callable[[object], float]] = {
    "tolerance": _check_tolerance,
    "min_active_var": _check_active_var,
    "corr_tolerance": lambda value: _check_number("corr_tolerance", value),
    "label_tolerance": lambda value: _check_number("label_tolerance", value),
}
"""How each rule parameter is checked; ValueError names the parameter and its value."""


def _optional(records: Sequence[dict[str, Any]], table: pd.DataFrame, name: str) -> None:
    """Attach column ``name`` to ``records`` as floats; NaN where it, or the column, is missing
    (older tables, classes that do not measure it)."""
    values = _numeric_column(table, name) if name in table.columns else np.full(len(records), np.nan)
    for record, value in zip(records, values, strict=True):
        record[name] = float(value)


def _finite_or_worst(records: Sequence[dict[str, Any]], name: str) -> str:
    """Add ``<name>_rank``: the value, or +inf where it is missing, so a missing value loses."""
    rank = f"{name}_rank"
    for record in records:
        record[rank] = record[name] if math.isfinite(record[name]) else math.inf
    return rank


def _pixel_band(
    table: pd.DataFrame, tolerance: float, metrics: tuple[str, ...], weight: str
) -> tuple[Any, float, list[dict[str, Any]], dict[str, Any], int]:
    """The tolerance trade-off of a label weight (alpha, msp_alpha): the usable trials whose
    val_pixel_mse is within ``tolerance`` of the lowest, and among them the lowest val_label_mse,
    ties to the larger weight, then the smaller trial_id. Returns (screened table, lowest pixel
    MSE, candidates, chosen, how many tie on label MSE)."""
    tolerance = _check_tolerance(tolerance)
    screened = _screen(table, metrics)
    pixel = _column(screened.usable, PIXEL)
    best_pixel = float(pixel.min())
    bound = (1 + tolerance) * best_pixel
    # A trial exactly on the bound is inside, also when rounding puts it a hair above.
    in_band = (pixel <= bound) | _close(pixel, bound)
    candidates = [record for record, inside in zip(screened.usable, in_band, strict=True) if inside]
    chosen = _best(candidates, ((LABEL, False), (weight, True)))
    n_tied = len(_tied_best(candidates, LABEL, larger_is_better=False))
    return screened, best_pixel, candidates, chosen, n_tied


def alpha_tolerance(table: pd.DataFrame, tolerance: float = 0.05) -> Decision:
    """The alpha (and n_unsupervised) rule: lowest label error among trials with near-best pixel error.

    With p* the lowest val_pixel_mse of the usable trials, the candidates are the trials with
    val_pixel_mse <= (1 + tolerance) * p*; the chosen one has the lowest val_label_mse among them.
    Ties on label error go to the larger alpha, then the smaller trial_id.

    Rationale: as alpha grows the label error keeps falling while the pixel error barely moves,
    until the supervised term starts to cost reconstruction; ``tolerance`` makes "barely" explicit.
    When the table also sweeps n_unsupervised, the choice is the (alpha, n_unsupervised) pair of
    the chosen row.
    """
    tolerance = _check_tolerance(tolerance)
    metrics = (PIXEL, LABEL)
    screened, best_pixel, candidates, chosen, n_tied = _pixel_band(table, tolerance, metrics, col.ALPHA)
    usable = screened.usable
    names = _label_names(usable, (col.ALPHA,))
    pixel_leader = _best(usable, ((PIXEL, False), (col.ALPHA, True)))
    explanation = (
        f"lowest val pixel MSE {best_pixel:.3g} ({_label(pixel_leader, names)}); "
        f"{len(candidates)} of {len(usable)} usable trials within {tolerance * 100:g}% of it; "
        f"of those {_label(chosen, names)} has the lowest val label MSE {chosen[LABEL]:.3g}"
        f"{_tie_note(n_tied, 'val label MSE', 'the larger alpha')}."
        f"{_excluded_note(screened)}"
    )
    return Decision(
        rule="alpha_tolerance",
        params={"tolerance": tolerance},
        trial_id=chosen[col.TRIAL_ID],
        chosen=_chosen(chosen),
        table=_table(screened, metrics, {record[col.TRIAL_ID] for record in candidates}),
        explanation=explanation,
    )


LABEL_R2 = col.VAL_LABEL_R2
"""Column: R^2 of the predicted labels on validation frames, variance-weighted over labels."""


def alpha_label_band(table: pd.DataFrame, label_tolerance: float = 0.01) -> Decision:
    """The default alpha (and n_unsupervised) rule: the best reconstruction among the trials that
    reproduce the labels about as well as the best.

    With R* the highest val_label_r2 of the usable trials, the candidates are the trials with
    val_label_r2 >= R* - ``label_tolerance`` (an absolute difference of R^2); the chosen one
    has the lowest val_pixel_mse among them. Ties go to the larger alpha, then the smaller
    trial_id.

    Rationale (``docs/latents.md``): alpha_tolerance bounds the pixel error and then takes the
    lowest label error, but the frame parts the unsupervised latents should carry are small, so
    losing them moves the pixel error by a few percent: inside its 5% band, where the label
    error, which keeps falling with alpha, always picks the largest alpha. Bounding the label
    error instead (labels within 0.01 of R* are reproduced equally well for any use of them)
    and then taking the best reconstruction chooses the alpha under which the frames, small
    parts included, are explained best, however small the pixel differences are.
    """
    label_tolerance = _check_number("label_tolerance", label_tolerance)
    metrics = (LABEL_R2, PIXEL)
    screened = _screen(table, metrics)
    usable = screened.usable
    best_r2 = max(record[LABEL_R2] for record in usable)
    bound = best_r2 - label_tolerance
    candidates = [r for r in usable if r[LABEL_R2] >= bound or _close(np.array([r[LABEL_R2]]), bound)[0]]
    chosen = _best(candidates, ((PIXEL, False), (col.ALPHA, True)))
    names = _label_names(usable, (col.ALPHA,))
    label_leader = _best(usable, ((LABEL_R2, True), (col.ALPHA, True)))
    n_tied = len(_tied_best(candidates, PIXEL, larger_is_better=False))
    explanation = (
        f"highest val label R^2 {best_r2:.4g} ({_label(label_leader, names)}); {len(candidates)} of "
        f"{len(usable)} usable trials within {label_tolerance:g} of it; of those {_label(chosen, names)} "
        f"has the lowest val pixel MSE {chosen[PIXEL]:.4g}"
        f"{_tie_note(n_tied, 'val pixel MSE', 'the larger alpha')}.{_excluded_note(screened)}"
    )
    return Decision(
        rule="alpha_label_band",
        params={"label_tolerance": label_tolerance},
        trial_id=chosen[col.TRIAL_ID],
        chosen=_chosen(chosen),
        table=_table(screened, metrics, {record[col.TRIAL_ID] for record in candidates}),
        explanation=explanation,
    )


def alpha_utopia(table: pd.DataFrame) -> Decision:
    """The alpha rule without a tolerance: the Pareto-optimal trial nearest the utopia point.

    val_pixel_mse and val_label_mse of the usable trials are min-max scaled to [0, 1] (a constant
    column scales to 0), so neither metric's units dominate. Of the Pareto-optimal trials (none
    other at least as good on both and strictly better on one) the chosen one is nearest (Euclidean)
    to (0, 0), the point where both errors are at their best. Ties go to the larger alpha, then the
    smaller trial_id.
    """
    metrics = (PIXEL, LABEL)
    screened = _screen(table, metrics)
    usable = screened.usable

    raw = np.column_stack([_column(usable, PIXEL), _column(usable, LABEL)])
    # Dominance on the raw values: scaling preserves it, and raw values carry no rounding of their own.
    on_front = _pareto_mask(raw)
    scaled = np.column_stack([_min_max(raw[:, 0]), _min_max(raw[:, 1])])
    distance = np.hypot(scaled[:, 0], scaled[:, 1])
    scored = [{**record, "distance": float(d)} for record, d in zip(usable, distance, strict=True)]
    front = [record for record, keep in zip(scored, on_front, strict=True) if keep]
    chosen = _best(front, (("distance", False), (col.ALPHA, True)))

    names = _label_names(usable, (col.ALPHA,))
    n_tied = len(_tied_best(front, "distance", larger_is_better=False))
    explanation = (
        f"{len(front)} of {len(usable)} usable trials are Pareto-optimal on (val pixel MSE, val label MSE); "
        f"{_label(chosen, names)} is nearest the utopia point after min-max scaling, at distance "
        f"{chosen['distance']:.3g} (val pixel MSE {chosen[PIXEL]:.3g}, val label MSE {chosen[LABEL]:.3g})"
        f"{_tie_note(n_tied, 'distance', 'the larger alpha')}."
        f"{_excluded_note(screened)}"
    )
    return Decision(
        rule="alpha_utopia",
        params={},
        trial_id=chosen[col.TRIAL_ID],
        chosen=_chosen(chosen),
        table=_table(
            screened,
            metrics,
            {record[col.TRIAL_ID] for record in front},
            {record[col.TRIAL_ID]: record["distance"] for record in scored},
        ),
        explanation=explanation,
    )


def lowest_correlation(
    table: pd.DataFrame, min_active_var: float = ACTIVE_VAR, corr_tolerance: float = 0.05
) -> Decision:
    """The beta and seeds rule: the least correlated unsupervised latents that carry something.

    Trials with an inactive unsupervised latent (posterior-mean variance over validation frames
    below ``min_active_var``) are excluded: a collapsed latent is uncorrelated with anything, so
    its low train_mean_abs_corr_u would win for the wrong reason. Among the rest, the trials
    whose mean |Pearson r| over pairs of unsupervised latents on training frames is within
    ``corr_tolerance`` of the lowest are a near-tie (that statistic moves with the seed by more
    than a few hundredths); the near-tie goes to the lowest label_leakage_u (labels the
    unsupervised latents should not carry; a missing value loses), then the lower |r|, then the
    lower val_pixel_mse, then the smaller trial_id. If every finished trial has collapsed, the
    rule raises :class:`CollapsedStage`. See ``docs/latents.md``.
    """
    min_active_var = _check_active_var(min_active_var)
    corr_tolerance = _check_number("corr_tolerance", corr_tolerance)
    metrics = (CORRELATION, PIXEL)
    screened = _screen(table, metrics, min_active_var)
    _optional(screened.records, table, LEAKAGE)
    usable = screened.usable
    leak_rank = _finite_or_worst(usable, LEAKAGE)
    lowest = _best(usable, ((CORRELATION, False), (PIXEL, False)))
    bound = lowest[CORRELATION] + corr_tolerance
    near = [r for r in usable if r[CORRELATION] <= bound or _close(np.array([r[CORRELATION]]), bound)[0]]
    chosen = _best(near, ((leak_rank, False), (CORRELATION, False), (PIXEL, False)))

    names = _label_names(usable, (col.BETA, col.SEED_MODEL))
    within = f"within {corr_tolerance:g} of the lowest ({lowest[CORRELATION]:.3g}, {_label(lowest, names)})"
    n_leak_best = len(_tied_best(near, leak_rank, larger_is_better=False))
    n_tied = len(_tied_best(near, CORRELATION, larger_is_better=False))
    tie = _tie_note(n_tied, "|r|", f"the lower val pixel MSE {chosen[PIXEL]:.3g}")
    if len(near) == 1:
        how = (
            f"{_label(chosen, names)} has the lowest mean |r| between unsupervised latents on training "
            f"frames, {chosen[CORRELATION]:.3g}, of {len(usable)} usable trials"
        )
    elif n_leak_best == 1:
        others = sorted(r[leak_rank] for r in near if r is not chosen)
        how = (
            f"{len(near)} of {len(usable)} usable trials have a mean |r| between unsupervised latents on "
            f"training frames {within}; of those {_label(chosen, names)} leaks the least of the labels "
            f"into them (label leakage R^2 {chosen[LEAKAGE]:.3g}, next {others[0]:.3g}), with mean |r| "
            f"{chosen[CORRELATION]:.3g}"
        )
    else:
        leak = f"R^2 {chosen[LEAKAGE]:.3g}" if math.isfinite(chosen[LEAKAGE]) else "not measured"
        how = (
            f"{len(near)} of {len(usable)} usable trials have a mean |r| between unsupervised latents on "
            f"training frames {within} and their label leakage does not tell them apart ({leak}); "
            f"{_label(chosen, names)} has the lowest mean |r|, {chosen[CORRELATION]:.3g}{tie}"
        )
    explanation = f"{how}.{_excluded_note(screened)}{_weak_note(table, screened, chosen, min_active_var)}"
    return Decision(
        rule="lowest_correlation",
        params={"min_active_var": min_active_var, "corr_tolerance": corr_tolerance},
        trial_id=chosen[col.TRIAL_ID],
        chosen=_chosen(chosen),
        table=_table(screened, (*metrics, LEAKAGE), {record[col.TRIAL_ID] for record in near}),
        explanation=explanation,
    )


def sigma_leakage(
    table: pd.DataFrame, min_active_var: float = ACTIVE_VAR, tolerance: float = 0.05
) -> Decision:
    """The sigma_x rule: unsupervised latents that are alive and free of the labels.

    Trials with an inactive unsupervised latent are excluded (as in :func:`lowest_correlation`;
    if all have collapsed, :class:`CollapsedStage`). Among the rest the candidates are the
    trials whose label_leakage_u is within ``tolerance`` of the lowest; the chosen one has the
    largest sigma_x (for a calibrated setting, the value it settled at): the most weight on
    the prior that still keeps every latent alive and the labels out of them. Ties go to the
    lower val_pixel_mse, then the smaller trial_id.

    Rationale (``docs/latents.md``): sigma_x^2 weighs the KL terms against the frames. Too
    large and the small parts of the frame are not worth their KL, the unsupervised latents
    collapse, and what little they keep is label information; too small and nothing holds the
    latents to the prior. Leakage is what separates the two without ground truth.
    """
    min_active_var = _check_active_var(min_active_var)
    tolerance = _check_tolerance(tolerance)
    metrics = (LEAKAGE, SIGMA, PIXEL)
    screened = _screen(table, metrics, min_active_var)
    usable = screened.usable
    least = min(record[LEAKAGE] for record in usable)
    bound = least + tolerance
    candidates = [r for r in usable if r[LEAKAGE] <= bound or _close(np.array([r[LEAKAGE]]), bound)[0]]
    chosen = _best(candidates, ((SIGMA, True), (PIXEL, False)))
    settings = _sigma_settings(table)
    for record in screened.records:
        record["sigma_x_setting"] = settings.get(record[col.TRIAL_ID], record[SIGMA])

    def label(record: dict[str, Any]) -> str:
        setting = record["sigma_x_setting"]
        if isinstance(setting, str):
            return f"sigma_x={setting} ({record[SIGMA]:.3g})"
        return f"sigma_x={record[SIGMA]:.3g}"

    explanation = (
        f"the lowest label leakage into the unsupervised latents is R^2 {least:.3g}; {len(candidates)} of "
        f"{len(usable)} usable trials are within {tolerance:g} of it; of those {label(chosen)} has the "
        f"largest sigma_x (label leakage {chosen[LEAKAGE]:.3g}, val pixel MSE {chosen[PIXEL]:.3g})."
        f"{_excluded_note(screened)}"
    )
    return Decision(
        rule="sigma_leakage",
        params={"min_active_var": min_active_var, "tolerance": tolerance},
        trial_id=chosen[col.TRIAL_ID],
        chosen={**_chosen(chosen), SIGMA: chosen[SIGMA]},
        table=_table(
            screened, (*metrics, "sigma_x_setting"), {record[col.TRIAL_ID] for record in candidates}
        ),
        explanation=explanation,
    )


def _sigma_settings(table: pd.DataFrame) -> dict[str, Any]:
    """trial_id -> the loss.sigma_x of its config (a number or a calibration's name), where the
    table has configs."""
    if col.CONFIG_JSON not in table.columns:
        return {}
    out: dict[str, Any] = {}
    for trial_id, text in zip(table[col.TRIAL_ID], table[col.CONFIG_JSON], strict=True):
        if isinstance(text, str):
            try:
                out[str(trial_id)] = json.loads(text).get("loss.sigma_x")
            except (json.JSONDecodeError, AttributeError):
                continue
    return out


SESSION_ACC = col.VAL_SESSION_ACC
"""Column: accuracy on validation frames of a classifier telling the session from the unsupervised latents."""

SESSION_CHANCE = col.SESSION_CHANCE
"""Column: 1 / number of sessions, the accuracy of guessing."""


def session_correlation(
    table: pd.DataFrame, tolerance: float = 0.1, min_active_var: float = ACTIVE_VAR
) -> Decision:
    """The msps-vae's beta x delta and seeds rule: no session information, then least correlation.

    The excess of a trial is |val_session_acc - session_chance|: how far a classifier reading the
    unsupervised latents is from guessing the session. The candidates are the usable trials whose
    excess is at most ``tolerance``; if there is none, the trials whose excess is within
    ``tolerance`` of the smallest. Among the candidates the chosen one has the lowest
    train_mean_abs_corr_u, then the lower val_pixel_mse, then the smaller trial_id.

    Rationale: the background subspace exists so that session differences stay out of the
    unsupervised latents; a trial whose latents still tell sessions apart is not what the search
    is for, however well decorrelated. Among the trials that pass, beta's and delta's usual goal
    decides. Trials with a collapsed unsupervised latent are excluded first (see
    :func:`lowest_correlation`): a latent that carries nothing tells no session apart either.
    """
    tolerance = _check_tolerance(tolerance)
    min_active_var = _check_active_var(min_active_var)
    metrics = (SESSION_ACC, SESSION_CHANCE, CORRELATION, PIXEL, col.DELTA)
    screened = _screen(table, metrics, min_active_var)
    usable = screened.usable
    for record in usable:
        record["excess"] = abs(record[SESSION_ACC] - record[SESSION_CHANCE])
    excess = _column(usable, "excess")
    within = (excess <= tolerance) | _close(excess, tolerance)
    fallback = not within.any()
    if fallback:
        bound = float(excess.min()) + tolerance
        within = (excess <= bound) | _close(excess, bound)
    candidates = [record for record, keep in zip(usable, within, strict=True) if keep]
    chosen = _best(candidates, ((CORRELATION, False), (PIXEL, False)))

    names = _label_names(usable, (col.BETA, col.SEED_MODEL))
    label = _label(chosen, names)
    if len({record[col.DELTA] for record in usable}) > 1:
        label += f", delta={chosen[col.DELTA]:g}"
    chance = chosen[SESSION_CHANCE]
    how = (
        f"none is within {tolerance:g} of chance, so the {len(candidates)} within {tolerance:g} of the "
        f"closest ({float(excess.min()):.3g}) are candidates"
        if fallback
        else f"{len(candidates)} of {len(usable)} usable trials have a session accuracy within "
        f"{tolerance:g} of chance"
    )
    n_tied = len(_tied_best(candidates, CORRELATION, larger_is_better=False))
    tie = _tie_note(n_tied, "|r|", f"the lower val pixel MSE {chosen[PIXEL]:.3g}")
    explanation = (
        f"chance session accuracy is {chance:.3g}; {how}; of those {label} has the lowest mean |r| "
        f"between unsupervised latents, {chosen[CORRELATION]:.3g}, with session accuracy "
        f"{chosen[SESSION_ACC]:.3g}{tie}.{_excluded_note(screened)}"
        f"{_weak_note(table, screened, chosen, min_active_var)}"
    )
    return Decision(
        rule="session_correlation",
        params={"tolerance": tolerance, "min_active_var": min_active_var},
        trial_id=chosen[col.TRIAL_ID],
        chosen={**_chosen(chosen), col.DELTA: chosen[col.DELTA]},
        table=_table(screened, metrics, {record[col.TRIAL_ID] for record in candidates}),
        explanation=explanation,
    )


def msp_tolerance(table: pd.DataFrame, tolerance: float = 0.05) -> Decision:
    """The cond-ae-msp's msp_alpha rule: the alpha_tolerance trade-off, over msp_alpha.

    With p* the lowest val_pixel_mse of the usable trials, the candidates have val_pixel_mse <=
    (1 + tolerance) * p*; the chosen one has the lowest val_label_mse among them, ties to the
    larger msp_alpha, then the smaller trial_id. msp_alpha weighs the label term against the
    pixel error just as alpha does in the PS-VAE.
    """
    tolerance = _check_tolerance(tolerance)
    metrics = (PIXEL, LABEL, col.MSP_ALPHA)
    screened, best_pixel, candidates, chosen, n_tied = _pixel_band(table, tolerance, metrics, col.MSP_ALPHA)
    usable = screened.usable
    explanation = (
        f"lowest val pixel MSE {best_pixel:.3g}; {len(candidates)} of {len(usable)} usable trials within "
        f"{tolerance * 100:g}% of it; of those msp_alpha={chosen[col.MSP_ALPHA]:g} has the lowest val "
        f"label MSE {chosen[LABEL]:.3g}{_tie_note(n_tied, 'val label MSE', 'the larger msp_alpha')}."
        f"{_excluded_note(screened)}"
    )
    return Decision(
        rule="msp_tolerance",
        params={"tolerance": tolerance},
        trial_id=chosen[col.TRIAL_ID],
        chosen={**_chosen(chosen), col.MSP_ALPHA: chosen[col.MSP_ALPHA]},
        table=_table(screened, metrics, {record[col.TRIAL_ID] for record in candidates}),
        explanation=explanation,
    )


RULES: dict[str, Callable[..., Decision]] = {
    "alpha_tolerance": alpha_tolerance,
    "alpha_label_band": alpha_label_band,
    "alpha_utopia": alpha_utopia,
    "lowest_correlation": lowest_correlation,
    "session_correlation": session_correlation,
    "msp_tolerance": msp_tolerance,
    "sigma_leakage": sigma_leakage,
}
"""The selection rules by name, as a stage configuration names them."""


def rule_params(rule: str) -> tuple[str, ...]:
    """The parameter names rule ``rule`` accepts besides the table."""
    function = _rule(rule)
    return tuple(name for name in inspect.signature(function).parameters if name != "table")


def _rule(rule: str) -> Callable[..., Decision]:
    """The function registered as ``rule``, or ValueError naming the known ones."""
    try:
        return RULES[rule]
    except KeyError:
        raise ValueError(f"rule = {rule!r}: unknown; known rules: {', '.join(RULES)}") from None


def check_params(rule: str, params: dict[str, Any]) -> None:
    """ValueError, naming the parameter and its value, unless every entry of ``params`` is a
    parameter of ``rule`` with an acceptable value; a search config is checked with this
    before any trial runs."""
    accepted = rule_params(rule)
    for name, value in params.items():
        if name not in accepted:
            raise ValueError(
                f"{name} = {value!r}: not a parameter of rule {rule} "
                f"(it takes: {', '.join(accepted) or 'no parameters'})"
            )
        check = PARAM_CHECKS.get(name)
        if check is not None:
            check(value)


def select(rule: str, table: pd.DataFrame, **params: Any) -> Decision:
    """Apply the rule named ``rule`` to one stage's results table with ``params``."""
    function = _rule(rule)
    check_params(rule, params)
    return function(table, **params)
