"""The ``psvae`` command line.

Errors a user can cause (a bad file, config value or argument) are printed as one line,
``psvae: error: ...``, and end the command with exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from psvae import yaml_io
from psvae.errors import ConfigError, UserError


def _parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """``["loss.alpha=50", "train.epochs=10"]`` -> ``{"loss.alpha": 50, "train.epochs": 10}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set loss.alpha=500")
        out[key.strip()] = yaml_io.parse_value(value)  # 1e-3 is a number here too
    return out


def load_fit_config(path: str | None, overrides: Sequence[str] = (), data: Sequence[str] = ()) -> Any:
    """The fit config of ``path`` (our keys or the reference's ``ae_model.json`` keys, which may
    need the ``data`` to count labels) with ``--set`` overrides."""
    return fit_config_and_notes(path, overrides, data)[0]


def fit_config_and_notes(
    path: str | None, overrides: Sequence[str] = (), data: Sequence[str] = ()
) -> tuple[Any, list[str]]:
    """:func:`load_fit_config` and the notes of what was adjusted (a shortened schedule's
    anneal epochs), for the command to print."""
    from psvae.config import FitConfig, read_config_file
    from psvae.datafiles import label_count

    count = (lambda: label_count(data[0])) if data else None
    layers: list[tuple[str, Any]] = []
    if path:
        layers.append((path, read_config_file(path, n_labels=count)))
    if overrides:
        layers.append(("--set", _parse_sets(overrides)))
    return FitConfig.from_layers(layers)


def _notes(notes: Sequence[str]) -> None:
    for note in notes:
        print(f"psvae: note: {' '.join(note.split())}", file=sys.stderr)


def _refuse_existing(path: Path, force: bool, flag: str = "--out") -> None:
    if path.exists() and not force:
        raise UserError(f"{path}: already exists; choose another {flag} or pass --force")


def _check_latents_file(out: Path) -> None:
    """``encode --force`` replaces only a latents table psvae encode wrote (its schema says so)."""
    if out.is_symlink():
        raise UserError(f"--out {out}: is a symbolic link; give a file of its own")
    if not out.exists():
        return
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(out).metadata or {} if out.is_file() else {}
    except Exception:  # pyarrow raises several kinds for a file that is not Parquet
        meta = {}
    if meta.get(b"table") != b"latents":
        raise UserError(
            f"--out {out}: exists and is not a latents table psvae encode wrote; it is never replaced"
        )


# -- commands -----------------------------------------------------------------------------
def cmd_synthetic(args: argparse.Namespace) -> int:
    from psvae import synthetic

    out = Path(args.out)
    _refuse_existing(out, args.force)
    if args.as_video:
        from psvae.files import check_replaceable
        from psvae.videos import VIDEOS_KIND

        check_replaceable(out, VIDEOS_KIND)
    else:
        synthetic.check_overwrite(out, args.sessions)
    if args.trials < 1:
        raise UserError(f"--trials {args.trials}: must be at least 1")
    if args.sessions < 1:
        raise UserError(f"--sessions {args.sessions}: must be at least 1")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: no such directory for --out")
    start = time.perf_counter()
    spec = synthetic.SyntheticSpec(n_trials=args.trials, seed=args.seed, scene=args.scene)
    if args.as_video:
        from psvae import videos

        pairs = videos.write_sessions(out, args.sessions, spec)
        print(
            f"wrote {len(pairs)} recorded session(s) into {out} "
            f"({', '.join(f'{v.name} + {p.name}' for v, p in pairs)}; {spec.n_trials * spec.n_frames} "
            f"frames of {spec.size}x{spec.size} each, labels as DeepLabCut's CSV) "
            f"in {time.perf_counter() - start:.1f} s; next: psvae import"
        )
        return 0
    if args.sessions > 1:
        paths = synthetic.write_sessions(out, args.sessions, spec)
        print(
            f"wrote {len(paths)} sessions into {out} ({', '.join(p.name for p in paths)}; "
            f"{spec.n_trials} trials of {spec.n_frames} frames, {spec.size}x{spec.size} each), "
            "each with its ground truth (factors and session) beside it, "
            f"in {time.perf_counter() - start:.1f} s"
        )
        return 0
    synthetic.write(out, spec)
    print(
        f"wrote {out} ({spec.n_trials} trials of {spec.n_frames} frames, {spec.size}x{spec.size}) "
        f"and its ground truth {synthetic.factors_path(out)} in {time.perf_counter() - start:.1f} s"
    )
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from psvae.fit import run_fit

    cfg, notes = fit_config_and_notes(args.config, args.set, args.data)
    _notes(notes)
    try:
        summary = run_fit(args.data, cfg, args.out, progress=not args.quiet)
    except RuntimeError as err:
        # torch.save reports a full disk as a RuntimeError of its C++ writer, not an OSError
        if not _disk_is_full(Path(args.out)):
            raise
        raise UserError(
            f"{args.out}: no space left on device ({' '.join(str(err).split())[:120]}); free space there "
            "and run the same command again: the fit goes on from its last checkpoint"
        ) from None
    from results_schema import columns as col

    m = summary.metrics
    if summary.status == "diverged":
        print(f"fit diverged after {summary.epochs_run} epochs (non-finite loss); see {args.out}/metrics.csv")
        return 1
    print(
        f"done: {summary.epochs_run} epochs, best epoch {summary.best_epoch}; "
        f"val label R2 {m[col.VAL_LABEL_R2]:.3f}, val pixel MSE {m[col.VAL_PIXEL_MSE]:.3g}, "
        f"test label R2 {m[col.TEST_LABEL_R2]:.3f}\nmodel bundle: {Path(args.out) / 'model'}"
    )
    return 0


