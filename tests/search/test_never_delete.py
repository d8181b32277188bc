"""Nothing of a user's is ever deleted or overwritten: run ids are plain names wherever they are
read, and every --force or replaced folder must carry the project's own marker (or be empty)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from psvae.errors import UserError
from psvae.files import OWNER_FILE, check_replaceable, staged_dir
from psvae.fit import run_fit
from search.cli import main
from search.export import export_run
from search.report import write_report
from search.rundir import check_run_id, read_manifest
from search.storage import Storage
from tests.conftest import small_config

HOSTILE_IDS = [
    "../../x",
    "/abs/path",
    "a/b",
    "",
    ".",
    "..",
    ".hidden",
    "x\n",
    "tab\there",
    "nul\x00",
    "é",
    "a" * 129,
]


@pytest.mark.parametrize("run_id", HOSTILE_IDS)
def test_a_run_id_must_be_one_plain_name(run_id: str) -> None:
    with pytest.raises(UserError, match="one plain name"):
        check_run_id(run_id)


@pytest.mark.parametrize("run_id", ["r1", "search-20261201-180000", "demo.v2_a", "A" * 128])
def test_plain_run_ids_pass(run_id: str) -> None:
    assert check_run_id(run_id) == run_id


def user_folder(path: Path) -> Path:
    """A folder the user owns, with a file in it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "thesis.txt").write_text("years of work")
    return path


def intact(path: Path) -> bool:
    return (path / "thesis.txt").read_text() == "years of work"


