"""A search run's directory, typed. No Ray here: status, report, export and resume read a run
through this module, and only the driver adds Tune to it.

    <storage>/<run id>/
      manifest.json     the spec, its hash, each stage's record and decision (atomic)
      tune/             the run's one Tune experiment: a folder per trial, TensorBoard events
      results/          Parquet tables trials and epochs, one file per stage
      report/           the HTML report
      search.log        what the driver printed
      optuna.journal    the Optuna studies of the optuna stages
      threads.json      while trials run: the threads a stage's last trials may use (search/threads.py)
      inputs/           the demo's built-in data and config
      export/           the selected model (``psvae export`` / the demo)
      .driver.lock      held (flock) by the one driver running the run; the kernel drops it
      .psvae-reserve    room kept while a driver runs, given back when the disk fills up

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
TRIAL_CONFIG = "trial_config.json"  # the trial's config: status reads it if Tune's params.json is lost
BUNDLE = "model"  # the best epoch's model bundle (final checkpoint only)
SET_ASIDE = "tune-set-aside"  # trial folders Tune's state does not know (see set_aside_unrecorded)
# marks a trial's last report, the one with its fit's outcome (earlier versions set Tune's own
# "done" instead, which made Tune end the trial before the next stage's trials could take its
# worker: search/driver.py)
FINAL = "final"

RUNNING, DONE, FAILED, FIXED = "running", "done", "failed", "fixed"
STATUSES = (RUNNING, DONE, FAILED, FIXED)
RESTORE = "restore manifest.json from a copy"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# -- the manifest ---------------------------------------------------------------------------
_NUMBER = (int, float)
_OPTIONAL_TEXT = (str, type(None))
_RECORD_KINDS: dict[str, tuple[type, ...]] = {
    "status": (str,),
    "started": _OPTIONAL_TEXT,
    "finished": _OPTIONAL_TEXT,
    "seconds": (*_NUMBER, type(None)),
    "varies": _OPTIONAL_TEXT,
    "fixed": (Mapping,),
    "fixes": (Mapping,),
    "decision": (Mapping, type(None)),
    "error": _OPTIONAL_TEXT,
    "value": (*_NUMBER, type(None)),
    "rule": _OPTIONAL_TEXT,
    "planned": (int, type(None)),
    "reused": (list,),
}
_DECISION_KINDS: dict[str, tuple[type, ...]] = {
    "rule": (str,),
    "trial_id": (str,),
    "chosen": (Mapping,),
    "table": (list,),
    "explanation": (str,),
    "params": (Mapping, type(None)),
    "checkpoint": _OPTIONAL_TEXT,
}


def _kind_names(kinds: tuple[type, ...]) -> str:
    names = {Mapping: "a mapping", list: "a list", str: "text", int: "a number", float: "a number"}
    out = [names.get(k, "null") for k in kinds]
    return " or ".join(dict.fromkeys(out))


def _check_kind(value: Any, kinds: tuple[type, ...], where: str) -> None:
    wrong = isinstance(value, bool) and bool not in kinds  # JSON true is not a number here
    if wrong or not isinstance(value, kinds):
        shown = json.dumps(value)[:60] if _dumpable(value) else type(value).__name__
        raise UserError(f"{where} = {shown}: damaged, expected {_kind_names(kinds)}; {RESTORE}")


def _dumpable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _check_decision(decision: Mapping[str, Any], where: str) -> None:
    for key in ("rule", "trial_id", "chosen", "table", "explanation"):
        if key not in decision:
            raise UserError(f"{where}: damaged, a decision without {key}; {RESTORE}")
    for key, kinds in _DECISION_KINDS.items():
        if key in decision:
            _check_kind(decision[key], kinds, f"{where}.{key}")
    for i, row in enumerate(decision["table"]):
        _check_kind(row, (Mapping,), f"{where}.table[{i}]")


def _check_spec(spec: Mapping[str, Any], where: str) -> None:
    """What readers of the spec rely on; the values themselves were checked when the run began."""
    from search.spec import SearchSpec

    stages = spec.get("stages")
    _check_kind(stages, (list,), f"{where}.stages")
    _check_kind(spec.get("data"), (list,), f"{where}.data")
    _check_kind(spec.get("fit"), (Mapping,), f"{where}.fit")
    names = []
    for i, stage in enumerate(spec["stages"]):
        _check_kind(stage, (Mapping,), f"{where}.stages[{i}]")
        for key, kinds in (("name", (str,)), ("key", (str,)), ("rule", (str,)), ("values", (list,))):
            _check_kind(stage.get(key), kinds, f"{where}.stages[{i}].{key}")
        names.append(stage["name"])
    if len(set(names)) != len(names):
        raise UserError(f"{where}.stages: damaged, two stages share a name; {RESTORE}")
    try:
        SearchSpec.from_dict(spec)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise UserError(
            f"{where}: damaged, not a search spec ({type(err).__name__}: {err}); {RESTORE}"
        ) from None


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
        if not isinstance(data, Mapping) or data.get("status") not in STATUSES:
            raise UserError(
                f"{where}: damaged, a stage record needs a status ({', '.join(STATUSES)}); {RESTORE}"
            )
        known = {f.name: f for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key, value in values.items():
            _check_kind(value, _RECORD_KINDS[key], f"{where}.{key}")
        if values.get("decision") is not None:
            _check_decision(values["decision"], f"{where}.decision")
        return cls(**values)


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
        required = ("run_id", "spec_hash", "spec", "stages", "status")
        if not isinstance(data, Mapping) or not set(required) <= set(data):
            missing = [k for k in required if not isinstance(data, Mapping) or k not in data]
            raise UserError(f"{where}: damaged, not a search manifest (no {', '.join(missing)}); {RESTORE}")
        check_run_id(data["run_id"], f"{where}: run_id")
        if not isinstance(data["stages"], Mapping) or not isinstance(data["spec"], Mapping):
            raise UserError(f"{where}: damaged, spec and stages must be mappings")
        version = data.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version > MANIFEST_VERSION:
            raise UserError(
                f"{where}: manifest version {version!r}; this psvae-tune reads versions up to "
                f"{MANIFEST_VERSION} (upgrade psvae-tune)"
            )
        _check_kind(data["spec_hash"], (str,), f"{where}: spec_hash")
        _check_spec(data["spec"], f"{where}: spec")
        for key, kinds in (
            ("status", (str,)),
            ("created", _OPTIONAL_TEXT),
            ("finished", _OPTIONAL_TEXT),
            ("provenance", (Mapping, type(None))),
            ("dashboard", _OPTIONAL_TEXT),
        ):
            if key in data:
                _check_kind(data[key], kinds, f"{where}: {key}")
        if data.get("status", RUNNING) not in (RUNNING, DONE, FAILED):
            raise UserError(f"{where}: status = {str(data['status'])[:40]!r}: damaged; {RESTORE}")
        stages = {str(n): StageRecord.from_json(r, f"{where}: stages.{n}") for n, r in data["stages"].items()}
        selected = data.get("selected")
        if selected is not None:
            if not isinstance(selected, Mapping) or not {"stage", "trial_id", "checkpoint"} <= set(selected):
                raise UserError(f"{where}: damaged, selected must name a stage, trial and checkpoint")
            for key in ("stage", "trial_id", "checkpoint"):
                _check_kind(selected[key], (str,), f"{where}: selected.{key}")
            _check_kind(selected.get("chosen", {}), (Mapping,), f"{where}: selected.chosen")
            selected = Selected(
                selected["stage"],
                selected["trial_id"],
                dict(selected.get("chosen") or {}),
                selected["checkpoint"],
            )
        if data.get("status") == DONE and selected is None:
            raise UserError(f"{where}: damaged, a finished search without a selected model; {RESTORE}")
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
            run = cls(store.local / run_id, text, run_id, store)
            run._pull_unless_driven()
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

    def _pull_unless_driven(self) -> None:
        """Fetch an object store run's driver files into the mirror, unless a driver on this
        machine holds the run's lock: its mirror is then the freshest copy, and replacing it
        would take its files from under it."""
        assert self.storage is not None
        path = self.lock_path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                return  # a driver runs this run here
            self.storage.pull(self.run_id)  # a driver that starts now waits for this
        finally:
            os.close(fd)  # releases the shared lock

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
        except RecursionError:
            raise UserError(f"{where}: damaged, nested too deeply to be a manifest; {RESTORE}") from None
        except OSError as err:  # a folder in its place, no permission, an I/O error
            raise UserError(f"{where}: cannot be read ({err.strerror or err}); {RESTORE}") from None
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

    @property
    def lock_path(self) -> Path:
        """The driver lock: in the run folder, or beside an object store run's mirror, whose
        folder every pull replaces."""
        if self.storage is not None:
            return self.storage.local / f".{self.run_id}{LOCK}"
        return self.local / LOCK

    def lock(self) -> DriverLock:
        """Take the run's driver lock (UserError if another driver holds it)."""
        lock = DriverLock(self.lock_path)
        lock.acquire(self.location)
        return lock

    # what Tune and the plan wrote, checked before they are trusted
    def results_table(self, table: str) -> Any:
        """``results.read_table`` of this run, or a UserError naming the damaged file."""
        from search import results

        if not self.results.is_dir():
            return results.read_table(self.results, table)
        try:
            return results.read_table(self.results, table)
        except Exception as err:  # pyarrow raises many kinds for a damaged file
            bad = next((f for f, _ in damaged_results(self.results, table)), None)
            where = bad or self.results / table
            raise UserError(
                f"{where}: damaged ({_reason(err)}); restore it from a copy (a running stage's "
                "files are rebuilt from its trials by psvae resume)"
            ) from None


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


