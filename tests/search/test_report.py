"""The HTML report (``psvae report``), TensorBoard event files and optuna-dashboard.

One quick demo run (a real local Ray, HOME pinned) serves every test of this module; the
in-progress and failed-trial cases are copies of it edited the way the search driver writes
them. The page is checked in headless Chromium (Debian's ``chromium``) from the page itself;
its screenshots are kept under ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from psvae.files import write_json_atomic
from results_schema.columns import (
    LABEL_LEAKAGE_U,
    REUSED_FROM,
    STAGE,
    STATUS,
    TRAIN_MEAN_ABS_CORR_U,
    TRIAL_ID,
    VAL_MU_VAR_U,
)
from search import results, scheduler, selection
from search.cli import main
from search.report import build as report
from search.report import figures as report_figures
from search.report.refresh import ReportRefresher
from search.rundir import OPTUNA_JOURNAL, RunDir
from tests.conftest import trial_folders, wait_for
from tests.search.chromium import Chromium, find_chromium
from tests.search.conftest import QuickDemo

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # the quick demo; the page tests also drive Chromium

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SECTIONS = [
    "summary", "stage-alpha", "stage-beta", "stage-seeds", "curves",
    "labels", "traversals", "movie", "activity", "candidates", "scores", "failures",
]  # fmt: skip
N_LATENTS = 6  # the limbs scene: 4 labels + 2 unsupervised latents
# What the page itself says about its sections, figures and images.
INSPECT = """(() => {
  const drawn = (gd, selector) =>
    [...gd.querySelectorAll(selector)].filter(p => (p.getAttribute("d") || "").length > 2).length;
  return {
    sections: [...document.querySelectorAll("main > section")].map(s => [s.id, s.dataset.state]),
    figures: [...document.querySelectorAll("[data-figure]")].map(gd => ({
      id: gd.id,
      section: gd.closest("section").id,
      traces: (gd._fullData || []).length,
      values: (gd._fullData || []).reduce((n, t) => n + ((t.y && t.y.length) || 0), 0),
      marks: drawn(gd, ".scatterlayer path.js-line") + drawn(gd, ".scatterlayer path.point")
        + drawn(gd, ".boxlayer path.box"),
      width: gd.getBoundingClientRect().width,
    })),
    images: [...document.querySelectorAll("main img")].map(i => i.complete && i.naturalWidth > 0),
    movie: (document.querySelector("img.movie-frame") || {}).src || null,
  };
})()"""


@pytest.fixture(scope="module")
def demo_run(quick_demo: QuickDemo) -> Path:
    """``psvae demo --quick``: the search writes the report itself after every stage."""
    assert "was not refreshed" not in quick_demo.output
    return quick_demo.run_dir


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    executable = find_chromium()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    folder = tmp_path_factory.mktemp("chromium")
    chromium = Chromium(executable, folder / "profile", folder / "chromium.log")
    try:
        yield chromium
    finally:
        chromium.close()


def inspect_page(browser: Chromium, index: Path, screenshot: str) -> dict[str, Any]:
    browser.open(index.as_uri(), "window.reportReady")
    page = browser.evaluate(INSPECT)
    browser.screenshot(ARTIFACTS / screenshot)
    for fig in page["figures"]:
        assert fig["traces"] > 0 and fig["values"] > 0 and fig["marks"] > 0, fig  # data drawn, not empty
        assert fig["width"] > 300, fig
    assert all(page["images"]), "an image of the page did not load"
    return page


def sections_of(index: Path) -> dict[str, tuple[str, str]]:
    """Section id -> (state, inner HTML), from the file."""
    text = index.read_text()
    found = list(re.finditer(r'<section id="([^"]+)" data-state="([^"]+)">', text))
    ends = [m.start() for m in found[1:]] + [text.index("</main>")]
    return {m.group(1): (m.group(2), text[m.end() : end]) for m, end in zip(found, ends, strict=True)}


def copy_run(source: Path, dest: Path, stages: tuple[str, ...]) -> Path:
    """The run's manifest, results and inputs, and the Tune trial folders of ``stages``, with
    the selected trial's checkpoint only (the model the report draws)."""
    dest.mkdir()
    shutil.copy2(source / "manifest.json", dest / "manifest.json")
    for name in ("results", "inputs"):
        shutil.copytree(source / name, dest / name)
    selected = json.loads((source / "manifest.json").read_text())["selected"]["checkpoint"]
    for stage in stages:
        for trial in (source / "tune").glob(f"{stage}-*"):
            keep = "" if not selected.startswith(f"tune/{trial.name}/") else selected.rsplit("/", 1)[1]
            ignore = shutil.ignore_patterns(*(p.name for p in trial.glob("checkpoint_*") if p.name != keep))
            shutil.copytree(trial, dest / "tune" / trial.name, ignore=ignore)
    return dest


