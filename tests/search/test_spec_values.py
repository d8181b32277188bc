"""Search-config values that cannot work are refused before Ray starts: non-finite weights and
rule parameters, seeds outside 64 bits, and YAML's 1e-3 is a number in a search config too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from search.cli import main
from search.spec import load_spec
from tests.conftest import SMALL_NET


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(text)
    return path


def _base(data: Path) -> str:
    channels = SMALL_NET["model.channels"]
    return f"data: [{data}]\nfit: {{model.channels: {channels}, train.epochs: 4, loss.anneal_epochs: 1}}\n"


BAD = {
    "nan alpha value": (
        "stages: [{name: alpha, values: [50, .nan]}]\n",
        r"stages\[0\]\.values\[1\] \(loss\.alpha\) = nan: expected a number",
    ),
    "infinite beta value": (
        "stages: [{name: beta, values: [.inf]}]\n",
        r"stages\[0\]\.values\[0\] \(loss\.beta\) = inf: expected a number",
    ),
    "infinite lr of a key stage": (
        "stages: [{name: lr, key: train.lr, values: [1e-3, .inf]}]\n",
        r"train\.lr = inf: must be a finite number",
    ),
    "negative seed": (
        "stages: [{name: seeds, values: [0, -1]}]\n",
        r"stages\[0\]\.values\[1\] = -1: seeds are integers from 0 to 2\*\*64 - 1",
    ),
    "seed beyond 64 bits": (
        "stages: [{name: seeds, values: [18446744073709551616]}]\n",
        r"values\[0\] = 18446744073709551616: seeds are integers from 0 to 2\*\*64 - 1",
    ),
    "seed of the fit": (
        "fit: {train.seed_train: -2, train.epochs: 4, loss.anneal_epochs: 1}\n",
        r"train\.seed_train = -2: a seed must be",
    ),
    "nan sigma_x in fit": (
        "fit: {loss.sigma_x: .nan, train.epochs: 4, loss.anneal_epochs: 1}\n",
        r"loss\.sigma_x = nan: must be a finite number",
    ),
    "nan tolerance": (
        "stages: [{name: alpha, rule: alpha_tolerance, rule_params: {tolerance: .nan}}]\n",
        r"stages\[0\]\.rule_params\.tolerance = nan: must be a number >= 0",
    ),
    "unknown rule parameter": (
        "stages: [{name: alpha, rule: alpha_tolerance, rule_params: {tolerence: 0.1}}]\n",
        r"rule_params\.tolerence: not a parameter of rule alpha_tolerance \(it takes: tolerance\)",
    ),
    "infinite optuna bound": (
        "stages: [{name: alpha, algorithm: optuna, range: [10, .inf]}]\n",
        r"stages\[0\]\.range\[1\] = inf: expected a number",
    ),
    "nan checkpoint interval": ("checkpoint_every_s: .nan\n", r"checkpoint_every_s = nan: expected a number"),
    "dashboard not a yes or no": ("dashboard: 8265\n", r"dashboard = 8265: expected true or false"),
    "reuse_fits not a yes or no": ("reuse_fits: 'no'\n", r"reuse_fits = 'no': expected true or false"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_values_that_cannot_work_are_refused_before_ray(case, tmp_path, synthetic_file, capsys):
    extra, pattern = BAD[case]
    text = _base(synthetic_file)
    if extra.startswith("fit:"):
        text = text.split("\n", 1)[0] + "\n"
    config = _write(tmp_path, text + extra)
    storage = tmp_path / "runs"
    code = main(["search", "--config", str(config), "--storage", str(storage), "--run-id", "x"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("psvae: error: "), err
    assert re.search(pattern, err), err
    assert not storage.exists()


@pytest.mark.parametrize("flag", ["--alpha", "--beta"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_weights_by_hand_are_refused(flag, value, tmp_path, synthetic_file, capsys):
    config = _write(tmp_path, _base(synthetic_file))
    storage = tmp_path / "runs"
    code = main(["search", "--config", str(config), flag, value, "--storage", str(storage), "--run-id", "x"])
    err = capsys.readouterr().err
    assert code == 2 and f"{flag[2:]} = {value}: expected a number" in err and err.count("\n") == 1
    assert not storage.exists()


def test_exponent_floats_are_numbers_in_a_search_config(tmp_path, synthetic_file):
    config = _write(
        tmp_path,
        _base(synthetic_file)
        + "stages: [{name: lr, key: train.lr, values: [1e-4, 1e-3]},"
        + " {name: wd, key: train.weight_decay, values: [0, 1e-5]}]\n",
    )
    spec = load_spec(config)
    assert spec.stages[0].values == (1e-4, 1e-3) and spec.stages[1].values == (0, 1e-5)
    config = _write(
        tmp_path,
        f"data: [{synthetic_file}]\nfit: {{train.lr: 5e-4, train.epochs: 4, loss.anneal_epochs: 1}}\n",
    )
    assert load_spec(config).fit["train.lr"] == 5e-4
