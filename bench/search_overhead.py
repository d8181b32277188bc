"""What the search service costs on top of the fits it runs, measured side by side.

    python bench/search_overhead.py [--epochs 8] [--rounds 2] [--baseline REV]

Three things run in turn, in rounds (A, B, C, then B, C, A, ...), so a change in the machine's
load falls on all of them alike:

- **search**: the quick staged search (``psvae demo --quick``'s data, stages and schedule) as one
  ``psvae search`` on a local Ray;
- **direct**: exactly the fits that search ran (its trials table, reused rows left out), run
  through psvae's Trainer with no Ray, in as many worker processes as the search ran trials at
  once, each with the trial's own thread count;
- **previous**: the same search with the driver of ``--baseline`` (default: the last commit
  before the one-experiment engine), checked out beside this one; its 11 fits include the 2
  repeats this engine reuses.

The overhead is the search's wall time over the ideal, minus one, where the ideal is the direct
fits' summed wall time divided by the concurrency (as if no slot ever waited). Wall time and
CPU seconds (user + system of every process a command started, Ray's included: the process tree
is sampled while it runs) are both shown, as the median over rounds; CPU seconds do not depend
on how busy the machine was. Each command starts with no precision probe's answer cached (the
first fits of each probe). Then it prints where the search's remaining time went, from its own
log and results: the driver's start, before the first trial (Ray's start, reading the data),
each stage against its trials' own time, and the end (the report's last rebuild, Ray's
shutdown).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from psvae import synthetic  # noqa: E402
from search import demo  # noqa: E402

PREVIOUS_DRIVER = "0b18dd1"  # the last landed commit with one Tune experiment per stage


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class TreeCPU:
    """CPU seconds (user + system) of a process and of every process it starts, Ray's included,
    sampled every ``every`` seconds while it runs: a process that ends between two samples loses
    at most its last ``every`` seconds, one shorter than that may be missed (Ray's processes
    live for the whole command)."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        self.root = psutil.Process(pid)
        self.every = every
        self.seen: dict[tuple[int, float], float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self.every):
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                continue
            for p in processes:
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        self.seen[(p.pid, p.create_time())] = t.user + t.system
                except psutil.Error:
                    pass  # ended since the listing

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return sum(self.seen.values())


def no_probe_cached(home: str) -> None:
    """Every command starts as the first of the day: no precision probe's answer kept."""
    (Path(home) / ".cache" / "psvae" / "precision.json").unlink(missing_ok=True)  # ours: the bench's HOME


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, datetime]:
    """(wall seconds, CPU seconds of the command and every process it started, when it began)."""
    no_probe_cached(env["HOME"])
    began, start = datetime.now(UTC), time.perf_counter()
    proc = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    cpu = TreeCPU(proc.pid)
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    cpu_s = cpu.stop()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{err[-3000:]}")
    return wall, cpu_s, began


def _fit(args: tuple[str, str]) -> float:
    """One fit through psvae alone (a worker process of the direct runs); its wall seconds."""
    import torch

    from psvae.config import FitConfig
    from psvae.data import load_data
    from psvae.trainer import Trainer

    config_json, data = args
    cfg = FitConfig.from_mapping(json.loads(config_json))
    torch.set_num_threads(max(1, cfg.train.num_threads))
    start = time.perf_counter()
    trainer = Trainer(cfg, load_data([data]))
    for _ in trainer.epochs():
        pass
    trainer.finish()
    return time.perf_counter() - start


def direct(configs: list[str], data: str, workers: int, home: str) -> tuple[float, float, list[float]]:
    """The fits in ``workers`` processes: (wall, CPU seconds, each fit's own wall seconds)."""
    no_probe_cached(home)
    cpu_before = child_cpu()
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        seconds = list(pool.map(_fit, [(c, data) for c in configs]))
    wall = time.perf_counter() - start
    return wall, child_cpu() - cpu_before, seconds


