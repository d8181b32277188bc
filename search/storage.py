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

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from psvae.errors import UserError
from psvae.files import move_into_place, temp_beside

REMOTE_SCHEMES = ("s3", "gs")
MAX_RUN_ID = 128
RUN_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_RUN_ID - 1}}}")
"""A run id: letters, digits, '_', '.', '-', starting with a letter or digit, at most 128 long.
This excludes '/', '..', absolute paths, empty names and control characters by construction."""
# what the driver writes itself, relative to a run directory; Tune's experiments are not here
DRIVER_FILES = ("manifest.json", "results", "optuna.journal", "search.log")  # each driver adds to the log
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

    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as err:  # pyarrow raises several kinds for bad URIs and missing credentials
        raise UserError(f"{uri}: cannot open this storage ({' '.join(str(err).split())})") from None


def exists(location: str | Path) -> bool:

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

    fs, path = filesystem(location)
    dest.parent.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(dest), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())


def fetch_dir(location: str, dest: Path) -> Path:
    """A local copy of the folder at ``location`` (a URI), made in ``dest``."""

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
        shutil.rmtree(local, ignore_errors=True)  # ours: the run's copy in our mirror, checked above
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

        source = self.local / check_run_id(run_id) / relative
        if not source.exists():
            return
        fs, path = filesystem(f"{self.root}/{run_id}/{relative}")
        if source.is_dir():
            fs.create_dir(path, recursive=True)
        pafs.copy_files(
            str(source), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
        )


# -- disk-full faults ----------------------------------------------------------------------
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "[Errno 28]", "[Errno 122]")


