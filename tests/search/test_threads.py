"""A stage's idle slots go to its last trials as threads: the shares, the hints file between the
driver and its trials, and the plan writing it as trials end. No Ray; the files are real."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from search.threads import THREADS_FILE, HintsFile, TrialHints, idle_shares
from tests.conftest import small_tmpfs
from tests.search.test_scheduler import finish, make_search, suggest_all


@pytest.mark.parametrize(
    ("running", "slots", "threads", "hints"),
    [
        (["a"], 2, 1, {"a": 2}),
        (["a", "b"], 2, 1, {}),  # every slot busy
        (["a", "b", "c"], 2, 1, {}),  # more trials than slots (one waits for a slot)
        (["a"], 4, 1, {"a": 4}),
        (["a", "b", "c"], 4, 1, {"a": 2}),  # what does not divide evenly goes to the first
        (["a", "b"], 4, 2, {"a": 4, "b": 4}),  # two threads a slot
        (["a"], 1, 1, {}),
        ([], 2, 1, {}),
    ],
)
def test_the_running_trials_share_the_idle_slots(running, slots, threads, hints):
    assert idle_shares(running, slots, threads) == hints


def test_a_trial_reads_its_count_when_the_file_is_replaced_and_none_otherwise(tmp_path):
    path = tmp_path / THREADS_FILE
    hints, mine = HintsFile(path), TrialHints(path, "t1")
    assert mine() is None  # no file yet: the trial's own count
    hints.write({"t1": 2})
    assert mine() == 2 and TrialHints(path, "t2")() is None
    hints.write({"t1": 3})
    assert mine() == 3
    hints.write({})
    assert mine() is None
    for damaged in ("{", "[1]", '{"t1": true}', '{"t1": -1}', '{"t1": "2"}'):
        path.write_text(damaged)
        assert mine() is None, damaged
    path.unlink()
    assert mine() is None


def test_the_driver_writes_only_changes_and_a_full_disk_is_skipped(tmp_path):
    with small_tmpfs(tmp_path / "full", "64k") as full:
        path = full / THREADS_FILE
        hints = HintsFile(path)
        hints.write({"t1": 2})
        written = path.stat().st_ino
        hints.write({"t1": 2})
        assert path.stat().st_ino == written  # the same counts: not written again
        fd = os.open(full / "ballast", os.O_WRONLY | os.O_CREAT)
        try:
            with pytest.raises(OSError):
                while True:  # until the disk is full
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        hints.write({"t1": 1, "t2": 1})  # no room: skipped, no error
        assert json.loads(path.read_text()) == {"t1": 2}
        assert sorted(p.name for p in full.iterdir()) == ["ballast", THREADS_FILE]  # no temporary left


def hints_of(search) -> dict[str, int]:
    return json.loads((search.run.local / THREADS_FILE).read_text())


def test_a_stages_last_trial_takes_the_idle_slot_once_it_runs_alone(tmp_path, synthetic_file):
    search = make_search(tmp_path, synthetic_file, [{"name": "seeds", "values": [0, 1, 2]}], slots=2)
    trials = suggest_all(search, "s")
    # every trial asks for the same resources: a worker serves one after another
    assert all("resources" not in c and "train.num_threads" not in c["set"] for _, c in trials)
    assert hints_of(search) == {}  # three trials out for two slots
    finish(search, *trials[0], corr=0.3)
    assert hints_of(search) == {}  # two running on two slots
    finish(search, *trials[1], corr=0.3)
    assert hints_of(search) == {"s2": 2}  # the last one alone: both slots
    finish(search, *trials[2], corr=0.3)
    assert hints_of(search) == {}


def test_the_next_stage_starts_with_no_hint_and_fewer_trials_than_slots_share_them(tmp_path, synthetic_file):
    stages = [{"name": "alpha", "values": [50]}, {"name": "beta", "values": [1, 5, 10]}]
    search = make_search(tmp_path, synthetic_file, stages, slots=4)
    (alpha,) = suggest_all(search, "a")
    assert hints_of(search) == {"a0": 4}  # one trial on four slots, from its start
    finish(search, *alpha, corr=0.3)
    beta = suggest_all(search, "b")  # beta = 1 is alpha's fit: two to run
    assert [t for t, _ in beta] == ["b0", "b1"] and hints_of(search) == {"b0": 2, "b1": 2}
    finish(search, *beta[0], corr=0.3)
    assert hints_of(search) == {"b1": 4}


def test_one_slot_or_a_cluster_writes_no_hints_and_a_new_driver_clears_old_ones(tmp_path, synthetic_file):
    search = make_search(tmp_path, synthetic_file, [{"name": "seeds", "values": [0, 1]}], slots=1)
    suggest_all(search, "s")
    assert not (search.run.local / THREADS_FILE).exists()
    path: Path = search.run.local / THREADS_FILE
    path.write_text('{"s0": 2}')  # left by a driver that was killed
    from search.scheduler import StagedSearch

    StagedSearch(search.spec, search.run, search.run.read(), log=lambda line: None, slots=2)
    assert json.loads(path.read_text()) == {}


def test_share_idle_cpus_false_keeps_every_fit_on_its_own_threads(tmp_path, synthetic_file):
    """The switch for repeatable numbers: the plan gets one slot, so it never writes hints (and
    the driver decides that before asking Ray anything)."""
    from search.driver import _slots
    from search.spec import parse_spec

    raw = {"data": [str(synthetic_file)], "resources": {"share_idle_cpus": False}}
    spec = parse_spec(raw, "search.yaml", tmp_path)
    assert spec.resources.share_idle_cpus is False and _slots(spec, local=True) == 1
    assert parse_spec({"data": [str(synthetic_file)]}, "s.yaml", tmp_path).resources.share_idle_cpus
