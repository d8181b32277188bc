"""Input paths checked once, with a message that says what is wrong with them.

``Path.exists()`` is False for a missing file, a dangling symbolic link and a symbolic link
loop alike, and ``Path.resolve()`` raises RuntimeError on a loop; :func:`missing_reason` and
:func:`resolve` tell the three apart so a user sees which it is.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from psvae.errors import UserError


def missing_reason(path: str | Path) -> str | None:
    """Why ``path`` cannot be opened: "no such file", "is a symbolic link loop", "is a symbolic
    link to X, which does not exist", or None when it exists."""
    p = Path(path)
    try:
        os.stat(p)
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symbolic link loop"
        if p.is_symlink():
            return f"is a symbolic link to {os.readlink(p)}, which does not exist"
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return "no such file"
        return f"cannot be opened ({err.strerror or err})"


def resolve(path: str | Path, error: type[UserError] = UserError) -> Path:
    """The absolute, symlink-free form of an existing ``path``; raises ``error`` naming it otherwise."""
    reason = missing_reason(path)
    if reason is not None:
        raise error(f"{path}: {reason}")
    try:
        return Path(path).resolve(strict=True)
    except (OSError, RuntimeError) as err:  # changed under our feet
        raise error(f"{path}: cannot be resolved ({err})") from None
