"""psvae import: real videos written with PyAV's encoder and real DeepLabCut CSV and HDF5 files
(written with the pandas calls DeepLabCut makes) become session files in the BehaveNet layout."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import av
import h5py
import numpy as np
import pandas as pd
import pytest

from psvae.data import load_data
from psvae.dlc import WRITTEN_BY, ImportOptions, read_predictions
from search.cli import main
from tests.conftest import SMALL_NET

WIDTH, HEIGHT, SIDE = 96, 80, 16  # the video; the square's side
BODYPARTS = ("square", "corner", "post")
SCORER = "DLC_resnet50_testJan1shuffle1_1000"


def square_origin(i: int) -> tuple[int, int]:
    """The top-left pixel of the square in frame i: it moves right and down."""
    return 4 + (2 * i) % 70, 2 + i % 60


def write_video(path: Path, n_frames: int, codec: str = "mpeg4") -> Path:
    """A grey square moving over a dark background, encoded with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.bit_rate = 8_000_000
        for i in range(n_frames):
            image = np.full((HEIGHT, WIDTH, 3), 16, np.uint8)
            x, y = square_origin(i)
            image[y : y + SIDE, x : x + SIDE] = 235
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def predictions(n_frames: int) -> pd.DataFrame:
    """DeepLabCut's table: the square's centre, its top-left pixel, and a post (tracked with some
    jitter) whose likelihood is low on every third frame."""
    columns = pd.MultiIndex.from_product(
        [[SCORER], list(BODYPARTS), ["x", "y", "likelihood"]], names=["scorer", "bodyparts", "coords"]
    )
    rows = []
    for i in range(n_frames):
        x, y = square_origin(i)
        centre = (x + (SIDE - 1) / 2, y + (SIDE - 1) / 2)
        rows.append([*centre, 0.99, x, y, 0.95, 50.0 + i % 5, 60.0 - i % 4, 0.2 if i % 3 == 0 else 0.97])
    return pd.DataFrame(rows, columns=columns)


def write_csv(path: Path, n_frames: int) -> Path:
    predictions(n_frames).to_csv(path)  # how DeepLabCut writes its CSV
    return path


def write_h5(path: Path, n_frames: int) -> Path:
    predictions(n_frames).to_hdf(path, key="df_with_missing", format="table", mode="w")  # DeepLabCut's call
    return path


@pytest.fixture
def session(tmp_path) -> tuple[Path, Path, Path]:
    """(video, CSV, HDF5) of 25 frames."""
    return (
        write_video(tmp_path / "mouse1.mp4", 25),
        write_csv(tmp_path / "m1.csv", 25),
        write_h5(tmp_path / "m1.h5", 25),
    )


