"""Reading and checking session files in the BehaveNet HDF5 layout (``docs/model.md`` §1), without
PyTorch: what a search's checks and refusals need, in a fraction of a second.

One file per session::

    images/trial_0000        uint8 (T, C, H, W)
    labels/trial_0000        float (T, K), NaN = missing      (required to fit)
    labels_masks/trial_0000  0/1 (T, K), 0 = ignore           (optional)
    masks/trial_0000         0/1 (T, C, H, W), 0 = ignore     (optional)

Every file is validated before any frame is read, with errors that name the file, dataset and
value. Trials, never single frames, are split into train, validation and test sets, in blocks
placed by a seeded RNG. ``psvae.data`` holds the frames as tensors for a fit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from psvae.config import parse_split
from psvae.errors import DataError
from psvae.paths import missing_reason
from psvae.thresholds import MIN_FRAME_SIZE

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class LabelStats:
    """Per-column statistics used to z-score labels; they travel with the model."""

    names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # when labels are z-scored per session (msps-vae): each session's statistics, in file order;
    # ``mean``/``std`` are then those of all sessions' training frames together
    session_mean: tuple[tuple[float, ...], ...] = ()
    session_std: tuple[tuple[float, ...], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"names": list(self.names), "mean": list(self.mean), "std": list(self.std)}
        if self.session_mean:
            d["session_mean"] = [list(m) for m in self.session_mean]
            d["session_std"] = [list(s) for s in self.session_std]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelStats:
        return cls(
            tuple(d["names"]),
            tuple(map(float, d["mean"])),
            tuple(map(float, d["std"])),
            tuple(tuple(map(float, m)) for m in d.get("session_mean", [])),
            tuple(tuple(map(float, s)) for s in d.get("session_std", [])),
        )

    def _stats(self, session: int | None) -> tuple[np.ndarray, np.ndarray]:
        if session is None or not self.session_mean:
            return np.asarray(self.mean), np.asarray(self.std)
        return np.asarray(self.session_mean[session]), np.asarray(self.session_std[session])

    def zscore(self, labels: np.ndarray, session: int | None = None) -> np.ndarray:
        mean, std = self._stats(session)
        return (labels - mean) / std

    def unzscore(self, labels: np.ndarray, session: int | None = None) -> np.ndarray:
        mean, std = self._stats(session)
        return labels * std + mean


@dataclass(frozen=True)
class Trial:
    path: str
    name: str
    session: int
    start: int  # first frame in the in-memory arrays
    stop: int
    split: str  # train, val, test or gap


def natural_key(name: str) -> list[int | str]:
    """Sort ``trial_2`` before ``trial_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def split_trials(n_trials: int, split: str, seed: int) -> list[str]:
    """Assign each trial to train, val, test or gap.

    Trials are cut into consecutive blocks laid out as ``train, gap, val, gap, test, gap``
    (``split`` gives the counts); each block is rotated by a seeded random offset, so held-out
    trials are spread over the session and placed differently for each seed. Trials left over
    after the last whole block are used for training. Raises ValueError if there is not even
    one whole block.
    """
    n_train, n_val, n_test, n_gap = parse_split(split)
    block = (
        ["train"] * n_train
        + ["gap"] * n_gap
        + ["val"] * n_val
        + ["gap"] * n_gap
        + ["test"] * n_test
        + ["gap"] * n_gap
    )
    n_blocks = n_trials // len(block)
    if n_blocks == 0:
        raise ValueError(f"{n_trials} trials, but split {split!r} needs at least {len(block)}")
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for _ in range(n_blocks):
        shift = int(rng.integers(len(block)))
        out.extend(block[shift:] + block[:shift])
    out.extend(["train"] * (n_trials - len(out)))
    return out


@dataclass(frozen=True)
class _TrialInfo:
    name: str
    n_frames: int


@dataclass(frozen=True)
class _FileInfo:
    path: str
    trials: tuple[_TrialInfo, ...]
    frame_shape: tuple[int, int, int]
    n_labels: int  # 0 when the file has no labels
    label_names: tuple[str, ...]
    has_label_masks: bool
    has_masks: bool


def _open(path: str) -> h5py.File:
    p = Path(path)
    reason = missing_reason(p)
    if reason is not None:
        raise DataError(f"{path}: {reason}")
    if p.is_dir() or not h5py.is_hdf5(p):
        raise DataError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(p, "r")
    except OSError as err:
        raise DataError(f"{path}: cannot be opened as HDF5 ({err})") from None


