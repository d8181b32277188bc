"""The search's report: one offline HTML page per run (``RUN_DIR/report/index.html``).

build.py    the sections, read from the run directory, and writing the folder
figures.py  the Plotly figures
model.py    what the chosen models compute: label traces, traversals, the movie, images
page.py     the HTML template
"""

from search.report.build import REPORT_DIR, timed_report, write_report

__all__ = ["REPORT_DIR", "timed_report", "write_report"]
