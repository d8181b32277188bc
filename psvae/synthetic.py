"""The built-in datasets: small behavioural-video-like recordings with known factors.

Two scenes (``SyntheticSpec.scene``), both in the user-facing HDF5 layout (``images``,
``labels``); the ground-truth factors are written beside the file (``<file>.factors.npz``),
never inside it, so nothing in the pipeline can depend on them. Every factor changes smoothly
within each trial, independently of the others.

``blob`` (the default): a soft-edged blob (the "animal") over a static textured background.

- ``x``, ``y``: the blob's centre in pixels. These are the K = 2 labels (with a little
  tracking noise, and about 1% missing as NaN, as a pose tracker would give).
- ``scale``: the blob's size, and ``brightness``: its intensity. These are the nuisance
  factors; both change how much light the blob gives, so they are hard to tell apart.

``limbs`` (the benchmark of ``docs/latents.md``): an animal seen from above, a static body
with a head, two limbs and a tail.

- ``left_x``, ``left_y``, ``right_x``, ``right_y``: the tips of the two limbs, in pixels: the
  K = 4 labels (noise and missing entries as above). The limbs are thick and long, so the
  labels drive large parts of the frame.
- ``jaw``: how far the mouth on the head is open (0 closed, 1 open), and ``tail``: the tail's
  swing angle in degrees. These are the nuisance factors: each is small and local (it changes
  about 1-3% of the pixels), lies where the limbs never go, and looks different from the other
  (a dark opening in the head against a bright bar swinging below the body).

Several sessions (:func:`write_sessions`, one file each) differ in a static background, as
recordings on different days or rigs differ in lighting and equipment: each session has its
own brightness level, stripe pattern and texture, while the animal behaves the same way. Their
ground truth adds the session index (``session`` in each ``.factors.npz``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from psvae.files import move_into_place, temp_beside

FACTOR_NAMES = ("x", "y", "scale", "brightness")  # the blob scene's factors
WRITTEN_BY = "psvae synthetic"  # the root attribute ``written_by`` of every file written here
LABEL_NAMES = ("x", "y")  # the blob scene's labels
LIMBS_FACTOR_NAMES = ("left_x", "left_y", "right_x", "right_y", "jaw", "tail")
LIMBS_LABEL_NAMES = ("left_x", "left_y", "right_x", "right_y")


SCENE_NAMES = ("blob", "limbs")


@dataclass(frozen=True)
class SyntheticSpec:
    n_trials: int = 40
    n_frames: int = 100  # per trial
    size: int = 64  # frames are size x size, one channel
    seed: int = 0
    label_noise: float = 0.3  # pixels
    missing_fraction: float = 0.01  # labels set to NaN
    scene: str = "blob"  # a key of SCENES

    def __post_init__(self) -> None:
        if self.scene not in SCENE_NAMES:
            from psvae.errors import UserError

            raise UserError(f"scene = {self.scene!r}: unknown; the scenes are {', '.join(SCENE_NAMES)}")


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


def scene_names(scene: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(factor names, label names) of ``scene``; the labels are the first factors."""
    if scene == "limbs":
        return LIMBS_FACTOR_NAMES, LIMBS_LABEL_NAMES
    return FACTOR_NAMES, LABEL_NAMES


