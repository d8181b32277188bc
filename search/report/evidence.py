"""The evidence across candidates: what the β and seeds stages chose among, side by side.

A stage's rule reads one statistic per trial; these sections show what lies behind it for
every trial of the β and seeds stages (``docs/latents.md``):

- each z_u dimension's activity (``val_mu_var_u``) against the stage's threshold, so a
  collapsed latent is seen, not inferred from a low |r|; the α stage too, where it was measured;
- label leakage beside |r|, with the trials the rule excluded as collapsed in red;
- every candidate's traversals, all difference rows on one colour scale, so a latent that
  moves the frame little looks faint next to one that moves it much;
- where the data has ground truth (``<data>.factors.npz``), the scores of ``psvae score``.

A candidate's model is its trial's final checkpoint bundle; a trial that reuses an earlier
trial's fit (``reused_from``) shares that fit's figure. A bundle that cannot be read is one line
saying why, never a failed report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from psvae.errors import UserError
from psvae.thresholds import ACTIVE_VAR
from results_schema.columns import (
    CHECKPOINT,
    LABEL_LEAKAGE_U,
    N_ACTIVE_U,
    REUSED_FROM,
    STAGE,
    STATUS,
    TRAIN_MEAN_ABS_CORR_U,
    TRIAL_ID,
    VAL_MU_VAR_U,
)
from search.report import figures
from search.report import model as report_model
from search.report.parts import (
    DONE,
    PENDING,
    STAGE_TITLES,
    UNAVAILABLE,
    Page,
    Run,
    Section,
    data_uri,
    esc,
    fmt,
    html_table,
    local_checkpoint,
    trial_names,
)
from search.rundir import BUNDLE

CANDIDATE_KEYS = ("loss.beta", "train.seed_model")  # the stages whose trials are compared here
ACTIVITY_KEYS = ("loss.alpha", *CANDIDATE_KEYS)  # activity is cheap: the α stage's is drawn too
COMPLETED = "completed"


@dataclass(frozen=True)
class Candidate:
    """One trial of a compared stage, with what its stage's decision said of it."""

    stage: str
    trial_id: str
    name: str  # its legend name within the stage (beta=5)
    row: dict[str, Any]  # its trials-table row
    excluded: str | None  # why the stage's rule did not consider it (decision table)
    chosen: bool

    @property
    def fit(self) -> str:
        """The trial whose fit this is: an earlier one for a reused trial."""
        reused = self.row.get(REUSED_FROM)
        return reused if isinstance(reused, str) else self.trial_id

    @property
    def collapsed(self) -> bool:
        return bool(self.excluded and self.excluded.startswith("collapsed"))

    @property
    def label(self) -> str:
        return f"{STAGE_TITLES.get(self.stage, self.stage)}: {self.name}"


def candidates(run: Run, keys: Sequence[str] = CANDIDATE_KEYS) -> list[Candidate]:
    """Every trial of the stages varying ``keys`` that has results, in plan order."""
    out = []
    for stage in run.stage_specs():
        record = run.record(stage["name"])
        if stage["key"] not in keys or record is None:
            continue
        trials = run.stage_trials(stage["name"])
        if trials.empty:
            continue
        names = trial_names(stage, trials)
        decision = record.get("decision") or {}
        verdicts = {str(e.get(TRIAL_ID)): e.get("excluded") for e in decision.get("table", [])}
        for _, row in trials.iterrows():
            trial = str(row[TRIAL_ID])
            out.append(
                Candidate(
                    stage["name"],
                    trial,
                    names[trial],
                    {str(k): v for k, v in row.items()},
                    verdicts.get(trial),
                    trial == decision.get(TRIAL_ID),
                )
            )
    return out


def threshold(run: Run, stage: str) -> float:
    """The stage rule's ``min_active_var`` as the decision applied it (or as the plan set it);
    the convention of ``n_active_u`` for rules that have none (α)."""
    spec = next((s for s in run.stage_specs() if s["name"] == stage), {})
    decision = (run.record(stage) or {}).get("decision") or {}
    for params in (decision.get("params"), spec.get("rule_params")):
        value = (params or {}).get("min_active_var")
        if isinstance(value, int | float) and value > 0:
            return float(value)
    return ACTIVE_VAR


def _variances(value: Any) -> list[float] | None:
    if value is None or np.isscalar(value):
        return None
    values = [float(v) for v in value]
    return values if values and all(math.isfinite(v) for v in values) else None


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def _pending(run: Run, keys: Sequence[str]) -> bool:
    """Whether a stage of ``keys`` in the plan has not finished yet."""
    return any(
        (run.record(s["name"]) or {}).get("status", "running") == "running"
        for s in run.stage_specs()
        if s["key"] in keys
    )