def log_times(run: Path) -> dict[str, datetime]:
    """When the search's log says things happened: its first line, each stage's start and end."""
    out: dict[str, datetime] = {}
    for line in (run / "search.log").read_text().splitlines():
        stamp, _, text = line.partition(" ")
        when = datetime.fromisoformat(stamp)
        out.setdefault("start", when)
        if text.startswith("stage ") and ": " in text:
            name = text.split()[1].rstrip(":")
            key = "chose" if ": chose " in text else "begins" if " trials varying " in text else None
            if key:
                out.setdefault(f"{name} {key}", when)
        if " queued, " in text:
            out.setdefault("first trial", when)
    return out


def breakdown(run: Path, wall: float, began: datetime, concurrency: int) -> list[str]:
    manifest = json.loads((run / "manifest.json").read_text())
    trials = pd.read_parquet(run / "results" / "trials")
    ran = trials[trials.reused_from.isna()]
    times = log_times(run)
    first = times.get("first trial") or times[f"{manifest['spec']['stages'][0]['name']} begins"]
    last = times[f"{manifest['spec']['stages'][-1]['name']} chose"]
    lines = [
        f"  the driver's start (Python, imports, the spec's checks; to its first log line, "
        f"1-s log stamps): {(times['start'] - began).total_seconds():5.1f} s",
        f"  before the first stage's trials (Ray's start, the dashboard, reading the data): "
        f"{(first - times['start']).total_seconds():5.1f} s",
    ]
    for stage in manifest["spec"]["stages"]:
        name = stage["name"]
        record = manifest["stages"][name]
        own = ran.loc[ran.stage == name, "wall_seconds"]
        reused = int(trials[(trials.stage == name) & trials.reused_from.notna()].shape[0])
        note = f", {reused} reused" if reused else ""
        lines.append(
            f"  stage {name:<6} {record['seconds']:5.1f} s; its {len(own)} fits' own time / {concurrency} = "
            f"{own.sum() / concurrency:5.1f} s (longest {own.max():.1f} s){note}"
        )
    ended = (began - last).total_seconds() + wall
    lines.append(f"  after the last decision (the report's last rebuild, Ray's shutdown): {ended:5.1f} s")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="epochs per fit (default: the quick demo's)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the three runs (default 2)")
    parser.add_argument("--baseline", default=PREVIOUS_DRIVER, help="the previous driver's git revision")
    parser.add_argument("--no-baseline", action="store_true", help="skip the previous driver")
    parser.add_argument(
        "--no-dashboard",
        action="store_true",
        help="this driver without Ray's dashboard (dashboard: false), as the previous driver ran: "
        "the drivers compared like for like (the default starts it, as a search does)",
    )
    args = parser.parse_args()
    fit = copy.deepcopy(demo.QUICK["fit"])
    if args.epochs:
        fit["train"]["epochs"] = args.epochs
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        root = Path(tmp)
        data = synthetic.write(root / "quick.h5", synthetic.SyntheticSpec(n_trials=demo.QUICK["trials"]))
        config = root / "search.yaml"
        search = {"data": [str(data)], "fit": fit, "stages": demo.QUICK["stages"]}
        if args.no_dashboard:
            search["dashboard"] = False
        config.write_text(yaml.safe_dump(search))
        # the previous driver's rules had no collapse screen, nor its parameter: its stages
        # without it (the same values, the same decisions' inputs)
        old_stages = [{k: v for k, v in s.items() if k != "rule_params"} for s in demo.QUICK["stages"]]
        old_config = root / "search-previous.yaml"
        old_config.write_text(yaml.safe_dump({"data": [str(data)], "fit": fit, "stages": old_stages}))
        env = {**os.environ, "HOME": str(root), "PYTHONPATH": str(REPO)}
        baseline = None
        if not args.no_baseline:
            baseline = root / "previous"
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(baseline), args.baseline],
                check=True,
            )
        try:
            results: dict[str, list[tuple[float, float]]] = {
                "search": [],
                "direct": [],
                "ideal": [],
                "previous": [],
            }
            runs: list[Path] = []
            last_began = datetime.now(UTC)
            configs: list[str] = []
            concurrency = 1
            kinds = ["search", "direct", "previous"] if baseline else ["search", "direct"]
            for r in range(args.rounds):
                # the first round starts with the search (the direct runs repeat its fits); later
                # rounds rotate the order, so a drift in the machine's speed is shared out
                for what in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
                    if what == "search":
                        run_id = f"new-{r}"
                        cmd = [
                            sys.executable,
                            "-m",
                            "search.cli",
                            "search",
                            "--config",
                            str(config),
                            "--run-id",
                            run_id,
                            "--storage",
                            str(root / "runs"),
                        ]
                        wall, cpu, began = timed(cmd, env, REPO)
                        results["search"].append((wall, cpu))
                        last_began = began
                        runs.append(root / "runs" / run_id)
                        if not configs:
                            trials = pd.read_parquet(runs[-1] / "results" / "trials")
                            configs = list(trials[trials.reused_from.isna()].config_json)
                            threads = int(json.loads(configs[0])["train.num_threads"])
                            concurrency = max(1, (os.cpu_count() or 1) // threads)
                            print(f"the search ran {len(configs)} fits for {len(trials)} trials")
                    elif what == "direct":
                        wall, cpu, seconds_each = direct(configs, str(data), concurrency, env["HOME"])
                        results["direct"].append((wall, cpu))
                        results["ideal"].append((sum(seconds_each) / concurrency, 0.0))
                    elif baseline is not None:
                        cmd = [
                            sys.executable,
                            "-m",
                            "search.cli",
                            "search",
                            "--config",
                            str(old_config),
                            "--run-id",
                            f"old-{r}",
                            "--storage",
                            str(root / "old-runs"),
                        ]
                        wall, cpu, _ = timed(cmd, {**env, "PYTHONPATH": str(baseline)}, baseline)
                        results["previous"].append((wall, cpu))
                print(f"round {r + 1}/{args.rounds} done", flush=True)

            def median(name: str, i: int) -> float:
                return statistics.median(v[i] for v in results[name])

            epochs = fit["train"]["epochs"]
            dashboard = "without" if args.no_dashboard else "with"
            print(
                f"\nquick staged search, {epochs} epochs a fit, {args.rounds} rounds (medians); this driver "
                f"{dashboard} Ray's dashboard, the previous one without:"
            )
            print(f"  {'':<34} {'wall s':>8} {'CPU s':>8}")
            print(f"  {'search (this driver)':<34} {median('search', 0):8.1f} {median('search', 1):8.1f}")
            print(
                f"  {f'the same fits directly, {concurrency} at once':<34} "
                f"{median('direct', 0):8.1f} {median('direct', 1):8.1f}"
            )
            print(f"  {'ideal: their own time / ' + str(concurrency):<34} {median('ideal', 0):8.1f}")
            if results["previous"]:
                print(
                    f"  {'previous driver (' + args.baseline + ')':<34} "
                    f"{median('previous', 0):8.1f} {median('previous', 1):8.1f}"
                )
            overhead = median("search", 0) / median("ideal", 0) - 1
            print(f"search overhead over the ideal: {overhead:+.0%} (target <= +15%)")
            print(
                f"search over the direct fits at the same concurrency: "
                f"{median('search', 0) / median('direct', 0) - 1:+.0%} wall, "
                f"{median('search', 1) / median('direct', 1) - 1:+.0%} CPU"
            )
            if results["previous"]:
                ratios = [a[0] / b[0] for a, b in zip(results["search"], results["previous"], strict=False)]
                print(
                    f"this driver's wall time vs the previous one's: {statistics.median(ratios) - 1:+.0%} "
                    f"(per round: {', '.join(f'{x - 1:+.0%}' for x in ratios)}; target <= -25%)"
                )
            print("where this driver's time went (its last round):")
            for line in breakdown(runs[-1], results["search"][-1][0], last_began, concurrency):
                print(line)
        finally:
            if baseline is not None:  # the checkout this script made in its own temporary folder
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)], check=False
                )


if __name__ == "__main__":
    main()
