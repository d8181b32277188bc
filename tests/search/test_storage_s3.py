"""A search whose storage is an S3 bucket: a real S3-compatible server (moto) on 127.0.0.1,
reached through pyarrow exactly as AWS would be, with a real local Ray."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from tests.conftest import env_for, frame_shape_in_fresh_process, psvae
from tests.search.test_search_ray import write_spec

pytestmark = [pytest.mark.slow, pytest.mark.ray]
BUCKET = "psvae-runs"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.3)
        yield {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def bucket_fs(env: dict[str, str]) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        endpoint_override=env["AWS_ENDPOINT_URL"],
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
    )


def trial_dirs(fs: pafs.FileSystem, run: str) -> list[str]:
    found = fs.get_file_info(pafs.FileSelector(run, recursive=True))
    return sorted(
        f.path
        for f in found
        if f.type == pafs.FileType.Directory
        and f.path.rsplit("/", 2)[-2] == "tune"  # the run's one experiment: a folder per trial
    )


def test_search_on_s3_storage_resumes_and_exports_from_any_machine(
    s3: dict[str, str], synthetic_file: Path, tmp_path: Path
) -> None:
    env = {**env_for(tmp_path), **s3, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    # about storage, not the latents: two-epoch latents barely vary and may still be chosen
    screen = {"rule_params": {"min_active_var": 1e-9}}
    stages = [{"name": "alpha", "values": [50, 500]}, {"name": "seeds", "values": [0, 1], **screen}]
    spec = write_spec(tmp_path, synthetic_file, stages, fit={"train.epochs": 2})
    storage = f"s3://{BUCKET}/runs"
    out = psvae("search", "--config", str(spec), "--run-id", "r1", "--storage", storage, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"run directory: {storage}/r1" in out.stdout

    fs = bucket_fs(s3)
    with fs.open_input_stream(f"{BUCKET}/runs/r1/manifest.json") as f:
        manifest = json.loads(f.read())
    checkpoint = manifest["selected"]["checkpoint"]  # relative to the run, which is in the bucket
    assert manifest["status"] == "done" and checkpoint.startswith("tune/")
    assert fs.get_file_info(f"{BUCKET}/runs/r1/{checkpoint}/model/weights.pt").type == pafs.FileType.File
    trials = pq.read_table(f"{BUCKET}/runs/r1/results/trials", filesystem=fs).to_pandas()
    epochs = pq.read_table(f"{BUCKET}/runs/r1/results/epochs", filesystem=fs).to_pandas()
    # seed 0 at the chosen alpha is the alpha stage's fit: 3 fits for 4 rows
    assert len(trials) == 4 and trials.trial_id.is_unique and len(epochs) == 3 * 2
    with fs.open_input_stream(f"{BUCKET}/runs/r1/report/index.html") as f:
        page = f.read().decode()
    assert "Latent traversals" in page and 'class="error"' not in page  # drawn from the bucket's bundle
    before = trial_dirs(fs, f"{BUCKET}/runs/r1")
    assert len(before) == 3  # Tune's experiment lives in the bucket too

    # another machine: nothing of the run on its disk
    env2 = {**env, "XDG_CACHE_HOME": str(tmp_path / "cache2")}
    out = psvae("status", f"{storage}/r1", env=env2)
    assert out.returncode == 0 and "selected: trial" in out.stdout, out.stderr
    out = psvae("export", f"{storage}/r1", "--out", str(tmp_path / "export"), env=env2)
    assert out.returncode == 0, out.stderr
    assert frame_shape_in_fresh_process(tmp_path / "export", env2) == "(1, 32, 32)"
    out = psvae("resume", f"{storage}/r1", env=env2)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("done earlier") == 2
    assert trial_dirs(fs, f"{BUCKET}/runs/r1") == before


def test_a_missing_bucket_is_refused_before_ray_starts(
    s3: dict[str, str], synthetic_file: Path, tmp_path: Path
) -> None:
    env = {**env_for(tmp_path), **s3, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    spec = write_spec(tmp_path, synthetic_file, [{"name": "seeds", "values": [0]}])
    out = psvae("search", "--config", str(spec), "--storage", "s3://no-such-bucket/runs", env=env)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "no-such-bucket" in out.stderr and "does not exist" in out.stderr
    out = psvae("search", "--config", str(spec), "--storage", "ftp://host/runs", env=env)
    assert out.returncode == 2 and "unsupported scheme" in out.stderr


def test_a_hostile_run_id_in_a_shared_bucket_deletes_nothing(s3: dict[str, str], tmp_path: Path) -> None:
    """Anyone who can write to a shared bucket can write a manifest: its run id must not lead the
    driver out of its mirror. ``../../../../victim`` from the mirror folder is ``tmp_path/victim``."""
    env = {**env_for(tmp_path), **s3, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("years of work")
    manifest = {
        "version": 1,
        "run_id": "../../../../victim",
        "spec_hash": "0" * 16,
        "spec": {"data": [], "fit": {}, "stages": []},
        "stages": {},
        "status": "running",
        "selected": None,
    }
    fs = bucket_fs(s3)
    fs.create_dir(f"{BUCKET}/runs/evil")
    with fs.open_output_stream(f"{BUCKET}/runs/evil/manifest.json") as f:
        f.write(json.dumps(manifest).encode())
    run = f"s3://{BUCKET}/runs/evil"
    for command in (["resume", run], ["status", run], ["export", run, "--out", str(tmp_path / "out")]):
        out = psvae(*command, env=env)
        assert out.returncode == 2, out.stderr[-2000:]
        assert len(out.stderr.strip().splitlines()) == 1 and "one plain name" in out.stderr
    assert (victim / "thesis.txt").read_text() == "years of work"
    assert not (tmp_path / "out").exists()
