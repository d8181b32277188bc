"""Writing result files so that a reader never sees half of one."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from psvae.errors import UserError

OWNER_FILE = ".psvae-owner"
"""The marker a folder this project built carries: one line naming what the folder is."""


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars turned into Python ones and non-finite floats into None.

    Strict JSON has no NaN or Infinity; None (null) is what every reader can parse.
    """
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, flush it to disk, then rename it into place:
    a crash leaves either the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def owner(folder: Path) -> str | None:
    """What the project built ``folder`` as (``export``, ``report``, ...), or None when the folder
    carries no marker of ours."""
    try:
        return (folder / OWNER_FILE).read_text().strip() or None
    except OSError:
        return None


def check_replaceable(
    target: Path, kind: str, legacy: frozenset[str] = frozenset(), flag: str = "--out"
) -> None:
    """Refuse to replace ``target`` unless the project made it as ``kind``.

    Replaceable: nothing there, an empty folder, a folder whose marker says ``kind``, or (for
    folders written before markers existed) a folder holding nothing but the file names in
    ``legacy``. Anything else, a symbolic link or a file included, is a UserError: a folder of
    the user's is never deleted.
    """
    if target.is_symlink():
        raise UserError(f"{flag} {target}: is a symbolic link; give a folder of its own")
    if not target.exists():
        return
    if not target.is_dir():
        raise UserError(f"{flag} {target}: exists and is not a folder; it is never replaced")
    found = owner(target)
    if found == kind:
        return
    entries = {p.name for p in target.iterdir()}
    if not entries or (legacy and entries <= legacy):
        return
    what = f"a {found} of psvae" if found else "not a psvae " + kind
    raise UserError(
        f"{flag} {target}: exists and is {what}; only an empty folder or an earlier {kind} is "
        "replaced; choose another folder"
    )


@contextmanager
def staged_dir(
    target: Path,
    kind: str,
    mode: int | None = None,
    legacy: frozenset[str] = frozenset(),
    flag: str = "--out",
) -> Iterator[Path]:
    """A temporary folder beside ``target`` to build it in, marked as ``kind``. When the block
    ends without an error the folder takes ``target``'s place (an existing ``target`` is removed
    only after the switch, so a reader sees the old folder or the new one, whole); on an error
    it is removed. An existing ``target`` is replaced only when :func:`check_replaceable`
    allows it, checked before the build and again just before the switch.
    ``mode``: the permissions to give the folder (``mkdtemp`` makes it 0700)."""
    check_replaceable(target, kind, legacy, flag)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staged
        (staged / OWNER_FILE).write_text(kind + "\n")
        if mode is not None:
            staged.chmod(mode)
        check_replaceable(target, kind, legacy, flag)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.rename(target, old / target.name)
        os.rename(staged, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)  # our own temporary folder, holding the checked target
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)  # our own temporary folder
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(jsonable(data), indent=2, sort_keys=True, allow_nan=False) + "\n")
