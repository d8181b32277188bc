"""A real two-node Ray cluster on this machine: a token-auth head on 127.0.0.1
(``cluster/local/head.py``) and a second ``ray start`` node that joins it through a host name
resolving to 127.0.0.1, with a node address of its own (127.0.0.2), both on loopback.

- A storage folder the second node cannot see (the node runs in a mount namespace of its own,
  where a different tmpfs lies over the folder) is refused before anything runs, naming it.
- A shared folder (the same file system for both, as EFS, Filestore or NFS would be) passes: a
  quick search runs trials on both nodes; the second node is killed (its raylet's process tree,
  by pid) while a trial runs there; Tune retries that trial on the head and the run completes
  with every row once.

Every process is ended by its pid; the test checks that none is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cluster.local import head as local_head
from search.rundir import FINAL
from tests.conftest import SMALL_NET, env_for, psvae, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.ray]
WORKER_IP = "127.0.0.2"  # the second node's own loopback address
ADDED_NAME = "psvae-loopback-head"


def loopback_name() -> Iterator[str]:
    """A host name that resolves to 127.0.0.1 and that Ray does not rewrite (it swaps
    ``localhost`` and ``127.0.0.1`` for the machine's routable address when a node joins). One
    from /etc/hosts if there is one; else a name added to /etc/hosts for the test and removed
    afterwards (exactly the line added)."""
    from ray._common.network_utils import is_localhost

    for name in (socket.gethostname(), "localhost.localdomain", "ip6-localhost"):
        try:
            if socket.gethostbyname(name) == "127.0.0.1" and not is_localhost(name):
                yield name
                return
        except OSError:
            continue
    line = f"127.0.0.1 {ADDED_NAME}\n"
    hosts = Path("/etc/hosts")
    try:
        with hosts.open("a") as f:
            f.write(line)
    except OSError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no host name resolves to 127.0.0.1 and /etc/hosts cannot take one: {err}")
        pytest.skip(f"no host name resolves to 127.0.0.1 and /etc/hosts cannot take one ({err})")
    try:
        yield ADDED_NAME
    finally:
        text = hosts.read_text()
        if line in text:
            hosts.write_text(text.replace(line, "", 1))


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="psvae-2n-", dir="/tmp") as d:  # Ray's sockets: short paths
        yield Path(d)


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    yield from loopback_name()


@pytest.fixture(scope="module")
def cluster_head(home: Path) -> Iterator[local_head.Head]:
    head = local_head.start(home / "head", num_cpus=1, env=env_for(home))
    try:
        yield head
    finally:
        every = {head.pid, *local_head.descendants(head.pid)}
        assert local_head.stop(head.folder)
        assert not [p for p in every if local_head.alive(p)], "processes of the head left behind"


def search_config(folder: Path, data: Path, epochs: int, alphas: list[float]) -> Path:
    config = folder / "search.yaml"
    fit = {**SMALL_NET, "train.epochs": epochs, "train.batch_size": 32, "loss.anneal_epochs": 1}
    config.write_text(
        yaml.safe_dump(
            {
                "data": [str(data)],
                "fit": fit,
                "stages": [{"name": "alpha", "values": alphas}],
                "resources": {"cpus_per_trial": 1, "max_concurrent": 2},
                "max_failures": 2,
                "checkpoint_every_s": 0,
            }
        )
    )
    return config


def reports(run_dir: Path) -> dict[str, list[dict]]:
    """Trial folder -> its reports so far (Tune records each report's node_ip)."""
    out = {}
    for result in (run_dir / "tune").glob("alpha-*/result.json"):
        lines = [line for line in result.read_text().splitlines() if line.strip()]
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except ValueError:  # the line being written
                continue
        out[result.parent.name] = parsed
    return out


def node_pids(worker: local_head.Worker) -> list[int]:
    return [worker.pid, *local_head.descendants(worker.pid)]


def kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not [p for p in pids if local_head.alive(p)], 30, "the killed node's processes to end")


def test_a_storage_folder_one_node_cannot_see_is_refused_naming_the_node(
    cluster_head: local_head.Head, home: Path, host: str, tmp_path: Path, synthetic_file: Path
) -> None:
    storage = tmp_path / "runs"
    storage.mkdir()
    # the second node sees another file system at the storage path: a tmpfs of its own over it
    blind = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f'mount -t tmpfs -o size=1m tmpfs "{storage}" && exec "$@"', "sh"]  # fmt: skip
    if subprocess.run([*blind, "true"], capture_output=True).returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("cannot give a node a mount namespace of its own (unshare --mount)")
        pytest.skip("cannot give a node a mount namespace of its own here (unshare --mount needs root)")
    worker = local_head.start_worker(
        home / "blind", cluster_head, host, num_cpus=1, env=env_for(home), wrap=blind
    )
    pids = node_pids(worker)
    try:
        config = search_config(tmp_path, synthetic_file, epochs=2, alphas=[50])
        env = {**env_for(home), **cluster_head.env()}
        address = f"{host}:{cluster_head.gcs_address.rsplit(':', 1)[1]}"
        out = psvae("search", "--config", str(config), "--run-id", "r1", "--storage", str(storage),
                    "--address", address, env=env)  # fmt: skip
        assert out.returncode == 2, out.stderr[-3000:]
        lines = [line for line in out.stderr.splitlines() if line.startswith("psvae")]
        assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
        line = lines[0]
        assert f"--storage {storage}: not one shared folder for the whole cluster" in line
        assert f"1 of 2 nodes cannot see {storage / 'r1'}" in line and f"({WORKER_IP}, node " in line
        assert "cannot read it" in line and "s3://" in line
        assert not (storage / "r1" / "tune").exists()  # no trial ran
        assert not list((storage / "r1").glob(".psvae-storage-probe-*"))  # the marker, removed
    finally:
        local_head.stop(worker.folder)
        assert not [p for p in pids if local_head.alive(p)], "processes of the node left behind"


