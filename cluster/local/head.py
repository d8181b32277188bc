"""A Ray head node on 127.0.0.1 with token auth, in a folder of its own, stopped by its pid;
and worker nodes that join it on the same machine (a second node for tests of a cluster).

    python -m cluster.local.head start DIR [--num-cpus N]   # prints the dashboard address
    python -m cluster.local.head stop DIR

DIR holds everything the head owns: Ray's temp dir, the token (mode 0600), the log, the ports
and the pid of ``ray start --block``. ``stop`` ends exactly that process and every process below
it: never ``ray stop``, which ends every Ray process of the user.
Ray keeps socket paths under DIR: keep DIR short (``/tmp/...``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

STATE = "head.json"
WORKER_PORTS = 200  # one per worker process: plenty for one machine
TOKEN = "auth_token"
# every port Ray would otherwise take at its default, so two heads (or a head and a local Ray)
# on one machine never meet
PORT_FLAGS = (
    "--port",
    "--dashboard-port",
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)


@dataclass(frozen=True)
class Head:
    folder: Path
    pid: int
    address: str  # the dashboard / Jobs API, http://127.0.0.1:PORT
    gcs_address: str  # for ray.init(address=...) and worker nodes
    token_path: Path | None  # None: a head without auth (for tests of the refusal)

    def env(self) -> dict[str, str]:
        """Variables that let a client on this machine authenticate to the head."""
        if self.token_path is None:
            return {"RAY_AUTH_MODE": "disabled"}
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _free_range(n: int, avoid: set[int]) -> int:
    """The first port of ``n`` consecutive free ports below the kernel's ephemeral range, so
    ports picked by the kernel (as above) never fall inside it."""
    for _ in range(100):
        low = secrets.randbelow(10_000) + 20_000
        ports = range(low, low + n)
        if avoid.intersection(ports):
            continue
        try:
            for port in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return low
    raise RuntimeError(f"no {n} consecutive free ports found for Ray's workers")


def write_token(path: Path) -> Path:
    """A new 256-bit token, readable by its owner only (created 0600, never widened)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def _answering(address: str) -> bool:
    try:
        urllib.request.urlopen(f"{address}/api/version", timeout=2).close()
        return True
    except urllib.error.HTTPError:  # 401 from a token head: it is up
        return True
    except OSError:
        return False


def start(
    folder: Path,
    num_cpus: int | None = None,
    auth: bool = True,
    timeout_s: float = 90,
    env: dict[str, str] | None = None,
) -> Head:
    """Start ``ray start --head --block`` in its own process group; returns once the dashboard
    answers. ``env``: the head's environment (default: this process's), which its workers and
    job drivers inherit."""
    folder = folder.resolve()
    if (folder / STATE).exists():
        raise RuntimeError(f"{folder}: a head was started here already (stop it first)")
    folder.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
    worker_low = _free_range(WORKER_PORTS, set(ports.values()))
    env = dict(os.environ if env is None else env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # Ray swaps 127.0.0.1 for the machine's routable address unless told that this is a
    # one-machine cluster; the head then takes loopback for its node address as well
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    token_path = None
    if auth:
        token_path = folder / TOKEN
        if not token_path.exists():
            write_token(token_path)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path))
    else:
        env.update(RAY_AUTH_MODE="disabled")
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        env.pop("RAY_AUTH_TOKEN", None)
    ray = shutil.which("ray", path=env["PATH"])
    if ray is None:
        raise RuntimeError("the `ray` command is not installed beside this Python")
    cmd = [
        ray, "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
        f"--temp-dir={folder / 'ray'}",
        *(f"{flag}={port}" for flag, port in ports.items()),
        f"--min-worker-port={worker_low}", f"--max-worker-port={worker_low + WORKER_PORTS - 1}",
    ]  # fmt: skip
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    with open(folder / "head.log", "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    head = Head(
        folder=folder,
        pid=proc.pid,
        address=f"http://127.0.0.1:{ports['--dashboard-port']}",
        gcs_address=f"127.0.0.1:{ports['--port']}",
        token_path=token_path,
    )
    state = {"pid": head.pid, "address": head.address, "gcs_address": head.gcs_address,
             "token_path": str(token_path) if token_path else None}  # fmt: skip
    (folder / STATE).write_text(json.dumps(state, indent=2))
    deadline = time.monotonic() + timeout_s
    while not _answering(head.address):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(folder)
            tail = (folder / "head.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the head node did not come up (see {folder / 'head.log'}):\n{tail}")
        time.sleep(0.5)
    return head


# -- a worker node on this machine ------------------------------------------------------------
WORKER_PORT_FLAGS = tuple(f for f in PORT_FLAGS if f not in ("--port", "--dashboard-port"))


@dataclass(frozen=True)
class Worker:
    folder: Path
    pid: int  # the ``ray start --block`` of the node; its raylet and workers are below it
    node_ip: str


