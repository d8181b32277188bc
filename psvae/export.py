"""The model bundle: a directory that is all a user needs to encode new videos.

    weights.pt        the network's state dict (tensors only; loads with weights_only=True)
    config.json       the fit config, frame shape and latent layout
    label_stats.json  label names, means and standard deviations (to return original units)

No pickled Python objects are written, so a bundle from someone else cannot run code when
loaded. :func:`load_model` returns a :class:`FittedModel` with ``encode`` and ``decode``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psvae.config import FitConfig
from psvae.data import LabelStats
from psvae.errors import UserError
from psvae.files import staged_dir
from psvae.model import PSVAE

BUNDLE_FORMAT = "psvae-bundle"
BUNDLE_VERSION = 1
FILES = ("weights.pt", "config.json", "label_stats.json")


@dataclass(frozen=True)
class Encoded:
    """Latents and label predictions of T frames (posterior means; no sampling)."""

    supervised: np.ndarray  # (T, K); (T, 0) for vae and beta-tcvae
    background: np.ndarray  # (T, B); B = 0 except for the msps-vae
    unsupervised: np.ndarray  # (T, U)
    labels_z: np.ndarray  # (T, K) predicted labels, z-scored units
    labels: np.ndarray  # (T, K) predicted labels, original units

    @property
    def latents(self) -> np.ndarray:
        """All latents (T, L) in the model's order [supervised | background | unsupervised]."""
        return np.concatenate([self.supervised, self.background, self.unsupervised], axis=1)


class FittedModel:
    """A trained network with its label statistics, on the CPU unless moved."""

    def __init__(self, network: PSVAE, config: FitConfig, label_stats: LabelStats) -> None:
        self.network = network.eval()
        self.config = config
        self.label_stats = label_stats

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return self.network.frame_shape

    @torch.no_grad()
    def encode(
        self,
        frames: np.ndarray | torch.Tensor,
        batch_size: int = 256,
        labels: np.ndarray | None = None,
        session: int | None = None,
    ) -> Encoded:
        """frames: uint8 (T, C, H, W) or (C, H, W), values 0-255.

        ``labels`` (T, K) in original units: the frames' labels, which a conditional autoencoder
        (``cond-ae``) needs as input. ``session``: for a model fit with per-session label
        statistics (msps-vae), the index of the training session whose statistics convert labels;
        without it the statistics of all sessions together are used. A class that predicts no
        labels (vae, beta-tcvae) returns NaN labels and no supervised latents.
        """
        x = torch.as_tensor(frames)
        if x.dtype != torch.uint8:
            raise ValueError(f"frames must be uint8 (0-255), got {x.dtype}")
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != self.frame_shape:
            raise ValueError(
                f"frames of shape {tuple(x.shape[1:])}, but the model expects {self.frame_shape}"
            )
        net = self.network
        device = next(net.parameters()).device
        labels_in: torch.Tensor | None = None
        if net.kind.conditional:
            if labels is None:
                raise ValueError("a conditional autoencoder (cond-ae) encodes frames with their labels")
            z_labels = np.nan_to_num(self.label_stats.zscore(np.asarray(labels, np.float64), session))
            labels_in = torch.as_tensor(z_labels, dtype=torch.float32, device=device)
        chunks = []
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start : start + batch_size].to(device).float().div_(255.0)
            mu, _ = net.encoder(chunk)
            part = None if labels_in is None else labels_in[start : start + batch_size]
            chunks.append(net.to_layout(mu, part))
        layout = torch.cat(chunks) if chunks else torch.zeros(0, net.n_latents, device=device)
        z_s, z_b, z_u = net.split_latents(layout)
        if net.kind.label_head:
            labels_z = net.label_head(z_s).cpu().numpy()
        elif net.n_supervised:  # cond-ae: its input labels; cond-ae-msp: P z
            labels_z = z_s.cpu().numpy()
        else:
            labels_z = np.full((len(layout), net.n_labels), np.nan, np.float32)
        return Encoded(
            supervised=z_s.cpu().numpy(),
            background=z_b.cpu().numpy(),
            unsupervised=z_u.cpu().numpy(),
            labels_z=labels_z,
            labels=self.label_stats.unzscore(labels_z, session),
        )

    @torch.no_grad()
    def decode(self, latents: np.ndarray | torch.Tensor) -> np.ndarray:
        """latents (T, L) or (L,) in the order [supervised | background | unsupervised] ->
        frames float32 (T, C, H, W) in [0, 1]. For a conditional autoencoder the supervised
        block is the z-scored labels; for cond-ae-msp it is the predicted labels P z."""
        z = torch.as_tensor(latents, dtype=torch.float32)
        if z.ndim == 1:
            z = z.unsqueeze(0)
        if z.shape[1] != self.network.n_latents:
            raise ValueError(f"expected {self.network.n_latents} latents per frame, got {z.shape[1]}")
        device = next(self.network.parameters()).device
        return self.network.decode_layout(z.to(device)).cpu().numpy()


def save_bundle(
    out_dir: str | Path,
    network: PSVAE,
    config: FitConfig,
    label_stats: LabelStats,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle to ``out_dir``, which must not exist yet. Written to a temporary
    directory beside it first and renamed, so a bundle is either whole or absent."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise UserError(f"{out_dir}: already exists; choose another directory")
    with staged_dir(out_dir, kind="model bundle") as tmp:
        state = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
        torch.save(state, tmp / "weights.pt")
        meta = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "frame_shape": list(network.frame_shape),
            "model_class": network.model_class,
            "n_labels": network.n_labels,
            "n_background": network.n_background,
            "n_unsupervised": network.n_unsupervised,
            "config": config.flat(),
            **(extra or {}),
        }
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        (tmp / "label_stats.json").write_text(json.dumps(label_stats.to_dict(), indent=2) + "\n")
    return out_dir


def load_model(path: str | Path, device: str = "cpu") -> FittedModel:
    """Load a bundle written by ``psvae fit`` or ``psvae export``."""
    path = Path(path)
    for name in FILES:
        if not (path / name).is_file():
            raise UserError(f"{path}: not a model bundle ({name} is missing)")
    try:
        meta = json.loads((path / "config.json").read_text())
        stats = LabelStats.from_dict(json.loads((path / "label_stats.json").read_text()))
    except (json.JSONDecodeError, KeyError) as err:
        raise UserError(f"{path}: unreadable bundle metadata ({err})") from None
    if meta.get("format") != BUNDLE_FORMAT or meta.get("version") != BUNDLE_VERSION:
        raise UserError(
            f"{path / 'config.json'}: format {meta.get('format')!r} version {meta.get('version')!r}, "
            f"expected {BUNDLE_FORMAT!r} version {BUNDLE_VERSION}"
        )
    config = FitConfig.from_mapping(meta["config"], source=str(path / "config.json"))
    c, h, w = meta["frame_shape"]
    network = PSVAE(
        (int(c), int(h), int(w)),
        int(meta["n_labels"]),
        config.model,
        n_background=int(meta["n_background"]),
    )
    state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    return FittedModel(network.to(device), config, stats)
