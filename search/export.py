"""``psvae export``: a trial's model bundle plus the evidence for choosing it (no Ray needed).

By default the search's selected model; ``--trial ID`` exports any trial of the run that
completed (to compare candidates outside the report).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any

from psvae.errors import UserError
from psvae.files import check_replaceable, staged_dir
from results_schema import columns as col
from search.rundir import BUNDLE, MANIFEST, RunDir
from search.storage import exists, fetch_dir, is_uri

EXPORT_KIND = "export"
# what an export held before folders carried their marker: such a folder is an earlier export
LEGACY_EXPORT = frozenset({"weights.pt", "config.json", "label_stats.json", "selection.json"})


def _outside_runs(out: Path) -> None:
    """An export goes outside every run directory, or into a run's own ``export/`` folder: never
    among a run's stages, results or report, where it would take the place of the run's files."""
    resolved = out.expanduser().resolve()
    for folder in resolved.parents:
        if (folder / MANIFEST).is_file() and resolved != folder / "export":
            raise UserError(
                f"--out {out}: lies inside the run directory {folder}; export to {folder / 'export'} "
                "or to a folder outside the run"
            )


def _trial_row(run: RunDir, trial: str) -> dict[str, Any]:
    table = run.results_table("trials")
    if table.empty:
        raise UserError(f"--trial {trial}: {run.location} has no finished trials yet")
    rows = table[table[col.TRIAL_ID] == trial]
    if rows.empty:
        known = ", ".join(sorted(table[col.TRIAL_ID].astype(str)))
        raise UserError(f"--trial {trial}: no such trial in {run.location} (its trials: {known})")
    row = {str(k): v for k, v in rows.iloc[0].to_dict().items()}
    if row[col.STATUS] != "completed" or not isinstance(row.get(col.CHECKPOINT), str):
        raise UserError(f"--trial {trial}: the trial {row[col.STATUS]} and has no model to export")
    return row


def _check_bundle(copy: Path, bundle: str) -> None:
    """The copied bundle loads (an export that psvae.load_model refuses is no export): a damaged
    one is a UserError naming the trial's bundle, and the half-made export is removed."""
    from psvae.export import load_model

    try:
        load_model(copy)
    except UserError as err:
        reason = str(err).replace(str(copy), "").lstrip(": /")
        raise UserError(
            f"{bundle}: damaged ({reason}); nothing was exported; export another trial (--trial, "
            "see psvae status) or run the search again under another --run-id"
        ) from None


def export_run(run_dir: str | Path, out: str | Path, force: bool = False, trial: str | None = None) -> Path:
    """Copy the selected trial's bundle (or ``trial``'s) to ``out`` with ``selection.json``.

    The copy is made in a temporary directory next to ``out`` and renamed into place, so an
    existing export is replaced only with ``force`` and only once the new one is complete.
    """
    out = Path(out)
    run = RunDir.open(run_dir)
    manifest = run.read()
    if out.exists() and not force:
        raise UserError(f"{out}: already exists; choose another --out or pass --force")
    check_replaceable(out, EXPORT_KIND, LEGACY_EXPORT)  # --force replaces an earlier export only
    _outside_runs(out)
    exported: dict[str, Any]
    if trial is None:
        if manifest.selected is None:
            raise UserError(f"{run_dir}: the search has not selected a model yet (status {manifest.status})")
        selected = manifest.selected
        exported = {col.STAGE: selected.stage, col.TRIAL_ID: selected.trial_id, "chosen": selected.chosen}
        recorded = selected.checkpoint
    else:
        row = _trial_row(run, trial)
        recorded = row[col.CHECKPOINT]
        config = json.loads(row[col.CONFIG_JSON])
        exported = {col.STAGE: row[col.STAGE], col.TRIAL_ID: trial, "config": config}
        for key in (col.REUSED_FROM, col.VAL_PIXEL_MSE, col.VAL_LABEL_R2, col.TRAIN_MEAN_ABS_CORR_U):
            value = row.get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                exported[key] = value
    bundle = f"{run.checkpoint(recorded)}/{BUNDLE}"
    if not exists(f"{bundle}/weights.pt"):
        raise UserError(f"{bundle}: the trial's model bundle is missing")
    is_selected = manifest.selected is not None and exported[col.TRIAL_ID] == manifest.selected.trial_id
    with staged_dir(out, kind=EXPORT_KIND, legacy=LEGACY_EXPORT) as staged:
        if is_uri(bundle):
            fetch_dir(bundle, staged)
        else:
            shutil.copytree(bundle, staged, dirs_exist_ok=True)
        _check_bundle(staged, bundle)
        selection = {
            "run_id": manifest.run_id,
            "spec_hash": manifest.spec_hash,
            "selected": None if manifest.selected is None else dataclasses.asdict(manifest.selected),
            "exported": exported | {"is_selected": is_selected},
            "stages": {
                name: {
                    k: v
                    for k, v in record.to_json().items()
                    if k in ("status", "varies", "fixed", "fixes", "decision", "value", "rule", "reused")
                }
                for name, record in manifest.stages.items()
            },
        }
        (staged / "selection.json").write_text(json.dumps(selection, indent=2, sort_keys=True) + "\n")
    return out
