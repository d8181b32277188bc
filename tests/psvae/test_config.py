"""Fit-config values that cannot work are refused where the config is built, for every field of
their kind (all floats, all seeds, all integers), and every YAML reader reads 1e-3 as a number."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from psvae import yaml_io
from psvae.config import SEED_MAX, FitConfig, is_seed
from psvae.errors import ConfigError
from search.cli import load_fit_config, main
from tests.conftest import REPO

DEFAULTS = FitConfig().flat()
# loss.sigma_x is a number or the name of a calibration (default "auto"): its numbers are floats
FLOAT_KEYS = [k for k, v in DEFAULTS.items() if isinstance(v, float)] + ["loss.sigma_x"]
SEED_KEYS = [k for k in DEFAULTS if is_seed(k.partition(".")[2])]
INT_KEYS = [k for k, v in DEFAULTS.items() if isinstance(v, int) and not isinstance(v, bool)]


def test_the_kinds_cover_the_fields_the_issue_names():
    assert {"train.lr", "train.weight_decay", "loss.sigma_x", "loss.alpha", "loss.beta"} <= set(FLOAT_KEYS)
    assert set(SEED_KEYS) == {"data.split_seed", "train.seed_model", "train.seed_train"}


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_every_float_field_refuses_non_finite_values(key, value):
    with pytest.raises(ConfigError, match=rf"{re.escape(key)} = {value}: must be a finite number"):
        FitConfig.from_mapping({key: value})


@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_every_float_field_refuses_an_integer_beyond_any_float(key):
    with pytest.raises(ConfigError, match=rf"{re.escape(key)} = 1000+: expected a finite number"):
        FitConfig.from_mapping({key: 10**400})


def test_sections_built_directly_are_checked_too():
    from psvae.config import LossConfig, TrainConfig

    with pytest.raises(ConfigError, match=r"loss\.beta = inf"):
        LossConfig(beta=float("inf"))
    with pytest.raises(ConfigError, match=r"train\.seed_train = -3"):
        TrainConfig(seed_train=-3)


@pytest.mark.parametrize("key", SEED_KEYS)
def test_every_seed_is_an_unsigned_64_bit_integer(key):
    for bad in (-1, SEED_MAX + 1):
        with pytest.raises(ConfigError, match=rf"{re.escape(key)} = {bad}: a seed must be an integer"):
            FitConfig.from_mapping({key: bad})
    assert FitConfig.from_mapping({key: SEED_MAX}).flat()[key] == SEED_MAX


def test_the_largest_seed_really_seeds_torch_and_numpy():
    import numpy as np
    import torch

    torch.manual_seed(SEED_MAX)
    np.random.SeedSequence(SEED_MAX).generate_state(2)
    np.random.default_rng(SEED_MAX)
    with pytest.raises(ValueError, match="Overflow"):
        torch.manual_seed(SEED_MAX + 1)  # what the check keeps from reaching the trainer


@pytest.mark.parametrize("key", [k for k in INT_KEYS if k not in SEED_KEYS])
def test_every_other_integer_fits_in_64_bits(key):
    with pytest.raises(ConfigError, match=rf"{re.escape(key)} = {2**63}: too large"):
        FitConfig.from_mapping({key: 2**63})


def test_list_fields_are_checked_entry_by_entry():
    with pytest.raises(ConfigError, match=r"model\.channels = 1180591620717411303424: too large"):
        FitConfig.from_mapping({"model.channels": [4, 2**70, 8, 8, 8]})


def test_the_yaml_loader_reads_exponents_without_a_dot_as_numbers():
    loaded = yaml_io.load("a: 1e-3\nb: 5E+2\nc: -2e4\nd: 1.0e-4\ne: '1e-3'\nf: 12\ng: 1e3x\n")
    assert loaded == {"a": 0.001, "b": 500.0, "c": -20000.0, "d": 1e-4, "e": "1e-3", "f": 12, "g": "1e3x"}
    assert yaml_io.parse_value("1e-3") == 0.001 and yaml_io.parse_value("[4, 8]") == [4, 8]


def test_a_fit_config_file_and_set_values_read_1e_3_as_a_number(tmp_path):
    cfg = tmp_path / "fit.yaml"
    cfg.write_text("train:\n  lr: 1e-3\n  weight_decay: 1e-5\n")
    loaded = load_fit_config(str(cfg), ["loss.sigma_x=5e-1"])
    assert (loaded.train.lr, loaded.train.weight_decay, loaded.loss.sigma_x) == (1e-3, 1e-5, 0.5)


def test_a_yaml_infinity_is_refused_in_one_line(tmp_path, capsys, synthetic_file):
    cfg = tmp_path / "fit.yaml"
    cfg.write_text("train:\n  lr: .inf\n")
    out = tmp_path / "out"
    code = main(["fit", "--data", str(synthetic_file), "--config", str(cfg), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err == f"psvae: error: {cfg}: train.lr = inf: must be a finite number\n"
    assert not out.exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("loss.sigma_x=.nan", r"loss\.sigma_x = nan: must be a finite number"),
        ("train.lr=nan", r"train\.lr = .nan.: expected a number"),
        ("train.seed_model=-1", r"train\.seed_model = -1: a seed must be"),
        (f"data.split_seed={2**64}", r"data\.split_seed = 18446744073709551616: a seed must be"),
        ("loss.alpha=1e400", r"loss\.alpha = inf: must be a finite number"),
    ],
)
def test_set_values_that_cannot_work_are_one_line_and_exit_2(
    setting, message, tmp_path, capsys, synthetic_file
):
    out = tmp_path / "out"
    code = main(["fit", "--data", str(synthetic_file), "--set", setting, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and re.search(message, err), err
    assert not out.exists()


def test_no_module_reads_yaml_but_the_one_loader():
    """Every YAML reader of psvae/ and search/ goes through psvae.yaml_io (cluster/jobs.py is
    the lead's to switch)."""
    offenders = []
    for path in [*(REPO / "psvae").rglob("*.py"), *(REPO / "search").rglob("*.py")]:
        if path.name == "yaml_io.py":
            continue
        tree = ast.parse(Path(path).read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "yaml"
                and node.attr
                in {"load", "safe_load", "full_load", "unsafe_load", "load_all", "safe_load_all"}
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
