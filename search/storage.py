"""Where runs live: a local folder, or an object store (``s3://``, ``gs://``).

Tune writes each stage's experiment (trial results and checkpoints) straight to the storage,
local or not. The driver's own files (``manifest.json``, ``results/``, the Optuna journal) are
written in a local folder first, with the same atomic writes as always, and each is uploaded
as soon as it is complete; opening a run downloads them again, so any machine can resume it.
For an object store that local folder is a mirror under ``~/.cache/psvae/storage/``.

Object stores are reached through pyarrow's file systems, which take their credentials and
endpoints from the usual places (``AWS_*`` variables and files, Google's application default
credentials; ``AWS_ENDPOINT_URL`` for an S3-compatible server).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from psvae.errors import UserError

REMOTE_SCHEMES = ("s3", "gs")
MAX_RUN_ID = 128
RUN_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_RUN_ID - 1}}}")
"""A run id: letters, digits, '_', '.', '-', starting with a letter or digit, at most 128 long.
This excludes '/', '..', absolute paths, empty names and control characters by construction."""
# what the driver writes itself, relative to a run directory; Tune's experiments are not here
DRIVER_FILES = ("manifest.json", "results", "optuna.journal")
REMOTE_FILE = ".remote"  # in a mirror of a run on an object store: the run's URI


def check_run_id(run_id: object, source: str = "--run-id") -> str:
    """``run_id`` if it is one plain name inside the storage, else a UserError naming ``source``
    and the value. A run id from a command line, a folder name or a manifest read back from
    storage (which others may write to, on a shared bucket) is untrusted: never a path."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        text = run_id if isinstance(run_id, str) and len(run_id) <= 80 else str(run_id)[:80] + "..."
        raise UserError(
            f"{source} = {text!r}: a run id is one plain name (letters, digits, '_', '.', '-', starting "
            f"with a letter or digit, at most {MAX_RUN_ID} characters), never a path"
        )
    return run_id


def is_uri(location: str | os.PathLike[str]) -> bool:
    return isinstance(location, str) and urlparse(location).scheme in REMOTE_SCHEMES


def filesystem(uri: str) -> tuple[Any, str]:
    """pyarrow's file system for ``uri`` and the path inside it."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as err:  # pyarrow raises several kinds for bad URIs and missing credentials
        raise UserError(f"{uri}: cannot open this storage ({' '.join(str(err).split())})") from None


def exists(location: str | Path) -> bool:
    import pyarrow.fs as pafs

    if not is_uri(location):
        return Path(location).exists()
    fs, path = filesystem(str(location))
    return bool(fs.get_file_info(path).type != pafs.FileType.NotFound)


def read_text(location: str | Path) -> str:
    if not is_uri(location):
        return Path(location).read_text()
    fs, path = filesystem(str(location))
    with fs.open_input_stream(path) as f:
        return bytes(f.read()).decode()


def list_files(location: str | Path, name: str) -> list[str]:
    """The files called ``name`` anywhere below ``location``, as locations of the same kind."""
    import pyarrow.fs as pafs

    if not is_uri(location):
        return sorted(str(p) for p in Path(location).rglob(name))
    fs, path = filesystem(str(location))
    scheme = urlparse(str(location)).scheme
    found = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted(
        f"{scheme}://{f.path}" for f in found if f.type == pafs.FileType.File and f.base_name == name
    )


def _download(location: str, dest: Path) -> None:
    """Copy the file or folder at ``location`` (a URI) to ``dest``."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    dest.parent.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(dest), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())


