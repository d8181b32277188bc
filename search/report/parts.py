"""What every report section is built from: the run as the report reads it, the section and
page records, and the small formatting helpers the sections share."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from results_schema import columns as col
from search.report import model as report_model
from search.rundir import BUNDLE, RunDir
from search.storage import fetch_dir, is_uri

# section states, shown as badges and as data-state attributes
DONE, PENDING, FAILED, FIXED, UNAVAILABLE = "done", "pending", "failed", "fixed", "unavailable"
# trials-table columns that hold a stage's varied key
KEY_COLUMNS = {
    "loss.alpha": col.ALPHA,
    "loss.beta": col.BETA,
    "train.seed_model": col.SEED_MODEL,
    "model.n_unsupervised": col.N_UNSUPERVISED,
    "loss.delta": col.DELTA,
    "loss.msp_alpha": col.MSP_ALPHA,
}
STAGE_TITLES = {"alpha": "α stage", "beta": "β stage", "seeds": "Seeds"}


@dataclass
class Section:
    id: str
    title: str
    state: str
    body: str  # HTML
    note: str = ""  # one line under the title (plain text)
    badge: str = ""  # shown instead of the state, e.g. a count
    badge_class: str = ""  # its colour: one of the states (default: the section's state)


@dataclass
class Page:
    """The report being built: its sections and the Plotly figures they refer to by id."""

    title: str
    subtitle: str
    sections: list[Section] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)  # div id -> figure (plotly)

    def figure(self, fig: Any, css_class: str = "figure") -> str:
        """Register ``fig`` and return the HTML element it is drawn into."""
        fig_id = f"fig-{len(self.figures)}"
        self.figures[fig_id] = fig
        # a responsive figure takes its height from its element, so the element gets the figure's
        height = int(fig.layout.height or 450)
        return f'<div class="{css_class}" id="{fig_id}" style="height:{height}px" data-figure></div>'


@dataclass(frozen=True)
class Run:
    """What the report reads from a run directory."""

    path: Path
    manifest: dict[str, Any]
    trials: pd.DataFrame
    epochs: pd.DataFrame

    def stage_specs(self) -> list[dict[str, Any]]:
        return list(self.manifest["spec"]["stages"])

    def stage_trials(self, stage: str) -> pd.DataFrame:
        return self.trials[self.trials[col.STAGE] == stage].reset_index(drop=True)

    def record(self, stage: str) -> dict[str, Any] | None:
        return self.manifest["stages"].get(stage)


# -- small helpers ----------------------------------------------------------------------------
def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: object) -> str:
    """A number as a short string; missing values as an en dash."""
    if value is None or value is pd.NA or (isinstance(value, float | np.floating) and not np.isfinite(value)):
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value)


def html_table(
    rows: list[dict[str, Any]],
    columns: list[str],
    highlight: str | None = None,
    narrow: bool = False,
    row_classes: list[str] | None = None,
) -> str:
    """A plain table; the row whose trial_id is ``highlight`` is marked as the chosen one, and
    ``row_classes`` (one per row) gives rows a class of their own (``collapsed``)."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for i, row in enumerate(rows):
        chosen = highlight is not None and row.get(col.TRIAL_ID) == highlight
        css = " ".join(filter(None, ["chosen" if chosen else "", (row_classes or [""] * len(rows))[i]]))
        cells = "".join(f"<td>{esc(fmt(row.get(c)))}</td>" for c in columns)
        body.append(f"<tr{f' class={css!r}' if css else ''}>{cells}</tr>")
    css = " class=narrow" if narrow else ""
    table = f"<table{css}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="table-wrap">{table}</div>'


def local_checkpoint(recorded: str, run_dir: Path) -> Path:
    """A checkpoint from the manifest or the results (relative to the run; older runs: a path
    or URI) as a local folder. A run on an object store has its model bundle fetched once into
    the run's local mirror."""
    path = RunDir.at(run_dir).checkpoint(recorded)
    if is_uri(path):
        local = run_dir / ".checkpoints" / Path(*path.rstrip("/").split("/")[-3:])
        if not (local / BUNDLE).is_dir():
            fetch_dir(f"{path.rstrip('/')}/{BUNDLE}", local / BUNDLE)
        return local
    return Path(path)


def stage_values(stage: dict[str, Any], trials: pd.DataFrame, key: str | None = None) -> pd.Series:
    """Each trial's value of the key its stage varies (or of ``key``, e.g. its crossed key)."""
    key = key or stage["key"]
    column = KEY_COLUMNS.get(key)
    if column is not None:
        return trials[column].astype(float)
    values = [json.loads(c).get(key) if isinstance(c, str) else None for c in trials[col.CONFIG_JSON]]
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)
    return pd.Series(numbers, index=trials.index)


def trial_names(stage: dict[str, Any], trials: pd.DataFrame) -> dict[str, str]:
    """trial_id -> a legend name such as ``alpha=100`` (``, U=3`` where U is swept too)."""
    values = stage_values(stage, trials)
    short = KEY_COLUMNS.get(stage["key"], stage["key"])
    swept_u = trials[col.N_UNSUPERVISED].nunique() > 1
    names = {}
    for value, (_, row) in zip(values, trials.iterrows(), strict=True):
        name = f"{short}={fmt(value)}" + (f", U={row[col.N_UNSUPERVISED]}" if swept_u else "")
        if isinstance(row.get(col.REUSED_FROM), str):
            name += " (reused)"
        names[row[col.TRIAL_ID]] = name if row[col.STATUS] == "completed" else f"{name} ({row[col.STATUS]})"
    return names


def data_uri(image: np.ndarray) -> str:
    """(H, W, 3) uint8 as an inline PNG for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(report_model.png(image)).decode()
