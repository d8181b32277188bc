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

import datetime as dt
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from psvae.errors import UserError
from psvae.family import FAMILY
from psvae.files import atomic_path, write_text_atomic
from search.rundir import (
    DONE,
    EXPERIMENT,
    FINAL,
    HISTORY,
    INPUTS,
    LOCK,
    LOG,
    SUMMARY,
    DriverLock,
    Manifest,
    RunDir,
    check_results,
    check_run_id,
    check_tune_state,
    now,
)
from search.scheduler import FINISHED, Observer, StagedSearch, TrialOutcome, fixed_records, trial_base
from search.spec import SearchSpec
from search.storage import (
    REMOTE_FILE,
    Reserve,
    Storage,
    check_shared_storage,
    disk_full,
    free_bytes,
    is_uri,
    tune_filesystem,
)

LOOPBACK = "127.0.0.1"
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
NICENESS = "RAY_worker_niceness"  # Ray's system config, spelled as Ray reads it


class SearchError(Exception):
    """The search cannot go on (e.g. a stage has no usable trial); not an input error."""


class Interrupted(Exception):
    """The experiment ended with the plan unfinished (e.g. after Ctrl-C); resume continues it."""


class StorageFull(UserError):
    """The run's storage (or the disk of a file the driver writes) is full: the search stops,
    with everything written so far intact, and resumes once there is space again."""


class _DiskFull(Exception):
    """Inside Tune's loop a write failed on a full disk (a trial's checkpoint, the plan's own
    files): the experiment ends as on Ctrl-C, before Tune retries a trial into a failure."""

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


def start_ray(address: str | None, dashboard: bool = True) -> str | None:
    """Start or join Ray; returns the dashboard's URL when this process started it.

    Without ``address`` a new local Ray is started (``address="local"``), never an instance that
    happens to run on this machine (``RAY_ADDRESS`` or Ray's shared temporary folder), and every
    port it opens, the dashboard's included, listens on 127.0.0.1 only. Its workers run at the
    driver's priority: Ray's default niceness 15 slowed trials 1.4-3.2x on a busy machine.
    With ``address`` (a cluster, or ``auto`` inside a Ray Job) the cluster's own settings apply.
    ``dashboard``: whether a local Ray starts its dashboard (its start-up is a third of Ray's).
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
        include_dashboard=dashboard,
        dashboard_host=LOOPBACK,
        **common,
    )
    url = context.dashboard_url
    return f"http://{url}" if url and "://" not in url else url


def read_data(spec: SearchSpec) -> Any:
    """The search's data (``psvae.data.FrameData``)."""
    from psvae.data import load_data

    base = spec.base_config()
    data = load_data(
        list(spec.data),
        base.data.split,
        base.data.split_seed,
        per_session=FAMILY[base.model.model_class].background,
    )
    return data


def _protect_token() -> None:
    """Ray writes its auth token readable by everyone (0644); anyone who reads it can run code
    on the cluster, so keep it to its owner."""
    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if token.is_file() and token.stat().st_mode & 0o077:
        token.chmod(0o600)


# -- the run directory ------------------------------------------------------------------------
def open_run(spec: SearchSpec, storage: Storage, run_id: str) -> tuple[RunDir, DriverLock]:
    """The run directory of ``run_id`` in ``storage`` with its driver lock held, its driver
    files fetched (object store). The lock is taken before anything of the run is touched: a
    second driver is refused before it could replace the first one's files."""
    local = storage.local / check_run_id(run_id)
    run = RunDir(local, storage.run_location(run_id), run_id, storage if storage.remote else None)
    if not storage.remote:
        _refuse_foreign(run)
    run.lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = run.lock()
    try:
        storage.pull(run_id)
        _refuse_foreign(run)
        local.mkdir(parents=True, exist_ok=True)
    except BaseException:
        lock.release()
        raise
    return run, lock


def _refuse_foreign(run: RunDir) -> None:
    local = run.local
    if not run.manifest_path.is_file() and local.exists():
        ours = (INPUTS, LOCK, REMOTE_FILE)  # what a run folder may hold before its manifest
        foreign = not local.is_dir() or any(p.name not in ours for p in local.iterdir())
        if foreign:
            raise UserError(f"{run.location}: exists and is not a search run; choose another --run-id")


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
            f.write(f"{dt.datetime.now(dt.UTC).isoformat(timespec='milliseconds')} {line}\n")