# -- activity and leakage -------------------------------------------------------------------------
def activity_section(run: Run, page: Page) -> Section:
    """Per-latent activity of every trial, label leakage beside |r| per candidate, and the table
    behind both."""
    title = "Activity and leakage per candidate"
    pending = _pending(run, ACTIVITY_KEYS)
    state = PENDING if pending else DONE
    every = [c for c in candidates(run, ACTIVITY_KEYS) if c.row.get(STATUS) == COMPLETED]
    if not every:
        text = "Pending: no trial has finished yet." if pending else "No trial of the plan completed."
        return Section("activity", title, state, f'<p class="muted">{text}</p>')
    parts = [
        '<p class="lead">A z_u dimension whose posterior mean hardly varies over the validation frames '
        f"(<code>{VAL_MU_VAR_U}</code> below the stage rule's <code>min_active_var</code>) carries nothing: "
        "its correlations with the others mean nothing, and the β and seeds rules exclude its trial "
        f"(red). <code>{LABEL_LEAKAGE_U}</code>: how well the labels are predicted from z_u on held-out "
        "trials (0: nothing of the labels leaks into them).</p>"
    ]
    panels = []
    for stage in run.stage_specs():
        measured = [
            (c, v) for c in every if c.stage == stage["name"] and (v := _variances(c.row.get(VAL_MU_VAR_U)))
        ]
        if measured:
            panels.append(
                (
                    STAGE_TITLES.get(stage["name"], stage["name"]),
                    _unique([c.name for c, _ in measured]),
                    [v for _, v in measured],
                    threshold(run, stage["name"]),
                )
            )
    if panels:
        parts.append(page.figure(figures.activity_chart(panels)))
    else:
        parts.append(
            f'<p class="muted">No trial has <code>{VAL_MU_VAR_U}</code> (a run of an older version).</p>'
        )
    compared = [c for c in every if c.stage in {s["name"] for s in _stages(run, CANDIDATE_KEYS)}]
    leakage = [_number(c.row.get(LABEL_LEAKAGE_U)) for c in compared]
    if any(math.isfinite(v) for v in leakage):
        correlation = [_number(c.row.get(TRAIN_MEAN_ABS_CORR_U)) for c in compared]
        names = _unique([c.label for c in compared])
        chart = figures.leakage_chart(names, correlation, leakage, [c.collapsed for c in compared])
        parts.append(page.figure(chart))
    elif compared:
        parts.append(f'<p class="muted">No candidate has <code>{LABEL_LEAKAGE_U}</code>.</p>')
    parts.append(_candidates_table(every, run))
    return Section("activity", title, state, "".join(parts))


def _stages(run: Run, keys: Sequence[str]) -> list[dict[str, Any]]:
    return [s for s in run.stage_specs() if s["key"] in keys]


def _unique(names: list[str]) -> list[str]:
    """Category names for a figure axis: a repeated name gets its position appended."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return out


def _candidates_table(every: list[Candidate], run: Run) -> str:
    columns = [
        STAGE,
        "trial",
        "trial of",
        TRAIN_MEAN_ABS_CORR_U,
        LABEL_LEAKAGE_U,
        N_ACTIVE_U,
        VAL_MU_VAR_U,
        "rule",
    ]
    rows = []
    for c in every:
        variances = _variances(c.row.get(VAL_MU_VAR_U))
        below = threshold(run, c.stage)
        rows.append(
            {
                STAGE: c.stage,
                "trial": f"{c.trial_id} ({c.name})",
                "trial of": c.fit if c.fit != c.trial_id else "",
                TRAIN_MEAN_ABS_CORR_U: c.row.get(TRAIN_MEAN_ABS_CORR_U),
                LABEL_LEAKAGE_U: c.row.get(LABEL_LEAKAGE_U),
                N_ACTIVE_U: c.row.get(N_ACTIVE_U),
                VAL_MU_VAR_U: " ".join(f"{v:.3g}" + ("✗" if not v >= below else "") for v in variances or []),
                "rule": "chosen" if c.chosen else (c.excluded or ""),
            }
        )
    classes = ["collapsed" if c.collapsed else "" for c in every]
    return (
        "<h3>The numbers</h3>"
        "<p class=\"muted\">✗: below the stage's threshold. Rows in red: excluded by the stage's rule as "
        "collapsed (the reason is in the stage's decision table).</p>"
        + html_table(rows, columns, row_classes=classes)
    )


# -- traversals of every candidate -------------------------------------------------------------
@dataclass(frozen=True)
class Drawn:
    """One fit's traversals, ready to be drawn on the shared scale."""

    fit: str
    trials: list[Candidate]  # the candidates that are this fit (a reused fit: several)
    rows: list[report_model.Traversal]
    diffs: list[list[np.ndarray]]  # per row, each frame minus the row's first

    @property
    def largest(self) -> float:
        return max((float(np.abs(d).max()) for row in self.diffs for d in row), default=0.0)


