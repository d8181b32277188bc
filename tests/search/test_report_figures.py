"""The stage figures as pure functions of a trials table: a crossed stage (beta x delta) draws
one line per delta, and multi-session fits add the session accuracy with its chance level."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from psvae import synthetic
from psvae.config import MODEL_CLASSES
from psvae.export import load_model
from psvae.fit import run_fit
from search.report import figures
from search.report import model as report_model
from tests.conftest import small_config


def crossed_trials(sessions: bool) -> pd.DataFrame:
    rows = []
    for i, (beta, delta) in enumerate(itertools.product([1.0, 5.0, 10.0], [50.0, 500.0])):
        rows.append({
            "trial_id": f"t{i}", "status": "completed", "beta": beta, "delta": delta, "seed_model": 0,
            **{m: float(i + 1) for m in figures.STAGE_METRICS}, "test_abs_corr_u01": 0.5,
            "val_session_acc": 0.4 + 0.05 * i if sessions else np.nan,
            "session_chance": 1 / 3 if sessions else np.nan,
        })  # fmt: skip
    return pd.DataFrame(rows)


def test_a_crossed_stage_draws_one_line_per_crossed_value_and_the_session_accuracy() -> None:
    trials = crossed_trials(sessions=True)
    fig = figures.metric_sweep(trials, trials["beta"], "beta", "t3", trials["delta"], "delta")
    panels = [a.text for a in fig.layout.annotations if a.text != "chance"]
    assert panels == [*figures.STAGE_METRICS, "val_session_acc"]
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert len(lines) == 2 * len(panels)  # delta=50 and delta=500 in every panel
    assert sorted({t.name for t in lines}) == ["delta=50", "delta=500"]
    for trace in lines:  # each line holds the betas of one delta only
        assert list(trace.x) == [1.0, 5.0, 10.0]
    chance = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(chance) == 1 and abs(chance[0].y0 - 1 / 3) < 1e-9
    stars = [t for t in fig.data if t.name == "chosen"]
    assert len(stars) == len(panels) and all(list(t.x) == [5.0] for t in stars)


def test_a_single_session_stage_keeps_the_six_metrics_and_one_line() -> None:
    trials = crossed_trials(sessions=False).drop_duplicates("beta")
    fig = figures.metric_sweep(trials, trials["beta"], "beta", None)
    assert [a.text for a in fig.layout.annotations] == list(figures.STAGE_METRICS)
    assert not fig.layout.shapes
    seeds = figures.seed_spread(trials.assign(seed_model=[0, 1, 2]), "t2")
    assert [a.text for a in seeds.layout.annotations] == list(figures.STAGE_METRICS)
    assert figures.seed_spread(crossed_trials(sessions=True), None).layout.shapes  # chance line


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_traversals_and_label_traces_work_for_every_model_class(model_class: str, tmp_path: Path) -> None:
    """One traversal tool for the family: every latent of the layout gets a row, whatever the
    class (cond-ae encodes with its labels; vae and beta-tcvae have no supervised block)."""
    spec = synthetic.SyntheticSpec(n_trials=10, n_frames=20, size=32, seed=5)
    if model_class == "msps-vae":
        paths = synthetic.write_sessions(tmp_path / "sessions", 2, spec)
    else:
        paths = [synthetic.write(tmp_path / "d.h5", spec)]
    cfg = small_config(**{"model.model_class": model_class, "train.epochs": 1, "loss.anneal_epochs": 0})
    run_fit([str(p) for p in paths], cfg, tmp_path / "fit", progress=False)
    model = load_model(tmp_path / "fit" / "model")
    trials = report_model.read_test_trials(list(paths), model)
    assert trials and all(t.predicted.shape == t.labels.shape for t in trials)
    names = report_model.latent_names(model)
    assert len(names) == model.network.n_latents
    rows = report_model.traversals(model, trials, n_points=5)
    assert [r.name for r in rows] == names
    assert all(r.frames.shape == (5, 1, 32, 32) and np.isfinite(r.frames).all() for r in rows)
    movie = report_model.movie_frames(model, trials, n_points=3)
    assert movie.shape == (4, len(names), 1, 32, 32)