def _disk_is_full(path: Path, room: int = 1 << 20) -> bool:
    from search.storage import free_bytes

    free = free_bytes(path)
    return free is not None and free < room


def cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from psvae.datafiles import frame_shape_of, read_labels, read_trials
    from psvae.export import load_model
    from psvae.files import atomic_path
    from results_schema import latents_schema

    out = Path(args.out)
    _refuse_existing(out, args.force)
    _check_latents_file(out)
    model = load_model(args.model)
    for path in args.data:
        shape = frame_shape_of(path)
        if shape != model.frame_shape:
            raise UserError(f"{path}: frames of shape {shape}, but the model expects {model.frame_shape}")
    names = list(model.label_stats.names)
    schema = latents_schema(names, model.network.n_background, model.network.n_unsupervised)
    columns: dict[str, list[np.ndarray]] = {f.name: [] for f in schema}
    conditional = model.network.kind.conditional  # encodes frames with their labels
    for path in args.data:
        labels = read_labels(path) if conditional else {}
        for trial, frames in read_trials(path):
            enc = model.encode(frames, labels=labels.get(trial))
            t = len(frames)
            columns["session_file"].append(np.full(t, str(path), dtype=object))
            columns["trial"].append(np.full(t, trial, dtype=object))
            columns["frame"].append(np.arange(t, dtype=np.int32))
            for k, name in enumerate(names):
                # classes without supervised latents (vae, beta-tcvae) write NaN
                z_s = enc.supervised[:, k] if enc.supervised.shape[1] else np.full(t, np.nan, np.float32)
                columns[f"z_s_{name}"].append(z_s)
                columns[f"label_{name}"].append(enc.labels[:, k].astype(np.float32))
                columns[f"label_z_{name}"].append(enc.labels_z[:, k])
            for i in range(enc.background.shape[1]):
                columns[f"z_b_{i}"].append(enc.background[:, i])
            for i in range(enc.unsupervised.shape[1]):
                columns[f"z_u_{i}"].append(enc.unsupervised[:, i])
    table = pa.table(
        {f.name: pa.array(np.concatenate(columns[f.name]), type=f.type) for f in schema}, schema=schema
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    print(f"wrote {out}: {table.num_rows} frames from {len(args.data)} file(s)")
    return 0


def _ints(flag: str, text: str | None, sep: str, n: int, shape: str) -> tuple[int, ...] | None:
    """``--crop 10,20,200,160`` -> (10, 20, 200, 160); a malformed value is a one-line UserError."""
    if text is None:
        return None
    parts = text.lower().split(sep)
    if len(parts) != n or not all(p.strip().isdigit() for p in parts):
        raise UserError(f"{flag} {text}: expected {shape}")
    return tuple(int(p) for p in parts)


def cmd_import(args: argparse.Namespace) -> int:
    from psvae.dlc import ImportOptions, import_sessions

    videos, labels = args.video or [], args.labels or []
    if len(videos) != len(labels):
        raise UserError(
            f"{len(videos)} --video and {len(labels)} --labels: give each video its predictions, "
            "--video V --labels L for every session"
        )
    crop = _ints("--crop", args.crop, ",", 4, "X,Y,WIDTH,HEIGHT in the video's pixels, e.g. 40,0,320,320")
    size = _ints("--size", args.size, "x", 2, "WIDTHxHEIGHT, e.g. 128x128")
    options = ImportOptions(
        trial_frames=args.trial_frames,
        crop=crop,  # type: ignore[arg-type]
        size=size,  # type: ignore[arg-type]
        grayscale=args.grayscale,
        likelihood=args.likelihood,
        bodyparts=tuple(args.bodyparts) if args.bodyparts else None,
    )
    for summary in import_sessions(
        list(zip(videos, labels, strict=True)), args.out, options, force=args.force
    ):
        print(summary.line())
    return 0


def _run_id(text: str) -> str:
    """argparse type of --run-id: one plain name inside the storage, never a path."""
    from search.rundir import check_run_id

    try:
        return check_run_id(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def new_run_id() -> str:
    return time.strftime("search-%Y%m%d-%H%M%S")


def cmd_search(args: argparse.Namespace) -> int:
    from search.spec import load_spec

    notes: list[str] = []
    spec = load_spec(args.config, alpha=args.alpha, beta=args.beta, data=args.data, notes=notes)
    _notes(notes)
    if args.dry_run:
        from search.dryrun import describe, local_slots

        if args.address:
            print(f"(the probe runs on this machine, not on {args.address})")
        print(describe(spec, local_slots(spec)))
        return 0
    run_id = args.run_id or new_run_id()
    from search.session import search_command

    return search_command(spec, run_id, args.storage, args.address)


def cmd_resume(args: argparse.Namespace) -> int:
    from search.driver import resume_spec
    from search.rundir import RunDir
    from search.storage import split_run

    # the run is the folder named on the command line (its name checked there), wherever it
    # has moved and whatever id its manifest, which may come from a shared bucket, records
    root, run_id = split_run(args.run_dir)
    spec = resume_spec(RunDir.open(args.run_dir))
    from search.session import search_command

    return search_command(spec, run_id, root, args.address)


def cmd_status(args: argparse.Namespace) -> int:
    from search.status import status_text, watch

    if args.watch is not None:
        if not args.watch > 0:
            raise UserError(f"--watch {args.watch}: the seconds between refreshes must be above 0")
        watch(args.run_dir, args.watch)
        return 0
    print(status_text(args.run_dir))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from search.export import export_run

    out = export_run(args.run_dir, args.out, force=args.force, trial=args.trial)
    what = f"trial {args.trial}" if args.trial else "the selected model"
    print(f"exported {what} to {out} (load it with psvae.load_model)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from search.report import timed_report

    index, seconds = timed_report(args.run_dir)
    print(f"wrote {index} in {seconds:.1f} s (open it in a browser; it works offline)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from search import demo

    return demo.run(out=args.out, quick=args.quick, model=args.model)


def cmd_submit(args: argparse.Namespace) -> int:
    from cluster import jobs

    cluster = jobs.connect(args.address, insecure=args.insecure)
    run_id = args.run_id or new_run_id()
    storage = args.storage.rstrip("/")
    job_id = jobs.submit(
        cluster, Path(args.config), run_id, storage, alpha=args.alpha, beta=args.beta, data=args.data
    )
    flags = f"--address {args.address}" + (" --insecure" if args.insecure else "")
    print(
        f"submitted job {job_id}\n"
        f"run directory: {storage}/{run_id}\n"
        f"watch it:  psvae jobs logs {job_id} {flags} --follow\n"
        f"           psvae jobs status {job_id} {flags}\n"
        f"stop it:   psvae jobs stop {job_id} {flags}   (resubmit with --run-id {run_id} to continue)"
    )
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from cluster.local.head import write_token

    path = Path(args.out).expanduser()
    if path.exists():
        raise UserError(f"{path}: already exists; a token is never overwritten (delete it first)")
    write_token(path)
    print(f"wrote a new cluster token to {path} (mode 0600); give it to the cluster as RAY_AUTH_TOKEN_PATH")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from cluster import jobs

    client = jobs.connect(args.address, insecure=args.insecure).client()
    try:
        if args.action == "status":
            info = client.get_job_info(args.job_id)
            print(f"{args.job_id}: {info.status}" + (f" ({info.message})" if info.message else ""))
        elif args.action == "logs" and args.follow:
            import asyncio

            async def follow() -> None:
                async for lines in client.tail_job_logs(args.job_id):
                    print(lines, end="", flush=True)

            asyncio.run(follow())
        elif args.action == "logs":
            print(client.get_job_logs(args.job_id), end="")
        else:
            stopped = client.stop_job(args.job_id)
            print(f"{args.job_id}: " + ("stopping; Tune saves its state first" if stopped else "not running"))
    except RuntimeError as err:  # the Jobs API's answer for an unknown job id
        raise UserError(f"job {args.job_id}: {' '.join(str(err).split())}") from None
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """``psvae score``: ground-truth scores of a model's latents beside a pixel-PCA baseline."""
    from psvae.files import write_json_atomic
    from psvae.scores import score_model, score_table

    out = Path(args.json) if args.json else None
    if out is not None:
        _refuse_existing(out, args.force, "--json")
        if not out.parent.is_dir():
            raise UserError(f"{out.parent}: no such directory for --json")
    report = score_model(args.model, args.data, args.factors)
    print(score_table(report))
    if out is not None:
        write_json_atomic(out, report)
        print(f"wrote {out}")
    return 0


def add_score_parser(
    add: Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser],
) -> None:
    p = add(
        "score",
        cmd_score,
        "Score a model's latents against known factors (benchmark data), beside a pixel-PCA baseline.",
    )
    p.add_argument("--model", required=True, help="a model bundle directory")
    p.add_argument("--data", required=True, help="the HDF5 file to encode")
    p.add_argument(
        "--factors", required=True, help="its ground truth: an .npz of per-trial factors (psvae synthetic)"
    )
    p.add_argument("--json", help="also write the scores to this JSON file")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")


def add_scene_arg(p: argparse.ArgumentParser) -> None:
    """``psvae synthetic --scene``: which built-in scene to draw (docs/latents.md, the benchmark)."""
    from psvae.synthetic import SCENE_NAMES

    p.add_argument(
        "--scene",
        default=SCENE_NAMES[0],
        choices=SCENE_NAMES,
        help="blob: a blob whose position is labelled (the default); limbs: two labelled limbs with a "
        "small jaw and tail as nuisance parts (the latents benchmark)",
    )


# -- parser -------------------------------------------------------------------------------
EXAMPLES: dict[str, str] = {
    "synthetic": "psvae synthetic --out data.h5\n  psvae synthetic --sessions 3 --out sessions/\n"
    "  psvae synthetic --as-video --sessions 2 --scene limbs --out lab/",
    "fit": "psvae fit --data data.h5 --config fit.yaml --set train.epochs=50 --out fits/a",
    "encode": "psvae encode --model fits/a/model --data data.h5 --out latents.parquet",
    "import": "psvae import --video m1.mp4 --labels m1DLC_resnet50.csv --video m2.mp4 --labels m2DLC.h5 \\\n"
    "      --crop 40,0,400,400 --size 128x128 --grayscale --out sessions/",
    "search": "psvae search --config configs/cpu.yaml --data sessions/*.h5 --run-id mice-1",
    "resume": "psvae resume runs/mice-1",
    "status": "psvae status runs/mice-1",
    "export": "psvae export runs/mice-1 --out chosen-model",
    "submit": "psvae submit --address http://HOST:8265 --config search.yaml --storage /shared/runs",
    "jobs": "psvae jobs logs JOB_ID --address http://HOST:8265 --follow",
    "token": "psvae token --out ~/.ray/my-cluster.token",
    "report": "psvae report runs/mice-1",
    "score": "psvae score --model chosen-model --data limbs.h5 --factors limbs.h5.factors.npz --json s.json",
    "demo": "psvae demo --quick",
}
"""One example per subcommand, shown at the end of its --help."""


class _Version(argparse.Action):
    """``--version``: the package version and the source commit, looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and source commit, and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from psvae.provenance import version_line

        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="psvae", description="Fit and search Partitioned Subspace VAEs on behavioural video."
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        example = EXAMPLES.get(name)
        p = sub.add_parser(
            name,
            help=text,
            description=text,
            epilog=f"example:\n  {example}" if example else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    p = add("synthetic", cmd_synthetic, "Write the built-in synthetic dataset (HDF5) and its ground truth.")
    p.add_argument("--out", required=True, help="the HDF5 file to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trials", type=int, default=40, help="trials per session")
    p.add_argument(
        "--sessions",
        type=int,
        default=1,
        help="several sessions that differ in their static background: --out is then a directory "
        "that gets one HDF5 file per session",
    )
    p.add_argument(
        "--as-video",
        action="store_true",
        help="write the sessions as a lab records them instead: --out is a folder that gets per "
        "session a video (session_NN.mp4) and DeepLabCut's predictions (session_NN.csv), for psvae import",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    add_scene_arg(p)

    p = add("fit", cmd_fit, "Fit one model without Ray; rerun the same command to resume.")
    p.add_argument("--data", required=True, nargs="+", help="one or more HDF5 files")
    p.add_argument("--config", help="a YAML fit config (nested or dotted keys)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--out", required=True, help="the fit directory (created; resumed if unfinished)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("encode", cmd_encode, "Encode every trial of HDF5 files with a model bundle into Parquet.")
    p.add_argument("--model", required=True, help="a model bundle directory")
    p.add_argument("--data", required=True, nargs="+", help="one or more HDF5 files")
    p.add_argument("--out", required=True, help="the Parquet file to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")

    p = add("import", cmd_import, "Turn videos and their DeepLabCut predictions into session files (HDF5).")
    p.add_argument("--video", action="append", metavar="VIDEO", help="a video (any format FFmpeg reads)")
    p.add_argument(
        "--labels",
        action="append",
        metavar="PREDICTIONS",
        help="DeepLabCut's predictions for the video given before it (CSV or HDF5); the n-th "
        "--labels belongs to the n-th --video",
    )
    p.add_argument("--out", required=True, help="the folder to write VIDEO_STEM.h5 into (created)")
    p.add_argument("--trial-frames", type=int, default=100, help="frames per trial (default 100)")
    p.add_argument("--crop", metavar="X,Y,W,H", help="keep this rectangle of each frame (video pixels)")
    p.add_argument("--size", metavar="WxH", help="resize the (cropped) frames to this size")
    p.add_argument("--grayscale", action="store_true", help="one channel instead of RGB")
    p.add_argument(
        "--likelihood",
        type=float,
        default=0.9,
        help="mask a body part's labels in frames where its likelihood is below this (default 0.9)",
    )
    p.add_argument("--bodyparts", nargs="+", metavar="NAME", help="only these body parts, in this order")
    p.add_argument("--force", action="store_true", help="replace session files psvae import wrote before")

    def add_search_args(p: argparse.ArgumentParser) -> None:
        """What psvae search and psvae submit both take."""
        p.add_argument("--config", required=True, help="the search config (YAML)")
        p.add_argument(
            "--run-id",
            type=_run_id,
            help="the run's name, one plain name (default: search-<date>-<time>); reuse it to resume",
        )
        p.add_argument("--alpha", type=float, help="fix alpha by hand: skips the alpha stage")
        p.add_argument("--beta", type=float, help="fix beta by hand: skips the beta stage")
        p.add_argument(
            "--data",
            nargs="+",
            metavar="FILE",
            help="the session files (HDF5), relative to the current directory; replace the config's data:",
        )

    p = add("search", cmd_search, "Run the staged alpha -> beta -> seeds search on Ray Tune.")
    add_search_args(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan, its estimated time (from a short timed probe) and disk, and start nothing",
    )
    p.add_argument("--storage", help="where run directories live: a folder (default ./runs), s3:// or gs://")
    p.add_argument("--address", help="a Ray cluster to use (default: start a local Ray)")

    p = add("resume", cmd_resume, "Continue a search run where it stopped.")
    p.add_argument("run_dir", help="the run directory")
    p.add_argument("--address", help="a Ray cluster to use (default: start a local Ray)")

    p = add("status", cmd_status, "Show a run's stages and every trial (running, finished, pending).")
    p.add_argument("run_dir", help="the run directory")
    p.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=5.0,
        metavar="SECONDS",
        help="refresh every SECONDS (default 5) until the run stops",
    )

    p = add("export", cmd_export, "Write the selected model's bundle (or any trial's) and selection.json.")
    p.add_argument("run_dir", help="the run directory")
    p.add_argument(
        "--trial", help="export this trial (its trial_id in psvae status) instead of the selected one"
    )
    p.add_argument("--out", required=True, help="the directory to create")
    p.add_argument("--force", action="store_true", help="replace an existing directory")

    p = add("submit", cmd_submit, "Submit the staged search to a Ray cluster as a Ray Job.")
    add_search_args(p)
    p.add_argument("--address", required=True, help="the cluster's dashboard, http://HOST:8265")
    p.add_argument("--storage", required=True, help="where run directories live, as the cluster sees it")
    p.add_argument("--insecure", action="store_true", help="allow a cluster without token authentication")

    p = add("jobs", cmd_jobs, "Show, follow or stop a submitted search job.")
    p.add_argument("action", choices=["status", "logs", "stop"])
    p.add_argument("job_id", help="the id printed by psvae submit")
    p.add_argument("--address", required=True, help="the cluster's dashboard, http://HOST:8265")
    p.add_argument("--follow", action="store_true", help="logs: keep printing until the job ends")
    p.add_argument("--insecure", action="store_true", help="allow a cluster without token authentication")

    p = add("token", cmd_token, "Write a new cluster token file, readable by its owner only.")
    p.add_argument("--out", required=True, help="the file to create (e.g. ~/.ray/my-cluster.token)")

    add_score_parser(add)

    p = add("report", cmd_report, "Write the run's HTML report, RUN_DIR/report/index.html.")
    p.add_argument("run_dir", help="the run directory")

    p = add("demo", cmd_demo, "Generate the built-in data and run the whole staged search on a local Ray.")
    p.add_argument("--quick", action="store_true", help="a few tiny epochs, to check the installation")
    p.add_argument(
        "--model",
        default="ps-vae",
        choices=["ps-vae", "msps-vae"],
        help="msps-vae: the multi-session model on built-in data of several sessions",
    )
    p.add_argument("--out", help="the demo's directory (default: a new folder under ./runs)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as err:
        message = " ".join(str(err).split())  # always one line
        print(f"psvae: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("psvae: interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno is None:  # not the operating system's answer: a fault of the program
            raise
        print(f"psvae: error: {os_error_line(err)}", file=sys.stderr)
        return 2


def os_error_line(err: OSError) -> str:
    """A fault of the machine (a full disk, a missing permission, an I/O error) in one line:
    the file, what the system said, what to do."""
    from search.storage import disk_full

    where = f"{err.filename}: " if err.filename else ""
    what = " ".join(str(err.strerror or err).split())
    if disk_full(err):
        return f"{where}{what}; free space there and run the command again"
    return f"{where}{what}"


_EXIT_CODE: int | None = None  # the command's exit code, once it has returned one


def _end_without_teardown() -> None:
    """Ends the process as soon as every other exit handler has run (Ray's shutdown among them).
    What is left, the interpreter freeing the thousands of modules PyTorch, Ray and pandas bring,
    took about 1 s after a search here and does nothing for the user: every file the project
    writes is written whole and closed before the command returns."""
    if _EXIT_CODE is None:  # the command ended in an error of the program: Python's own ending
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(_EXIT_CODE)


def console() -> None:
    """The ``psvae`` command (``main`` runs in-process for tests and callers)."""
    global _EXIT_CODE
    atexit.register(_end_without_teardown)  # registered first, so run after every other handler
    _EXIT_CODE = main()
    sys.exit(_EXIT_CODE)


if __name__ == "__main__":
    console()