# -- the finished quick demo ----------------------------------------------------------------------
@pytest.mark.browser
def test_quick_demo_report_draws_every_section_in_chromium(demo_run: Path, browser: Chromium) -> None:
    index = demo_run / "report" / "index.html"
    assert index.is_file(), "the search did not write its report"
    written, seconds = report.timed_report(demo_run)
    print(f"report of the quick demo written in {seconds:.1f} s")
    assert written == index
    html = index.read_text()
    assert '<script src="plotly.min.js"></script>' in html
    assert not re.search(r'(src|href)="(https?:)?//', html), "the page loads something from the network"
    assert html.count("Plotly.newPlot") == 1  # figures are JSON; plotly.js is not inlined
    assert (demo_run / "report" / "plotly.min.js").stat().st_size > 1_000_000
    assert not list(demo_run.glob(".report*")), "a temporary folder was left behind"

    page = inspect_page(browser, index, "report.png")
    assert page["sections"] == [[s, "done"] for s in SECTIONS]
    # the base frame and its reconstruction, traversal rows and their differences, movie panels
    # (the limbs scene: 4 labels + 2 unsupervised latents), and the same rows for every candidate fit
    n_fits = len(candidate_fits(demo_run))
    assert len(page["images"]) == 2 + 2 * N_LATENTS * 7 + N_LATENTS + n_fits * 2 * N_LATENTS * 7
    by_section = {f["section"] for f in page["figures"]}
    assert {"stage-alpha", "stage-beta", "stage-seeds", "curves", "labels"} <= by_section
    assert len([f for f in page["figures"] if f["section"] == "stage-alpha"]) == 2  # sweep, trade-off
    assert len([f for f in page["figures"] if f["section"] == "curves"]) == 3  # one per stage
    time.sleep(0.6)
    assert browser.evaluate(INSPECT)["movie"] != page["movie"], "the traversal movie does not move"

    traversals = sections_of(index)["traversals"][1]
    # the limbs scene: four labelled limb tips and two unsupervised latents
    for name in ("z_s_left_x", "z_s_left_y", "z_s_right_x", "z_s_right_y", "z_u_0", "z_u_1"):
        assert f"<code>{name}</code>" in traversals
    assert traversals.count('class="strip diff"') == N_LATENTS
    gif = demo_run / "report" / report.MOVIE_GIF
    from PIL import Image

    with Image.open(gif) as movie:
        assert movie.format == "GIF" and movie.n_frames > 10


def tensorboard_hparams(event_file: Path) -> set[str]:
    """The hyperparameter names a TensorBoard event file declares (its HParams session start)."""
    import struct

    from tensorboardX.proto import event_pb2, plugin_hparams_pb2

    names: set[str] = set()
    data = event_file.read_bytes()
    offset = 0
    while offset < len(data):  # TFRecord: length, its crc, the record, its crc
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
        offset += 12 + length + 4
        for value in event.summary.value:
            if value.tag == "_hparams_/session_start_info":
                plugin = plugin_hparams_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                names |= set(plugin.session_start_info.hparams)
    return names


