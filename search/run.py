"""The staged search driver: one Tune experiment per stage, decisions in ``manifest.json``.

    <storage>/<run_id>/
      manifest.json    spec, spec hash, each stage's decision with its evidence (atomic)
      <stage>/         the stage's Tune experiment (restored if present)
      results/         Parquet tables trials and epochs, partitioned by stage
      report/          the HTML report, rewritten after every stage (search.report)
      export/          the selected model (written by ``psvae export`` / the demo)

Running the same spec again continues the run: finished stages are not re-run, the current
stage is restored from its trials' checkpoints, and a changed spec is refused. The storage may
be an object store (``search/storage.py``): Tune writes there directly and the driver's files
are mirrored.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psvae.errors import UserError
from psvae.family import DEFAULT_CLASS, FAMILY
from psvae.files import write_json_atomic
from results_schema import trial_columns_from_metrics
from search.rundir import check_run_id
from search.spec import SearchSpec, StageSpec
from search.storage import Storage, check_shared_storage, exists, is_uri, read_text

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class SearchError(Exception):
    """The search cannot go on (e.g. a stage has no usable trial); not an input error."""


class Interrupted(Exception):
    """The stage's experiment ended with unfinished trials (e.g. after Ctrl-C)."""


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The manifest of a run directory: a local path, or a URI (``s3://bucket/runs/ID``)."""
    location = f"{str(run_dir).rstrip('/')}/{MANIFEST}" if is_uri(str(run_dir)) else Path(run_dir) / MANIFEST
    if not exists(location):
        raise UserError(f"{run_dir}: not a search run directory (no {MANIFEST})")
    try:
        manifest = json.loads(read_text(location))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{location}: damaged, not readable JSON ({err}); restore it from a copy") from None
    if not isinstance(manifest, dict) or not {"run_id", "spec_hash", "spec", "stages"} <= set(manifest):
        raise UserError(f"{location}: damaged, not a search manifest (missing run_id, spec or stages)")
    # a manifest read back from storage is untrusted: others may write to a shared bucket
    check_run_id(manifest["run_id"], f"{location}: run_id")
    return dict(manifest)


def open_run(spec: SearchSpec, storage: Path, run_id: str) -> tuple[Path, dict[str, Any]]:
    """Create the run directory and manifest, or check that an existing one is this spec's."""
    run_dir = storage / check_run_id(run_id)
    if (run_dir / MANIFEST).is_file():
        manifest = read_manifest(run_dir)
        if manifest["spec_hash"] != spec.spec_hash():
            raise UserError(
                f"{run_dir}: was started with a different search spec (hash {manifest['spec_hash']}, "
                f"now {spec.spec_hash()}); use a new --run-id, or the original config to resume"
            )
        return run_dir, manifest
    if run_dir.exists() and any(p.name != "inputs" for p in run_dir.iterdir()):
        raise UserError(f"{run_dir}: exists and is not a search run; choose another --run-id")
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "version": MANIFEST_VERSION,
        "run_id": run_id,
        "spec_hash": spec.spec_hash(),
        "spec": spec.to_dict(),
        "created": now(),
        "status": "running",
        "stages": {},
        "selected": None,
    }
    write_json_atomic(run_dir / MANIFEST, manifest)
    return run_dir, manifest


def chosen_overrides(manifest: dict[str, Any], spec: SearchSpec) -> dict[str, Any]:
    """The fit-config keys fixed so far: by hand, or by the decisions of finished stages."""
    out: dict[str, Any] = {}
    if spec.alpha is not None:
        out["loss.alpha"] = spec.alpha
    if spec.beta is not None:
        out["loss.beta"] = spec.beta
    for stage in spec.stages:
        record = manifest["stages"].get(stage.name)
        if record is None or record["status"] != "done":
            break
        out.update(record["fixes"])
    return out


