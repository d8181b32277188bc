"""The built-in data as a lab brings it: a video per session and DeepLabCut's predictions.

``psvae synthetic --as-video`` writes these so that the whole path a user takes, from videos and
pose estimates through ``psvae import`` to a search and an export, can be tried (and tested)
without a lab's recordings. The video is encoded with PyAV (MPEG-4 at a high bit rate, so the
frames survive the compression nearly as they were); the predictions are DeepLabCut's CSV, with
its three header rows (scorer, bodyparts, coords), each body part's x, y and likelihood.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SCORER = "psvae-synthetic"  # the scorer row of the predictions (DeepLabCut names its network there)
FPS = 30
LOW_LIKELIHOOD = 0.1  # what a missing label (NaN) is reported with, as a tracker that lost it would


def body_parts(label_names: Sequence[str]) -> list[tuple[str, int, int]]:
    """(body part, index of its x label, index of its y label) for labels named ``<part>_x`` and
    ``<part>_y`` in any order (``left_x``, ``left_y``, ``right_x``, ...); a bare ``x`` and ``y``
    are the body part ``animal``."""
    index = {name: i for i, name in enumerate(label_names)}
    parts = []
    for name in label_names:
        if name == "x" or name.endswith("_x"):
            part = name[:-2] if name.endswith("_x") else ""
            y_name = f"{part}_y" if part else "y"
            if y_name not in index:
                raise ValueError(f"label {name!r} has no {y_name!r} beside it")
            parts.append((part or "animal", index[name], index[y_name]))
    if 2 * len(parts) != len(label_names):
        raise ValueError(f"labels {list(label_names)}: not pairs of <part>_x and <part>_y")
    return parts


def write_video(path: str | Path, frames: np.ndarray, fps: int = FPS) -> Path:
    """Frames uint8 (T, 1, H, W) or (T, H, W), grey, as an MPEG-4 video (written to a temporary
    name first, then renamed)."""
    import av

    path = Path(path)
    grey = frames[:, 0] if frames.ndim == 4 else frames
    _, height, width = grey.shape
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 20_000_000
        for image in grey:
            rgb = np.repeat(image[:, :, None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def write_predictions(path: str | Path, labels: np.ndarray, label_names: Sequence[str]) -> Path:
    """Labels (T, K) named ``<part>_x``/``<part>_y`` as DeepLabCut's CSV: per body part x, y and
    a likelihood (high where the label is there, low where it is NaN)."""
    import pandas as pd

    path = Path(path)
    parts = body_parts(label_names)
    columns = pd.MultiIndex.from_product(
        [[SCORER], [part for part, _, _ in parts], ["x", "y", "likelihood"]],
        names=["scorer", "bodyparts", "coords"],
    )
    values = np.empty((len(labels), 3 * len(parts)))
    for p, (_, ix, iy) in enumerate(parts):
        x, y = labels[:, ix], labels[:, iy]
        missing = np.isnan(x) | np.isnan(y)
        values[:, 3 * p] = np.where(missing, 0.0, x)
        values[:, 3 * p + 1] = np.where(missing, 0.0, y)
        values[:, 3 * p + 2] = np.where(missing, LOW_LIKELIHOOD, 0.99)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pd.DataFrame(values, columns=columns).to_csv(tmp)
    os.replace(tmp, path)
    return path


VIDEOS_KIND = "sample videos"  # the owner marker of a folder write_sessions built


def session_files(out_dir: str | Path, n_sessions: int) -> list[tuple[Path, Path]]:
    """The (video, predictions) pairs :func:`write_sessions` writes, in session order."""
    out = Path(out_dir)
    return [(out / f"session_{i:02d}.mp4", out / f"session_{i:02d}.csv") for i in range(n_sessions)]


def write_sessions(out_dir: str | Path, n_sessions: int, spec: Any) -> list[tuple[Path, Path]]:
    """The built-in scene as ``n_sessions`` recorded sessions in the folder ``out_dir``: per
    session one video of all its trials in a row and DeepLabCut's CSV of its labels (noisy,
    a few missing, as a tracker gives them). ``spec``: a :class:`psvae.synthetic.SyntheticSpec`.

    The folder is built beside ``out_dir`` and takes its place whole (nothing half-written is
    left); an existing ``out_dir`` is replaced only when it is empty or a folder of sample
    videos written here."""
    from psvae import synthetic
    from psvae.files import staged_dir

    out = Path(out_dir)
    label_names = synthetic.scene_names(spec.scene)[1]
    with staged_dir(out, kind=VIDEOS_KIND, mode=0o755) as staged:
        for i, (video, predictions) in enumerate(session_files(staged, n_sessions)):
            frames, labels, _ = synthetic.draw(synthetic.session_spec(spec, i), i, n_sessions)
            write_video(video, frames.reshape(-1, *frames.shape[2:]))
            write_predictions(predictions, labels.reshape(-1, labels.shape[-1]), label_names)
    return session_files(out, n_sessions)
