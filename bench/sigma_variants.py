"""Which calibration of sigma_x keeps the unsupervised latents alive: one fit per variant.

    .venv/bin/python bench/sigma_variants.py [--variants auto auto-epoch 0.1 1] [--epochs 30]

Writes the limbs benchmark scene (``psvae synthetic --scene limbs``), fits one PS-VAE per
``loss.sigma_x`` setting with the schedule of ``bench/disentangle.py`` (alpha and beta fixed,
``--alpha``, ``--beta``) through ``psvae fit``, two at a time, scores each with ``psvae score``
against the scene's ground truth and prints one row per variant: the sigma_x the fit settled at,
label R^2, each nuisance factor's R^2 from z_u, label leakage into z_u, MIG beside the
pixel-PCA baseline's, the smallest z_u variance, and the fit's wall time. ``docs/latents.md``
reports the run that chose ``auto``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from disentangle import FIT, REPO, cli, write_scene


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=["auto", "auto-epoch", "0.1", "1"])
    parser.add_argument("--epochs", type=int, default=FIT["train"]["epochs"])
    parser.add_argument("--alpha", type=float, default=1000.0)
    parser.add_argument("--beta", type=float, default=5.0)
    parser.add_argument("--parallel", type=int, default=2, help="fits at a time")
    parser.add_argument("--keep", help="keep the fits in this folder")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="sigma-variants-"))
    root.mkdir(parents=True, exist_ok=True)
    data = write_scene(root)
    fit = {
        **FIT,
        "train": {**FIT["train"], "epochs": args.epochs, "num_threads": 1},
        "loss": {**FIT["loss"], "alpha": args.alpha, "beta": args.beta},
    }
    running: list[tuple[str, subprocess.Popen[bytes], float]] = []
    seconds: dict[str, float] = {}
    pending = list(args.variants)
    print(
        f"{len(pending)} fits of {args.epochs} epochs, alpha {args.alpha:g}, beta {args.beta:g}, data {data}"
    )
    while pending or running:
        while pending and len(running) < args.parallel:
            variant = pending.pop(0)
            value: object = variant if variant.startswith("auto") else float(variant)
            config = root / f"fit-{variant}.yaml"
            config.write_text(yaml.safe_dump({**fit, "loss": {**fit["loss"], "sigma_x": value}}))
            out = root / f"fit-{variant}"
            cmd = [*cli(), "fit", "--data", str(data), "--config", str(config), "--out", str(out), "--quiet"]
            log = (root / f"fit-{variant}.log").open("wb")
            running.append(
                (variant, subprocess.Popen(cmd, stdout=log, stderr=log, cwd=REPO), time.perf_counter())
            )
        time.sleep(2)
        for entry in list(running):
            variant, proc, start = entry
            if proc.poll() is not None:
                running.remove(entry)
                seconds[variant] = time.perf_counter() - start
                if proc.returncode != 0:
                    print(f"sigma_x {variant}: psvae fit failed, see {root / f'fit-{variant}.log'}")
    header = (
        f"{'sigma_x':>10} {'settled':>8} {'label R2':>8} {'jaw R2':>7} {'tail R2':>7} {'leakage':>8} "
        f"{'MIG':>6} {'PCA MIG':>7} {'min var u':>9} {'seconds':>7}"
    )
    print(header)
    for variant in args.variants:
        out = root / f"fit-{variant}"
        if not (out / "model").is_dir():
            continue
        scores = root / f"scores-{variant}.json"
        subprocess.run(
            [*cli(), "score", "--model", str(out / "model"), "--data", str(data), "--factors",
             str(data) + ".factors.npz", "--json", str(scores), "--force"],
            check=True, capture_output=True, cwd=REPO,
        )  # fmt: skip
        report = json.loads(scores.read_text())
        model, pca = report["model"], report["pca"]
        summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
        settled = summary.get("metrics", {}).get("sigma_x", float("nan"))
        r2 = model["factor_r2_from_u"]
        print(
            f"{variant:>10} {settled:8.4f} {model['label_r2']:8.3f} {r2['jaw']:7.3f} {r2['tail']:7.3f} "
            f"{model['label_leakage_u']:8.3f} {model['mig']:6.3f} {pca['mig']:7.3f} "
            f"{min(model['mu_var_u']):9.3f} {seconds[variant]:7.0f}"
        )
    print(f"fits and scores in {root}" if args.keep else "")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(REPO))
    main()