def _trial_row(
    result: Any, run_id: str, stage: str, storage: Storage | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One trials row and its epochs rows from a Tune result (checkpoints as ``storage`` names
    them: a URI on an object store, else a local path)."""
    from search.trainable import HISTORY

    metrics = dict(result.metrics or {})
    config = {**result.config["base"], **result.config["trial"]}
    trial_id = str(metrics.get("trial_id") or Path(result.path).name)
    error: str | None
    if result.error is not None:
        status, error = "failed", str(result.error).strip().splitlines()[-1][:500]
    elif metrics.get("done"):
        status = metrics["fit_status"]
        error = f"non-finite loss at epoch {metrics['epochs_run'] - 1}" if status == "diverged" else None
    else:
        status, error = "failed", "stopped before the end of its fit"
    names = list(json.loads(metrics.get("label_names_json") or "[]"))
    history: list[dict[str, Any]] = []
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as d:
            if (Path(d) / HISTORY).is_file():
                history = json.loads((Path(d) / HISTORY).read_text())

    checkpoint = None if result.checkpoint is None else str(result.checkpoint.path)
    if checkpoint is not None and storage is not None:
        checkpoint = storage.location(checkpoint)

    def metric(key: str) -> float:
        value = metrics.get(key)
        return float("nan") if value is None else float(value)

    row = {
        "run_id": run_id,
        "stage": stage,
        "trial_id": trial_id,
        "status": status,
        "error": error,
        "alpha": float(config["loss.alpha"]),
        "beta": float(config["loss.beta"]),
        "model_class": str(config.get("model.model_class", DEFAULT_CLASS)),
        "delta": float(config.get("loss.delta", float("nan"))),
        "msp_alpha": float(config.get("loss.msp_alpha", float("nan"))),
        "n_unsupervised": int(config["model.n_unsupervised"]),
        "n_background": int(config.get("model.n_background", 0))
        if FAMILY[str(config.get("model.model_class", DEFAULT_CLASS))].background
        else 0,
        "seed_model": int(config["train.seed_model"]),
        "epochs_run": metrics.get("epochs_run", len(history)),
        "best_epoch": metrics.get("best_epoch"),
        "precision": metrics.get("precision"),
        "wall_seconds": metrics.get("time_total_s"),
        "label_names": names,
        "val_label_r2_per_label": [metric(f"val_label_r2_{n}") for n in names],
        "test_label_r2_per_label": [metric(f"test_label_r2_{n}") for n in names],
        "config_json": json.dumps(config, sort_keys=True),
        "checkpoint": checkpoint,
    }
    for key in (
        "val_loss", "val_pixel_mse", "val_label_mse", "val_label_r2", "val_mi", "val_tc", "val_dwkl",
        "test_loss", "test_pixel_mse", "test_label_mse", "test_label_r2",
        "train_mean_abs_corr_u", "test_abs_corr_u01", "val_session_acc", "session_chance",
    ):  # fmt: skip
        row[key] = metric(key)
    row.update(trial_columns_from_metrics(metrics))
    epochs = [
        {
            "run_id": run_id,
            "stage": stage,
            "trial_id": trial_id,
            **{k: (float("nan") if v is None else v) for k, v in h.items()},
        }
        for h in history
    ]
    return row, epochs


OPTUNA_JOURNAL = "optuna.journal"
# what an optuna stage optimises: the alpha stage the pixel/label trade-off (multi-objective),
# other stages the beta selection statistic
OPTUNA_OBJECTIVES = {
    "alpha": ["val_pixel_mse", "val_label_mse"],
    "msp_alpha": ["val_pixel_mse", "val_label_mse"],
}
DEFAULT_OBJECTIVE = ["train_mean_abs_corr_u"]


def _optuna_stage(stage: StageSpec, run_dir: Path, max_concurrent: int | None) -> tuple[Any, Any]:
    """The trial space and TuneConfig of an optuna stage; its study is journalled in the run
    directory (``optuna-dashboard <run_dir>/optuna.journal`` shows it)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    assert stage.range is not None
    space: dict[str, Any] = {stage.key: tune.loguniform(*stage.range)}
    if stage.n_unsupervised:
        space["model.n_unsupervised"] = tune.choice(list(stage.n_unsupervised))
    objectives = OPTUNA_OBJECTIVES.get(stage.name, DEFAULT_OBJECTIVE)
    searcher = OptunaSearch(
        metric=objectives,  # a list: only final results are told, never the partial epochs
        mode=["min"] * len(objectives),
        storage=optuna.storages.JournalStorage(JournalFileBackend(str(run_dir / OPTUNA_JOURNAL))),
        study_name=f"{run_dir.name}-{stage.name}",  # the run id keeps studies of runs apart
        seed=0,
    )
    config = tune.TuneConfig(
        search_alg=searcher, num_samples=stage.n_trials, max_concurrent_trials=max_concurrent
    )
    return space, config


def run_stage(
    stage: StageSpec,
    spec: SearchSpec,
    run_dir: Path,
    data_arrays: dict[str, Any],
    fixed: dict[str, Any],
    experiments: str | None = None,
) -> Any:
    """Run (or restore and finish) the stage's Tune experiment; returns its ResultGrid.
    ``run_dir``: the driver's local run folder; ``experiments``: where Tune keeps the stage's
    experiment (default ``run_dir``; a URI for an object store)."""
    from ray import tune

    from search.trainable import train_psvae

    base = {**spec.fit, **fixed, "train.num_threads": max(1, int(spec.resources.cpus_per_trial))}
    trainable = tune.with_resources(
        tune.with_parameters(train_psvae, data=data_arrays),
        {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial},
    )
    experiments = experiments or str(run_dir)
    path = f"{experiments}/{stage.name}"
    max_concurrent = spec.resources.max_concurrent or None
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        if stage.algorithm == "optuna":
            trial_space, tune_config = _optuna_stage(stage, run_dir, max_concurrent)
        else:
            trial_space = tune.grid_search(stage.trial_overrides())
            # reusing a trial's worker process saves its start and torch import for the next trial
            tune_config = tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=True)
        tuner = tune.Tuner(
            trainable,
            param_space={"base": base, "trial": trial_space, "checkpoint_every_s": spec.checkpoint_every_s},
            tune_config=tune_config,
            run_config=tune.RunConfig(
                name=stage.name,
                storage_path=experiments,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=0,
            ),
        )
    grid = tuner.fit()
    unfinished = [
        t.trial_id for t in tune.ExperimentAnalysis(path).trials if t.status not in ("TERMINATED", "ERROR")
    ]
    if unfinished:
        raise Interrupted(f"stage {stage.name}: {len(unfinished)} trial(s) unfinished")
    return grid


