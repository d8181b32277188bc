"""What the report computes with the chosen model: label reconstructions on the test trials,
latent traversals and the traversal movie (``docs/model.md`` §8), and the images that show them.

Everything here is numpy in, numpy or bytes out; the figures are drawn in ``search.report.figures``.
Images are encoded as PNG with zlib alone, so the page needs no imaging library; the movie's GIF
file is written only when Pillow is importable.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from psvae.data import natural_key, split_trials
from psvae.export import FittedModel

N_TRAVERSAL_POINTS = 7  # frames per traversal row
N_MOVIE_POINTS = 12  # frames from min to max in the movie (then back)
SUPERVISED_PERCENTILES = (5.0, 95.0)  # of the z-scored labels
UNSUPERVISED_PERCENTILES = (15.0, 85.0)  # of each latent's posterior means
SEPARATOR = 2  # pixels between tiles of a composed image


@dataclass(frozen=True)
class TestTrial:
    """One held-out trial of a session file: frames and labels as stored, predictions from the model."""

    path: str
    name: str
    frames: np.ndarray  # (T, C, H, W) uint8
    labels: np.ndarray  # (T, K) original units; NaN where missing or masked
    predicted: np.ndarray  # (T, K) original units
    latents: np.ndarray  # (T, L) posterior means, [supervised | background | unsupervised]


@dataclass(frozen=True)
class Traversal:
    """One latent dimension varied between two percentiles, all other dimensions at the base frame's."""

    name: str  # the latent's column name in latents.parquet (z_s_x, z_u_0, ...)
    description: str  # what was varied and over which range, for a row title
    values: np.ndarray  # (N,) the varied quantity (label in original units, or the latent)
    frames: np.ndarray  # (N, C, H, W) decoded, float in [0, 1]


def resolve_data_path(path: str, run_dir: Path) -> Path | None:
    """A session file of the spec, or its copy under ``RUN_DIR/inputs/`` when the run was moved."""
    candidates = [Path(path), run_dir / "inputs" / Path(path).name]
    return next((p for p in candidates if p.is_file()), None)


def read_test_trials(paths: list[Path], model: FittedModel) -> list[TestTrial]:
    """The test trials of every file (the split of the model's own fit config), encoded."""
    split, seed = model.config.data.split, model.config.data.split_seed
    out = []
    for path in paths:
        with h5py.File(path, "r") as f:
            names = sorted(f["images"].keys(), key=natural_key)
            assignment = split_trials(len(names), split, seed)
            for name, which in zip(names, assignment, strict=True):
                if which != "test":
                    continue
                frames = f["images"][name][()]
                labels = np.asarray(f["labels"][name][()], dtype=np.float64)
                if "labels_masks" in f:
                    labels[f["labels_masks"][name][()] == 0] = np.nan
                enc = model.encode(frames, labels=labels)  # a cond-ae encodes with its labels
                out.append(TestTrial(str(path), name, frames, labels, enc.labels, enc.latents))
    return out


def run_test_trials(run_path: Path, data: list[str], model: FittedModel) -> list[TestTrial]:
    """The test trials of a run's session files (``data`` as its spec names them, found where
    :func:`resolve_data_path` looks) for ``model``; a UserError says which file is missing or
    that there are none."""
    from psvae.errors import UserError

    paths = [resolve_data_path(p, run_path) for p in data]
    missing = [p for p, found in zip(data, paths, strict=True) if found is None]
    if missing:
        raise UserError(f"{missing[0]}: session file not found (nor under {run_path / 'inputs'})")
    trials = read_test_trials([p for p in paths if p is not None], model)
    if not trials:
        raise UserError("the data has no test trials")
    return trials


def r2(true: np.ndarray, predicted: np.ndarray) -> float:
    """R² of one label over its valid (finite) entries; NaN when there are fewer than two."""
    valid = np.isfinite(true) & np.isfinite(predicted)
    t, p = true[valid], predicted[valid]
    if len(t) < 2 or not np.var(t) > 0:
        return float("nan")
    return float(1.0 - np.sum((t - p) ** 2) / np.sum((t - t.mean()) ** 2))


def latent_names(model: FittedModel) -> list[str]:
    """Column names of the latents in the model's order, as in ``latents.parquet``."""
    net = model.network
    return (
        [f"z_s_{n}" for n in model.label_stats.names][: net.n_supervised]
        + [f"z_b_{i}" for i in range(net.n_background)]
        + [f"z_u_{i}" for i in range(net.n_unsupervised)]
    )


def _percentiles(bounds: tuple[float, float]) -> str:
    return f"{bounds[0]:g}th to {bounds[1]:g}th percentile"