def _load(run: Run, candidate: Candidate) -> tuple[Any, list[report_model.TestTrial]]:
    """A candidate's model and the test trials it encodes; UserError (or OSError, KeyError,
    ValueError from a damaged file) saying why not."""
    from psvae.export import load_model

    recorded = candidate.row.get(CHECKPOINT)
    if not isinstance(recorded, str):
        raise UserError("the trial recorded no checkpoint")
    model = load_model(local_checkpoint(recorded, run.path) / BUNDLE)
    trials = report_model.run_test_trials(run.path, run.manifest["spec"]["data"], model)
    return model, trials


def load_candidates(run: Run) -> tuple[dict[str, tuple[Any, list[report_model.TestTrial]]], dict[str, str]]:
    """Each completed candidate fit's model and test trials, and for those that cannot be read,
    why (fit -> one line)."""
    loaded: dict[str, tuple[Any, list[report_model.TestTrial]]] = {}
    failed: dict[str, str] = {}
    for c in candidates(run):
        if c.row.get(STATUS) != COMPLETED or c.fit in loaded or c.fit in failed:
            continue
        try:
            loaded[c.fit] = _load(run, c)
        except (UserError, OSError, KeyError, ValueError) as err:
            failed[c.fit] = str(err)
    return loaded, failed


def traversals_section(run: Run, loaded: dict[str, Any], failed: dict[str, str]) -> Section:
    """Every candidate's traversal rows with their difference rows, side by side; every
    difference row of every figure on one colour scale, the largest change over them all."""
    title = "Traversals of every candidate"
    state = PENDING if _pending(run, CANDIDATE_KEYS) else DONE
    every = candidates(run)
    done = [c for c in every if c.row.get(STATUS) == COMPLETED]
    if not done:
        text = (
            "Pending: no β or seeds trial has finished yet." if state == PENDING else "No β or seeds trial."
        )
        return Section("candidates", title, state, f'<p class="muted">{text}</p>')
    by_fit: dict[str, list[Candidate]] = {}
    for c in done:
        by_fit.setdefault(c.fit, []).append(c)
    drawn = []
    for fit, members in by_fit.items():
        if fit in loaded:
            model, trials = loaded[fit]
            rows = report_model.traversals(model, trials)
            diffs = [[report_model.difference(f, row.frames[0]) for f in row.frames] for row in rows]
            drawn.append(Drawn(fit, members, rows, diffs))
    scale = max((d.largest for d in drawn), default=0.0)
    cells = []
    for fit, members in by_fit.items():
        figure = next((d for d in drawn if d.fit == fit), None)
        if figure is None:
            cells.append(_unavailable_html(members, failed.get(fit, "not loaded")))
        else:
            cells.append(_candidate_html(figure, scale, len(drawn)))
    not_drawn = [c for c in every if c.row.get(STATUS) != COMPLETED]
    base = ""
    if drawn:
        trial, index = report_model.base_frame(loaded[drawn[0].fit][1])
        base = f"frame {index} of test trial <code>{esc(trial.name)}</code> ({esc(Path(trial.path).name)})"
    parts = [
        '<p class="lead">Each candidate of the β and seeds stages, traversed as the chosen model is '
        f"above{' from ' + base if base else ''}: one latent at a time between its percentiles, each "
        "row with its difference from the row's first frame beneath it. <b>Every difference row of every "
        f"figure is drawn on one scale, ±{scale:.3g}</b> (the largest change over all of them), so a "
        "faint row is a latent that changes the frame little compared with the other candidates'.</p>",
        f'<div class="candidates">{"".join(cells)}</div>',
    ]
    if not_drawn:
        listed = ", ".join(f"{c.trial_id} ({c.row.get(STATUS)})" for c in not_drawn)
        parts.append(f'<p class="muted">Not drawn, since they have no model to draw: {esc(listed)}.</p>')
    if not drawn and state == DONE:
        state = UNAVAILABLE
    return Section(
        "candidates", title, state, "".join(parts), note=f"{len(by_fit)} fits of {len(done)} trials"
    )


def _who(members: list[Candidate]) -> str:
    """The trials a figure stands for: ``β stage: beta=5 (be8b9854)``; a reused fit names all."""
    return "; ".join(f"{esc(c.label)} (<code>{esc(c.trial_id)}</code>)" for c in members)


