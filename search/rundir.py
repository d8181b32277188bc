"""A search run's directory: its name and what may be done inside it. No Ray here.

A run lives at ``<storage>/<run id>``. The run id comes from the command line, from a
manifest read back from storage (which others may write to, on a shared bucket) or from a
folder name, so it is untrusted: it must be one plain name inside the storage, never a path.
"""

from __future__ import annotations

import re

from psvae.errors import UserError

MAX_RUN_ID = 128
RUN_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_RUN_ID - 1}}}")
"""A run id: letters, digits, '_', '.', '-', starting with a letter or digit, at most 128 long.
This excludes '/', '..', absolute paths, empty names and control characters by construction."""


def check_run_id(run_id: object, source: str = "--run-id") -> str:
    """``run_id`` if it is one plain name, else a UserError naming ``source`` and the value."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        shown = (
            repr(run_id) if not isinstance(run_id, str) or len(run_id) <= 80 else repr(run_id[:80] + "...")
        )
        raise UserError(
            f"{source} = {shown}: a run id is one plain name (letters, digits, '_', '.', '-', starting "
            f"with a letter or digit, at most {MAX_RUN_ID} characters), never a path"
        )
    return run_id
