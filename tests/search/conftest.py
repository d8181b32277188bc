"""One ``psvae demo --quick`` for the whole session: several test modules check what it leaves
(decisions, results, export, the report) and what it did while it ran (the sockets its process
tree listened on, the dashboard); none of them changes its run directory."""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.conftest import env_for

# A Ray that is not there, announced where a plain ray.init() looks for one: in RAY_ADDRESS and
# in the shared temporary folder's ray_current_cluster. A search that joined it would fail.
NOWHERE = "127.0.0.1:1"
LIMIT_S = 900


@dataclass
class QuickDemo:
    run_dir: Path
    home: Path
    seconds: float
    output: str  # stdout and stderr
    listening: set[tuple[str, str, int]] = field(default_factory=set)  # (process name, address, port)
    dashboard: str | None = None  # the URL the demo printed
    dashboard_status: int | None = None  # what the dashboard answered on that URL while the demo ran


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def listening_sockets(processes: list[psutil.Process]) -> set[tuple[str, str, int]]:
    found = set()
    for proc in processes:
        try:
            name = proc.name()
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((name, conn.laddr.ip, conn.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:  # 401 without the token: it answers
        return int(err.code)
    except OSError:
        return None


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> QuickDemo:
    home = tmp_path_factory.mktemp("quick-demo")
    run_dir = home / "demo"
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray keeps sockets below it
    (ray_tmp / "ray_current_cluster").write_text(NOWHERE)
    env = {**env_for(home), "RAY_ADDRESS": NOWHERE, "RAY_TMPDIR": str(ray_tmp)}
    log = home / "demo.log"
    demo = QuickDemo(run_dir, home, 0.0, "")
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "search.cli", "demo", "--quick", "--out", str(run_dir)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        while proc.poll() is None:
            demo.listening |= listening_sockets(process_tree(proc.pid))
            if demo.dashboard is None:
                found = re.search(r"Ray dashboard: (\S+)", log.read_text(errors="replace"))
                demo.dashboard = found.group(1) if found else None
            if demo.dashboard is not None and demo.dashboard_status is None:
                demo.dashboard_status = http_status(demo.dashboard)
            time.sleep(0.5)
            if time.perf_counter() - start > LIMIT_S:  # a hung demo; not a speed check
                proc.kill()
                proc.wait()
                pytest.fail(f"psvae demo --quick did not end within {LIMIT_S} s")
    demo.seconds = time.perf_counter() - start
    demo.output = log.read_text(errors="replace")
    assert proc.returncode == 0, demo.output[-3000:]
    print(f"\npsvae demo --quick: {demo.seconds:.0f} s")
    return demo
