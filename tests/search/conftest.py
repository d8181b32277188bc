"""One ``psvae demo --quick`` for the whole session: several test modules check what it leaves
(decisions, results, export, the report); none of them changes its run directory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import env_for, psvae


@dataclass(frozen=True)
class QuickDemo:
    run_dir: Path
    home: Path
    seconds: float
    output: str  # stdout and stderr


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> QuickDemo:
    home = tmp_path_factory.mktemp("quick-demo")
    run_dir = home / "demo"
    start = time.perf_counter()
    proc = psvae("demo", "--quick", "--out", str(run_dir), env=env_for(home), timeout=600)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"\npsvae demo --quick: {seconds:.0f} s")
    return QuickDemo(run_dir, home, seconds, proc.stdout + proc.stderr)