# -- Tune -------------------------------------------------------------------------------------
_ENGINE: StagedSearch | None = None
"""The plan this process runs. Tune pickles its searcher and callbacks into the experiment
(``tuner.pkl``) and restores those copies on resume: they hold no state and find the live plan
here."""
_FULL: _DiskFull | None = None  # why the experiment was ended, if a write met a full disk
_RESERVE: Reserve | None = None  # room kept for Tune's last save after a full disk


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
            if _FULL is not None:
                return None  # the experiment is ending: nothing new
            with _on_full_disk():
                suggestion = _live().suggest(trial_id)
                return Searcher.FINISHED if suggestion == FINISHED else suggestion
            return None

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
                with _on_full_disk():
                    engine.restore(
                        [(t.trial_id, t.config, _outcome(t) if t.status in ended else None) for t in trials]
                    )

        def on_trial_result(
            self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
        ) -> None:
            _live().trial_result(trial.trial_id, result)

        def on_checkpoint(
            self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any
        ) -> None:
            if not (trial.last_result or {}).get(FINAL) or not _holds_outcome(checkpoint):
                return
            # The fit's outcome is in (its last report, then this checkpoint): the trial counts
            # as ended now. Tune ends it only when its function returns, a later event: in
            # between, the next step asks the searcher, which has decided the stage, and
            # stages the next stage's trials, so Tune keeps this worker for them. Had the last
            # report ended the trial (Tune's own "done"), Tune would have kept one idle worker
            # at each stage's end (it keeps one while no trial is staged) and started the
            # others anew (about 5 s each): the quick search ran its beta and seeds stages one
            # trial at a time. on_trial_complete, when it comes, is a repeat the engine ignores.
            with _on_full_disk():
                _live().trial_ended(_outcome(trial, checkpoint=checkpoint))

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            with _on_full_disk():  # a row not written now is written from Tune's trial on resume
                _live().trial_ended(_outcome(trial))

        def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            _stop_if_disk_full(trial)

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            if _stop_if_disk_full(trial):
                return  # not a failed trial: Tune restores it (resume_errored) once there is space
            with _on_full_disk():
                _live().trial_ended(_outcome(trial, failed=True))

    return StagedSearcher, Events


def _trial_error(trial: Any) -> str:
    """The text of a trial's latest failure: Tune writes it beside the driver first (the copy on
    the storage follows with its next sync, and may never arrive on a full disk)."""
    local = getattr(trial, "error_file", None)
    try:
        if local and Path(local).is_file():
            return Path(local).read_text(errors="replace")
        return str(trial.get_error() or "")
    except Exception:  # Tune could not read the error back
        return ""


def _stop_if_disk_full(trial: Any) -> bool:
    """A trial whose worker failed on a full disk ends the experiment, before Tune retries it
    into a failure and the stage is decided without it. True if it did."""
    error = _trial_error(trial).rsplit("Failure # ", 1)[-1]  # the latest of the trial's failures
    if not disk_full(error):
        return False
    _stop_for_full_disk(f"{_live().run.experiment} (trial {trial.trial_id} could not write its checkpoint)")
    return True


@contextmanager
def _on_full_disk() -> Iterator[None]:
    """The plan's own writes inside Tune's loop: a full disk ends the experiment (the write is
    atomic: the file as it was stays)."""
    try:
        yield
    except OSError as err:
        if not disk_full(err):
            raise
        _stop_for_full_disk(str(err.filename or _live().run.location))


def _stop_for_full_disk(where: str) -> None:
    """End Tune's loop as Ctrl-C does: Tune stops its trials and saves its experiment state one
    last time, into the room the reserve leaves when it goes; the driver then says what happened
    in one line. Where Tune has no handler to end its loop, the error ends it."""
    global _FULL
    if _FULL is not None:
        return
    _FULL = _DiskFull(where)
    if _RESERVE is not None:
        _RESERVE.release()
    tune_handler = signal.getsignal(signal.SIGUSR1)  # Tune ends its loop on SIGUSR1 as on SIGINT
    if callable(tune_handler) and threading.current_thread() is threading.main_thread():
        signal.raise_signal(signal.SIGUSR1)
    else:
        raise _FULL


def _holds_outcome(checkpoint: Any) -> bool:
    """Whether a trial's checkpoint is its final one (the fit's summary in it)."""
    import pyarrow.fs as pafs

    if checkpoint is None:
        return False
    try:
        info = checkpoint.filesystem.get_file_info(f"{checkpoint.path}/{SUMMARY}")
    except OSError:
        return False
    return bool(info.type == pafs.FileType.File)