def _unavailable_html(members: list[Candidate], why: str) -> str:
    trials = " ".join(esc(c.trial_id) for c in members)
    return (
        f'<div class="candidate" data-trials="{trials}"><h4>{_who(members)}</h4>'
        f'<p class="error">Unavailable: {esc(why)}</p></div>'
    )


def _candidate_html(figure: Drawn, scale: float, n_figures: int) -> str:
    members = figure.trials
    reused = [c for c in members if c.fit != c.trial_id]
    flags = []
    if reused:
        flags.append(f"the fit of trial <code>{esc(figure.fit)}</code>, reused")
    if any(c.chosen for c in members):
        flags.append("chosen by its stage")
    if any(c.collapsed for c in members):
        flags.append('<span class="error">collapsed: excluded by its stage</span>')
    n = len(figure.rows[0].values)
    rows = []
    for row, diffs in zip(figure.rows, figure.diffs, strict=True):
        frames = "".join(
            f'<img alt="{esc(row.name)} at {fmt(float(v))}" src="{data_uri(report_model.to_rgb(f))}">'
            for f, v in zip(row.frames, row.values, strict=True)
        )
        changes = "".join(
            f'<img alt="difference" src="{data_uri(report_model.diverging_rgb(d, scale))}">' for d in diffs
        )
        largest = max(float(np.abs(d).max()) for d in diffs)
        rows.append(
            f'<div class="row-name"><code>{esc(row.name)}</code> '
            f'<span class="muted">largest change {largest:.3g}</span></div>'
            f'<div class="strip" style="--n:{n}">{frames}</div>'
            f'<div class="strip diff" style="--n:{n}">{changes}</div>'
        )
    trials = " ".join(esc(c.trial_id) for c in members)
    caption = (
        f"Difference rows on the shared scale ±<span class=scale>{scale:.6g}</span> "
        f"(the largest change over all {n_figures} figures)."
    )
    return (
        f'<div class="candidate" data-trials="{trials}" data-fit="{esc(figure.fit)}" data-scale="{scale!r}">'
        f"<h4>{_who(members)}</h4>"
        + (f'<p class="muted">{"; ".join(flags)}</p>' if flags else "")
        + "".join(rows)
        + f'<p class="caption">{caption}</p></div>'
    )


# -- ground truth ---------------------------------------------------------------------------------
SCORES_CACHE = ".scores-cache"
"""A folder in the run, beside report/: the scores of finished fits, which never change. The
report is rebuilt while the search runs; with them kept, each rebuild scores only the fits that
are new (scoring encodes every frame: a few seconds a model, the PCA floor more)."""


