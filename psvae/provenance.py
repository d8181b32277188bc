"""Where a result came from: the package version, the source commit and the data files.

    collect(["session1.h5"]) -> {"psvae_version": "0.1.0", "git_commit": "3f2c...", "git_dirty": False,
                                 "data": [{"path": "/abs/session1.h5", "size": 123, "sha256": "..."}]}

The version has one source, the installed distribution's metadata (``pyproject.toml``). The
commit is that of the source tree this package was imported from, when that tree is a git
checkout; anything else (an installed wheel, no git, a tree inside someone else's repository)
gives None, never an error. Data files are hashed in chunks, so a file of any size is read once
without being held in memory.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

DISTRIBUTION = "psvae-tune"
CHUNK = 1 << 20  # bytes read at a time when hashing


def package_version() -> str:
    """The installed version of psvae-tune (``0+unknown`` when it is imported uninstalled)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def source_root() -> Path:
    """The folder that holds the ``psvae`` package: the repository root in a checkout."""
    return Path(__file__).resolve().parents[1]


def _git(root: Path, *args: str) -> str | None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # no redirected repository
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, env=env, check=False
        )
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return done.stdout if done.returncode == 0 else None


def git_commit(root: Path | None = None) -> str | None:
    """The commit checked out in ``root`` (default: this source tree), when ``root`` is the top
    of a git work tree; None otherwise."""
    root = (root or source_root()).resolve()
    out = _git(root, "rev-parse", "--show-toplevel", "HEAD")
    lines = out.split() if out else []
    if len(lines) != 2 or Path(lines[0]).resolve() != root:
        return None
    return lines[1]


def git_dirty(root: Path | None = None) -> bool | None:
    """Whether tracked files of the checkout differ from its commit (None when not a checkout)."""
    root = (root or source_root()).resolve()
    if git_commit(root) is None:
        return None
    out = _git(root, "status", "--porcelain", "--untracked-files=no")
    return None if out is None else bool(out.strip())


def file_record(path: str | Path) -> dict[str, Any]:
    """``{"path", "size", "sha256"}`` of one file, hashed in chunks of 1 MiB."""
    p = Path(path).resolve()
    digest = hashlib.sha256()
    size = 0
    with open(p, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"path": str(p), "size": size, "sha256": digest.hexdigest()}


def collect(data_paths: Sequence[str | Path] = ()) -> dict[str, Any]:
    """The provenance record of a result made from ``data_paths`` (see the module docstring)."""
    return {
        "psvae_version": package_version(),
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "data": [file_record(p) for p in data_paths],
    }


def version_line() -> str:
    """``psvae 0.1.0 (git 3f2c9a1b0d4e, modified)``, as ``psvae --version`` prints it."""
    commit = git_commit()
    if commit is None:
        return f"psvae {package_version()}"
    return f"psvae {package_version()} (git {commit[:12]}{', modified' if git_dirty() else ''})"
