"""The report's Plotly figures, each a pure function of result tables (pandas) and decisions.

Axis and panel titles are the result-table column names, so a number in the page can be found
in ``results/`` under the same name. Failed and diverged trials have no finite metrics and are
left out of every plot (the report lists them separately).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from results_schema.columns import (
    ALPHA,
    EPOCH,
    LABEL_LEAKAGE_U,
    N_UNSUPERVISED,
    SEED_MODEL,
    SESSION_CHANCE,
    TEST_ABS_CORR_U01,
    TRAIN_MEAN_ABS_CORR_U,
    TRIAL_ID,
    VAL_DWKL,
    VAL_LABEL_MSE,
    VAL_MI,
    VAL_MU_VAR_U,
    VAL_PIXEL_MSE,
    VAL_SESSION_ACC,
    VAL_TC,
    epoch_metric,
)

# What the beta and seeds sections compare, as result-table columns.
STAGE_METRICS: tuple[str, ...] = (
    VAL_PIXEL_MSE,
    VAL_LABEL_MSE,
    VAL_MI,
    VAL_TC,
    VAL_DWKL,
    TRAIN_MEAN_ABS_CORR_U,
)
# Multi-session fits add how well a classifier reads the session from z_u (VAL_SESSION_ACC)
# and its chance level (SESSION_CHANCE); beside the selection statistic is drawn the
# reference's |r| variant (TEST_ABS_CORR_U01).
# Training curves: each appears as train_<name> and val_<name> in the epochs table.
CURVE_METRICS: tuple[str, ...] = ("loss", "pixel_mse", "label_r2", "kl_s", "mi", "tc", "dwkl")

COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
    "#d62728",
)  # fmt: skip
CHOSEN = "#d62728"
CHOSEN_MARKER: dict[str, Any] = {
    "symbol": "star",
    "size": 16,
    "color": CHOSEN,
    "line": {"width": 1, "color": "#fff"},
}
FONT = "system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif"


def _layout(fig: go.Figure, height: int, **kwargs: Any) -> go.Figure:
    settings: dict[str, Any] = {
        "template": "plotly_white",
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "font": {"family": FONT, "size": 12},
        "hoverlabel": {"font": {"family": FONT}},
        "legend": {"orientation": "h", "y": -0.12, "x": 0},
    }
    fig.update_layout(**(settings | kwargs))
    fig.update_annotations(font_size=13)  # subplot titles
    return fig


def _finite(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The rows whose ``columns`` are all finite numbers."""
    values = table[list(columns)].apply(pd.to_numeric, errors="coerce")
    return table[np.isfinite(values.to_numpy(dtype=float)).all(axis=1)]


def _log_axis(values: pd.Series) -> bool:
    """Log scale when the values are positive and span more than a factor of 10."""
    finite = values[np.isfinite(values)]
    return bool(len(finite) > 1 and (finite > 0).all() and finite.max() / finite.min() > 10)


def _value_axis(fig: go.Figure, values: pd.Series, title: str) -> None:
    """The x axes of a sweep: log where the values span decades, ticks at the values tried
    (when there are few, as on a grid)."""
    finite = np.unique(values[np.isfinite(values)])
    ticks: dict[str, Any] = {}
    if 0 < len(finite) <= 12:
        ticks = {"tickvals": finite, "ticktext": [f"{v:.4g}" for v in finite]}
    fig.update_xaxes(title_text=title, type="log" if _log_axis(values) else "linear", **ticks)


def _hover(table: pd.DataFrame) -> list[str]:
    return [f"trial {t}" for t in table[TRIAL_ID]]