def test_every_trial_writes_tensorboard_events_with_all_six_hyperparameters(demo_run: Path) -> None:
    pytest.importorskip("tensorboardX")
    trials = trial_folders(demo_run)
    assert {t.name.split("-")[0] for t in trials} == {"alpha", "beta", "seeds"}  # one experiment
    for trial in trials:
        events = list(trial.glob("events.out.tfevents.*"))
        assert events, trial
        hparams = set().union(*(tensorboard_hparams(e) for e in events))
        # every trial shows every varied key, whichever stage it belongs to
        names = ("alpha", "beta", "delta", "seed_model", "sigma_x", "n_unsupervised")
        assert {f"hp/{k}" for k in names} <= hparams, (trial.name, sorted(hparams))


# -- a run in progress and a failed trial ---------------------------------------------------------
@pytest.mark.browser
def test_a_run_in_progress_shows_alpha_and_marks_the_rest_pending(
    demo_run: Path, browser: Chromium, tmp_path: Path
) -> None:
    run_dir = copy_run(demo_run, tmp_path / "running", ("alpha", "beta"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    # as the driver leaves it while beta runs: alpha decided, beta started, nothing after it
    manifest["stages"]["beta"] = {"status": "running", "started": manifest["stages"]["beta"]["started"]}
    del manifest["stages"]["seeds"]
    manifest.update(status="running", selected=None)
    manifest.pop("finished")
    write_json_atomic(run_dir / "manifest.json", manifest)
    manifest["stages"]["beta"]["planned"] = 4
    write_json_atomic(run_dir / "manifest.json", manifest)
    for table in ("trials", "epochs"):
        shutil.rmtree(run_dir / "results" / table / "stage-seeds")
    # two of beta's trials have ended (the reused one and one that ran), two run: one epoch each
    beta_rows = pq.read_table(run_dir / "results" / "trials" / "stage-beta").to_pylist()
    kept = [r for r in beta_rows if r["reused_from"]][:1] + [r for r in beta_rows if not r["reused_from"]][:1]
    results.write_stage(run_dir / "results", "trials", "beta", kept)
    for result_file in (run_dir / "tune").glob("beta-*/result.json"):
        if result_file.parent.name.split("-", 1)[1] not in {r["trial_id"] for r in kept}:
            result_file.write_text(result_file.read_text().splitlines()[0] + "\n")
    for trial in (run_dir / "tune").glob("seeds-*"):
        shutil.rmtree(trial)

    index = report.write_report(run_dir)
    sections = sections_of(index)
    assert list(sections) == SECTIONS
    assert sections["stage-alpha"][0] == "done" and sections["stage-alpha"][1].count("data-figure") == 2
    for pending in (
        "stage-beta",
        "stage-seeds",
        "labels",
        "traversals",
        "movie",
        "activity",
        "candidates",
        "scores",
    ):
        assert sections[pending][0] == "pending", pending
    beta = sections["stage-beta"][1]
    assert "running: 3 trial(s) started, 1 finished" in beta  # the reused one never ran
    assert "the trials finished so far" in beta and beta.count("data-figure") == 1  # drawn while it runs
    assert "Reused: 1 trial(s)" in beta
    assert "not started" in sections["stage-seeds"][1]
    assert sections["curves"][1].count("data-figure") == 2  # alpha's curves and beta's so far
    page = inspect_page(browser, index, "report-in-progress.png")
    # activity: the trials finished so far
    assert {f["section"] for f in page["figures"]} == {"stage-alpha", "stage-beta", "curves", "activity"}


def test_a_run_whose_first_stage_is_running_is_all_pending(demo_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(demo_run, tmp_path / "starting", ())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["stages"] = {"alpha": {"status": "running", "started": manifest["created"]}}
    manifest.update(status="running", selected=None)
    manifest.pop("finished")
    write_json_atomic(run_dir / "manifest.json", manifest)
    shutil.rmtree(run_dir / "results")  # nothing is written before a stage has finished

    sections = sections_of(report.write_report(run_dir))
    assert list(sections) == SECTIONS
    assert [state for state, _ in sections.values()] == ["pending"] * 11 + ["done"]  # nothing failed
    assert "running: 0 trial(s) started" in sections["stage-alpha"][1]
    assert "data-figure" not in "".join(body for _, body in sections.values())


def failed_trial_row(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A beta trial whose worker died after one epoch, through the driver's own row builder."""
    trial_dir = next((run_dir / "tune").glob("beta-*"))
    params = json.loads((trial_dir / "params.json").read_text())
    params["set"] = {**params["set"], "loss.beta": 50.0}
    first_report = json.loads((trial_dir / "result.json").read_text().splitlines()[0])
    outcome = scheduler.TrialOutcome(
        trial_id="f41led00",
        config=params,
        metrics=first_report,
        checkpoint=None,
        history=[],
        error="Traceback (most recent call last):\n  ...\nRuntimeError: the worker ran out of memory",
    )
    return scheduler.trial_rows(
        outcome, json.loads((run_dir / "manifest.json").read_text())["run_id"], "beta"
    )


@pytest.mark.browser
def test_a_failed_trial_is_listed_and_the_report_still_renders(
    demo_run: Path, browser: Chromium, tmp_path: Path
) -> None:
    run_dir = copy_run(demo_run, tmp_path / "failed", ("alpha", "beta", "seeds"))
    row, epochs = failed_trial_row(run_dir)
    assert row["status"] == "failed" and epochs == []
    stage_file = run_dir / "results" / "trials" / "stage-beta" / "part-0.parquet"
    rows = [*pq.read_table(stage_file).to_pylist(), row]
    results.write_stage(run_dir / "results", "trials", "beta", rows)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    record = manifest["stages"]["beta"]
    import pandas as pd

    params = record["decision"]["params"]  # the quick plan's, as the search applied them
    decision = selection.select("lowest_correlation", pd.DataFrame(rows), **params).to_dict()
    assert decision["trial_id"] == record["decision"]["trial_id"]  # excluded, so nothing else changes
    record["decision"] = decision | {"checkpoint": record["decision"]["checkpoint"]}
    write_json_atomic(run_dir / "manifest.json", manifest)
    (run_dir / "notes.txt").write_text("mine")
    shutil.copytree(demo_run / "report", run_dir / "report")  # an earlier report of the run's
    (run_dir / "report" / "stale.html").write_text("an older report")

    index = report.write_report(run_dir)
    failures = sections_of(index)["failures"][1]
    assert row["trial_id"] in failures and "RuntimeError: the worker ran out of memory" in failures
    assert "failed: RuntimeError" in sections_of(index)["summary"][1]  # in the decision's table
    assert (run_dir / "notes.txt").read_text() == "mine"
    assert not (run_dir / "report" / "stale.html").exists()  # the report folder is replaced whole
    assert not list(run_dir.glob(".report*"))
    page = inspect_page(browser, index, "report-failed-trial.png")
    assert page["sections"] == [[s, "done"] for s in SECTIONS]


# -- evidence across candidates -------------------------------------------------------------------
def candidate_trials(run_dir: Path) -> Any:
    """The completed trials of the beta and seeds stages, from the run's own table."""
    trials = RunDir.open(run_dir).results_table("trials")
    return trials[trials[STAGE].isin(["beta", "seeds"]) & (trials[STATUS] == "completed")]


def candidate_fits(run_dir: Path) -> dict[str, list[str]]:
    """fit (the trial whose model it is) -> the candidate trials that are that fit."""
    fits: dict[str, list[str]] = {}
    for _, row in candidate_trials(run_dir).iterrows():
        reused = row[REUSED_FROM]
        fits.setdefault(reused if isinstance(reused, str) else row[TRIAL_ID], []).append(row[TRIAL_ID])
    return fits


def page_figures(index: Path) -> list[dict[str, Any]]:
    """The page's Plotly figures, as the page carries them (JSON)."""
    found = re.search(r'<script type="application/json" id="figures">(.*?)</script>', index.read_text(), re.S)
    assert found
    return list(json.loads(found.group(1)).values())


def titled(figures: list[dict[str, Any]], panel: str) -> dict[str, Any]:
    """The one figure with a panel titled ``panel``."""
    found = [f for f in figures if panel in [a.get("text") for a in f["layout"].get("annotations", [])]]
    assert len(found) == 1, [f["layout"].get("title") for f in figures]
    return found[0]


def largest_change(run_dir: Path, checkpoint: str) -> float:
    """The largest |difference| of a trial's traversal rows, computed here from its bundle."""
    import numpy as np

    from psvae.export import load_model
    from search.report import model as report_model

    model = load_model(run_dir / checkpoint / "model")
    trials = report_model.read_test_trials([run_dir / "inputs" / "synthetic.h5"], model)
    rows = report_model.traversals(model, trials)
    return max(
        float(np.abs(report_model.difference(f, row.frames[0])).max()) for row in rows for f in row.frames
    )


def test_every_candidate_has_its_traversals_on_one_scale_with_its_leakage_and_scores(demo_run: Path) -> None:
    index = demo_run / "report" / "index.html"  # written by the search after its last stage
    sections = sections_of(index)
    assert all(sections[s][0] == "done" for s in ("activity", "candidates", "scores"))
    figures_html = sections["candidates"][1]
    pattern = r'<div class="candidate" data-trials="([^"]+)" data-fit="([^"]+)" data-scale="([^"]+)"'
    blocks = re.findall(pattern, figures_html)
    fits = candidate_fits(demo_run)
    assert len(fits) < len(candidate_trials(demo_run))  # the demo reuses fits: drawn once each
    assert {fit: sorted(trials.split()) for trials, fit, _ in blocks} == {
        f: sorted(t) for f, t in fits.items()
    }
    assert len(blocks) == len(fits) and "Unavailable:" not in figures_html
    assert figures_html.count('class="strip diff"') == len(fits) * N_LATENTS
    # one scale for every figure: the largest change over all the candidates' rows, computed here
    scales = {float(scale) for _, _, scale in blocks}
    captions = re.findall(r"shared scale ±<span class=scale>([^<]+)</span>", figures_html)
    assert len(scales) == 1 and len(captions) == len(fits) and len(set(captions)) == 1
    checkpoints = candidate_trials(demo_run).drop_duplicates("checkpoint")["checkpoint"]
    expected = max(largest_change(demo_run, c) for c in checkpoints)
    assert expected > 0 and abs(scales.pop() - expected) <= 1e-6 * expected
    assert abs(float(captions[0]) - expected) <= 1e-5 * expected
    assert "reused" in figures_html and "chosen by its stage" in figures_html
    # leakage per candidate, beside |r|, in the figure and the table
    trials = candidate_trials(demo_run)
    leakage = titled(page_figures(index), LABEL_LEAKAGE_U)
    drawn = leakage["data"][1]["y"]
    assert len(drawn) == len(trials) and sorted(drawn) == sorted(trials[LABEL_LEAKAGE_U].tolist())
    assert leakage["data"][0]["y"] and sorted(leakage["data"][0]["y"]) == sorted(
        trials[TRAIN_MEAN_ABS_CORR_U].tolist()
    )
    table = sections["activity"][1]
    for _, row in trials.iterrows():
        assert report.fmt(row[LABEL_LEAKAGE_U]) in table
    # the data has its factors file: the chosen model, the PCA floor and every candidate scored
    scores = sections["scores"][1]
    assert "chosen model" in scores and "pixel PCA" in scores and "MIG (jaw, tail)" in scores
    assert all(f"({fit})" in scores for fit in fits)


def test_a_collapsed_latent_is_red_and_without_factors_there_are_no_scores(
    demo_run: Path, tmp_path: Path
) -> None:
    """A copy of the run in which one beta trial's first z_u dimension has collapsed (its
    val_mu_var_u edited below the stage's threshold, the decision taken again) and whose data
    has lost its factors file."""
    import pandas as pd

    run_dir = tmp_path / "collapsed"
    shutil.copytree(demo_run, run_dir, ignore=shutil.ignore_patterns("report", "export"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    record = manifest["stages"]["beta"]
    threshold = record["decision"]["params"]["min_active_var"]
    stage_file = run_dir / "results" / "trials" / "stage-beta" / "part-0.parquet"
    rows = pq.read_table(stage_file).to_pylist()
    victim = next(r for r in rows if r[TRIAL_ID] != record["decision"]["trial_id"] and not r[REUSED_FROM])
    assert all(v >= threshold for r in rows for v in r[VAL_MU_VAR_U])  # the demo's own: all active
    victim[VAL_MU_VAR_U] = [threshold / 1000, *victim[VAL_MU_VAR_U][1:]]
    results.write_stage(run_dir / "results", "trials", "beta", rows)
    decision = selection.select(
        record["decision"]["rule"], pd.DataFrame(rows), **record["decision"]["params"]
    )
    assert decision.trial_id == record["decision"]["trial_id"]
    record["decision"] = decision.to_dict() | {"checkpoint": record["decision"]["checkpoint"]}
    write_json_atomic(run_dir / "manifest.json", manifest)
    (run_dir / "inputs" / "synthetic.h5.factors.npz").unlink()

    index = report.write_report(run_dir)
    figures = page_figures(index)
    activity = titled(figures, "β stage")
    beta = [t for t in activity["data"] if t.get("xaxis", "x") == "x2"]  # the second panel: beta
    assert beta, [t.get("xaxis") for t in activity["data"]]
    z_u_0 = next(t for t in beta if t["name"] == "z_u_0")
    names = z_u_0["x"]
    colours = z_u_0["marker"]["color"]
    red = report_figures.INACTIVE
    position = names.index(next(n for n in names if n.startswith(f"beta={victim['beta']:g}")))
    assert colours[position] == red and colours.count(red) == 1
    assert all(c != red for t in beta if t is not z_u_0 for c in t["marker"]["color"])
    leakage = titled(figures, LABEL_LEAKAGE_U)
    labels = leakage["data"][1]["x"]
    flagged = [x for x, c in zip(labels, leakage["data"][1]["marker"]["color"], strict=True) if c == red]
    assert len(flagged) == 1 and flagged[0].startswith(f"β stage: beta={victim['beta']:g}")
    sections = sections_of(index)
    assert re.search(rf"<tr class='collapsed'><td>beta</td><td>{victim[TRIAL_ID]} ", sections["activity"][1])
    assert "collapsed: excluded by its stage" in sections["candidates"][1]
    assert sections["scores"][0] == "done" and "None: the data has no factors file" in sections["scores"][1]
    assert "<table" not in sections["scores"][1]


# -- the command line and the driver's hook --------------------------------------------------------
def test_report_on_a_folder_that_is_not_a_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "data.h5").write_bytes(b"x")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path) in err and "not a search run directory" in err
    assert [p.name for p in tmp_path.iterdir()] == ["data.h5"]


def test_a_report_that_fails_only_logs_a_warning(demo_run: Path, tmp_path: Path) -> None:
    """The refresher rebuilds the report in its worker process; a failure there is one warning."""
    run_dir = copy_run(demo_run, tmp_path / "broken", ("alpha",))
    (run_dir / "results" / "trials" / "stage-alpha" / "part-0.parquet").write_bytes(b"not parquet")
    messages: list[str] = []
    refresher = ReportRefresher(RunDir(run_dir, str(run_dir), run_dir.name), messages.append, every_s=3600)
    refresher.close()  # the last rebuild, waited for
    assert len(messages) == 1 and messages[0].startswith("warning:"), messages
    assert "was not refreshed" in messages[0] and not (run_dir / "report").exists()


def test_the_last_rebuild_cancels_one_still_running_and_leaves_no_staged_folder(
    demo_run: Path, tmp_path: Path
) -> None:
    """At the search's end a rebuild begun before it is cancelled (SIGINT to our own worker), not
    waited for; its staged folder goes with it, and the last rebuild writes the report whole."""
    run_dir = copy_run(demo_run, tmp_path / "ending", ("alpha",))
    messages: list[str] = []
    refresher = ReportRefresher(RunDir(run_dir, str(run_dir), run_dir.name), messages.append, every_s=3600)
    refresher.request()
    wait_for(lambda: "building" in refresher.answers, 60, "a rebuild to begin")
    worker = refresher._worker
    refresher.close()
    assert refresher.answers == ["building", "cancelled", "building", "ok"], refresher.answers
    assert worker is not None and worker.returncode == 0 and messages == [], messages
    assert (run_dir / "report" / "index.html").is_file()
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".report")]


def test_a_report_worker_that_cannot_start_is_one_warning(
    demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = copy_run(demo_run, tmp_path / "nostart", ("alpha",))
    monkeypatch.setattr("search.report.refresh.sys.executable", str(tmp_path / "no-such-python"))
    messages: list[str] = []
    refresher = ReportRefresher(RunDir(run_dir, str(run_dir), run_dir.name), messages.append, every_s=3600)
    refresher.close()  # the search ends as it would: no traceback
    assert len(messages) == 1 and "the report worker could not start" in messages[0], messages
    assert not (run_dir / "report").exists()


def test_one_worker_process_makes_every_rebuild_of_a_search(demo_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(demo_run, tmp_path / "again", ("alpha",))
    refresher = ReportRefresher(RunDir(run_dir, str(run_dir), run_dir.name), every_s=3600)
    pids = []
    for n in (1, 2):
        refresher.request()
        wait_for(lambda n=n: refresher.answers.count("ok") == n, 120, "a rebuild")
        assert refresher._worker is not None
        pids.append(refresher._worker.pid)
        (run_dir / "report" / "index.html").unlink()  # ours: the report it wrote
    refresher.close()
    assert len(set(pids)) == 1 and refresher.answers == ["building", "ok"] * 3
    assert (run_dir / "report" / "index.html").is_file()


def test_png_images_decode_as_written() -> None:
    import numpy as np
    from PIL import Image

    from search.report.model import png

    image = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(png(image))) as decoded:
        assert np.array_equal(np.asarray(decoded.convert("RGB")), image)


@pytest.mark.parametrize("n_channels", [1, 2, 3])
def test_a_frame_and_its_difference_image_have_the_same_layout(n_channels: int) -> None:
    import numpy as np

    from search.report.model import difference, diverging_rgb, to_rgb

    frames = np.random.default_rng(0).random((2, n_channels, 6, 5)).astype(np.float32)
    image = to_rgb(frames[1])
    delta = diverging_rgb(difference(frames[1], frames[0]), scale=1.0)
    assert image.shape == delta.shape == (6, 5 * (n_channels if n_channels != 3 else 1), 3)
    assert image.dtype == delta.dtype == np.uint8


# -- optuna-dashboard ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_optuna_dashboard_serves_the_study_journalled_in_a_run_directory(tmp_path: Path) -> None:
    pytest.importorskip("optuna")

    journal = tmp_path / OPTUNA_JOURNAL  # as an optuna stage writes it, with its named objectives
    study = scheduler.optuna_study(journal, "r1-alpha", ["val_pixel_mse", "val_label_mse"])
    study.optimize(lambda t: (t.suggest_float("alpha", 10, 1000, log=True), 1.0), n_trials=3)

    port = free_port()
    url = f"http://127.0.0.1:{port}/api/studies"
    executable = Path(sys.executable).with_name("optuna-dashboard")
    command = [str(executable), str(journal), "--host", "127.0.0.1", "--port", str(port), "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            with contextlib.suppress(OSError):
                studies = get_json(url)["study_summaries"]
                break
            assert time.monotonic() < deadline, "optuna-dashboard did not answer"
            time.sleep(0.3)
        assert [(s["study_name"], s["directions"]) for s in studies] == [
            ("r1-alpha", ["minimize", "minimize"])
        ]
        detail = get_json(f"{url}/{studies[0]['study_id']}")
        assert len(detail["trials"]) == 3
        assert detail["objective_names"] == ["val_pixel_mse", "val_label_mse"]  # not "Objective 0/1"
    finally:
        proc.kill()
        proc.wait(timeout=30)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())
