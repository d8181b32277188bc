"""A search run's directory, typed. No Ray here: status, report, export and resume read a run
through this module, and only the driver adds Tune to it.

    <storage>/<run id>/
      manifest.json     the spec, its hash, each stage's record and decision (atomic)
      tune/             the run's one Tune experiment: a folder per trial, TensorBoard events
      results/          Parquet tables trials and epochs, one file per stage
      report/           the HTML report
      search.log        what the driver printed
      optuna.journal    the Optuna studies of the optuna stages
      inputs/           the demo's built-in data and config
      export/           the selected model (``psvae export`` / the demo)

A run is its folder: the manifest holds no absolute path of the run, so a moved or renamed
folder is still the run. Checkpoints are recorded relative to the run (``tune/<trial>/
checkpoint_000003``). The run id comes from the command line, from a manifest read back from
storage (which others may write to, on a shared bucket) or from a folder name, so it is
untrusted: it must be one plain name inside the storage, never a path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psvae.errors import UserError
from psvae.files import jsonable, write_json_atomic
from search.storage import REMOTE_FILE, check_run_id, exists, filesystem, is_uri, resolve_storage, split_run

MANIFEST = "manifest.json"
# 1: one Tune experiment per stage (<run>/<stage>/); 2: one experiment per run (<run>/tune/),
# checkpoints relative to the run
MANIFEST_VERSION = 2
EXPERIMENT = "tune"
RESULTS = "results"
REPORT = "report"
EXPORT = "export"
INPUTS = "inputs"
LOG = "search.log"
LOCK = ".driver.lock"
OPTUNA_JOURNAL = "optuna.journal"
# what a trial's checkpoint folder holds (written by search/trainable.py)
TRAINER_STATE = "trainer.pt"  # the trainer's full state, while the fit runs
HISTORY = "history.json"  # the epochs so far
SUMMARY = "summary.json"  # the fit's outcome (final checkpoint only)
BUNDLE = "model"  # the best epoch's model bundle (final checkpoint only)

RUNNING, DONE, FAILED, FIXED = "running", "done", "failed", "fixed"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# -- the manifest ---------------------------------------------------------------------------
@dataclass(frozen=True)
class StageRecord:
    """One stage in the manifest: running, done (with its decision), failed, or fixed by hand."""

    status: str
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    varies: str | None = None  # "loss.beta" or "loss.beta x loss.delta"
    fixed: dict[str, Any] = field(default_factory=dict)  # keys fixed before the stage
    fixes: dict[str, Any] = field(default_factory=dict)  # keys its decision fixes for the next ones
    decision: dict[str, Any] | None = None  # selection.Decision.to_dict() + "checkpoint"
    error: str | None = None  # why it failed
    value: float | None = None  # fixed by hand: the value
    rule: str | None = None  # fixed by hand: "fixed by hand"
    planned: int | None = None  # how many trials the stage has (reused ones included)
    reused: list[str] = field(default_factory=list)  # trials whose fit an earlier stage had made

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in jsonable(dataclasses.asdict(self)).items() if v not in (None, [], {})} | {
            "status": self.status
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> StageRecord:
        if not isinstance(data, Mapping) or not isinstance(data.get("status"), str):
            raise UserError(f"{where}: damaged, a stage record without a status")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Selected:
    stage: str
    trial_id: str
    chosen: dict[str, Any]
    checkpoint: str  # relative to the run (older runs: an absolute path or URI)


@dataclass(frozen=True)
class Manifest:
    run_id: str
    spec_hash: str
    spec: dict[str, Any]
    stages: dict[str, StageRecord]
    status: str = RUNNING
    created: str | None = None
    finished: str | None = None
    selected: Selected | None = None
    version: int = MANIFEST_VERSION
    provenance: dict[str, Any] | None = None  # package version, git commit, data files
    dashboard: str | None = None  # the Ray dashboard of the last driver

    @property
    def one_experiment(self) -> bool:
        """Written by this engine (one Tune experiment per run); False for older runs."""
        return self.version >= 2

    def stage(self, name: str) -> StageRecord | None:
        return self.stages.get(name)

    def with_stage(self, name: str, record: StageRecord) -> Manifest:
        return dataclasses.replace(self, stages={**self.stages, name: record})

    def replace(self, **changes: Any) -> Manifest:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "run_id": self.run_id,
            "spec_hash": self.spec_hash,
            "spec": self.spec,
            "created": self.created,
            "status": self.status,
            "stages": {name: record.to_json() for name, record in self.stages.items()},
            "selected": None if self.selected is None else dataclasses.asdict(self.selected),
        }
        for key in ("finished", "provenance", "dashboard"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return jsonable(out)

    @classmethod
    def from_json(cls, data: Any, where: str) -> Manifest:
        """Check what a reader relies on; a manifest read back from storage is untrusted."""
        if not isinstance(data, Mapping) or not {"run_id", "spec_hash", "spec", "stages"} <= set(data):
            raise UserError(f"{where}: damaged, not a search manifest (missing run_id, spec or stages)")
        check_run_id(data["run_id"], f"{where}: run_id")
        if not isinstance(data["stages"], Mapping) or not isinstance(data["spec"], Mapping):
            raise UserError(f"{where}: damaged, spec and stages must be mappings")
        stages = {str(n): StageRecord.from_json(r, f"{where}: stages.{n}") for n, r in data["stages"].items()}
        selected = data.get("selected")
        if selected is not None:
            if not isinstance(selected, Mapping) or not {"stage", "trial_id", "checkpoint"} <= set(selected):
                raise UserError(f"{where}: damaged, selected must name a stage, trial and checkpoint")
            selected = Selected(
                str(selected["stage"]),
                str(selected["trial_id"]),
                dict(selected.get("chosen") or {}),
                str(selected["checkpoint"]),
            )
        version = data.get("version", 1)
        if not isinstance(version, int) or version > MANIFEST_VERSION:
            raise UserError(
                f"{where}: manifest version {version!r}; this psvae-tune reads versions up to "
                f"{MANIFEST_VERSION} (upgrade psvae-tune)"
            )
        return cls(
            run_id=data["run_id"],
            spec_hash=str(data["spec_hash"]),
            spec=dict(data["spec"]),
            stages=stages,
            status=str(data.get("status", RUNNING)),
            created=data.get("created"),
            finished=data.get("finished"),
            selected=selected,
            version=version,
            provenance=data.get("provenance"),
            dashboard=data.get("dashboard"),
        )

    def chosen_overrides(self, alpha: float | None = None, beta: float | None = None) -> dict[str, Any]:
        """The fit-config keys fixed so far: by hand, or by the decisions of finished stages in
        plan order (up to the first stage that is not done)."""
        out: dict[str, Any] = {}
        if alpha is not None:
            out["loss.alpha"] = alpha
        if beta is not None:
            out["loss.beta"] = beta
        for stage in self.spec.get("stages", []):
            record = self.stages.get(stage["name"])
            if record is None or record.status != DONE:
                break
            out.update(record.fixes)
        return out


# -- the folder -----------------------------------------------------------------------------
class DriverLock:
    """One driver per run: an exclusive ``flock`` on ``<run>/.driver.lock``, held as long as
    the driver's process lives. The kernel releases it when the process ends, however it ends,
    so a killed driver never leaves a lock that blocks a resume."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, run: str) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = self.path.read_text().strip() or "another process"
            raise UserError(
                f"{run}: another psvae driver is running this run ({holder}); wait for it to end "
                "or stop it, then resume"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@dataclass
class RunDir:
    """A run directory: ``local`` is the folder on this machine that holds the driver's files
    (the run itself, or its mirror for an object store); ``location`` is the run as users name
    it (a path or a URI), where Tune's experiment lives."""

    local: Path
    location: str
    run_id: str
    storage: Any = None  # search.storage.Storage, or None for a plain local folder

    @classmethod
    def open(cls, location: str | Path) -> RunDir:
        """The run at ``location`` (a folder or a URI); for a URI its driver files are fetched
        into the local mirror first. Raises UserError if it is not a run."""
        text = str(location).rstrip("/")
        root, run_id = split_run(text)
        if is_uri(text):
            store = resolve_storage(root)
            store.pull(run_id)
            run = cls(store.local / run_id, text, run_id, store)
        else:
            run = cls.at(Path(text))
        if not (run.local / MANIFEST).is_file():
            raise UserError(f"{location}: not a search run directory (no {MANIFEST})")
        return run

    @classmethod
    def at(cls, folder: Path) -> RunDir:
        """The run whose driver files are in the local ``folder``: the run itself, or the mirror
        of a run on an object store (which says where its run is); nothing is fetched."""
        path = folder.expanduser().resolve()
        remote = path / REMOTE_FILE
        if remote.is_file():
            location = remote.read_text().strip()
            root, run_id = split_run(location)
            return cls(path, location, run_id, resolve_storage(root))
        return cls(path, str(path), check_run_id(path.name, f"{path}: the run folder's name"))

    # paths
    @property
    def manifest_path(self) -> Path:
        return self.local / MANIFEST

    @property
    def results(self) -> Path:
        return self.local / RESULTS

    @property
    def report(self) -> Path:
        return self.local / REPORT

    @property
    def experiment(self) -> str:
        """Where the run's Tune experiment lives (a local path or a URI)."""
        return f"{self.location}/{EXPERIMENT}"

    def stage_experiment(self, stage: str) -> str:
        """An older run's per-stage experiment."""
        return f"{self.location}/{stage}"

    # the manifest
    def read(self) -> Manifest:
        where = str(self.manifest_path)
        try:
            data = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            raise UserError(f"{self.location}: not a search run directory (no {MANIFEST})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{where}: damaged, not readable JSON ({err}); restore it from a copy") from None
        return Manifest.from_json(data, where)

    def write(self, manifest: Manifest) -> None:
        """Write the manifest atomically, then upload it where the run is on an object store."""
        write_json_atomic(self.manifest_path, manifest.to_json())
        self.push(MANIFEST)

    def push(self, relative: str) -> None:
        """Upload one finished file or folder of the driver's (nothing for a local run)."""
        if self.storage is not None:
            self.storage.push(self.run_id, relative)

    # checkpoints
    def relative(self, location: str) -> str:
        """A checkpoint's location (what Tune reports: a local path, or a bucket path without
        its scheme) relative to the run."""
        base = filesystem(self.location)[1] if is_uri(self.location) else self.location
        text = str(location)
        if text.startswith(base.rstrip("/") + "/"):
            return text[len(base.rstrip("/")) + 1 :]
        return text  # not inside the run (never written by this engine): kept as it is

    def checkpoint(self, recorded: str) -> str:
        """Where a recorded checkpoint is now: relative ones inside the run; an older run's
        absolute path or URI as recorded, or, if the run was moved, the same trial's folder
        inside it."""
        if not (recorded.startswith("/") or is_uri(recorded)):
            return f"{self.location}/{recorded}"
        if exists(recorded):
            return recorded
        tail = recorded.rstrip("/").split("/")[-3:]
        return "/".join([self.location, *tail])

    def lock(self) -> DriverLock:
        """Take the run's driver lock (UserError if another driver holds it)."""
        lock = DriverLock(self.local / LOCK)
        lock.acquire(self.location)
        return lock


def read_manifest(location: str | Path) -> Manifest:
    """The manifest of the run at ``location`` (a folder or a URI)."""
    return RunDir.open(location).read()


@contextlib.contextmanager
def locked(run: RunDir) -> Iterator[DriverLock]:
    lock = run.lock()
    try:
        yield lock
    finally:
        lock.release()
