"""``psvae report RUN_DIR``: the whole search on one offline page, ``RUN_DIR/report/index.html``.

    report/
      index.html      every section; figures as Plotly JSON, drawn by the script beside it
      plotly.min.js   plotly.js, once for all figures (the page needs no network)
      traversal.gif   the traversal movie as a file, when Pillow is installed

The page is rebuilt from the run directory alone (``manifest.json``, ``results/``, the selected
trial's checkpoint and the session files), so it can be refreshed at any time: the search does
it after every stage. A stage that has not finished is marked pending. The folder is written
beside the run as a temporary folder and then put in place of the old one, so a reader never
sees half a report.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from psvae.errors import UserError
from psvae.files import staged_dir
from results_schema import columns as col
from search.report import evidence, figures
from search.report import model as report_model
from search.report.page import render_page
from search.report.parts import (
    DONE,
    FAILED,
    FIXED,
    KEY_COLUMNS,
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
    stage_values,
    trial_names,
)
from search.rundir import BUNDLE, EXPERIMENT, FINAL, OPTUNA_JOURNAL, RunDir
from search.status import last_reports

REPORT_DIR = "report"
INDEX = "index.html"
PLOTLY_JS = "plotly.min.js"
MOVIE_GIF = "traversal.gif"
MAX_LABEL_TRIALS = 4  # test trials drawn in the label reconstructions
MOVIE_FRAME_MS = 120
# what a report folder held before folders carried their marker: replaceable as a report
LEGACY_REPORT = frozenset({INDEX, PLOTLY_JS, MOVIE_GIF})


def running_note(run: Run, stage: str) -> str:
    """How far a running stage has got, from Tune's result files."""
    if run.manifest.get("version", 1) >= 2:
        reports = last_reports(str(run.path / EXPERIMENT))
        trials = [last for last in reports.values() if (last or {}).get("config", {}).get("stage") == stage]
    else:
        trials = list(last_reports(str(run.path / stage)).values())
    finished = sum(bool(last and (last.get(FINAL) or last.get("done"))) for last in trials)
    return f"running: {len(trials)} trial(s) started, {finished} finished"


# -- sections ---------------------------------------------------------------------------------
def summary_section(run: Run, page: Page) -> Section:
    m = run.manifest
    rows: list[dict[str, Any]] = []
    for name, record in _stages_in_order(run):
        if record is None:
            rows.append({"stage": name, "status": "pending"})
            continue
        if record["status"] == "fixed":
            rows.append(
                {
                    "stage": name,
                    "status": "fixed",
                    "rule": "fixed by hand",
                    "chose": f"{name} = {fmt(record['value'])}",
                }
            )
            continue
        decision = record.get("decision") or {}
        params = ", ".join(f"{k}={fmt(v)}" for k, v in (decision.get("params") or {}).items())
        rows.append(
            {
                "stage": name,
                "status": record["status"],
                "varies": record.get("varies", ""),
                "rule": decision.get("rule", "") + (f" ({params})" if params else ""),
                "chose": ", ".join(f"{k} = {fmt(v)}" for k, v in (record.get("fixes") or {}).items()),
                "why": decision.get("explanation")
                or record.get("error")
                or (running_note(run, name) if record["status"] == "running" else ""),
                "seconds": record.get("seconds"),
            }
        )
    parts = [
        '<p class="lead">Each stage is one Ray Tune experiment; its rule picks one trial from the '
        "stage's results, and the stages after it start from that choice.</p>",
        html_table(rows, ["stage", "status", "varies", "rule", "chose", "why", "seconds"]),
    ]
    for name, record in _stages_in_order(run):
        decision = (record or {}).get("decision")
        if not decision:
            continue
        columns = [c for c in decision["table"][0] if c not in (col.STATUS,)] if decision["table"] else []
        parts.append(
            f"<details><summary>The numbers behind the {esc(name)} decision "
            f"({esc(decision['rule'])})</summary>"
            f"{html_table(decision['table'], columns, highlight=decision[col.TRIAL_ID])}</details>"
        )
    parts.append(_chosen_model_html(run))
    parts.append(_dashboards_html(run))
    state = {"done": DONE, "failed": FAILED}.get(m["status"], PENDING)
    return Section("summary", "Summary", state, "".join(parts), note=f"run status: {m['status']}")