def _group(f: h5py.File, path: str, name: str, required: bool) -> h5py.Group | None:
    if name not in f:
        if required:
            raise DataError(f"{path}: no {name!r} group (expected {name}/trial_0000, ...)")
        return None
    group = f[name]
    if not isinstance(group, h5py.Group):
        raise DataError(f"{path}: {name!r} is a dataset, expected a group of per-trial datasets")
    return group


def _same_trials(path: str, images: h5py.Group, other: h5py.Group, name: str) -> None:
    a, b = set(images.keys()), set(other.keys())
    if a != b:
        only_images = sorted(a - b, key=natural_key)
        only_other = sorted(b - a, key=natural_key)
        what = (
            f"{only_images[0]} is in images but not in {name}"
            if only_images
            else f"{only_other[0]} is in {name} but not in images"
        )
        raise DataError(f"{path}: trial names differ between images and {name}: {what}")


def _scan(path: str, require_labels: bool) -> _FileInfo:
    """Validate one file's layout from metadata only (no frames are read)."""
    with _open(path) as f:
        images = _group(f, path, "images", required=True)
        assert images is not None
        names = sorted(images.keys(), key=natural_key)
        if not names:
            raise DataError(f"{path}: the 'images' group holds no trials")
        trials = []
        frame_shape: tuple[int, int, int] | None = None
        for name in names:
            ds = images[name]
            where = f"{path}: images/{name}"
            if not isinstance(ds, h5py.Dataset):
                raise DataError(f"{where}: is a group, expected a dataset")
            if ds.dtype != np.uint8:
                raise DataError(f"{where}: dtype {ds.dtype}, expected uint8 (0-255)")
            if ds.ndim != 4:
                raise DataError(
                    f"{where}: shape {ds.shape} has {ds.ndim} dimensions, expected 4 "
                    "(frames, channels, height, width)"
                )
            shape = tuple(int(s) for s in ds.shape[1:])
            if frame_shape is None:
                frame_shape = shape  # type: ignore[assignment]
                if min(shape[1:]) < MIN_FRAME_SIZE:
                    raise DataError(
                        f"{where}: frames are {shape[1]}x{shape[2]}, smaller than the "
                        f"network's minimum of {MIN_FRAME_SIZE}x{MIN_FRAME_SIZE}"
                    )
            elif shape != frame_shape:
                raise DataError(f"{where}: frames of shape {shape}, but earlier trials have {frame_shape}")
            if ds.shape[0] == 0:
                raise DataError(f"{where}: has 0 frames; every trial needs at least one (remove the trial)")
            trials.append(_TrialInfo(name, int(ds.shape[0])))
        assert frame_shape is not None

        labels = _group(f, path, "labels", required=require_labels)
        n_labels = 0
        label_names: tuple[str, ...] = ()
        has_label_masks = False
        if labels is not None:
            _same_trials(path, images, labels, "labels")
            n_labels = _check_labels(path, labels, trials)
            raw_names = labels.attrs.get("names")
            label_names = (
                tuple(str(n.decode() if isinstance(n, bytes) else n) for n in raw_names)
                if raw_names is not None and len(raw_names) == n_labels
                else tuple(str(k) for k in range(n_labels))  # columns then read label_0, z_s_0
            )
            label_masks = _group(f, path, "labels_masks", required=False)
            if label_masks is not None:
                _same_trials(path, images, label_masks, "labels_masks")
                for t in trials:
                    _check_shape(path, f"labels_masks/{t.name}", label_masks[t.name], (t.n_frames, n_labels))
                has_label_masks = True
        masks = _group(f, path, "masks", required=False)
        if masks is not None:
            _same_trials(path, images, masks, "masks")
            for t in trials:
                _check_shape(path, f"masks/{t.name}", masks[t.name], (t.n_frames, *frame_shape))
        return _FileInfo(
            path=path,
            trials=tuple(trials),
            frame_shape=frame_shape,
            n_labels=n_labels,
            label_names=label_names,
            has_label_masks=has_label_masks,
            has_masks=masks is not None,
        )


def _check_shape(path: str, name: str, ds: h5py.Dataset, expected: tuple[int, ...]) -> None:
    if not isinstance(ds, h5py.Dataset) or tuple(ds.shape) != expected:
        shape = getattr(ds, "shape", "a group")
        raise DataError(f"{path}: {name}: shape {shape}, expected {expected}")


