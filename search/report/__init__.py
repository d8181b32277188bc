"""The search's report: one offline HTML page per run (``RUN_DIR/report/index.html``).

build.py    the sections, read from the run directory, and writing the folder
figures.py  the Plotly figures
model.py    what the chosen models compute: label traces, traversals, the movie, images
page.py     the HTML template
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from search.report.build import REPORT_DIR, timed_report, write_report


def __getattr__(name: str) -> Any:
    # on first use: the driver imports the refresher below this package without paying for
    # the report's own imports (PyTorch among them) until a report is built
    if name in __all__:
        from search.report import build

        return getattr(build, name)
    raise AttributeError(f"module 'search.report' has no attribute {name!r}")


__all__ = ["REPORT_DIR", "timed_report", "write_report"]