def _stages_in_order(run: Run) -> list[tuple[str, dict[str, Any] | None]]:
    fixed = [(n, r) for n, r in run.manifest["stages"].items() if r["status"] == "fixed"]
    return fixed + [(s["name"], run.record(s["name"])) for s in run.stage_specs()]


def _chosen_model_html(run: Run) -> str:
    selected = run.manifest.get("selected")
    if not selected:
        return '<h3>Chosen model</h3><p class="muted">Pending: the search has not selected a model yet.</p>'
    row = run.trials[
        (run.trials[col.STAGE] == selected["stage"]) & (run.trials[col.TRIAL_ID] == selected["trial_id"])
    ]
    metrics = (
        col.TEST_PIXEL_MSE,
        col.TEST_LABEL_MSE,
        col.TEST_LABEL_R2,
        col.TRAIN_MEAN_ABS_CORR_U,
        col.TEST_ABS_CORR_U01,
    )
    values = row.iloc[0] if len(row) else {}
    items = [f"<dt>{esc(k)}</dt><dd>{esc(fmt(v))}</dd>" for k, v in selected["chosen"].items()]
    items += [f"<dt>{esc(k)}</dt><dd>{esc(fmt(values.get(k)))}</dd>" for k in metrics if k in values]
    return (
        "<h3>Chosen model</h3>"
        f"<p>Trial <code>{esc(selected['trial_id'])}</code> of stage <b>{esc(selected['stage'])}</b>. "
        f"Export it with <code>psvae export {esc(run.path)} --out DIR</code>.</p>"
        f'<dl class="facts">{"".join(items)}</dl>'
    )


def _dashboards_html(run: Run) -> str:
    lines = [
        f"<li><code>tensorboard --logdir {esc(run.path)}</code>: every stage's trials, epoch by epoch "
        "(needs TensorBoard; the run writes event files when tensorboardX is installed)</li>"
    ]
    if (run.path / OPTUNA_JOURNAL).is_file():
        lines.append(
            f"<li><code>optuna-dashboard {esc(run.path / OPTUNA_JOURNAL)}</code>: "
            "the studies of the optuna stages</li>"
        )
    return f"<h3>Dashboards</h3><ul>{''.join(lines)}</ul>"


