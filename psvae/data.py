"""Behavioural video data held for a fit (``docs/model.md`` §1): every frame once in memory as
uint8, minibatches gathered from that array and scaled to [0, 1] on the fly.

Reading and checking the session files (the BehaveNet HDF5 layout, the trial split) is
``psvae.datafiles``, which needs no PyTorch; its names are available here too.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from psvae.datafiles import (
    GIB,
    SPLITS,
    LabelStats,
    Trial,
    _column_stats,
    _scan,
    bytes_needed,
    check_memory,
    check_splits,
    frame_shape_of,
    label_count,
    natural_key,
    read_labels,
    read_trials,
    split_trials,
)
from psvae.errors import DataError

__all__ = [
    "GIB", "SPLITS", "Batch", "FrameData", "LabelStats", "Trial", "bytes_needed", "check_memory",
    "check_splits", "frame_shape_of", "label_count", "load_data", "natural_key", "read_labels",
    "read_trials", "split_trials",
]  # fmt: skip


@dataclass
class Batch:
    """One minibatch, on the training device. M frames, K labels."""

    frames: Tensor  # (M, C, H, W) float in [0, 1]
    labels: Tensor  # (M, K) z-scored; 0 where masked
    label_mask: Tensor  # (M, K) 1 = use, 0 = ignore
    pixel_mask: Tensor | None  # (M, C, H, W) or None when the data has no masks
    session: Tensor  # (M,) int64


class FrameData:
    """Frames, labels and masks of one or more sessions, held once in memory.

    Attributes are torch tensors on the CPU: ``frames`` uint8 (N, C, H, W); ``labels`` float32
    (N, K) z-scored with the training frames' statistics and 0 where masked; ``label_mask``
    float32 (N, K); ``pixel_mask`` uint8 (N, C, H, W) or None; ``session`` int64 (N,).
    """

    def __init__(
        self,
        frames: Tensor,
        labels: Tensor,
        label_mask: Tensor,
        pixel_mask: Tensor | None,
        session: Tensor,
        trials: list[Trial],
        label_stats: LabelStats,
    ) -> None:
        self.frames = frames
        self.labels = labels
        self.label_mask = label_mask
        self.pixel_mask = pixel_mask
        self.session = session
        self.trials = trials
        self.label_stats = label_stats
        self.index = {
            split: torch.cat(
                [torch.arange(t.start, t.stop) for t in trials if t.split == split]
                or [torch.zeros(0, dtype=torch.int64)]
            )
            for split in SPLITS
        }

    def to_arrays(self) -> dict[str, Any]:
        """Plain numpy arrays and small records, for sharing one copy between processes
        (Ray's object store keeps numpy arrays once per node and maps them read-only)."""
        return {
            "frames": self.frames.numpy(),
            "labels": self.labels.numpy(),
            "label_mask": self.label_mask.numpy(),
            "pixel_mask": None if self.pixel_mask is None else self.pixel_mask.numpy(),
            "session": self.session.numpy(),
            "trials": self.trials,
            "label_stats": self.label_stats,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> FrameData:
        """The inverse of :meth:`to_arrays`, without copying the (read-only) arrays."""
        with warnings.catch_warnings():
            # shared arrays are read-only; FrameData never writes to them
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensors = {k: torch.from_numpy(arrays[k]) for k in ("frames", "labels", "label_mask", "session")}
            pixel_mask = None if arrays["pixel_mask"] is None else torch.from_numpy(arrays["pixel_mask"])
        return cls(
            frames=tensors["frames"],
            labels=tensors["labels"],
            label_mask=tensors["label_mask"],
            pixel_mask=pixel_mask,
            session=tensors["session"],
            trials=list(arrays["trials"]),
            label_stats=arrays["label_stats"],
        )

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        c, h, w = self.frames.shape[1:]
        return int(c), int(h), int(w)

    @property
    def n_labels(self) -> int:
        return int(self.labels.shape[1])

    @property
    def n_sessions(self) -> int:
        return int(self.session.max()) + 1 if len(self.session) else 0

    def n_frames(self, split: str) -> int:
        return len(self.index[split])

    def batch(self, idx: Tensor, device: torch.device | str = "cpu") -> Batch:
        """Gather frames ``idx`` (int64 indices into the in-memory arrays) as a Batch."""
        frames = self.frames[idx].to(device, non_blocking=True)
        return Batch(
            frames=frames.float().div_(255.0).contiguous(memory_format=torch.channels_last),
            labels=self.labels[idx].to(device),
            label_mask=self.label_mask[idx].to(device),
            pixel_mask=None if self.pixel_mask is None else self.pixel_mask[idx].to(device).float(),
            session=self.session[idx].to(device),
        )

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
        """Shuffled index tensors of ``batch_size`` training frames; a short last batch is dropped
        (the MI/TC/DWKL estimates depend on the batch size) unless it would be the only one."""
        index = self.index["train"]
        order = index[torch.randperm(len(index), generator=generator)]
        n_batches = max(1, len(order) // batch_size)
        for i in range(n_batches):
            yield order[i * batch_size : (i + 1) * batch_size]

    def session_batches(
        self, batch_size: int, n_sessions_per_batch: int, generator: torch.Generator
    ) -> Iterator[Tensor]:
        """Training batches that each hold frames of ``n_sessions_per_batch`` distinct sessions.

        As many batches as :meth:`train_batches` gives. Each batch draws its S sessions at random
        and takes ``batch_size // S`` frames from each (the first ``batch_size % S`` sessions one
        more), walking through every session's shuffled training frames and reshuffling a
        session when it runs out. Needs at least S sessions with training frames.
        """
        train = self.index["train"]
        sessions = self.session[train]
        pools = [train[sessions == s] for s in range(self.n_sessions)]
        pools = [p for p in pools if len(p)]
        s_count = n_sessions_per_batch
        if len(pools) < s_count:
            raise ValueError(
                f"train.n_sessions_per_batch = {s_count}, but only {len(pools)} session(s) "
                "have training frames"
            )
        orders = [p[torch.randperm(len(p), generator=generator)] for p in pools]
        cursors = [0] * len(pools)
        n_batches = max(1, len(train) // batch_size)
        for _ in range(n_batches):
            chosen = torch.randperm(len(pools), generator=generator)[:s_count].tolist()
            parts = []
            for j, s in enumerate(chosen):
                n = batch_size // s_count + (1 if j < batch_size % s_count else 0)
                taken: list[Tensor] = []
                while n > 0:
                    if cursors[s] >= len(orders[s]):
                        orders[s] = pools[s][torch.randperm(len(pools[s]), generator=generator)]
                        cursors[s] = 0
                    part = orders[s][cursors[s] : cursors[s] + n]
                    cursors[s] += len(part)
                    n -= len(part)
                    taken.append(part)
                parts.extend(taken)
            yield torch.cat(parts)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Tensor]:
        """Index tensors covering every frame of ``split`` once, in order."""
        index = self.index[split]
        for start in range(0, len(index), batch_size):
            yield index[start : start + batch_size]


def load_data(
    paths: list[str] | tuple[str, ...],
    split: str = "8;1;1;0",
    split_seed: int = 0,
    per_session: bool = False,
) -> FrameData:
    """Validate and read one or more session files (one file per session) for fitting.

    Labels are z-scored per column with the NaN-aware mean and standard deviation of the
    training frames of all sessions (masked entries excluded), or, with ``per_session`` (the
    multi-session model), of each session's own training frames.
    """
    if not paths:
        raise DataError("no data file given")
    infos = [_scan(str(p), require_labels=True) for p in paths]
    first = infos[0]
    for info in infos[1:]:
        if info.frame_shape != first.frame_shape:
            raise DataError(
                f"{info.path}: frames of shape {info.frame_shape}, but {first.path} has {first.frame_shape}"
            )
        if info.n_labels != first.n_labels:
            raise DataError(
                f"{info.path}: {info.n_labels} label columns, but {first.path} has {first.n_labels}"
            )
    trials: list[Trial] = []
    start = 0
    for session_id, info in enumerate(infos):
        try:
            assignment = split_trials(len(info.trials), split, split_seed)
        except ValueError as err:
            raise DataError(f"{info.path}: too few trials for data.split: {err}") from None
        for trial_info, which in zip(info.trials, assignment, strict=True):
            n = trial_info.n_frames
            trials.append(Trial(info.path, trial_info.name, session_id, start, start + n, which))
            start += n

    check_splits(trials, [info.path for info in infos])
    n_total, k = start, first.n_labels
    check_memory(
        [info.path for info in infos],
        n_total,
        first.frame_shape,
        k,
        with_masks=any(info.has_masks for info in infos),
    )
    frames = np.empty((n_total, *first.frame_shape), dtype=np.uint8)
    labels = np.empty((n_total, k), dtype=np.float64)
    valid = np.ones((n_total, k), dtype=bool)
    pixel_mask = (
        np.ones((n_total, *first.frame_shape), dtype=np.uint8)
        if any(info.has_masks for info in infos)
        else None
    )
    session_of_frame = np.empty(n_total, dtype=np.int64)
    for info in infos:
        with h5py.File(info.path, "r") as f:
            for t in (trial for trial in trials if trial.path == info.path):
                sel = np.s_[t.start : t.stop]
                f["images"][t.name].read_direct(frames, dest_sel=sel)
                labels[sel] = f["labels"][t.name][()]
                if info.has_label_masks:
                    valid[sel] = f["labels_masks"][t.name][()] != 0
                if info.has_masks and pixel_mask is not None:
                    pixel_mask[sel] = f["masks"][t.name][()] != 0
                session_of_frame[sel] = t.session
    valid &= ~np.isnan(labels)

    is_train = np.zeros(n_total, dtype=bool)
    for t in trials:
        if t.split == "train":
            is_train[t.start : t.stop] = True
    mean, std = _column_stats(first, labels, valid, is_train, first.label_names)
    stats = LabelStats(first.label_names, tuple(mean.tolist()), tuple(std.tolist()))
    if per_session:
        zscored = np.zeros_like(labels)
        session_stats = []
        for session_id, info in enumerate(infos):
            in_session = session_of_frame == session_id
            s_mean, s_std = _column_stats(info, labels, valid, is_train & in_session, first.label_names)
            zscored[in_session] = (labels[in_session] - s_mean) / s_std
            session_stats.append((tuple(s_mean.tolist()), tuple(s_std.tolist())))
        zscored = np.where(valid, zscored, 0.0)
        stats = LabelStats(
            stats.names,
            stats.mean,
            stats.std,
            tuple(m for m, _ in session_stats),
            tuple(s for _, s in session_stats),
        )
    else:
        zscored = np.where(valid, (labels - mean) / std, 0.0)
    return FrameData(
        frames=torch.from_numpy(frames),
        labels=torch.from_numpy(zscored.astype(np.float32)),
        label_mask=torch.from_numpy(valid.astype(np.float32)),
        pixel_mask=None if pixel_mask is None else torch.from_numpy(pixel_mask),
        session=torch.from_numpy(session_of_frame),
        trials=trials,
        label_stats=stats,
    )
