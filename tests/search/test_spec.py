"""Search configs: every bad input is one line, exit code 2, before Ray starts or a trial runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from search.cli import main
from search.spec import load_spec
from tests.conftest import SMALL_NET

FIT = {**SMALL_NET, "train.epochs": 4, "loss.anneal_epochs": 1}


def _spec(tmp_path: Path, data: object, **extra: object) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({"data": data, "fit": FIT, **extra}))
    return path


def test_defaults_are_the_guides_stages(tmp_path, synthetic_file):
    spec = load_spec(_spec(tmp_path, [str(synthetic_file)]))
    assert [(s.name, s.key, s.values, s.rule) for s in spec.stages] == [
        ("alpha", "loss.alpha", (50.0, 100.0, 500.0, 1000.0), "alpha_label_band"),
        ("beta", "loss.beta", (1.0, 5.0, 10.0, 20.0), "lowest_correlation"),
        ("seeds", "train.seed_model", (0, 1, 2), "lowest_correlation"),
    ]
    assert len(spec.stages[0].trial_overrides()) == 4


def test_alpha_by_hand_skips_the_alpha_stage_and_u_can_be_swept(tmp_path, synthetic_file):
    path = _spec(
        tmp_path, [str(synthetic_file)], stages=[{"name": "alpha", "n_unsupervised": [2, 3]}, "beta"]
    )
    spec = load_spec(path)
    assert len(spec.stages[0].trial_overrides()) == 8
    assert spec.stages[0].varied_keys() == ("loss.alpha", "model.n_unsupervised")
    fixed = load_spec(path, alpha=500)
    assert [s.name for s in fixed.stages] == ["beta"] and fixed.alpha == 500
    assert fixed.spec_hash() != spec.spec_hash()


def test_relative_data_paths_are_resolved_beside_the_config(tmp_path, synthetic_file):
    (tmp_path / "data.h5").symlink_to(synthetic_file)
    spec = load_spec(_spec(tmp_path, ["data.h5"]))
    assert spec.data == (str((tmp_path / "data.h5").resolve()),)


BAD = {
    "missing data file": ({"data": ["nope.h5"]}, r"nope\.h5: no such file"),
    "unknown stage": (
        {"stages": [{"name": "gamma", "values": [1]}]},
        r"stages\[0\]\.name = 'gamma': unknown stage",
    ),
    "empty alpha list": (
        {"stages": [{"name": "alpha", "values": []}]},
        r"stages\[0\]\.values = \[\]: expected a non-empty list",
    ),
    "negative beta": (
        {"stages": [{"name": "beta", "values": [1, -5]}]},
        r"stages\[0\]\.values\[1\] \(loss\.beta\) = -5: must be at least 0",
    ),
    "negative beta by hand": ({"beta": -1}, r"beta = -1: must be at least 0"),
    "bad stage name": (
        {"stages": [{"name": "my stage", "key": "train.lr", "values": [1e-3]}]},
        r"name = 'my stage': use letters",
    ),
    "bad fit key": ({"fit": {"loss.alpah": 3}}, r"unknown key 'loss\.alpah'"),
    "bad rule": ({"stages": [{"name": "beta", "rule": "best"}]}, r"rule = 'best': unknown rule"),
    "activity threshold zero": (
        {"stages": [{"name": "beta", "rule_params": {"min_active_var": 0}}]},
        r"stages\[0\]\.rule_params\.min_active_var = 0: must be a number > 0",
    ),
    "activity threshold negative": (
        {"stages": [{"name": "seeds", "rule_params": {"min_active_var": -0.01}}]},
        r"stages\[0\]\.rule_params\.min_active_var = -0\.01: must be a number > 0",
    ),
    "unknown rule parameter": (
        {"stages": [{"name": "beta", "rule_params": {"threshold": 0.1}}]},
        r"rule_params\.threshold: not a parameter of rule lowest_correlation",
    ),
    "bad sigma_x value": (
        {"stages": [{"name": "sigma_x", "values": ["auto", "sharp"]}]},
        r"stages\[0\]\.values\[1\] = 'sharp': expected a number > 0 or one of auto, auto-epoch",
    ),
    "zero sigma_x value": (
        {"stages": [{"name": "sigma_x", "values": [0, 1]}]},
        r"stages\[0\]\.values\[0\] = 0: sigma_x must be greater than 0",
    ),
    "gpu fraction": (
        {"resources": {"gpus_per_trial": 0.3}},
        r"gpus_per_trial = 0\.3: a fraction must divide 1",
    ),
    "share_idle_cpus not a boolean": (
        {"resources": {"share_idle_cpus": "yes"}},
        r"resources\.share_idle_cpus = 'yes': expected true or false",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_search_config_is_one_line_and_exit_2(case, tmp_path, synthetic_file, capsys):
    extra, pattern = BAD[case]
    raw = {"data": [str(synthetic_file)], "fit": FIT, **extra}
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(raw))
    storage = tmp_path / "runs"
    code = main(["search", "--config", str(config), "--storage", str(storage), "--run-id", "x"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("psvae: error: ")
    assert re.search(pattern, err), err
    assert not storage.exists()  # nothing written, no Ray started


def test_unwritable_storage_is_refused_before_anything_starts(tmp_path, synthetic_file, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = _spec(tmp_path, [str(synthetic_file)])
    code = main(["search", "--config", str(config), "--storage", str(blocker / "runs"), "--run-id", "x"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is not a writable directory" in err
    assert blocker.read_text() == "not a directory"


def test_export_refuses_an_unfinished_run_and_an_existing_directory(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    assert main(["export", str(run), "--out", str(tmp_path / "e")]) == 2
    assert "not a search run directory" in capsys.readouterr().err


def test_a_sigma_x_stage_ahead_of_alpha_carries_its_words_and_numbers(tmp_path, synthetic_file):
    stages = [
        {"name": "sigma_x", "values": ["auto", 0.1, 1]},
        "alpha",
        {"name": "beta", "rule_params": {"min_active_var": 0.05}},
    ]
    spec = load_spec(_spec(tmp_path, [str(synthetic_file)], stages=stages))
    sigma, alpha, beta = spec.stages
    assert alpha.name == "alpha"
    assert (sigma.key, sigma.values, sigma.rule) == ("loss.sigma_x", ("auto", 0.1, 1.0), "sigma_leakage")
    assert [o["loss.sigma_x"] for o in sigma.trial_overrides()] == ["auto", 0.1, 1.0]
    assert beta.rule_params == {"min_active_var": 0.05}
    assert load_spec(_spec(tmp_path, [str(synthetic_file)])).stages[0].name == "alpha"  # optional
