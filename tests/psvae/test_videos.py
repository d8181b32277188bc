"""psvae synthetic --as-video: the built-in scene as a lab records it (a video and DeepLabCut's
CSV per session), which psvae import turns back into the frames and labels it was drawn from."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from psvae import synthetic
from psvae.videos import body_parts, session_files
from search.cli import main


def test_body_parts_pair_x_and_y_by_name_in_any_order():
    assert body_parts(["left_x", "left_y", "right_x", "right_y"]) == [("left", 0, 1), ("right", 2, 3)]
    assert body_parts(["paw_x", "tail_x", "paw_y", "tail_y"]) == [("paw", 0, 2), ("tail", 1, 3)]
    assert body_parts(["x", "y"]) == [("animal", 0, 1)]
    with pytest.raises(ValueError, match="'nose_y'"):
        body_parts(["nose_x", "ear_y"])


def test_sample_videos_import_back_to_the_scene_they_were_drawn_from(tmp_path, capsys):
    lab, data = tmp_path / "lab", tmp_path / "data"
    assert (
        main(
            [
                "synthetic",
                "--as-video",
                "--sessions",
                "2",
                "--trials",
                "3",
                "--scene",
                "limbs",
                "--out",
                str(lab),
            ]
        )
        == 0
    )
    pairs = session_files(lab, 2)
    assert all(video.is_file() and labels.is_file() for video, labels in pairs)
    argv = ["import", "--grayscale", "--out", str(data)]
    for video, labels in pairs:
        argv += ["--video", str(video), "--labels", str(labels)]
    assert main(argv) == 0
    spec = synthetic.SyntheticSpec(n_trials=3, scene="limbs")
    for i, (video, _) in enumerate(pairs):
        frames, labels, _ = synthetic.draw(synthetic.session_spec(spec, i), i, 2)
        with h5py.File(data / f"{video.stem}.h5") as f:
            trials = sorted(f["images"])
            assert len(trials) == 3
            got = np.concatenate([f["images"][t][()] for t in trials]).astype(np.float32)
            names = [str(n) for n in f["labels"].attrs["names"]]
            have = np.concatenate([f["labels"][t][()] for t in trials])
            mask = np.concatenate([f["labels_masks"][t][()] for t in trials]).astype(bool)
        drawn = frames.reshape(-1, *frames.shape[2:]).astype(np.float32)
        assert got.shape == drawn.shape
        # MPEG-4 at a high bit rate: the frames come back within a grey level or two on average
        assert float(np.abs(got - drawn).mean()) < 3, float(np.abs(got - drawn).mean())
        assert names == ["left_x", "right_x", "left_y", "right_y"]  # the reference's order
        order = [synthetic.scene_names("limbs")[1].index(n) for n in names]
        want = labels.reshape(-1, labels.shape[-1])[:, order]
        # a body part the scene left out (its x or y NaN) is masked, x and y both, as a tracker's
        # low likelihood masks it; every other label is there, to float32's precision
        lost = np.isnan(want[:, :2]) | np.isnan(want[:, 2:])
        assert (mask == ~np.concatenate([lost, lost], axis=1)).all()
        np.testing.assert_allclose(have[mask], want[mask], rtol=0, atol=1e-4)


def test_sample_videos_never_replace_a_folder_of_the_users(tmp_path, capsys):
    mine = tmp_path / "lab"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    argv = ["synthetic", "--as-video", "--trials", "1", "--out", str(mine)]
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(mine) in err and "not a psvae sample videos" in err, err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    # a folder it wrote itself is replaced with --force
    ours = tmp_path / "ours"
    assert main(["synthetic", "--as-video", "--trials", "1", "--out", str(ours)]) == 0
    assert (
        main(["synthetic", "--as-video", "--trials", "1", "--sessions", "2", "--out", str(ours), "--force"])
        == 0
    )
    assert sorted(p.name for p in ours.iterdir() if not p.name.startswith(".")) == [
        "session_00.csv", "session_00.mp4", "session_01.csv", "session_01.mp4",
    ]  # fmt: skip