def _ranges(model: FittedModel, trials: list[TestTrial]) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """For every latent: (the latent's values along its traversal, the values shown, a description)."""
    latents = np.concatenate([t.latents for t in trials])
    labels_z = model.label_stats.zscore(np.concatenate([t.labels for t in trials]))
    n_labels = model.network.n_supervised  # 0 for the classes without supervised latents
    head = model.network.label_head
    # ps-vae, msps-vae: a label is an affine function of its latent; the conditional classes
    # hold the z-scored label itself in that place
    through_head = model.network.kind.label_head
    out = []
    steps = np.linspace(0.0, 1.0, N_MOVIE_POINTS * 4 + 1)  # fine grid; rows and movie subsample it
    for d in range(latents.shape[1]):
        if d < n_labels:
            column = labels_z[:, d][np.isfinite(labels_z[:, d])]
            low, high = np.percentile(column, SUPERVISED_PERCENTILES)
            label_z = low + steps * (high - low)
            along = label_z
            if through_head:  # the supervised latent that predicts that label
                weight, bias = float(head.weight[d].detach()), float(head.bias[d].detach())
                along = (label_z - bias) / weight
            shown = label_z * model.label_stats.std[d] + model.label_stats.mean[d]
            label = model.label_stats.names[d]
            span = _percentiles(SUPERVISED_PERCENTILES)
            text = f"label {label} from {shown[0]:.3g} to {shown[-1]:.3g} ({span})"
        else:
            low, high = np.percentile(latents[:, d], UNSUPERVISED_PERCENTILES)
            along = low + steps * (high - low)
            shown = along
            text = f"from {low:.3g} to {high:.3g} ({_percentiles(UNSUPERVISED_PERCENTILES)})"
        out.append((along, shown, text))
    return out


def base_frame(trials: list[TestTrial]) -> tuple[TestTrial, int]:
    """The frame the traversals start from: the middle frame of the first test trial."""
    trial = trials[0]
    return trial, len(trial.frames) // 2


def traversals(
    model: FittedModel, trials: list[TestTrial], n_points: int = N_TRAVERSAL_POINTS
) -> list[Traversal]:
    """One row per latent dimension, decoded from the base frame's latents with that dimension varied."""
    trial, index = base_frame(trials)
    base = trial.latents[index]
    out = []
    for d, (name, (along, shown, text)) in enumerate(
        zip(latent_names(model), _ranges(model, trials), strict=True)
    ):
        pick = np.linspace(0, len(along) - 1, n_points).round().astype(int)
        z = np.repeat(base[None, :], n_points, axis=0)
        z[:, d] = along[pick]
        out.append(Traversal(name, text, shown[pick], model.decode(z)))
    return out


def movie_frames(model: FittedModel, trials: list[TestTrial], n_points: int = N_MOVIE_POINTS) -> np.ndarray:
    """(S, L, C, H, W): at each step every dimension's own traversal, min -> max -> min."""
    trial, index = base_frame(trials)
    base = trial.latents[index]
    ranges = _ranges(model, trials)
    pick = np.linspace(0, len(ranges[0][0]) - 1, n_points).round().astype(int)
    path = np.concatenate([pick, pick[-2:0:-1]])  # min -> max -> min, endpoints once
    per_dim = []
    for d, (along, _, _) in enumerate(ranges):
        z = np.repeat(base[None, :], len(path), axis=0)
        z[:, d] = along[path]
        per_dim.append(model.decode(z))  # (S, C, H, W)
    return np.stack(per_dim, axis=1)


# -- images ---------------------------------------------------------------------------------
def to_rgb(frames: np.ndarray) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (H, W', 3) uint8: grey for one channel, colour for three,
    other channel counts side by side in grey."""
    frames = np.clip(frames, 0.0, 1.0)
    if frames.shape[0] == 3:
        image = frames.transpose(1, 2, 0)
    else:
        image = np.concatenate(list(frames), axis=1)[..., None].repeat(3, axis=2)
    return np.rint(image * 255).astype(np.uint8)


def difference(frame: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(C, H, W) frames -> (H, W') their difference, laid out as ``to_rgb`` lays out the frame
    (the mean over colour channels; other channels side by side)."""
    delta = frame - reference
    return delta.mean(axis=0) if delta.shape[0] == 3 else np.concatenate(list(delta), axis=1)


DIVERGING = np.array([[33, 102, 172], [247, 247, 247], [178, 24, 43]], dtype=np.float64)  # blue, white, red


def diverging_rgb(values: np.ndarray, scale: float) -> np.ndarray:
    """(H, W) values in [-scale, scale] -> (H, W, 3) uint8, blue (negative) - white - red (positive)."""
    t = np.clip(values / scale, -1.0, 1.0) if scale > 0 else np.zeros_like(values)
    low = t < 0
    a = np.abs(t)[..., None]
    colour = np.where(
        low[..., None],
        DIVERGING[1] + a * (DIVERGING[0] - DIVERGING[1]),
        DIVERGING[1] + a * (DIVERGING[2] - DIVERGING[1]),
    )
    return np.rint(colour).astype(np.uint8)


def tile(images: list[np.ndarray], n_cols: int | None = None, background: int = 255) -> np.ndarray:
    """Equal-sized (H, W, 3) uint8 images in a grid with SEPARATOR pixels between them."""
    n_cols = n_cols or len(images)
    n_rows = -(-len(images) // n_cols)
    h, w = images[0].shape[:2]
    out = np.full(
        (n_rows * h + (n_rows - 1) * SEPARATOR, n_cols * w + (n_cols - 1) * SEPARATOR, 3),
        background,
        np.uint8,
    )
    for i, image in enumerate(images):
        r, c = divmod(i, n_cols)
        out[r * (h + SEPARATOR) : r * (h + SEPARATOR) + h, c * (w + SEPARATOR) : c * (w + SEPARATOR) + w] = (
            image
        )
    return out


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement, so small frames stay sharp in every viewer."""
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


def png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 as a PNG file."""
    h, w, _ = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(h))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def write_gif(images: list[np.ndarray], path: Path, frame_ms: int) -> bool:
    """Write an animated GIF when Pillow is importable; returns whether it was written."""
    try:
        from PIL import Image
    except ImportError:
        return False
    frames: list[Any] = [Image.fromarray(image) for image in images]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return True