def stage_section(run: Run, page: Page, stage: dict[str, Any]) -> Section:
    """A stage's decision and figures; while it runs, the trials finished so far."""
    name = stage["name"]
    title = STAGE_TITLES.get(name, f"Stage {name}")
    record = run.record(name)
    trials = run.stage_trials(name)
    if record is None:
        return Section(
            f"stage-{name}", title, PENDING, '<p class="muted">Pending: the stage has not started.</p>'
        )
    running = record["status"] == "running"
    decision = record.get("decision")
    chosen = decision[col.TRIAL_ID] if decision else None
    parts = []
    if running:
        parts.append(
            f'<p class="muted">Running: {esc(running_note(run, name))}. '
            + ("The figures show the trials finished so far; " if len(trials) else "")
            + "the decision comes when the last trial has ended.</p>"
        )
    elif decision:
        parts.append(
            f'<p class="decision"><b>Chose {esc(_fixes(record))}.</b> {esc(decision["explanation"])}</p>'
        )
    else:
        parts.append(f'<p class="error">The stage failed: {esc(record.get("error", ""))}</p>')
    reused = [t for t in trials[col.REUSED_FROM] if isinstance(t, str)] if col.REUSED_FROM in trials else []
    if reused:
        parts.append(
            f'<p class="muted">Reused: {len(reused)} trial(s) of this stage had the very fit config of a '
            f"trial an earlier stage completed ({esc(', '.join(reused))}); their results are that "
            "trial's, not fitted again.</p>"
        )
    if not (trials[col.STATUS] == "completed").any():
        if not running:
            parts.append('<p class="muted">No trial of this stage completed: nothing to plot.</p>')
    elif stage["key"] == "loss.alpha":
        parts.append(page.figure(figures.alpha_sweep(trials, chosen)))
        parts.append(page.figure(figures.alpha_tradeoff(trials, decision)))
    elif stage["key"] == "train.seed_model":
        parts.append(page.figure(figures.seed_spread(trials, chosen)))
    else:
        short = KEY_COLUMNS.get(stage["key"], stage["key"])
        group, group_title = None, ""
        if stage.get("cross"):  # e.g. beta crossed with delta: one line per delta
            group_title = KEY_COLUMNS.get(stage["cross"][0], stage["cross"][0])
            group = stage_values(stage, trials, stage["cross"][0])
        sweep = figures.metric_sweep(trials, stage_values(stage, trials), short, chosen, group, group_title)
        parts.append(page.figure(sweep))
    state = PENDING if running else DONE if record["status"] == "done" else FAILED
    varied = " × ".join([stage["key"], *([stage["cross"][0]] if stage.get("cross") else [])])
    planned = record.get("planned")
    count = f"{len(trials)} of {planned}" if running and planned else str(len(trials))
    note = f"{count} trials varying {varied} ({stage.get('algorithm', 'grid')})"
    return Section(f"stage-{name}", title, state, "".join(parts), note=note)