def refresh_report(run_dir: Path, log: Callable[[str], None]) -> None:
    """Rewrite ``RUN_DIR/report/``. The report only shows the search: if it cannot be written,
    one warning is logged and the search goes on."""
    try:
        from search.report import write_report

        write_report(run_dir)
    except Exception as err:
        log(f"warning: the report in {run_dir / 'report'} was not refreshed: {type(err).__name__}: {err}")


LOOPBACK = "127.0.0.1"
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
NICENESS = "RAY_worker_niceness"  # Ray's system config, spelled as Ray reads it


def start_ray(address: str | None) -> str | None:
    """Start or join Ray; returns the dashboard's URL when this process started it.

    Without ``address`` a new local Ray is started (``address="local"``), never an instance that
    happens to run on this machine (``RAY_ADDRESS`` or Ray's shared temporary folder), and every
    port it opens, the dashboard's included, listens on 127.0.0.1 only. Its workers run at the
    driver's priority: Ray's default niceness 15 slowed trials 1.4-3.2x on a busy machine.
    With ``address`` (a cluster, or ``auto`` inside a Ray Job) the cluster's own settings apply.
    """
    common: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if address is not None:
        import ray

        ray.init(address=address, **common)
        return None
    # Ray binds to the machine's routable address unless it is told this is a one-machine
    # cluster; it reads the variable when it is imported (and its processes inherit it)
    os.environ[SINGLE_MACHINE] = "0"
    os.environ[NICENESS] = "0"
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # in case Ray was imported before the variable was set
    context = ray.init(
        address="local",
        _node_ip_address=LOOPBACK,
        include_dashboard=True,
        dashboard_host=LOOPBACK,
        **common,
    )
    url = context.dashboard_url
    return f"http://{url}" if url and "://" not in url else url


def _protect_token() -> None:
    """Ray writes its auth token readable by everyone (0644); anyone who reads it can run code
    on the cluster, so keep it to its owner."""
    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if token.is_file() and token.stat().st_mode & 0o077:
        token.chmod(0o600)


