"""The README's tutorial, its commands verbatim: sample videos and DeepLabCut CSVs, psvae import,
a dry run, a search on a local Ray and an export. The only difference from a user's run is the
schedule: ``configs/cpu.yaml`` in the test's folder is a quick one (two epochs of a narrow
network, two values per stage), so the whole path is checked in a few minutes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from psvae.export import load_model
from tests.conftest import REPO, SMALL_NET, env_for

pytestmark = [pytest.mark.slow, pytest.mark.ray]

HEADING = "## Your own data, from videos to a model"
QUICK = {
    "fit": {
        "model": {"channels": SMALL_NET["model.channels"]},
        "train": {"epochs": 2, "lr": 2.0e-3, "batch_size": 64},
        "loss": {"anneal_epochs": 1},
    },
    "stages": [
        {"name": "alpha", "values": [50, 100]},
        # two epochs are too few for a latent to become active: screen only constant ones
        {"name": "beta", "values": [1, 5], "rule_params": {"min_active_var": 1e-9}},
        {"name": "seeds", "values": [0, 1], "rule_params": {"min_active_var": 1e-9}},
    ],
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 0},
    "dashboard": False,  # the quick demo's tests cover the dashboard
}


def tutorial_commands() -> list[str]:
    """The commands of the README's tutorial: its first indented block after the heading."""
    text = (REPO / "README.md").read_text()
    assert HEADING in text
    lines = text.split(HEADING, 1)[1].splitlines()
    block: list[str] = []
    for line in lines:
        if line.startswith("    "):
            block.append(line.strip())
        elif block and line.strip():
            break
    assert block, "the tutorial has no commands"
    return block


def test_the_readme_tutorial_runs_verbatim(tmp_path):
    commands = tutorial_commands()
    assert [c.split()[1] for c in commands if c.startswith("psvae ")] == [
        "synthetic", "import", "search", "search", "export",
    ]  # fmt: skip
    work = tmp_path / "work"
    (work / "configs").mkdir(parents=True)
    (work / "configs" / "cpu.yaml").write_text(yaml.safe_dump(QUICK))
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray keeps sockets below it
    env = {
        **env_for(tmp_path),
        "RAY_TMPDIR": str(ray_tmp),
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",  # psvae of this environment
    }
    outputs = []
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout)
    synthetic_out, import_out, dry_run, _, export_out = outputs
    assert synthetic_out.count(".mp4") == 2
    assert re.findall(r"wrote \S+session_0[01]\.h5: 1000 frames of 1x64x64", import_out), import_out
    # the dry run planned the search it ran: its stages, a time estimate, and nothing written
    assert all(stage in dry_run for stage in ("alpha", "beta", "seeds")), dry_run
    assert re.search(r"\d+(\.\d+)? ?(s|min|h)\b", dry_run) and "nothing was started" in dry_run, dry_run
    run = work / "runs" / "mine"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["selected"]["stage"] == "seeds"
    assert (run / "report" / "index.html").is_file()
    selection = json.loads((work / "mine-model" / "selection.json").read_text())
    assert selection["selected"] == manifest["selected"]
    model = load_model(work / "mine-model")
    assert tuple(model.label_stats.names) == ("left_x", "right_x", "left_y", "right_y")
    assert "mine-model" in export_out
