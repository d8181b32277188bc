"""The one place that talks to Tune's reporting API: a thin function trainable around
psvae's Trainer.

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

from psvae.config import FitConfig
from psvae.data import FrameData
from psvae.export import save_bundle
from psvae.files import jsonable
from psvae.trainer import Trainer

TRAINER_STATE = "trainer.pt"
HISTORY = "history.json"
SUMMARY = "summary.json"
BUNDLE = "model"


def train_psvae(config: dict[str, Any], data: dict[str, Any]) -> None:
    """``config``: {"base": flat fit config, "trial": the stage's overrides,
    "checkpoint_every_s": the least time between two checkpoints (0: every epoch)}."""
    fit_config = FitConfig.from_mapping({**config["base"], **config["trial"]}, source="trial config")
    frames = FrameData.from_arrays(data)
    trainer = Trainer(fit_config, frames)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            if (Path(d) / SUMMARY).is_file():  # the fit had finished: report its outcome again
                final = json.loads((Path(d) / SUMMARY).read_text())
                tune.report({**final, "done": True}, checkpoint=checkpoint)
                return
            trainer.restore(Path(d) / TRAINER_STATE)

    every_s = float(config.get("checkpoint_every_s", 0))
    last_checkpoint = time.monotonic()
    for result in trainer.epochs():
        metrics = {**jsonable(result.flat()), "done": False}
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
        }
        (Path(d) / SUMMARY).write_text(json.dumps(final))
        if trainer.best_state is not None:
            save_bundle(
                Path(d) / BUNDLE,
                trainer.copy_best_model(),
                fit_config,
                frames.label_stats,
                extra={"best_epoch": summary.best_epoch, "status": summary.status},
            )
        tune.report({**final, "done": True}, checkpoint=tune.Checkpoint.from_directory(d))
