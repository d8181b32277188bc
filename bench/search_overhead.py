"""What the search service costs on top of the fits it runs.

    python bench/search_overhead.py

Runs the quick staged search (``psvae demo --quick``'s data and stages) as one ``psvae
search`` command on a local Ray and times it whole: Ray's start, every stage, the Parquet
results and the decisions. Then it runs exactly the same trial configs (read back from the
run's trials table) directly through psvae's Trainer, one after another, and divides their
summed time by the search's concurrency (CPUs / CPUs per trial). The overhead is the search's
wall time over that ideal, minus one. Target: at most 15%.

It also prints where the difference goes, from the run's own records: the time before the
first stage (Ray's start, reading the data) and, per stage, the stage's wall time against its
trials' own time (Tune's ``time_total_s``) divided by the concurrency. ``--epochs N`` runs the
same search with longer fits, to show how the fixed costs amortise.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from psvae import synthetic
from psvae.config import FitConfig
from psvae.data import load_data
from psvae.trainer import Trainer
from search import demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="epochs per fit (default: the quick demo's)")
    args = parser.parse_args()
    fit = copy.deepcopy(demo.QUICK["fit"])
    if args.epochs:
        fit["train"]["epochs"] = args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = synthetic.write(root / "quick.h5", synthetic.SyntheticSpec(n_trials=demo.QUICK["trials"]))
        config = root / "search.yaml"
        config.write_text(yaml.safe_dump({"data": [str(data)], "fit": fit, "stages": demo.QUICK["stages"]}))
        env = {**os.environ, "HOME": str(root)}
        cmd = [sys.executable, "-m", "search.cli", "search", "--config", str(config), "--run-id", "bench"]
        start = time.perf_counter()
        subprocess.run([*cmd, "--storage", str(root / "runs")], check=True, env=env, capture_output=True)
        search_wall = time.perf_counter() - start

        trials = pd.read_parquet(root / "runs" / "bench" / "results" / "trials")
        frames = load_data([str(data)])
        fit_seconds = []
        for config_json in trials.config_json:
            cfg = FitConfig.from_mapping(json.loads(config_json))
            start = time.perf_counter()
            trainer = Trainer(cfg, frames)
            for _ in trainer.epochs():
                pass
            trainer.finish()
            fit_seconds.append(time.perf_counter() - start)
        threads = int(json.loads(trials.config_json.iloc[0])["train.num_threads"])  # CPUs per trial
        concurrency = max(1, (os.cpu_count() or 1) // threads)
        ideal = sum(fit_seconds) / concurrency
        epochs = fit["train"]["epochs"]
        print(f"quick staged search ({epochs} epochs a fit): {len(trials)} trials, wall {search_wall:.1f} s")
        stages = json.loads((root / "runs" / "bench" / "manifest.json").read_text())["stages"]
        in_stages = sum(record["seconds"] for record in stages.values())
        print(f"  outside the stages (Ray's start, reading the data): {search_wall - in_stages:5.1f} s")
        for name, record in stages.items():
            own = trials.loc[trials.stage == name, "wall_seconds"]
            print(
                f"  stage {name:<6} {record['seconds']:5.1f} s; its {len(own)} trials' own time "
                f"/ {concurrency} = {own.sum() / concurrency:5.1f} s (longest {own.max():.1f} s)"
            )
        total = sum(fit_seconds)
        print(f"the same fits directly: {total:.1f} s in all, / {concurrency} concurrent = {ideal:.1f} s")
        print(f"search overhead: {search_wall / ideal - 1:+.0%} (target <= +15%)")


if __name__ == "__main__":
    main()
