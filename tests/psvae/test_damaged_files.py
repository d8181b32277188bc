"""Damaged or hostile model bundles and fit folders: load_model, psvae encode and a resumed
psvae fit answer in one line naming the file, exit 2, write nothing, and never run a pickle."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from psvae.errors import UserError
from psvae.export import load_model
from psvae.fit import run_fit
from search.cli import load_fit_config, main
from tests.conftest import SMALL_NET

SETS = [f"model.channels={SMALL_NET['model.channels']}", "train.epochs=3", "loss.anneal_epochs=1"]


class Payload:
    """Pickles as a call of os.mkdir: loading it with plain pickle creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, synthetic_file) -> Path:
    out = tmp_path_factory.mktemp("fit") / "fit"
    cfg = load_fit_config(None, [*SETS[:1], "train.epochs=2"])
    run_fit([str(synthetic_file)], cfg, out, progress=False)
    return out / "model"


@pytest.fixture
def copy(bundle, tmp_path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(bundle, target)
    return target


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "weights missing": (
        lambda b: (b / "weights.pt").unlink(),
        r"model: not a model bundle \(weights\.pt is missing\)",
    ),
    "weights truncated": (
        lambda b: _truncate(b / "weights.pt"),
        r"weights\.pt: damaged, truncated or not a PyTorch",
    ),
    "weights empty": (lambda b: (b / "weights.pt").write_bytes(b""), r"weights\.pt: damaged, truncated"),
    "weights a tensor": (
        lambda b: torch.save(torch.zeros(3), b / "weights.pt"),
        r"weights\.pt: not a state dict of tensors",
    ),
    "config shapes differ from the weights": (
        lambda b: _edit_json(
            b / "config.json", lambda m: m["config"].update({"model.channels": [8, 8, 8, 8, 8]})
        ),
        r"weights\.pt: does not match the network that config\.json describes \(size mismatch for encoder",
    ),
    "channels differ from the weights": (
        lambda b: _edit_json(b / "config.json", lambda m: m.update(frame_shape=[3, 32, 32])),
        r"weights\.pt: does not match the network that config\.json describes \(size mismatch",
    ),
    "config truncated": (lambda b: _truncate(b / "config.json"), r"config\.json: damaged \(not valid JSON"),
    "config not a mapping": (
        lambda b: (b / "config.json").write_text("[1, 2]"),
        r"config\.json: expected a mapping",
    ),
    "config binary": (lambda b: (b / "config.json").write_bytes(b"\xff\xfe\x00"), r"config\.json: damaged"),
    "frame shape": (
        lambda b: _edit_json(b / "config.json", lambda m: m.update(frame_shape=[1, 32])),
        r"config\.json: frame_shape = \[1, 32\]: expected \[channels, height, width\]",
    ),
    "frames too small": (
        lambda b: _edit_json(b / "config.json", lambda m: m.update(frame_shape=[1, 8, 8])),
        r"config\.json: frame_shape = \[1, 8, 8\]: frames of 8x8 are smaller than 32x32",
    ),
    "config value": (
        lambda b: _edit_json(b / "config.json", lambda m: m["config"].update({"train.lr": -1})),
        r"config\.json: train\.lr = -1\.0: must be greater than 0",
    ),
    "label stats truncated": (lambda b: _truncate(b / "label_stats.json"), r"label_stats\.json: damaged"),
    "label names": (
        lambda b: _edit_json(b / "label_stats.json", lambda d: d.update(names=["x"])),
        r"label_stats\.json: names = \['x'\]: expected 2 label names",
    ),
    "label std": (
        lambda b: _edit_json(b / "label_stats.json", lambda d: d.update(std=[1.0, 0.0])),
        r"label_stats\.json: std = \[1\.0, 0\.0\]: every standard deviation must be above 0",
    ),
    "label mean": (
        lambda b: _edit_json(b / "label_stats.json", lambda d: d.update(mean=["a", 1])),
        r"label_stats\.json: mean = \['a', 1\]: expected a list of 2 finite numbers",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_bundle_is_one_user_error_naming_the_file(case, copy):
    damage, pattern = DAMAGE[case]
    damage(copy)
    with pytest.raises(UserError, match=pattern) as err:
        load_model(copy)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("case", ["weights truncated", "config shapes differ from the weights", "label std"])
def test_psvae_encode_with_a_damaged_bundle_exits_2_and_writes_nothing(
    case, copy, synthetic_file, tmp_path, capsys
):
    DAMAGE[case][0](copy)
    out = tmp_path / "latents.parquet"
    code = main(["encode", "--model", str(copy), "--data", str(synthetic_file), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"psvae: error: {copy}")
    assert not out.exists() and not list(tmp_path.glob(".latents*"))


def _with_payload(path: Path, marker: Path) -> None:
    """Add a pickled call to ``path``'s tensors, as a hostile copy of the file would carry."""
    state = torch.load(path, weights_only=True)
    state["extra"] = Payload(marker)
    torch.save(state, path)


def test_a_pickle_in_the_weights_is_refused_and_never_runs(copy, tmp_path):
    marker = tmp_path / "payload-ran"
    _with_payload(copy / "weights.pt", marker)
    with pytest.raises(
        UserError,
        match=r"weights\.pt: holds a pickled Python object \((posix|nt)\.mkdir\), not only tensors; refused",
    ):
        load_model(copy)
    assert not marker.exists()
    # the payload is live: plain unpickling runs it
    torch.load(copy / "weights.pt", weights_only=False)
    assert marker.is_dir()


@pytest.mark.parametrize("command", ["encode", "score"])
@pytest.mark.parametrize("damage", ["pickle", "truncated"])
def test_encode_and_score_refuse_a_hostile_or_damaged_bundle_in_one_line(
    command, damage, copy, synthetic_file, tmp_path, capsys
):
    """What load_model refuses, the commands that load a bundle refuse in one line, exit 2,
    writing nothing; the pickled call never runs."""
    from psvae.synthetic import factors_path

    marker = tmp_path / "payload-ran"
    if damage == "pickle":
        _with_payload(copy / "weights.pt", marker)
    else:
        _truncate(copy / "weights.pt")
    out = tmp_path / "out.json"
    argv = {
        "encode": ["encode", "--model", str(copy), "--data", str(synthetic_file), "--out", str(out)],
        "score": [
            "score", "--model", str(copy), "--data", str(synthetic_file),
            "--factors", str(factors_path(synthetic_file)), "--json", str(out),
        ],
    }[command]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"psvae: error: {copy}"), err
    assert ("pickled Python object" in err) == (damage == "pickle")
    assert not marker.exists() and not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp file either


def test_a_symbolic_link_loop_as_bundle(tmp_path):
    loop = tmp_path / "model"
    loop.symlink_to(loop)
    with pytest.raises(UserError, match=r"model: is a symbolic link loop; expected a model bundle folder"):
        load_model(loop)


# -- resuming a psvae fit -------------------------------------------------------------------
@pytest.fixture
def unfinished(tmp_path, synthetic_file) -> Path:
    """A fit folder interrupted after its first epoch (fit.json, checkpoint.pt, metrics.csv)."""
    out = tmp_path / "fit"

    class Stop(Exception):
        pass

    def stop(result):
        raise Stop

    with pytest.raises(Stop):
        run_fit([str(synthetic_file)], load_fit_config(None, SETS), out, progress=False, on_epoch=stop)
    return out


def _resume(capsys, synthetic_file, out: Path) -> tuple[int, str]:
    args = ["fit", "--data", str(synthetic_file), "--out", str(out), "--quiet"]
    code = main([*args, *(f"--set={s}" for s in SETS)])
    return code, capsys.readouterr().err


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


RESUME_DAMAGE = {
    "fit.json truncated": (lambda d: _truncate(d / "fit.json"), r"fit\.json: damaged \(not valid JSON\)"),
    "fit.json not a description": (
        lambda d: (d / "fit.json").write_text("[]"),
        r"fit\.json: damaged \(expected",
    ),
    "checkpoint truncated": (
        lambda d: _truncate(d / "checkpoint.pt"),
        r"checkpoint\.pt: damaged, truncated or not a PyTorch tensor file",
    ),
    "checkpoint empty": (lambda d: (d / "checkpoint.pt").write_bytes(b""), r"checkpoint\.pt: damaged"),
    "checkpoint of another config": (
        lambda d: _edit_checkpoint(d / "checkpoint.pt", lambda s: s.update(config="{}")),
        r"checkpoint\.pt: the checkpoint was written with a different config",
    ),
    "checkpoint without its model": (
        lambda d: _edit_checkpoint(d / "checkpoint.pt", lambda s: s.pop("model")),
        r"checkpoint\.pt: damaged, truncated or not a PyTorch tensor file \(KeyError: 'model'\)",
    ),
}


def _edit_checkpoint(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


@pytest.mark.parametrize("case", list(RESUME_DAMAGE))
def test_resuming_from_a_damaged_fit_folder_is_one_line_and_changes_nothing(
    case, unfinished, synthetic_file, capsys
):
    damage, pattern = RESUME_DAMAGE[case]
    damage(unfinished)
    before = _contents(unfinished)
    code, err = _resume(capsys, synthetic_file, unfinished)
    assert code == 2 and err.count("\n") == 1, err
    assert re.search(pattern, err), err
    assert f"the unfinished fit in {unfinished} cannot be resumed; choose another --out" in err
    assert _contents(unfinished) == before


def test_a_pickle_in_the_checkpoint_is_refused_and_never_runs(unfinished, synthetic_file, capsys, tmp_path):
    marker = tmp_path / "payload-ran"
    _with_payload(unfinished / "checkpoint.pt", marker)
    code, err = _resume(capsys, synthetic_file, unfinished)
    assert code == 2 and "checkpoint.pt: holds a pickled Python object" in err and err.count("\n") == 1
    assert not marker.exists()


def test_an_intact_unfinished_fit_still_resumes(unfinished, synthetic_file, capsys):
    code, err = _resume(capsys, synthetic_file, unfinished)
    assert code == 0, err
    assert (unfinished / "model" / "weights.pt").is_file()
