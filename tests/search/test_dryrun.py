"""``psvae search --dry-run``: the plan (trials, reused fits, last fits taking idle slots), the
schedule it is timed with, and the command itself, which starts nothing."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from search.cli import main
from search.dryrun import idle_slots_taken, plan, speedups, stage_seconds
from search.spec import parse_spec
from tests.conftest import SMALL_NET


def spec_of(tmp_path: Path, data: Path, stages: list | None = None, **top) -> object:
    raw = {"data": [str(data)], "fit": {**SMALL_NET, "train.epochs": 2}, **top}
    if stages is not None:
        raw["stages"] = stages
    return parse_spec(raw, "s.yaml", tmp_path)


def test_the_guides_plan_fits_9_models_for_11_trials(tmp_path, synthetic_file):
    stages = plan(spec_of(tmp_path, synthetic_file))
    assert [(p.stage.name, p.n_trials, p.n_reused) for p in stages] == [
        ("alpha", 4, 0),
        ("beta", 4, 1),  # beta = 1 is alpha's chosen fit
        ("seeds", 3, 1),  # seed 0 is beta's chosen fit
    ]
    assert sum(p.n_fits for p in stages) == 9
    # whichever of a stage's fits ends last may run alone for a while, on both slots
    assert [idle_slots_taken(p.n_fits, 2) for p in stages] == [{2}, {2}, {2}]
    assert idle_slots_taken(5, 4) == {2, 4} and idle_slots_taken(3, 1) == set()


def test_no_reuse_when_turned_off_or_when_no_value_repeats_the_start(tmp_path, synthetic_file):
    off = plan(spec_of(tmp_path, synthetic_file, reuse_fits=False))
    assert [p.n_reused for p in off] == [0, 0, 0]
    stages = [{"name": "alpha", "values": [50, 100]}, {"name": "beta", "values": [5, 10]}]
    assert [p.n_reused for p in plan(spec_of(tmp_path, synthetic_file, stages))] == [0, 0]


def twice_as_fast_on_two(share: int) -> float:
    return {1: 1.0, 2: 2.0}[share]


@pytest.mark.parametrize(
    ("fits", "slots", "speedup", "seconds"),
    [
        ([10.0] * 4, 2, None, 20.0),  # two waves
        ([10.0] * 4, 2, twice_as_fast_on_two, 20.0),  # both end together: nothing idles
        ([10.0] * 3, 2, None, 20.0),  # one slot idles in the second wave
        ([10.0] * 3, 2, twice_as_fast_on_two, 15.0),  # the last one runs alone, on both slots
        ([4.0, 10.0, 3.0], 2, None, 10.0),  # first come, first served
        ([4.0, 10.0, 2.0], 2, twice_as_fast_on_two, 8.0),  # 2 runs from 4 to 6; then 10 - 6 = 4 alone: 2 s
        ([10.0], 2, twice_as_fast_on_two, 5.0),  # fewer fits than slots: from the start
        ([5.0], 1, None, 5.0),
    ],
)
def test_a_stage_is_timed_as_the_search_schedules_it(fits, slots, speedup, seconds):
    if speedup is None:
        assert stage_seconds(fits, slots) == pytest.approx(seconds)
    else:
        assert stage_seconds(fits, slots, speedup) == pytest.approx(seconds)


def test_shares_between_the_probed_ones_are_interpolated():
    speedup = speedups({1: 12.0, 2: 8.0, 4: 4.0})
    assert [speedup(s) for s in (1, 2, 3, 4, 8)] == pytest.approx([1.0, 1.5, 2.25, 3.0, 3.0])


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
