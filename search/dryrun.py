"""``psvae search --dry-run``: what a search would do, how long it would take and the disk it
would use, without starting Ray.

The plan is the spec's stages, with the trials reuse saves (a stage's trial whose values are the
ones the stage starts from is the previous stage's chosen fit). The time comes from a short timed
probe of the trials' own network and batches: as many probe processes at once as the search
runs trials at once, each with a trial's thread count (so the CPUs are shared as they will be),
and, where a stage's last fits run with slots left idle, one probe alone with 2 slots' threads
and one with all of them (``search/threads.py``: they take the idle CPUs as threads). A fit's
time is its epochs' training steps and validation batches, plus the final passes over val,
test and train; a stage's time is the fits scheduled on the slots as the search runs them.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psvae.config import FitConfig
from search.scheduler import trial_base
from search.spec import SearchSpec, StageSpec
from search.threads import idle_shares

PROBE_WARMUP = 2  # untimed steps first: allocations and the first kernels take several steps
PROBE_STEPS = 8  # timed training steps per probe process; the median is taken
PROBE_EVAL = 4  # timed validation batches
# what the probe does not see: Ray's start, the dashboard, the driver reading the data, and each
# trial worker's first start (python, ray.tune, torch); measured here at 8-15 s in all
FIXED_S = 15.0
PER_TRIAL_S = 1.0  # a trial's own start and end on a reused worker (config, checkpoints, report)
BYTES_PER_PARAM = 4
# a running trial's full state: model, best weights, and Adam's three moments (amsgrad)
STATE_COPIES = 5


@dataclass
class StagePlan:
    stage: StageSpec
    n_trials: int
    n_reused: int

    @property
    def n_fits(self) -> int:
        return self.n_trials - self.n_reused


def plan(spec: SearchSpec) -> list[StagePlan]:
    """The stages with how many trials they run and how many reuse an earlier stage's fit."""
    base = FitConfig.from_mapping(trial_base(spec)).flat()
    varied: set[str] = set()
    out: list[StagePlan] = []
    for stage in spec.stages:
        if stage.algorithm == "optuna":
            n, reused = stage.n_trials, 0
        else:
            trials = stage.trial_overrides()
            n = len(trials)
            # the stage starts from the previous stage's chosen fit, which has the base values for
            # every key no earlier stage varied: a trial with those values is that very fit
            known = {k: base[k] for k in stage.varied_keys() if k not in varied}
            starts = [t for t in trials if all(k in known and t[k] == known[k] for k in t)]
            reused = 1 if spec.reuse_fits and out and starts else 0
        varied |= set(stage.varied_keys())
        out.append(StagePlan(stage, n, reused))
    return out


def idle_slots_taken(n_fits: int, slots: int) -> set[int]:
    """The shares of slots a stage's last fits run with (more than one), as their fellows end."""
    shares: set[int] = set()
    for running in range(1, min(n_fits, slots) + 1):
        shares |= set(idle_shares([str(i) for i in range(running)], slots, 1).values())
    return shares