def start_worker(
    folder: Path,
    head: Head,
    host: str,
    num_cpus: int = 1,
    node_ip: str = "127.0.0.2",
    env: dict[str, str] | None = None,
    wrap: list[str] | None = None,
    timeout_s: float = 90,
) -> Worker:
    """Start ``ray start --address HOST:PORT --block`` as a second node of ``head`` on this
    machine, in its own process group, with its own temp dir, ports and node address.

    ``host`` must name the head's machine without being ``localhost`` or ``127.0.0.1``: Ray
    swaps those for the machine's routable address when a node joins (a host name that resolves
    to 127.0.0.1 keeps the traffic on loopback). ``node_ip``: the node's own address, another
    loopback address, so that the head's node and this one are told apart. ``wrap``: a command
    the node is started under (e.g. ``unshare --mount`` to give it a file system view of its
    own). Returns once the head lists the node as alive."""
    folder = folder.resolve()
    if (folder / STATE).exists():
        raise RuntimeError(f"{folder}: a node was started here already (stop it first)")
    folder.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(WORKER_PORT_FLAGS, _free_ports(len(WORKER_PORT_FLAGS)), strict=True))
    worker_low = _free_range(WORKER_PORTS, set(ports.values()))
    env = dict(os.environ if env is None else env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # "0" would refuse to join a cluster
    env.update(head.env())
    ray = shutil.which("ray", path=env["PATH"])
    if ray is None:
        raise RuntimeError("the `ray` command is not installed beside this Python")
    gcs_port = head.gcs_address.rsplit(":", 1)[1]
    cmd = [
        *(wrap or []), ray, "start", f"--address={host}:{gcs_port}", "--block", "--disable-usage-stats",
        f"--node-ip-address={node_ip}", f"--num-cpus={num_cpus}", f"--temp-dir={folder / 'ray'}",
        *(f"{flag}={port}" for flag, port in ports.items()),
        f"--min-worker-port={worker_low}", f"--max-worker-port={worker_low + WORKER_PORTS - 1}",
    ]  # fmt: skip
    with open(folder / "node.log", "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    worker = Worker(folder, proc.pid, node_ip)
    (folder / STATE).write_text(json.dumps({"pid": proc.pid, "node_ip": node_ip}, indent=2))
    deadline = time.monotonic() + timeout_s
    while not any(n.get("node_ip") == node_ip and n.get("state") == "ALIVE" for n in nodes(head)):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(folder)
            tail = (folder / "node.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the worker node did not join (see {folder / 'node.log'}):\n{tail}")
        time.sleep(0.5)
    return worker


def nodes(head: Head) -> list[dict[str, object]]:
    """The cluster's nodes as the head's state API lists them (node_ip, state, node_id, ...)."""
    headers = (
        {} if head.token_path is None else {"Authorization": f"Bearer {head.token_path.read_text().strip()}"}
    )
    request = urllib.request.Request(f"{head.address}/api/v0/nodes?detail=false&limit=1000", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return list(json.loads(response.read())["data"]["result"]["result"])
    except (OSError, ValueError, KeyError):
        return []


def load(folder: Path) -> Head:
    state = json.loads((folder / STATE).read_text())
    token = state["token_path"]
    return Head(folder.resolve(), state["pid"], state["address"], state["gcs_address"],
                Path(token) if token else None)  # fmt: skip


def descendants(root: int) -> list[int]:
    """Every process below ``root``: Ray puts job drivers and workers in process groups of their
    own, so the head's group alone does not reach them. [] if ``root`` is gone."""
    try:
        return [p.pid for p in psutil.Process(root).children(recursive=True)]
    except psutil.Error:
        return []


def alive(pid: int) -> bool:
    """Running, not a zombie (a child of ours that exited is reaped here)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop(folder: Path, timeout_s: float = 30) -> bool:
    """End the head started in ``folder`` and every process below it (gcs, raylet, dashboard,
    workers, job drivers); True if it was running."""
    path = folder / STATE
    if not path.is_file():
        return False
    pid = json.loads(path.read_text())["pid"]
    ran = alive(pid)
    pids = [pid, *descendants(pid)] if ran else []  # listed before any of them exits
    # `ray start --block` ends its processes in order on SIGTERM; whatever is left (job
    # drivers, workers that outlived their raylet) is killed
    for targets, sig, wait_s in ((pids[:1], signal.SIGTERM, timeout_s), (pids, signal.SIGKILL, 10.0)):
        for p in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.2)
        pids = [p for p in pids if alive(p)]
        if not pids:
            break
    path.unlink()  # ours: the state file start() wrote in the head's folder
    return ran


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.local.head", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="start a head node; prints its address")
    p.add_argument("folder", type=Path)
    p.add_argument("--num-cpus", type=int)
    p.add_argument("--no-auth", action="store_true", help="no token auth (only to try --insecure)")
    p = sub.add_parser("stop", help="stop the head started in FOLDER")
    p.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.command == "start":
        head = start(args.folder, args.num_cpus, auth=not args.no_auth)
        print(f"head node pid {head.pid}: {head.address} (GCS {head.gcs_address})")
        if head.token_path:
            print(f"token: {head.token_path}\nsubmit with: RAY_AUTH_TOKEN_PATH={head.token_path} "
                  f"psvae submit --address {head.address} --config search.yaml --storage DIR")  # fmt: skip
        return 0
    print("stopped" if stop(args.folder) else f"{args.folder}: no running head")
    return 0


if __name__ == "__main__":
    sys.exit(main())
