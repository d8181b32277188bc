"""Why the peak memory of identical fits varies: peak resident memory of repeated, identical
``psvae fit`` processes at 128x128 under a few allocator settings, side by side in one run.

    python bench/fit_memory.py [--repeats 3] [--size 128] [--trials 10] [--precision bf16]

Each repeat runs every setting once, in turn (a load change falls on all of them):

- ``default``: psvae as shipped (``psvae.runtime.keep_large_allocations``: large blocks kept in
  glibc's heap instead of fresh mmap'd pages);
- ``one arena``: the same with ``MALLOC_ARENA_MAX=1`` (glibc otherwise gives threads that
  allocate at once arenas of their own, which might have explained the variance; measured, it
  does not: one arena varies as much);
- ``mmap``: glibc's defaults (large blocks mmap'd and returned at once), without
  ``keep_large_allocations``.

It prints each setting's peak resident memory (MiB) per repeat, its spread (max - min) and its
training time. The peak is ``ru_maxrss`` read in the fitting process itself.

Measured here (5 repeats, twice): as shipped 2094-3359 MiB (each run near 2.1 or 3.3 GiB), one
arena from the process start 2130-3327, mmap 2072-2174 at about 6 % more time: keeping large
blocks in the heap is what makes the peak bimodal, not the arenas.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from psvae import synthetic

CHILD = """
import resource, sys
if sys.argv[1] == "mmap":
    import psvae.trainer
    psvae.trainer.keep_large_allocations = lambda: False
from search.cli import main
code = main(sys.argv[2:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""
SETTINGS = {"default": {}, "one arena": {"MALLOC_ARENA_MAX": "1"}, "mmap": {}}


def peak_rss(setting: str, data: Path, out: Path, precision: str) -> tuple[float, float]:
    """(peak resident MiB, seconds) of one ``psvae fit`` for two epochs."""
    env = {**os.environ, **SETTINGS[setting]}
    args = [
        "fit", "--data", str(data), "--out", str(out), "--quiet",
        "--set", "train.epochs=2", "--set", "loss.anneal_epochs=1", "--set", f"train.precision={precision}",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "mmap" if setting == "mmap" else "-", *args],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return int(done.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--trials", type=int, default=10, help="trials of 100 frames")
    parser.add_argument("--precision", default="bf16", choices=["float32", "bf16"])
    args = parser.parse_args()
    peaks: dict[str, list[float]] = {name: [] for name in SETTINGS}
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic.write(
            Path(tmp) / "data.h5", synthetic.SyntheticSpec(n_trials=args.trials, size=args.size)
        )
        for r in range(args.repeats):
            for name in SETTINGS:
                out = Path(tmp) / f"fit-{r}-{name.replace(' ', '-')}"
                peak, s = peak_rss(name, data, out, args.precision)
                peaks[name].append(peak)
                seconds[name].append(s)
                print(f"  repeat {r + 1}: {name:<10} {peak:7.0f} MiB  {s:6.1f} s", flush=True)
    size = f"{args.size}x{args.size}"
    print(f"\n{size}, {args.precision}, {args.trials} trials, 2 epochs, {args.repeats} repeats")
    print(f"{'setting':<10} {'peak MiB (each repeat)':<28} {'spread':>8} {'median s':>9}")
    for name in SETTINGS:
        each = " ".join(f"{p:.0f}" for p in peaks[name])
        spread = max(peaks[name]) - min(peaks[name])
        print(f"{name:<10} {each:<28} {spread:8.0f} {statistics.median(seconds[name]):9.1f}")


if __name__ == "__main__":
    main()
