"""The built-in dataset: a small behavioural-video-like recording with known factors.

Each frame shows a soft-edged blob (the "animal") over a static textured background. Four
factors change smoothly within each trial, independently of each other:

- ``x``, ``y``: the blob's centre in pixels. These are the K = 2 labels (with a little
  tracking noise, and about 1% missing as NaN, as a pose tracker would give).
- ``scale``: the blob's size, and ``brightness``: its intensity. These are the nuisance
  factors that the unsupervised latents should find.

The file uses the user-facing HDF5 layout (``images``, ``labels``); the ground-truth factors
are written beside it (``<file>.factors.npz``), never inside it, so nothing in the pipeline
can depend on them.

Several sessions (:func:`write_sessions`, one file each) differ in a static background, as
recordings on different days or rigs differ in lighting and equipment: each session has its
own brightness level, stripe pattern and texture, while the animal behaves the same way. Their
ground truth adds the session index (``session`` in each ``.factors.npz``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

FACTOR_NAMES = ("x", "y", "scale", "brightness")
WRITTEN_BY = "psvae synthetic"  # the root attribute ``written_by`` of every file written here
LABEL_NAMES = ("x", "y")


@dataclass(frozen=True)
class SyntheticSpec:
    n_trials: int = 40
    n_frames: int = 100  # per trial
    size: int = 64  # frames are size x size, one channel
    seed: int = 0
    label_noise: float = 0.3  # pixels
    missing_fraction: float = 0.01  # labels set to NaN


def factors_path(data_path: str | Path) -> Path:
    """Where the ground-truth factors of a synthetic file are kept."""
    p = Path(data_path)
    return p.with_name(p.name + ".factors.npz")


def _smooth_paths(rng: np.random.Generator, n_paths: int, n_frames: int) -> np.ndarray:
    """(n_paths, n_frames) smooth curves in [-1, 1]: sums of three random slow sinusoids."""
    t = np.linspace(0.0, 1.0, n_frames)
    freq = rng.uniform(0.3, 2.5, size=(n_paths, 3, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n_paths, 3, 1))
    amp = rng.uniform(0.5, 1.0, size=(n_paths, 3, 1))
    curves = (amp * np.sin(2 * np.pi * freq * t + phase)).sum(1)
    low, high = curves.min(1, keepdims=True), curves.max(1, keepdims=True)
    # map each trial's curve onto a random sub-range of [-1, 1] so trials differ in extent
    span = rng.uniform(0.8, 1.0, size=(n_paths, 1))
    centre = rng.uniform(-(1 - span), 1 - span)
    return centre + span * (2 * (curves - low) / (high - low) - 1)


def session_background(size: int, session: int, n_sessions: int) -> np.ndarray:
    """The static background (S, S) of one of ``n_sessions`` sessions: its own brightness level
    (as lighting differs between days and rigs), stripe pattern (orientation and period) and
    smooth random texture (as equipment differs)."""
    grid = np.arange(size, dtype=np.float32) + 0.5
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    angle = np.pi * session / n_sessions
    period = size / (2.0 + 1.5 * (session % 3))
    phase = (np.cos(angle) * xx + np.sin(angle) * yy) / period
    stripes = np.sin(2 * np.pi * phase)
    noise = np.random.default_rng([7, session]).normal(size=(size, size))
    for _ in range(3):  # a few box blurs make the texture smooth
        noise = (
            noise
            + np.roll(noise, 1, 0)
            + np.roll(noise, -1, 0)
            + np.roll(noise, 1, 1)
            + np.roll(noise, -1, 1)
        ) / 5
    texture = (noise - noise.mean()) / noise.std()
    level = 0.1 + 0.2 * session / max(n_sessions - 1, 1)
    return (level + 0.1 * stripes + 0.05 * texture).astype(np.float32)


def generate(spec: SyntheticSpec, background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 (n_trials, T, 1, S, S) and factors float32 (n_trials, T, 4).

    ``background`` (S, S): a static background in place of the default one."""
    rng = np.random.default_rng(spec.seed)
    n, t, s = spec.n_trials, spec.n_frames, spec.size
    # factors: x, y in pixels; scale in [0.7, 1.3]; brightness in [0.45, 0.95]
    margin = 0.22 * s
    x = s / 2 + (s / 2 - margin) * _smooth_paths(rng, n, t)
    y = s / 2 + (s / 2 - margin) * _smooth_paths(rng, n, t)
    scale = 1.0 + 0.3 * _smooth_paths(rng, n, t)
    brightness = 0.7 + 0.25 * _smooth_paths(rng, n, t)
    factors = np.stack([x, y, scale, brightness], axis=-1).astype(np.float32)

    # static background: a soft gradient and a faint fixed texture
    grid = np.arange(s, dtype=np.float32) + 0.5
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    noise = rng.normal(0, 1, size=(s, s))
    texture = (noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1) + np.roll(noise, (1, 1), (0, 1))) / 4
    session_background_given = background is not None
    if background is None:
        background = (0.12 + 0.1 * (xx / s) + 0.03 * texture).astype(np.float32)

    radius = 0.13 * s * factors[..., 2]  # (n, t)
    d = np.sqrt(
        (xx - factors[..., 0, None, None]) ** 2 + (yy - factors[..., 1, None, None]) ** 2
    )  # (n, t, s, s)
    blob = 1.0 / (1.0 + np.exp((d - radius[..., None, None]) / (0.06 * s)))
    if session_background_given:
        # the animal hides the background where it is, so its appearance is the same in every
        # session and only the background tells sessions apart
        frames = background * (1 - blob) + factors[..., 3, None, None] * blob
    else:
        frames = background + factors[..., 3, None, None] * blob
    frames += rng.normal(0, 0.01, size=frames.shape).astype(np.float32)
    frames_u8 = np.clip(np.rint(frames * 255), 0, 255).astype(np.uint8)[:, :, None]
    return frames_u8, factors


