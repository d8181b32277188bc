"""Videos with DeepLabCut predictions -> session files in the BehaveNet layout (``psvae import``).

One session per video. DeepLabCut's predictions for a video come as a CSV with three header
rows (``scorer``, ``bodyparts``, ``coords``; multi-animal files add ``individuals``) and one row
per frame, or as the HDF5 file DeepLabCut writes with pandas (``df.to_hdf(..., format="table")``,
the same columns). Both are read here without pandas' HDF5 reader: h5py reads the table, and the
column names pandas stores pickled are read by an unpickler that refuses every Python object
but plain lists, tuples and strings, so a hostile predictions file cannot run code.

Each session file holds::

    images/trial_0000        uint8 (T, C, H, W): decoded with PyAV, optionally cropped, resized
                             and converted to grayscale
    labels/trial_0000        float64 (T, 2P): [bp1_x, ..., bpP_x, bp1_y, ..., bpP_y], the
                             reference's order, in the pixels of the written frames; the group's
                             ``names`` attribute spells them (``nose_x``, ...)
    labels_masks/trial_0000  uint8 (T, 2P): 1 where the body part's likelihood reaches the
                             threshold (and its coordinates are numbers), else 0

and the root attribute ``written_by = "psvae import"`` (with the sources and options), which
is how ``--force`` knows a file is one this command wrote and may replace. Trials are
consecutive runs of ``trial_frames`` frames; the last trial keeps the frames left over.

Coordinates follow the frames: cropping at (x0, y0) subtracts x0, y0; resizing a crop of width
w to width W maps x to (x + 0.5) * W / w - 0.5 (and likewise y), so pixel centres stay pixel
centres, as FFmpeg's scaler places them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from psvae.errors import DataError, UserError
from psvae.files import atomic_path
from psvae.paths import missing_reason
from psvae.thresholds import MIN_FRAME_SIZE

WRITTEN_BY = "psvae import"
LEVELS = ("scorer", "individuals", "bodyparts", "coords")  # DeepLabCut's header rows, in order
DLC_KEY = "df_with_missing"  # the key DeepLabCut saves its predictions under


@dataclass(frozen=True)
class ImportOptions:
    """How videos become sessions. ``crop`` is (x, y, width, height) in the video's pixels;
    ``size`` (width, height) of the frames written, after the crop."""

    trial_frames: int = 100
    crop: tuple[int, int, int, int] | None = None
    size: tuple[int, int] | None = None
    grayscale: bool = False
    likelihood: float = 0.9  # a body part's entries are masked below this likelihood
    bodyparts: tuple[str, ...] | None = None  # a selection, in this order; None: all, in file order

    def __post_init__(self) -> None:
        if self.trial_frames < 1:
            raise UserError(f"--trial-frames {self.trial_frames}: must be at least 1")
        if not (math.isfinite(self.likelihood) and 0 <= self.likelihood <= 1):
            raise UserError(f"--likelihood {self.likelihood}: must be a number from 0 to 1")
        if self.crop is not None and (min(self.crop[:2]) < 0 or min(self.crop[2:]) < 1):
            raise UserError(f"--crop {','.join(map(str, self.crop))}: x, y >= 0 and width, height >= 1")
        if self.size is not None and min(self.size) < MIN_FRAME_SIZE:
            raise UserError(
                f"--size {self.size[0]}x{self.size[1]}: frames must be at least "
                f"{MIN_FRAME_SIZE}x{MIN_FRAME_SIZE} for the network"
            )
        if self.bodyparts is not None and len(set(self.bodyparts)) != len(self.bodyparts):
            raise UserError(f"--bodyparts {' '.join(self.bodyparts)}: a body part is named twice")


@dataclass(frozen=True)
class Predictions:
    """One video's pose predictions: T frames, P body parts."""

    path: str
    bodyparts: tuple[str, ...]  # P names, in the file's order
    xy: np.ndarray  # (T, P, 2) float64 pixels of the video; NaN where missing
    likelihood: np.ndarray  # (T, P) float64; NaN for a body part without a likelihood column

    @property
    def n_frames(self) -> int:
        return int(self.xy.shape[0])


