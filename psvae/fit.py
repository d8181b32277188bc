"""One fit from data files to a model bundle, without Ray (``psvae fit``).

The output directory holds::

    fit.json        the data files and config of this fit (checked when resuming)
    metrics.csv     one row per epoch (train_* and val_* metrics, weights in force)
    checkpoint.pt   resume state, rewritten atomically every epoch; removed when done
    model/          the bundle of the best checkpoint (see psvae.export)
    summary.json    status, best epoch, label names and val/test metrics of the best checkpoint

Running the same command again on an unfinished directory continues the fit from its
checkpoint. A directory holding anything else is never written into.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psvae import paths, provenance
from psvae.config import FitConfig
from psvae.data import load_data
from psvae.errors import DataError, UserError
from psvae.export import describe_load_error, save_bundle
from psvae.family import FAMILY
from psvae.files import write_json_atomic, write_text_atomic
from psvae.trainer import EpochResult, FitSummary, Trainer

FIT_FILE = "fit.json"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"  # FitSummary.to_json(), the shape a search trial's last checkpoint holds too


def _describe(data_paths: list[str], cfg: FitConfig) -> dict[str, Any]:
    return {"data": [str(paths.resolve(p, DataError)) for p in data_paths], "config": cfg.flat()}


def _check_out_dir(out_dir: Path, fit: dict[str, Any]) -> bool:
    """True when ``out_dir`` holds an unfinished fit of this very description to resume."""
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory; choose another --out")
    if not any(out_dir.iterdir()):
        return False
    if (out_dir / "model").exists():
        raise UserError(f"{out_dir}: already holds a finished fit; choose another --out")
    fit_file, checkpoint = out_dir / FIT_FILE, out_dir / CHECKPOINT
    if not (fit_file.is_file() and checkpoint.is_file()):
        raise UserError(f"{out_dir}: exists and is not an unfinished psvae fit; choose another --out")
    previous = _read_fit_file(fit_file, out_dir)
    if previous != json.loads(json.dumps(fit)):
        changed = sorted(
            k
            for k in set(previous["config"]) | set(fit["config"])
            if previous["config"].get(k) != fit["config"].get(k)
        )
        what = f"config keys {', '.join(changed)}" if changed else "data files"
        raise UserError(
            f"{out_dir}: holds an unfinished fit with different {what}; "
            "rerun with the same data and config to resume, or choose another --out"
        )
    return True


def _cannot_resume(out_dir: Path) -> str:
    return (
        f"the unfinished fit in {out_dir} cannot be resumed; choose another --out "
        "(or remove that folder yourself to start over)"
    )


def _read_fit_file(fit_file: Path, out_dir: Path) -> dict[str, Any]:
    """The description of the unfinished fit, or a one-line UserError when it is damaged."""
    try:
        previous = json.loads(fit_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not valid JSON"
        raise UserError(f"{fit_file}: damaged ({reason}); {_cannot_resume(out_dir)}") from None
    if (
        not isinstance(previous, dict)
        or not isinstance(previous.get("config"), dict)
        or not isinstance(previous.get("data"), list)
    ):
        raise UserError(f"{fit_file}: damaged (expected data and config); {_cannot_resume(out_dir)}")
    return previous


def _restore(trainer: Trainer, checkpoint: Path, out_dir: Path) -> None:
    """Continue from ``checkpoint``; a damaged or foreign one is a one-line UserError."""
    try:
        trainer.restore(checkpoint)
    except UserError as err:
        raise UserError(f"{checkpoint}: {err}; {_cannot_resume(out_dir)}") from None
    except Exception as err:  # torch.load and load_state_dict raise many kinds for a bad file
        raise UserError(f"{checkpoint}: {describe_load_error(err)}; {_cannot_resume(out_dir)}") from None


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="epoch", disable=not enabled, file=sys.stderr)


def run_fit(
    data_paths: list[str],
    cfg: FitConfig,
    out_dir: str | Path,
    progress: bool = True,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> FitSummary:
    """Fit one model and write its directory. Input errors are raised before anything is written."""
    out_dir = Path(out_dir)
    fit = _describe(data_paths, cfg)
    resume = _check_out_dir(out_dir, fit)
    data = load_data(
        data_paths, cfg.data.split, cfg.data.split_seed, per_session=FAMILY[cfg.model.model_class].background
    )
    record = provenance.collect(data_paths)  # the files as they were read
    trainer = Trainer(cfg, data)
    if resume:
        _restore(trainer, out_dir / CHECKPOINT, out_dir)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / FIT_FILE, fit)

    bar = _progress(cfg.train.epochs, trainer.epoch, progress)
    with bar:
        for result in trainer.epochs():
            trainer.save_checkpoint(out_dir / CHECKPOINT)
            write_text_atomic(out_dir / "metrics.csv", _csv_text(trainer.history))
            bar.update(1)
            bar.set_postfix(
                loss=f"{result.train['loss']:.4g}",
                val_r2=f"{result.val['label_r2']:.3f}",
                val_pix=f"{result.val['pixel_mse']:.2e}",
            )
            if on_epoch is not None:
                on_epoch(result)

    summary = trainer.finish()
    if trainer.best_state is not None:
        save_bundle(
            out_dir / "model",
            trainer.copy_best_model(),
            cfg,
            data.label_stats,
            extra={"best_epoch": summary.best_epoch, "status": summary.status},
            provenance=record,
        )
    write_json_atomic(out_dir / SUMMARY, summary.to_json())
    if summary.status == "completed":
        (out_dir / CHECKPOINT).unlink(missing_ok=True)  # ours: this fit's checkpoint, in its own folder
    return summary