def alpha_sweep(trials: pd.DataFrame, chosen_trial: str | None) -> go.Figure:
    """val_pixel_mse and val_label_mse against alpha, one line per number of unsupervised latents."""
    metrics = (VAL_PIXEL_MSE, VAL_LABEL_MSE)
    usable = _finite(trials, [ALPHA, *metrics]).sort_values(ALPHA)
    fig = make_subplots(rows=1, cols=2, subplot_titles=metrics, horizontal_spacing=0.1)
    groups = list(usable.groupby(N_UNSUPERVISED))
    for i, (n_u, group) in enumerate(groups):
        for col, metric in enumerate(metrics, start=1):
            fig.add_trace(
                go.Scatter(
                    x=group[ALPHA], y=group[metric], mode="lines+markers",
                    name=f"n_unsupervised = {n_u}", legendgroup=str(n_u), showlegend=col == 1,
                    line={"color": COLOURS[i % len(COLOURS)]}, marker={"size": 8},
                    text=_hover(group), hovertemplate="alpha %{x:.4g}<br>%{y:.4g}<br>%{text}<extra></extra>",
                ),
                row=1, col=col,
            )  # fmt: skip
    _mark_chosen(fig, usable, chosen_trial, ALPHA, metrics)
    _value_axis(fig, usable[ALPHA], ALPHA)
    return _layout(
        fig, 400, legend={"orientation": "h", "y": -0.28, "x": 0}, margin={"l": 60, "r": 20, "t": 50, "b": 80}
    )


def _mark_chosen(
    fig: go.Figure,
    table: pd.DataFrame,
    chosen_trial: str | None,
    x: str,
    metrics: Sequence[str],
    n_cols: int = 0,
) -> None:
    """A red star on the chosen trial in every panel (panels numbered row-major, ``n_cols`` wide)."""
    row = table[table[TRIAL_ID] == chosen_trial]
    if row.empty:
        return
    for i, metric in enumerate(metrics):
        r, c = divmod(i, n_cols) if n_cols else (0, i)
        fig.add_trace(
            go.Scatter(
                x=row[x], y=row[metric], mode="markers", marker=CHOSEN_MARKER, name="chosen",
                legendgroup="chosen", showlegend=i == 0, hovertemplate="chosen<extra></extra>",
            ),
            row=r + 1, col=c + 1,
        )  # fmt: skip


def alpha_tradeoff(trials: pd.DataFrame, decision: dict[str, Any] | None) -> go.Figure:
    """Each alpha trial as a point (val_pixel_mse, val_label_mse); candidates of the rule filled,
    the chosen one a star; the alpha_tolerance rule's pixel-MSE bound as a dashed line."""
    usable = _finite(trials, [ALPHA, VAL_PIXEL_MSE, VAL_LABEL_MSE])
    table = {row[TRIAL_ID]: row for row in (decision or {}).get("table", [])}
    candidate = [bool(table.get(t, {}).get("candidate")) for t in usable[TRIAL_ID]]
    labels = [
        f"alpha={a:.4g}" + (f", U={u}" if usable[N_UNSUPERVISED].nunique() > 1 else "")
        for a, u in zip(usable[ALPHA], usable[N_UNSUPERVISED], strict=True)
    ]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=usable[VAL_PIXEL_MSE], y=usable[VAL_LABEL_MSE], mode="markers+text", text=labels,
            textposition="top center", name="trials (filled: candidates of the rule)",
            marker={
                "size": 11, "color": COLOURS[0], "line": {"width": 2, "color": COLOURS[0]},
                "symbol": ["circle" if c else "circle-open" for c in candidate],
            },
            customdata=usable[TRIAL_ID],
            hovertemplate="%{text}<br>val_pixel_mse %{x:.4g}<br>val_label_mse %{y:.4g}<br>"
            "trial %{customdata}<extra></extra>",
        )
    )  # fmt: skip
    if decision is not None:
        chosen = usable[usable[TRIAL_ID] == decision[TRIAL_ID]]
        fig.add_trace(
            go.Scatter(
                x=chosen[VAL_PIXEL_MSE], y=chosen[VAL_LABEL_MSE], mode="markers", marker=CHOSEN_MARKER,
                name="chosen", hovertemplate="chosen<extra></extra>",
            )
        )  # fmt: skip
        tolerance = decision.get("params", {}).get("tolerance")
        if decision.get("rule") == "alpha_tolerance" and tolerance is not None and len(usable):
            bound = (1 + tolerance) * float(usable[VAL_PIXEL_MSE].min())
            fig.add_vline(
                x=bound, line={"dash": "dash", "color": "#888"},
                annotation_text=f"lowest × {1 + tolerance:g}", annotation_position="top right",
            )  # fmt: skip
    fig.update_xaxes(title_text=VAL_PIXEL_MSE)
    fig.update_yaxes(title_text=VAL_LABEL_MSE)
    if _log_axis(usable[VAL_LABEL_MSE]):
        fig.update_yaxes(type="log")
    return _layout(fig, 420, title={"text": "pixel / label MSE trade-off", "x": 0.01})


