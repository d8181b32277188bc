"""``psvae demo``: the built-in dataset, fitted end to end on this machine."""

from __future__ import annotations

import time
from pathlib import Path

from psvae import synthetic
from psvae.config import FitConfig
from psvae.errors import UserError
from psvae.fit import run_fit

# A short schedule for the built-in 64x64 data on a CPU. The paper's defaults (lr 1e-4,
# 100 annealing epochs) are for hours on a GPU; the default network is kept.
DEMO_FIT = {
    "train": {"epochs": 20, "lr": 1e-3, "batch_size": 128},
    "loss": {"alpha": 1000.0, "beta": 1.0, "anneal_epochs": 5},
}
QUICK_FIT = {
    "train": {"epochs": 3, "lr": 1e-3, "batch_size": 128},
    "loss": {"alpha": 1000.0, "beta": 1.0, "anneal_epochs": 1},
}


def run(out: str | None = None, quick: bool = False) -> int:
    run_dir = Path(out) if out else Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(f"{run_dir}: already exists and is not empty; choose another --out")
    cfg = FitConfig.from_mapping(QUICK_FIT if quick else DEMO_FIT, source="demo")
    run_dir.mkdir(parents=True, exist_ok=True)
    data = run_dir / "data" / "synthetic.h5"
    data.parent.mkdir(exist_ok=True)
    synthetic.write(data, synthetic.SyntheticSpec(n_trials=20 if quick else 40))
    print(f"built-in data: {data}")
    summary = run_fit([str(data)], cfg, run_dir / "fit")
    m = summary.metrics
    print(
        f"fit {summary.status}: best epoch {summary.best_epoch} of {summary.epochs_run}; "
        f"val label R2 {m.get('val_label_r2', float('nan')):.3f}, "
        f"val pixel MSE {m.get('val_pixel_mse', float('nan')):.3g}\n"
        f"run directory: {run_dir}\n"
        f"  metrics per epoch: {run_dir / 'fit' / 'metrics.csv'}\n"
        f"  model bundle:      {run_dir / 'fit' / 'model'}  (psvae.load_model)"
    )
    return 0 if summary.status == "completed" else 1