def _check_labels(path: str, labels: h5py.Group, trials: list[_TrialInfo]) -> int:
    n_labels: int | None = None
    for t in trials:
        ds = labels[t.name]
        where = f"{path}: labels/{t.name}"
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 2:
            raise DataError(f"{where}: shape {getattr(ds, 'shape', 'a group')}, expected (frames, labels)")
        if ds.shape[0] != t.n_frames:
            raise DataError(f"{where}: {ds.shape[0]} frames, but images/{t.name} has {t.n_frames}")
        if not np.issubdtype(ds.dtype, np.number):
            raise DataError(f"{where}: dtype {ds.dtype}, expected numbers")
        if n_labels is None:
            n_labels = int(ds.shape[1])
            if n_labels == 0:
                raise DataError(f"{where}: has no label columns")
        elif ds.shape[1] != n_labels:
            raise DataError(f"{where}: {ds.shape[1]} label columns, but earlier trials have {n_labels}")
        values = ds[()]
        bad = np.argwhere(np.isinf(values))
        if len(bad):
            frame, col = (int(v) for v in bad[0])
            raise DataError(
                f"{where}: value {values[frame, col]} at frame {frame}, column {col}; "
                "labels must be finite (use NaN for missing)"
            )
    assert n_labels is not None
    return n_labels


def check_splits(trials: list[Trial], paths: list[str]) -> None:
    """Refuse data with no frame in one of the train, validation or test sets: the best
    checkpoint is chosen on the validation frames and reported on the test frames."""
    for split in SPLITS:
        if not any(t.stop > t.start for t in trials if t.split == split):
            where = paths[0] if len(paths) == 1 else f"{paths[0]} (and {len(paths) - 1} more files)"
            raise DataError(
                f"{where}: no {split} frames under data.split; give more trials (or frames per trial)"
            )


GIB = 2**30


def bytes_needed(n_frames: int, frame_shape: tuple[int, int, int], n_labels: int, with_masks: bool) -> int:
    """Memory :func:`load_data` allocates for ``n_frames`` frames: the uint8 frames (and pixel
    masks), and per label column the float64 labels, their z-scored copy, float32 labels and mask
    and a validity flag."""
    pixels = n_frames * int(np.prod(frame_shape))
    return pixels * (2 if with_masks else 1) + n_frames * n_labels * (8 + 8 + 4 + 4 + 1)


def check_memory(
    paths: list[str], n_frames: int, frame_shape: tuple[int, int, int], n_labels: int, with_masks: bool
) -> None:
    """Refuse, before allocating anything, data whose frames do not fit in the memory available."""
    import psutil

    needed = bytes_needed(n_frames, frame_shape, n_labels, with_masks)
    available = psutil.virtual_memory().available
    if needed > available:
        where = paths[0] if len(paths) == 1 else f"{paths[0]} (and {len(paths) - 1} more files)"
        c, h, w = frame_shape
        raise DataError(
            f"{where}: {n_frames} frames of {c}x{h}x{w} need {needed / GIB:.1f} GiB of memory, but "
            f"{available / GIB:.1f} GiB is available; use fewer sessions or smaller frames"
        )


def _column_stats(
    info: _FileInfo, labels: np.ndarray, valid: np.ndarray, use_rows: np.ndarray, names: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware mean and standard deviation (K,) of each label column over ``use_rows``."""
    k = labels.shape[1]
    mean, std = np.zeros(k), np.ones(k)
    for col in range(k):
        values = labels[use_rows & valid[:, col], col]
        if len(values) == 0:
            raise DataError(
                f"{info.path}: labels column {col} ({names[col]}) has no valid value on the training frames"
            )
        mean[col], std[col] = values.mean(), values.std()
        if not std[col] > 0:
            raise DataError(
                f"{info.path}: labels column {col} ({names[col]}) has zero variance on the training "
                f"frames (every value is {values[0]:g}); remove the column or give it varying values"
            )
    return mean, std


def read_trials(path: str) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(trial name, uint8 frames (T, C, H, W))`` for every trial of a file, in order.

    Labels are not needed: this is how new videos are encoded with a fitted model.
    """
    info = _scan(path, require_labels=False)
    with h5py.File(path, "r") as f:
        for t in info.trials:
            yield t.name, f["images"][t.name][()]


def read_labels(path: str) -> dict[str, np.ndarray]:
    """Trial name -> labels (T, K) in original units, for the models that take labels as input."""
    info = _scan(path, require_labels=True)
    with h5py.File(path, "r") as f:
        return {t.name: f["labels"][t.name][()] for t in info.trials}


def label_count(path: str) -> int:
    """K, the number of label columns of a data file."""
    return _scan(path, require_labels=True).n_labels


def frame_shape_of(path: str) -> tuple[int, int, int]:
    return _scan(path, require_labels=False).frame_shape