def _fixes(record: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {fmt(v)}" for k, v in (record.get("fixes") or {}).items())


def fixed_section(name: str, record: dict[str, Any]) -> Section:
    title = STAGE_TITLES.get(name, f"Stage {name}")
    body = f"<p>Fixed by hand: <b>{esc(name)} = {esc(fmt(record['value']))}</b>; the stage did not run.</p>"
    return Section(f"stage-{name}", title, FIXED, body)


def curves_section(run: Run, page: Page) -> Section:
    parts = []
    pending = []
    for stage in run.stage_specs():
        name = stage["name"]
        epochs = run.epochs[run.epochs[col.STAGE] == name]
        trials = run.stage_trials(name)
        if trials.empty:
            pending.append(name)
            continue
        names = trial_names(stage, trials)
        with_epochs = {t: n for t, n in names.items() if (epochs[col.TRIAL_ID] == t).any()}
        parts.append(f"<h3>{esc(STAGE_TITLES.get(name, name))}</h3>")
        if with_epochs:
            parts.append(page.figure(figures.training_curves(epochs, with_epochs)))
        reused = {
            t
            for t, r in zip(trials[col.TRIAL_ID], trials[col.REUSED_FROM], strict=True)
            if isinstance(r, str)
        }
        missing = sorted(set(names) - set(with_epochs) - reused)
        if missing:
            parts.append(
                f'<p class="muted">No epochs recorded for: {esc(", ".join(names[t] for t in missing))}.</p>'
            )
    if pending:
        parts.append(
            f'<p class="muted">Pending: {esc(", ".join(pending))} '
            "(curves appear when a stage has finished).</p>"
        )
    lead = (
        '<p class="lead">Solid lines: training (annealed weights); dotted: validation. Click a legend '
        "entry to hide a trial. A fit has converged when its validation curves have flattened.</p>"
    )
    state = DONE if not pending else PENDING
    return Section("curves", "Training curves", state, lead + "".join(parts))


def failures_section(run: Run) -> Section:
    columns = [
        col.STAGE,
        col.TRIAL_ID,
        col.STATUS,
        col.ERROR,
        col.ALPHA,
        col.BETA,
        col.N_UNSUPERVISED,
        col.SEED_MODEL,
        col.EPOCHS_RUN,
    ]
    failed = run.trials[run.trials[col.STATUS] != "completed"]
    rows = [{c: r[c] for c in columns} for _, r in failed.iterrows()]
    for name, record in _stages_in_order(run):
        decision = (record or {}).get("decision") or {}
        for entry in decision.get("table", []):
            if entry.get("excluded") and entry.get(col.STATUS) == "completed":
                rows.append({**entry, col.STAGE: name, col.ERROR: f"excluded: {entry['excluded']}"})
    stage_errors = [
        f"<li><b>{esc(n)}</b>: {esc(r['error'])}</li>"
        for n, r in run.manifest["stages"].items()
        if r.get("status") == "failed" and r.get("error")
    ]
    parts = []
    if stage_errors:
        parts.append(f'<ul class="error">{"".join(stage_errors)}</ul>')
    if rows:
        parts.append(
            f"<p>{len(rows)} trial(s) did not complete or could not be chosen; none of them was used by a "
            "decision.</p>" + html_table(rows, columns)
        )
    else:
        parts.append('<p class="ok">No trial failed or diverged.</p>')
    badge, colour = (f"{len(rows)} listed", FAILED) if rows else ("none", DONE)
    return Section(
        "failures", "Failed and diverged trials", DONE, "".join(parts), badge=badge, badge_class=colour
    )


@dataclass(frozen=True)
class ModelSections:
    labels: Section
    traversals: Section
    movie: Section
    gif: list[np.ndarray] | None  # frames of the movie file

    @classmethod
    def all_in(cls, titles: dict[str, str], state: str, body: str) -> ModelSections:
        """The three sections in one state, with one explanation (pending, unavailable)."""
        labels, traversals, movie = (Section(key, title, state, body) for key, title in titles.items())
        return cls(labels, traversals, movie, gif=None)


def model_sections(run: Run, page: Page) -> ModelSections:
    """Label reconstructions, traversals and the movie, from the selected trial's bundle."""
    titles = {
        "labels": "Label reconstructions",
        "traversals": "Latent traversals",
        "movie": "Traversal movie",
    }
    selected = run.manifest.get("selected")
    if not selected:
        body = (
            '<p class="muted">Pending: these are drawn with the chosen model once the search has '
            "selected one.</p>"
        )
        return ModelSections.all_in(titles, PENDING, body)
    try:
        from psvae.export import load_model

        model = load_model(local_checkpoint(selected["checkpoint"], run.path) / BUNDLE)
        trials = report_model.run_test_trials(run.path, run.manifest["spec"]["data"], model)
    except (UserError, OSError, KeyError, ValueError) as err:
        body = f'<p class="error">Unavailable: {esc(err)}</p>'
        return ModelSections.all_in(titles, UNAVAILABLE, body)
    movie_body, gif = _movie_html(model, trials)
    return ModelSections(
        labels=Section("labels", titles["labels"], DONE, _labels_html(model, trials, page)),
        traversals=Section("traversals", titles["traversals"], DONE, _traversals_html(model, trials)),
        movie=Section("movie", titles["movie"], DONE, movie_body),
        gif=gif,
    )


def _labels_html(model: Any, trials: list[report_model.TestTrial], page: Page) -> str:
    names = list(model.label_stats.names)
    true = np.concatenate([t.labels for t in trials])
    predicted = np.concatenate([t.predicted for t in trials])
    overall = [
        {"label": n, "R² (all test trials)": report_model.r2(true[:, k], predicted[:, k])}
        for k, n in enumerate(names)
    ]
    parts = [
        f'<p class="lead">The chosen model on the {len(trials)} test trial(s) of the split '
        f"<code>{esc(model.config.data.split)}</code> (seed {model.config.data.split_seed}), "
        "in the labels' own units; "
        "gaps in the true trace are missing labels.</p>",
        html_table(overall, ["label", "R² (all test trials)"], narrow=True),
    ]
    for trial in trials[:MAX_LABEL_TRIALS]:
        r2 = [report_model.r2(trial.labels[:, k], trial.predicted[:, k]) for k in range(len(names))]
        title = f"{Path(trial.path).name}: {trial.name}"
        frames = np.arange(len(trial.labels))
        parts.append(
            page.figure(figures.label_traces(frames, trial.labels, trial.predicted, names, r2, title))
        )
    if len(trials) > MAX_LABEL_TRIALS:
        parts.append(
            f'<p class="muted">The first {MAX_LABEL_TRIALS} of {len(trials)} test trials are drawn.</p>'
        )
    return "".join(parts)


def _traversals_html(model: Any, trials: list[report_model.TestTrial]) -> str:
    trial, index = report_model.base_frame(trials)
    rows = report_model.traversals(model, trials)
    n = len(rows[0].values)
    parts = [
        f'<p class="lead">From frame {index} of test trial <code>{esc(trial.name)}</code> '
        f"({esc(Path(trial.path).name)}): one latent at a time is moved between two percentiles of its "
        "values on the test frames while the others keep the base frame's values; each row of decoded "
        "frames has beneath it its difference from the row's first frame "
        '(<span class="neg">blue</span>: darker, <span class="pos">red</span>: brighter; '
        "scaled to the row's largest change).</p>",
        _base_frame_html(model, trial, index),
    ]
    for row in rows:
        first = row.frames[0]
        diffs = [report_model.difference(f, first) for f in row.frames]
        scale = float(max(np.abs(d).max() for d in diffs))
        frame_cells = "".join(
            f'<figure><img alt="{esc(row.name)} at {fmt(float(v))}" '
            f'src="{data_uri(report_model.to_rgb(f))}">'
            f"<figcaption>{esc(fmt(float(v)))}</figcaption></figure>"
            for f, v in zip(row.frames, row.values, strict=True)
        )
        diff_cells = "".join(
            f'<figure><img alt="difference" src="{data_uri(report_model.diverging_rgb(d, scale))}"></figure>'
            for d in diffs
        )
        parts.append(
            f'<div class="traversal"><h4><code>{esc(row.name)}</code> '
            f'<span class="muted">{esc(row.description)}; '
            f"largest change {scale:.3g}</span></h4>"
            f'<div class="strip" style="--n:{n}">{frame_cells}</div>'
            f'<div class="strip diff" style="--n:{n}">{diff_cells}</div></div>'
        )
    return "".join(parts)


def _base_frame_html(model: Any, trial: report_model.TestTrial, index: int) -> str:
    """The frame the traversals start from, and the model's reconstruction of it."""
    original = report_model.to_rgb(trial.frames[index].astype(np.float32) / 255.0)
    decoded = report_model.to_rgb(model.decode(trial.latents[index])[0])
    cells = "".join(
        f'<figure><img alt="{caption}" src="{data_uri(image)}"><figcaption>{caption}</figcaption></figure>'
        for image, caption in ((original, "base frame"), (decoded, "its reconstruction"))
    )
    return f'<div class="strip base" style="--n:7">{cells}</div>'


def _movie_html(model: Any, trials: list[report_model.TestTrial]) -> tuple[str, list[np.ndarray]]:
    frames = report_model.movie_frames(model, trials)  # (S, L, C, H, W)
    names = report_model.latent_names(model)
    n_steps, n_dims = frames.shape[:2]
    panels = [[data_uri(report_model.to_rgb(frames[s, d])) for s in range(n_steps)] for d in range(n_dims)]
    figs = "".join(
        f'<figure><img class="movie-frame" data-panel="{d}" alt="{esc(name)}" src="{panels[d][0]}">'
        f"<figcaption><code>{esc(name)}</code></figcaption></figure>"
        for d, name in enumerate(names)
    )
    height = frames.shape[-2]
    scale = max(1, round(128 / height))
    gif = [
        report_model.upscale(
            report_model.tile([report_model.to_rgb(frames[s, d]) for d in range(n_dims)]), scale
        )
        for s in range(n_steps)
    ]
    body = (
        '<p class="lead">All latents at once, each panel moving one latent from its low to its high '
        "percentile and back (the traversal ranges above), from the same base frame.</p>"
        f'<div class="movie" data-interval="{MOVIE_FRAME_MS}">'
        '<div class="controls"><button type="button" class="play">Pause</button>'
        f'<input type="range" class="step" min="0" max="{n_steps - 1}" value="0" aria-label="step">'
        f'<span class="step-label">1 / {n_steps}</span></div>'
        f'<div class="panels">{figs}</div>'
        f'<script type="application/json" class="movie-data">{json.dumps(panels)}</script></div>'
    )
    return body, gif


# -- the page ---------------------------------------------------------------------------------
def build_page(run_dir: Path) -> tuple[Page, list[np.ndarray] | None]:
    """Every section of the report of ``run_dir``, and the movie frames for the GIF."""
    run_dir_ = RunDir.open(run_dir)
    manifest = run_dir_.read().to_json()
    run = Run(run_dir, manifest, run_dir_.results_table("trials"), run_dir_.results_table("epochs"))
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = Page(
        title=f"PS-VAE search {manifest['run_id']}",
        subtitle=f"{run_dir} · {manifest['status']} · spec {manifest['spec_hash']} · generated {generated}"
        + (
            f" · Ray dashboard (while the driver runs): {manifest['dashboard']}"
            if manifest.get("dashboard") and manifest["status"] == "running"
            else ""
        ),
    )
    page.sections.append(summary_section(run, page))
    for name, record in manifest["stages"].items():
        if record["status"] == "fixed":
            page.sections.append(fixed_section(name, record))
    for stage in run.stage_specs():
        page.sections.append(stage_section(run, page, stage))
    page.sections.append(curves_section(run, page))
    model = model_sections(run, page)
    page.sections += [model.labels, model.traversals, model.movie]
    page.sections.append(evidence.activity_section(run, page))
    loaded, failed = evidence.load_candidates(run)
    page.sections.append(evidence.traversals_section(run, loaded, failed))
    chosen, why_not = evidence.selected_model(run)
    page.sections.append(evidence.scores_section(run, chosen, loaded, why_not))
    page.sections.append(failures_section(run))
    return page, model.gif


def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report/`` and return its ``index.html``; raises UserError when ``run_dir``
    is not a search run directory (and then writes nothing)."""
    from plotly.offline import get_plotlyjs

    run_dir = Path(run_dir).resolve()
    target = run_dir / REPORT_DIR
    if target.exists() and not target.is_dir():
        raise UserError(f"{target}: exists and is not a folder; move it away to write the report")
    page, gif = build_page(run_dir)  # reads the manifest first: a UserError if there is none
    with staged_dir(target, kind="report", mode=0o755, legacy=LEGACY_REPORT, flag="report") as staged:
        if gif and report_model.write_gif(gif, staged / MOVIE_GIF, MOVIE_FRAME_MS):
            movie = next(s for s in page.sections if s.id == "movie")
            movie.body += f'<p>The same movie as a file: <a href="{MOVIE_GIF}">{MOVIE_GIF}</a>.</p>'
        (staged / PLOTLY_JS).write_text(get_plotlyjs())
        (staged / INDEX).write_text(
            render_page(page.title, page.subtitle, page.sections, page.figures, PLOTLY_JS)
        )
    return target / INDEX


def timed_report(run_dir: str | Path) -> tuple[Path, float]:
    start = time.perf_counter()
    index = write_report(run_dir)
    return index, time.perf_counter() - start
