"""``psvae export``: the selected model's bundle plus the evidence for choosing it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from psvae.errors import UserError
from psvae.files import check_replaceable, staged_dir
from search.run import MANIFEST, read_manifest
from search.storage import exists, fetch_dir, is_uri
from search.trainable import BUNDLE

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


def export_run(run_dir: str | Path, out: str | Path, force: bool = False) -> Path:
    """Copy the selected trial's bundle to ``out`` and write ``selection.json`` beside it.

    The copy is made in a temporary directory next to ``out`` and renamed into place, so an
    existing export is replaced only with ``force`` and only once the new one is complete.
    """
    out = Path(out)
    manifest = read_manifest(run_dir)
    selected = manifest.get("selected")
    if not selected:
        raise UserError(f"{run_dir}: the search has not selected a model yet (status {manifest['status']})")
    if out.exists() and not force:
        raise UserError(f"{out}: already exists; choose another --out or pass --force")
    check_replaceable(out, EXPORT_KIND, LEGACY_EXPORT)  # --force replaces an earlier export only
    _outside_runs(out)
    bundle = f"{selected['checkpoint']}/{BUNDLE}"
    if not exists(f"{bundle}/weights.pt"):
        raise UserError(f"{bundle}: the selected trial's model bundle is missing")
    with staged_dir(out, kind=EXPORT_KIND, legacy=LEGACY_EXPORT) as staged:
        if is_uri(bundle):
            fetch_dir(bundle, staged)
        else:
            shutil.copytree(bundle, staged, dirs_exist_ok=True)
        selection = {
            "run_id": manifest["run_id"],
            "spec_hash": manifest["spec_hash"],
            "selected": selected,
            "stages": {
                name: {
                    k: record.get(k)
                    for k in ("status", "varies", "fixed", "fixes", "decision", "value", "rule")
                }
                for name, record in manifest["stages"].items()
            },
        }
        (staged / "selection.json").write_text(json.dumps(selection, indent=2, sort_keys=True) + "\n")
    return out
