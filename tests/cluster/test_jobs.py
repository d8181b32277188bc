"""Job submission against real Ray head nodes on 127.0.0.1 (``cluster/local/head.py``).

Each head runs in its own folder with HOME pinned and is ended by its pid with everything
below it; the test checks that none of those processes is left.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cluster.jobs import Cluster
from cluster.local import head as local_head
from psvae import synthetic
from search import demo
from tests.conftest import (
    REPO,
    SMALL_NET,
    env_for,
    frame_shape_in_fresh_process,
    psvae,
    trial_folders,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="psvae-t-", dir="/tmp") as d:  # Ray's sockets: short paths
        yield Path(d)


@pytest.fixture(scope="module")
def token_head(home: Path) -> Iterator[local_head.Head]:
    head = local_head.start(home / "head", num_cpus=2, env=env_for(home))
    below = local_head.descendants(head.pid)
    try:
        yield head
    finally:
        every = {head.pid, *below, *local_head.descendants(head.pid)}
        assert local_head.stop(head.folder)
        assert not [p for p in every if local_head.alive(p)], "processes of the head left behind"


def job_status(head: local_head.Head, job_id: str) -> str:
    assert head.token_path is not None
    headers = {"Authorization": f"Bearer {head.token_path.read_text().strip()}"}
    return str(Cluster(head.address, headers).client().get_job_status(job_id))


def submit(head: local_head.Head, env: dict[str, str], config: Path, run_id: str, storage: Path) -> str:
    out = psvae(
        "submit",
        "--address",
        head.address,
        "--config",
        str(config),
        "--run-id",
        run_id,
        "--storage",
        str(storage),
        env={**env, **head.env()},
    )
    assert out.returncode == 0, out.stderr
    match = re.search(r"submitted job (\S+)", out.stdout)
    assert match, out.stdout
    assert f"run directory: {storage}/{run_id}" in out.stdout
    return match.group(1)


def finished(head: local_head.Head, job_id: str) -> Callable[[], bool]:
    return lambda: job_status(head, job_id) in ("SUCCEEDED", "FAILED", "STOPPED")


def manifest(run_dir: Path) -> dict:
    path = run_dir / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def stage_trials(run_dir: Path, stage: str) -> list[str]:
    """The stage's trial folders in the run's one Tune experiment."""
    return sorted(p.name for p in (run_dir / "tune").glob(f"{stage}-*") if p.is_dir())


def test_a_search_as_a_job_stopped_then_resubmitted_finishes_and_exports(
    token_head: local_head.Head, home: Path, tmp_path: Path
) -> None:
    env = env_for(home)
    storage = tmp_path / "runs"
    # a search of two stages on the quick demo's data with a narrow network (what runs inside a
    # trial is the quick demo's own test; here it is the job around it): beta = 1 reuses alpha =
    # 50's fit, so three fits for four trials
    data = demo.write_inputs(tmp_path / "demo", quick=True).parent / "synthetic.h5"
    screen = {"rule_params": {"min_active_var": 1e-9}}  # tiny fits: about the job, not latents
    stages = [{"name": "alpha", "values": [50, 100]}, {"name": "beta", "values": [1, 5], **screen}]
    fit = {**SMALL_NET, "train.epochs": 12, "train.batch_size": 32, "loss.anneal_epochs": 1}
    config = tmp_path / "small.yaml"
    config.write_text(
        yaml.safe_dump({"data": [str(data)], "fit": fit, "stages": stages, "checkpoint_every_s": 0})
    )

    # 1. submitted, then stopped during its beta stage
    t0 = time.monotonic()
    job = submit(token_head, env, config, "stopped", storage)
    run_dir = storage / "stopped"
    wait_for(lambda: stage_trials(run_dir, "alpha"), 120, "the first trial")
    print(f"\nsubmit -> first trial running: {time.monotonic() - t0:.1f} s")
    wait_for(
        lambda: (
            manifest(run_dir).get("stages", {}).get("beta", {}).get("status") == "running"
            and bool(stage_trials(run_dir, "beta"))
        ),
        240,
        "the beta stage",
    )
    alpha_trials = stage_trials(run_dir, "alpha")
    alpha_rows = pd.read_parquet(run_dir / "results" / "trials" / "stage-alpha")
    out = psvae("jobs", "stop", job, "--address", token_head.address, env={**env, **token_head.env()})
    assert out.returncode == 0 and "stopping" in out.stdout, out.stderr
    wait_for(finished(token_head, job), 120, "the stopped job", every=1)
    assert job_status(token_head, job) == "STOPPED"
    assert manifest(run_dir)["stages"]["beta"]["status"] != "done"

    # 2. resubmitted under the same run id: it goes on, and ends
    job = submit(token_head, env, config, "stopped", storage)
    wait_for(finished(token_head, job), 300, "the resubmitted job", every=1)
    assert job_status(token_head, job) == "SUCCEEDED", psvae(
        "jobs", "logs", job, "--address", token_head.address, env={**env, **token_head.env()}
    ).stdout[-3000:]
    m = manifest(run_dir)
    assert m["status"] == "done" and [m["stages"][s]["status"] for s in ("alpha", "beta")] == ["done"] * 2
    assert stage_trials(run_dir, "alpha") == alpha_trials  # no new alpha trial
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "results" / "trials" / "stage-alpha"), alpha_rows)
    trials = pd.read_parquet(run_dir / "results" / "trials")
    epochs = pd.read_parquet(run_dir / "results" / "epochs")
    assert len(trials) == 4 and trials.trial_id.is_unique
    assert trials.reused_from.notna().sum() == 1  # beta = 1 is alpha = 50's fit
    assert len(trial_folders(run_dir)) == 3  # nothing fitted twice, before or after the stop
    assert len(epochs) == 3 * 12 and not epochs.duplicated(["trial_id", "epoch"]).any()
    out = psvae("export", str(run_dir), "--out", str(tmp_path / "export"), env=env)
    assert out.returncode == 0, out.stderr
    assert frame_shape_in_fresh_process(tmp_path / "export", env) == "(1, 64, 64)"


def tiny_search(tmp_path: Path) -> Path:
    """A search config that passes the checks and fits in seconds (never waited for here)."""
    data = synthetic.write(tmp_path / "d.h5", synthetic.SyntheticSpec(n_trials=10, n_frames=20, size=32))
    config = tmp_path / "c.yaml"
    fit = {**SMALL_NET, "train.epochs": 1, "loss.anneal_epochs": 0}
    config.write_text(yaml.safe_dump({"data": [str(data)], "fit": fit}))
    return config


def raw_submit(address: str, headers: dict[str, str]) -> int:
    body = json.dumps({"entrypoint": "echo hi"}).encode()
    request = urllib.request.Request(
        f"{address}/api/jobs/",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_token_head_rejects_unauthenticated_jobs(
    token_head: local_head.Head, home: Path, tmp_path: Path
) -> None:
    assert token_head.token_path is not None
    assert token_head.token_path.stat().st_mode & 0o777 == 0o600
    assert raw_submit(token_head.address, {}) == 401
    assert raw_submit(token_head.address, {"Authorization": "Bearer " + "0" * 64}) == 403
    config = tiny_search(tmp_path)
    # without a token psvae refuses before sending anything
    out = psvae(
        "submit",
        "--address",
        token_head.address,
        "--config",
        str(config),
        "--storage",
        str(tmp_path),
        env=env_for(home / "elsewhere"),
    )
    assert out.returncode == 2 and "asks for a token" in out.stderr and len(out.stderr.splitlines()) == 1


def test_auth_less_head_needs_insecure(home: Path, tmp_path: Path) -> None:
    env = env_for(home)
    # through the shell scripts this time
    folder = Path(tempfile.mkdtemp(prefix="h", dir=home))
    scripts = {"PYTHON": sys.executable, **env}
    started = subprocess.run(
        [REPO / "cluster/local/start-head.sh", folder, "--num-cpus", "1", "--no-auth"],
        env=scripts, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    head = local_head.load(folder)
    assert head.address in started.stdout and head.token_path is None
    try:
        config = tiny_search(tmp_path)
        args = [
            "submit",
            "--address",
            head.address,
            "--config",
            str(config),
            "--storage",
            str(tmp_path / "r"),
        ]
        out = psvae(*args, env={**env, **head.env()})
        assert out.returncode == 2 and "--insecure" in out.stderr and "without authentication" in out.stderr
        assert not (tmp_path / "r").exists()
        out = psvae(*args, "--insecure", env={**env, **head.env()})
        assert out.returncode == 0, out.stderr
        job = re.search(r"submitted job (\S+)", out.stdout)
        assert job
        out = psvae("jobs", "stop", job.group(1), "--address", head.address, "--insecure", env=env)
        assert out.returncode == 0, out.stderr
    finally:
        below = local_head.descendants(head.pid)
        stopped = subprocess.run([REPO / "cluster/local/stop-head.sh", folder], env=scripts, timeout=60)
        assert stopped.returncode == 0
        assert not [p for p in [head.pid, *below] if local_head.alive(p)], "processes of the head left behind"
        assert not (folder / local_head.STATE).exists()
