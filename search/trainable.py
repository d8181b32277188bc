"""The one place that talks to Tune's reporting API: a thin function trainable around
psvae's Trainer. A checkpoint that cannot be read (truncated, damaged) does not fail the trial
for good: the fit runs again from epoch 0 and its reports say so (``restarted``).

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
from pathlib import Path
from typing import Any

from ray import tune

from psvae.data import FrameData
from psvae.export import save_bundle
from psvae.files import jsonable
from psvae.trainer import Trainer
from search.rundir import BUNDLE, HISTORY, SUMMARY, TRAINER_STATE
from search.scheduler import fit_config as trial_fit_config


def train_psvae(config: dict[str, Any], data: dict[str, Any]) -> None:
    """``config``: {"base": the search's flat fit config, "set": what this trial sets beyond it,
    "stage", "hp": its hyperparameters (for TensorBoard), "checkpoint_every_s": the least time
    between two checkpoints (0: every epoch)}."""
    fit_config = trial_fit_config(config)
    frames = FrameData.from_arrays(data)
    trainer = Trainer(fit_config, frames)
    restarted = None  # why the fit started again from epoch 0 although a checkpoint existed
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            if (Path(d) / SUMMARY).is_file():  # the fit had finished: report its outcome again
                try:
                    final = json.loads((Path(d) / SUMMARY).read_text())
                except (OSError, ValueError):
                    final = None
                if final is not None:
                    tune.report({**final, "done": True}, checkpoint=checkpoint)
                    return
                restarted = f"{Path(checkpoint.path).name}: its summary is damaged"
            else:
                try:
                    trainer.restore(Path(d) / TRAINER_STATE)
                except Exception as err:  # a truncated or damaged file: any of torch's errors
                    restarted = f"{Path(checkpoint.path).name} is damaged ({type(err).__name__})"
        if restarted is not None:
            trainer = Trainer(fit_config, frames)  # nothing of the damaged state is kept

    every_s = float(config.get("checkpoint_every_s", 0))
    last_checkpoint = time.monotonic()
    for result in trainer.epochs():
        metrics = {**jsonable(result.flat()), "done": False}
        if restarted is not None:
            metrics["restarted"] = f"re-run from epoch 0: {restarted}"
        # The full state of the default network is ~175 MB: it is saved at most every
        # ``every_s`` seconds (a retried trial loses less than that), and not after the last
        # epoch, whose outcome the final report below checkpoints a few seconds later.
        if time.monotonic() - last_checkpoint < every_s or trainer.done:
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as d:
            trainer.save_checkpoint(Path(d) / TRAINER_STATE)
            (Path(d) / HISTORY).write_text(json.dumps(trainer.history))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        last_checkpoint = time.monotonic()

    summary = trainer.finish()
    # The last checkpoint holds the outcome only (bundle, history, summary): a fifth of the
    # trainer's full state, which nothing needs once the fit is over.
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / HISTORY).write_text(json.dumps(trainer.history))
        final = {
            "fit_status": summary.status,
            "precision": summary.precision,
            "epochs_run": summary.epochs_run,
            "best_epoch": summary.best_epoch,
            # a string: TensorBoard's logger takes numbers and strings, not lists
            "label_names_json": json.dumps(list(frames.label_stats.names)),
            **jsonable(summary.metrics),
            **({"restarted": f"re-run from epoch 0: {restarted}"} if restarted else {}),
        }
        (Path(d) / SUMMARY).write_text(json.dumps(final))
        if trainer.best_state is not None:
            save_bundle(
                Path(d) / BUNDLE,
                trainer.copy_best_model(),
                fit_config,
                frames.label_stats,
                extra={"best_epoch": summary.best_epoch, "status": summary.status},
                provenance=config.get("provenance"),
            )
        tune.report({**final, "done": True}, checkpoint=tune.Checkpoint.from_directory(d))