def damaged_results(results_dir: Path, table: str) -> list[tuple[Path, str]]:
    """The Parquet files of ``table`` that cannot be read whole, with why."""
    import pyarrow.parquet as pq

    from search import results

    bad = []
    for stage in results.stages_written(results_dir, table):
        path = results_dir / table / f"{results.STAGE_DIR_PREFIX}{stage}" / results.PART_FILE
        try:
            pq.read_table(path)
        except Exception as err:  # pyarrow raises many kinds for a damaged file
            bad.append((path, _reason(err)))
    return bad


def check_results(run: RunDir, manifest: Manifest) -> list[Path]:
    """Before a driver builds on the results: a damaged file of a decided stage is a UserError
    (its rows cannot be made again); one of a stage still running is set aside (renamed
    ``.part-0.parquet.damaged-<time>``, never deleted), since the plan rewrites that stage's
    files from its trials. Returns the files set aside."""
    from search import results

    moved = []
    for table in ("trials", "epochs"):
        for path, reason in damaged_results(run.results, table):
            stage = path.parent.name.removeprefix(results.STAGE_DIR_PREFIX)
            record = manifest.stage(stage)
            if record is not None and record.status == DONE:
                raise UserError(
                    f"{path}: damaged ({reason}); the {stage} stage is decided and its rows cannot be "
                    "made again: restore the file from a copy, or start a new run (another --run-id)"
                )
            # hidden: Parquet readers (pandas.read_parquet of the folder) pass over dot files
            aside = path.with_name(f".{path.name}.damaged-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}")
            os.replace(path, aside)
            moved.append(aside)
    return moved


