"""``psvae status``: a run's stages and every trial, finished, running or still to come.

Read from the run directory alone: the manifest (stages, decisions, how many trials each stage
plans), the Parquet results (finished trials) and Tune's result files (running trials: their
latest epoch and validation metrics), so it works while the search runs, after it was killed,
and on another machine (a URI).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from results_schema import columns as col
from search.live import eta_text, values_text
from search.rundir import DONE, EXPERIMENT, FIXED, HISTORY, RUNNING, TRIAL_CONFIG, Manifest, RunDir
from search.spec import SearchSpec
from search.storage import list_files, read_text


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.4g}"
    return "-" if value is None else str(value)


def _folder(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 2)[-2]


def _json_or_none(location: str) -> Any:
    """A JSON file of Tune's, or None when it cannot be read whole: Tune writes these while the
    search runs, and a killed driver or a full disk leaves them cut short."""
    try:
        return json.loads(read_text(location))
    except (OSError, ValueError):
        return None


def _last_line(location: str) -> dict[str, Any] | None:
    """The last report in a trial's ``result.json`` that can be read (a line being written, or
    cut short, is skipped)."""
    try:
        lines = read_text(location).splitlines()
    except (OSError, ValueError):
        return None
    for line in reversed(lines):
        if line.strip():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _per_trial(experiment: str, name: str) -> dict[str, list[str]]:
    """Trial folder -> its checkpoints' files called ``name`` (<trial>/checkpoint_NNNNNN/name)."""
    found: dict[str, list[str]] = {}
    for path in list_files(experiment, name):
        found.setdefault(path.replace("\\", "/").rsplit("/", 3)[-3], []).append(path)
    return found


def last_reports(experiment: str) -> dict[str, dict[str, Any] | None]:
    """Trial id -> its last report (or None before its first), from Tune's result files of an
    experiment (a local folder or a URI).

    A trial whose reports have not reached its result file (its worker wrote a checkpoint and
    the driver was killed before logging the report) is described from its config
    (Tune's ``params.json``, or the copy our trainable keeps in each checkpoint, for a trial the
    driver was killed before it logged) and its newest checkpoint's epochs instead. A file that
    cannot be read whole is passed over, as if not written yet."""
    results = {_folder(p): p for p in list_files(experiment, "result.json")}
    params = {_folder(p): p for p in list_files(experiment, "params.json")}
    histories = _per_trial(experiment, HISTORY)
    configs = _per_trial(experiment, TRIAL_CONFIG)
    out: dict[str, dict[str, Any] | None] = {}
    for folder in sorted(set(results) | set(params) | set(configs)):
        last = _last_line(results[folder]) if folder in results else None
        if last is not None and not isinstance(last.get("config", {}), dict):
            last = None
        if last is None:
            config = _json_or_none(params[folder]) if folder in params else None
            for copy in sorted(configs.get(folder, []), reverse=True):
                if isinstance(config, dict):
                    break
                config = _json_or_none(copy)
            if isinstance(config, dict):
                last = {"config": config}
                for history in sorted(histories.get(folder, []), reverse=True):
                    epochs = _json_or_none(history)
                    if isinstance(epochs, list):
                        last[col.EPOCH] = len(epochs) - 1
                        break
        trial_id = (
            str(last.get(col.TRIAL_ID)) if last and last.get(col.TRIAL_ID) else folder.split("-", 1)[-1]
        )
        out[trial_id] = last
    return out


@dataclass
class TrialState:
    stage: str
    trial_id: str
    state: str  # pending, started, running, completed, diverged, failed, reused
    values: dict[str, Any]
    epoch: int | None = None
    epochs: int | None = None
    val_loss: float | None = None
    val_pixel_mse: float | None = None
    val_label_r2: float | None = None
    corr: float | None = None
    eta_s: float | None = None
    why: str | None = None


def _running(last: dict[str, Any] | None) -> dict[str, Any]:
    try:
        return _progress(last)
    except (TypeError, ValueError, AttributeError):  # a report of Tune's that is not as written
        return {"state": "started"}


def _progress(last: dict[str, Any] | None) -> dict[str, Any]:
    if last is None or col.EPOCH not in last:
        return {"state": "started"}
    epoch = int(last.get(col.EPOCH, -1)) + 1
    epochs = int(
        (last.get("config", {}).get("base", {}) | last.get("config", {}).get("set", {})).get(
            "train.epochs", 0
        )
    )
    elapsed, iterations = last.get("time_since_restore"), last.get("iterations_since_restore")
    eta = None
    if elapsed and iterations and epochs:
        eta = (epochs - epoch) * float(elapsed) / float(iterations)
    return {
        "state": "running",
        col.EPOCH: epoch,
        "epochs": epochs or None,
        col.VAL_LOSS: last.get(col.VAL_LOSS),
        col.VAL_PIXEL_MSE: last.get(col.VAL_PIXEL_MSE),
        col.VAL_LABEL_R2: last.get(col.VAL_LABEL_R2),
        "eta_s": eta,
    }


