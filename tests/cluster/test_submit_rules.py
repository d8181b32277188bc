"""The checks psvae submit makes before sending anything, as plain functions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cluster import jobs
from psvae import synthetic
from psvae.errors import UserError
from search.storage import check_submit_storage


@pytest.mark.parametrize(
    ("storage", "refused"),
    [
        ("/data/runs", False),  # a shared mount on every node: the job's driver checks that it is
        ("file:///data/runs", False),
        ("runs", True),  # would land in the job's temporary working folder
        ("./runs", True),
        ("file://runs", True),
        ("s3://bucket/runs", False),
        ("gs://bucket/runs", False),
    ],
)
def test_submit_takes_an_absolute_path_or_an_object_store(storage: str, refused: bool) -> None:
    """psvae submit cannot run tasks on the cluster's nodes before its job starts: whether every
    node sees a path is checked by the job's driver (tests/cluster/test_two_nodes.py); before
    submitting, only a path the job would resolve inside its own working folder is refused."""
    if refused:
        with pytest.raises(UserError, match="absolute"):
            check_submit_storage(storage)
    else:
        check_submit_storage(storage)


def test_the_token_is_found_in_rays_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert jobs.read_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert jobs.read_token() == "from-home"
    (tmp_path / "t").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t"))
    assert jobs.read_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-variable")
    assert jobs.read_token() == "from-variable"
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no such token file"):
        jobs.read_token()


def test_the_job_ships_only_the_config_with_absolute_data_paths(tmp_path: Path) -> None:
    synthetic.write(tmp_path / "d.h5", synthetic.SyntheticSpec(n_trials=10, n_frames=20, size=32))
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({"data": ["d.h5"], "fit": {"train.epochs": 3, "loss.anneal_epochs": 1}}))
    folder = jobs.stage_config(config, alpha=100.0, beta=None)
    try:
        assert [p.name for p in folder.iterdir()] == [jobs.CONFIG_NAME]
        shipped = yaml.safe_load((folder / jobs.CONFIG_NAME).read_text())
    finally:
        shutil.rmtree(folder)  # ours: the temporary folder stage_config made (submit removes it)
    assert shipped["data"] == [str((tmp_path / "d.h5").resolve())]
    assert (
        shipped["alpha"] == 100.0
        and "beta" not in shipped
        and shipped["fit"] == {"train.epochs": 3, "loss.anneal_epochs": 1}
    )


def test_a_bad_config_is_refused_before_submitting(tmp_path: Path) -> None:
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({"data": ["missing.h5"]}))
    with pytest.raises(UserError, match=r"missing\.h5"):
        jobs.stage_config(config, None, None)


def test_only_a_dashboard_url_is_taken() -> None:
    with pytest.raises(UserError, match="http://HOST:8265"):
        jobs.connect("127.0.0.1:6379")
