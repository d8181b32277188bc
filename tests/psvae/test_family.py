"""The other members of the family: MSPS-VAE, CAE, MSP, beta-VAE and beta-TCVAE."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from psvae import synthetic
from psvae.config import MODEL_CLASSES, FitConfig, ModelConfig
from psvae.data import load_data, read_trials
from psvae.errors import ConfigError
from psvae.export import load_model
from psvae.fit import run_fit
from psvae.losses import family_loss, kl_standard_normal, triplet_loss, weights_for_epoch
from psvae.metrics import session_accuracy
from psvae.model import PSVAE
from psvae.trainer import Trainer
from tests.conftest import small_config

SMALL = ModelConfig(channels=(4, 4, 4, 4, 4))


@pytest.fixture(scope="module")
def session_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("sessions")
    spec = synthetic.SyntheticSpec(n_trials=10, n_frames=20, size=32, seed=5)
    return synthetic.write_sessions(out, 3, spec)


# -- triplet loss ---------------------------------------------------------------------------
def test_triplet_loss_is_zero_for_well_separated_sessions():
    session = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    centres = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
    mu_b = centres[session] + 0.01 * torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    assert triplet_loss(mu_b, session).item() == 0.0


def test_triplet_loss_is_positive_when_sessions_overlap_and_matches_a_loop():
    session = torch.tensor([0, 0, 1, 1, 1])
    mu_b = torch.randn(5, 2, generator=torch.Generator().manual_seed(1)) * 0.1
    value = triplet_loss(mu_b, session)
    assert value.item() > 0
    hinges = []
    for a in range(5):
        for p in range(5):
            for n in range(5):
                if p != a and session[p] == session[a] and session[n] != session[a]:
                    d_ap, d_an = (mu_b[a] - mu_b[p]).norm(), (mu_b[a] - mu_b[n]).norm()
                    hinges.append(max(float(d_ap - d_an + 1.0), 0.0))
    assert value.item() == pytest.approx(np.mean(hinges), rel=1e-5)


def test_triplet_loss_has_finite_gradients_where_means_coincide():
    mu_b = torch.zeros(4, 3, requires_grad=True)
    triplet_loss(mu_b, torch.tensor([0, 0, 1, 1])).backward()
    assert mu_b.grad is not None and torch.isfinite(mu_b.grad).all()


# -- batches of several sessions -----------------------------------------------------------
@pytest.mark.parametrize("n_per_batch", [2, 3, 4, 5])
def test_session_batches_hold_the_asked_number_of_distinct_sessions(tmp_path, n_per_batch):
    spec = synthetic.SyntheticSpec(n_trials=10, n_frames=4, size=32, seed=1)
    data = load_data([str(p) for p in synthetic.write_sessions(tmp_path, 6, spec)], per_session=True)
    train = set(data.index["train"].tolist())
    rng = torch.Generator().manual_seed(0)
    batches = list(data.session_batches(22, n_per_batch, rng))
    assert len(batches) == data.n_frames("train") // 22
    for idx in batches:
        assert len(idx) == 22 and set(idx.tolist()) <= train
        sessions, counts = np.unique(data.session[idx].numpy(), return_counts=True)
        assert len(sessions) == n_per_batch
        assert counts.min() >= 22 // n_per_batch


def test_labels_are_zscored_per_session(session_files):
    data = load_data([str(p) for p in session_files], per_session=True)
    for s in range(3):
        rows = data.index["train"][data.session[data.index["train"]] == s]
        labels, mask = data.labels[rows].numpy(), data.label_mask[rows].numpy() > 0
        for k in range(2):
            assert labels[mask[:, k], k].mean() == pytest.approx(0, abs=1e-4)
            assert labels[mask[:, k], k].std() == pytest.approx(1, abs=1e-3)
    assert len(data.label_stats.session_mean) == 3


def test_msps_vae_needs_as_many_sessions_as_a_batch_holds(session_files):
    cfg = small_config(**{"model.model_class": "msps-vae", "train.n_sessions_per_batch": 4})
    data = load_data([str(p) for p in session_files], per_session=True)
    with pytest.raises(ConfigError, match="n_sessions_per_batch = 4"):
        Trainer(cfg, data)


# -- per-class pieces -------------------------------------------------------------------------
def test_cae_decoder_reads_latents_and_labels():
    cfg = ModelConfig(model_class="cond-ae", n_unsupervised=5, channels=(4, 4, 4, 4, 4))
    model = PSVAE((1, 32, 32), 3, cfg)
    assert model.decoder.linear.in_features == 5 + 3
    assert model.encoder.mu.out_features == 5
    out = model(torch.rand(2, 1, 32, 32), labels=torch.zeros(2, 3))
    assert out.frames.shape == (2, 1, 32, 32) and out.labels is None
    with pytest.raises(ValueError, match="labels"):
        model(torch.rand(2, 1, 32, 32))


def test_msp_projection_shape_and_loss():
    cfg = ModelConfig(model_class="cond-ae-msp", n_unsupervised=2, channels=(4, 4, 4, 4, 4))
    model = PSVAE((1, 32, 32), 3, cfg)
    assert model.projection is not None and model.projection.weight.shape == (3, 5)  # K x L
    frames, labels = torch.rand(4, 1, 32, 32), torch.randn(4, 3)
    out = model(frames)
    p = model.projection.weight
    torch.testing.assert_close(out.labels, out.z @ p.T)
    weights = weights_for_epoch(0, 1.0, 1.0, 0, msp_alpha=2.0)
    terms = family_loss(
        "cond-ae-msp", frames, out.frames, labels, out.labels, torch.ones(4, 3), None,
        out.z, out.mu, out.logvar, 3, 0, 100, weights, projection=p,
    )  # fmt: skip
    pixel = (frames - out.frames).square().mean()
    label = (labels - out.labels).square().mean()
    latent = (out.z - out.labels @ p).square().mean()
    torch.testing.assert_close(terms["msp_latent"], latent)
    torch.testing.assert_close(terms["loss"], pixel + 2.0 * (label + latent))
    # the layout is [P z | null-space coordinates] and decodes back to the same frames
    layout = model.to_layout(out.mu)
    torch.testing.assert_close(layout[:, :3], out.labels)
    torch.testing.assert_close(model.decode_layout(layout), out.frames, atol=1e-5, rtol=1e-4)


def test_beta_vae_keeps_beta_after_annealing():
    assert [weights_for_epoch(e, 1.0, 4.0, 2).beta_e for e in (0, 1, 2, 3, 10)] == [0.0, 2.0, 4.0, 4.0, 4.0]
    mu, logvar = torch.randn(8, 3), torch.randn(8, 3) * 0.1
    frames = torch.rand(8, 1, 32, 32)
    terms = family_loss(
        "vae", frames, frames, torch.zeros(8, 0), None, torch.zeros(8, 0), None,
        mu, mu, logvar, 0, 0, 100, weights_for_epoch(10, 1.0, 4.0, 2),
    )  # fmt: skip
    kl = kl_standard_normal(mu, logvar).mean()
    torch.testing.assert_close(terms["kl_u"], kl)
    torch.testing.assert_close(terms["loss"], terms["nll_frames"] + 4.0 * kl)


def test_session_accuracy_sees_session_information_and_its_absence():
    rng = np.random.default_rng(0)
    session = np.repeat(np.arange(3), 200)
    informative = rng.normal(size=(600, 2)) + 4 * np.eye(3, 2)[session]
    assert session_accuracy(informative[::2], session[::2], informative[1::2], session[1::2], 3) > 0.9
    noise = rng.normal(size=(600, 2))
    assert abs(session_accuracy(noise[::2], session[::2], noise[1::2], session[1::2], 3) - 1 / 3) < 0.1


# -- every class fits and exports -------------------------------------------------------------
@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_each_class_fits_exports_and_reloads(model_class, synthetic_file, session_files, tmp_path):
    multi = model_class == "msps-vae"
    paths = [str(p) for p in session_files] if multi else [str(synthetic_file)]
    cfg = small_config(**{"model.model_class": model_class, "train.epochs": 2})
    summary = run_fit(paths, cfg, tmp_path / "fit", progress=False)
    assert summary.status == "completed"
    m = summary.metrics
    assert math.isfinite(m["val_loss"]) and math.isfinite(m["val_pixel_mse"])
    if multi:
        assert 0 <= m["val_session_acc"] <= 1 and m["session_chance"] == pytest.approx(1 / 3)
    meta = json.loads((tmp_path / "fit" / "model" / "config.json").read_text())
    assert meta["model_class"] == model_class == meta["config"]["model.model_class"]

    model = load_model(tmp_path / "fit" / "model")
    assert model.network.model_class == model_class
    _, frames = next(read_trials(paths[0]))
    labels = None
    if model_class == "cond-ae":
        with pytest.raises(ValueError, match="labels"):
            model.encode(frames)
        labels = np.zeros((len(frames), 2))
    enc = model.encode(frames, labels=labels)
    k_s = 0 if model_class in ("vae", "beta-tcvae") else 2
    assert enc.supervised.shape == (len(frames), k_s)
    assert enc.background.shape == (len(frames), 3 if multi else 0)
    assert enc.unsupervised.shape == (len(frames), 2)
    assert enc.labels.shape == (len(frames), 2)
    assert np.isnan(enc.labels).all() == (k_s == 0)
    decoded = model.decode(enc.latents)
    assert decoded.shape == (len(frames), 1, 32, 32)
    # decoding the encoded layout is the network's own reconstruction
    with torch.no_grad():
        x = torch.as_tensor(frames).float() / 255
        lab = None if labels is None else torch.as_tensor(model.label_stats.zscore(labels)).float()
        recon = model.network(x, labels=lab).frames.numpy()
    np.testing.assert_allclose(decoded, recon, atol=1e-4)


def test_unknown_model_class_is_refused():
    with pytest.raises(ConfigError, match=r"model\.model_class = 'ae'"):
        FitConfig.from_mapping({"model.model_class": "ae"})


def test_the_capability_table_and_the_objectives_name_the_same_classes():
    from psvae.family import FAMILY, SELECTIVE_KEYS
    from psvae.losses import OBJECTIVES
    from search.spec import STAGE_KINDS

    assert set(OBJECTIVES) == set(FAMILY)
    for kind in FAMILY.values():
        assert set(kind.default_plan) <= set(STAGE_KINDS), kind.name
        assert kind.reads <= SELECTIVE_KEYS
        assert not (kind.label_head and kind.projection), kind.name  # one way to predict labels
        assert kind.supervised or not (kind.label_head or kind.conditional or kind.projection), kind.name
