"""The ``psvae`` command line.

Errors a user can cause (a bad file, config value or argument) are printed as one line,
``psvae: error: ...``, and end the command with exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from psvae.errors import ConfigError, UserError


def _parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """``["loss.alpha=50", "train.epochs=10"]`` -> ``{"loss.alpha": 50, "train.epochs": 10}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set loss.alpha=500")
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_fit_config(path: str | None, overrides: Sequence[str] = (), data: Sequence[str] = ()) -> Any:
    """The fit config of ``path`` (our keys or the reference's ``ae_model.json`` keys, which may
    need the ``data`` to count labels) with ``--set`` overrides."""
    from psvae.config import FitConfig
    from psvae.data import label_count

    count = (lambda: label_count(data[0])) if data else None
    base = FitConfig.from_yaml(path, n_labels=count) if path else FitConfig()
    if not overrides:
        return base
    merged = base.flat()
    sets = _parse_sets(overrides)
    for key in sets:
        if key not in merged:
            FitConfig.from_mapping({key: sets[key]}, source="--set")  # raises with a hint
    merged.update(sets)
    return FitConfig.from_mapping(merged, source=path or "--set")


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
    synthetic.check_overwrite(out, args.sessions)
    if args.trials < 1:
        raise UserError(f"--trials {args.trials}: must be at least 1")
    if args.sessions < 1:
        raise UserError(f"--sessions {args.sessions}: must be at least 1")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: no such directory for --out")
    start = time.perf_counter()
    spec = synthetic.SyntheticSpec(n_trials=args.trials, seed=args.seed, scene=args.scene)
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

    cfg = load_fit_config(args.config, args.set, args.data)
    summary = run_fit(args.data, cfg, args.out, progress=not args.quiet)
    m = summary.metrics
    if summary.status == "diverged":
        print(f"fit diverged after {summary.epochs_run} epochs (non-finite loss); see {args.out}/metrics.csv")
        return 1
    print(
        f"done: {summary.epochs_run} epochs, best epoch {summary.best_epoch}; "
        f"val label R2 {m['val_label_r2']:.3f}, val pixel MSE {m['val_pixel_mse']:.3g}, "
        f"test label R2 {m['test_label_r2']:.3f}\nmodel bundle: {Path(args.out) / 'model'}"
    )
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    import os

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from psvae.data import frame_shape_of, read_labels, read_trials
    from psvae.export import load_model
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
    tmp = out.with_name(f".{out.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, out)
    print(f"wrote {out}: {table.num_rows} frames from {len(args.data)} file(s)")
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


def search_command(
    spec: Any, run_id: str, storage: str | None, address: str | None, announce: bool = True
) -> int:
    """Run or resume a search and turn its outcome into an exit code: 0 done, 1 a stage had
    no usable trial, 130 interrupted (resumable)."""
    from search.run import Interrupted, SearchError, run_search
    from search.storage import resolve_storage

    store = resolve_storage(storage)
    run_dir = store.run_location(run_id)
    try:
        run_search(spec, run_id, store, address)
    except Interrupted as err:
        print(f"psvae: {err}; continue with: psvae resume {run_dir}", file=sys.stderr)
        return 130
    except SearchError as err:
        print(f"psvae: search failed: {err}", file=sys.stderr)
        return 1
    if announce:
        print(
            f"run directory: {run_dir}\nreport: {store.local / run_id / 'report' / 'index.html'}\n"
            f"export the selected model with: psvae export {run_dir} --out DIR"
        )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from search.spec import load_spec

    spec = load_spec(args.config, alpha=args.alpha, beta=args.beta)
    run_id = args.run_id or new_run_id()
    return search_command(spec, run_id, args.storage, args.address)


def cmd_resume(args: argparse.Namespace) -> int:
    from search.run import read_manifest
    from search.spec import SearchSpec
    from search.storage import split_run

    # the run is the folder named on the command line (its name checked there), whatever id its
    # manifest, which may come from a shared bucket, records (checked when it is read)
    root, run_id = split_run(args.run_dir)
    manifest = read_manifest(args.run_dir)
    spec = SearchSpec.from_dict(manifest["spec"])
    return search_command(spec, run_id, root, args.address)


def cmd_status(args: argparse.Namespace) -> int:
    from search.status import status_text

    print(status_text(args.run_dir))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from search.export import export_run

    out = export_run(args.run_dir, args.out, force=args.force)
    print(f"exported the selected model to {out} (load it with psvae.load_model)")
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
    job_id = jobs.submit(cluster, Path(args.config), run_id, storage, alpha=args.alpha, beta=args.beta)
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
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="psvae", description="Fit and search Partitioned Subspace VAEs on behavioural video."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
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

    p = add("search", cmd_search, "Run the staged alpha -> beta -> seeds search on Ray Tune.")
    add_search_args(p)
    p.add_argument("--storage", help="where run directories live: a folder (default ./runs), s3:// or gs://")
    p.add_argument("--address", help="a Ray cluster to use (default: start a local Ray)")

    p = add("resume", cmd_resume, "Continue a search run where it stopped.")
    p.add_argument("run_dir", help="the run directory")
    p.add_argument("--address", help="a Ray cluster to use (default: start a local Ray)")

    p = add("status", cmd_status, "Show a run's stages, trials and decisions.")
    p.add_argument("run_dir", help="the run directory")

    p = add("export", cmd_export, "Write the selected model's bundle and selection.json.")
    p.add_argument("run_dir", help="the run directory")
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


if __name__ == "__main__":
    sys.exit(main())
