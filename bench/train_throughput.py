"""Training throughput of the default (paper) network, and the peak memory of a fit.

    python bench/train_throughput.py [--sizes 64 128] [--trials 20] [--epochs 2]

For each frame size it fits the built-in data through psvae's Trainer (training epochs, the
validation pass of every epoch and the final val/test passes all inside the timed span) and
reports training frames per second. In the same run it times a plain PyTorch loop over the
same network, data and batch size (contiguous tensors, a validation pass per epoch) as a
baseline measured under the same machine load, and prints the ratios, including the ratio to
the reference implementation's own fit loop as measured on this 2-core machine class
(215 frames/s at 64x64, 67 frames/s at 128x128, counting its validation and test passes).
Finally it runs ``psvae fit`` on the built-in dataset for one epoch in a child process and
prints that process's peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from psvae import synthetic
from psvae.config import FitConfig
from psvae.data import FrameData, load_data
from psvae.losses import psvae_loss, weights_for_epoch
from psvae.trainer import Trainer, build_model

REFERENCE_FRAMES_PER_S = {64: 215.0, 128: 67.0}


def psvae_trainer(data: FrameData, epochs: int, precision: str) -> float:
    """Training frames/s of psvae's Trainer, validation and test passes included."""
    cfg = FitConfig.from_mapping(
        {"train.epochs": epochs + 1, "loss.anneal_epochs": 1, "train.precision": precision}
    )
    trainer = Trainer(cfg, data)
    n_train = 0
    start = time.perf_counter()
    for _ in range(epochs):
        trainer.run_epoch()
        n_train += (data.n_frames("train") // cfg.train.batch_size) * cfg.train.batch_size
    trainer.finish()
    return n_train / (time.perf_counter() - start)


def plain_loop(data: FrameData, epochs: int) -> float:
    """A straightforward loop over the same network: the same-run baseline."""
    cfg = FitConfig.from_mapping({"train.epochs": epochs + 1, "loss.anneal_epochs": 1})
    model = build_model(cfg, data.frame_shape, data.n_labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, amsgrad=True)
    gen = torch.Generator().manual_seed(0)
    n_data, bs = data.n_frames("train"), cfg.train.batch_size
    n_train = 0
    start = time.perf_counter()
    for epoch in range(epochs):
        w = weights_for_epoch(epoch, cfg.loss.alpha, cfg.loss.beta, cfg.loss.anneal_epochs)
        model.train()
        for idx in data.train_batches(bs, gen):
            x = data.frames[idx].float() / 255
            out = model(x, gen)
            terms = psvae_loss(
                x, out.frames, data.labels[idx], out.labels, data.label_mask[idx], None,
                out.z, out.mu, out.logvar, data.n_labels, 0, n_data, w,
            )  # fmt: skip
            optimizer.zero_grad()
            terms["loss"].backward()
            optimizer.step()
            n_train += len(idx)
        model.eval()
        with torch.no_grad():
            for split in ("val",) if epoch < epochs - 1 else ("val", "test"):
                for idx in data.eval_batches(split, bs):
                    model(data.frames[idx].float() / 255)
    return n_train / (time.perf_counter() - start)


def peak_rss_of_fit(workdir: Path) -> float:
    """Peak resident memory (MiB) of `psvae fit` on the built-in data (40 trials, 64x64)."""
    data = synthetic.write(workdir / "builtin.h5")
    cmd = [
        sys.executable, "-m", "search.cli", "fit", "--data", str(data), "--out", str(workdir / "fit"),
        "--set", "train.epochs=2", "--set", "loss.anneal_epochs=1", "--quiet",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--trials", type=int, default=20, help="trials of 100 frames (8;1;1;0 split)")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 128, default network")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path = synthetic.write(
                Path(tmp) / f"syn{size}.h5", synthetic.SyntheticSpec(n_trials=args.trials, size=size)
            )
            data = load_data([str(path)])
            plain = plain_loop(data, args.epochs)
            ours = psvae_trainer(data, args.epochs, "float32")
            ours_bf16 = psvae_trainer(data, args.epochs, "bf16")
            ref = REFERENCE_FRAMES_PER_S.get(size)
            print(f"\n{size}x{size}: {data.n_frames('train')} training frames, {args.epochs} epochs")
            print(f"  plain PyTorch loop (same run)   {plain:7.1f} frames/s")
            for name, rate in (("psvae float32", ours), ("psvae bf16 autocast", ours_bf16)):
                vs_ref = f", {rate / ref:.2f}x the reference's {ref:.0f}" if ref else ""
                print(f"  {name:<31} {rate:7.1f} frames/s: {rate / plain:.2f}x the plain loop{vs_ref}")
        print(f"\npeak resident memory of `psvae fit` on the built-in data: {peak_rss_of_fit(Path(tmp)):.0f} MiB")


if __name__ == "__main__":
    main()
