"""A search run from the terminal: the live display, the report kept fresh, an exit code.

Shared by ``psvae search``, ``psvae resume`` and ``psvae demo``.
"""

from __future__ import annotations

import sys
from typing import Any


def search_command(
    spec: Any, run_id: str, storage: str | None, address: str | None, announce: bool = True
) -> int:
    """Run or resume a search and turn its outcome into an exit code: 0 done, 1 a stage had
    no usable trial, 130 interrupted (resumable)."""
    from search.driver import Interrupted, SearchError, run_search
    from search.live import Display
    from search.report.refresh import ReportRefresher
    from search.storage import resolve_storage

    store = resolve_storage(storage)
    run_dir = store.run_location(run_id)
    display = Display()
    try:
        run = run_search(
            spec,
            run_id,
            store,
            address,
            show=display.show,
            observers=[lambda run: display, lambda run: ReportRefresher(run, display.show)],
        )
    except Interrupted as err:
        display.close()
        print(f"psvae: {err}; continue with: psvae resume {run_dir}", file=sys.stderr)
        return 130
    except SearchError as err:
        display.close()
        print(f"psvae: search failed: {err}", file=sys.stderr)
        return 1
    display.close()
    if announce:
        print(
            f"report: {run.report / 'index.html'}\n"
            f"export the selected model with: psvae export {run_dir} --out DIR"
        )
    return 0