def _file_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _cached_scores(run: Run, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` (a CodeScores), or what it returned before for ``key``. A cache that
    cannot be read or written is passed by: the scores are computed again."""
    from psvae.files import write_text_atomic
    from psvae.scores import CodeScores

    path = run.path / SCORES_CACHE / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")
    try:
        return CodeScores(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        pass
    scores = compute()
    try:
        path.parent.mkdir(exist_ok=True)
        write_text_atomic(path, json.dumps(dataclasses.asdict(scores)))  # NaN kept as NaN
    except OSError:
        pass  # a run folder this process cannot write to
    return scores


def _score_all(
    run: Run, data: Path, factors: Path, selected_model: Any, loaded: dict[str, Any]
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(the ground truth, the chosen model's scores, the PCA floor's, each candidate fit's),
    from :data:`SCORES_CACHE` where they were computed before. Without a ``selected_model``
    (the search still runs): the candidates so far and the PCA floor of their layout, into the
    cache, with None for the chosen model's and the floor's."""
    from psvae.scores import pca_baseline, read_ground_truth, score_fitted

    files = f"{_file_key(data)}|{_file_key(factors)}"
    truth = read_ground_truth(data, factors)
    checkpoints = {c.fit: c.row.get(CHECKPOINT) for c in candidates(run)}

    def scored(model: Any, checkpoint: Any) -> Any:
        return _cached_scores(run, f"model|{checkpoint}|{files}", lambda: score_fitted(model, truth, data))

    def floor(model: Any) -> Any:
        net = model.network
        layout = (net.n_supervised, net.n_background, net.n_unsupervised)
        return _cached_scores(run, f"pca|{layout}|{files}", lambda: pca_baseline(truth, *layout))

    others = {fit: scored(model, checkpoints.get(fit)) for fit, (model, _) in loaded.items()}
    if selected_model is None:
        for model, _ in loaded.values():
            floor(model)
        return truth, None, None, others
    chosen = scored(selected_model, run.manifest["selected"].get("checkpoint"))
    return truth, chosen, floor(selected_model), others


def scores_section(
    run: Run, selected_model: Any, loaded: dict[str, Any], failed_selected: str | None
) -> Section:
    """``psvae score`` for the chosen model beside the pixel-PCA floor, and for every candidate,
    when the run's data file has its factors file beside it; no section content otherwise."""
    from psvae.synthetic import factors_path

    title = "Ground-truth scores"
    paths = [report_model.resolve_data_path(p, run.path) for p in run.manifest["spec"]["data"]]
    with_factors = [(p, factors_path(p)) for p in paths if p is not None and factors_path(p).is_file()]
    if not with_factors:
        return Section(
            "scores", title, DONE, '<p class="muted">None: the data has no factors file beside it.</p>'
        )
    if not run.manifest.get("selected"):
        # the candidates that have ended are scored now, in the background rebuilds of a running
        # search (a few seconds a model): the last rebuild, which the search waits for, finds them
        # in the cache. A failure here is for the last rebuild to show.
        done = 0
        for data, factors in with_factors:
            with contextlib.suppress(UserError, OSError, KeyError, ValueError):
                done = max(done, len(_score_all(run, data, factors, None, loaded)[3]))
        so_far = f" ({done} candidate fit(s) scored so far)" if done else ""
        return Section(
            "scores",
            title,
            PENDING,
            f'<p class="muted">Pending: scored once a model is selected{so_far}.</p>',
        )
    if selected_model is None:
        return Section(
            "scores", title, UNAVAILABLE, f'<p class="error">Unavailable: {esc(failed_selected)}</p>'
        )
    names: dict[str, str] = {}
    for c in candidates(run):
        names[c.fit] = f"{names[c.fit]}; {c.label}" if c.fit in names else f"{c.label} ({c.fit})"
    parts = [
        '<p class="lead">Known only for benchmark data (<code>psvae synthetic</code> writes the factors '
        "beside the file): R² of each factor predicted from z_u and from z_s (cubic ridge, cross-validated "
        "over whole trials), label leakage into z_u, and MIG over the nuisance factors; the pixel-PCA "
        "baseline is the top principal components of the frames split like the model's latents "
        "(<code>psvae score</code> prints the same).</p>"
    ]
    for data, factors in with_factors:
        try:
            truth, chosen, pca, scored = _score_all(run, data, factors, selected_model, loaded)
            others = [(names[fit], scores) for fit, scores in scored.items()]
        except (UserError, OSError, KeyError, ValueError) as err:
            parts.append(f'<p class="error">Unavailable: {esc(err)}</p>')
            continue
        nuisance = [truth.factor_names[i] for i in truth.nuisance]
        parts.append(f"<h3><code>{esc(data.name)}</code> with <code>{esc(factors.name)}</code></h3>")
        parts.append(
            _scores_table([("chosen model", chosen), ("pixel PCA", pca)], truth.factor_names, nuisance)
        )
        if others:
            parts.append("<h4>Every candidate of the β and seeds stages</h4>")
            parts.append(_scores_table(others, truth.factor_names, nuisance))
    return Section("scores", title, DONE, "".join(parts))


def _scores_table(scored: list[tuple[str, Any]], factor_names: Sequence[str], nuisance: list[str]) -> str:
    """One row per model: label R², each factor's R² from z_u (and from z_s for the labelled
    ones), leakage, MIG."""
    labelled = [n for n in factor_names if n not in nuisance]
    columns = [
        "model",
        "label R²",
        *(f"{n} from z_u" for n in factor_names),
        *(f"{n} from z_s" for n in labelled),
        LABEL_LEAKAGE_U,
        f"MIG ({', '.join(nuisance)})",
    ]
    rows = []
    for name, s in scored:
        rows.append(
            {
                "model": name,
                "label R²": s.label_r2,
                **{f"{n} from z_u": s.factor_r2_from_u[n] for n in factor_names},
                **{f"{n} from z_s": s.factor_r2_from_s[n] for n in labelled},
                LABEL_LEAKAGE_U: s.label_leakage_u,
                columns[-1]: s.mig,
            }
        )
    return html_table(rows, columns)


def selected_model(run: Run) -> tuple[Any, str | None]:
    """The selected trial's model, or None and why not (pending or unreadable)."""
    from psvae.export import load_model

    selected = run.manifest.get("selected")
    if not selected:
        return None, "no model selected yet"
    try:
        return load_model(local_checkpoint(selected["checkpoint"], run.path) / BUNDLE), None
    except (UserError, OSError, KeyError, ValueError) as err:
        return None, str(err)
