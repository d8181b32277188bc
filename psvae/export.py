"""The model bundle: a directory that is all a user needs to encode new videos.

    weights.pt        the network's state dict (tensors only; loads with weights_only=True)
    config.json       the fit config, frame shape and latent layout
    label_stats.json  label names, means and standard deviations (to return original units)

No pickled Python objects are written, so a bundle from someone else cannot run code when
loaded. :func:`load_model` returns a :class:`FittedModel` with ``encode`` and ``decode``.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Mapping
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
from psvae.paths import missing_reason
from psvae.provenance import collect as collect_provenance

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

    def __init__(
        self,
        network: PSVAE,
        config: FitConfig,
        label_stats: LabelStats,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        self.network = network.eval()
        self.config = config
        self.label_stats = label_stats
        self.provenance = provenance  # version, commit and data files it was fit on; None if unrecorded

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
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write a bundle to ``out_dir``, which must not exist yet. Written to a temporary
    directory beside it first and renamed, so a bundle is either whole or absent.

    ``provenance`` (from :func:`psvae.provenance.collect`, with the data files hashed once by
    the caller) is recorded in ``config.json``; without it the package version and source
    commit are recorded, and no data files."""
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
            "provenance": dict(provenance) if provenance is not None else collect_provenance(),
            **(extra or {}),
        }
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        (tmp / "label_stats.json").write_text(json.dumps(label_stats.to_dict(), indent=2) + "\n")
    return out_dir


def load_tensors(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` of tensors and plain containers only (``weights_only=True``): a file that
    carries any other pickled object is refused without running it. Every failure is a one-line
    UserError naming the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, KeyError, UnpicklingError, ...
        raise UserError(f"{path}: {describe_load_error(err)}") from None


def describe_load_error(err: BaseException) -> str:
    """What ``torch.load(weights_only=True)`` refused, in a few words."""
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in text:
        # torch names the refused callable ("Unsupported global: GLOBAL x.y" or "unsupported GLOBAL x.y")
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (
            f"holds a pickled Python object{what}, not only tensors; refused unread, since loading it "
            "could run code (psvae writes tensors only: use files from psvae fit or psvae export)"
        )
    first = text.strip().splitlines()[0][:160] if text.strip() else type(err).__name__
    return f"damaged, truncated or not a PyTorch tensor file ({type(err).__name__}: {first})"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else f"not valid JSON: {err}"
        raise UserError(f"{path}: damaged ({reason}); write the bundle again (psvae fit or export)") from None


def _integer(path: Path, key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"{path}: {key} = {value!r}: expected an integer of at least {low}")
    return value


def _numbers(path: Path, key: str, value: Any, n: int) -> list[float]:
    if (
        not isinstance(value, list)
        or len(value) != n
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise UserError(f"{path}: {key} = {str(value)[:80]}: expected a list of {n} finite numbers")
    return [float(v) for v in value]


def _label_stats(path: Path, raw: Any, n_labels: int) -> LabelStats:
    """The label statistics of a bundle, checked against the K labels its config declares."""
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping with names, mean and std")
    names = raw.get("names")
    if not isinstance(names, list) or len(names) != n_labels or not all(isinstance(n, str) for n in names):
        raise UserError(f"{path}: names = {str(names)[:80]}: expected {n_labels} label names")
    _numbers(path, "mean", raw.get("mean"), n_labels)
    std = _numbers(path, "std", raw.get("std"), n_labels)
    if not all(v > 0 for v in std):
        raise UserError(f"{path}: std = {std}: every standard deviation must be above 0")
    sessions = raw.get("session_mean", [])
    if not isinstance(sessions, list) or len(raw.get("session_std", [])) != len(sessions):
        raise UserError(f"{path}: session_mean and session_std must be lists of the same length")
    for i in range(len(sessions)):
        _numbers(path, f"session_mean[{i}]", sessions[i], n_labels)
        if not all(v > 0 for v in _numbers(path, f"session_std[{i}]", raw["session_std"][i], n_labels)):
            raise UserError(f"{path}: session_std[{i}]: every standard deviation must be above 0")
    return LabelStats.from_dict(raw)


def load_model(path: str | Path, device: str = "cpu") -> FittedModel:
    """Load a bundle written by ``psvae fit`` or ``psvae export``.

    A damaged or hostile bundle is a one-line UserError naming the file: a missing or truncated
    file, metadata that is not JSON or not of the expected shape, weights that carry pickled
    objects (refused unread) or that do not match the network the config describes."""
    path = Path(path)
    reason = missing_reason(path)
    if reason is not None:
        raise UserError(f"{path}: {reason}; expected a model bundle folder")
    for name in FILES:
        if not (path / name).is_file():
            raise UserError(f"{path}: not a model bundle ({name} is missing)")
    meta_path = path / "config.json"
    meta = _read_json(meta_path)
    if not isinstance(meta, dict):
        raise UserError(f"{meta_path}: expected a mapping, got {type(meta).__name__}")
    if meta.get("format") != BUNDLE_FORMAT or meta.get("version") != BUNDLE_VERSION:
        raise UserError(
            f"{meta_path}: format {meta.get('format')!r} version {meta.get('version')!r}, "
            f"expected {BUNDLE_FORMAT!r} version {BUNDLE_VERSION}"
        )
    shape = meta.get("frame_shape")
    if not isinstance(shape, list) or len(shape) != 3:
        raise UserError(f"{meta_path}: frame_shape = {shape!r}: expected [channels, height, width]")
    c, h, w = (_integer(meta_path, "frame_shape", v, 1) for v in shape)
    n_labels = _integer(meta_path, "n_labels", meta.get("n_labels"), 0)
    n_background = _integer(meta_path, "n_background", meta.get("n_background"), 0)
    if not isinstance(meta.get("config"), dict):
        given = str(meta.get("config"))[:80]
        raise UserError(f"{meta_path}: config = {given}: expected a mapping of fit-config keys")
    config = FitConfig.from_mapping(meta["config"], source=str(meta_path))
    stats = _label_stats(path / "label_stats.json", _read_json(path / "label_stats.json"), n_labels)
    try:
        network = PSVAE((c, h, w), n_labels, config.model, n_background=n_background)
    except ValueError as err:
        raise UserError(f"{meta_path}: frame_shape = {shape}: {err}") from None
    weights = path / "weights.pt"
    state = load_tensors(weights)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{weights}: not a state dict of tensors; write the bundle again")
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = (lines[1] if len(lines) > 1 else lines[0] if lines else "")[:200]
        raise UserError(
            f"{weights}: does not match the network that {meta_path.name} describes ({detail}); "
            "the two files come from different models"
        ) from None
    recorded = meta.get("provenance")
    return FittedModel(network.to(device), config, stats, recorded if isinstance(recorded, dict) else None)
