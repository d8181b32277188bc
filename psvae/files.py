"""Writing result files so that a reader never sees half of one."""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
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


TEMP_MARK = ".psvae-tmp-"
"""In the name of every temporary file the project writes beside its target (tests look for
leftovers by it)."""


def temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh name in ``path``'s folder for a file that is to become ``path``: hidden (Parquet
    dataset readers skip names starting with "."), unique to this process and call (two writers
    never share one), ending in ``suffix`` (``np.savez`` adds ".npz" to a name without it).
    Nothing is created."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def move_into_place(tmp: Path, path: Path) -> None:
    """Flush the written file ``tmp`` to disk, then rename it to ``path`` (atomic: both are in
    one folder) and flush the folder entry where the platform allows."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # not possible on every platform or file system
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """The one way a file is written whole: a temporary path beside ``path`` (not yet created)
    for any writer (text, ``torch.save``, h5py, pyarrow, ...) to write to. When the block ends
    without an error the file is flushed and renamed into place, so a reader, or a run restored
    after a crash or a full disk, sees the old file or the new one, never a part; on an error
    the temporary file is removed and ``path`` is left as it was. Checks of whether ``path``
    may be replaced at all (:func:`check_replaceable`) belong to the caller, before or inside
    the block."""
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
        move_into_place(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # ours: a unique name; already gone once it is in place


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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