def run_import(capsys, video: Path, labels: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["import", "--video", str(video), "--labels", str(labels), "--out", str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_session(path: Path) -> dict[str, object]:
    with h5py.File(path, "r") as f:
        trials = sorted(f["images"])
        return {
            "attrs": dict(f.attrs),
            "trials": trials,
            "frames": np.concatenate([f["images"][t][()] for t in trials]),
            "labels": np.concatenate([f["labels"][t][()] for t in trials]),
            "masks": np.concatenate([f["labels_masks"][t][()] for t in trials]),
            "names": [str(n) for n in f["labels"].attrs["names"]],
            "lengths": [f["images"][t].shape[0] for t in trials],
        }


def bright_centroid(frame: np.ndarray) -> tuple[float, float]:
    """(x, y) of the bright pixels' centre, weighted by brightness above the background."""
    image = frame.astype(float).mean(axis=0)
    weight = np.clip(image - (image.min() + image.max()) / 2, 0, None)
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    return float((weight * xs).sum() / weight.sum()), float((weight * ys).sum() / weight.sum())


def test_csv_and_hdf5_predictions_read_the_same(session):
    _, csv_path, h5_path = session
    a, b = read_predictions(csv_path), read_predictions(h5_path)
    assert a.bodyparts == b.bodyparts == BODYPARTS
    np.testing.assert_array_equal(a.xy, b.xy)
    np.testing.assert_array_equal(a.likelihood, b.likelihood)
    assert a.xy.shape == (25, 3, 2) and a.xy[4, 1].tolist() == list(square_origin(4))


@pytest.mark.parametrize("which", ["csv", "h5"])
def test_import_writes_the_behavenet_layout(which, session, tmp_path, capsys):
    video, csv_path, h5_path = session
    out = tmp_path / "sessions"
    code, stdout, err = run_import(
        capsys, video, csv_path if which == "csv" else h5_path, out, "--trial-frames", "10"
    )
    assert code == 0, err
    written = read_session(out / "mouse1.h5")
    assert written["trials"] == ["trial_0000", "trial_0001", "trial_0002"] and written["lengths"] == [
        10,
        10,
        5,
    ]
    frames = written["frames"]
    assert frames.dtype == np.uint8 and frames.shape == (25, 3, HEIGHT, WIDTH)
    assert written["names"] == ["square_x", "corner_x", "post_x", "square_y", "corner_y", "post_y"]
    expected = predictions(25).to_numpy()
    labels = written["labels"]
    np.testing.assert_array_equal(labels[:, :3], expected[:, [0, 3, 6]])  # all x, then all y
    np.testing.assert_array_equal(labels[:, 3:], expected[:, [1, 4, 7]])
    masks = written["masks"]
    low = np.arange(25) % 3 == 0
    assert (masks[:, [2, 5]] == (~low)[:, None]).all() and (masks[:, [0, 1, 3, 4]] == 1).all()
    for i in (0, 7, 24):  # the decoded frames show the square where the labels say it is
        cx, cy = bright_centroid(frames[i])
        assert abs(cx - labels[i, 0]) < 0.5 and abs(cy - labels[i, 3]) < 0.5
    assert written["attrs"]["written_by"] == WRITTEN_BY
    assert stdout.strip() == (
        f"wrote {out / 'mouse1.h5'}: 25 frames of 3x{HEIGHT}x{WIDTH} from {video} in 3 trials of 10 frames "
        "(the last 5); 6 labels (square_x, corner_x, post_x, square_y, corner_y, post_y), "
        f"{2 * 9 / (6 * 25):.1%} of their entries masked (likelihood < 0.9)"
    )
    assert sorted(p.name for p in out.iterdir()) == ["mouse1.h5"]  # no temporary file left


def test_crop_resize_and_grayscale_move_the_labels_with_the_frames(session, tmp_path, capsys):
    video, csv_path, _ = session
    out = tmp_path / "small"
    code, _, err = run_import(
        capsys, video, csv_path, out, "--crop", "8,4,80,64", "--size", "40x32", "--grayscale"
    )
    assert code == 0, err
    written = read_session(out / "mouse1.h5")
    frames, labels = written["frames"], written["labels"]
    assert frames.shape == (25, 1, 32, 40)
    raw = predictions(25).to_numpy()
    # x: minus the crop's 8, then (x + 0.5) * 40 / 80 - 0.5; y: minus 4, then (y + 0.5) * 32 / 64 - 0.5
    np.testing.assert_allclose(labels[:, 0], (raw[:, 0] - 8 + 0.5) * 0.5 - 0.5)
    np.testing.assert_allclose(labels[:, 3], (raw[:, 1] - 4 + 0.5) * 0.5 - 0.5)
    for i in (5, 10, 20):  # frames where the square lies inside the crop
        cx, cy = bright_centroid(frames[i])
        assert abs(cx - labels[i, 0]) < 0.5 and abs(cy - labels[i, 3]) < 0.5, (i, cx, cy, labels[i])
    assert list(written["attrs"]["crop"]) == [8, 4, 80, 64] and list(written["attrs"]["size"]) == [40, 32]


def test_a_body_part_selection_and_threshold(session, tmp_path, capsys):
    video, _, h5_path = session
    out = tmp_path / "sel"
    code, _, err = run_import(
        capsys, video, h5_path, out, "--bodyparts", "post", "square", "--likelihood", "0.1"
    )
    assert code == 0, err
    written = read_session(out / "mouse1.h5")
    assert written["names"] == ["post_x", "square_x", "post_y", "square_y"]
    assert (written["masks"] == 1).all()  # every likelihood is above 0.1


def test_several_videos_and_an_imported_session_fits(tmp_path, capsys):
    pairs = []
    for name in ("day1", "day2"):
        pairs += [
            "--video",
            str(write_video(tmp_path / f"{name}.avi", 40)),
            "--labels",
            str(write_csv(tmp_path / f"{name}.csv", 40)),
        ]
    out = tmp_path / "sessions"
    assert (
        main(["import", *pairs, "--out", str(out), "--trial-frames", "4", "--grayscale", "--size", "32x32"])
        == 0
    )
    stdout = capsys.readouterr().out
    assert stdout.count("\n") == 2 and "day1.h5" in stdout and "day2.h5" in stdout
    data = load_data([str(out / "day1.h5"), str(out / "day2.h5")])
    assert data.frame_shape == (1, 32, 32) and data.label_stats.names[0] == "square_x"
    assert float(data.label_mask[:, 2].mean()) == pytest.approx(
        1 - 14 / 40
    )  # the post's low-likelihood frames
    fit = tmp_path / "fit"
    code = main(
        [
            "fit",
            "--data",
            str(out / "day1.h5"),
            "--out",
            str(fit),
            "--quiet",
            f"--set=model.channels={SMALL_NET['model.channels']}",
            "--set=train.epochs=1",
            "--set=train.batch_size=8",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert (fit / "model" / "weights.pt").is_file()


# -- refusals: one line, exit 2, nothing written -----------------------------------------------
def _refused(capsys, args: list[str], pattern: str, out: Path) -> None:
    before = sorted(out.rglob("*")) if out.exists() else None
    code = main(["import", *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("psvae: error: "), err
    assert re.search(pattern, err), err
    assert (sorted(out.rglob("*")) if out.exists() else None) == before


def test_a_frame_count_mismatch_is_refused(session, tmp_path, capsys):
    video, _, _ = session
    short = write_csv(tmp_path / "short.csv", 24)
    _refused(
        capsys,
        ["--video", str(video), "--labels", str(short)],
        rf"{re.escape(str(short))}: 24 frames of predictions, but {re.escape(str(video))} has 25 frames",
        tmp_path / "out",
    )


def test_a_missing_body_part_is_refused(session, tmp_path, capsys):
    video, csv_path, _ = session
    _refused(
        capsys,
        ["--video", str(video), "--labels", str(csv_path), "--bodyparts", "square", "tail"],
        r"m1\.csv: no body part 'tail' \(it has: square, corner, post\)",
        tmp_path / "out",
    )


def test_an_unreadable_video_is_refused(session, tmp_path, capsys):
    _, csv_path, _ = session
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video at all")
    _refused(
        capsys,
        ["--video", str(fake), "--labels", str(csv_path)],
        r"fake\.mp4: cannot be read as a video",
        tmp_path / "out",
    )
    _refused(
        capsys,
        ["--video", str(tmp_path / "gone.mp4"), "--labels", str(csv_path)],
        r"gone\.mp4: no such file",
        tmp_path / "out",
    )


def test_labelled_images_and_bad_arguments_are_refused(session, tmp_path, capsys):
    video, csv_path, _ = session
    images = predictions(25)
    images.index = [f"labeled-data/mouse1/img{i:03d}.png" for i in range(25)]
    images.to_csv(tmp_path / "collected.csv")
    out = tmp_path / "out"
    _refused(
        capsys,
        ["--video", str(video), "--labels", str(tmp_path / "collected.csv")],
        r"row 0 is for 'labeled-data/",
        out,
    )
    _refused(
        capsys,
        ["--video", str(video), "--labels", str(csv_path), "--crop", "50,0,64,64"],
        r"--crop 50,0,64,64: reaches beyond",
        out,
    )
    _refused(
        capsys,
        ["--video", str(video), "--labels", str(csv_path), "--crop", "1,2,3"],
        r"--crop 1,2,3: expected X,Y,WIDTH,HEIGHT",
        out,
    )
    _refused(
        capsys,
        ["--video", str(video), "--labels", str(csv_path), "--size", "16x16"],
        r"--size 16x16: frames must be at least 32x32",
        out,
    )
    _refused(
        capsys,
        ["--video", str(video), "--labels", str(csv_path), "--likelihood", "nan"],
        r"--likelihood nan: must be a number from 0 to 1",
        out,
    )
    _refused(
        capsys,
        ["--video", str(video), "--video", str(video), "--labels", str(csv_path)],
        r"2 --video and 1 --labels",
        out,
    )


def test_a_bad_second_session_leaves_no_first_one(session, tmp_path, capsys):
    video, csv_path, _ = session
    other = write_video(tmp_path / "mouse2.mp4", 25)
    short = write_csv(tmp_path / "short.csv", 20)
    out = tmp_path / "out"
    out.mkdir()
    _refused(
        capsys,
        ["--video", str(video), "--labels", str(csv_path), "--video", str(other), "--labels", str(short)],
        r"short\.csv: 20 frames of predictions",
        out,
    )
    assert list(out.iterdir()) == []


def test_an_existing_output_is_replaced_only_when_psvae_import_wrote_it_and_force_is_given(
    session, tmp_path, capsys
):
    video, csv_path, h5_path = session
    out = tmp_path / "out"
    out.mkdir()
    theirs = out / "mouse1.h5"
    with h5py.File(theirs, "w") as f:
        f["images/trial_0000"] = np.zeros((1, 1, 32, 32), np.uint8)
    before = theirs.read_bytes()
    args = ["--video", str(video), "--labels", str(csv_path)]
    _refused(
        capsys,
        [*args, "--force"],
        r"mouse1\.h5: exists and was not written by psvae import; it is never replaced",
        out,
    )
    assert theirs.read_bytes() == before
    theirs.unlink()
    assert run_import(capsys, video, csv_path, out, "--trial-frames", "5")[0] == 0
    _refused(capsys, args, r"mouse1\.h5: exists \(written by psvae import\); pass --force to replace it", out)
    code, _, err = run_import(capsys, video, h5_path, out, "--trial-frames", "25", "--force")
    assert code == 0, err
    assert read_session(out / "mouse1.h5")["lengths"] == [25]
    text = out / "notes.h5"
    text.write_text("mine")
    link = tmp_path / "link.mp4"
    link.symlink_to(video)
    (out / "link.h5").symlink_to(text)
    _refused(
        capsys,
        ["--video", str(link), "--labels", str(csv_path), "--force"],
        r"link\.h5: is a symbolic link",
        out,
    )
    assert text.read_text() == "mine"


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_hostile_pickle_in_the_hdf5_column_names_never_runs(session, tmp_path, capsys):
    video, _, h5_path = session
    marker = tmp_path / "payload-ran"
    hostile = pickle.dumps(Payload(marker), protocol=0)
    with h5py.File(h5_path, "r+") as f:
        f["df_with_missing/table"].attrs["values_block_0_kind"] = np.bytes_(hostile)
    _refused(
        capsys,
        ["--video", str(video), "--labels", str(h5_path)],
        r"m1\.h5: the column names of values_block_0 cannot be read \(refused (posix|nt)\.mkdir\)",
        tmp_path / "out",
    )
    assert not marker.exists()
    pickle.loads(hostile)  # the payload is live: plain unpickling runs it
    assert marker.is_dir()


def test_options_are_checked_where_they_are_built():
    with pytest.raises(Exception, match=r"--trial-frames 0: must be at least 1"):
        ImportOptions(trial_frames=0)
