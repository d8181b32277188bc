"""Shipped schedules (configs/cpu.yaml, configs/gpu.yaml) with the data given on the command
line, and a shortened schedule whose anneal epochs follow its epochs."""

from __future__ import annotations

import json

import pytest

from psvae.config import FitConfig, scaled_anneal
from psvae.errors import ConfigError
from search import demo
from search.cli import main
from search.spec import load_spec
from tests.conftest import REPO, SMALL_NET

CPU, GPU = REPO / "configs" / "cpu.yaml", REPO / "configs" / "gpu.yaml"


def test_the_demo_finds_the_shipped_configs_beside_the_package():
    assert CPU.parent == demo.CONFIGS and CPU.is_file() and GPU.is_file()


@pytest.mark.parametrize("config", [CPU, GPU])
def test_a_shipped_config_takes_its_data_from_the_command_line(config, tmp_path, synthetic_file, monkeypatch):
    (tmp_path / "sessions").mkdir()
    (tmp_path / "sessions" / "a.h5").symlink_to(synthetic_file)
    monkeypatch.chdir(tmp_path)
    spec = load_spec(config, data=["sessions/a.h5"])  # relative to the current directory
    assert spec.data == (str(synthetic_file.resolve()),)
    assert [s.name for s in spec.stages] == ["alpha", "beta", "seeds"]


def test_without_data_a_shipped_config_says_how_to_give_it(tmp_path, capsys):
    storage = tmp_path / "runs"
    code = main(["search", "--config", str(CPU), "--storage", str(storage)])
    err = capsys.readouterr().err
    assert (
        code == 2
        and err
        == f"psvae: error: {CPU}: no data: list the session files under data:, or give --data FILE ...\n"
    )
    code = main(
        ["search", "--config", str(CPU), "--data", str(tmp_path / "nope.h5"), "--storage", str(storage)]
    )
    assert code == 2 and f"{tmp_path / 'nope.h5'}: no such file" in capsys.readouterr().err
    assert not storage.exists()


def test_data_on_the_command_line_replaces_the_configs(tmp_path, synthetic_file):
    config = tmp_path / "search.yaml"
    config.write_text("data: [missing.h5]\nfit: {train.epochs: 4, loss.anneal_epochs: 1}\n")
    assert load_spec(config, data=[str(synthetic_file)]).data == (str(synthetic_file.resolve()),)


def test_cpu_is_the_demos_schedule_and_gpu_the_papers():
    cpu = load_spec_fit(CPU)
    assert demo.DEMO["fit"] == demo.shipped_config("cpu.yaml")["fit"]
    assert (cpu.train.epochs, cpu.train.lr, cpu.loss.anneal_epochs) == (24, 2e-3, 4)
    assert cpu.model.channels == (16, 32, 64, 128, 256) and cpu.loss.sigma_x == "auto"
    assert load_spec_fit(GPU) == FitConfig()  # the paper's defaults, spelled out
    gpu = demo.shipped_config("gpu.yaml")["resources"]
    assert gpu["gpus_per_trial"] == 1 and demo.CPU["resources"]["gpus_per_trial"] == 0
    quick = FitConfig.from_mapping(demo.QUICK["fit"])
    assert (quick.train.epochs, quick.loss.anneal_epochs, quick.train.lr) == (2, 1, 2e-3)


def test_the_demo_writes_the_cpu_schedule_into_its_inputs(tmp_path):
    config = demo.write_inputs(tmp_path / "demo", quick=False)
    spec = load_spec(config)
    assert FitConfig.from_mapping(spec.fit) == load_spec_fit(CPU)


def load_spec_fit(path) -> FitConfig:
    return FitConfig.from_layers([(str(path), demo.yaml_io.read(path)["fit"])])[0]


def test_a_shortened_schedule_scales_the_default_anneal_epochs():
    cfg, notes = FitConfig.from_layers([("--set", {"train.epochs": 30})])
    assert cfg.loss.anneal_epochs == 10
    assert notes == [
        "--set: train.epochs = 30: loss.anneal_epochs scaled with it to 10 (was 100 of 300 epochs); "
        "set loss.anneal_epochs to choose another value"
    ]
    assert FitConfig.from_layers([("f", {"train": {"epochs": 2}})])[0].loss.anneal_epochs == 1
    assert FitConfig.from_layers([("f", {"train.epochs": 1})])[0].loss.anneal_epochs == 0


def test_anneal_epochs_given_with_the_epochs_are_kept_or_refused():
    cfg, notes = FitConfig.from_layers([("--set", {"train.epochs": 30, "loss.anneal_epochs": 4})])
    assert cfg.loss.anneal_epochs == 4 and notes == []
    with pytest.raises(
        ConfigError, match=r"^--set: loss\.anneal_epochs = 30: must be below train\.epochs = 30"
    ):
        FitConfig.from_layers([("--set", {"train.epochs": 30, "loss.anneal_epochs": 30})])
    # longer schedules and no annealing are left alone
    assert FitConfig.from_layers([("f", {"train.epochs": 600})]) == (
        FitConfig().replace(**{"train.epochs": 600}),
        [],
    )
    no_anneal = {"train.epochs": 50, "loss.anneal_epochs": 0}
    assert (
        FitConfig.from_layers([("f", no_anneal), ("--set", {"train.epochs": 5})])[0].loss.anneal_epochs == 0
    )


def test_a_set_epochs_scales_the_anneal_epochs_of_the_config_file():
    layers = [("fit.yaml", {"train.epochs": 80, "loss.anneal_epochs": 20}), ("--set", {"train.epochs": 8})]
    cfg, notes = FitConfig.from_layers(layers)
    assert cfg.loss.anneal_epochs == 2 and notes[0].startswith("--set: train.epochs = 8: loss.anneal_epochs")
    assert scaled_anneal(100, 300, 8) == 3 and scaled_anneal(2, 8, 2) == 1 and scaled_anneal(5, 10, 6) == 3


def test_psvae_fit_with_fewer_epochs_prints_one_note_and_fits(tmp_path, capsys, synthetic_file):
    out = tmp_path / "fit"
    channels = f"--set=model.channels={SMALL_NET['model.channels']}"
    code = main(
        ["fit", "--data", str(synthetic_file), "--out", str(out), "--quiet", channels, "--set=train.epochs=2"]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert err == (
        "psvae: note: --set: train.epochs = 2: loss.anneal_epochs scaled with it to 1 (was 100 of 300 "
        "epochs); set loss.anneal_epochs to choose another value\n"
    )
    recorded = json.loads((out / "fit.json").read_text())["config"]
    assert recorded["loss.anneal_epochs"] == 1 and recorded["train.epochs"] == 2


def test_a_search_configs_short_fit_scales_too_and_says_so(tmp_path, synthetic_file):
    config = tmp_path / "search.yaml"
    config.write_text(f"data: [{synthetic_file}]\nfit: {{train.epochs: 30}}\n")
    notes: list[str] = []
    spec = load_spec(config, notes=notes)
    assert spec.fit["loss.anneal_epochs"] == 10
    assert notes == [
        f"{config}: fit: train.epochs = 30: loss.anneal_epochs scaled with it to 10 (was 100 of 300 epochs); "
        "set loss.anneal_epochs to choose another value"
    ]
