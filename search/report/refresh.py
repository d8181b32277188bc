"""Keeping a running search's report fresh, off the critical path.

The report is rebuilt by ``psvae report`` in a child process at low CPU priority (nice 10), so
the driver's Tune loop never waits for it and trials keep their CPU: after every stage decision,
after a trial ends (at most once a minute) and at least once a minute while trials run. The last
rebuild, when the search ends, is waited for (one still running from before is stopped first).
A report that cannot be written is one warning in the search's log, never a reason to stop the
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
from typing import Any

from search.rundir import REPORT, RunDir

EVERY_S = 60.0  # the longest a running search's report is out of date
NICE = 10


class ReportRefresher:
    """An observer of the search (``search.scheduler.Observer``) that rebuilds its report."""

    def __init__(self, run: RunDir, log: Any = None, every_s: float = EVERY_S) -> None:
        self.run = run
        self.log = log or (lambda line: print(line, file=sys.stderr))
        self.every_s = every_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._wanted = False
        self._last = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="report-refresher", daemon=True)
        self._thread.start()

    # -- the child process ----------------------------------------------------------------------
    def _start(self, nice: int = NICE) -> None:
        self._wanted = False
        self._last = time.monotonic()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "search.cli", "report", str(self.run.local)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=(lambda: os.nice(nice)) if nice else None,
        )

    def _reap(self) -> bool:
        """True when no rebuild is running (the last one's outcome handled)."""
        proc = self._proc
        if proc is None:
            return True
        if proc.poll() is None:
            return False
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        self._proc = None
        if proc.returncode != 0:
            last = err.splitlines()[-1] if err else f"exit code {proc.returncode}"
            self.log(f"warning: the report in {self.run.report} was not refreshed: {last}")
        else:
            with contextlib.suppress(Exception):  # an upload that fails is retried next time
                self.run.push(REPORT)
        return True

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                if not self._reap():
                    continue
                if self._wanted or time.monotonic() - self._last > self.every_s:
                    self._start()

    def request(self) -> None:
        with self._lock:
            self._wanted = True

    def close(self) -> None:
        """Stop refreshing; one last rebuild of the final state, waited for. A rebuild still
        running began before the end, so it is stopped rather than waited for: Ctrl-C (SIGINT)
        to our own child, whose staged report folder is removed as on any interruption. The last
        rebuild runs at the driver's priority: the search waits for it."""
        self._stop.set()
        self._thread.join()
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc is not None:
                if proc.stderr:
                    proc.stderr.close()
                self._proc = None
            self._start(nice=0)
            assert self._proc is not None
            self._proc.wait()
            self._reap()

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
        pass  # close() makes the last rebuild