def _outcome(trial: Any, failed: bool | None = None, checkpoint: Any = None) -> TrialOutcome:
    """A Tune trial that has ended, as plain data (its epochs from its last checkpoint, or from
    ``checkpoint``, one Tune has not recorded on the trial yet)."""
    engine = _live()
    failed = trial.status == "ERROR" if failed is None else failed
    history: list[dict[str, Any]] = []
    checkpoint = checkpoint if checkpoint is not None else trial.checkpoint
    relative = None
    if checkpoint is not None:
        fs, path = checkpoint.filesystem, checkpoint.path
        try:
            with fs.open_input_stream(f"{path}/{HISTORY}") as f:
                history = json.loads(f.readall())
        except (OSError, ValueError):
            history = []
        relative = engine.run.relative(path)
    error = None
    if failed:
        error = str(trial.get_error() or "the trial's worker failed")
    return TrialOutcome(
        trial.trial_id, dict(trial.config), dict(trial.last_result or {}), relative, history, error
    )


def _resources(config: dict[str, Any]) -> Any:
    """A trial's resources: the search's per-trial CPUs and GPUs, the same for every trial, so
    that a worker serves trial after trial (a stage's last trials take idle CPUs as threads,
    ``search/threads.py``). A trial restored from a run of an earlier version may name more CPUs
    in its config ("resources"): it gets them."""
    from ray.tune import PlacementGroupFactory

    bundle = {"CPU": float(config.get("resources", {}).get("cpu", config["cpus_per_trial"]))}
    if config["gpus_per_trial"]:
        bundle["GPU"] = float(config["gpus_per_trial"])
    return PlacementGroupFactory([bundle])


def _trial_dirname(trial: Any) -> str:
    return f"{trial.config.get('stage', 'trial')}-{trial.trial_id}"


def _tuner(
    spec: SearchSpec,
    run: RunDir,
    arrays: dict[str, Any],
    provenance: dict[str, Any] | None,
    threads_file: Path | None = None,
) -> Any:
    """The run's Tuner: restored from its experiment when there is one, else new.
    ``threads_file``: where trials learn the threads they may use (a local Ray), or None."""
    from ray import tune

    from search.trainable import train_psvae

    searcher_class, events_class = _tune_classes()
    trainable = tune.with_resources(
        tune.with_parameters(train_psvae, data=arrays),  # the dataset goes into the object store once
        _resources,
    )
    fs = tune_filesystem(run.location)
    if tune.Tuner.can_restore(run.experiment, storage_filesystem=fs):
        _retarget_new_trials(run, fs)
        try:
            return tune.Tuner.restore(
                run.experiment, trainable=trainable, resume_errored=True, storage_filesystem=fs
            )
        except Exception as err:  # Tune raises many kinds for state it cannot read
            reason = " ".join(str(err).split())[:300]
            raise UserError(
                f"{run.experiment}: Tune cannot restore the run's experiment ({type(err).__name__}: "
                f"{reason}); restore the folder from a copy, or start a new run (another --run-id)"
            ) from None
    return tune.Tuner(
        trainable,
        param_space={
            "base": trial_base(spec),
            "checkpoint_every_s": spec.checkpoint_every_s,
            "provenance": provenance,  # recorded in every trial's model bundle
            "cpus_per_trial": spec.resources.cpus_per_trial,
            "gpus_per_trial": spec.resources.gpus_per_trial,
            **({"threads_file": str(threads_file)} if threads_file is not None else {}),
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
            storage_filesystem=fs,  # a local storage: every file whole or not at all
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[events_class()],
            verbose=0,
        ),
    )


