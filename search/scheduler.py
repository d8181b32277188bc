"""The staged search as one plan run by one Tune experiment: which trials each stage runs,
when a stage is decided, and which fits are reused. No Ray here.

The driver (``search/driver.py``) wires a :class:`StagedSearch` to Tune: Tune's searcher asks
:meth:`StagedSearch.suggest` for the next trial's config, and Tune's callbacks tell it when a
trial starts, reports an epoch and ends. A stage's trials are suggested when the stage before it
is decided; once the last of them has ended, the stage's rule picks one (``search.selection``),
the decision goes into ``manifest.json`` and the next stage's trials are suggested, all inside the
same experiment, so trial workers are reused from stage to stage.

A trial whose full fit config equals one an earlier stage completed is not run again: its row
(``reused_from``) points at the earlier trial's results and checkpoint (the guide's plan runs 9
fits instead of 11: beta = 1 at the chosen alpha is the alpha stage's choice, the default seed
the beta stage's). ``reuse_fits: false`` in the search config turns this off.

After a driver is killed, Tune restores the experiment and the driver rebuilds this object from
the manifest and Tune's trials (:meth:`StagedSearch.restore`): finished trials are not re-run,
running ones continue from their checkpoints, and rows are rebuilt from the trials, so none is
lost or written twice.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from psvae.config import FitConfig
from psvae.family import DEFAULT_CLASS, FAMILY
from results_schema import columns as col
from results_schema import trial_columns_from_metrics
from search import results, selection
from search.rundir import (
    DONE,
    FAILED,
    FINAL,
    FIXED,
    OPTUNA_JOURNAL,
    RESULTS,
    RUNNING,
    Manifest,
    RunDir,
    Selected,
    StageRecord,
    now,
    set_aside_unrecorded,
)
from search.spec import SearchSpec, StageSpec
from search.threads import THREADS_FILE, HintsFile, idle_shares

FINISHED = "FINISHED"  # what suggest() returns when the plan is over (Tune's Searcher.FINISHED)
# the six hyperparameters every trial shows in TensorBoard's HParams view, whatever it varies
HPARAMS = {
    col.ALPHA: "loss.alpha",
    col.BETA: "loss.beta",
    col.DELTA: "loss.delta",
    col.SEED_MODEL: "train.seed_model",
    col.SIGMA_X: "loss.sigma_x",
    col.N_UNSUPERVISED: "model.n_unsupervised",
}
# what an optuna stage optimises: alpha-like stages the pixel/label trade-off (two objectives),
# the others the beta selection statistic
OPTUNA_OBJECTIVES = {
    "alpha": [col.VAL_PIXEL_MSE, col.VAL_LABEL_MSE],
    "msp_alpha": [col.VAL_PIXEL_MSE, col.VAL_LABEL_MSE],
}
DEFAULT_OBJECTIVE = [col.TRAIN_MEAN_ABS_CORR_U]


@dataclass(frozen=True)
class TrialOutcome:
    """A trial that has ended, as the driver reads it from Tune: plain data."""

    trial_id: str
    config: dict[str, Any]  # the trial's config as Tune holds it: base, set, stage, hp
    metrics: dict[str, Any]  # its last report
    checkpoint: str | None  # its last checkpoint, relative to the run
    history: list[dict[str, Any]]  # the epochs its last checkpoint recorded
    error: str | None  # why it failed (Tune gave up on it), or None


class Observer(Protocol):
    """Who watches the search (the terminal display, the report refresher)."""

    def stage_started(
        self, stage: StageSpec, n_trials: int, n_reused: int, fixed: dict[str, Any]
    ) -> None: ...
    def trial_started(self, trial_id: str, stage: str, values: dict[str, Any], epochs: int) -> None: ...
    def trial_result(self, trial_id: str, result: dict[str, Any]) -> None: ...
    def trial_ended(self, trial_id: str, row: dict[str, Any]) -> None: ...
    def stage_decided(self, stage: str, record: StageRecord, manifest: Manifest) -> None: ...
    def search_ended(self, manifest: Manifest) -> None: ...
    def close(self) -> None: ...


@dataclass
class _Trial:
    trial_id: str
    stage: str
    overrides: dict[str, Any]  # the stage's varied keys
    fit: dict[str, Any]  # the full flat fit config
    optuna_number: int | None = None
    row: dict[str, Any] | None = None  # once it has ended

    @property
    def ended(self) -> bool:
        return self.row is not None


@dataclass
class _Stage:
    spec: StageSpec
    fixed: dict[str, Any]
    queue: list[tuple[dict[str, Any], dict[str, Any]]]  # (overrides, full fit) still to suggest
    trials: list[str] = field(default_factory=list)  # Tune trial ids, in suggestion order
    reused: list[dict[str, Any]] = field(default_factory=list)  # rows reused from earlier stages
    epochs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    started_at: float = field(default_factory=time.perf_counter)
    n_asked: int = 0  # optuna stages: trials asked of the study
    # fit key -> a checkpoint of a set-aside trial folder its trial goes on from (restore)
    continue_from: dict[str, str] = field(default_factory=dict)


def trial_base(spec: SearchSpec) -> dict[str, Any]:
    """The flat fit config every trial starts from: the spec's, with one torch thread per CPU the
    trial is given."""
    return {**spec.fit, "train.num_threads": max(1, int(spec.resources.cpus_per_trial))}


# keys that change how fast a fit runs, not what it fits (the numbers can differ in their last
# digits with the thread count, as they do between machines)
RUNTIME_FIT_KEYS = ("train.num_threads",)


def fit_key(fit: dict[str, Any]) -> str:
    """Two trials with the same key fit the same model (the data is the search's)."""
    return json.dumps({k: v for k, v in fit.items() if k not in RUNTIME_FIT_KEYS}, sort_keys=True)


class StagedSearch:
    def __init__(
        self,
        spec: SearchSpec,
        run: RunDir,
        manifest: Manifest,
        log: Callable[[str], None] = print,
        observers: Sequence[Observer] = (),
        slots: int = 1,
    ) -> None:
        """``slots``: how many trials run at once on a Ray the driver started here, whose idle
        CPUs a stage's last trials may take as threads (``search/threads.py``); 1: never."""
        self.spec = spec
        self.slots = slots
        self.hints = HintsFile(run.local / THREADS_FILE) if slots > 1 else None
        self.run = run
        self.manifest = manifest
        self.log = log
        self.observers = list(observers)
        self.base_flat = trial_base(spec)
        self.base = FitConfig.from_mapping(self.base_flat, source="the search's fit config")
        self.trials: dict[str, _Trial] = {}
        self.stage: _Stage | None = None
        self.failed: str | None = None  # why the search stopped
        self.completed: dict[str, dict[str, Any]] = {}  # fit_key -> a completed row of an earlier stage
        self._studies: dict[str, Any] = {}
        for row in self._rows_of_done_stages():
            if row[col.STATUS] == "completed" and not isinstance(row.get(col.REUSED_FROM), str):
                self.completed.setdefault(fit_key(json.loads(row[col.CONFIG_JSON])), row)
        for stage in spec.stages:
            record = manifest.stage(stage.name)
            if record is not None and record.status == DONE:
                log(f"stage {stage.name}: done earlier, chose {record.fixes}")
        self._share_idle_slots()  # none yet: what an earlier driver wrote no longer holds

    # -- what Tune's searcher asks ------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.manifest.status == DONE

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The config of the next trial, FINISHED when the plan is over (or failed), or None when
        the current stage's trials are all out and the next stage waits for its decision."""
        suggestion = self._suggest(trial_id)
        self._share_idle_slots()
        return suggestion

    def _suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        while True:
            if self.failed is not None or self.done:
                return FINISHED
            stage = self.stage or self._begin_next_stage()
            if stage is None:
                self._finish()
                return FINISHED
            if stage.queue:
                overrides, fit = stage.queue.pop(0)
                went_on = stage.continue_from.pop(fit_key(fit), None)
                return self._hand_out(trial_id, stage, overrides, fit, continue_from=went_on)
            if stage.spec.algorithm == "optuna" and stage.n_asked < stage.spec.n_trials:
                return self._ask_optuna(trial_id, stage)
            if all(self.trials[t].ended for t in stage.trials):
                self._decide(stage)
                continue
            return None

    def _hand_out(
        self,
        trial_id: str,
        stage: _Stage,
        overrides: dict[str, Any],
        fit: dict[str, Any],
        number: int | None = None,
        continue_from: str | None = None,
    ) -> dict[str, Any]:
        self.trials[trial_id] = _Trial(trial_id, stage.spec.name, overrides, fit, number)
        stage.trials.append(trial_id)
        base = self.base_flat
        config: dict[str, Any] = {
            col.STAGE: stage.spec.name,
            # what the trial sets beyond the search's base fit config: the decisions so far and
            # the stage's own values
            "set": {k: v for k, v in fit.items() if base.get(k) != v},
            "hp": {name: fit.get(key) for name, key in HPARAMS.items()},
        }
        if number is not None:
            config["optuna_number"] = number
        if continue_from is not None:
            config["continue_from"] = continue_from  # the trainable starts from this checkpoint
        for observer in self.observers:
            observer.trial_started(trial_id, stage.spec.name, overrides, int(fit["train.epochs"]))
        return config

    def _share_idle_slots(self) -> None:
        """Once the stage has handed out its last trial, the slots its ended trials left idle go
        to those still running, as threads (``search/threads.py``)."""
        if self.hints is None:
            return
        stage = self.stage
        hints: dict[str, int] = {}
        more = stage is not None and (
            bool(stage.queue) or (stage.spec.algorithm == "optuna" and stage.n_asked < stage.spec.n_trials)
        )
        if stage is not None and not more:
            running = [t for t in stage.trials if not self.trials[t].ended]
            hints = idle_shares(running, self.slots, int(self.base_flat["train.num_threads"]))
        self.hints.write(hints)

    # -- stages -------------------------------------------------------------------------------
    def _next_stage_spec(self) -> StageSpec | None:
        for stage in self.spec.stages:
            record = self.manifest.stage(stage.name)
            if record is None or record.status != DONE:
                return stage
        return None

    def _begin_next_stage(self) -> _Stage | None:
        spec = self._next_stage_spec()
        if spec is None:
            return None
        fixed = self.manifest.chosen_overrides(self.spec.alpha, self.spec.beta)
        runs: list[tuple[dict[str, Any], dict[str, Any]]] = []
        reused: list[dict[str, Any]] = []
        planned = [] if spec.algorithm == "optuna" else spec.trial_overrides()
        for overrides in planned:
            fit = self.base.replace(**{**fixed, **overrides}).flat()
            earlier = self.completed.get(fit_key(fit)) if self.spec.reuse_fits else None
            if earlier is not None:
                reused.append(reused_row(earlier, spec.name))
            else:
                runs.append((overrides, fit))
        stage = _Stage(spec, fixed, runs, reused=reused)
        self.stage = stage
        previous = self.manifest.stage(spec.name)
        record = StageRecord(
            status=RUNNING,
            started=previous.started if previous is not None and previous.started else now(),
            varies=" x ".join(spec.varied_keys()),
            fixed=fixed,
            planned=len(planned) if planned else spec.n_trials,
            reused=[r[col.TRIAL_ID] for r in reused],
        )
        self.manifest = self.manifest.with_stage(spec.name, record)
        self.run.write(self.manifest)
        n = record.planned or 0
        note = f", {len(reused)} reused from earlier stages" if reused else ""
        self.log(
            f"stage {spec.name}: {n} {spec.algorithm} trials varying {record.varies}{note}, fixed {fixed}"
        )
        for observer in self.observers:
            observer.stage_started(spec, n, len(reused), fixed)
        if reused:
            self._write_stage(stage)
        return stage

    def _rows(self, stage: _Stage) -> list[dict[str, Any]]:
        rows = [r for t in stage.trials if (r := self.trials[t].row) is not None]
        return sorted([*rows, *stage.reused], key=lambda r: r[col.TRIAL_ID])

    def _write_stage(self, stage: _Stage) -> None:
        """Rewrite the stage's Parquet files whole: the rows and epochs of its trials so far."""
        name = stage.spec.name
        results.write_stage(self.run.results, "trials", name, self._rows(stage))
        epochs = [e for t in sorted(stage.epochs) for e in stage.epochs[t]]
        results.write_stage(self.run.results, "epochs", name, epochs)
        for table in ("trials", "epochs"):
            self.run.push(f"{RESULTS}/{table}/{results.STAGE_DIR_PREFIX}{name}")

    def _decide(self, stage: _Stage) -> None:
        spec = stage.spec
        self._write_stage(stage)
        self.run.push(OPTUNA_JOURNAL)
        rows = self._rows(stage)
        previous = self.manifest.stage(spec.name)
        started = previous.started if previous is not None else None
        try:
            decision = selection.select(spec.rule, pd.DataFrame(rows), **spec.rule_params)
        except (selection.SelectionError, ValueError, TypeError) as err:
            message = f"stage {spec.name}: {' '.join(str(err).split())}"
            record = StageRecord(status=FAILED, started=started, finished=now(), error=message)
            self.manifest = self.manifest.with_stage(spec.name, record).replace(status=FAILED)
            self.run.write(self.manifest)
            self.failed = message
            self.stage = None
            self.log(f"stage {spec.name}: failed: {message}")
            for observer in self.observers:
                observer.stage_decided(spec.name, record, self.manifest)
            return
        chosen = next(r for r in rows if r[col.TRIAL_ID] == decision.trial_id)
        chosen_fit = json.loads(chosen[col.CONFIG_JSON])
        record = StageRecord(
            status=DONE,
            started=started,
            finished=now(),
            seconds=round(time.perf_counter() - stage.started_at, 1),
            varies=" x ".join(spec.varied_keys()),
            fixed=stage.fixed,
            fixes={key: chosen_fit[key] for key in spec.varied_keys()},
            decision=decision.to_dict() | {"checkpoint": chosen[col.CHECKPOINT]},
            planned=previous.planned if previous is not None else len(rows),
            reused=[r[col.TRIAL_ID] for r in stage.reused],
        )
        self.manifest = self.manifest.with_stage(spec.name, record)
        self.run.write(self.manifest)
        for row in rows:
            if row[col.STATUS] == "completed" and not isinstance(row.get(col.REUSED_FROM), str):
                self.completed.setdefault(fit_key(json.loads(row[col.CONFIG_JSON])), row)
        self.stage = None
        self.log(f"stage {spec.name}: chose {record.fixes}: {decision.explanation}")
        for observer in self.observers:
            observer.stage_decided(spec.name, record, self.manifest)

    def _finish(self) -> None:
        last = None
        for stage in self.spec.stages:
            record = self.manifest.stage(stage.name)
            if record is not None and record.status == DONE and record.decision:
                last = (stage.name, record.decision)
        assert last is not None
        name, decision = last
        selected = Selected(name, decision["trial_id"], dict(decision["chosen"]), decision["checkpoint"])
        self.manifest = self.manifest.replace(status=DONE, finished=now(), selected=selected)
        self.run.write(self.manifest)
        for observer in self.observers:
            observer.search_ended(self.manifest)

    # -- what Tune's callbacks tell -----------------------------------------------------------
    def trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        for observer in self.observers:
            observer.trial_result(trial_id, result)

    def trial_ended(self, outcome: TrialOutcome) -> None:
        trial = self.trials.get(outcome.trial_id)
        if trial is None or trial.ended:
            return  # not one of this plan's (or told twice)
        row, epochs = trial_rows(outcome, self.manifest.run_id, trial.stage)
        trial.row = row
        stage = self.stage
        if stage is None or stage.spec.name != trial.stage:
            return
        stage.epochs[trial.trial_id] = epochs
        if stage.spec.algorithm == "optuna" and trial.optuna_number is not None:
            self._tell_optuna(stage, trial, row)
        self._write_stage(stage)
        self._share_idle_slots()
        for observer in self.observers:
            observer.trial_ended(trial.trial_id, row)

    # -- after a restart ----------------------------------------------------------------------
    def restore(self, trials: Sequence[tuple[str, dict[str, Any], TrialOutcome | None]]) -> None:
        """Take up the trials Tune restored: (trial id, config, outcome if it has ended). Trials
        of decided stages are already in the results; those of the current stage are registered,
        ended ones given their rows, and the stage's queue keeps only what no trial covers."""
        stage = self.stage or self._begin_next_stage()
        if stage is None:
            return
        covered = set()
        for trial_id, config, outcome in trials:
            if config.get("stage") != stage.spec.name or trial_id in self.trials:
                continue
            fit = {**self.base_flat, **config.get("set", {})}
            overrides = {k: fit[k] for k in stage.spec.varied_keys() if k in fit}
            self.trials[trial_id] = _Trial(
                trial_id, stage.spec.name, overrides, fit, config.get("optuna_number")
            )
            stage.trials.append(trial_id)
            covered.add(fit_key(fit))
            if stage.spec.algorithm == "optuna":
                stage.n_asked += 1
            if outcome is not None:
                self.trial_ended(outcome)
        self._take_up_unrecorded(stage, {trial_id for trial_id, _, _ in trials}, covered)
        stage.queue = [(o, f) for o, f in stage.queue if fit_key(f) not in covered]
        if stage.spec.algorithm == "optuna":
            self._forget_lost_optuna_trials(stage)
        self._share_idle_slots()

    def _take_up_unrecorded(self, stage: _Stage, known: set[str], covered: set[str]) -> None:
        """The running stage's trial folders Tune's state does not list are set aside; a planned
        trial that has none of Tune's goes on from its set-aside checkpoint, not from epoch 0."""
        planned = {fit_key(f) for _, f in stage.queue} - covered
        for found in set_aside_unrecorded(self.run, stage.spec.name, known):
            config = found.config or {}
            key = fit_key({**self.base_flat, **config.get("set", {})})
            usable = config.get(col.STAGE) == stage.spec.name and key in planned
            if found.checkpoint is not None and usable and key not in stage.continue_from:
                stage.continue_from[key] = str(found.checkpoint)
                then = f"its trial goes on from {found.checkpoint.name}"
            else:
                then = "nothing in it to go on from"
            self.log(
                f"{found.folder.name}: a trial folder Tune's state did not record (the driver ended"
                f" first); moved to {found.folder.parent}, {then}"
            )

    def _rows_of_done_stages(self) -> list[dict[str, Any]]:
        done = [s.name for s in self.spec.stages if (r := self.manifest.stage(s.name)) and r.status == DONE]
        if not done:
            return []
        return [r for r in results.read_rows(self.run.results, "trials") if r[col.STAGE] in done]

    # -- optuna stages ------------------------------------------------------------------------
    def _study(self, stage: StageSpec) -> Any:
        if stage.name not in self._studies:
            objectives = OPTUNA_OBJECTIVES.get(stage.name, DEFAULT_OBJECTIVE)
            name = f"{self.manifest.run_id}-{stage.name}"  # the run id keeps runs' studies apart
            self._studies[stage.name] = optuna_study(self.run.local / OPTUNA_JOURNAL, name, objectives)
        return self._studies[stage.name]

    def _distributions(self, stage: StageSpec) -> dict[str, Any]:
        import optuna

        assert stage.range is not None
        space: dict[str, Any] = {stage.key: optuna.distributions.FloatDistribution(*stage.range, log=True)}
        if stage.n_unsupervised:
            space["model.n_unsupervised"] = optuna.distributions.CategoricalDistribution(
                list(stage.n_unsupervised)
            )
        return space

    def _ask_optuna(self, trial_id: str, stage: _Stage) -> dict[str, Any]:
        asked = self._study(stage.spec).ask(self._distributions(stage.spec))
        stage.n_asked += 1
        overrides = dict(asked.params)
        fit = self.base.replace(**{**stage.fixed, **overrides}).flat()
        return self._hand_out(trial_id, stage, overrides, fit, number=asked.number)

    def _tell_optuna(self, stage: _Stage, trial: _Trial, row: dict[str, Any]) -> None:
        import optuna

        objectives = OPTUNA_OBJECTIVES.get(stage.spec.name, DEFAULT_OBJECTIVE)
        values = [row.get(name) for name in objectives]
        study = self._study(stage.spec)
        if row[col.STATUS] == "completed" and all(v is not None and math.isfinite(v) for v in values):
            study.tell(trial.optuna_number, values)
        else:
            study.tell(trial.optuna_number, state=optuna.trial.TrialState.FAIL)

    def _forget_lost_optuna_trials(self, stage: _Stage) -> None:
        """Trials asked of the study that Tune never got to run (the driver died first) fail."""
        import optuna

        study = self._study(stage.spec)
        known = {t.optuna_number for t in self.trials.values() if t.stage == stage.spec.name}
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if trial.number not in known:
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def optuna_study(journal: Any, name: str, objectives: list[str]) -> Any:
    """The study ``name`` in the journal file ``journal`` (created or loaded), minimising the
    named ``objectives`` (``optuna-dashboard <journal>`` shows them by name)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))),
        study_name=name,
        directions=["minimize"] * len(objectives),
        sampler=optuna.samplers.TPESampler(seed=0),
        load_if_exists=True,
    )
    study.set_metric_names(objectives)
    return study


# -- result rows ------------------------------------------------------------------------------
def reused_row(earlier: dict[str, Any], stage: str) -> dict[str, Any]:
    """A stage's row for a fit an earlier stage completed: its results and checkpoint."""
    return {
        **earlier,
        col.STAGE: stage,
        col.TRIAL_ID: f"{earlier['trial_id']}@{stage}",
        col.REUSED_FROM: earlier[col.TRIAL_ID],
    }


SUMMARY_COLUMNS = (
    col.VAL_LOSS, col.VAL_PIXEL_MSE, col.VAL_LABEL_MSE, col.VAL_LABEL_R2,
    col.VAL_MI, col.VAL_TC, col.VAL_DWKL,
    col.TEST_LOSS, col.TEST_PIXEL_MSE, col.TEST_LABEL_MSE, col.TEST_LABEL_R2,
    col.TRAIN_MEAN_ABS_CORR_U, col.TEST_ABS_CORR_U01, col.VAL_SESSION_ACC, col.SESSION_CHANCE,
)  # fmt: skip
"""The trials columns copied from the fit's summary metrics (``FitSummary.metrics``) under their
own name; ``trial_columns_from_metrics`` fills the latent-activity ones."""


def trial_rows(outcome: TrialOutcome, run_id: str, stage: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One trials row and its epochs rows (the result-table columns) from a trial that ended."""
    metrics = outcome.metrics
    config = {**outcome.config.get("base", {}), **outcome.config.get("set", {})}
    error: str | None
    if outcome.error is not None:
        status, error = "failed", " ".join(outcome.error.strip().splitlines()[-1:])[:500]
    elif (metrics.get(FINAL) or metrics.get("done")) and "fit_status" in metrics:  # "done": before FINAL
        status = str(metrics["fit_status"])
        error = f"non-finite loss at epoch {metrics[col.EPOCHS_RUN] - 1}" if status == "diverged" else None
    else:
        status, error = "failed", "stopped before the end of its fit"
    names = list(json.loads(metrics.get("label_names_json") or "[]"))
    history = outcome.history
    model_class = str(config.get("model.model_class", DEFAULT_CLASS))

    def metric(key: str) -> float:
        value = metrics.get(key)
        return float("nan") if value is None else float(value)

    row = {
        col.RUN_ID: run_id,
        col.STAGE: stage,
        col.TRIAL_ID: outcome.trial_id,
        col.STATUS: status,
        col.ERROR: error,
        col.ALPHA: float(config["loss.alpha"]),
        col.BETA: float(config["loss.beta"]),
        col.MODEL_CLASS: model_class,
        col.DELTA: float(config.get("loss.delta", float("nan"))),
        col.MSP_ALPHA: float(config.get("loss.msp_alpha", float("nan"))),
        col.N_UNSUPERVISED: int(config["model.n_unsupervised"]),
        col.N_BACKGROUND: int(config.get("model.n_background", 0)) if FAMILY[model_class].background else 0,
        col.SEED_MODEL: int(config["train.seed_model"]),
        col.EPOCHS_RUN: metrics.get(col.EPOCHS_RUN, len(history)),
        col.BEST_EPOCH: metrics.get(col.BEST_EPOCH),
        col.PRECISION: metrics.get(col.PRECISION),
        col.WALL_SECONDS: metrics.get("time_total_s"),
        col.LABEL_NAMES: names,
        col.VAL_LABEL_R2_PER_LABEL: [metric(f"val_label_r2_{n}") for n in names],
        col.TEST_LABEL_R2_PER_LABEL: [metric(f"test_label_r2_{n}") for n in names],
        col.CONFIG_JSON: json.dumps(config, sort_keys=True),
        col.CHECKPOINT: outcome.checkpoint,
        col.REUSED_FROM: None,
        col.NOTE: metrics.get("restarted"),
    }
    for key in SUMMARY_COLUMNS:
        row[key] = metric(key)
    row.update(trial_columns_from_metrics(metrics))
    epochs = [
        {
            col.RUN_ID: run_id,
            col.STAGE: stage,
            col.TRIAL_ID: outcome.trial_id,
            **{k: (float("nan") if v is None else v) for k, v in h.items()},
        }
        for h in history
    ]
    return row, epochs


def fixed_records(spec: SearchSpec, manifest: Manifest) -> Manifest:
    """The stages fixed by hand (alpha, beta), recorded once."""
    for name, value in (("alpha", spec.alpha), ("beta", spec.beta)):
        if value is not None and manifest.stage(name) is None:
            manifest = manifest.with_stage(name, StageRecord(status=FIXED, value=value, rule="fixed by hand"))
    return manifest


def plan_counts(spec: SearchSpec) -> list[tuple[str, int]]:
    """(stage, trials) of the plan, before reuse (which depends on the decisions)."""
    return [
        (s.name, s.n_trials if s.algorithm == "optuna" else len(s.trial_overrides())) for s in spec.stages
    ]


def fit_config(config: dict[str, Any]) -> FitConfig:
    """A trial's fit config from its Tune config."""
    return FitConfig.from_mapping({**config["base"], **config.get("set", {})}, source="trial config")