def trial_states(run: RunDir, manifest: Manifest) -> list[TrialState]:
    """Every trial of the run, in plan order: finished ones from the results, running ones from
    Tune's files, and the current stage's planned trials that have not started."""
    spec = SearchSpec.from_dict(manifest.spec)
    rows = run.results_table("trials").to_dict("records")
    states: list[TrialState] = []
    reports = last_reports(run.experiment) if manifest.one_experiment else {}
    for stage in spec.stages:
        record = manifest.stage(stage.name)
        if record is None:
            continue
        if not manifest.one_experiment and record.status == RUNNING:
            reports.update(last_reports(run.stage_experiment(stage.name)))
        keys = stage.varied_keys()
        finished = {r[col.TRIAL_ID]: r for r in rows if r[col.STAGE] == stage.name}
        seen = set()
        for trial_id, row in sorted(finished.items()):
            config = json.loads(row[col.CONFIG_JSON])
            state = "reused" if isinstance(row.get(col.REUSED_FROM), str) else row[col.STATUS]
            why = f"the fit of {row[col.REUSED_FROM]}" if state == "reused" else row.get(col.ERROR)
            states.append(
                TrialState(
                    stage.name, trial_id, state, {k: config.get(k) for k in keys},
                    row.get(col.EPOCHS_RUN), int(config.get("train.epochs", 0)) or None,
                    row.get(col.VAL_LOSS), row.get(col.VAL_PIXEL_MSE), row.get(col.VAL_LABEL_R2),
                    row.get(col.TRAIN_MEAN_ABS_CORR_U), None, why if isinstance(why, str) else None,
                )
            )  # fmt: skip
            seen.add(json.dumps({k: config.get(k) for k in keys}, sort_keys=True, default=str))
        if record.status != RUNNING:
            continue
        for trial_id, last in sorted(reports.items()):
            config = (last or {}).get("config", {})
            if config and config.get(col.STAGE) != stage.name:
                continue
            if trial_id in finished or (not config and manifest.one_experiment):
                continue
            fit = {**config.get("base", {}), **config.get("set", {})}
            values = {k: fit.get(k) for k in keys}
            seen.add(json.dumps(values, sort_keys=True, default=str))
            states.append(TrialState(stage.name, trial_id, values=values, **_running(last)))
        if stage.algorithm == "grid":
            fixed = manifest.chosen_overrides(spec.alpha, spec.beta)
            base = spec.base_config()
            for overrides in stage.trial_overrides():
                fit = base.replace(**{**fixed, **overrides}).flat()
                values = {k: fit.get(k) for k in keys}
                if json.dumps(values, sort_keys=True, default=str) not in seen:
                    states.append(
                        TrialState(stage.name, "-", "pending", values, epochs=int(fit["train.epochs"]))
                    )
        elif stage.algorithm == "optuna":
            started = sum(1 for s in states if s.stage == stage.name)
            states += [
                TrialState(stage.name, "-", "pending", {}) for _ in range(max(0, stage.n_trials - started))
            ]
    return states


def status_text(location: str) -> str:
    """``location``: a run directory, local or a URI (its driver files are fetched first)."""
    run = RunDir.open(location)
    manifest = run.read()
    spec_names = [s["name"] for s in manifest.spec.get("stages", [])]
    lines = [f"run {manifest.run_id} ({manifest.status}), spec {manifest.spec_hash}: {run.location}"]
    if manifest.dashboard and manifest.status == RUNNING:
        lines.append(f"Ray dashboard (while its driver runs): {manifest.dashboard}")
    lines += ["", f"{'stage':<10} {'status':<9} {'trials':>6} {'rule':<20} chosen"]
    fixed = [n for n, r in manifest.stages.items() if r.status == FIXED]
    for name in fixed + spec_names:
        record = manifest.stage(name)
        if record is None:
            lines.append(f"{name:<10} {'pending':<9}")
            continue
        if record.status == FIXED:
            lines.append(f"{name:<10} {'fixed':<9} {'':>6} {'by hand':<20} {name}={record.value}")
            continue
        decision = record.decision or {}
        chosen = ", ".join(f"{k}={v}" for k, v in (decision.get("chosen") or {}).items())
        trials = "" if record.planned is None else str(record.planned)
        rule = decision.get("rule", "-") if record.status == DONE else ("-" if not record.error else "failed")
        lines.append(f"{name:<10} {record.status:<9} {trials:>6} {rule:<20} {chosen}")
        if record.error:
            lines.append(f"  {record.error}")
    states = trial_states(run, manifest)
    if states:
        header = (
            f"{'stage':<10} {'trial':<16} {'state':<10} {'values':<26} {'epoch':>9} {'val loss':>10} "
            f"{'val pix MSE':>11} {'val R2':>7} {'mean|r|':>8} {'ETA':>7}"
        )
        lines += ["", header]
        for s in states:
            epoch = "" if s.epoch is None else f"{s.epoch}/{s.epochs or '?'}"
            eta = eta_text(s.eta_s) if s.state == "running" else ""
            lines.append(
                f"{s.stage:<10} {s.trial_id:<16} {s.state:<10} {values_text(s.values):<26} {epoch:>9} "
                f"{_fmt(s.val_loss):>10} {_fmt(s.val_pixel_mse):>11} {_fmt(s.val_label_r2):>7} "
                f"{_fmt(s.corr):>8} {eta:>7}" + (f"  ({s.why})" if s.why else "")
            )
        running = [s for s in states if s.state == "running" and s.eta_s is not None]
        if running:
            first = min(s.eta_s or 0.0 for s in running)
            lines.append(f"\n{len(running)} trial(s) running; the first ends in about {eta_text(first)}")
    if manifest.selected is not None:
        picked = manifest.selected
        lines += ["", f"selected: trial {picked.trial_id} of stage {picked.stage}: {picked.chosen}"]
    return "\n".join(lines)


def watch(location: str, every_s: float, show: Any = print) -> None:
    """Print the status every ``every_s`` seconds until the run is no longer running."""
    while True:
        text = status_text(location)
        show("\033[2J\033[H" + text + f"\n\n(refreshed every {every_s:g} s; Ctrl-C to stop watching)")
        if not text.split("\n", 1)[0].split("(", 1)[1].startswith(RUNNING):
            return
        time.sleep(every_s)


__all__ = ["EXPERIMENT", "last_reports", "status_text", "trial_states", "watch"]