class _RunLogHandler(logging.Handler):
    """Tune's and Ray Train's log records (a failed trial's traceback, a failed sync) go to the
    run's ``search.log``, not to the terminal; a write that fails (a full disk) is dropped."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.INFO)
        self.path = path
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            with open(self.path, "a") as f:
                f.write(self.format(record) + "\n")
        except Exception:
            pass


@contextmanager
def _tune_logs_to(path: Path) -> Iterator[None]:
    handler = _RunLogHandler(path)
    loggers = [logging.getLogger(name) for name in ("ray.tune", "ray.train")]
    saved = [(lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
        lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, (propagate, level) in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.propagate = propagate
            lg.setLevel(level)


def _retarget_new_trials(run: RunDir, fs: Any) -> None:
    """Tune (2.60) restores a moved experiment's trials at its new place but gives the trials it
    creates afterwards the place recorded when the experiment began, kept in its search
    generator's state: there the next stage's trials would fail to write their checkpoints (or
    write them into the old folder). Point that record at the run's folder as it is now, as Tune
    does for the restored trials (storage path, file system, experiment name)."""
    if is_uri(run.location):
        return  # a moved bucket path is not followed (the run's URI names its place)
    import ray.cloudpickle as cloudpickle

    for path in sorted((run.local / EXPERIMENT).glob("search_gen_state-*.json")):
        state = cloudpickle.loads(path.read_bytes())
        storage = getattr(state.get("experiment"), "storage", None) if isinstance(state, dict) else None
        if storage is None:
            continue
        now_at = (run.location, EXPERIMENT, getattr(fs, "type_name", None))
        was_at = (storage.storage_fs_path, storage.experiment_dir_name, storage.storage_filesystem.type_name)
        if was_at == now_at:
            continue
        storage.storage_fs_path, storage.experiment_dir_name = run.location, EXPERIMENT
        if fs is not None:
            storage.storage_filesystem = fs
            if getattr(storage, "syncer", None) is not None:
                storage.syncer.storage_filesystem = fs
        stat = path.stat()
        with atomic_path(path) as tmp:
            tmp.write_bytes(cloudpickle.dumps(state))
            os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _repoint_lost_checkpoints(run: RunDir) -> list[str]:
    """A driver killed between Tune deleting a trial's older checkpoint (it keeps one) and its
    next save of the experiment state leaves that state naming the deleted checkpoint, and Tune
    (2.60) then fails the trial for good ("does not exist on storage anymore"). Before Tune
    restores, point such a trial at its newest checkpoint that is there, or, if none is, at
    none (the trial runs again from epoch 0). Returns what was done, for the log."""
    if is_uri(run.location):
        return []
    states = sorted((run.local / EXPERIMENT).glob("experiment_state-*.json"))
    if not states:
        return []
    from ray.tune.utils.serialization import TuneFunctionEncoder, _loads_with_cloudpickle

    path = states[-1]  # the one Tune restores from
    data = json.loads(path.read_text())
    notes = []
    for entry in data.get("trial_data", []):
        metadata = _loads_with_cloudpickle(entry[1])
        manager = metadata.get("checkpoint_manager")
        latest = getattr(manager, "_latest_checkpoint_result", None)
        if latest is None or latest.checkpoint is None:
            continue
        recorded = str(latest.checkpoint.path).rstrip("/")
        trial_dir, name = recorded.rsplit("/", 2)[-2:]
        folder = run.local / EXPERIMENT / trial_dir  # where it is now (the run may have moved)
        if (folder / name).exists():
            continue
        there = sorted(p.name for p in folder.glob("checkpoint_*") if p.is_dir())
        if there:
            kind = type(latest.checkpoint)
            latest.checkpoint = kind(
                f"{recorded.rsplit('/', 1)[0]}/{there[-1]}", latest.checkpoint.filesystem
            )
            notes.append(
                f"trial {trial_dir}: Tune's state named {name}, which is gone; it goes on from {there[-1]}"
            )
        else:
            manager._latest_checkpoint_result = None
            notes.append(
                f"trial {trial_dir}: Tune's state named {name}, which is gone; it runs again from epoch 0"
            )
        kept = [
            r for r in manager._checkpoint_results if (folder / r.checkpoint.path.rsplit("/", 1)[-1]).exists()
        ]
        manager._checkpoint_results = kept + ([latest] if there and latest not in kept else [])
        metadata.pop("_cached_json", None)
        entry[1] = json.dumps(metadata, indent=2, cls=TuneFunctionEncoder)
    if notes:
        write_text_atomic(path, json.dumps(data))
    return notes


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


def _slots(spec: SearchSpec, local: bool) -> int:
    """How many CPU-only trials a Ray this driver started (``local``) runs at once: the slots a
    stage's last trials share as threads (``search/threads.py``). 1 for GPU trials, on a
    cluster, where the idle CPUs may be another node's or another job's, and where the search
    config says ``share_idle_cpus: false``."""
    import ray

    if spec.resources.gpus_per_trial or not local or not spec.resources.share_idle_cpus:
        return 1
    slots = int(ray.cluster_resources().get("CPU", 0) // spec.resources.cpus_per_trial)
    if spec.resources.max_concurrent:
        slots = min(slots, spec.resources.max_concurrent)
    return max(1, slots)


def _at_once(spec: SearchSpec) -> int:
    """How many trials of the default size the cluster runs at once, by CPUs and by GPUs."""
    import ray

    resources = ray.cluster_resources()
    fits = [resources.get("CPU", 0) / spec.resources.cpus_per_trial]
    if spec.resources.gpus_per_trial:
        fits.append(resources.get("GPU", 0) / spec.resources.gpus_per_trial)
    n = int(min(fits) + 1e-9)
    if spec.resources.max_concurrent:
        n = min(n, spec.resources.max_concurrent)
    return max(1, n)


def _pending_trials(spec: SearchSpec) -> None:
    """Let Tune start as many trials at once as the cluster runs. With a searcher of its own
    (ours) Tune keeps one trial pending at a time unless told otherwise, so it started trials
    one after another, each a worker's start-up (about 5 s here) after the last: two slots ran
    little more than one trial at a time. Our searcher hands out only the current stage's
    trials, so more pending ones cannot run ahead of a decision. A value the user set stands."""
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(_at_once(spec)))


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
    global _ENGINE, _FULL, _RESERVE
    run, lock = open_run(spec, storage, run_id)  # a refusal here is quick: Ray, PyTorch not yet imported
    try:
        manifest = check_or_create(run, spec)
        log = RunLog(run, show)
        log(f"run directory: {run.location}")
        if manifest.status == DONE:
            for name, record in manifest.stages.items():
                if record.status == DONE:
                    log(f"stage {name}: done earlier, chose {record.fixes}")
            log("the search is done already: nothing to run")
            return run
        for moved in check_results(run, manifest):
            log(f"{moved}: damaged; set aside, the running stage's rows are rebuilt from its trials")
        check_tune_state(run)  # a damaged state file is one line, before Ray starts or reads it
        import ray

        if not storage.remote:  # a full disk there must leave room for Tune's last save
            _RESERVE = Reserve(run.local)
            _RESERVE.take()
        watchers = [make(run) for make in observers]
        own_ray = not ray.is_initialized()  # a Ray this call starts (or joins), it shuts down
        if own_ray:
            dashboard = start_ray(address, spec.dashboard)
            if dashboard:
                log(f"Ray dashboard: {dashboard}")
                manifest = manifest.replace(dashboard=dashboard)
        data = read_data(spec)
        _protect_token()
        if address is not None:  # a cluster: every node must see the run directory as we do
            check_shared_storage(storage, run.local)
        manifest = fixed_records(spec, manifest)
        run.write(manifest)
        slots = _slots(spec, local=address is None)
        engine = StagedSearch(spec, run, manifest, log, watchers, slots=slots)
        for note in _repoint_lost_checkpoints(run):
            log(note)
        _pending_trials(spec)
        with _quiet_tune(), _tune_logs_to(run.local / LOG):
            hints = engine.hints.path if engine.hints is not None else None
            tuner = _tuner(spec, run, data.to_arrays(), manifest.provenance, hints)
            _ENGINE, _FULL = engine, None
            started = time.perf_counter()
            try:
                tuner.fit()
            except Exception:
                if _FULL is not None:
                    raise _FULL from None
                raise
            finally:
                _ENGINE = None
                if own_ray:  # the report's last rebuild, begun at the plan's end, runs meanwhile
                    ray.shutdown()
                for watcher in watchers:
                    watcher.close()
                run.push(LOG)
        if _FULL is not None:
            raise _FULL
        if engine.failed is not None:
            raise SearchError(engine.failed)
        if not engine.done:
            raise Interrupted(
                f"the search stopped after {time.perf_counter() - started:.0f} s with its plan unfinished"
            )
        return run
    except _DiskFull as err:
        raise StorageFull(_full_message(err.where, run)) from None
    except OSError as err:
        if not disk_full(err):
            raise
        raise StorageFull(_full_message(err.filename or run.location, run)) from None
    finally:
        if _RESERVE is not None:
            _RESERVE.release()
            _RESERVE = None
        lock.release()


def _full_message(where: str, run: RunDir) -> str:
    free = free_bytes(run.local)
    room = "" if free is None else f", {_size(free)} free"
    return (
        f"{where}: no space left on device{room}; the search stopped with everything written so "
        f"far intact: free space there, then continue with: psvae resume {run.location}"
    )


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"


def resume_spec(run: RunDir) -> SearchSpec:
    """The spec a run was started with (its inputs found inside the run, wherever it is now)."""
    return SearchSpec.from_dict(run.read().spec).resolved(run.local)