@dataclass(frozen=True)
class SessionSummary:
    """What one session file holds, for the command to print."""

    path: Path
    video: str
    n_frames: int
    trial_frames: int
    n_trials: int
    frame_shape: tuple[int, int, int]
    label_names: tuple[str, ...]
    masked_fraction: float
    likelihood: float

    def line(self) -> str:
        last = self.n_frames - (self.n_trials - 1) * self.trial_frames
        trials = f"{self.n_trials} trials of {self.trial_frames} frames" + (
            f" (the last {last})" if last != self.trial_frames else ""
        )
        c, h, w = self.frame_shape
        return (
            f"wrote {self.path}: {self.n_frames} frames of {c}x{h}x{w} from {self.video} in {trials}; "
            f"{len(self.label_names)} labels ({', '.join(self.label_names)}), "
            f"{self.masked_fraction:.1%} of their entries masked (likelihood < {self.likelihood:g})"
        )


# -- DeepLabCut's files ---------------------------------------------------------------------
def _columns(
    path: str, columns: Sequence[tuple[str, ...]], level_names: Sequence[str], values: np.ndarray
) -> Predictions:
    """Predictions from column keys (one tuple of header values per column) and (T, n) values."""
    levels = list(level_names)
    if levels[-1:] != ["coords"] or "bodyparts" not in levels:
        raise DataError(f"{path}: header rows {levels}: expected scorer, bodyparts, coords (DeepLabCut's)")
    part_levels = [i for i, name in enumerate(levels) if name in ("individuals", "bodyparts")]
    order: list[str] = []
    where: dict[tuple[str, str], int] = {}
    for j, key in enumerate(columns):
        part = "_".join(str(key[i]) for i in part_levels)
        coord = str(key[-1])
        if part not in order:
            order.append(part)
        where[(part, coord)] = j
    t = values.shape[0]
    xy = np.full((t, len(order), 2), np.nan)
    likelihood = np.full((t, len(order)), np.nan)
    for p, part in enumerate(order):
        for c, coord in enumerate(("x", "y")):
            if (part, coord) not in where:
                raise DataError(f"{path}: body part {part!r} has no {coord} column")
            xy[:, p, c] = values[:, where[(part, coord)]]
        if (part, "likelihood") in where:
            likelihood[:, p] = values[:, where[(part, "likelihood")]]
    return Predictions(path, tuple(order), xy, likelihood)


def _check_index(path: str, index: Sequence[Any]) -> None:
    """A video's predictions have one row per frame, numbered 0, 1, 2, ... in order."""
    for i, value in enumerate(index):
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise DataError(
                f"{path}: row {i} is for {value!r}, not a frame number; psvae import needs the "
                "predictions for a video (one row per frame), not labelled images"
            ) from None
        if number != i:
            raise DataError(
                f"{path}: row {i} is for frame {number}; expected the frames 0, 1, 2, ... in order"
            )


def _read_csv(path: str) -> Predictions:
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot be read as a CSV file ({err})") from None
    header: list[list[str]] = []
    while len(header) < len(rows) and rows[len(header)] and rows[len(header)][0] in LEVELS:
        header.append(rows[len(header)])
    if not header:
        raise DataError(f"{path}: no DeepLabCut header (rows starting scorer, bodyparts, coords)")
    body = rows[len(header) :]
    if body and all(not cell for cell in body[0][1:]):  # the index's name, when pandas wrote one
        body = body[1:]
    n_columns = len(header[0]) - 1
    values = np.full((len(body), n_columns), np.nan)
    for r, row in enumerate(body):
        line = len(header) + r + 1
        if len(row) != n_columns + 1:
            raise DataError(f"{path}: line {line} has {len(row)} cells, the header has {n_columns + 1}")
        for c, cell in enumerate(row[1:]):
            if cell.strip():
                try:
                    values[r, c] = float(cell)
                except ValueError:
                    raise DataError(
                        f"{path}: line {line}, column {c + 2}: {cell!r} is not a number"
                    ) from None
    _check_index(path, [row[0] for row in body])
    columns = [tuple(h[c + 1] for h in header) for c in range(n_columns)]
    return _columns(path, columns, [h[0] for h in header], values)