def _probe(args: tuple[dict[str, Any], list[str], int]) -> tuple[float, float, int, int, int]:
    """In a fresh process: (seconds per training step, per validation batch, training batches
    per epoch, validation batches, all evaluation batches of a fit's end) for ``fit`` at
    ``threads`` threads."""
    import torch

    from psvae.data import load_data
    from psvae.family import FAMILY
    from psvae.trainer import Trainer

    fit, paths, threads = args
    torch.set_num_threads(threads)
    cfg = FitConfig.from_mapping({**fit, "train.num_threads": threads})
    data = load_data(
        paths, cfg.data.split, cfg.data.split_seed, per_session=FAMILY[cfg.model.model_class].background
    )
    size = cfg.train.batch_size
    n_train = max(1, data.n_frames("train") // size)
    n_val = math.ceil(data.n_frames("val") / size)
    n_end = sum(math.ceil(data.n_frames(s) / size) for s in ("val", "test", "train"))
    full = {split: data.index[split] for split in ("train", "val")}
    trainer = Trainer(cfg, data)

    def timed(split: str, run: Any, n: int) -> float:
        """The median seconds of ``run`` over ``n`` one-batch passes, after the warm-up ones."""
        seconds = []
        for i in range(PROBE_WARMUP + n):
            first = (i * size) % max(1, len(full[split]) - size + 1)
            data.index[split] = full[split][first : first + size]
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
        return sorted(seconds[PROBE_WARMUP:])[n // 2]

    step = timed("train", lambda: trainer.train_epoch(0), PROBE_STEPS)
    evaluate = timed("val", lambda: trainer.evaluate("val"), PROBE_EVAL)
    return step, evaluate, n_train, n_val, n_end


def probe(spec: SearchSpec, slots: int, widened: set[int]) -> dict[int, tuple[float, float, int, int, int]]:
    """Probe timings by a fit's share of slots: share 1 measured with ``slots`` probes at once,
    each share of ``widened`` alone."""
    fit = trial_base(spec)
    threads = int(fit["train.num_threads"])
    paths = list(spec.data)
    context = multiprocessing.get_context("spawn")
    out = {}
    with context.Pool(slots) as pool:
        timings = pool.map(_probe, [(fit, paths, threads)] * slots)
    step = sorted(t[0] for t in timings)[len(timings) // 2]
    evaluate = sorted(t[1] for t in timings)[len(timings) // 2]
    out[1] = (step, evaluate, *timings[0][2:])
    for share in sorted(widened):
        with context.Pool(1) as pool:
            out[share] = pool.map(_probe, [(fit, paths, threads * share)])[0]
    return out


def fit_seconds(timing: tuple[float, float, int, int, int], epochs: int) -> float:
    step, evaluate, n_train, n_val, n_end = timing
    return epochs * (n_train * step + n_val * evaluate) + n_end * evaluate + PER_TRIAL_S


def stage_seconds(
    durations: list[float], slots: int, speedup: Callable[[int], float] = lambda share: 1.0
) -> float:
    """When the last of a stage's fits ends: each (seconds on one slot) starts in order as soon
    as a slot is free; once none is left to start, the running ones share the idle slots
    (``threads.idle_shares``) and run ``speedup(share)`` times as fast."""
    queue = list(durations)
    running: list[float] = []  # seconds left, on one slot
    now = 0.0
    while queue or running:
        while queue and len(running) < slots:
            running.append(queue.pop(0))
        names = [str(i) for i in range(len(running))]
        shares = {} if queue else idle_shares(names, slots, 1)
        rates = [speedup(shares.get(name, 1)) for name in names]
        step = min(left / rate for left, rate in zip(running, rates, strict=True))
        now += step
        running = [left - step * rate for left, rate in zip(running, rates, strict=True)]
        running = [left for left in running if left > 1e-9]
    return now


def speedups(seconds: dict[int, float]) -> Callable[[int], float]:
    """How much faster a fit runs on ``share`` slots than on one, from the fit's probed seconds
    by share (1 and some others), straight between the probed shares and flat beyond them."""
    known = sorted((share, seconds[1] / s) for share, s in seconds.items())

    def speedup(share: int) -> float:
        below = max((k for k in known if k[0] <= share), default=known[0])
        above = min((k for k in known if k[0] >= share), default=known[-1])
        if above[0] == below[0]:
            return below[1]
        return below[1] + (above[1] - below[1]) * (share - below[0]) / (above[0] - below[0])

    return speedup


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def describe(spec: SearchSpec, slots: int) -> str:
    """The whole dry run as text (runs the probe: a few seconds of CPU per slot)."""
    from psvae.data import frame_shape_of, label_count
    from psvae.model import PSVAE, count_parameters

    base = FitConfig.from_mapping(trial_base(spec))
    stages = plan(spec)
    taken = set().union(*(idle_slots_taken(p.n_fits, slots) for p in stages))
    widened = {s for s in (2, slots) if taken and s > 1}  # the rest is interpolated
    timings = probe(spec, slots, widened)
    epochs = base.train.epochs
    speedup = speedups({share: fit_seconds(t, epochs) for share, t in timings.items()})
    shape = frame_shape_of(spec.data[0])
    n_params = count_parameters(PSVAE(shape, label_count(spec.data[0]), base.model))
    threads = base.train.num_threads
    lines = [
        f"the plan: {len(spec.data)} data file(s) of {shape[1]}x{shape[2]} frames; {slots} trial(s) at once, "
        f"{spec.resources.cpus_per_trial:g} CPU and {threads} thread(s) each; {epochs} epochs a fit"
    ]
    total_trials = total_fits = 0
    seconds = FIXED_S
    per_stage = []
    for p in stages:
        durations = [fit_seconds(timings[1], epochs)] * p.n_fits
        stage_s = stage_seconds(durations, slots, speedup) if durations else 0.0
        seconds += stage_s
        per_stage.append(f"{p.stage.name} {_minutes(stage_s)}")
        notes = []
        if p.n_reused:
            notes.append(f"{p.n_reused} reused (the previous stage's chosen fit)")
        if p.n_fits % slots:
            notes.append("its last fits take the slots left idle, as threads")
        values = "sampled" if p.stage.algorithm == "optuna" else ", ".join(f"{v:g}" for v in _values(p.stage))
        lines.append(
            f"  stage {p.stage.name}: {p.n_trials} trials varying {' x '.join(p.stage.varied_keys())} "
            f"({values}): {p.n_fits} fits" + (f"; {'; '.join(notes)}" if notes else "")
        )
        total_trials += p.n_trials
        total_fits += p.n_fits
    lines.append(f"  {total_fits} fits for {total_trials} trials")
    step, evaluate, n_train, _, _ = timings[1]
    lines.append(
        f"the probe: a training step takes {step:.3g} s and a validation batch {evaluate:.3g} s with {slots} "
        f"fits at once; an epoch ({n_train} steps) about {_minutes(n_train * step)}, a fit about "
        f"{_minutes(fit_seconds(timings[1], epochs))}"
    )
    lines.append(
        f"estimated wall time: {_minutes(seconds)} ({', '.join(per_stage)}, and about {FIXED_S:.0f} s "
        "for Ray and its workers to start)"
    )
    bundle = n_params * BYTES_PER_PARAM
    state = STATE_COPIES * bundle
    end = total_fits * bundle + 10e6  # + the report (plotly.js), results and logs
    peak = end + slots * 2 * state  # a running trial's checkpoint, and the next one being written
    lines.append(
        f"estimated disk: {_bytes(end)} when done ({total_fits} model bundles of {_bytes(bundle)}, "
        f"{n_params:,} parameters), up to {_bytes(peak)} while trials run"
    )
    lines.append("nothing was started: the same command without --dry-run runs the search")
    return "\n".join(lines)


def _values(stage: StageSpec) -> list[float]:
    return [float(v) for v in stage.values]


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def local_slots(spec: SearchSpec) -> int:
    """How many trials a local search runs at once on this machine."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    slots = max(1, int(cpus // spec.resources.cpus_per_trial))
    if spec.resources.max_concurrent:
        slots = min(slots, spec.resources.max_concurrent)
    return 1 if spec.resources.gpus_per_trial else slots
