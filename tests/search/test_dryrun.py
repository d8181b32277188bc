"""``psvae search --dry-run``: the plan (trials, reused fits, widened last trials), the schedule
it is timed with, and the command itself, which starts nothing."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from search.cli import main
from search.dryrun import plan, stage_seconds
from search.spec import parse_spec
from tests.conftest import SMALL_NET


def spec_of(tmp_path: Path, data: Path, stages: list | None = None, **top) -> object:
    raw = {"data": [str(data)], "fit": {**SMALL_NET, "train.epochs": 2}, **top}
    if stages is not None:
        raw["stages"] = stages
    return parse_spec(raw, "s.yaml", tmp_path)


def test_the_guides_plan_fits_9_models_for_11_trials(tmp_path, synthetic_file):
    stages = plan(spec_of(tmp_path, synthetic_file), slots=2)
    assert [(p.stage.name, p.n_trials, p.n_reused, p.shares) for p in stages] == [
        ("alpha", 4, 0, [1, 1, 1, 1]),
        ("beta", 4, 1, [1, 1, 2]),  # beta = 1 is alpha's chosen fit; the last of 3 takes 2 slots
        ("seeds", 3, 1, [1, 1]),  # seed 0 is beta's chosen fit
    ]
    assert sum(p.n_fits for p in stages) == 9


def test_no_reuse_when_turned_off_or_when_no_value_repeats_the_start(tmp_path, synthetic_file):
    off = plan(spec_of(tmp_path, synthetic_file, reuse_fits=False), slots=2)
    assert [p.n_reused for p in off] == [0, 0, 0]
    stages = [{"name": "alpha", "values": [50, 100]}, {"name": "beta", "values": [5, 10]}]
    assert [p.n_reused for p in plan(spec_of(tmp_path, synthetic_file, stages), slots=2)] == [0, 0]


@pytest.mark.parametrize(
    ("fits", "slots", "seconds"),
    [
        ([(10.0, 1)] * 4, 2, 20.0),  # two waves
        ([(10.0, 1), (10.0, 1), (6.0, 2)], 2, 16.0),  # the widened last fit waits for both slots
        ([(10.0, 1)] * 3, 2, 20.0),  # not widened: one slot idles in the second wave
        ([(4.0, 1), (10.0, 1), (3.0, 1)], 2, 10.0),  # first come, first served
        ([(5.0, 1)], 1, 5.0),
    ],
)
def test_a_stage_is_timed_as_tune_schedules_it(fits, slots, seconds):
    assert stage_seconds(fits, slots) == pytest.approx(seconds)


def test_the_dry_run_prints_the_plan_and_its_estimates_and_starts_nothing(tmp_path, synthetic_file, capsys):
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({"fit": {**SMALL_NET, "train.epochs": 2}}))
    storage = tmp_path / "runs"
    args = ["search", "--config", str(config), "--data", str(synthetic_file), "--storage", str(storage)]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "stage alpha: 4 trials varying loss.alpha (50, 100, 500, 1000): 4 fits" in out
    assert "9 fits for 11 trials" in out
    step = re.search(r"a training step takes ([0-9.e-]+) s", out)
    assert step and float(step.group(1)) > 0
    total = re.search(r"estimated wall time: ([0-9.]+) (s|min)", out)
    assert total and float(total.group(1)) > 0
    assert re.search(r"estimated disk: [0-9.]+ [KMG]B when done \(9 model bundles", out)
    assert not storage.exists()  # no run directory
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()  # no Ray