def stage_metrics(trials: pd.DataFrame) -> tuple[str, ...]:
    """The metrics a stage section compares: the six of every class, and the session accuracy
    where the trials were fit on several sessions (the multi-session plans select on it)."""
    if VAL_SESSION_ACC in trials and np.isfinite(trials[VAL_SESSION_ACC].to_numpy(dtype=float)).any():
        return (*STAGE_METRICS, VAL_SESSION_ACC)
    return STAGE_METRICS


def metric_sweep(
    trials: pd.DataFrame,
    x: pd.Series,
    x_title: str,
    chosen_trial: str | None,
    group: pd.Series | None = None,
    group_title: str = "",
) -> go.Figure:
    """The stage metrics against the stage's varied value ``x`` (aligned with ``trials``); with
    ``group`` (a second key crossed with ``x``, e.g. delta against beta) one line per its value."""
    metrics = stage_metrics(trials)
    n_cols = 4 if len(metrics) > 6 else 3
    table = trials.assign(_x=x.to_numpy(dtype=float)).sort_values("_x")
    if group is not None:
        table = table.assign(_g=group.reindex(table.index).to_numpy(dtype=float))
    groups = sorted(table["_g"].dropna().unique()) if group is not None else [None]
    fig = make_subplots(
        rows=-(-len(metrics) // n_cols), cols=n_cols, subplot_titles=metrics,
        horizontal_spacing=0.07, vertical_spacing=0.22,
    )  # fmt: skip
    for i, metric in enumerate(metrics):
        r, c = divmod(i, n_cols)
        for k, value in enumerate(groups):
            part = table if value is None else table[table["_g"] == value]
            usable = _finite(part, ["_x", metric])
            name = metric if value is None else f"{group_title}={value:g}"
            fig.add_trace(
                go.Scatter(
                    x=usable["_x"], y=usable[metric], mode="lines+markers", name=name,
                    legendgroup=name, showlegend=value is not None and i == 0,
                    line={"color": COLOURS[k % len(COLOURS)]}, marker={"size": 8}, text=_hover(usable),
                    hovertemplate=f"{x_title} %{{x:.4g}}<br>{metric} %{{y:.4g}}<br>%{{text}}<extra></extra>",
                ),
                row=r + 1, col=c + 1,
            )  # fmt: skip
        if metric == TRAIN_MEAN_ABS_CORR_U and group is None:
            reference = _finite(table, ["_x", TEST_ABS_CORR_U01])
            fig.add_trace(
                go.Scatter(
                    x=reference["_x"], y=reference[TEST_ABS_CORR_U01], mode="lines+markers",
                    name=f"{TEST_ABS_CORR_U01} (the reference's variant)",
                    line={"color": "#999", "dash": "dot"},
                    marker={"size": 6}, hovertemplate=f"{TEST_ABS_CORR_U01} %{{y:.4g}}<extra></extra>",
                ),
                row=r + 1, col=c + 1,
            )  # fmt: skip
        if metric == VAL_SESSION_ACC:
            _chance_line(fig, table, r + 1, c + 1)
    _mark_chosen(fig, _finite(table, ["_x"]), chosen_trial, "_x", metrics, n_cols=n_cols)
    _value_axis(fig, table["_x"], x_title)
    return _layout(fig, 300 * -(-len(metrics) // n_cols))


def _chance_line(fig: go.Figure, table: pd.DataFrame, row: int, col: int) -> None:
    """Session accuracy by chance (1 / number of sessions), the level a model without session
    information in its unsupervised latents sits at."""
    chance = table[SESSION_CHANCE].dropna() if SESSION_CHANCE in table else pd.Series(dtype=float)
    if not chance.empty:
        fig.add_hline(y=float(chance.iloc[0]), line={"dash": "dash", "color": "#777"}, row=row, col=col,
                      annotation_text="chance", annotation_position="bottom right")  # fmt: skip


def seed_spread(trials: pd.DataFrame, chosen_trial: str | None) -> go.Figure:
    """The spread of the stage metrics across seeds: every seed a point, the chosen one a star."""
    metrics = stage_metrics(trials)
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics, horizontal_spacing=0.05)
    for i, metric in enumerate(metrics):
        usable = _finite(trials, [metric])
        seeds = [f"seed {s}" for s in usable[SEED_MODEL]]
        fig.add_trace(
            go.Box(
                y=usable[metric], name=metric, boxpoints="all", jitter=0.0, pointpos=0, showlegend=False,
                marker={"color": COLOURS[0], "size": 8}, line={"color": "#9ecae1"}, fillcolor="rgba(0,0,0,0)",
                text=seeds, hovertemplate="%{text}<br>%{y:.4g}<extra></extra>",
            ),
            row=1, col=i + 1,
        )  # fmt: skip
        chosen = usable[usable[TRIAL_ID] == chosen_trial]
        if not chosen.empty:
            fig.add_trace(
                go.Scatter(
                    x=[metric], y=chosen[metric], mode="markers", marker=CHOSEN_MARKER, name="chosen",
                    legendgroup="chosen", showlegend=i == 0,
                    hovertemplate=f"chosen: seed {int(chosen[SEED_MODEL].iloc[0])}<br>"
                    "%{y:.4g}<extra></extra>",
                ),
                row=1, col=i + 1,
            )  # fmt: skip
        if metric == VAL_SESSION_ACC:
            _chance_line(fig, trials, 1, i + 1)
    fig.update_xaxes(showticklabels=False)
    return _layout(fig, 400)


def training_curves(epochs: pd.DataFrame, names: dict[str, str]) -> go.Figure:
    """Every trial's train (solid) and val (dotted) curves of CURVE_METRICS; ``names``: trial_id ->
    legend name, in legend order."""
    n_cols = 4
    n_rows = -(-len(CURVE_METRICS) // n_cols)
    fig = make_subplots(
        rows=n_rows, cols=n_cols, subplot_titles=CURVE_METRICS, horizontal_spacing=0.06, vertical_spacing=0.18
    )
    traces, rows, cols = [], [], []
    for i, (trial_id, name) in enumerate(names.items()):
        trial = epochs[epochs[TRIAL_ID] == trial_id].sort_values(EPOCH)
        colour = COLOURS[i % len(COLOURS)]
        for j, metric in enumerate(CURVE_METRICS):
            r, c = divmod(j, n_cols)
            for prefix, dash in (("train", "solid"), ("val", "dot")):
                column = epoch_metric(prefix, metric)
                traces.append(
                    go.Scatter(
                        x=trial[EPOCH], y=trial[column], mode="lines+markers",
                        name=name, legendgroup=trial_id, showlegend=j == 0 and prefix == "train",
                        line={"color": colour, "dash": dash, "width": 2}, marker={"size": 4},
                        hovertemplate=f"{name}<br>epoch %{{x}}<br>{column} "
                        "%{y:.4g}<extra></extra>",
                    )
                )  # fmt: skip
                rows.append(r + 1)
                cols.append(c + 1)
    fig.add_traces(traces, rows=rows, cols=cols)  # at once: much faster than one by one
    n_epochs = int(epochs[EPOCH].max()) + 1 if len(epochs) else 1
    fig.update_xaxes(title_text=EPOCH, title_standoff=4, tick0=0, dtick=max(1, -(-n_epochs // 8)))
    return _layout(
        fig,
        520,
        legend={"orientation": "h", "y": -0.15, "x": 0, "title": {"text": "solid: train, dotted: val "}},
    )


def label_traces(
    frames: np.ndarray,
    true: np.ndarray,
    predicted: np.ndarray,
    names: Sequence[str],
    r2: Sequence[float],
    title: str,
) -> go.Figure:
    """True (grey) and predicted (blue) label traces of one test trial, one panel per label."""
    titles = [f"{name}: R² = {value:.3f}" for name, value in zip(names, r2, strict=True)]
    fig = make_subplots(
        rows=len(names), cols=1, subplot_titles=titles, shared_xaxes=True, vertical_spacing=0.12
    )
    for k in range(len(names)):
        fig.add_trace(
            go.Scatter(
                x=frames, y=true[:, k], mode="lines", name="true", legendgroup="true", showlegend=k == 0,
                line={"color": "#444", "width": 2}, connectgaps=False,
            ),
            row=k + 1, col=1,
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=frames, y=predicted[:, k], mode="lines", name="predicted", legendgroup="predicted",
                showlegend=k == 0, line={"color": COLOURS[0], "width": 2, "dash": "dash"},
            ),
            row=k + 1, col=1,
        )  # fmt: skip
    fig.update_xaxes(title_text="frame", row=len(names), col=1)
    return _layout(fig, 150 + 170 * len(names), title={"text": title, "x": 0.01})


# -- evidence across candidates ---------------------------------------------------------------
INACTIVE = "#d62728"  # a collapsed latent or trial, in every evidence figure
ACTIVE = COLOURS[0]
DIM_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "pentagon", "star-triangle-up")
VARIANCE_FLOOR = 1e-12  # a variance of exactly 0 is drawn here on the log axis (hover says 0)


def activity_chart(panels: Sequence[tuple[str, list[str], list[list[float]], float]]) -> go.Figure:
    """Per-latent activity of each candidate: one panel per stage, ``(title, trial names, per
    trial its val_mu_var_u, the stage's min_active_var)``. A point per z_u dimension (its symbol
    says which), red where it is below the threshold (a dashed line); log y, since a collapsed
    latent sits decades below a live one."""
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], shared_yaxes=True,
                        horizontal_spacing=0.04)  # fmt: skip
    n_dims = max((len(v) for _, _, values, _ in panels for v in values), default=0)
    for col, (_, names, values, threshold) in enumerate(panels, start=1):
        for d in range(n_dims):
            xs = [n for n, v in zip(names, values, strict=True) if d < len(v)]
            ys = [v[d] for v in values if d < len(v)]
            fig.add_trace(
                go.Scatter(
                    x=xs, y=[max(y, VARIANCE_FLOOR) for y in ys], mode="markers", name=f"z_u_{d}",
                    legendgroup=f"z_u_{d}", showlegend=col == 1,
                    marker={"symbol": DIM_SYMBOLS[d % len(DIM_SYMBOLS)], "size": 11,
                            "color": [INACTIVE if not y >= threshold else ACTIVE for y in ys]},
                    customdata=ys,
                    hovertemplate=f"%{{x}}<br>z_u_{d}: val_mu_var_u %{{customdata:.3g}}<extra></extra>",
                ),
                row=1, col=col,
            )  # fmt: skip
        fig.add_hline(
            y=threshold, line={"dash": "dash", "color": "#777"}, row=1, col=col,
            annotation_text=f"min_active_var {threshold:g}", annotation_position="bottom right",
        )  # fmt: skip
    fig.update_yaxes(type="log", title_text=VAL_MU_VAR_U, row=1, col=1)
    return _layout(fig, 380, title={"text": "active units: red below the stage's threshold", "x": 0.01})


def leakage_chart(
    names: Sequence[str], correlation: Sequence[float], leakage: Sequence[float], collapsed: Sequence[bool]
) -> go.Figure:
    """Label leakage beside the beta statistic for each candidate (``names``: one per trial, in
    stage order); collapsed trials (excluded by their stage's rule) red, the others blue."""
    metrics = (TRAIN_MEAN_ABS_CORR_U, LABEL_LEAKAGE_U)
    fig = make_subplots(rows=1, cols=2, subplot_titles=metrics, horizontal_spacing=0.08)
    colours = [INACTIVE if c else ACTIVE for c in collapsed]
    for col, (metric, values) in enumerate(zip(metrics, (correlation, leakage), strict=True), start=1):
        fig.add_trace(
            go.Scatter(
                x=list(names), y=list(values), mode="markers", name=metric, showlegend=False,
                marker={"size": 11, "color": colours},
                hovertemplate=f"%{{x}}<br>{metric} %{{y:.3g}}<extra></extra>",
            ),
            row=1, col=col,
        )  # fmt: skip
    fig.update_yaxes(rangemode="tozero")
    title = "per candidate (red: collapsed, excluded by the rule)"
    return _layout(fig, 380, title={"text": title, "x": 0.01})
