"""Where the fit runs: device, numeric precision and the CPU allocator."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from psvae.errors import ConfigError
from psvae.files import write_json_atomic


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda': no CUDA device is available here")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """True where bfloat16 matmuls and convolutions run in hardware (not emulated)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return False


PROBE_ROUNDS = 3  # timed training steps per precision, interleaved, after one warm-up step each
PROBE_MARGIN = 0.05  # bf16 is taken only when its median step costs 5 % less CPU time
PROBE_TTL_S = 3600.0  # how long a probe's answer holds on this machine (see choose_precision)
_CHOSEN: dict[str, str] = {}  # probe key -> precision, in this process


def precision_cache_path() -> Path:
    """Where the probes' answers are kept between processes: the trials of one search (each a
    process of its own) then train in one precision, and a resumed fit in its first one."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "psvae" / "precision.json"


def probe_key(device: torch.device, what: str) -> str:
    """The probe's answer depends on the device, the network and the batch's shape (``what``),
    the threads a fit uses and the PyTorch build."""
    return f"{device}|{what}|threads={torch.get_num_threads()}|torch={torch.__version__}"


def probe_steps(step: Callable[[str], None], rounds: int = PROBE_ROUNDS) -> dict[str, list[float]]:
    """CPU seconds of ``step(precision)`` for float32 and bf16, interleaved so that a change of
    the machine's load falls on both; one untimed warm-up step each first (oneDNN builds its
    kernels on the first call). Process CPU time, not wall time: on a busy machine the share
    of the CPU a fit gets is the scheduler's, and what a precision changes is the CPU it needs."""
    step("float32")
    step("bf16")
    times: dict[str, list[float]] = {"float32": [], "bf16": []}
    for r in range(rounds):
        for precision in ("float32", "bf16") if r % 2 == 0 else ("bf16", "float32"):
            start = time.process_time()
            step(precision)
            times[precision].append(time.process_time() - start)
    return times


def choose_precision(times: dict[str, list[float]], margin: float = PROBE_MARGIN) -> str:
    """bf16 when its median step costs at least ``margin`` less than float32's, else float32."""
    f32, bf16 = statistics.median(times["float32"]), statistics.median(times["bf16"])
    return "bf16" if bf16 < (1.0 - margin) * f32 else "float32"


def _cached(key: str) -> str | None:
    if key in _CHOSEN:
        return _CHOSEN[key]
    try:
        entry = json.loads(precision_cache_path().read_text()).get(key)
        if time.time() - float(entry["at"]) < PROBE_TTL_S and entry["precision"] in ("float32", "bf16"):
            _CHOSEN[key] = str(entry["precision"])
            return _CHOSEN[key]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass  # no cache, an unreadable one, or an entry too old: probe again
    return None


def _remember(key: str, precision: str, times: dict[str, list[float]]) -> None:
    _CHOSEN[key] = precision
    path = precision_cache_path()
    try:
        try:
            entries = json.loads(path.read_text())
            entries = entries if isinstance(entries, dict) else {}
        except (OSError, ValueError):
            entries = {}
        entries[key] = {"precision": precision, "at": time.time(), "cpu_s": times}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, entries)
    except OSError:
        pass  # a read-only home: the answer holds for this process only


def resolve_precision(
    name: str,
    device: torch.device,
    probe: Callable[[], dict[str, list[float]]] | None = None,
    key: str | None = None,
) -> str:
    """The precision a fit trains in. ``auto``: float32 where the device has no native
    bfloat16; where it has, the faster of the two here and now, by ``probe`` (see
    :func:`probe_steps`), its answer kept under ``key`` for this process and, for
    :data:`PROBE_TTL_S`, for the machine's other fits. Without a probe, ``auto`` is bf16 on
    such a device. Idle, bf16 autocast trains 1.8-2.4x faster on this project's CPUs; on a busy
    CPU it lost that lead: the answer depends on the load, which is why it is measured."""
    if name != "auto":
        return name
    if not native_bf16(device):
        return "float32"
    if probe is None or key is None:
        return "bf16"
    found = _cached(key)
    if found is not None:
        return found
    times = probe()
    chosen = choose_precision(times)
    _remember(key, chosen, times)
    return chosen


@functools.cache
def keep_large_allocations() -> bool:
    """Ask glibc to serve large blocks from its heap instead of fresh mmap'd pages.

    By default every allocation over 32 MB (a 128x128 batch's activations) is mapped anew
    and its pages faulted in and zeroed on every training step; keeping them in the heap made
    CPU training at 128x128 about 10-15% faster here. Memory freed by the fit is then kept
    by the process (its peak stays resident). Linux/glibc only; elsewhere a no-op.

    The price is a peak that varies between identical fits: at 128x128 bf16 it fell at either
    about 2.1 or 3.3 GiB (fragmentation of the heap by the order blocks are freed, not glibc's
    per-thread arenas: one arena varies the same), where glibc's mmap peaks at 2.1 GiB +- 0.05,
    about 6 % slower (``bench/fit_memory.py``).
    """
    if not sys.platform.startswith("linux"):
        return False
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    try:
        libc = ctypes.CDLL(libc_name)
        m_mmap_max, m_trim_threshold = -4, -1
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False