def fetch_dir(location: str, dest: Path) -> Path:
    """A local copy of the folder at ``location`` (a URI), made in ``dest``."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        raise UserError(f"{location}: no such folder")
    dest.mkdir(parents=True, exist_ok=True)
    _download(location, dest)
    return dest


def split_run(location: str) -> tuple[str, str]:
    """``<storage>/<run_id>`` → (storage, run_id), for a local path or a URI."""
    location = location.rstrip("/")
    if is_uri(location):
        root, _, run_id = location.rpartition("/")
        if "://" not in root:
            raise UserError(f"{location}: expected <storage>/<run id>, e.g. s3://bucket/runs/my-run")
        return root, check_run_id(run_id, f"{location}: the run id")
    path = Path(location).expanduser().resolve()
    return str(path.parent), check_run_id(path.name, f"{location}: the run folder's name")


@dataclass(frozen=True)
class Storage:
    """``root``: the storage as given (an absolute local path or a URI). ``local``: the folder on
    this machine that holds the driver's files: ``root`` itself, or its mirror."""

    root: str
    local: Path

    @property
    def remote(self) -> bool:
        return is_uri(self.root)

    def run_location(self, run_id: str) -> str:
        """The run directory as users name it: a path, or a URI."""
        check_run_id(run_id)
        return f"{self.root}/{run_id}" if self.remote else str(self.local / run_id)

    def location(self, fs_path: str) -> str:
        """A path inside the storage's file system (what Tune reports) as a user-facing location."""
        return f"{urlparse(self.root).scheme}://{fs_path}" if self.remote else fs_path

    def pull(self, run_id: str) -> None:
        """Replace the mirror's copy of the run's driver files with the storage's."""
        if not self.remote:
            return
        local = self.local / check_run_id(run_id)
        # the mirror is this project's cache: one folder per run, directly inside it
        assert local.parent == self.local, local
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir(parents=True)
        for name in DRIVER_FILES:
            source = f"{self.root}/{run_id}/{name}"
            if exists(source):
                _download(source, local / name)
        # the mirror says where its run lives, so that what reads the mirror alone (the report,
        # rebuilt in a child process) finds the run's checkpoints in the bucket
        (local / REMOTE_FILE).write_text(f"{self.root}/{run_id}\n")

    def push(self, run_id: str, relative: str) -> None:
        """Upload one finished file or folder of the run's driver files."""
        if not self.remote:
            return
        import pyarrow.fs as pafs

        source = self.local / check_run_id(run_id) / relative
        if not source.exists():
            return
        fs, path = filesystem(f"{self.root}/{run_id}/{relative}")
        if source.is_dir():
            fs.create_dir(path, recursive=True)
        pafs.copy_files(
            str(source), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
        )


def check_shared_storage(storage: str, nodes: int) -> None:
    """A local path is only seen by the machine it is on: trials on other nodes would write
    their checkpoints where the driver never finds them."""
    if nodes > 1 and not is_uri(storage):
        raise UserError(
            f"--storage {storage}: the cluster has {nodes} nodes and a local path is not shared "
            "between them; use s3://..., gs://... or a path mounted on every node"
        )


def mirror_root(uri: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "psvae" / "storage" / hashlib.sha256(uri.encode()).hexdigest()[:16]


def resolve_storage(storage: str | None) -> Storage:
    """Check the storage before anything starts: a writable local folder, or a reachable
    object-store URI (``s3://bucket/prefix``, ``gs://bucket/prefix``)."""
    if storage and "://" in storage and not storage.startswith("file://"):
        if not is_uri(storage):
            raise UserError(
                f"--storage {storage}: unsupported scheme (use a local path, file://, s3:// or gs://)"
            )
        import pyarrow.fs as pafs

        uri = storage.rstrip("/")
        fs, path = filesystem(uri)
        bucket = path.split("/", 1)[0]
        try:
            found = fs.get_file_info(bucket).type != pafs.FileType.NotFound
        except OSError as err:
            raise UserError(f"--storage {storage}: cannot reach it ({' '.join(str(err).split())})") from None
        if not found:
            raise UserError(f"--storage {storage}: the bucket {bucket!r} does not exist or is not visible")
        return Storage(uri, mirror_root(uri))
    folder = Path((storage or "runs").removeprefix("file://")).expanduser().resolve()
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--storage {storage or folder}: {probe} is not a writable directory")
    return Storage(str(folder), folder)
