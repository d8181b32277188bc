import numpy as np
import pytest

from psvae.data import load_data, split_trials
from psvae.errors import DataError
from tests.conftest import make_trials, write_h5


def test_split_is_by_trial_disjoint_and_deterministic():
    a = split_trials(50, "8;1;1;0", seed=0)
    assert a == split_trials(50, "8;1;1;0", seed=0)
    assert a != split_trials(50, "8;1;1;0", seed=1)
    assert (a.count("train"), a.count("val"), a.count("test")) == (40, 5, 5)
    # each block of ten holds exactly one val and one test trial
    for block in range(5):
        chunk = a[block * 10 : (block + 1) * 10]
        assert chunk.count("val") == 1 and chunk.count("test") == 1


def test_split_gaps_separate_held_out_trials():
    a = split_trials(28, "8;1;1;1", seed=3)  # blocks of 13: two blocks and two trials left over
    assert (a.count("gap"), a.count("val"), a.count("test"), a.count("train")) == (6, 2, 2, 18)
    for block in (a[:13], a[13:26]):
        for i, which in enumerate(block):
            if which in ("val", "test"):  # within its (rotated) block, a gap on each side
                assert block[(i + 1) % 13] == "gap" and block[(i - 1) % 13] == "gap"


def test_split_needs_one_whole_block():
    with pytest.raises(ValueError, match="needs at least 10"):
        split_trials(9, "8;1;1;0", seed=0)


def test_frame_indices_of_the_splits_are_disjoint(tmp_path):
    data = load_data([write_h5(tmp_path / "d.h5", make_trials(n_trials=20))])
    sets = [set(data.index[s].tolist()) for s in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(len(s) for s in sets) == 20 * 20
    for t in data.trials:  # whole trials go to one split
        assert set(range(t.start, t.stop)) <= sets[("train", "val", "test").index(t.split)]
    assert data.frames.dtype.is_floating_point is False and data.frames.shape == (400, 1, 32, 32)


def test_labels_are_zscored_on_training_frames_with_nan_and_masks(tmp_path):
    groups = make_trials(n_trials=10, n_labels=2)
    first = "trial_0000"
    groups["labels"][first][3, 0] = np.nan
    groups["labels_masks"] = {n: np.ones_like(v, dtype=np.uint8) for n, v in groups["labels"].items()}
    groups["labels_masks"][first][5, 1] = 0
    groups["labels"][first][5, 1] = 1e6  # masked: must not affect the statistics
    data = load_data([write_h5(tmp_path / "d.h5", groups)])
    train = data.index["train"].numpy()
    raw = np.concatenate([groups["labels"][t.name] for t in data.trials])
    valid = data.label_mask.numpy().astype(bool)
    assert not valid[3, 0] and not valid[5, 1] and valid.sum() == raw.size - 2
    for k in range(2):
        use = valid[train, k]
        expected_mean = raw[train][use, k].mean()
        assert data.label_stats.mean[k] == pytest.approx(expected_mean, rel=1e-6)
        z = data.labels.numpy()[train][use, k]
        assert z.mean() == pytest.approx(0.0, abs=1e-5) and z.std() == pytest.approx(1.0, abs=1e-4)
    assert data.labels[3, 0] == 0 and data.labels[5, 1] == 0


def test_pixel_masks_are_read(tmp_path):
    groups = make_trials(n_trials=10)
    groups["masks"] = {n: np.ones_like(v) for n, v in groups["images"].items()}
    groups["masks"]["trial_0002"][:, :, :4, :] = 0
    data = load_data([write_h5(tmp_path / "d.h5", groups)])
    assert data.pixel_mask is not None
    t = next(t for t in data.trials if t.name == "trial_0002")
    assert data.pixel_mask[t.start, 0, :4].sum() == 0 and data.pixel_mask[t.start, 0, 4:].min() == 1
    batch = data.batch(data.index["train"][:4])
    assert batch.pixel_mask is not None and batch.frames.max() <= 1.0


def test_several_sessions_share_label_statistics(tmp_path):
    a = write_h5(tmp_path / "a.h5", make_trials(n_trials=10, seed=1))
    b = write_h5(tmp_path / "b.h5", make_trials(n_trials=10, seed=2))
    data = load_data([a, b])
    assert data.n_sessions == 2 and data.n_frames("val") == 2 * 20


def test_train_batches_cover_training_frames_once(tmp_path):
    import torch

    data = load_data([write_h5(tmp_path / "d.h5", make_trials(n_trials=10))])
    batches = list(data.train_batches(32, torch.Generator().manual_seed(0)))
    seen = torch.cat(batches)
    assert len(batches) == 160 // 32 and len(set(seen.tolist())) == len(seen) == 160
    assert set(seen.tolist()) <= set(data.index["train"].tolist())
    again = list(data.train_batches(32, torch.Generator().manual_seed(0)))
    assert all(torch.equal(x, y) for x, y in zip(batches, again, strict=True))


def test_too_few_trials_names_the_file(tmp_path):
    path = write_h5(tmp_path / "few.h5", make_trials(n_trials=4))
    with pytest.raises(DataError, match=r"few\.h5: too few trials.*4 trials.*8;1;1;0"):
        load_data([path])