class _PlainUnpickler(pickle.Unpickler):
    """Reads pickles of lists, tuples, dicts, strings and numbers only: any other object would
    need a class or function, and every one is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused {module}.{name}")


def _plain_attr(path: str, value: Any, what: str) -> Any:
    """An attribute pandas stored pickled (PyTables pickles lists), read without running code."""
    raw = value.tobytes() if isinstance(value, np.ndarray | np.bytes_) else value
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    try:
        return _PlainUnpickler(io.BytesIO(raw)).load()
    except Exception as err:  # any malformed or refused pickle
        raise DataError(f"{path}: the {what} cannot be read ({err})") from None


def _read_hdf(path: str) -> Predictions:
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: cannot be opened as HDF5 ({err})") from None
    with f:
        tables = [k for k, g in f.items() if isinstance(g, h5py.Group) and "pandas_type" in g.attrs]
        if DLC_KEY in tables:
            tables = [DLC_KEY]
        if len(tables) != 1:
            raise DataError(
                f"{path}: holds {len(tables)} pandas tables ({', '.join(tables) or 'none'}); expected "
                f"DeepLabCut's predictions under {DLC_KEY!r}"
            )
        group = f[tables[0]]
        kind = group.attrs["pandas_type"]
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind != "frame_table" or "table" not in group:
            raise DataError(
                f"{path}: a pandas table of kind {kind!r}; expected DeepLabCut's format='table' "
                "(or give the CSV DeepLabCut writes beside it)"
            )
        table = group["table"]
        fields = table.dtype.names or ()
        blocks = sorted(
            (n for n in fields if n.startswith("values_block_")), key=lambda n: int(n.rsplit("_", 1)[1])
        )
        if "index" not in fields or not blocks:
            raise DataError(f"{path}: {tables[0]}/table has no index or value columns")
        rows = table[()]
        columns: list[tuple[str, ...]] = []
        parts = []
        for name in blocks:
            keys = _plain_attr(path, table.attrs.get(f"{name}_kind", b""), f"column names of {name}")
            block = np.asarray(rows[name], dtype=np.float64).reshape(len(rows), -1)
            if (
                not isinstance(keys, list)
                or len(keys) != block.shape[1]
                or not all(isinstance(k, tuple) and all(isinstance(v, str) for v in k) for k in keys)
            ):
                raise DataError(
                    f"{path}: the column names of {name} do not describe its {block.shape[1]} columns"
                )
            columns.extend(keys)
            parts.append(block)
        values = np.concatenate(parts, axis=1)
        _check_index(path, rows["index"].tolist())
    n_levels = {len(k) for k in columns}
    if n_levels not in ({3}, {4}):
        raise DataError(
            f"{path}: columns with {sorted(n_levels)} header levels; expected DeepLabCut's 3 or 4"
        )
    names = LEVELS if n_levels == {4} else ("scorer", "bodyparts", "coords")
    return _columns(path, columns, names, values)


def read_predictions(path: str | Path) -> Predictions:
    """DeepLabCut's predictions for one video, from its CSV or HDF5 file."""
    path = str(path)
    reason = missing_reason(path)
    if reason is not None:
        raise DataError(f"{path}: {reason}")
    predictions = _read_hdf(path) if h5py.is_hdf5(path) else _read_csv(path)
    if predictions.n_frames == 0:
        raise DataError(f"{path}: holds no frames")
    return predictions


# -- video ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    n_frames: int  # as the container declares it; 0 when it does not


def probe_video(path: str | Path) -> VideoInfo:
    """Open a video and read its size and declared frame count (no frame is decoded)."""
    import av

    path = str(path)
    reason = missing_reason(path)
    if reason is not None:
        raise DataError(f"{path}: {reason}")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise DataError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            return VideoInfo(
                path,
                int(stream.codec_context.width),
                int(stream.codec_context.height),
                int(stream.frames or 0),
            )
    except (av.FFmpegError, OSError) as err:
        raise DataError(f"{path}: cannot be read as a video ({_reason(err)})") from None


def _reason(err: BaseException) -> str:
    return str(getattr(err, "strerror", None) or err).split(": '")[0]