def _pickle_whole(data: bytes) -> bool:
    """A pickle (protocol 2 or later) that was written to its end: it starts with PROTO and
    ends with STOP. A truncated file almost never ends exactly at a STOP."""
    return len(data) > 2 and data[:1] == b"\x80" and data.endswith(b".")


def check_tune_state(run: RunDir) -> None:
    """The files Tune restores the run's experiment from, checked before it unpickles them:
    a damaged one is a UserError naming it. Object stores are written whole by Tune's uploads."""
    if is_uri(run.location):
        return
    folder = run.local / EXPERIMENT
    states = sorted(folder.glob("experiment_state-*.json"))
    problems: list[tuple[Path, str]] = []
    if states:
        newest = states[-1]
        try:
            json.loads(newest.read_text())
        except (OSError, ValueError) as err:
            problems.append((newest, _reason(err)))
        stamp = newest.name.removeprefix("experiment_state-").removesuffix(".json")
        for name in (f"search_gen_state-{stamp}.json", "tuner.pkl"):
            path = folder / name
            if not path.exists():
                continue
            try:
                whole = _pickle_whole(path.read_bytes())
            except OSError as err:
                problems.append((path, _reason(err)))
                continue
            if not whole:
                problems.append((path, "truncated or not a pickle"))
    if problems:
        path, reason = problems[0]
        raise UserError(
            f"{path}: damaged ({reason}); Tune cannot restore the run's experiment from it: restore "
            "the file from a copy, or start a new run (another --run-id); the decided stages are in "
            "manifest.json and results/"
        )


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


@dataclass(frozen=True)
class Unrecorded:
    """A trial folder of the running stage that Tune's experiment state does not list, as moved
    aside: its newest checkpoint that has its config, and that config (None when it had none)."""

    folder: Path
    checkpoint: Path | None
    config: dict[str, Any] | None


def set_aside_unrecorded(run: RunDir, stage: str, known: set[str]) -> list[Unrecorded]:
    """A driver killed after a trial's worker wrote its first checkpoint but before Tune next
    saved its experiment state leaves a folder ``tune/<stage>-<id>/`` that Tune, restored, does
    not know: the stage's trial would start again from epoch 0 beside it. Move each such folder
    (one of the running ``stage`` whose trial id is not in ``known``) to ``RUN/tune-set-aside/``,
    out of the experiment, and return where its work is, so the trial can go on from it. Local
    runs only: in an object store Tune's uploads are whole trials (the trial runs again)."""
    if is_uri(run.location):
        return []
    experiment = run.local / EXPERIMENT
    found = []
    for folder in sorted(experiment.glob(f"{stage}-*")):
        trial_id = folder.name.removeprefix(f"{stage}-")
        if not folder.is_dir() or trial_id in known:
            continue
        (run.local / SET_ASIDE).mkdir(exist_ok=True)
        aside, n = run.local / SET_ASIDE / folder.name, 1
        while aside.exists():  # the same name twice: keep both, never replace one (rename would)
            aside, n = run.local / SET_ASIDE / f"{folder.name}.{n}", n + 1
        os.rename(folder, aside)  # a move inside our own run, nothing deleted
        checkpoint, config = None, None
        for candidate in sorted(aside.glob("checkpoint_*"), reverse=True):
            try:
                read = json.loads((candidate / TRIAL_CONFIG).read_text())
            except (OSError, ValueError):
                continue  # a checkpoint whose files had not all arrived
            if isinstance(read, dict) and any((candidate / f).is_file() for f in (TRAINER_STATE, SUMMARY)):
                checkpoint, config = candidate, read
                break
        found.append(Unrecorded(aside, checkpoint, config))
    return found