def write(
    path: str | Path,
    spec: SyntheticSpec = SyntheticSpec(),
    session: int | None = None,
    n_sessions: int = 1,
) -> Path:
    """Write the dataset to ``path`` (HDF5) and its factors beside it; returns ``path``.

    With ``session``, the file is that session of ``n_sessions`` (its own background) and the
    factors file records the session index. Both files are written to temporary names first
    and renamed, so an interrupted run leaves nothing half-written.
    """
    path = Path(path)
    background = None if session is None else session_background(spec.size, session, n_sessions)
    frames, factors = generate(spec, background)
    rng = np.random.default_rng([spec.seed, 1])
    labels = factors[..., :2] + rng.normal(0, spec.label_noise, size=factors[..., :2].shape)
    labels = labels.astype(np.float32)
    labels[rng.random(labels.shape) < spec.missing_fraction] = np.nan
    names = [f"trial_{i:04d}" for i in range(spec.n_trials)]

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["written_by"] = WRITTEN_BY
        images, label_group = f.create_group("images"), f.create_group("labels")
        label_group.attrs["names"] = list(LABEL_NAMES)
        for i, name in enumerate(names):
            images.create_dataset(name, data=frames[i])
            label_group.create_dataset(name, data=labels[i])
    fpath = factors_path(path)
    ftmp = fpath.with_name(f".{fpath.name}.{os.getpid()}.tmp.npz")
    arrays: dict[str, np.ndarray] = {"names": np.array(FACTOR_NAMES)}
    if session is not None:
        arrays["session"] = np.array(session)
    arrays.update({n: factors[i] for i, n in enumerate(names)})
    np.savez(ftmp, **arrays)  # type: ignore[arg-type]
    os.replace(ftmp, fpath)
    os.replace(tmp, path)
    return path


def is_synthetic(path: str | Path) -> bool:
    """Whether ``path`` is a data file written by :func:`write` (its ``written_by`` attribute)."""
    try:
        with h5py.File(path, "r") as f:
            return bool(f.attrs.get("written_by") == WRITTEN_BY)
    except (OSError, ValueError):
        return False


def check_overwrite(out: str | Path, n_sessions: int) -> None:
    """Refuse ``--force`` over anything :func:`write` or :func:`write_sessions` did not write:
    a data file is replaced only if it carries our ``written_by`` attribute; a sessions folder
    only if it holds nothing but session files of ours and their factors."""
    from psvae.errors import UserError

    out = Path(out)
    if out.is_symlink():
        raise UserError(f"--out {out}: is a symbolic link; give a file or folder of its own")
    if n_sessions <= 1:
        beside = factors_path(out)
        if out.exists() and not (out.is_file() and is_synthetic(out)):
            raise UserError(
                f"--out {out}: exists and is not a file psvae synthetic wrote; it is never replaced"
            )
        if beside.exists() and not out.exists():
            raise UserError(f"--out {out}: {beside.name} exists beside it and would be replaced")
        return
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder; it is never replaced")
    ours = {p.name for p in session_paths(out, 99)} | {factors_path(p).name for p in session_paths(out, 99)}
    for entry in out.iterdir():
        if entry.name not in ours or (entry.suffix == ".h5" and not is_synthetic(entry)):
            raise UserError(
                f"--out {out}: holds {entry.name}, which psvae synthetic did not write; choose another folder"
            )


def session_paths(out_dir: str | Path, n_sessions: int) -> list[Path]:
    """The files :func:`write_sessions` writes: ``session_00.h5``, ``session_01.h5``, ..."""
    return [Path(out_dir) / f"session_{i:02d}.h5" for i in range(n_sessions)]


def write_sessions(out_dir: str | Path, n_sessions: int, spec: SyntheticSpec = SyntheticSpec()) -> list[Path]:
    """Write ``n_sessions`` sessions into ``out_dir`` (created), one HDF5 file each with its
    factors beside it. Sessions share the behaviour's statistics (each its own random draws)
    and differ in their static background. Returns the data files in session order."""
    if n_sessions < 1:
        raise ValueError(f"n_sessions = {n_sessions}: must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = session_paths(out, n_sessions)
    for i, path in enumerate(paths):
        write(path, SyntheticSpec(**{**spec.__dict__, "seed": spec.seed * 1000 + i}), i, n_sessions)
    return paths


def read_factors(data_path: str | Path) -> dict[str, np.ndarray]:
    """The ground truth of a synthetic file: trial name -> factors (T, 4) in FACTOR_NAMES order."""
    with np.load(factors_path(data_path), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files if k not in ("names", "session")}


def read_session(data_path: str | Path) -> int | None:
    """The session index of a file written by :func:`write_sessions` (None for a single file)."""
    with np.load(factors_path(data_path), allow_pickle=False) as npz:
        return int(npz["session"]) if "session" in npz.files else None
