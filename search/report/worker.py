"""The report worker of a running search: one child process that rebuilds ``RUN/report/`` on
request, so that the report's imports (PyTorch, Plotly, pandas; about 2 s here) are paid once
per search, not once per rebuild. Started by :class:`search.report.refresh.ReportRefresher`.

    python -m search.report.worker RUN_DIR

Each line ``build`` on its standard input rebuilds the report; each rebuild answers on its
standard output ``building`` when it begins, then one of ``ok``, ``cancelled`` (Ctrl-C, SIGINT,
arrived while it was building: its staged folder is removed and the worker waits for the next
request) or ``error <one line>``. It ends at the end of its input. A SIGINT at any other time,
its own start included, is ignored: it cancels a build only.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

from psvae.errors import UserError

if __name__ == "__main__":  # as early as can be: a Ctrl-C while Python starts must not end it
    signal.signal(signal.SIGINT, signal.SIG_IGN)

BUILD = "build"
BUILDING, OK, CANCELLED, ERROR = "building", "ok", "cancelled", "error"


def serve(run_dir: str) -> int:
    building = False

    def cancel(signum: int, frame: FrameType | None) -> None:
        if building:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, cancel)  # before the report's imports, which take seconds
    from search.report.build import write_report

    for line in sys.stdin:
        if line.strip() != BUILD:
            continue
        try:
            building = True
            print(BUILDING, flush=True)
            write_report(run_dir)
            building = False
            answer = OK
        except KeyboardInterrupt:
            answer = CANCELLED
        except Exception as err:  # any failure is one line for the search's log, never a crash
            what = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
            answer = f"{ERROR} {' '.join(what.split())[:300]}"
        finally:
            building = False
        print(answer, flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m search.report.worker RUN_DIR")
    code = serve(sys.argv[1])
    sys.stdout.flush()
    # its answers are out and the report written whole: the interpreter's teardown (about 1 s
    # with PyTorch and Plotly loaded) would only keep the search waiting for this process
    os._exit(code)
