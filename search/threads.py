"""Idle CPUs at a stage's end go to the stage's last trials, as threads. No Ray here.

Every trial asks Ray for the same CPUs (``cpus_per_trial``), so the worker process that ran one
trial runs the next, of any stage: a trial that asked for more would need a fresh worker (python,
ray.tune and torch started anew, about 5 s here), and the next stage's trials fresh ones again.
Instead, once a stage has handed out its last trial, the trials still running share the slots
the finished ones left: the driver writes their thread counts to ``RUN/threads.json`` and each
trial's trainer looks at it between batches (``psvae.trainer.Trainer.thread_budget``). E.g. 3
trials on 2 slots: two run with one thread each; the third starts when the first ends and takes
2 threads once the second has ended. Only on a Ray the driver started on this machine, where it
owns every CPU: on a cluster the idle CPU may be on another node, or another job's.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from psvae.files import write_text_atomic

THREADS_FILE = "threads.json"  # in the run's folder: {trial id: threads}


def idle_shares(running: Sequence[str], slots: int, threads: int) -> dict[str, int]:
    """The threads each of a stage's ``running`` trials (in start order) may use once the stage
    has nothing more to hand out: the ``slots`` shared among them, the first ones taking what
    does not divide evenly (3 on 4 slots: 2, 1, 1), each slot ``threads`` threads. Only the
    trials that get more than one slot are listed; the others keep their own count."""
    if slots <= 1 or not running or len(running) >= slots:
        return {}
    each, extra = divmod(slots, len(running))
    shares = {t: (each + (1 if i < extra else 0)) * threads for i, t in enumerate(running)}
    return {t: n for t, n in shares.items() if n > threads}


class HintsFile:
    """The driver's side: ``RUN/threads.json``, rewritten whole when the counts change. It only
    makes trials faster: a write that fails (a full disk) is skipped, never an error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._written: dict[str, int] | None = None

    def write(self, hints: Mapping[str, int]) -> None:
        hints = dict(hints)
        if hints == self._written:
            return
        with contextlib.suppress(OSError):
            write_text_atomic(self.path, json.dumps(hints, sort_keys=True))
            self._written = hints


class TrialHints:
    """A running trial's side: the threads the driver gives ``trial_id`` now, or None (its own
    count). The file is read again only when it was replaced (a new inode, size or time)."""

    def __init__(self, path: str | Path, trial_id: str) -> None:
        self.path = Path(path)
        self.trial_id = trial_id
        self._seen: tuple[int, int, int] | None = None
        self._threads: int | None = None

    def __call__(self) -> int | None:
        try:
            st = os.stat(self.path)
        except OSError:
            self._seen, self._threads = None, None
            return None
        seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        if seen != self._seen:
            self._seen = seen
            try:
                value = json.loads(self.path.read_text()).get(self.trial_id)
            except (OSError, ValueError, AttributeError):
                value = None
            usable = isinstance(value, int) and not isinstance(value, bool) and value > 0
            self._threads = value if usable else None
        return self._threads
