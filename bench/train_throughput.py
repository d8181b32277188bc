"""Training throughput of the default (paper) network, and the peak memory of a fit.

    python bench/train_throughput.py [--sizes 64 128] [--trials 20] [--epochs 2]

For each frame size it fits the built-in data through psvae's Trainer (training epochs, the
validation pass of every epoch and a test pass inside the timed span) and reports training
frames per second. In the same run it times the same network written the obvious way
(psvae.model.plain_encode/plain_decode) in a plain loop over the same data, batch size and
passes, as a baseline measured under the same machine load. It prints the ratios, and the
ratio to the reference implementation's own fit loop as measured on this 2-core machine
class (215 frames/s at 64x64, 67 frames/s at 128x128, counting its validation and test
passes). First of all it runs ``psvae fit`` on the built-in dataset for two epochs in a child
process and prints that process's peak resident memory.

Then ``train.precision``: float32, bf16 autocast and ``auto`` (the default: a probe at the fit's
start picks one, psvae.runtime.resolve_precision) side by side, per wall second and per
CPU-second of this process, first with the machine as it is and then with ``--busy`` other
processes (default 2) training a convolution on one thread each, as other trials of a search
would. ``--rounds`` rounds (default 3), the three in a rotated order each round, medians shown:
one short run each is too noisy under load to rank them. Every ``auto`` run probes anew (no
answer cached, on disk or in the process), under the load of the moment; its figure is shown
with its probe counted (a short run's worst case: the probe is paid once an hour per machine
and network, and a real fit runs hundreds of epochs after it) and without.
``--precision-only`` skips the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from psvae import runtime, synthetic
from psvae.config import FitConfig
from psvae.data import FrameData, load_data
from psvae.losses import psvae_loss, weights_for_epoch
from psvae.model import plain_decode, plain_encode
from psvae.trainer import Trainer, build_model

REFERENCE_FRAMES_PER_S = {64: 215.0, 128: 67.0}


def psvae_trainer(data: FrameData, epochs: int, precision: str) -> tuple[float, float]:
    """Training frames/s of psvae's Trainer over ``epochs`` epochs (each with its validation
    pass) and a test pass, as the reference's figures count; and the seconds of the
    end-of-fit metrics (``finish``: val, test and train passes with the best weights)."""
    cfg = FitConfig.from_mapping(
        {"train.epochs": epochs + 1, "loss.anneal_epochs": 1, "train.precision": precision}
    )
    trainer = Trainer(cfg, data)
    n_train = 0
    start = time.perf_counter()
    for _ in range(epochs):
        trainer.run_epoch()
        n_train += (data.n_frames("train") // cfg.train.batch_size) * cfg.train.batch_size
    trainer.evaluate("test")
    rate = n_train / (time.perf_counter() - start)
    start = time.perf_counter()
    trainer.finish()
    return rate, time.perf_counter() - start


def plain_loop(data: FrameData, epochs: int) -> float:
    """The baseline: the same network written the obvious way (F.pad + Conv2d, ConvTranspose2d
    + crop; contiguous float32 tensors) in a straightforward loop with a validation pass per
    epoch and a test pass at the end."""
    cfg = FitConfig.from_mapping({"train.epochs": epochs + 1, "loss.anneal_epochs": 1})
    model = build_model(cfg, data.frame_shape, data.n_labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, amsgrad=True)
    gen = torch.Generator().manual_seed(0)
    n_data, bs, k = data.n_frames("train"), cfg.train.batch_size, data.n_labels
    n_train = 0
    start = time.perf_counter()
    for epoch in range(epochs):
        w = weights_for_epoch(epoch, cfg.loss.alpha, cfg.loss.beta, cfg.loss.anneal_epochs)
        model.train()
        for idx in data.train_batches(bs, gen):
            x = data.frames[idx].float() / 255
            mu, logvar = plain_encode(model, x)
            z = mu + torch.randn(mu.shape, generator=gen) * torch.exp(0.5 * logvar)
            terms = psvae_loss(
                x, plain_decode(model, z), data.labels[idx], model.label_head(mu[:, :k]),
                data.label_mask[idx], None, z, mu, logvar, k, 0, n_data, w,
            )  # fmt: skip
            optimizer.zero_grad()
            terms["loss"].backward()
            optimizer.step()
            n_train += len(idx)
        model.eval()
        with torch.no_grad():
            for split in ("val",) if epoch < epochs - 1 else ("val", "test"):
                for idx in data.eval_batches(split, bs):
                    plain_decode(model, plain_encode(model, data.frames[idx].float() / 255)[0])
    return n_train / (time.perf_counter() - start)


PEAK_RSS_OF_FIT = """
import resource, sys
from search.cli import main
code = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def peak_rss_of_fit(workdir: Path) -> float:
    """Peak resident memory (MiB) of `psvae fit` on the built-in data (40 trials, 64x64),
    read inside the fitting process itself."""
    data = synthetic.write(workdir / "builtin.h5")
    args = [
        "fit", "--data", str(data), "--out", str(workdir / "fit"),
        "--set", "train.epochs=2", "--set", "loss.anneal_epochs=1", "--quiet",
    ]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_OF_FIT, *args], check=True, capture_output=True, text=True
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


