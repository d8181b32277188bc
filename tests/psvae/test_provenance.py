"""Provenance: one version, the source commit when this is a git checkout (None otherwise, never
an error), each data file's size and SHA-256, recorded in every bundle psvae fit writes."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from importlib import metadata

import pytest

import psvae
from psvae import provenance
from psvae.fit import run_fit
from search.cli import EXAMPLES, build_parser, load_fit_config, main
from tests.conftest import REPO, SMALL_NET


def test_the_version_has_one_source():
    assert psvae.__version__ == provenance.package_version() == metadata.version("psvae-tune")
    text = (REPO / "pyproject.toml").read_text()
    assert f'version = "{psvae.__version__}"' in text


def test_the_commit_is_this_checkouts_or_none():
    git = shutil.which("git")
    commit = provenance.git_commit()
    if git is None or not (REPO / ".git").exists():
        assert commit is None
        return
    head = subprocess.run([git, "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert commit == head.stdout.strip() and len(commit) == 40
    assert provenance.git_dirty() in (True, False)


def test_a_folder_that_is_not_the_top_of_a_checkout_has_no_commit(tmp_path):
    assert provenance.git_commit(tmp_path) is None and provenance.git_dirty(tmp_path) is None
    inside = REPO / "psvae"  # inside a checkout, but not its top: someone else's repository
    assert provenance.git_commit(inside) is None


def test_without_git_the_commit_is_none(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert provenance.git_commit() is None and provenance.version_line() == f"psvae {psvae.__version__}"


def test_files_are_hashed_in_chunks(tmp_path):
    path = tmp_path / "big.bin"
    data = bytes(range(256)) * (3 * provenance.CHUNK // 256 + 7)  # several chunks and a partial one
    path.write_bytes(data)
    record = provenance.file_record(path)
    assert record == {
        "path": str(path.resolve()),
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def test_psvae_fit_records_provenance_in_its_bundle(tmp_path, synthetic_file):
    cfg = load_fit_config(None, [f"model.channels={SMALL_NET['model.channels']}", "train.epochs=2"])
    run_fit([str(synthetic_file)], cfg, tmp_path / "fit", progress=False)
    recorded = json.loads((tmp_path / "fit" / "model" / "config.json").read_text())["provenance"]
    assert recorded["psvae_version"] == psvae.__version__
    assert recorded["git_commit"] == provenance.git_commit()
    digest = hashlib.sha256(synthetic_file.read_bytes()).hexdigest()
    assert recorded["data"] == [
        {"path": str(synthetic_file.resolve()), "size": synthetic_file.stat().st_size, "sha256": digest}
    ]
    assert psvae.load_model(tmp_path / "fit" / "model").provenance == recorded


def test_save_bundle_takes_a_callers_provenance(tmp_path):
    from psvae.config import FitConfig
    from psvae.data import LabelStats
    from psvae.model import PSVAE

    cfg = FitConfig.from_mapping({**SMALL_NET, "train.epochs": 2, "loss.anneal_epochs": 1})
    net = PSVAE((1, 32, 32), 1, cfg.model)
    given = {
        "psvae_version": "x",
        "git_commit": None,
        "git_dirty": None,
        "data": [{"path": "/a.h5", "size": 1, "sha256": "0"}],
    }
    psvae.save_bundle(tmp_path / "b", net, cfg, LabelStats(("0",), (0.0,), (1.0,)), provenance=given)
    assert psvae.load_model(tmp_path / "b").provenance == given
    psvae.save_bundle(tmp_path / "c", net, cfg, LabelStats(("0",), (0.0,), (1.0,)))
    assert psvae.load_model(tmp_path / "c").provenance["data"] == []


def test_psvae_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == provenance.version_line()
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", "--version"], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0 and proc.stdout.startswith(f"psvae {psvae.__version__}")


def test_every_subcommand_help_ends_with_an_example():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) == set(EXAMPLES), "give every subcommand an entry in search.cli.EXAMPLES"
    for name, sub in commands.items():
        assert sub.epilog and sub.epilog.startswith("example:") and f"psvae {name}" in sub.epilog
        assert f"  psvae {name}" in sub.format_help()
