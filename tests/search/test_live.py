"""Watching a search from its terminal: refreshed lines per running trial on a terminal (a real
pseudo-terminal around a real search), one plain line per event otherwise."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search.live import Display
from search.spec import StageSpec
from tests.conftest import env_for
from tests.search.conftest import QuickDemo
from tests.search.test_search_ray import write_spec

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_without_a_terminal_every_event_is_one_plain_line() -> None:
    out = io.StringIO()
    display = Display(out, tty=False)
    stage = StageSpec("beta", "loss.beta", (1.0, 5.0), "lowest_correlation")
    display.stage_started(stage, 2, 0, {"loss.alpha": 100.0})
    display.trial_started("t1", "beta", {"loss.beta": 5.0}, 10)
    result = {"epoch": 3, "val_loss": 123.456, "time_since_restore": 8.0, "iterations_since_restore": 4}
    display.trial_result("t1", result)
    display.trial_ended("t1", {"stage": "beta", "status": "diverged", "error": "non-finite loss at epoch 4"})
    display.show("stage beta: chose {'loss.beta': 5.0}")
    lines = out.getvalue().splitlines()
    assert lines[0] == "trial t1 (beta: beta=5) queued, 10 epochs"
    assert "epoch 4/10" in lines[1] and "val loss 123.5" in lines[1] and "ETA 12 s" in lines[1]
    assert lines[2] == "trial t1 (beta: beta=5) diverged (non-finite loss at epoch 4)"
    assert lines[3] == "stage beta: chose {'loss.beta': 5.0}"
    assert not ANSI.search(out.getvalue())


@pytest.mark.ray
def test_the_quick_demo_logged_plain_lines(quick_demo: QuickDemo) -> None:
    """Its output went to a file: no terminal drawing, one line per event."""
    assert not ANSI.search(quick_demo.output)
    assert re.search(r"^trial \S+ \(alpha: alpha=50\) queued, 2 epochs$", quick_demo.output, re.M)
    assert re.search(r"^alpha\s+\S+\s+alpha=1000\s+epoch 2/2\s+val loss \S+\s+ETA", quick_demo.output, re.M)
    assert re.search(r"^stage seeds: chose", quick_demo.output, re.M)
    assert quick_demo.output.index("run directory:") < quick_demo.output.index("stage alpha:")


@pytest.mark.slow
@pytest.mark.ray
def test_on_a_terminal_each_running_trial_has_a_refreshed_line(tmp_path: Path, synthetic_file: Path) -> None:
    spec = write_spec(
        tmp_path, synthetic_file, [{"name": "alpha", "values": [50, 500]}], fit={"train.epochs": 8}
    )
    env = {**env_for(tmp_path), "COLUMNS": "200", "TERM": "xterm"}
    command = [sys.executable, "-m", "search.cli", "search", "--config", str(spec), "--run-id", "live"]
    command += ["--storage", str(tmp_path / "runs")]
    master, slave = pty.openpty()
    proc = subprocess.Popen(command, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed its side
                    break
                if not chunk:
                    break
                screen += chunk
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    assert proc.returncode == 0, screen.decode(errors="replace")[-3000:]
    raw = screen.decode(errors="replace")
    text = ANSI.sub("", raw).replace("\r", "\n")
    assert "\x1b[" in raw  # drawn, not printed: the cursor moves back over the live lines
    assert "── stage alpha: 2 trials, varying loss.alpha" in text
    # the live lines: stage, trial, values, epoch i/E, val loss, ETA
    live = re.findall(r"alpha\s+\S+\s+alpha=(50|500)\s+epoch (\d)/8\s+val loss (\S+)\s+ETA (\S+)", text)
    assert {v for v, *_ in live} == {"50", "500"}, text[-3000:]
    assert any(int(epoch) >= 2 for _, epoch, _, _ in live)
    assert "queued" not in text  # the plain per-event lines are for logs, not the terminal
    assert "stage alpha: chose" in text and "run directory:" in text
