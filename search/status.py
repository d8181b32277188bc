"""``psvae status``: a run's stages, trials, states and choices as plain text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from search.run import read_manifest
from search.storage import is_uri, list_files, read_text, resolve_storage, split_run


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{value:.4g}"
    return "-" if value is None else str(value)


def last_reports(experiment: str | Path) -> list[tuple[str, dict[str, Any] | None]]:
    """(trial name, its last report or None) for each started trial of a stage's Tune
    experiment (a local folder or a URI), from Tune's result files."""
    out = []
    for result_file in list_files(experiment, "result.json"):
        reports = [line for line in read_text(result_file).splitlines() if line.strip()]
        name = "_".join(result_file.replace("\\", "/").rsplit("/", 2)[-2].split("_")[2:4])
        out.append((name, json.loads(reports[-1]) if reports else None))
    return out


def _running_trials(experiment: str) -> list[str]:
    """One line per trial of a stage that is still running."""
    lines = []
    for name, last in last_reports(experiment):
        if last is None:
            lines.append(f"  {name:<14} started")
            continue
        state = "finished" if last.get("done") else f"epoch {last.get('epoch')} reported"
        trial_config = last.get("config", {}).get("trial", {})
        lines.append(f"  {last.get('trial_id', name):<14} {state:<18} {trial_config}")
    return lines or ["  (no trial has started yet)"]


def status_text(location: str | Path) -> str:
    """``location``: a run directory, local or a URI (its driver files are fetched first)."""
    from search import results

    location = str(location).rstrip("/")
    manifest = read_manifest(location)
    run_dir = Path(location)
    if is_uri(location):
        root, run_id = split_run(location)
        store = resolve_storage(root)
        store.pull(run_id)
        run_dir = store.local / run_id
    lines = [f"run {manifest['run_id']} ({manifest['status']}), spec {manifest['spec_hash']}", ""]
    lines.append(f"{'stage':<8} {'status':<9} {'rule':<20} chosen")
    searched = [s["name"] for s in manifest["spec"]["stages"]]
    fixed = [name for name, r in manifest["stages"].items() if r["status"] == "fixed"]
    for stage in fixed + searched:
        record = manifest["stages"].get(stage)
        if record is None:
            lines.append(f"{stage:<8} {'pending':<9}")
            continue
        if record["status"] == "fixed":
            lines.append(f"{stage:<8} {'fixed':<9} {'by hand':<20} {stage}={record['value']}")
            continue
        decision = record.get("decision") or {}
        chosen = ", ".join(f"{k}={v}" for k, v in (decision.get("chosen") or {}).items())
        lines.append(f"{stage:<8} {record['status']:<9} {decision.get('rule', '-'):<20} {chosen}")
    trials = results.read_table(run_dir / "results", "trials") if (run_dir / "results").exists() else None
    if trials is not None and len(trials):
        header = f"{'stage':<8} {'trial':<14} {'status':<10} {'alpha':>7} {'beta':>5} {'U':>2} {'seed':>4} "
        lines += ["", header + f"{'val pix MSE':>11} {'val lab MSE':>11} {'mean|r|':>8}"]
        for row in trials.itertuples():
            hyper = f"{_fmt(row.alpha):>7} {_fmt(row.beta):>5} {row.n_unsupervised:>2} {row.seed_model:>4}"
            errors = f"{_fmt(row.val_pixel_mse):>11} {_fmt(row.val_label_mse):>11}"
            why = f"  ({row.error})" if isinstance(row.error, str) else ""
            lines.append(
                f"{row.stage:<8} {row.trial_id:<14} {row.status:<10} {hyper} {errors} "
                f"{_fmt(row.train_mean_abs_corr_u):>8}{why}"
            )
    for stage in searched:
        record = manifest["stages"].get(stage)
        if record is not None and record["status"] == "running":
            lines += ["", f"stage {stage} in progress:", *_running_trials(f"{location}/{stage}")]
    if manifest.get("selected"):
        s = manifest["selected"]
        lines += ["", f"selected: trial {s['trial_id']} of stage {s['stage']}: {s['chosen']}"]
    return "\n".join(lines)