BUSY = """
import torch
torch.set_num_threads(1)
x = torch.randn(64, 1, 64, 64)
conv = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 5, padding=2), torch.nn.Conv2d(32, 32, 5, padding=2))
while True:
    conv(x).square().mean().backward()
"""


@contextlib.contextmanager
def busy(n: int) -> Iterator[None]:
    """``n`` processes keeping a core busy each, ended (by their pid) when the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n)]
    try:
        time.sleep(3)  # let them start
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


PRECISIONS = ("float32", "bf16", "auto")


def precision_rates(data: FrameData, epochs: int, precision: str) -> dict[str, Any]:
    """Training frames per wall second and per CPU-second of this process of psvae's Trainer at
    ``precision``, its probe counted (``*_probe``) and not, the probe's CPU seconds, and the
    precision used. ``auto`` probes anew, under the load of the moment."""
    cfg = FitConfig.from_mapping(
        {"train.epochs": epochs + 1, "loss.anneal_epochs": 1, "train.precision": precision}
    )
    runtime._CHOSEN.clear()
    runtime.precision_cache_path().unlink(missing_ok=True)  # ours: this run's own cache folder
    trainer = Trainer(cfg, data)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    used = trainer.precision  # auto: the probe, here
    probe_wall, probe_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    n_train = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        trainer.run_epoch()
        n_train += (data.n_frames("train") // cfg.train.batch_size) * cfg.train.batch_size
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "wall": n_train / wall,
        "cpu": n_train / cpu,
        "wall_probe": n_train / (wall + probe_wall),
        "cpu_probe": n_train / (cpu + probe_cpu),
        "probe_cpu_s": probe_cpu,
        "used": used,
    }


def print_precisions(size: int, runs: dict[str, list[dict[str, Any]]]) -> None:
    """Medians of one frame size's rounds, and auto over float32 per CPU-second."""

    def med(p: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[p])

    for p in PRECISIONS:
        line = f"  {size}x{size} {p:<8} {med(p, 'wall'):7.1f} frames/s  {med(p, 'cpu'):7.1f} frames/CPU-s"
        if p == "auto":
            picked = "/".join(sorted({run["used"] for run in runs[p]}))
            probe = med(p, "probe_cpu_s")
            line += (
                f" after its probe (picked {picked}), {med(p, 'cpu_probe'):.1f} with it ({probe:.1f} CPU-s)"
            )
        print(line)
    pairs = list(zip(runs["auto"], runs["float32"], strict=True))
    ratios = [a["cpu"] / f["cpu"] for a, f in pairs]
    with_probe = statistics.median(a["cpu_probe"] / f["cpu"] for a, f in pairs)
    each = ", ".join(f"{x:.2f}" for x in ratios)
    print(
        f"  {size}x{size} auto / float32 per CPU-second: {statistics.median(ratios):.2f} ({each}); "
        f"its probe counted: {with_probe:.2f}"
    )


def precision_table(datasets: dict[int, FrameData], epochs: int, n_busy: int, rounds: int) -> None:
    for label, load in (("as it is", 0), (f"{n_busy} busy processes", n_busy)):
        with busy(load):
            start = os.getloadavg()[0]
            print(f"\nprecision, machine {label} (load average {start:.1f} at the start), {rounds} rounds")
            for size, data in datasets.items():
                runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PRECISIONS}
                for r in range(rounds):  # the order rotated, so a drift in load is shared out
                    for p in PRECISIONS[r % 3 :] + PRECISIONS[: r % 3]:
                        runs[p].append(precision_rates(data, epochs, p))
                print_precisions(size, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--trials", type=int, default=20, help="trials of 100 frames (8;1;1;0 split)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--busy", type=int, default=2, help="busy processes for the second precision table")
    parser.add_argument("--precision-only", action="store_true", help="only the precision tables")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the precision tables")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 128, default network")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # auto's probes are this run's own
        datasets = {}
        for size in args.sizes:
            spec = synthetic.SyntheticSpec(n_trials=args.trials, size=size)
            datasets[size] = load_data([str(synthetic.write(Path(tmp) / f"syn{size}.h5", spec))])
        if not args.precision_only:
            # measured first, while this process is still small
            rss = peak_rss_of_fit(Path(tmp))
            for size, data in datasets.items():
                plain = plain_loop(data, args.epochs)
                ours, finish = psvae_trainer(data, args.epochs, "float32")
                ours_bf16, finish_bf16 = psvae_trainer(data, args.epochs, "bf16")
                ref = REFERENCE_FRAMES_PER_S.get(size)
                print(f"\n{size}x{size}: {data.n_frames('train')} training frames, {args.epochs} epochs")
                print(f"  plain PyTorch loop (same run)   {plain:7.1f} frames/s")
                for name, rate in (("psvae float32", ours), ("psvae bf16 autocast", ours_bf16)):
                    vs_ref = f", {rate / ref:.2f}x the reference's {ref:.0f}" if ref else ""
                    print(f"  {name:<31} {rate:7.1f} frames/s: {rate / plain:.2f}x the plain loop{vs_ref}")
                print(f"  end-of-fit metrics (per fit): {finish:.1f} s float32, {finish_bf16:.1f} s bf16")
            print(f"\npeak resident memory of `psvae fit` on the built-in data: {rss:.0f} MiB")
        precision_table(datasets, args.epochs, args.busy, args.rounds)


if __name__ == "__main__":
    main()