def generate(spec: SyntheticSpec, background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 (n_trials, T, 1, S, S) and factors float32 (n_trials, T, F) of ``spec.scene``,
    in the order of :func:`scene_names`.

    ``background`` (S, S): a static background in place of the default one."""
    if spec.scene == "limbs":
        return _generate_limbs(spec, background)
    return _generate_blob(spec, background)


def _default_background(rng: np.random.Generator, s: int) -> np.ndarray:
    """A soft gradient and a faint fixed texture, (S, S)."""
    grid = np.arange(s, dtype=np.float32) + 0.5
    _, xx = np.meshgrid(grid, grid, indexing="ij")
    noise = rng.normal(0, 1, size=(s, s))
    texture = (noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1) + np.roll(noise, (1, 1), (0, 1))) / 4
    return (0.12 + 0.1 * (xx / s) + 0.03 * texture).astype(np.float32)


def _soft(signed_distance: np.ndarray, edge: float) -> np.ndarray:
    """Coverage in [0, 1] of a shape from the signed distance to its outline (negative inside)."""
    return (1.0 / (1.0 + np.exp(np.clip(signed_distance / edge, -50, 50)))).astype(np.float32)


def _capsule_distance(
    xx: np.ndarray, yy: np.ndarray, start: tuple[np.ndarray, np.ndarray], end: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Distance (n, t, S, S) of every pixel to the segments start -> end ((n, t) coordinates each)."""
    x0, y0 = (np.asarray(v, np.float32)[..., None, None] for v in start)
    x1, y1 = (np.asarray(v, np.float32)[..., None, None] for v in end)
    dx, dy = x1 - x0, y1 - y0
    along = np.clip(((xx - x0) * dx + (yy - y0) * dy) / np.maximum(dx * dx + dy * dy, 1e-6), 0.0, 1.0)
    return np.sqrt((xx - x0 - along * dx) ** 2 + (yy - y0 - along * dy) ** 2)


def _generate_limbs(spec: SyntheticSpec, background: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The limbs scene: frames (n_trials, T, 1, S, S) uint8 and factors (n_trials, T, 6).

    Parts are painted back to front, each hiding what lies under it: body and head (static),
    two limbs from the shoulders to their tips (the labels), the mouth (``jaw``) and the tail
    (``tail``). Geometry is in fractions of the frame size S, so the scene keeps its proportions
    at any size; at S = 64 a limb covers about 130 pixels and each nuisance part changes 1-3%
    of the frame between its extremes.
    """
    rng = np.random.default_rng(spec.seed)
    n, t, s = spec.n_trials, spec.n_frames, spec.size
    # limb tips (the labels): left tips in a box left of the body, right tips mirrored
    tip_x = 0.17 * s + 0.10 * s * _smooth_paths(rng, 2 * n, t).reshape(2, n, t)
    tip_y = 0.50 * s + 0.20 * s * _smooth_paths(rng, 2 * n, t).reshape(2, n, t)
    left_x, right_x = tip_x[0], s - tip_x[1]
    left_y, right_y = tip_y[0], tip_y[1]
    jaw = 0.5 + 0.5 * _smooth_paths(rng, n, t)  # 0 closed .. 1 open
    tail = 40.0 * _smooth_paths(rng, n, t)  # degrees from straight down
    factors = np.stack([left_x, left_y, right_x, right_y, jaw, tail], axis=-1).astype(np.float32)

    if background is None:
        background = _default_background(rng, s)
    frames = render_limbs(factors, background)
    frames = frames + rng.normal(0, 0.01, size=frames.shape).astype(np.float32)
    frames_u8 = np.clip(np.rint(frames * 255), 0, 255).astype(np.uint8)[:, :, None]
    return frames_u8, factors


def render_limbs(factors: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The noise-free frames (n, t, S, S) float32 of the limbs scene for factors (n, t, 6)
    over a static ``background`` (S, S)."""
    s = background.shape[0]
    n, t = factors.shape[:2]
    left_x, left_y, right_x, right_y, jaw, tail = (factors[..., i] for i in range(6))
    grid = np.arange(s, dtype=np.float32) + 0.5
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    edge = 0.012 * s  # about 0.8 pixel at 64 x 64: sharp but differentiable outlines
    frames = np.broadcast_to(background, (n, t, s, s)).astype(np.float32)

    def paint(coverage: np.ndarray, intensity: float) -> None:
        nonlocal frames
        frames = frames * (1 - coverage) + intensity * coverage

    centre = 0.5 * s
    body = np.sqrt(((xx - centre) / (0.15 * s)) ** 2 + ((yy - 0.52 * s) / (0.13 * s)) ** 2)
    paint(_soft((body - 1) * 0.13 * s, edge), 0.55)
    head_y, head_r = 0.25 * s, 0.14 * s
    head = np.sqrt((xx - centre) ** 2 + (yy - head_y) ** 2)
    paint(_soft(head - head_r, edge), 0.62)
    radius = 0.055 * s
    for shoulder_x, tx, ty in ((0.38 * s, left_x, left_y), (0.62 * s, right_x, right_y)):
        start = (np.full((n, t), shoulder_x), np.full((n, t), 0.50 * s))
        paint(_soft(_capsule_distance(xx, yy, start, (tx, ty)) - radius, edge), 0.85)
    # the mouth: a dark ellipse in the lower half of the head, as tall as the jaw is open
    mouth_h = (0.008 + 0.08 * jaw)[..., None, None] * s
    mouth = np.sqrt(((xx - centre) / (0.09 * s)) ** 2 + ((yy - (head_y + 0.035 * s)) / mouth_h) ** 2)
    paint(_soft((mouth - 1) * np.minimum(mouth_h, 0.09 * s), edge), 0.08)
    # the tail: a bar from the back of the body, swinging about straight down
    angle = np.deg2rad(tail)
    base_y, length = 0.64 * s, 0.21 * s
    tail_end = (centre + length * np.sin(angle), base_y + length * np.cos(angle))
    tail_start = (np.full((n, t), centre), np.full((n, t), base_y))
    paint(_soft(_capsule_distance(xx, yy, tail_start, tail_end) - 0.018 * s, edge), 0.9)

    return frames


def _generate_blob(spec: SyntheticSpec, background: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The blob scene: frames (n_trials, T, 1, S, S) uint8 and factors (n_trials, T, 4)."""
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


def draw(
    spec: SyntheticSpec, session: int | None = None, n_sessions: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames uint8 (n_trials, T, 1, S, S), labels float32 (n_trials, T, K) as a pose tracker
    would give them (noisy, some missing: NaN) and factors (n_trials, T, F) of one session."""
    background = None if session is None else session_background(spec.size, session, n_sessions)
    frames, factors = generate(spec, background)
    rng = np.random.default_rng([spec.seed, 1])
    k = len(scene_names(spec.scene)[1])
    labels = factors[..., :k] + rng.normal(0, spec.label_noise, size=factors[..., :k].shape)
    labels = labels.astype(np.float32)
    labels[rng.random(labels.shape) < spec.missing_fraction] = np.nan
    return frames, labels, factors


def session_spec(spec: SyntheticSpec, session: int) -> SyntheticSpec:
    """Session ``session``'s own random draws of ``spec``'s behaviour."""
    return SyntheticSpec(**{**spec.__dict__, "seed": spec.seed * 1000 + session})


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
    frames, labels, factors = draw(spec, session, n_sessions)
    factor_names, label_names = scene_names(spec.scene)
    names = [f"trial_{i:04d}" for i in range(spec.n_trials)]

    tmp = temp_beside(path)
    with h5py.File(tmp, "w") as f:
        f.attrs["written_by"] = WRITTEN_BY
        images, label_group = f.create_group("images"), f.create_group("labels")
        label_group.attrs["names"] = list(label_names)
        for i, name in enumerate(names):
            images.create_dataset(name, data=frames[i])
            label_group.create_dataset(name, data=labels[i])
    fpath = factors_path(path)
    ftmp = temp_beside(fpath, suffix=".npz")
    arrays: dict[str, np.ndarray] = {"names": np.array(factor_names)}
    if session is not None:
        arrays["session"] = np.array(session)
    arrays.update({n: factors[i] for i, n in enumerate(names)})
    np.savez(ftmp, **arrays)  # type: ignore[arg-type]
    move_into_place(ftmp, fpath)
    move_into_place(tmp, path)  # last: a data file always has its factors beside it
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
        write(path, session_spec(spec, i), i, n_sessions)
    return paths


def read_factors(data_path: str | Path) -> dict[str, np.ndarray]:
    """The ground truth of a synthetic file: trial name -> factors (T, F), in the order of
    :func:`read_factor_names`."""
    with np.load(factors_path(data_path), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files if k not in ("names", "session")}


def read_factor_names(data_path: str | Path) -> tuple[str, ...]:
    """The names of the factors of a synthetic file, in column order."""
    with np.load(factors_path(data_path), allow_pickle=False) as npz:
        return tuple(str(n) for n in npz["names"])


def read_session(data_path: str | Path) -> int | None:
    """The session index of a file written by :func:`write_sessions` (None for a single file)."""
    with np.load(factors_path(data_path), allow_pickle=False) as npz:
        return int(npz["session"]) if "session" in npz.files else None