def run_search(
    spec: SearchSpec,
    run_id: str,
    storage: Storage,
    address: str | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Run or resume the staged search; returns the run directory."""
    import pandas as pd
    import ray

    from psvae.data import load_data
    from search import results, selection

    storage.pull(run_id)
    run_dir, manifest = open_run(spec, storage.local, run_id)
    storage.push(run_id, MANIFEST)

    def save_manifest() -> None:
        write_json_atomic(run_dir / MANIFEST, manifest)
        storage.push(run_id, MANIFEST)

    def report() -> None:
        refresh_report(run_dir, log)
        storage.push(run_id, "report")

    # Tune's own console output is replaced by one line per stage and decision
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # the selection statistics arrive with a trial's last report, not with every epoch
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    if not ray.is_initialized():
        dashboard = start_ray(address)
        if dashboard:
            log(f"Ray dashboard: {dashboard}")
    _protect_token()
    check_shared_storage(storage.root, sum(1 for node in ray.nodes() if node["Alive"]))
    base_cfg = spec.base_config()
    data = load_data(
        list(spec.data),
        base_cfg.data.split,
        base_cfg.data.split_seed,
        per_session=FAMILY[base_cfg.model.model_class].background,
    )
    arrays = data.to_arrays()
    for name, value in (("alpha", spec.alpha), ("beta", spec.beta)):
        if value is not None and name not in manifest["stages"]:
            manifest["stages"][name] = {"status": "fixed", "value": value, "rule": "fixed by hand"}
    last_decision: dict[str, Any] | None = None
    for stage in spec.stages:
        record = manifest["stages"].get(stage.name)
        if record is not None and record["status"] == "done":
            log(f"stage {stage.name}: done earlier, chose {record['fixes']}")
            last_decision = record["decision"] | {"stage": stage.name}
            continue
        fixed = chosen_overrides(manifest, spec)
        n_trials = stage.n_trials if stage.algorithm == "optuna" else len(stage.trial_overrides())
        varied = " x ".join(stage.varied_keys())
        log(f"stage {stage.name}: {n_trials} {stage.algorithm} trials varying {varied}, fixed {fixed}")
        start = time.perf_counter()
        manifest["stages"][stage.name] = {"status": "running", "started": now()}
        save_manifest()
        grid = run_stage(stage, spec, run_dir, arrays, fixed, storage.run_location(run_id))
        storage.push(run_id, OPTUNA_JOURNAL)
        rows, epoch_rows = [], []
        for result in grid:
            row, epochs = _trial_row(result, run_id, stage.name, storage)
            rows.append(row)
            epoch_rows.extend(epochs)
        rows.sort(key=lambda r: r["trial_id"])
        results.write_stage(run_dir / "results", "trials", stage.name, rows)
        results.write_stage(run_dir / "results", "epochs", stage.name, epoch_rows)
        for table in ("trials", "epochs"):
            storage.push(run_id, f"results/{table}/{results.STAGE_DIR_PREFIX}{stage.name}")
        try:
            decision = selection.select(stage.rule, pd.DataFrame(rows), **stage.rule_params)
        except selection.SelectionError as err:
            manifest["stages"][stage.name] = {"status": "failed", "error": str(err), "finished": now()}
            manifest["status"] = "failed"
            save_manifest()
            report()
            raise SearchError(f"stage {stage.name}: {err}") from None
        chosen_row = next(r for r in rows if r["trial_id"] == decision.trial_id)
        chosen_config = json.loads(chosen_row["config_json"])
        checkpoint = chosen_row["checkpoint"]
        manifest["stages"][stage.name] = {
            "status": "done",
            "started": manifest["stages"][stage.name]["started"],
            "finished": now(),
            "seconds": round(time.perf_counter() - start, 1),
            "varies": f"{stage.key} x {stage.cross[0]}" if stage.cross else stage.key,
            "fixed": fixed,
            "fixes": {key: chosen_config[key] for key in stage.varied_keys()},
            "decision": decision.to_dict() | {"checkpoint": checkpoint},
        }
        save_manifest()
        last_decision = manifest["stages"][stage.name]["decision"] | {"stage": stage.name}
        log(f"stage {stage.name}: chose {manifest['stages'][stage.name]['fixes']}: {decision.explanation}")
        report()

    assert last_decision is not None
    manifest["selected"] = {
        "stage": last_decision["stage"],
        "trial_id": last_decision["trial_id"],
        "chosen": last_decision["chosen"],
        "checkpoint": last_decision["checkpoint"],
    }
    manifest["status"] = "done"
    manifest["finished"] = now()
    save_manifest()
    report()
    return run_dir