def disk_full(err: BaseException | str | None) -> bool:
    """True when ``err`` (an exception, its chain, or the text of a trial's error) is a full
    disk or an exceeded quota."""
    seen: set[int] = set()
    while isinstance(err, BaseException) and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            return True
        if any(text in str(err) for text in DISK_FULL_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return isinstance(err, str) and any(text in err for text in DISK_FULL_TEXT)


def free_bytes(path: str | Path) -> int | None:
    """The bytes free on the file system holding ``path`` (its nearest existing folder)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


class Reserve:
    """Room kept on a local storage while a driver runs: a file of ours (``.psvae-reserve`` in
    the run directory), given back when a write meets a full disk, so that Tune's last save of
    its experiment state and the driver's own files still fit. Taken again by the next driver;
    removed when the driver ends."""

    NAME = ".psvae-reserve"
    SIZE = 16 << 20

    def __init__(self, folder: Path, size: int = SIZE) -> None:
        self.path = folder / self.NAME
        self.size = size

    def take(self) -> None:
        """Allocate the room (OSError, e.g. a disk full already, if it cannot be had)."""
        if self.path.is_file() and self.path.stat().st_size >= self.size:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            try:
                os.posix_fallocate(fd, 0, self.size)
            except OSError as err:
                if err.errno in DISK_FULL:
                    raise
                chunk = b"\0" * (1 << 20)  # a file system without fallocate (some NFS servers)
                for _ in range(self.size // len(chunk)):
                    os.write(fd, chunk)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                self.path.unlink()  # ours: the room this driver reserved (NAME, in the run)
            raise
        os.close(fd)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()  # ours: the room this driver reserved (NAME, in the run)


# -- Tune's writes on a local storage ---------------------------------------------------------
class _AtomicFile:
    """A file written beside its place (:func:`psvae.files.temp_beside`) and moved into it on a
    clean close (:func:`psvae.files.move_into_place`): a reader, or a restore after a crash or a
    full disk, sees the old file or the new one, never a part. The stream form of
    :func:`psvae.files.atomic_path`, for Tune, which opens, writes and closes files itself."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.tmp = temp_beside(self.path)
        self._file: Any = open(self.tmp, "xb")  # noqa: SIM115 - closed by close() or _abandon()
        self.closed = False

    def write(self, data: Any) -> int:
        try:
            return int(self._file.write(data))
        except BaseException:
            self._fail()
            raise

    def flush(self) -> None:
        try:
            self._file.flush()
        except BaseException:
            self._fail()
            raise

    def _fail(self) -> None:
        """A write failed (a full disk): the part written goes at once, the old file stays."""
        self.closed = True
        self._abandon()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return int(self._file.tell())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._file.close()
            move_into_place(self.tmp, self.path)
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink(missing_ok=True)  # ours: this writer's temporary file

    def __del__(self) -> None:  # dropped without a close (a copy that failed while reading)
        if not self.closed:
            self.closed = True
            self._abandon()


class AtomicLocalHandler(pafs.FileSystemHandler):
    """pyarrow's local file system for Tune, except that every file is written whole or not at
    all (see :class:`_AtomicFile`). Tune rewrites its experiment state, its searcher's state and
    each trial's result files in place; a full disk used to leave them truncated, and a run
    that Tune could not restore."""

    def __init__(self) -> None:
        self._fs = pafs.LocalFileSystem()

    def __reduce__(self) -> tuple[Any, ...]:  # sent to every trial's worker
        return (AtomicLocalHandler, ())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AtomicLocalHandler)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(AtomicLocalHandler)

    def get_type_name(self) -> str:
        return "psvae-atomic-local"

    def normalize_path(self, path: str) -> str:
        return str(self._fs.normalize_path(path))

    def get_file_info(self, paths: list[str]) -> list[Any]:
        return list(self._fs.get_file_info(paths))

    def get_file_info_selector(self, selector: Any) -> list[Any]:
        return list(self._fs.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        self._fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._fs.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("psvae never empties a file system's root")

    def delete_file(self, path: str) -> None:
        self._fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        target = _AtomicFile(dest)
        with open(src, "rb") as f:
            shutil.copyfileobj(f, target)
        target.close()  # an error above leaves the file to __del__, which removes it

    def open_input_stream(self, path: str) -> Any:
        return self._fs.open_input_stream(path)

    def open_input_file(self, path: str) -> Any:
        return self._fs.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        import pyarrow as pa

        return pa.PythonFile(_AtomicFile(path), mode="w")

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        return self._fs.open_append_stream(path)


def tune_filesystem(location: str) -> Any:
    """The file system Tune writes the experiment at ``location`` with: for a local path one
    whose files are written whole or not at all; None (Tune's own choice) for an object store,
    whose uploads are whole already."""
    if is_uri(location):
        return None
    return pafs.PyFileSystem(AtomicLocalHandler())


# -- is the storage one place for the whole cluster? -------------------------------------------
PROBE_PREFIX = ".psvae-storage-probe-"
PROBE_TIMEOUT_S = 120.0


def _probe_node(marker: str, token: str, node_id: str) -> tuple[str, str]:
    """Run on one node: can it read the driver's marker, and write a reply beside it?"""
    import socket

    host = socket.gethostname()
    try:
        seen = Path(marker).read_text()
    except OSError as err:
        return host, f"cannot read it ({err.strerror or type(err).__name__})"
    if seen != token:
        return host, "reads another file there"
    try:
        Path(f"{marker}.{node_id}").write_text(token)
    except OSError as err:
        return host, f"cannot write there ({err.strerror or type(err).__name__})"
    return host, ""


def check_shared_storage(storage: Storage, folder: Path, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Check that every alive node of the Ray cluster this process is connected to sees
    ``folder`` (a run directory in ``storage``) as this process does: the driver writes a marker
    with unique content there, and a small task pinned to each node reads it and writes a reply
    beside it, which the driver reads back. A mounted shared file system (EFS, Filestore, NFS, a
    ReadWriteMany volume) passes; a folder that exists on this machine alone is refused, naming
    the nodes that cannot see it. Object stores are one place by construction."""
    if storage.remote:
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    token = secrets.token_hex(16)
    marker = folder / f"{PROBE_PREFIX}{token[:12]}"
    marker.write_text(token)
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(_probe_node)
        refs = {
            n["NodeID"]: probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(marker), token, n["NodeID"])
            for n in nodes
        }
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        blind = []
        for node in nodes:
            node_id, ref = node["NodeID"], refs[node["NodeID"]]
            host, address = node.get("NodeManagerHostname", "?"), node.get("NodeManagerAddress", "?")
            name = f"{host} ({address}, node {node_id[:8]})"
            if ref not in ready:
                blind.append(f"{name}: did not answer within {timeout_s:.0f} s")
                continue
            try:
                _host, problem = ray.get(ref)
            except Exception as err:  # the task could not run there (e.g. psvae not installed)
                problem = f"the check could not run there ({type(err).__name__})"
            if not problem and not _reply_seen(marker, node_id, token):
                problem = "what it writes there does not reach this machine"
            if problem:
                blind.append(f"{name}: {problem}")
    finally:
        for path in [marker, *folder.glob(f"{marker.name}.*")]:  # our marker and the replies
            with contextlib.suppress(OSError):
                path.unlink()  # ours: the probe's marker and the nodes' replies to it
    if blind:
        raise UserError(
            f"--storage {storage.root}: not one shared folder for the whole cluster; "
            f"{len(blind)} of {len(nodes)} nodes cannot see {folder} as this driver does "
            f"({'; '.join(blind)}); mount the same file system at {storage.root} on every node "
            "(EFS, Filestore, NFS, a ReadWriteMany volume) or use s3://... or gs://..."
        )


def _reply_seen(marker: Path, node_id: str, token: str) -> bool:
    try:
        return Path(f"{marker}.{node_id}").read_text() == token
    except OSError:
        return False


def check_submit_storage(storage: str) -> None:
    """What ``psvae submit`` can check before the job runs (it cannot run tasks on the cluster's
    nodes yet; the job's driver checks that every node sees the storage): a path must be
    absolute, since the job runs in a temporary working folder of the cluster's."""
    if is_uri(storage):
        return
    path = storage.removeprefix("file://")
    if not path.startswith("/"):
        raise UserError(
            f"--storage {storage}: give the path as the cluster's nodes see it, absolute (e.g. "
            "/mnt/shared/runs), or s3://... or gs://...; a relative path would land in the job's "
            "temporary working folder"
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
