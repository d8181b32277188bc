"""Shared fixtures: small real HDF5 files and a small network so tests stay fast."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from psvae import synthetic
from psvae.config import FitConfig

# A narrow network with the paper's layout (5 layers, strides 2,2,2,2,5) for quick CPU tests.
SMALL_NET = {"model.channels": [4, 8, 8, 8, 8]}


def small_config(**overrides: object) -> FitConfig:
    values: dict[str, object] = {
        **SMALL_NET,
        "train.epochs": 3,
        "train.batch_size": 32,
        "train.lr": 1e-3,
        "loss.anneal_epochs": 1,
        "loss.alpha": 50.0,
    }
    values.update(overrides)
    return FitConfig.from_mapping(values)


@pytest.fixture(scope="session")
def synthetic_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in dataset, 10 trials of 32x32 (one block of the default 8;1;1;0 split)."""
    path = tmp_path_factory.mktemp("data") / "synthetic.h5"
    synthetic.write(path, synthetic.SyntheticSpec(n_trials=10, n_frames=40, size=32, seed=3))
    return path


def write_h5(path: Path, groups: dict[str, dict[str, np.ndarray]], attrs: dict | None = None) -> Path:
    """Write ``{"images": {"trial_0000": array, ...}, "labels": {...}}`` as an HDF5 file."""
    with h5py.File(path, "w") as f:
        for group, datasets in groups.items():
            g = f.create_group(group)
            for name, array in datasets.items():
                g.create_dataset(name, data=array)
        for key, value in (attrs or {}).items():
            f[key.split("@")[0]].attrs[key.split("@")[1]] = value
    return path


def make_trials(
    n_trials: int = 10, n_frames: int = 20, size: int = 32, n_labels: int = 2, seed: int = 0
) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    names = [f"trial_{i:04d}" for i in range(n_trials)]
    return {
        "images": {n: rng.integers(0, 256, (n_frames, 1, size, size), dtype=np.uint8) for n in names},
        "labels": {n: rng.normal(size=(n_frames, n_labels)).astype(np.float32) for n in names},
    }


def frame_shape_in_fresh_process(bundle: Path, env: dict[str, str]) -> str:
    """Load an exported bundle in a new Python started outside the repository and the run
    directory; returns the model's frame shape as printed, after asserting the load worked."""
    load = "import psvae, sys; print(psvae.load_model(sys.argv[1]).frame_shape)"
    loaded = subprocess.run(
        [sys.executable, "-c", load, str(bundle)], env=env, capture_output=True, text=True, cwd="/"
    )
    assert loaded.returncode == 0, loaded.stderr
    return loaded.stdout.strip()


REPO = Path(__file__).resolve().parents[1]


def trial_folders(run_dir: Path) -> list[Path]:
    """The trial folders of a run's one Tune experiment (``tune/<stage>-<trial id>/``), not
    Tune's own state files beside them."""
    return sorted(p for p in (run_dir / "tune").glob("*-*") if p.is_dir())


def env_for(home: Path) -> dict[str, str]:
    """The environment of a psvae process under test: HOME pinned (Ray writes its token there),
    the Ray auth variables cleared, the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO)
    return env


def imports_torch(*args: str, env: dict[str, str] | None = None) -> tuple[int, bool]:
    """Run the command line in a new process: (its exit code, whether it imported PyTorch)."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['psvae', *sys.argv[1:]]\n"
        "try:\n"
        "    runpy.run_module('search.cli', run_name='__main__')\n"
        "except SystemExit as stop:\n"
        "    print('exit', stop.code, 'torch' in sys.modules, file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )
    last = (out.stderr.strip().splitlines() or [""])[-1].split()
    assert len(last) == 3 and last[0] == "exit", (args, out.stderr[-2000:])
    return (0 if last[1] == "None" else int(last[1])), last[2] == "True"


def psvae(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the command line in a new process."""
    cmd = [sys.executable, "-m", "search.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def wait_for(
    condition: Callable[[], object],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    every: float = 0.2,
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` s, or when ``proc`` has ended."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(every)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``path``, unmounted afterwards (skipped where mounting is not
    possible, failed under CI)."""
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
        pytest.skip(f"cannot mount a tmpfs here (root is needed): {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)
