"""``train.precision: auto``: the faster of float32 and bf16 autocast where the fit runs, by a short
probe of real training steps, kept per network, shape, device and threads; a fit keeps the
precision it began in."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from psvae import runtime
from psvae.data import load_data
from psvae.trainer import Trainer
from tests.conftest import small_config

NATIVE = runtime.native_bf16(torch.device("cpu"))


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Every test its own probe cache: the machine's answers are not the test's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    runtime._CHOSEN.clear()
    yield
    runtime._CHOSEN.clear()


def test_bf16_is_chosen_only_when_clearly_cheaper():
    assert runtime.choose_precision({"float32": [1.0, 1.1, 0.9], "bf16": [0.5, 0.6, 0.4]}) == "bf16"
    assert runtime.choose_precision({"float32": [1.0, 1.0, 1.0], "bf16": [0.97, 0.97, 0.97]}) == "float32"
    assert runtime.choose_precision({"float32": [1.0, 1.0, 1.0], "bf16": [1.5, 1.4, 1.6]}) == "float32"
    # the median: one slow step (the machine got busy for a moment) does not decide
    assert runtime.choose_precision({"float32": [1.0, 1.0, 9.0], "bf16": [0.5, 9.0, 0.5]}) == "bf16"


def test_the_probe_interleaves_the_two_after_a_warm_up_each():
    calls: list[str] = []
    times = runtime.probe_steps(calls.append, rounds=3)
    assert calls == ["float32", "bf16", "float32", "bf16", "bf16", "float32", "float32", "bf16"]
    assert [len(times["float32"]), len(times["bf16"])] == [3, 3]
    assert all(t >= 0 for t in times["float32"] + times["bf16"])


def test_a_set_precision_or_a_device_without_bf16_is_never_probed():
    def refuse() -> dict[str, list[float]]:
        raise AssertionError("probed")

    cpu = torch.device("cpu")
    assert runtime.resolve_precision("float32", cpu, refuse, "k") == "float32"
    assert runtime.resolve_precision("bf16", cpu, refuse, "k") == "bf16"
    assert runtime.resolve_precision("auto", torch.device("meta"), refuse, "k") == "float32"


@pytest.mark.skipif(not NATIVE, reason="this CPU has no native bfloat16: auto is float32 unprobed")
def test_a_probe_is_kept_per_key_for_this_process_and_for_an_hour_on_this_machine():
    probes: list[str] = []

    def probe() -> dict[str, list[float]]:
        probes.append("probe")
        return {"float32": [1.0, 1.0, 1.0], "bf16": [0.5, 0.5, 0.5]}

    cpu = torch.device("cpu")
    assert runtime.resolve_precision("auto", cpu, probe, "a") == "bf16"
    assert runtime.resolve_precision("auto", cpu, probe, "a") == "bf16"
    assert len(probes) == 1
    runtime._CHOSEN.clear()  # another process of the same machine: the file answers
    assert runtime.resolve_precision("auto", cpu, probe, "a") == "bf16" and len(probes) == 1
    entries = json.loads(runtime.precision_cache_path().read_text())
    assert entries["a"]["precision"] == "bf16" and entries["a"]["cpu_s"]["bf16"] == [0.5, 0.5, 0.5]
    # an answer older than the TTL is measured again (the load it was measured under is gone)
    entries["a"]["at"] = time.time() - runtime.PROBE_TTL_S - 1
    runtime.precision_cache_path().write_text(json.dumps(entries))
    runtime._CHOSEN.clear()
    assert runtime.resolve_precision("auto", cpu, probe, "a") == "bf16" and len(probes) == 2
    # another key (another network, shape or thread count) is probed on its own
    assert runtime.resolve_precision("auto", cpu, probe, "b") == "bf16" and len(probes) == 3
    # a damaged cache file is probed past, never an error
    runtime.precision_cache_path().write_text("{not json")
    runtime._CHOSEN.clear()
    assert runtime.resolve_precision("auto", cpu, probe, "a") == "bf16" and len(probes) == 4


def test_the_key_names_device_network_shape_and_threads():
    key = runtime.probe_key(torch.device("cpu"), "ps-vae|[4, 8]|1x32x32|batch=32")
    assert key.startswith("cpu|ps-vae|[4, 8]|1x32x32|batch=32|")
    assert f"threads={torch.get_num_threads()}" in key and torch.__version__ in key


@pytest.mark.skipif(not NATIVE, reason="this CPU has no native bfloat16: auto is float32 unprobed")
def test_a_probed_fit_equals_the_fit_set_to_the_probes_answer_and_resumes_in_it(synthetic_file, tmp_path):
    data = load_data([str(synthetic_file)])
    auto = Trainer(small_config(**{"train.epochs": 2}), data)
    chosen = auto.precision  # probes on a copy of the network
    assert chosen in ("float32", "bf16")
    entries = json.loads(runtime.precision_cache_path().read_text())
    (entry,) = entries.values()
    assert entry["precision"] == chosen
    assert all(len(v) == runtime.PROBE_ROUNDS for v in entry["cpu_s"].values())
    probed = [r.val["loss"] for r in auto.epochs()]
    fixed = Trainer(small_config(**{"train.epochs": 2, "train.precision": chosen}), data)
    assert [r.val["loss"] for r in fixed.epochs()] == probed  # the probe left the fit untouched
    assert all(math.isfinite(v) for v in probed)

    # a fit restored from its checkpoint goes on in the precision it began in, whatever a new
    # probe would say now
    begun = Trainer(small_config(**{"train.epochs": 2}), data)
    begun.run_epoch()
    begun.save_checkpoint(tmp_path / "state.pt")
    other = "float32" if chosen == "bf16" else "bf16"
    runtime._CHOSEN.clear()
    key = next(iter(entries))
    runtime.precision_cache_path().write_text(
        json.dumps({key: {"precision": other, "at": time.time(), "cpu_s": {}}})
    )
    restored = Trainer(small_config(**{"train.epochs": 2}), data)
    restored.restore(tmp_path / "state.pt")
    assert restored.precision == chosen
    assert Trainer(small_config(**{"train.epochs": 2}), data).precision == other  # a new fit asks the cache
