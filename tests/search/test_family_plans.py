"""Search plans per model class and configs in the reference's ae_model.json keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from psvae import synthetic
from psvae.config import FitConfig
from psvae.errors import ConfigError
from psvae.reference import KEYS, from_reference
from search.cli import load_fit_config, main
from search.spec import SearchSpec, load_spec
from tests.conftest import SMALL_NET

FIT = {**SMALL_NET, "train.epochs": 4, "loss.anneal_epochs": 1}


@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    spec = synthetic.SyntheticSpec(n_trials=10, n_frames=8, size=32, seed=2)
    return [str(p) for p in synthetic.write_sessions(tmp_path_factory.mktemp("two"), 2, spec)]


def _load(tmp_path: Path, raw: dict) -> SearchSpec:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


# -- default plans --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model_class", "plan"),
    [
        (
            "ps-vae",
            [
                ("alpha", 4, "alpha_label_band"),
                ("beta", 4, "lowest_correlation"),
                ("seeds", 3, "lowest_correlation"),
            ],
        ),
        (
            "msps-vae",
            [
                ("alpha", 4, "alpha_label_band"),
                ("beta_delta", 16, "session_correlation"),
                ("seeds", 3, "session_correlation"),
            ],
        ),
        ("cond-ae", [("seeds", 3, "lowest_correlation")]),
        ("cond-ae-msp", [("msp_alpha", 4, "msp_tolerance"), ("seeds", 3, "lowest_correlation")]),
        ("vae", [("beta", 4, "lowest_correlation"), ("seeds", 3, "lowest_correlation")]),
        ("beta-tcvae", [("beta", 4, "lowest_correlation"), ("seeds", 3, "lowest_correlation")]),
    ],
)
def test_each_class_has_its_default_plan(tmp_path, two_sessions, model_class, plan):
    spec = _load(tmp_path, {"data": two_sessions, "fit": {**FIT, "model.model_class": model_class}})
    assert [(s.name, len(s.trial_overrides()), s.rule) for s in spec.stages] == plan


def test_beta_delta_stage_crosses_beta_with_delta_and_fixes_both(tmp_path, two_sessions):
    fit = {**FIT, "model.model_class": "msps-vae"}
    spec = _load(
        tmp_path,
        {
            "data": two_sessions,
            "fit": fit,
            "stages": [{"name": "beta_delta", "values": [1, 5], "delta": [50, 500]}],
        },
    )
    (stage,) = spec.stages
    assert stage.varied_keys() == ("loss.beta", "loss.delta")
    assert stage.trial_overrides() == [
        {"loss.beta": 1.0, "loss.delta": 50.0},
        {"loss.beta": 1.0, "loss.delta": 500.0},
        {"loss.beta": 5.0, "loss.delta": 50.0},
        {"loss.beta": 5.0, "loss.delta": 500.0},
    ]
    assert SearchSpec.from_dict(spec.to_dict()) == spec  # resume rebuilds the same spec


def test_the_default_ps_vae_spec_hashes_as_before_the_family(tmp_path, synthetic_file):
    spec = _load(tmp_path, {"data": [str(synthetic_file)], "fit": FIT})
    d = spec.to_dict()
    for stage in d["stages"]:
        assert stage.pop("cross") is None
    assert "cross" not in json.dumps(d)


@pytest.mark.parametrize(
    ("fit", "stages", "pattern"),
    [
        (
            {"model.model_class": "vae"},
            [{"name": "alpha"}],
            r"varies loss\.alpha, which model\.model_class = 'vae' does not use",
        ),
        (
            {},
            [{"name": "beta_delta"}],
            r"varies loss\.delta, which model\.model_class = 'ps-vae' does not use",
        ),
        (
            {"model.model_class": "msps-vae"},
            [{"name": "beta", "delta": [1]}],
            r"only the beta_delta stage crosses",
        ),
    ],
)
def test_a_stage_the_class_cannot_use_is_refused(tmp_path, two_sessions, fit, stages, pattern):
    with pytest.raises(ConfigError, match=pattern):
        _load(tmp_path, {"data": two_sessions, "fit": {**FIT, **fit}, "stages": stages})


# -- the reference's ae_model.json keys ------------------------------------------------------
REFERENCE = {
    "experiment_name": "ae-example",
    "model_type": "conv",
    "n_ae_latents": 9,
    "l2_reg": 0.001,
    "rng_seed_model": 3,
    "fit_sess_io_layers": False,
    "ae_arch_json": None,
    "model_class": "msps-vae",
    "ps_vae.alpha": 500,
    "ps_vae.beta": 5,
    "ps_vae.delta": 100,
    "ps_vae.anneal_epochs": 2,
    "n_background": 4,
    "n_sessions_per_batch": 2,
    "msp.alpha": 0.5,
    "conditional_encoder": False,
}


def test_every_listed_reference_key_is_mapped():
    fixed, sweeps = from_reference(REFERENCE, "ae_model.json", n_labels=2)
    assert sweeps == {}
    assert fixed == {
        "model.model_class": "msps-vae",
        "model.n_unsupervised": 9 - 2 - 4,  # all latents less K labels and B background
        "train.weight_decay": 0.001,
        "train.seed_model": 3,
        "loss.alpha": 500,
        "loss.beta": 5,
        "loss.delta": 100,
        "loss.anneal_epochs": 2,
        "model.n_background": 4,
        "train.n_sessions_per_batch": 2,
        "loss.msp_alpha": 0.5,
    }
    listed = {k for k in REFERENCE if k in KEYS}
    assert listed == {
        "model_class", "n_ae_latents", "ps_vae.alpha", "ps_vae.beta", "ps_vae.delta", "ps_vae.anneal_epochs",
        "n_background", "n_sessions_per_batch", "rng_seed_model", "msp.alpha", "l2_reg",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("model_class", "n_unsupervised"), [("ps-vae", 7), ("cond-ae-msp", 7), ("cond-ae", 9), ("vae", 9)]
)
def test_n_ae_latents_counts_all_latents_of_the_class(model_class, n_unsupervised):
    fixed, _ = from_reference({"model_class": model_class, "n_ae_latents": 9}, "f.json", n_labels=2)
    assert fixed["model.n_unsupervised"] == n_unsupervised


def test_a_fit_config_file_in_reference_keys(tmp_path, synthetic_file):
    path = tmp_path / "ae_model.json"
    path.write_text(json.dumps({**REFERENCE, "model_class": "ps-vae", "ps_vae.anneal_epochs": 100}))
    cfg = load_fit_config(str(path), ["train.epochs=200"], [str(synthetic_file)])
    assert isinstance(cfg, FitConfig)
    assert (cfg.model.model_class, cfg.model.n_unsupervised, cfg.loss.alpha, cfg.train.seed_model) == (
        "ps-vae", 7, 500.0, 3,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (
            {"ae_batch_norm": True},
            r"ae_model\.json: ae_batch_norm = True: not a supported ae_model\.json key",
        ),
        ({"fit_sess_io_layers": True}, r"ae_model\.json: fit_sess_io_layers = True: not supported"),
        ({"ps_vae.beta": [1, 5]}, r"ae_model\.json: loss\.beta = \[1, 5\]: a list is a sweep"),
        ({"model_class": "ae"}, r"model\.model_class = 'ae': must be one of"),
        ({"n_ae_latents": 3}, r"n_ae_latents = 3: expected an integer of at least 6"),
    ],
)
def test_a_bad_reference_fit_config_is_one_line_exit_2(tmp_path, synthetic_file, capsys, extra, pattern):
    path = tmp_path / "ae_model.json"
    path.write_text(json.dumps({**REFERENCE, **extra}))
    code = main(["fit", "--data", str(synthetic_file), "--config", str(path), "--out", str(tmp_path / "f")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and re.search(pattern, err), err
    assert not (tmp_path / "f").exists()


def test_reference_lists_become_the_stages_of_a_search(tmp_path, two_sessions):
    raw = {
        "data": two_sessions,
        "fit": FIT,
        **REFERENCE,
        "ps_vae.alpha": [50, 100],
        "ps_vae.beta": [1, 5],
        "ps_vae.delta": [50, 500],
        "rng_seed_model": [0, 1],
        "n_ae_latents": 8,
        "n_background": 3,
    }
    spec = _load(tmp_path, raw)
    assert [(s.name, len(s.trial_overrides())) for s in spec.stages] == [
        ("alpha", 2),
        ("beta_delta", 4),
        ("seeds", 2),
    ]
    base = spec.base_config()
    assert (base.model.model_class, base.model.n_unsupervised, base.train.weight_decay) == (
        "msps-vae",
        3,
        0.001,
    )


def test_reference_scalars_fix_their_stage_and_a_search_of_nothing_is_refused(tmp_path, synthetic_file):
    ps = {"model_class": "ps-vae", "ps_vae.alpha": 100, "ps_vae.anneal_epochs": 1}
    spec = _load(tmp_path, {"data": [str(synthetic_file)], "fit": {**FIT, **ps}})
    assert [s.name for s in spec.stages] == ["beta", "seeds"]
    everything = {**ps, "ps_vae.beta": 5, "rng_seed_model": 0}
    with pytest.raises(ConfigError, match="nothing to search"):
        _load(tmp_path, {"data": [str(synthetic_file)], "fit": {**FIT, **everything}})


def test_an_unknown_reference_key_in_a_search_is_named(tmp_path, synthetic_file, capsys):
    raw = {"data": [str(synthetic_file)], "fit": FIT, "model_class": "ps-vae", "ae_padding_type": "same"}
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(raw))
    code = main(["search", "--config", str(config), "--storage", str(tmp_path / "runs"), "--run-id", "x"])
    err = capsys.readouterr().err
    assert code == 2 and "ae_padding_type = 'same': not a supported ae_model.json key" in err


# -- built-in multi-session data and the demo's plan -------------------------------------------
def test_synthetic_sessions_command_writes_a_file_per_session_with_ground_truth(tmp_path, capsys):
    import h5py
    import numpy as np

    out = tmp_path / "sessions"
    assert main(["synthetic", "--sessions", "3", "--trials", "2", "--out", str(out)]) == 0
    files = sorted(out.glob("*.h5"))
    assert [f.name for f in files] == ["session_00.h5", "session_01.h5", "session_02.h5"]
    assert [synthetic.read_session(f) for f in files] == [0, 1, 2]
    with h5py.File(files[0]) as a, h5py.File(files[1]) as b:
        assert sorted(a.keys()) == ["images", "labels"]  # the ground truth stays outside
        # the static background differs between sessions: compare each session's mean frame
        assert np.abs(a["images/trial_0000"][()].mean(0) - b["images/trial_0000"][()].mean(0)).mean() > 5
    assert main(["synthetic", "--sessions", "3", "--out", str(out)]) == 2  # never overwritten


def test_the_msps_demo_plan_is_the_classes_plan_on_three_sessions(tmp_path):
    from search.demo import write_inputs

    spec = load_spec(write_inputs(tmp_path / "demo", "msps-vae", quick=True))
    assert len(spec.data) == 3 and spec.base_config().model.model_class == "msps-vae"
    assert [(s.name, len(s.trial_overrides()), s.rule) for s in spec.stages] == [
        ("alpha", 4, "alpha_label_band"),
        ("beta_delta", 16, "session_correlation"),
        ("seeds", 3, "session_correlation"),
    ]
