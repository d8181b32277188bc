"""One driver per run on an object store: the lock lives beside the run's mirror (which every
pull replaces), a second driver is refused before it touches the mirror, and a reader on the
same machine does not pull over a running driver's files. A real S3-compatible server (moto)
on 127.0.0.1 and a real second process holding the lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from psvae.errors import UserError
from search.cli import main
from search.driver import open_run
from search.spec import load_spec
from search.storage import resolve_storage
from tests.conftest import REPO, env_for
from tests.search.test_search_ray import write_spec
from tests.search.test_storage_s3 import BUCKET, s3  # noqa: F401 - the server, a fixture

pytestmark = pytest.mark.slow

HOLD = """
import sys, time
from search.driver import check_or_create, open_run
from search.spec import load_spec
from search.storage import resolve_storage
spec = load_spec(sys.argv[1])
run, lock = open_run(spec, resolve_storage(sys.argv[2]), "r1")
check_or_create(run, spec)
(run.local / "search.log").write_text("the live driver's log\\n")
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_driver_of_an_object_store_run_is_refused_and_its_mirror_kept(
    request: pytest.FixtureRequest, synthetic_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = request.getfixturevalue("s3")
    env = {**env_for(tmp_path), **server, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    for key, value in env.items():
        if key.startswith(("AWS_", "XDG_")):
            monkeypatch.setenv(key, value)
    config = write_spec(tmp_path, synthetic_file, [{"name": "seeds", "values": [0]}])
    storage = f"s3://{BUCKET}/locks"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(config), storage], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        store = resolve_storage(storage)
        mirror = store.local / "r1"
        log = mirror / "search.log"
        with pytest.raises(
            UserError, match=rf"another psvae driver is running this run \(pid {holder.pid} on"
        ):
            open_run(load_spec(config), store, "r1")
        assert log.read_text() == "the live driver's log\n"  # the second driver pulled nothing over it
        assert main(["resume", f"{storage}/r1"]) == 2
        assert main(["status", f"{storage}/r1"]) == 0  # read from the live mirror, not pulled over it
        assert log.read_text() == "the live driver's log\n"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        run, lock = open_run(load_spec(config), store, "r1")  # a killed driver's lock does not block
        assert run.local == mirror
        lock.release()
        assert (mirror / "manifest.json").is_file()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
