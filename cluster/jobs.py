"""Submit the staged search to a Ray cluster as a Ray Job, and watch or stop it.

Ray's Jobs API runs any code for anyone who can reach it, so a submission is authenticated by
default: the client sends the cluster's token (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``, in Ray's order) and refuses a cluster that takes jobs without one unless
``--insecure`` is given. The job ships nothing but the search config (data paths made
absolute): data, results, virtualenvs and code stay where they are; the cluster runs the
psvae-tune installed on it.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from psvae.errors import UserError
from search.rundir import check_run_id
from search.storage import check_submit_storage

# `ray job stop` then interrupts Tune with SIGINT and waits for it to save the experiment state
# before the SIGKILL; a resubmission of the same run id continues from there
STOP_ENV = {"RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": "60"}
CONFIG_NAME = "search.yaml"
SHADOWRAY = (
    "anyone who can reach it can run code on its machines (CVE-2023-48022); start the head with "
    "token auth (RAY_AUTH_MODE=token) or pass --insecure if it is reachable by you alone"
)


def read_token() -> str | None:
    """The cluster token, looked up as Ray does: the variable, the file it names, the default file."""
    if token := os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return token
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(named).expanduser() if named else Path.home() / ".ray" / "auth_token"
    if path.is_file():
        return path.read_text().strip() or None
    if named:
        raise UserError(f"RAY_AUTH_TOKEN_PATH={named}: no such token file")
    return None


def _get(address: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{address.rstrip('/')}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError as err:
        raise UserError(f"--address {address}: cannot reach the Ray dashboard ({err})") from None


@dataclass(frozen=True)
class Cluster:
    """A reachable head whose authentication has been checked."""

    address: str
    headers: dict[str, str]

    def client(self) -> Any:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address, headers=self.headers)


def connect(address: str, insecure: bool = False) -> Cluster:
    """Check how the head authenticates before sending it anything."""
    if not address.startswith(("http://", "https://")):
        raise UserError(f"--address {address}: expected the dashboard's URL, http://HOST:8265")
    status, _ = _get(address, "/api/version", {})
    if status == 200:  # no token asked for
        if not insecure:
            raise UserError(f"--address {address}: it takes jobs without authentication: {SHADOWRAY}")
        return Cluster(address, {})
    if status != 401:
        raise UserError(f"--address {address}: not a Ray dashboard (HTTP {status} for /api/version)")
    token = read_token()
    if token is None:
        raise UserError(
            f"--address {address}: the cluster asks for a token and none was found "
            "(set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or put it in ~/.ray/auth_token)"
        )
    headers = {"Authorization": f"Bearer {token}"}
    status, _ = _get(address, "/api/version", headers)
    if status != 200:
        raise UserError(f"--address {address}: the cluster refused the token (HTTP {status})")
    return Cluster(address, headers)


def stage_config(
    config: Path, alpha: float | None, beta: float | None, data: Sequence[str] | None = None
) -> Path:
    """A folder holding only the search config, its data paths made absolute: the job's
    ``working_dir``. The spec is checked here, before anything is sent. ``data`` (``--data``)
    replaces the config's data files."""
    from psvae import yaml_io
    from search.spec import load_spec

    spec = load_spec(config, alpha=alpha, beta=beta, data=data)
    raw = dict(yaml_io.read(config, "search config"))
    raw["data"] = list(spec.data)
    for name, value in (("alpha", alpha), ("beta", beta)):
        if value is not None:
            raw[name] = value
    folder = Path(tempfile.mkdtemp(prefix="psvae-job-"))
    (folder / CONFIG_NAME).write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


def submit(
    cluster: Cluster,
    config: Path,
    run_id: str,
    storage: str,
    alpha: float | None = None,
    beta: float | None = None,
    data: Sequence[str] | None = None,
) -> str:
    """Submit ``psvae search`` as a Ray Job; returns the job's submission id."""
    check_run_id(run_id)
    check_submit_storage(storage)  # that every node sees it is checked by the job's driver
    folder = stage_config(config, alpha, beta, data)  # a new temporary folder of ours
    try:
        entrypoint = shlex.join(
            ["python", "-m", "search.cli", "search", "--config", CONFIG_NAME,
             "--run-id", run_id, "--storage", storage, "--address", "auto"]
        )  # fmt: skip
        return str(
            cluster.client().submit_job(
                entrypoint=entrypoint,
                submission_id=f"psvae-{run_id}-{secrets.token_hex(3)}",  # one run, many jobs
                runtime_env={"working_dir": str(folder), "env_vars": dict(STOP_ENV)},
                metadata={"psvae_run_id": run_id, "psvae_storage": storage},
            )
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # ours: the temporary folder stage_config made