def read_frames(video: VideoInfo, options: ImportOptions) -> Iterator[np.ndarray]:
    """Decode every frame as uint8 (C, H, W): cropped, resized and converted as ``options`` say."""
    import av

    fmt = "gray" if options.grayscale else "rgb24"
    try:
        with av.open(video.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                image = frame.to_ndarray(format=fmt)  # (H, W) or (H, W, 3)
                if options.crop is not None:
                    x, y, w, h = options.crop
                    image = image[y : y + h, x : x + w]
                if options.size is not None:
                    width, height = options.size
                    pixels = np.ascontiguousarray(image, dtype=np.uint8)
                    resized = av.VideoFrame.from_ndarray(pixels, format=fmt)
                    image = resized.reformat(width=width, height=height, interpolation="AREA").to_ndarray()
                yield image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
    except (av.FFmpegError, OSError) as err:
        raise DataError(f"{video.path}: cannot be decoded ({_reason(err)})") from None


def transform(xy: np.ndarray, video: VideoInfo, options: ImportOptions) -> np.ndarray:
    """Coordinates (..., 2) in the video's pixels -> in the pixels of the written frames."""
    out = np.array(xy, dtype=np.float64)
    width, height = video.width, video.height
    if options.crop is not None:
        x0, y0, width, height = options.crop
        out[..., 0] -= x0
        out[..., 1] -= y0
    if options.size is not None:
        scale = np.array([options.size[0] / width, options.size[1] / height])
        out = (out + 0.5) * scale - 0.5
    return out


def output_shape(video: VideoInfo, options: ImportOptions) -> tuple[int, int, int]:
    c = 1 if options.grayscale else 3
    if options.size is not None:
        return c, options.size[1], options.size[0]
    if options.crop is not None:
        return c, options.crop[3], options.crop[2]
    return c, video.height, video.width


# -- sessions -------------------------------------------------------------------------------
def _labels(
    predictions: Predictions, video: VideoInfo, options: ImportOptions
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(T, 2P) labels, their (T, 2P) 0/1 masks and their names, all x then all y."""
    parts = list(predictions.bodyparts)
    chosen = list(options.bodyparts) if options.bodyparts is not None else parts
    for part in chosen:
        if part not in parts:
            raise DataError(f"{predictions.path}: no body part {part!r} (it has: {', '.join(parts)})")
    index = [parts.index(p) for p in chosen]
    xy = transform(predictions.xy[:, index], video, options)  # (T, P, 2)
    likelihood = predictions.likelihood[:, index]  # (T, P)
    usable = np.isfinite(xy).all(axis=2) & (np.isnan(likelihood) | (likelihood >= options.likelihood))
    labels = np.concatenate([xy[:, :, 0], xy[:, :, 1]], axis=1)
    masks = np.concatenate([usable, usable], axis=1).astype(np.uint8)
    names = tuple(f"{p}_x" for p in chosen) + tuple(f"{p}_y" for p in chosen)
    return labels, masks, names


def check_replaceable_file(target: Path, force: bool) -> None:
    """An existing session file is replaced only with ``force`` and only when psvae import wrote it."""
    if target.is_symlink():
        raise UserError(f"--out {target}: is a symbolic link; it is never replaced")
    if not target.exists():
        return
    ours = False
    if target.is_file() and h5py.is_hdf5(target):
        with contextlib.suppress(OSError), h5py.File(target, "r") as f:
            ours = f.attrs.get("written_by") == WRITTEN_BY
    if not ours:
        raise UserError(f"--out {target}: exists and was not written by psvae import; it is never replaced")
    if not force:
        raise UserError(f"--out {target}: exists (written by psvae import); pass --force to replace it")


@dataclass(frozen=True)
class _Plan:
    video: VideoInfo
    predictions: Predictions
    target: Path


def _count_mismatch(predictions: Predictions, video: VideoInfo, found: str) -> DataError:
    return DataError(
        f"{predictions.path}: {predictions.n_frames} frames of predictions, but {video.path} has "
        f"{found} frames; give the predictions DeepLabCut made for this video"
    )


def _plan(video_path: str, labels_path: str, out_dir: Path, options: ImportOptions, force: bool) -> _Plan:
    """Everything about one session that can be checked without decoding its frames."""
    video = probe_video(video_path)
    predictions = read_predictions(labels_path)
    if video.n_frames and video.n_frames != predictions.n_frames:
        raise _count_mismatch(predictions, video, str(video.n_frames))
    if options.crop is not None:
        x, y, w, h = options.crop
        if x + w > video.width or y + h > video.height:
            raise UserError(
                f"--crop {x},{y},{w},{h}: reaches beyond {video_path}'s {video.width}x{video.height} frames"
            )
    _, h, w = output_shape(video, options)
    if min(h, w) < MIN_FRAME_SIZE:
        raise UserError(
            f"{video_path}: frames would be {w}x{h}, smaller than the network's minimum of "
            f"{MIN_FRAME_SIZE}x{MIN_FRAME_SIZE}; give a larger --crop or a --size"
        )
    _labels(predictions, video, options)  # a missing body part fails here
    target = out_dir / f"{Path(video_path).stem}.h5"
    check_replaceable_file(target, force)
    return _Plan(video, predictions, target)


def _write(plan: _Plan, staged: Path, options: ImportOptions) -> SessionSummary:
    from psvae.provenance import package_version

    labels, masks, names = _labels(plan.predictions, plan.video, options)
    n_expected = plan.predictions.n_frames
    shape = output_shape(plan.video, options)
    with h5py.File(staged, "w") as f:
        f.attrs.update(
            {
                "written_by": WRITTEN_BY,
                "psvae_version": package_version(),
                "video": str(Path(plan.video.path).resolve()),
                "predictions": str(Path(plan.predictions.path).resolve()),
                "crop": list(options.crop) if options.crop else [],
                "size": list(options.size) if options.size else [],
                "grayscale": options.grayscale,
                "likelihood_threshold": options.likelihood,
                "trial_frames": options.trial_frames,
            }
        )
        images = f.create_group("images")
        buffer: list[np.ndarray] = []
        n_frames = n_trials = 0

        def flush() -> None:
            nonlocal n_trials
            images.create_dataset(f"trial_{n_trials:04d}", data=np.stack(buffer), chunks=(1, *shape))
            buffer.clear()
            n_trials += 1

        for frame in read_frames(plan.video, options):
            if n_frames >= n_expected:
                raise _count_mismatch(plan.predictions, plan.video, "more")
            buffer.append(frame)
            n_frames += 1
            if len(buffer) == options.trial_frames:
                flush()
        if n_frames != n_expected:
            raise _count_mismatch(plan.predictions, plan.video, str(n_frames))
        if buffer:
            flush()
        label_group, mask_group = f.create_group("labels"), f.create_group("labels_masks")
        label_group.attrs["names"] = list(names)
        for i in range(n_trials):
            rows = np.s_[i * options.trial_frames : min((i + 1) * options.trial_frames, n_frames)]
            label_group.create_dataset(f"trial_{i:04d}", data=labels[rows])
            mask_group.create_dataset(f"trial_{i:04d}", data=masks[rows])
    return SessionSummary(
        path=plan.target,
        video=plan.video.path,
        n_frames=n_frames,
        trial_frames=options.trial_frames,
        n_trials=n_trials,
        frame_shape=shape,
        label_names=names,
        masked_fraction=float(1 - masks.mean()) if masks.size else 0.0,
        likelihood=options.likelihood,
    )


def import_sessions(
    pairs: Sequence[tuple[str, str]], out_dir: str | Path, options: ImportOptions, force: bool = False
) -> list[SessionSummary]:
    """Write ``out_dir/<video stem>.h5`` for each ``(video, predictions)`` pair.

    Every pair is checked before any frame is decoded; each file is written under a temporary
    name in ``out_dir`` and renamed into place only when all of them are complete, so on an error
    nothing is left behind and no existing file is touched.
    """
    if not pairs:
        raise UserError("no video given: psvae import --video VIDEO --labels PREDICTIONS ...")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    plans = [_plan(v, p, out, options, force) for v, p in pairs]
    targets = [plan.target for plan in plans]
    for i, target in enumerate(targets):
        if target in targets[:i]:
            raise UserError(
                f"--video {pairs[i][0]}: another video has the stem {target.stem!r}; "
                f"both would write {target}"
            )
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:  # each file goes into place as the stack unwinds cleanly
        summaries = [_write(plan, stack.enter_context(atomic_path(plan.target)), options) for plan in plans]
        for plan in plans:  # the targets may have appeared meanwhile
            check_replaceable_file(plan.target, force)
    return summaries
