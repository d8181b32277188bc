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

import numpy as np

SCORER = "psvae-synthetic"  # the scorer row of the predictions (DeepLabCut names its network there)
FPS = 30
LOW_LIKELIHOOD = 0.1  # what a missing label (NaN) is reported with, as a tracker that lost it would


def body_parts(label_names: Sequence[str]) -> list[str]:
    """The body parts of labels named in the reference's order, all x then all y (``paw_x``,
    ``tail_x``, ``paw_y``, ``tail_y`` -> ``paw``, ``tail``; ``x``, ``y`` -> ``animal``)."""
    half = len(label_names) // 2
    parts = [name.removesuffix("_x").removesuffix("x").rstrip("_") for name in label_names[:half]]
    return [part or "animal" for part in parts]


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
    """Labels (T, K) in the reference's order as DeepLabCut's CSV: per body part x, y and a
    likelihood (high where the label is there, low where it is NaN)."""
    import pandas as pd

    path = Path(path)
    parts = body_parts(label_names)
    half = len(parts)
    columns = pd.MultiIndex.from_product(
        [[SCORER], parts, ["x", "y", "likelihood"]], names=["scorer", "bodyparts", "coords"]
    )
    values = np.empty((len(labels), 3 * half))
    for p in range(half):
        x, y = labels[:, p], labels[:, half + p]
        missing = np.isnan(x) | np.isnan(y)
        values[:, 3 * p] = np.where(missing, 0.0, x)
        values[:, 3 * p + 1] = np.where(missing, 0.0, y)
        values[:, 3 * p + 2] = np.where(missing, LOW_LIKELIHOOD, 0.99)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pd.DataFrame(values, columns=columns).to_csv(tmp)
    os.replace(tmp, path)
    return path