def test_a_search_across_two_nodes_survives_losing_one(
    cluster_head: local_head.Head, home: Path, host: str, tmp_path: Path, synthetic_file: Path
) -> None:
    worker = local_head.start_worker(home / "worker", cluster_head, host, num_cpus=1, env=env_for(home))
    storage = tmp_path / "runs"  # on this machine: one file system for both nodes, as a mount is
    run_dir = storage / "r2"
    epochs = 40
    config = search_config(tmp_path, synthetic_file, epochs=epochs, alphas=[50, 100, 500, 1000])
    env = {**env_for(home), **cluster_head.env()}
    address = f"{host}:{cluster_head.gcs_address.rsplit(':', 1)[1]}"
    log = open(tmp_path / "search.log", "wb")  # noqa: SIM115 - closed below
    driver = subprocess.Popen(
        [sys.executable, "-m", "search.cli", "search", "--config", str(config), "--run-id", "r2",
         "--storage", str(storage), "--address", address],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # a trial has run a few epochs on the second node: kill the node under it
        def on_worker() -> str | None:
            for folder, lines in reports(run_dir).items():
                if len(lines) >= 3 and lines[-1].get("node_ip") == WORKER_IP and not lines[-1].get(FINAL):
                    return folder
            return None

        wait_for(lambda: on_worker() is not None, 400, "a trial running on the second node", driver)
        victim = on_worker()
        kill(node_pids(worker))
        assert driver.wait(timeout=900) == 0, (tmp_path / "search.log").read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        log.close()
        local_head.stop(worker.folder)

    trials = pd.read_parquet(run_dir / "results" / "trials")
    epochs_table = pd.read_parquet(run_dir / "results" / "epochs")
    assert len(trials) == 4 and trials.trial_id.is_unique and (trials.status == "completed").all()
    assert len(epochs_table) == 4 * epochs and not epochs_table.duplicated(["trial_id", "epoch"]).any()
    seen = reports(run_dir)
    nodes_used = {line.get("node_ip") for lines in seen.values() for line in lines}
    assert nodes_used == {"127.0.0.1", WORKER_IP}  # both nodes took trials
    retried = seen[victim]
    assert retried[-1].get(FINAL) and retried[-1]["node_ip"] == "127.0.0.1"  # finished on the head
    assert any(r["iterations_since_restore"] < r["training_iteration"] for r in retried)  # restored
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["stages"]["alpha"]["status"] == "done"
    assert not list(run_dir.glob(".psvae-storage-probe-*"))
