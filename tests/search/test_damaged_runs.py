"""A damaged run directory under every command that reads it: one line, exit 2, nothing changed.

The run is a real one, made once by a real search on a local Ray (two alpha trials); each test
damages a copy of it the way disks, kills and hands damage files (truncated, emptied, garbage,
a folder in a file's place, values of the wrong kind) and runs ``psvae status``, ``report``,
``export`` and ``resume`` on it in this process, so a traceback fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from search.cli import main
from search.status import last_reports
from tests.conftest import env_for, imports_torch, psvae
from tests.search.test_search_ray import write_spec

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, synthetic_file: Path) -> Iterator[Path]:
    """A finished search: one alpha stage of two trials, two epochs each."""
    home = tmp_path_factory.mktemp("damaged-home")
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # Ray's sockets: a short path
    spec = write_spec(home, synthetic_file, [{"name": "alpha", "values": [50, 100]}], fit={"train.epochs": 2})
    env = {**env_for(home), "RAY_TMPDIR": str(ray_tmp)}
    done = psvae("search", "--config", str(spec), "--run-id", "r1", "--storage", str(home / "runs"), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    yield home / "runs" / "r1"
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_status_and_resume_of_a_finished_run_do_not_import_torch(finished_run: Path, tmp_path: Path) -> None:
    env = env_for(finished_run.parent.parent)
    assert imports_torch("status", str(finished_run), env=env) == (0, False)
    assert imports_torch("resume", str(finished_run), env=env) == (0, False)  # done: nothing to run
    # export loads the model: PyTorch (the check sees it when it is there)
    assert imports_torch("export", str(finished_run), "--out", str(tmp_path / "x"), env=env) == (0, True)


@pytest.fixture
def run(finished_run: Path, tmp_path: Path) -> Path:
    """A copy of the finished run to damage."""
    copy = tmp_path / "runs" / "r1"
    shutil.copytree(finished_run, copy)
    return copy


def snapshot(folder: Path) -> dict[str, bytes | None]:
    files = sorted(folder.rglob("*"))
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in files}


def run_commands(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, tuple[int, str]]:
    """Every command that reads a run, in this process: command -> (exit code, stderr)."""
    out: dict[str, tuple[int, str]] = {}
    for name, argv in (
        ("status", ["status", str(run)]),
        ("report", ["report", str(run)]),
        ("export", ["export", str(run), "--out", str(tmp_path / "export")]),
        ("resume", ["resume", str(run)]),
    ):
        code = main(argv)
        out[name] = (code, capsys.readouterr().err)
    return out


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("psvae: error: ") and "Traceback" not in err


# -- manifest.json ----------------------------------------------------------------------------
def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(manifest: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = manifest
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


_DELETE = object()
MANIFEST_EDITS = {
    f"{path} = {'deleted' if value is _DELETE else json.dumps(value)}": _set(path, value)
    for path, value in [
        ("run_id", _DELETE),
        ("run_id", 7),
        ("run_id", "../elsewhere"),
        ("spec_hash", _DELETE),
        ("spec_hash", 5),
        ("status", _DELETE),
        ("status", "finished"),
        ("status", 1),
        ("version", "2"),
        ("version", 99),
        ("version", True),
        ("created", 5),
        ("provenance", "x"),
        ("dashboard", 8265),
        ("spec", _DELETE),
        ("spec", []),
        ("spec", {}),
        ("spec.stages", "alpha"),
        ("spec.stages", [1]),
        ("spec.stages.0.key", None),
        ("spec.stages.0.rule", _DELETE),
        ("spec.stages.0.values", "50"),
        ("spec.fit", []),
        ("spec.data", "x.h5"),
        ("stages", _DELETE),
        ("stages", []),
        ("stages.alpha", "done"),
        ("stages.alpha.status", _DELETE),
        ("stages.alpha.status", "finished"),
        ("stages.alpha.decision", "the first"),
        ("stages.alpha.decision.table", {}),
        ("stages.alpha.decision.table.0", 3),
        ("stages.alpha.decision.trial_id", None),
        ("stages.alpha.decision.explanation", _DELETE),
        ("stages.alpha.fixes", []),
        ("stages.alpha.planned", "two"),
        ("stages.alpha.seconds", "fast"),
        ("stages.alpha.reused", "none"),
        ("selected", None),
        ("selected", "the first"),
        ("selected.trial_id", _DELETE),
        ("selected.checkpoint", None),
        ("selected.chosen", []),
    ]
}
MANIFEST_BYTES: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda text: b"",
    "truncated": lambda text: text[: len(text) // 2],
    "zeros": lambda text: b"\0" * len(text),
    "binary": lambda text: os.urandom(256),
    "not UTF-8": lambda text: b"\xff\xfe" + text,
    "a list": lambda text: b"[]",
    "null": lambda text: b"null",
    "nested too deeply": lambda text: b"[" * 200_000 + b"]" * 200_000,
}


def _check_refused(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], names: str) -> None:
    before = snapshot(run)
    for command, (code, err) in run_commands(run, tmp_path, capsys).items():
        assert code == 2 and one_line(err), (command, err)
        assert names in err, (command, err)
    assert snapshot(run) == before  # nothing written, nothing deleted
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("case", list(MANIFEST_EDITS))
def test_a_manifest_with_a_damaged_value_is_one_line_everywhere(run, tmp_path, capsys, case):
    manifest = json.loads((run / "manifest.json").read_text())
    MANIFEST_EDITS[case](manifest)
    (run / "manifest.json").write_text(json.dumps(manifest))
    _check_refused(run, tmp_path, capsys, "manifest.json")


@pytest.mark.parametrize("case", list(MANIFEST_BYTES))
def test_a_manifest_damaged_on_disk_is_one_line_everywhere(run, tmp_path, capsys, case):
    path = run / "manifest.json"
    path.write_bytes(MANIFEST_BYTES[case](path.read_bytes()))
    _check_refused(run, tmp_path, capsys, "manifest.json")


def test_a_folder_in_place_of_the_manifest_is_one_line_everywhere(run, tmp_path, capsys):
    (run / "manifest.json").unlink()
    (run / "manifest.json").mkdir()
    _check_refused(run, tmp_path, capsys, "manifest.json")


def test_the_undamaged_copy_passes_every_command(run, tmp_path, capsys):
    """The control: the same commands on the copy as it was made all succeed."""
    results = run_commands(run, tmp_path, capsys)
    assert all(code == 0 for code, _ in results.values()), results
    assert (tmp_path / "export" / "weights.pt").is_file()


# -- the result tables --------------------------------------------------------------------------
RESULT_DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(os.urandom(2048)),
    "its footer zeroed": lambda p: p.write_bytes(p.read_bytes()[:-64] + b"\0" * 64),
}


@pytest.mark.parametrize("table", ["trials", "epochs"])
@pytest.mark.parametrize("case", list(RESULT_DAMAGE))
def test_a_damaged_results_file_is_one_line_naming_it(run, tmp_path, capsys, table, case):
    part = run / "results" / table / "stage-alpha" / "part-0.parquet"
    RESULT_DAMAGE[case](part)
    before = snapshot(run)
    trial = json.loads((run / "manifest.json").read_text())["selected"]["trial_id"]
    commands = [["report", str(run)]]
    if table == "trials":  # status and export --trial read the trials table only
        commands.append(["status", str(run)])
        commands.append(["export", str(run), "--trial", trial, "--out", str(tmp_path / "export")])
    for argv in commands:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and one_line(err) and str(part) in err and "damaged" in err, (argv, err)
    assert snapshot(run) == before
    # the selected model is exported from the manifest and its checkpoint, not from the tables
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 0


# -- the selected model's bundle ------------------------------------------------------------------
BUNDLE_DAMAGE: dict[str, Callable[[Path], None]] = {
    "weights truncated": lambda b: (b / "weights.pt").write_bytes((b / "weights.pt").read_bytes()[:1000]),
    "weights empty": lambda b: (b / "weights.pt").write_bytes(b""),
    "config not JSON": lambda b: (b / "config.json").write_text("{"),
    "label stats wrong": lambda b: (b / "label_stats.json").write_text("[]"),
}


@pytest.mark.parametrize("case", list(BUNDLE_DAMAGE))
def test_a_damaged_bundle_is_not_exported_and_the_report_says_why(run, tmp_path, capsys, case):
    manifest = json.loads((run / "manifest.json").read_text())
    bundle = run / manifest["selected"]["checkpoint"] / "model"
    BUNDLE_DAMAGE[case](bundle)
    out = tmp_path / "export"
    assert main(["export", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and f"{bundle}: damaged" in err and "nothing was exported" in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".export")]
    assert main(["status", str(run)]) == 0
    assert main(["report", str(run)]) == 0  # the report stands, its model sections say why not
    page = (run / "report" / "index.html").read_text()
    # labels, traversals, movie, and the ground-truth scores (the data has its factors file);
    # the candidates' sections have none: this run has no beta or seeds stage
    assert page.count("Unavailable:") == 4, capsys.readouterr()


# -- Tune's files, as a killed driver or a full disk leaves them ----------------------------------
def test_status_reads_tune_files_cut_short(run):
    experiment = run / "tune"
    trials = sorted(p for p in experiment.iterdir() if p.is_dir())
    whole = last_reports(str(experiment))
    first, second = trials
    result = first / "result.json"
    lines = result.read_text().splitlines(keepends=True)
    result.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # its last line cut
    (second / "result.json").write_bytes(b"")
    (second / "params.json").write_bytes(b'{"stage": "al')
    config = json.loads(next(iter(sorted(second.glob("checkpoint_*/trial_config.json")))).read_text())
    for history in second.glob("checkpoint_*/history.json"):
        history.write_bytes(b"\0" * 10)
    # its params.json lost: the copy in its checkpoints stands in for it
    assert last_reports(str(experiment))[second.name.split("-", 1)[1]] == {"config": config}
    for copy in second.glob("checkpoint_*/trial_config.json"):
        copy.write_bytes(b'{"stage"')
    reports = last_reports(str(experiment))
    first_id, second_id = (p.name.split("-", 1)[1] for p in trials)
    assert reports[first_id] == json.loads(lines[-2])  # the last report that can be read
    assert reports[second_id] is None  # nothing of it can be read: not started, as far as we know
    assert set(reports) == set(whole)
