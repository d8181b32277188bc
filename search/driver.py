"""The search driver: one Ray Tune experiment per run, driven by the staged plan.

``run_search`` opens (or creates) the run directory, takes its driver lock, starts or joins
Ray, reads the data once into Ray's object store, and runs one ``Tuner`` whose searcher is the
run's :class:`search.scheduler.StagedSearch`: Tune asks it for trials, it decides each stage
from the stage's results and suggests the next stage's trials in the same experiment, so trial
workers are reused from stage to stage. A killed driver is resumed by running it again: Tune
restores its experiment (finished trials stay finished, running ones continue from their
checkpoints) and the plan takes up the manifest's decisions and Tune's trials.

Everything that watches the search (the terminal display, the report) is an observer handed
in by the caller; the driver imports neither.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from psvae.errors import UserError
from psvae.family import FAMILY
from search.rundir import (
    EXPERIMENT,
    HISTORY,
    INPUTS,
    LOCK,
    LOG,
    Manifest,
    RunDir,
    check_run_id,
    now,
)
from search.scheduler import FINISHED, Observer, StagedSearch, TrialOutcome, fixed_records, trial_base
from search.spec import SearchSpec
from search.storage import REMOTE_FILE, Storage, check_shared_storage

LOOPBACK = "127.0.0.1"
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
NICENESS = "RAY_worker_niceness"  # Ray's system config, spelled as Ray reads it


class SearchError(Exception):
    """The search cannot go on (e.g. a stage has no usable trial); not an input error."""


class Interrupted(Exception):
    """The experiment ended with the plan unfinished (e.g. after Ctrl-C); resume continues it."""


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


# -- the run directory ------------------------------------------------------------------------
def open_run(spec: SearchSpec, storage: Storage, run_id: str) -> RunDir:
    """The run directory of ``run_id`` in ``storage``, its driver files fetched (object store)."""
    storage.pull(check_run_id(run_id))
    local = storage.local / run_id
    run = RunDir(local, storage.run_location(run_id), run_id, storage if storage.remote else None)
    if not run.manifest_path.is_file() and local.exists():
        ours = (INPUTS, LOCK, REMOTE_FILE)  # what a run folder may hold before its manifest
        foreign = not local.is_dir() or any(p.name not in ours for p in local.iterdir())
        if foreign:
            raise UserError(f"{run.location}: exists and is not a search run; choose another --run-id")
    local.mkdir(parents=True, exist_ok=True)
    return run


def check_or_create(run: RunDir, spec: SearchSpec) -> Manifest:
    """The run's manifest, checked against ``spec``; created for a new run, with what produced
    it (package version, source commit, each data file's size and SHA-256). Call with the lock
    held."""
    from psvae.provenance import collect

    recorded = spec.relative_to(run.local)
    if run.manifest_path.is_file():
        manifest = run.read()
        if not manifest.one_experiment:
            raise UserError(
                f"{run.location}: was written by psvae-tune 0.1 (one Tune experiment per stage), which "
                "this version cannot resume; status, report and export still read it; start a new run "
                "(another --run-id) to search again"
            )
        if manifest.spec_hash != recorded.spec_hash():
            raise UserError(
                f"{run.location}: was started with a different search spec (hash {manifest.spec_hash}, "
                f"now {recorded.spec_hash()}); use a new --run-id, or the original config to resume"
            )
        return manifest
    manifest = Manifest(
        run_id=run.run_id,
        spec_hash=recorded.spec_hash(),
        spec=recorded.to_dict(),
        stages={},
        created=now(),
        provenance=collect(spec.data),
    )
    run.write(manifest)
    return manifest


class RunLog:
    """What the driver says: to ``show`` (the terminal) and, with a time, to ``<run>/search.log``."""

    def __init__(self, run: RunDir, show: Callable[[str], None]) -> None:
        self.path = run.local / LOG
        self.show = show
        self.run = run

    def __call__(self, line: str) -> None:
        self.show(line)
        with open(self.path, "a") as f:
            f.write(f"{now()} {line}\n")


# -- Tune -------------------------------------------------------------------------------------
_ENGINE: StagedSearch | None = None
"""The plan this process runs. Tune pickles its searcher and callbacks into the experiment
(``tuner.pkl``) and restores those copies on resume: they hold no state and find the live plan
here."""


def _live() -> StagedSearch:
    if _ENGINE is None:
        raise RuntimeError("this experiment is run by psvae's search driver: resume it with psvae resume")
    return _ENGINE


def _tune_classes() -> tuple[type, type]:
    from ray.tune import Callback
    from ray.tune.search import Searcher

    class StagedSearcher(Searcher):
        """Tune's searcher: the plan's next trial, ``None`` while a stage waits, FINISHED."""

        def suggest(self, trial_id: str) -> Any:
            suggestion = _live().suggest(trial_id)
            return Searcher.FINISHED if suggestion == FINISHED else suggestion

        def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False) -> None:
            pass  # the callbacks below read ended trials whole (their checkpoints included)

        def save(self, checkpoint_path: str) -> None:
            # the plan's state is the manifest plus Tune's own trials, both saved already
            Path(checkpoint_path).write_text("{}")

        def restore(self, checkpoint_path: str) -> None:
            pass

    class Events(Callback):
        """Tune's callbacks: trials restored, reporting, ending, failing."""

        def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
            engine = _live()
            if not getattr(engine, "restored", False):
                engine.restored = True  # type: ignore[attr-defined]
                ended = ("TERMINATED", "ERROR")
                engine.restore(
                    [(t.trial_id, t.config, _outcome(t) if t.status in ended else None) for t in trials]
                )

        def on_trial_result(
            self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
        ) -> None:
            _live().trial_result(trial.trial_id, result)

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            _live().trial_ended(_outcome(trial))

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            _live().trial_ended(_outcome(trial, failed=True))

    return StagedSearcher, Events


def _outcome(trial: Any, failed: bool | None = None) -> TrialOutcome:
    """A Tune trial that has ended, as plain data (its epochs from its last checkpoint)."""
    engine = _live()
    failed = trial.status == "ERROR" if failed is None else failed
    history: list[dict[str, Any]] = []
    checkpoint = None
    if trial.checkpoint is not None:
        fs, path = trial.checkpoint.filesystem, trial.checkpoint.path
        try:
            with fs.open_input_stream(f"{path}/{HISTORY}") as f:
                history = json.loads(f.readall())
        except (OSError, ValueError):
            history = []
        checkpoint = engine.run.relative(path)
    error = None
    if failed:
        error = str(trial.get_error() or "the trial's worker failed")
    return TrialOutcome(
        trial.trial_id, dict(trial.config), dict(trial.last_result or {}), checkpoint, history, error
    )


def _resources(config: dict[str, Any]) -> Any:
    """A trial's resources: the search's per-trial CPUs and GPUs, or more CPUs for a stage's
    last trials (their config says how many; see ``scheduler.tail_shares``)."""
    from ray.tune import PlacementGroupFactory

    bundle = {"CPU": float(config.get("resources", {}).get("cpu", config["cpus_per_trial"]))}
    if config["gpus_per_trial"]:
        bundle["GPU"] = float(config["gpus_per_trial"])
    return PlacementGroupFactory([bundle])


def _trial_dirname(trial: Any) -> str:
    return f"{trial.config.get('stage', 'trial')}-{trial.trial_id}"


def _tuner(spec: SearchSpec, run: RunDir, arrays: dict[str, Any], provenance: dict[str, Any] | None) -> Any:
    """The run's Tuner: restored from its experiment when there is one, else new."""
    from ray import tune

    from search.trainable import train_psvae

    searcher_class, events_class = _tune_classes()
    trainable = tune.with_resources(
        tune.with_parameters(train_psvae, data=arrays),  # the dataset goes into the object store once
        _resources,
    )
    if tune.Tuner.can_restore(run.experiment):
        return tune.Tuner.restore(run.experiment, trainable=trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space={
            "base": trial_base(spec),
            "checkpoint_every_s": spec.checkpoint_every_s,
            "provenance": provenance,  # recorded in every trial's model bundle
            "cpus_per_trial": spec.resources.cpus_per_trial,
            "gpus_per_trial": spec.resources.gpus_per_trial,
        },
        tune_config=tune.TuneConfig(
            search_alg=searcher_class(),
            num_samples=-1,  # the plan says when it is over
            max_concurrent_trials=spec.resources.max_concurrent or None,
            # a trial's worker process (python, ray.tune, torch) serves the next trial, of any stage
            reuse_actors=True,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=run.location,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[events_class()],
            verbose=0,
        ),
    )


@contextmanager
def _quiet_tune() -> Iterator[None]:
    # Tune's console output is replaced by the observers; the selection statistics arrive
    # with a trial's last report, not with every epoch
    for key, value in (
        ("RAY_AIR_NEW_OUTPUT", "0"),
        ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0"),
        ("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1"),
    ):
        os.environ.setdefault(key, value)
    yield


ObserverFactory = Callable[[RunDir], Observer]


def _slots(spec: SearchSpec) -> int:
    """How many CPU-only trials of the default size the cluster runs at once (1 for GPU
    trials: a stage's last trials are widened only by CPUs)."""
    import ray

    if spec.resources.gpus_per_trial:
        return 1
    slots = int(ray.cluster_resources().get("CPU", 0) // spec.resources.cpus_per_trial)
    if spec.resources.max_concurrent:
        slots = min(slots, spec.resources.max_concurrent)
    return max(1, slots)


def run_search(
    spec: SearchSpec,
    run_id: str,
    storage: Storage,
    address: str | None = None,
    show: Callable[[str], None] = print,
    observers: Sequence[ObserverFactory] = (),
) -> RunDir:
    """Run or resume the staged search; returns its run directory. ``observers``: factories of
    what watches the run (given its directory)."""
    global _ENGINE
    import ray

    from psvae.data import load_data

    run = open_run(spec, storage, run_id)
    lock = run.lock()
    try:
        manifest = check_or_create(run, spec)
        log = RunLog(run, show)
        log(f"run directory: {run.location}")
        if manifest.status == "done":
            for name, record in manifest.stages.items():
                if record.status == "done":
                    log(f"stage {name}: done earlier, chose {record.fixes}")
            log("the search is done already: nothing to run")
            return run
        watchers = [make(run) for make in observers]
        if not ray.is_initialized():
            dashboard = start_ray(address)
            if dashboard:
                log(f"Ray dashboard: {dashboard}")
                manifest = manifest.replace(dashboard=dashboard)
        _protect_token()
        check_shared_storage(storage.root, sum(1 for node in ray.nodes() if node["Alive"]))
        manifest = fixed_records(spec, manifest)
        run.write(manifest)
        base = spec.base_config()
        data = load_data(
            list(spec.data),
            base.data.split,
            base.data.split_seed,
            per_session=FAMILY[base.model.model_class].background,
        )
        engine = StagedSearch(spec, run, manifest, log, watchers, slots=_slots(spec))
        with _quiet_tune():
            tuner = _tuner(spec, run, data.to_arrays(), manifest.provenance)
            _ENGINE = engine
            started = time.perf_counter()
            try:
                tuner.fit()
            finally:
                _ENGINE = None
                for watcher in watchers:
                    watcher.close()
                run.push(LOG)
        if engine.failed is not None:
            raise SearchError(engine.failed)
        if not engine.done:
            raise Interrupted(
                f"the search stopped after {time.perf_counter() - started:.0f} s with its plan unfinished"
            )
        return run
    finally:
        lock.release()


def resume_spec(run: RunDir) -> SearchSpec:
    """The spec a run was started with (its inputs found inside the run, wherever it is now)."""
    return SearchSpec.from_dict(run.read().spec).resolved(run.local)
