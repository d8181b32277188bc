"""Selection rules on hand-built results tables: which trial each rule picks, and why."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from search.selection import (
    RULES,
    CollapsedStage,
    Decision,
    SelectionError,
    alpha_label_band,
    alpha_tolerance,
    alpha_utopia,
    check_params,
    lowest_correlation,
    msp_tolerance,
    select,
    session_correlation,
    sigma_leakage,
)

NAN = float("nan")


def trial(trial_id: str, **values: Any) -> dict[str, Any]:
    """One results row: a completed trial with unremarkable values unless told otherwise."""
    row: dict[str, Any] = {
        "trial_id": trial_id,
        "status": "completed",
        "error": None,
        "alpha": 1.0,
        "beta": 1.0,
        "n_unsupervised": 2,
        "seed_model": 0,
        "val_pixel_mse": 0.01,
        "val_label_mse": 0.01,
        "train_mean_abs_corr_u": 0.1,
        "delta": 50.0,
        "msp_alpha": 1.0,
        "val_session_acc": 0.5,
        "session_chance": 0.5,
        # Carried along by the results table; no rule reads it.
        "val_label_r2": 0.9,
        # What the unsupervised latents carry (results schema 4): both alive, no label in them.
        "model_class": "ps-vae",
        "val_mu_var_u": [1.0, 1.0],
        "label_leakage_u": 0.0,
        "sigma_x": 1.0,
    }
    unknown = set(values) - set(row)
    assert not unknown, f"typo in test table: {unknown}"
    row.update(values)
    return row


def frame(*rows: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def entry(decision: Decision, trial_id: str) -> dict[str, Any]:
    """The row of ``decision.table`` for ``trial_id``."""
    (found,) = [row for row in decision.table if row["trial_id"] == trial_id]
    return found


# Pixel error barely moves from alpha=10 to alpha=100 while label error falls; alpha=1000 has the
# lowest label error overall but its pixel error is 50% above the best.
BAND = (
    trial("t1", alpha=10.0, val_pixel_mse=0.0100, val_label_mse=0.050),
    trial("t2", alpha=100.0, val_pixel_mse=0.0104, val_label_mse=0.020),
    trial("t3", alpha=1000.0, val_pixel_mse=0.0150, val_label_mse=0.005),
)


# ---------------------------------------------------------------------------------------------
# alpha_tolerance


@pytest.mark.parametrize(
    ("rows", "tolerance", "expected"),
    [
        pytest.param(BAND, 0.05, "t2", id="lowest-label-inside-band-not-overall-lowest-label"),
        pytest.param(BAND, 0.0, "t1", id="tolerance-zero-picks-lowest-pixel"),
        pytest.param(BAND, 1.0, "t3", id="wide-band-takes-overall-lowest-label"),
        pytest.param(
            (
                trial("t1", alpha=10.0, val_pixel_mse=0.01, val_label_mse=0.02),
                trial("t2", alpha=100.0, val_pixel_mse=0.01, val_label_mse=0.02 * (1 + 1e-12)),
                trial("t3", alpha=50.0, val_pixel_mse=0.01, val_label_mse=0.03),
            ),
            0.05,
            "t2",
            id="label-tie-goes-to-larger-alpha",
        ),
        pytest.param(
            (
                trial("b", alpha=100.0, val_pixel_mse=0.01, val_label_mse=0.02),
                trial("a", alpha=100.0, val_pixel_mse=0.01, val_label_mse=0.02),
            ),
            0.05,
            "a",
            id="label-and-alpha-tie-goes-to-smaller-trial-id",
        ),
        pytest.param(
            (
                trial("t1", alpha=10.0, val_pixel_mse=0.100, val_label_mse=0.05),
                trial("t2", alpha=100.0, val_pixel_mse=0.105, val_label_mse=0.01),
            ),
            0.05,
            "t2",
            id="trial-on-band-edge-is-inside",
        ),
        pytest.param(
            (
                trial("t1", alpha=10.0, val_pixel_mse=0.100, val_label_mse=0.05),
                trial("t2", alpha=100.0, val_pixel_mse=0.106, val_label_mse=0.01),
            ),
            0.05,
            "t1",
            id="trial-just-past-band-edge-is-outside",
        ),
        pytest.param(
            (
                trial("t1", alpha=10.0, val_pixel_mse=0.0100, val_label_mse=0.05),
                trial(
                    "t2",
                    status="diverged",
                    error="nan",
                    alpha=100.0,
                    val_pixel_mse=0.001,
                    val_label_mse=0.001,
                ),
            ),
            0.05,
            "t1",
            id="diverged-with-best-metrics-not-chosen",
        ),
    ],
)
def test_alpha_tolerance_choice(rows: tuple[dict[str, Any], ...], tolerance: float, expected: str) -> None:
    decision = alpha_tolerance(frame(*rows), tolerance=tolerance)
    assert decision.trial_id == expected
    assert decision.rule == "alpha_tolerance"
    assert decision.params == {"tolerance": tolerance}


def test_alpha_tolerance_marks_band_and_explains_with_numbers() -> None:
    decision = alpha_tolerance(frame(*BAND))
    assert [row["candidate"] for row in decision.table] == [True, True, False]
    assert [row["excluded"] for row in decision.table] == [None, None, None]
    assert decision.chosen == {"alpha": 100.0, "beta": 1.0, "n_unsupervised": 2, "seed_model": 0}
    assert decision.explanation == (
        "lowest val pixel MSE 0.01 (alpha=10); 2 of 3 usable trials within 5% of it; "
        "of those alpha=100 has the lowest val label MSE 0.02."
    )
    # The table reports what the rule read, and nothing it did not.
    assert entry(decision, "t3")["val_label_mse"] == 0.005
    assert "train_mean_abs_corr_u" not in decision.table[0]
    assert "val_label_r2" not in decision.table[0]


def test_alpha_tolerance_explains_broken_tie() -> None:
    table = frame(
        trial("t1", alpha=10.0, val_label_mse=0.02),
        trial("t2", alpha=100.0, val_label_mse=0.02),
    )
    decision = alpha_tolerance(table)
    assert decision.trial_id == "t2"
    assert "(tied with 1 other on val label MSE; the larger alpha wins)" in decision.explanation


def test_n_unsupervised_sweep_chooses_the_pair() -> None:
    table = frame(
        trial("a10-n2", alpha=10.0, n_unsupervised=2, val_pixel_mse=0.0100, val_label_mse=0.040),
        trial("a10-n4", alpha=10.0, n_unsupervised=4, val_pixel_mse=0.0098, val_label_mse=0.030),
        trial("a100-n2", alpha=100.0, n_unsupervised=2, val_pixel_mse=0.0101, val_label_mse=0.020),
        trial("a100-n4", alpha=100.0, n_unsupervised=4, val_pixel_mse=0.0099, val_label_mse=0.010),
        trial("a1000-n4", alpha=1000.0, n_unsupervised=4, val_pixel_mse=0.0200, val_label_mse=0.001),
    )
    decision = alpha_tolerance(table)
    assert decision.trial_id == "a100-n4"
    assert (decision.chosen["alpha"], decision.chosen["n_unsupervised"]) == (100.0, 4)
    assert type(decision.chosen["n_unsupervised"]) is int
    assert type(decision.chosen["seed_model"]) is int
    assert type(decision.chosen["alpha"]) is float
    # With n_unsupervised varying, the explanation names both halves of the pair.
    assert "alpha=100, n_unsupervised=4 has the lowest val label MSE 0.01" in decision.explanation


# ---------------------------------------------------------------------------------------------
# Exclusions


@pytest.mark.parametrize(
    ("status", "error", "reason", "summary"),
    [
        pytest.param(
            "diverged",
            "non-finite loss at epoch 3",
            "diverged: non-finite loss at epoch 3",
            "bad diverged (non-finite loss at epoch 3)",
            id="diverged",
        ),
        pytest.param("failed", "worker died", "failed: worker died", "bad failed (worker died)", id="failed"),
        pytest.param("failed", None, "failed", "bad failed", id="failed-without-error-text"),
        pytest.param(
            "failed",
            "Traceback:\n  line 1\nRuntimeError: CUDA OOM",
            "failed: Traceback: line 1 RuntimeError: CUDA OOM",
            "bad failed (Traceback: line 1 RuntimeError: CUDA OOM)",
            id="multi-line-error-on-one-line",
        ),
    ],
)
@pytest.mark.parametrize("rule", sorted(RULES))
def test_unfinished_trial_excluded_with_reason(
    rule: str, status: str, error: str | None, reason: str, summary: str
) -> None:
    # The unfinished trial's last metrics beat the completed one on every count.
    good = trial("good", alpha=10.0, val_pixel_mse=0.02, val_label_mse=0.02, train_mean_abs_corr_u=0.3)
    bad = trial(
        "bad",
        status=status,
        error=error,
        alpha=100.0,
        val_pixel_mse=0.001,
        val_label_mse=0.001,
        train_mean_abs_corr_u=0.01,
    )
    decision = select(rule, frame(good, bad))
    assert decision.trial_id == "good"
    assert entry(decision, "bad")["excluded"] == reason
    assert entry(decision, "bad")["candidate"] is False
    assert entry(decision, "good")["excluded"] is None
    assert "1 of 2 trials excluded" in decision.explanation

    # Alone, it leaves nothing to choose, and the message says why.
    with pytest.raises(SelectionError) as caught:
        select(rule, frame(bad))
    assert str(caught.value) == f"no usable trial: {summary}"


@pytest.mark.parametrize(
    ("rule", "missing", "needed"),
    [
        pytest.param("alpha_tolerance", "val_label_mse", True, id="tolerance-label"),
        pytest.param("alpha_tolerance", "val_pixel_mse", True, id="tolerance-pixel"),
        pytest.param("alpha_tolerance", "train_mean_abs_corr_u", False, id="tolerance-ignores-correlation"),
        pytest.param("alpha_utopia", "val_label_mse", True, id="utopia-label"),
        pytest.param("alpha_utopia", "val_pixel_mse", True, id="utopia-pixel"),
        pytest.param("lowest_correlation", "train_mean_abs_corr_u", True, id="correlation-correlation"),
        pytest.param("lowest_correlation", "val_pixel_mse", True, id="correlation-pixel"),
        pytest.param("lowest_correlation", "val_label_mse", False, id="correlation-ignores-label"),
    ],
)
def test_completed_trial_with_nan_metric(rule: str, missing: str, needed: bool) -> None:
    # "holey" is best on every metric it has, so it wins unless the missing one excludes it.
    holey = trial("holey", alpha=100.0, val_pixel_mse=0.001, val_label_mse=0.001, train_mean_abs_corr_u=0.01)
    holey[missing] = NAN
    whole = trial("whole", alpha=10.0, val_pixel_mse=0.02, val_label_mse=0.02, train_mean_abs_corr_u=0.3)
    decision = select(rule, frame(holey, whole))
    if needed:
        assert decision.trial_id == "whole"
        assert entry(decision, "holey")["excluded"] == f"missing metric {missing}"
    else:
        assert decision.trial_id == "holey"
        assert entry(decision, "holey")["excluded"] is None


def test_completed_trial_missing_hyperparameter_is_excluded() -> None:
    table = frame(trial("t1", alpha=NAN, val_label_mse=0.001), trial("t2", alpha=10.0))
    decision = alpha_tolerance(table)
    assert decision.trial_id == "t2"
    assert entry(decision, "t1")["excluded"] == "missing hyperparameter alpha"


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize(
    "table",
    [
        pytest.param(pd.DataFrame(), id="no-columns"),
        pytest.param(frame(trial("t1")).iloc[:0], id="columns-but-no-rows"),
    ],
)
def test_empty_stage_raises(rule: str, table: pd.DataFrame) -> None:
    with pytest.raises(SelectionError, match=r"^no trials$"):
        select(rule, table)


def test_all_excluded_message_lists_every_reason() -> None:
    table = frame(
        trial("t1", status="diverged", error="non-finite loss at epoch 3"),
        trial("t2", status="failed", error="worker died"),
        trial("t3", val_label_mse=NAN),
    )
    with pytest.raises(SelectionError) as caught:
        alpha_tolerance(table)
    assert str(caught.value) == (
        "no usable trial: t1 diverged (non-finite loss at epoch 3); t2 failed (worker died); "
        "t3 missing metric val_label_mse"
    )
    assert isinstance(caught.value, ValueError)


# ---------------------------------------------------------------------------------------------
# alpha_utopia


def test_utopia_hand_computed() -> None:
    # Usable points (pixel, label):
    #   a1 (1.0, 10.0)  a10 (1.2, 4.0)  a100 (1.5, 2.0)  a1000 (3.0, 1.0)  a50 (1.6, 5.0)
    # a50 is dominated by a100 (1.5 <= 1.6 and 2.0 <= 5.0), so the front is a1, a10, a100, a1000.
    # Min-max: pixel span 3.0 - 1.0 = 2, label span 10 - 1 = 9.
    #   a1    (0.00, 9/9 = 1.000) -> distance 1
    #   a10   (0.10, 3/9 = 0.333) -> sqrt(0.01 + 0.1111) = 0.348
    #   a100  (0.25, 1/9 = 0.111) -> sqrt(0.0625 + 0.0123) = 0.2736   <- nearest
    #   a1000 (1.00, 0.000)       -> distance 1
    #   a50   (0.30, 4/9 = 0.444) -> 0.536, but off the front
    # The tolerance rule answers differently: at 25%, only a1 and a10 are in the band -> a10.
    table = frame(
        trial("a1", alpha=1.0, val_pixel_mse=1.0, val_label_mse=10.0),
        trial("a10", alpha=10.0, val_pixel_mse=1.2, val_label_mse=4.0),
        trial("a100", alpha=100.0, val_pixel_mse=1.5, val_label_mse=2.0),
        trial("a1000", alpha=1000.0, val_pixel_mse=3.0, val_label_mse=1.0),
        trial("a50", alpha=50.0, val_pixel_mse=1.6, val_label_mse=5.0),
    )
    decision = alpha_utopia(table)
    assert decision.trial_id == "a100"
    assert decision.chosen["alpha"] == 100.0
    assert decision.params == {}
    assert [row["candidate"] for row in decision.table] == [True, True, True, True, False]
    expected = {"a1": 1.0, "a10": math.sqrt(0.01 + 1 / 9), "a100": math.sqrt(0.0625 + 1 / 81), "a1000": 1.0}
    expected["a50"] = math.sqrt(0.09 + 16 / 81)
    for trial_id, distance in expected.items():
        assert entry(decision, trial_id)["distance"] == pytest.approx(distance)
    assert "4 of 5 usable trials are Pareto-optimal" in decision.explanation
    assert "alpha=100 is nearest the utopia point" in decision.explanation
    assert "distance 0.274" in decision.explanation
    assert alpha_tolerance(table, tolerance=0.25).trial_id == "a10"


@pytest.mark.parametrize(
    ("rows", "expected", "front"),
    [
        pytest.param(
            (
                trial("t1", alpha=10.0, val_pixel_mse=1.0, val_label_mse=2.0),
                trial("t2", alpha=100.0, val_pixel_mse=2.0, val_label_mse=1.0),
            ),
            "t2",
            ["t1", "t2"],
            id="equal-distance-goes-to-larger-alpha",
        ),
        pytest.param(
            (
                trial("t1", alpha=10.0, val_pixel_mse=1.0, val_label_mse=2.0),
                trial("t2", alpha=100.0, val_pixel_mse=2.0, val_label_mse=1.0),
                trial("t3", alpha=50.0, val_pixel_mse=1.5, val_label_mse=1.5),
            ),
            "t3",
            ["t1", "t2", "t3"],
            id="balanced-middle-beats-extremes",
        ),
        pytest.param(
            (
                trial("t1", alpha=10.0, val_pixel_mse=0.01, val_label_mse=3.0),
                trial("t2", alpha=100.0, val_pixel_mse=0.01, val_label_mse=1.0),
                trial("t3", alpha=1000.0, val_pixel_mse=0.01, val_label_mse=2.0),
            ),
            "t2",
            ["t2"],
            id="constant-pixel-column-scales-to-zero",
        ),
        pytest.param(
            (
                trial("b", alpha=10.0, val_pixel_mse=1.0, val_label_mse=1.0),
                trial("a", alpha=10.0, val_pixel_mse=1.0, val_label_mse=1.0),
                trial("c", alpha=1.0, val_pixel_mse=2.0, val_label_mse=2.0),
            ),
            "a",
            ["b", "a"],
            id="identical-points-both-on-front-smaller-id-wins",
        ),
        pytest.param(
            (
                trial("t1", alpha=10.0, val_pixel_mse=1.0, val_label_mse=2.0),
                trial(
                    "t2", status="diverged", error="nan", alpha=100.0, val_pixel_mse=0.0, val_label_mse=0.0
                ),
            ),
            "t1",
            ["t1"],
            id="diverged-not-chosen-single-usable",
        ),
    ],
)
def test_utopia_choice(rows: tuple[dict[str, Any], ...], expected: str, front: list[str]) -> None:
    decision = alpha_utopia(frame(*rows))
    assert decision.trial_id == expected
    assert [row["trial_id"] for row in decision.table if row["candidate"]] == front


def test_utopia_single_usable_trial_sits_on_utopia() -> None:
    table = frame(trial("t1"), trial("t2", status="failed", error="worker died"))
    decision = alpha_utopia(table)
    assert entry(decision, "t1")["distance"] == 0.0
    assert entry(decision, "t2")["distance"] is None


# ---------------------------------------------------------------------------------------------
# lowest_correlation


@pytest.mark.parametrize(
    ("rows", "expected", "tie_note"),
    [
        pytest.param(
            (
                trial("t1", beta=1.0, train_mean_abs_corr_u=0.30, val_pixel_mse=0.001),
                trial("t2", beta=5.0, train_mean_abs_corr_u=0.05, val_pixel_mse=0.010),
                trial("t3", beta=20.0, train_mean_abs_corr_u=0.10, val_pixel_mse=0.002),
            ),
            "t2",
            False,
            id="lowest-abs-r-despite-worse-pixel",
        ),
        pytest.param(
            (
                trial("t1", beta=1.0, train_mean_abs_corr_u=0.05, val_pixel_mse=0.010),
                trial("t2", beta=5.0, train_mean_abs_corr_u=0.05 * (1 + 1e-12), val_pixel_mse=0.002),
                trial("t3", beta=20.0, train_mean_abs_corr_u=0.20, val_pixel_mse=0.001),
            ),
            "t2",
            True,
            id="abs-r-tie-goes-to-lower-pixel",
        ),
        pytest.param(
            (
                trial("s2", seed_model=2, train_mean_abs_corr_u=0.05, val_pixel_mse=0.002),
                trial("s1", seed_model=1, train_mean_abs_corr_u=0.05, val_pixel_mse=0.002),
                trial("s0", seed_model=0, train_mean_abs_corr_u=0.10, val_pixel_mse=0.001),
            ),
            "s1",
            True,
            id="abs-r-and-pixel-tie-goes-to-smaller-trial-id",
        ),
    ],
)
def test_lowest_correlation_choice(rows: tuple[dict[str, Any], ...], expected: str, tie_note: bool) -> None:
    decision = lowest_correlation(frame(*rows))
    assert decision.trial_id == expected
    assert decision.rule == "lowest_correlation"
    # the candidates are the near-ties: within corr_tolerance (0.05) of the lowest |r|
    lowest = min(row["train_mean_abs_corr_u"] for row in rows)
    near = [row["train_mean_abs_corr_u"] <= lowest + 0.05 + 1e-12 for row in rows]
    assert [row["candidate"] for row in decision.table] == near
    assert ("tied with 1 other on |r|" in decision.explanation) is tie_note


def test_lowest_correlation_reports_seed_and_beta() -> None:
    table = frame(
        trial("s0", beta=5.0, seed_model=0, train_mean_abs_corr_u=0.2),
        trial("s7", beta=5.0, seed_model=7, train_mean_abs_corr_u=0.04),
    )
    decision = lowest_correlation(table)
    assert decision.chosen == {"alpha": 1.0, "beta": 5.0, "n_unsupervised": 2, "seed_model": 7}
    assert decision.explanation.startswith("beta=5, seed_model=7 has the lowest mean |r|")
    assert "0.04, of 2 usable trials." in decision.explanation
    assert decision.params == {"min_active_var": 0.01, "corr_tolerance": 0.05}


# ---------------------------------------------------------------------------------------------
# Registry and parameters


def test_registry_names() -> None:
    assert list(RULES.items()) == [
        ("alpha_tolerance", alpha_tolerance),
        ("alpha_label_band", alpha_label_band),
        ("alpha_utopia", alpha_utopia),
        ("lowest_correlation", lowest_correlation),
        ("session_correlation", session_correlation),
        ("msp_tolerance", msp_tolerance),
        ("sigma_leakage", sigma_leakage),
    ]


def test_select_passes_params() -> None:
    assert select("alpha_tolerance", frame(*BAND), tolerance=1.0).trial_id == "t3"
    assert select("alpha_tolerance", frame(*BAND)).params == {"tolerance": 0.05}


@pytest.mark.parametrize(
    ("rule", "params", "match"),
    [
        pytest.param(
            "best",
            {},
            r"^rule = 'best': unknown; known rules: alpha_tolerance, alpha_label_band, alpha_utopia, "
            r"lowest_correlation, "
            r"session_correlation, msp_tolerance, sigma_leakage$",
            id="unknown-rule",
        ),
        pytest.param(
            "alpha_tolerance",
            {"tol": 0.1},
            r"^tol = 0\.1: not a parameter of rule alpha_tolerance",
            id="typo",
        ),
        pytest.param(
            "alpha_utopia", {"tolerance": 0.1}, r"^tolerance = 0\.1: .*alpha_utopia", id="param-of-other-rule"
        ),
        pytest.param("alpha_utopia", {"beta": 1.0}, r"^beta = 1\.0: .*no parameters", id="no-params-rule"),
    ],
)
def test_select_rejects(rule: str, params: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        select(rule, frame(*BAND), **params)


@pytest.mark.parametrize(
    ("tolerance", "message"),
    [
        pytest.param(-1, "tolerance = -1: must be a number >= 0", id="negative"),
        pytest.param(-1e-9, "tolerance = -1e-09: must be a number >= 0", id="slightly-negative"),
        pytest.param(NAN, "tolerance = nan: must be a number >= 0", id="nan"),
        pytest.param(math.inf, "tolerance = inf: must be a number >= 0", id="inf"),
        pytest.param("0.05", "tolerance = '0.05': must be a number >= 0", id="string"),
        pytest.param(None, "tolerance = None: must be a number >= 0", id="none"),
        pytest.param(True, "tolerance = True: must be a number >= 0", id="bool"),
    ],
)
def test_bad_tolerance_rejected(tolerance: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        alpha_tolerance(frame(*BAND), tolerance=tolerance)
    assert str(caught.value) == message
    # Checked before the table: a bad parameter is reported even for an empty stage.
    with pytest.raises(ValueError) as caught:
        select("alpha_tolerance", pd.DataFrame(), tolerance=tolerance)
    assert not isinstance(caught.value, SelectionError)


@pytest.mark.parametrize(
    "tolerance", [0, 1, np.float64(0.1), np.int64(2)], ids=["int-zero", "int", "np-float", "np-int"]
)
def test_numeric_tolerance_types_accepted(tolerance: Any) -> None:
    decision = alpha_tolerance(frame(*BAND), tolerance=tolerance)
    assert decision.params == {"tolerance": float(tolerance)}
    assert type(decision.params["tolerance"]) is float


# ---------------------------------------------------------------------------------------------
# Table shape and the Decision value


@pytest.mark.parametrize(
    ("table", "match"),
    [
        pytest.param(
            frame(*BAND).drop(columns="val_label_mse"), r"missing column val_label_mse", id="missing-metric"
        ),
        pytest.param(
            frame(*BAND).drop(columns="seed_model"), r"missing column seed_model", id="missing-hyper"
        ),
        pytest.param(frame(trial("t1"), trial("t1")), r"trial_id 't1' appears 2 times", id="duplicate-id"),
        pytest.param(
            frame(trial("t1", val_pixel_mse="low")),
            r"table column val_pixel_mse: must be numeric",
            id="non-numeric",
        ),
    ],
)
def test_malformed_table_rejected(table: pd.DataFrame, match: str) -> None:
    with pytest.raises(ValueError, match=match) as caught:
        alpha_tolerance(table)
    assert not isinstance(caught.value, SelectionError)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_input_table_untouched(rule: str) -> None:
    table = frame(*BAND, trial("t4", status="diverged", error="nan", val_label_mse=NAN))
    before = table.copy(deep=True)
    select(rule, table)
    pd.testing.assert_frame_equal(table, before)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_to_dict_is_json_with_nan_as_none(rule: str) -> None:
    table = frame(
        *BAND,
        trial(
            "t4",
            status="failed",
            error="worker died",
            alpha=NAN,
            val_pixel_mse=NAN,
            val_label_mse=NAN,
            train_mean_abs_corr_u=NAN,
        ),
    )
    decision = select(rule, table)
    data = decision.to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    failed = next(row for row in data["table"] if row["trial_id"] == "t4")
    assert failed["alpha"] is None
    assert failed["val_pixel_mse"] is None
    assert failed["excluded"] == "failed: worker died"
    assert data["rule"] == rule
    assert data["trial_id"] == decision.trial_id
    assert data["chosen"] == decision.chosen
    # The Decision itself still holds the NaN: to_dict converts, it does not mutate.
    assert math.isnan(entry(decision, "t4")["val_pixel_mse"])


def test_float_columns_with_gaps_report_ints() -> None:
    # A NaN beside them makes pandas store n_unsupervised and seed_model as floats.
    table = frame(
        trial("t1", n_unsupervised=3, seed_model=4), trial("t2", status="failed", n_unsupervised=NAN)
    )
    assert table["n_unsupervised"].dtype == float
    decision = alpha_tolerance(table)
    assert decision.chosen == {"alpha": 1.0, "beta": 1.0, "n_unsupervised": 3, "seed_model": 4}
    assert type(decision.chosen["n_unsupervised"]) is int
    assert type(entry(decision, "t1")["n_unsupervised"]) is int


def test_decision_is_frozen() -> None:
    decision = alpha_tolerance(frame(*BAND))
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.trial_id = "t3"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# session_correlation (msps-vae: beta x delta, seeds)


def msps(
    trial_id: str, beta: float, delta: float, acc: float, r: float, pixel: float = 0.01
) -> dict[str, Any]:
    return trial(
        trial_id,
        beta=beta,
        delta=delta,
        val_session_acc=acc,
        session_chance=1 / 3,
        train_mean_abs_corr_u=r,
        val_pixel_mse=pixel,
    )


@pytest.mark.parametrize(
    ("rows", "tolerance", "expected", "fallback"),
    [
        pytest.param(
            (msps("t1", 1, 50, 0.90, 0.01), msps("t2", 5, 100, 0.40, 0.20), msps("t3", 10, 500, 0.35, 0.30)),
            0.1,
            "t2",
            False,
            id="least-correlated-among-near-chance-not-overall",
        ),
        pytest.param(
            (msps("t1", 1, 50, 0.30, 0.20), msps("t2", 5, 100, 0.36, 0.10)),
            0.1,
            "t2",
            False,
            id="below-chance-counts-as-near",
        ),
        pytest.param(
            (msps("t1", 1, 50, 0.90, 0.01), msps("t2", 5, 100, 0.60, 0.30), msps("t3", 1, 500, 0.62, 0.20)),
            0.1,
            "t3",
            True,
            id="none-near-chance-takes-the-closest-band",
        ),
        pytest.param(
            (msps("t1", 1, 50, 0.40, 0.1, pixel=0.02), msps("t2", 5, 50, 0.40, 0.1, pixel=0.01)),
            0.1,
            "t2",
            False,
            id="tie-on-r-goes-to-lower-pixel",
        ),
        pytest.param(
            (msps("t1", 1, 50, 0.90, 0.01), msps("t2", 5, 100, 0.40, 0.20)),
            1.0,
            "t1",
            False,
            id="wide-tolerance-is-lowest-correlation",
        ),
    ],
)
def test_session_correlation(rows, tolerance, expected, fallback) -> None:
    decision = session_correlation(frame(*rows), tolerance=tolerance)
    assert decision.trial_id == expected
    assert decision.params == {"tolerance": tolerance, "min_active_var": 0.01}
    assert ("none is within" in decision.explanation) == fallback
    chosen = entry(decision, expected)
    assert chosen["candidate"] is True and chosen["val_session_acc"] == pytest.approx(
        next(r["val_session_acc"] for r in rows if r["trial_id"] == expected)
    )
    assert decision.chosen["delta"] == next(r["delta"] for r in rows if r["trial_id"] == expected)


def test_session_correlation_explains_with_numbers() -> None:
    rows = (msps("t1", 1, 50, 0.90, 0.01), msps("t2", 5, 100, 0.40, 0.20))
    text = session_correlation(frame(*rows)).explanation
    assert text.startswith("chance session accuracy is 0.333; 1 of 2 usable trials")
    assert "beta=5, seed_model=0, delta=100 has the lowest mean |r| between unsupervised latents, 0.2" in text
    assert "session accuracy 0.4." in text


def test_session_correlation_excludes_a_trial_without_session_accuracy() -> None:
    rows = (msps("t1", 1, 50, NAN, 0.01), msps("t2", 5, 100, 0.40, 0.20))
    decision = session_correlation(frame(*rows))
    assert decision.trial_id == "t2"
    assert entry(decision, "t1")["excluded"] == "missing metric val_session_acc"


# ---------------------------------------------------------------------------------------------
# msp_tolerance


def test_msp_tolerance_trades_pixel_for_label_error_over_msp_alpha() -> None:
    rows = (
        trial("t1", msp_alpha=0.1, val_pixel_mse=0.0100, val_label_mse=0.050),
        trial("t2", msp_alpha=1.0, val_pixel_mse=0.0104, val_label_mse=0.020),
        trial("t3", msp_alpha=10.0, val_pixel_mse=0.0150, val_label_mse=0.005),
    )
    decision = msp_tolerance(frame(*rows))
    assert decision.trial_id == "t2" and decision.chosen["msp_alpha"] == 1.0
    assert "msp_alpha=1 has the lowest val label MSE 0.02" in decision.explanation
    assert msp_tolerance(frame(*rows), tolerance=1.0).trial_id == "t3"


# ---------------------------------------------------------------------------------------------
# Collapsed unsupervised latents, label leakage and sigma_x (docs/latents.md)


def test_a_collapsed_trial_is_excluded_like_a_diverged_one() -> None:
    # t1's |r| is the lowest because its first latent carries nothing: it must not win
    table = frame(
        trial("t1", beta=1.0, train_mean_abs_corr_u=0.01, val_mu_var_u=[0.003, 0.8]),
        trial("t2", beta=5.0, train_mean_abs_corr_u=0.20),
        trial("t3", beta=10.0, train_mean_abs_corr_u=0.40),
    )
    decision = lowest_correlation(table)
    assert decision.trial_id == "t2"
    assert entry(decision, "t1")["excluded"] == (
        "collapsed: z_u dim 0 inactive (posterior-mean variance 0.003 < 0.01)"
    )
    assert entry(decision, "t1")["candidate"] is False
    assert "1 of 3 trials excluded (see table)." in decision.explanation
    # the threshold is the rule's parameter: at 0.001 the same latent counts as active
    assert lowest_correlation(table, min_active_var=0.001).trial_id == "t1"


@pytest.mark.parametrize("rule", ["lowest_correlation", "session_correlation", "sigma_leakage"])
def test_a_stage_whose_trials_all_collapsed_says_so_in_one_line_with_the_remedy(rule: str) -> None:
    table = frame(
        trial("t1", val_mu_var_u=[0.002, 0.004]),
        trial("t2", val_mu_var_u=[0.0, 0.5]),
        trial("t3", status="diverged", error="non-finite loss at epoch 2"),
    )
    with pytest.raises(CollapsedStage) as caught:
        select(rule, table)
    message = str(caught.value)
    assert isinstance(caught.value, SelectionError) and "\n" not in message
    assert "the unsupervised latents collapsed in every one of the 2 finished trials" in message
    assert "t1 z_u dims 0, 1 inactive (posterior-mean variance 0.002, 0.004 < 0.01)" in message
    assert "t2 z_u dim 0 inactive (posterior-mean variance 0 < 0.01)" in message
    assert message.endswith(
        "remedy: a smaller loss.sigma_x (or loss.sigma_x: auto), more train.epochs, or fewer "
        "model.n_unsupervised"
    )


def test_autoencoders_and_tables_without_activity_are_not_screened() -> None:
    # a conditional autoencoder has no prior: its codes' variance says nothing about collapse
    rows = (
        trial("ae1", model_class="cond-ae", train_mean_abs_corr_u=0.05, val_mu_var_u=[1e-5, 1e-5]),
        trial("ae2", model_class="cond-ae", train_mean_abs_corr_u=0.30),
    )
    assert lowest_correlation(frame(*rows)).trial_id == "ae1"
    # results schemas 2 and 3 have no val_mu_var_u (nor leakage): the rule is the guide's, unscreened
    old = frame(trial("t1", train_mean_abs_corr_u=0.05), trial("t2", train_mean_abs_corr_u=0.3))
    old = old.drop(columns=["val_mu_var_u", "label_leakage_u", "sigma_x", "model_class"])
    decision = lowest_correlation(old)
    assert decision.trial_id == "t1" and all(row["excluded"] is None for row in decision.table)
    # a trial whose activity is missing (null) is not screened either
    assert lowest_correlation(frame(trial("t1", val_mu_var_u=None), trial("t2"))).trial_id == "t1"


def test_label_leakage_breaks_a_near_tie_of_correlations() -> None:
    table = frame(
        trial("b1", beta=1.0, train_mean_abs_corr_u=0.05, label_leakage_u=0.40),
        trial("b5", beta=5.0, train_mean_abs_corr_u=0.08, label_leakage_u=0.02),
        trial("b10", beta=10.0, train_mean_abs_corr_u=0.09, label_leakage_u=NAN),
        trial("b20", beta=20.0, train_mean_abs_corr_u=0.30, label_leakage_u=0.00),
    )
    decision = lowest_correlation(table)
    # b20 leaks least but is far from the lowest |r|; b10's leakage is unknown, so it loses
    assert decision.trial_id == "b5"
    assert [row["candidate"] for row in decision.table] == [True, True, True, False]
    assert decision.explanation == (
        "3 of 4 usable trials have a mean |r| between unsupervised latents on training frames within "
        "0.05 of the lowest (0.05, beta=1, seed_model=0); of those beta=5, seed_model=0 leaks the least "
        "of the labels into them "
        "(label leakage R^2 0.02, next 0.4), with mean |r| 0.08."
    )
    # no tolerance: the guide's rule
    assert lowest_correlation(table, corr_tolerance=0).trial_id == "b1"


def sigma_trial(trial_id: str, setting: Any, sigma: float, leakage: float, **values: Any) -> dict[str, Any]:
    config = json.dumps({"loss.sigma_x": setting})
    return {**trial(trial_id, sigma_x=sigma, label_leakage_u=leakage, **values), "config_json": config}


def test_sigma_leakage_takes_the_largest_sigma_whose_latents_are_alive_and_label_free() -> None:
    table = frame(
        sigma_trial("s1", 1.0, 1.0, 0.5, val_mu_var_u=[0.004, 0.002]),  # collapsed
        sigma_trial("s03", 0.3, 0.3, 0.45),  # alive, but what it keeps is the labels
        sigma_trial("s01", 0.1, 0.1, 0.06),
        sigma_trial("auto", "auto", 0.031, 0.02, val_pixel_mse=0.005),
    )
    decision = sigma_leakage(table)
    assert decision.trial_id == "s01"
    assert decision.chosen["sigma_x"] == 0.1
    assert entry(decision, "s1")["excluded"].startswith("collapsed: z_u dims 0, 1 inactive")
    assert [row["candidate"] for row in decision.table] == [False, False, True, True]
    assert entry(decision, "auto")["sigma_x_setting"] == "auto"
    assert "of those sigma_x=0.1 has the largest sigma_x" in decision.explanation
    tight = sigma_leakage(table, tolerance=0.01)
    assert tight.trial_id == "auto" and "sigma_x=auto (0.031)" in tight.explanation


@pytest.mark.parametrize(
    ("rule", "params", "message"),
    [
        pytest.param("lowest_correlation", {"min_active_var": 0}, "min_active_var = 0: must be a number > 0"),
        pytest.param(
            "lowest_correlation", {"min_active_var": -1.0}, "min_active_var = -1.0: must be a number > 0"
        ),
        pytest.param("sigma_leakage", {"min_active_var": NAN}, "min_active_var = nan: must be a number > 0"),
        pytest.param(
            "session_correlation", {"min_active_var": "0.01"}, "min_active_var = '0.01': must be a number > 0"
        ),
        pytest.param(
            "lowest_correlation", {"corr_tolerance": -0.1}, "corr_tolerance = -0.1: must be a number >= 0"
        ),
    ],
)
def test_bad_rule_parameters_name_the_parameter_and_value(
    rule: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        check_params(rule, params)
    assert str(caught.value) == message
    with pytest.raises(ValueError) as caught:  # select checks them before it reads the table
        select(rule, pd.DataFrame(), **params)
    assert str(caught.value) == message


# Every alpha reproduces the labels (R^2 0.991-0.997) and the pixel error moves by 1.5%: what a
# stage looks like when the unsupervised latents carry parts of 1-3% of the frame.
SMALL_SPREAD = (
    trial("a50", alpha=50.0, val_pixel_mse=0.001830, val_label_r2=0.991, val_label_mse=0.009),
    trial("a100", alpha=100.0, val_pixel_mse=0.001805, val_label_r2=0.994, val_label_mse=0.006),
    trial("a500", alpha=500.0, val_pixel_mse=0.001821, val_label_r2=0.996, val_label_mse=0.004),
    trial("a1000", alpha=1000.0, val_pixel_mse=0.001832, val_label_r2=0.997, val_label_mse=0.003),
)


def test_alpha_label_band_discriminates_when_the_pixel_spread_is_small() -> None:
    # the pixel band holds every alpha, so the falling label error always picks the largest
    assert alpha_tolerance(frame(*SMALL_SPREAD)).trial_id == "a1000"
    decision = alpha_label_band(frame(*SMALL_SPREAD))
    assert decision.trial_id == "a100"
    assert decision.params == {"label_tolerance": 0.01}
    assert [row["candidate"] for row in decision.table] == [True, True, True, True]
    assert decision.explanation == (
        "highest val label R^2 0.997 (alpha=1000); 4 of 4 usable trials within 0.01 of it; of those "
        "alpha=100 has the lowest val pixel MSE 0.001805."
    )
    # a tighter band leaves out the alphas whose labels are measurably worse
    tight = alpha_label_band(frame(*SMALL_SPREAD), label_tolerance=0.002)
    assert tight.trial_id == "a500" and [row["candidate"] for row in tight.table] == [
        False,
        False,
        True,
        True,
    ]


def test_alpha_label_band_never_takes_an_alpha_that_lost_the_labels() -> None:
    lost = trial("a10", alpha=10.0, val_pixel_mse=0.0012, val_label_r2=0.40, val_label_mse=0.6)
    decision = alpha_label_band(frame(lost, *SMALL_SPREAD))
    assert decision.trial_id == "a100" and entry(decision, "a10")["candidate"] is False
    tie = frame(trial("x", alpha=50.0, val_label_r2=0.99), trial("y", alpha=500.0, val_label_r2=0.99))
    assert "(tied with 1 other on val pixel MSE; the larger alpha wins)" in alpha_label_band(tie).explanation
    with pytest.raises(ValueError, match=r"^label_tolerance = -0\.1: must be a number >= 0$"):
        select("alpha_label_band", frame(*SMALL_SPREAD), label_tolerance=-0.1)


def test_a_lowered_threshold_still_says_when_the_chosen_latents_barely_vary() -> None:
    table = frame(trial("t1", val_mu_var_u=[0.0004, 0.3]), trial("t2", train_mean_abs_corr_u=0.5))
    decision = lowest_correlation(table, min_active_var=1e-9)
    assert decision.trial_id == "t1"
    assert decision.explanation.endswith(
        " Its unsupervised latents barely vary (dim 0 inactive (posterior-mean variance 0.0004 < 0.01) "
        "by the usual threshold): its |r| means little."
    )
    assert "barely" not in lowest_correlation(frame(trial("t1"), trial("t2"))).explanation
