"""Watching a search from its terminal.

On a terminal: a stage header and one refreshed line per running trial (stage, the values it
varies, epoch i/E, its last validation loss, an ETA), drawn with ``rich``; the driver's own
lines (decisions, the run directory, the dashboard) are printed above it. When the output is
not a terminal (a log file, a CI job, ``psvae submit``): one plain line per event instead.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from results_schema import columns as col
from search.rundir import FINAL
from search.scheduler import HPARAMS

SHORT = {key: name for name, key in HPARAMS.items()}


def values_text(values: dict[str, Any]) -> str:
    """``alpha=100, U=2`` for a trial's varied keys."""
    parts = []
    for key, value in values.items():
        name = {"model.n_unsupervised": "U"}.get(key, SHORT.get(key, key))
        parts.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
    return ", ".join(parts)


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


@dataclass
class TrialLine:
    trial_id: str
    stage: str
    values: dict[str, Any]
    epochs: int
    started: float = field(default_factory=time.monotonic)
    epoch: int = 0  # epochs done
    val_loss: float | None = None
    seconds_per_epoch: float | None = None

    @property
    def eta(self) -> float | None:
        if self.seconds_per_epoch is None:
            return None
        return (self.epochs - self.epoch) * self.seconds_per_epoch

    def text(self) -> str:
        loss = "-" if self.val_loss is None else f"{self.val_loss:.4g}"
        return (
            f"{self.stage:<10} {self.trial_id:<14} {values_text(self.values):<28} "
            f"epoch {self.epoch}/{self.epochs:<4} val loss {loss:<10} ETA {eta_text(self.eta)}"
        )


class Display:
    """An observer of the search (see ``search.scheduler.Observer``) that draws it."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.lines: dict[str, TrialLine] = {}
        self.header = ""
        self._live: Any = None
        self._console: Any = None
        if self.tty:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False, soft_wrap=True)

    # -- output ---------------------------------------------------------------------------------
    def show(self, line: str) -> None:
        """One line of the driver's, above the live lines on a terminal."""
        if self._console is not None:
            self._console.print(line, markup=False)
        else:
            print(line, file=self.stream, flush=True)

    def _event(self, line: str) -> None:
        if not self.tty:
            print(line, file=self.stream, flush=True)

    def _render(self) -> Any:
        from rich.text import Text

        lines = [self.header, *(t.text() for t in self.lines.values())]
        return Text("\n".join(line for line in lines if line))

    def _refresh(self) -> None:
        if not self.tty:
            return
        if self._live is None:
            from rich.live import Live

            self._live = Live(self._render(), console=self._console, refresh_per_second=2, transient=True)
            self._live.start()
        else:
            self._live.update(self._render())

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    # -- the observer ---------------------------------------------------------------------------
    def stage_started(self, stage: Any, n_trials: int, n_reused: int, fixed: dict[str, Any]) -> None:
        reused = f", {n_reused} reused" if n_reused else ""
        self.header = (
            f"── stage {stage.name}: {n_trials} trials{reused}, varying {' x '.join(stage.varied_keys())}"
        )
        self._refresh()

    def trial_started(self, trial_id: str, stage: str, values: dict[str, Any], epochs: int) -> None:
        self.lines[trial_id] = TrialLine(trial_id, stage, values, epochs)
        self._event(f"trial {trial_id} ({stage}: {values_text(values)}) queued, {epochs} epochs")
        self._refresh()

    def trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        line = self.lines.get(trial_id)
        if line is None or result.get(FINAL) or result.get("done") or col.EPOCH not in result:
            return
        line.epoch = int(result[col.EPOCH]) + 1
        line.val_loss = result.get(col.VAL_LOSS)
        elapsed = result.get("time_since_restore") or result.get("time_total_s")
        iterations = result.get("iterations_since_restore") or result.get("training_iteration")
        if elapsed and iterations:
            line.seconds_per_epoch = float(elapsed) / float(iterations)
        self._event(line.text())
        self._refresh()

    def trial_ended(self, trial_id: str, row: dict[str, Any]) -> None:
        line = self.lines.pop(trial_id, None)
        what = row[col.STATUS] + (f" ({row[col.ERROR]})" if row.get(col.ERROR) else "")
        # a trial Tune restored ended before this driver saw it start: its stage alone
        values = f": {values_text(line.values)}" if line else ""
        self._event(f"trial {trial_id} ({row[col.STAGE]}{values}) {what}")
        self._refresh()

    def stage_decided(self, stage: str, record: Any, manifest: Any) -> None:
        self.header = ""
        self._refresh()

    def search_ended(self, manifest: Any) -> None:
        self.close()