@pytest.mark.parametrize("command", ["search", "submit"])
@pytest.mark.parametrize("run_id", ["../victim", "/tmp/victim", "a/../../victim"])
def test_search_refuses_a_path_as_run_id_before_anything_is_written(tmp_path, capsys, run_id, command):
    storage = tmp_path / "runs"
    cluster = ["--address", "http://127.0.0.1:1"] if command == "submit" else []
    config = ["--config", str(tmp_path / "none.yaml")]
    with pytest.raises(SystemExit) as exit_info:
        main([command, *cluster, *config, "--run-id", run_id, "--storage", str(storage)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--run-id" in err and "one plain name" in err
    assert not storage.exists()


def test_a_mirror_is_never_emptied_through_a_hostile_run_id(tmp_path):
    victim = user_folder(tmp_path / "victim")
    mirror = tmp_path / "cache" / "mirror"
    mirror.mkdir(parents=True)
    store = Storage("s3://bucket/runs", mirror)
    for run_id in ("../../victim", str(victim), ".."):
        with pytest.raises(UserError):
            store.pull(run_id)
        with pytest.raises(UserError):
            store.push(run_id, "manifest.json")
    assert intact(victim)


def write_run(run_dir: Path, bundle: Path, run_id: str = "r1") -> Path:
    """A finished run by hand: a manifest whose selected trial's checkpoint holds ``bundle``."""
    checkpoint = run_dir / "seeds" / "train_psvae_00000" / "checkpoint_000000"
    shutil.copytree(bundle, checkpoint / "model")
    (run_dir / "results").mkdir()
    manifest = {
        "version": 1,
        "run_id": run_id,
        "spec_hash": "0" * 16,
        "spec": {"data": [], "fit": {}, "stages": []},
        "stages": {},
        "status": "done",
        "selected": {"stage": "seeds", "trial_id": "t0", "chosen": {}, "checkpoint": str(checkpoint)},
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


@pytest.fixture(scope="module")
def bundle(synthetic_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fit") / "fit"
    run_fit([str(synthetic_file)], small_config(**{"train.epochs": 2}), out, progress=False)
    return out / "model"


def test_export_force_replaces_only_an_earlier_export_or_an_empty_folder(tmp_path, bundle):
    storage = tmp_path / "runs"
    run = write_run(storage / "r1", bundle)
    user_folder(run / "notes")
    (run / "results" / "trials.parquet").write_text("rows")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for out in (run, run / "results", storage, run / "notes", tmp_path):
        with pytest.raises(UserError, match="only an empty folder or an earlier export"):
            export_run(run, out, force=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing touched
    assert intact(run / "notes")
    for out in (run / "results" / "new", run / "seeds" / "x"):  # inside the run: refused, even new
        with pytest.raises(UserError, match="inside the run directory"):
            export_run(run, out)
    export_run(run, run / "export")  # the run's own export folder is the one place inside it

    export = export_run(run, tmp_path / "export")
    assert (export / OWNER_FILE).read_text().strip() == "export"
    (export / "weights.pt").write_bytes(b"stale")
    export_run(run, export, force=True)  # an earlier export: replaced
    assert (export / "weights.pt").read_bytes() != b"stale"
    empty = tmp_path / "empty"
    empty.mkdir()
    export_run(run, empty, force=True)  # an empty folder: filled
    legacy = tmp_path / "legacy"  # an export written before the marker existed
    shutil.copytree(export, legacy)
    (legacy / OWNER_FILE).unlink()
    export_run(run, legacy, force=True)
    assert (legacy / OWNER_FILE).is_file()


def test_export_refuses_a_symbolic_link_and_a_file(tmp_path, bundle):
    run = write_run(tmp_path / "runs" / "r1", bundle)
    target = user_folder(tmp_path / "target")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(UserError, match="symbolic link"):
        export_run(run, tmp_path / "link", force=True)
    (tmp_path / "file").write_text("mine")
    with pytest.raises(UserError, match="not a folder"):
        export_run(run, tmp_path / "file", force=True)
    assert intact(target) and (tmp_path / "file").read_text() == "mine"


def test_the_cli_export_force_gives_one_line_and_exit_2(tmp_path, bundle, capsys):
    run = write_run(tmp_path / "runs" / "r1", bundle)
    assert main(["export", str(run), "--out", str(run), "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "earlier export" in err
    assert (run / "manifest.json").is_file()


def test_a_manifest_with_a_hostile_run_id_is_refused_where_it_is_read(tmp_path, bundle, capsys):
    victim = user_folder(tmp_path / "victim")
    run = write_run(tmp_path / "runs" / "r1", bundle, run_id="../../victim")
    with pytest.raises(UserError, match="run_id"):
        read_manifest(run)
    for command in (["status", str(run)], ["resume", str(run)], ["export", str(run), "--out", str(victim)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "one plain name" in err
    assert intact(victim)


@pytest.mark.parametrize("content", ["garbage {", "[1, 2]", '{"run_id": "r1"}'])
def test_a_damaged_manifest_is_one_line(tmp_path, content, capsys):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(content)
    assert main(["status", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged" in err


def test_the_report_never_replaces_a_folder_it_did_not_write(tmp_path, bundle):
    run = write_run(tmp_path / "runs" / "r1", bundle)
    user_folder(run / "report")
    with pytest.raises(UserError, match="not a psvae report"):
        write_report(run)
    assert intact(run / "report")


def test_staged_dir_checks_again_just_before_the_switch(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(UserError), staged_dir(target, kind="export"):
        user_folder(target)  # appears while the new folder is being built
    assert intact(target)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the staged folder is gone


def test_check_replaceable_accepts_only_our_kind(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / OWNER_FILE).write_text("report\n")
    (folder / "x").write_text("")
    check_replaceable(folder, "report")
    with pytest.raises(UserError, match="a report of psvae"):
        check_replaceable(folder, "export")


def test_synthetic_force_replaces_only_its_own_files(tmp_path, capsys):
    mine = tmp_path / "data.h5"
    mine.write_text("a user's file")
    assert main(["synthetic", "--out", str(mine), "--trials", "10", "--force"]) == 2
    assert "never replaced" in capsys.readouterr().err and mine.read_text() == "a user's file"
    ours = tmp_path / "ours.h5"
    assert main(["synthetic", "--out", str(ours), "--trials", "10"]) == 0
    assert main(["synthetic", "--out", str(ours), "--trials", "10", "--seed", "1", "--force"]) == 0
    beside = tmp_path / "new.h5.factors.npz"  # written beside a new data file: never overwritten
    beside.write_text("mine")
    assert main(["synthetic", "--out", str(tmp_path / "new.h5"), "--trials", "10"]) == 2
    assert beside.read_text() == "mine"
    sessions = user_folder(tmp_path / "sessions")
    assert main(["synthetic", "--out", str(sessions), "--sessions", "2", "--trials", "10", "--force"]) == 2
    assert intact(sessions) and len(list(sessions.iterdir())) == 1
    capsys.readouterr()


def test_encode_force_replaces_only_a_latents_table(tmp_path, bundle, synthetic_file, capsys):
    mine = tmp_path / "latents.parquet"
    mine.write_text("not parquet")
    args = ["encode", "--model", str(bundle), "--data", str(synthetic_file), "--out", str(mine), "--force"]
    assert main(args) == 2
    assert "never replaced" in capsys.readouterr().err and mine.read_text() == "not parquet"
    mine.unlink()
    assert main(args) == 0
    assert main(args) == 0  # its own table: replaced


def test_a_run_id_naming_a_folder_of_the_users_is_refused_and_the_folder_kept(
    tmp_path, synthetic_file, capsys
):
    """A run id that names an existing folder in the storage which is not a run (no manifest,
    files of someone else's): one line, exit 2, before Ray starts, and the folder as it was."""
    storage = tmp_path / "runs"
    mine = storage / "thesis"
    mine.mkdir(parents=True)
    (mine / "thesis.txt").write_text("years of work")
    spec = tmp_path / "search.yaml"
    stages = [{"name": "alpha", "values": [50]}]
    spec.write_text(json.dumps({"data": [str(synthetic_file)], "stages": stages}))
    code = main(["search", "--config", str(spec), "--run-id", "thesis", "--storage", str(storage)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"{mine}: exists and is not a search run; choose another --run-id" in err
    assert intact(mine) and sorted(p.name for p in mine.iterdir()) == ["thesis.txt"]
