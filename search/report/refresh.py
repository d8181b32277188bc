"""Keeping a running search's report fresh, off the critical path.

The report is rebuilt by one child process, the report worker (``search.report.worker``), at
low CPU priority (nice 10), so the driver's Tune loop never waits for it and trials keep their
CPU: after every stage decision, after a trial ends (at most once a minute) and at least once a
minute while trials run. The worker pays the report's imports once per search. The last rebuild
begins as soon as the plan is over (one still running from before is cancelled first), so it is
written while Tune and Ray wind down, and the search waits only for what is left of it. A
report that cannot be written is one warning in the search's log, never a reason to stop the
search.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

from search.report.worker import BUILD, BUILDING, ERROR, OK
from search.rundir import REPORT, RunDir

EVERY_S = 60.0  # the longest a running search's report is out of date
NICE = 10


class ReportRefresher:
    """An observer of the search (``search.scheduler.Observer``) that rebuilds its report."""

    def __init__(self, run: RunDir, log: Any = None, every_s: float = EVERY_S) -> None:
        self.run = run
        self.log = log or (lambda line: print(line, file=sys.stderr))
        self.every_s = every_s
        self._worker: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._busy = False  # a rebuild asked for, its outcome not read yet
        self._building = False  # the worker said it began one
        self.answers: list[str] = []  # what the worker answered, in order
        self._wanted = False
        self._last = 0.0
        self._final = False  # the last rebuild has been asked for
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="report-refresher", daemon=True)
        self._thread.start()

    # -- the worker -----------------------------------------------------------------------------
    def _ask(self) -> None:
        """Ask the worker for a rebuild (started first if there is none). Lock held."""
        self._wanted = False
        self._last = time.monotonic()
        for _ in range(2):  # a worker that has died is started again, once
            if self._worker is None or self._worker.poll() is not None:
                try:
                    self._spawn()
                except OSError as err:  # no worker (no memory, no process left): one warning
                    self._worker = None
                    self._warn(f"the report worker could not start ({err})")
                    return
            assert self._worker is not None and self._worker.stdin is not None
            try:
                self._worker.stdin.write(f"{BUILD}\n")
                self._worker.stdin.flush()
                self._busy = True
                return
            except OSError:  # its input closed: it died between two requests
                self._worker.wait()

    def _spawn(self) -> None:
        worker = subprocess.Popen(
            [sys.executable, "-m", "search.report.worker", str(self.run.local)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.nice(NICE),
            # one thread: the report's own computing is small (a few frames decoded), and
            # OpenMP threads on CPUs the trials or Ray's shutdown hold spin instead of working
            # (the last rebuild took about 6 CPU-seconds so, against 1.7 alone)
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert worker.stdout is not None
        self._worker = worker
        self._reader = threading.Thread(
            target=self._read, args=(worker, worker.stdout), name="report-answers", daemon=True
        )
        self._reader.start()

    def _read(self, worker: subprocess.Popen[str], answers: IO[str]) -> None:
        """The worker's answers, one a rebuild, until it ends."""
        for line in answers:
            answer = line.strip()
            with self._lock:
                self.answers.append(answer)
                self._building = answer == BUILDING
                self._busy = self._building
            if answer == OK:
                with contextlib.suppress(Exception):  # an upload that fails is retried next time
                    self.run.push(REPORT)
            elif answer.startswith(ERROR):
                self._warn(answer[len(ERROR) :].strip())
        code = worker.wait()
        with self._lock:
            self._busy = self._building = False
        if code != 0:
            err = worker.stderr.read().strip() if worker.stderr else ""
            self._warn(err.splitlines()[-1] if err else f"the report worker ended with exit code {code}")

    def _warn(self, why: str) -> None:
        self.log(f"warning: the report in {self.run.report} was not refreshed: {why}")

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                if self._busy or self._final:
                    continue
                if self._wanted or time.monotonic() - self._last > self.every_s:
                    self._ask()

    def request(self) -> None:
        with self._lock:
            self._wanted = True

    def _begin_last(self) -> None:
        """Stop refreshing and ask for the last rebuild, of the final state, once. A rebuild
        still running began before the end, so it is cancelled rather than waited for: Ctrl-C
        (SIGINT) to our own worker, which removes its staged report folder and goes on to this
        last one. Then the worker's input ends: it exits after it."""
        self._stop.set()
        self._thread.join()
        with self._lock:
            if self._final:
                return
            self._final = True
            if self._building and self._worker is not None and self._worker.poll() is None:
                self._worker.send_signal(signal.SIGINT)
            self._ask()
            if self._worker is not None and self._worker.stdin is not None:
                with contextlib.suppress(OSError):
                    self._worker.stdin.close()

    def close(self) -> None:
        """The last rebuild, asked for now unless the plan's end asked for it, waited for."""
        self._begin_last()
        if self._worker is not None:
            self._worker.wait()
        if self._reader is not None:
            self._reader.join()
        for stream in (self._worker.stdout, self._worker.stderr) if self._worker is not None else ():
            if stream is not None:
                stream.close()

    # -- the observer ---------------------------------------------------------------------------
    def stage_started(self, *args: Any) -> None:
        self.request()

    def trial_started(self, *args: Any) -> None:
        pass

    def trial_result(self, *args: Any) -> None:
        pass

    def trial_ended(self, *args: Any) -> None:
        if time.monotonic() - self._last > self.every_s:
            self.request()

    def stage_decided(self, *args: Any) -> None:
        self.request()

    def search_ended(self, *args: Any) -> None:
        self._begin_last()  # written while Tune and Ray wind down; close() waits for it
