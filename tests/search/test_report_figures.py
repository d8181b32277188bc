"""The stage figures as pure functions of a trials table: a crossed stage (beta x delta) draws
one line per delta, and multi-session fits add the session accuracy with its chance level."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from search import report_figures as figures


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
