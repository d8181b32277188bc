"""The one place that talks to Tune's reporting API: a thin function trainable around
psvae's Trainer. A checkpoint that cannot be read (truncated, damaged, missing) does not fail
the trial for good: the fit goes on from the trial's newest earlier checkpoint that can be
read, or runs again from epoch 0, and its reports say which and why (``restarted``, the
trial's ``note``).

Every epoch is reported; at most every ``checkpoint_every_s`` seconds the report carries a
checkpoint of the trainer's full state, so a retried trial continues from there. The last
report carries the fit's summary and, in its checkpoint, the best epoch's model bundle (ready
to export) and the epoch history. The dataset arrives through Ray's object store
(``tune.with_parameters``): one copy per node, shared by its trials.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from psvae.data import FrameData
from psvae.export import load_model, save_bundle
from psvae.files import jsonable
from psvae.trainer import FitSummary, Trainer
from search.rundir import BUNDLE, FINAL, HISTORY, SUMMARY, TRAINER_STATE, TRIAL_CONFIG
from search.scheduler import fit_config as trial_fit_config
from search.threads import TrialHints


def _candidates(checkpoint: Any) -> list[Any]:
    """The checkpoint Tune restores from, then the trial's other checkpoints, newest first: a
    checkpoint that cannot be read falls back to the one before it."""
    import pyarrow.fs as pafs

    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    parent = path.rsplit("/", 1)[0]
    try:
        found = fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
        others = sorted(
            (
                f.path
                for f in found
                if f.type == pafs.FileType.Directory and f.base_name.startswith("checkpoint_")
            ),
            reverse=True,
        )
    except OSError:
        others = []
    return [checkpoint] + [tune.Checkpoint(p, filesystem=fs) for p in others if p.rstrip("/") != path]


def _name(checkpoint: Any) -> str:
    return str(checkpoint.path).rstrip("/").rsplit("/", 1)[-1]


def _why(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:120]}" if text else type(err).__name__


def summary_record(summary: FitSummary, restarted: str | None = None) -> dict[str, Any]:
    """What the trial's last checkpoint keeps as ``summary.json``: the shape ``psvae fit``
    writes (:meth:`FitSummary.to_json`), plus the note of a damaged checkpoint, if any."""
    return {**summary.to_json(), **({"restarted": restarted} if restarted else {})}


def final_report(record: dict[str, Any]) -> dict[str, Any]:
    """Tune's flat view of a ``summary.json``: the keys the scheduler reads from a trial's last
    report (``fit_status``; the label names as a string, since TensorBoard's logger takes
    numbers and strings, not lists) and every metric at the top level."""
    if "metrics" not in record:  # a last checkpoint written before summary.json had one shape
        return record
    return {
        "fit_status": record["status"],
        "precision": record["precision"],
        "epochs_run": record["epochs_run"],
        "best_epoch": record["best_epoch"],
        "label_names_json": json.dumps(record["label_names"]),
        **record["metrics"],
        **({"restarted": record["restarted"]} if "restarted" in record else {}),
    }


def _restore(
    new_trainer: Callable[[], Trainer], checkpoint: Any
) -> tuple[Trainer, Any, dict[str, Any] | None, str | None]:
    """A trainer restored from Tune's checkpoint, or from the newest of the trial's earlier ones
    that can be read (a new trainer each try: nothing of a damaged state is kept). Returns (the
    trainer, the checkpoint used or None, the final report if the fit had finished, a note of
    what was damaged or None)."""
    damaged: list[str] = []
    for candidate in _candidates(checkpoint):
        trainer = new_trainer()
        try:
            with candidate.as_directory() as d:
                folder = Path(d)
                if (folder / SUMMARY).is_file():  # the fit had finished: its outcome, again
                    record = json.loads((folder / SUMMARY).read_text())
                    json.loads((folder / HISTORY).read_text())
                    if (folder / BUNDLE).exists():
                        load_model(folder / BUNDLE)  # one that cannot be loaded is no outcome
                    if not isinstance(record, dict):
                        raise ValueError("summary.json is not a mapping")
                    final = final_report(record)
                else:
                    final = None
                    trainer.restore(folder / TRAINER_STATE)
        except Exception as err:  # truncated, damaged, missing: any of torch's, json's, pyarrow's
            damaged.append(f"{_name(candidate)} is damaged ({_why(err)})")
            continue
        note = None
        if damaged:
            note = f"continued from {_name(candidate)}: {'; '.join(damaged)}"
        return trainer, candidate, final, note
    return new_trainer(), None, None, f"re-run from epoch 0: {'; '.join(damaged)}"


def train_psvae(config: dict[str, Any], data: dict[str, Any]) -> None:
    """``config``: {"base": the search's flat fit config, "set": what this trial sets beyond it,
    "stage", "hp": its hyperparameters (for TensorBoard), "checkpoint_every_s": the least time
    between two checkpoints (0: every epoch), "threads_file": where the driver says how many
    threads the trial may use now (``search/threads.py``; absent: its own count)}."""
    fit_config = trial_fit_config(config)
    frames = FrameData.from_arrays(data)
    restarted = None  # what was damaged, and where the fit went on from
    checkpoint = tune.get_checkpoint()
    went_on = None
    if checkpoint is None and config.get("continue_from"):
        # the trial's earlier work, in a folder Tune had not recorded (scheduler.restore)
        checkpoint = tune.Checkpoint(config["continue_from"])
        went_on = f"{Path(config['continue_from']).parent.name}/{_name(checkpoint)}"
    if checkpoint is None:
        trainer = Trainer(fit_config, frames)
    else:
        trainer, used, final, restarted = _restore(lambda: Trainer(fit_config, frames), checkpoint)
        if went_on is not None and restarted is None:
            restarted = f"continued from {went_on}, set aside: the driver ended before Tune recorded it"
        if final is not None:
            if restarted:
                final = {**final, "restarted": restarted}
            tune.report({**final, FINAL: True}, checkpoint=used)
            return
    if config.get("threads_file"):
        trainer.thread_budget = TrialHints(config["threads_file"], tune.get_context().get_trial_id())

    every_s = float(config.get("checkpoint_every_s", 0))
    last_checkpoint = time.monotonic()
    for result in trainer.epochs():
        metrics = {**jsonable(result.flat()), "threads": trainer.threads}
        if restarted is not None:
            metrics["restarted"] = restarted
        # The full state of the default network is ~175 MB: it is saved at most every
        # ``every_s`` seconds (a retried trial loses less than that), and not after the last
        # epoch, whose outcome the final report below checkpoints a few seconds later.
        if time.monotonic() - last_checkpoint < every_s or trainer.done:
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as d:
            trainer.save_checkpoint(Path(d) / TRAINER_STATE)
            (Path(d) / HISTORY).write_text(json.dumps(trainer.history))
            (Path(d) / TRIAL_CONFIG).write_text(json.dumps(jsonable(config)))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        last_checkpoint = time.monotonic()

    summary = trainer.finish()
    # The last checkpoint holds the outcome only (bundle, history, summary): a fifth of the
    # trainer's full state, which nothing needs once the fit is over.
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / HISTORY).write_text(json.dumps(trainer.history))
        (Path(d) / TRIAL_CONFIG).write_text(json.dumps(jsonable(config)))
        record = summary_record(summary, restarted)
        (Path(d) / SUMMARY).write_text(json.dumps(record))
        if trainer.best_state is not None:
            save_bundle(
                Path(d) / BUNDLE,
                trainer.copy_best_model(),
                fit_config,
                frames.label_stats,
                extra={"best_epoch": summary.best_epoch, "status": summary.status},
                provenance=config.get("provenance"),
            )
        tune.report({**final_report(record), FINAL: True}, checkpoint=tune.Checkpoint.from_directory(d))
