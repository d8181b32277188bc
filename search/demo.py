"""``psvae demo``: the built-in dataset through the whole staged search on a local Ray."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from psvae import synthetic, yaml_io
from psvae.config import FitConfig
from psvae.errors import UserError
from search.rundir import check_run_id

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
"""The shipped search configs (cpu.yaml, gpu.yaml), beside the package in the repository: an
editable install (``pip install -e .``, as the README installs it) finds them."""


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped search config, ``configs/<name>``, as its mapping (its fit schedule nested)."""
    raw = yaml_io.read(CONFIGS / name, "search config")
    if not isinstance(raw, dict) or not isinstance(raw.get("fit"), dict):
        raise UserError(f"{CONFIGS / name}: expected a search config with a fit: mapping")
    return raw


def shortened(fit: dict[str, Any], epochs: int, source: str) -> dict[str, Any]:
    """``fit`` (nested sections) run for ``epochs`` epochs, its anneal epochs scaled with them as
    ``psvae fit --set train.epochs=N`` would scale them."""
    cfg, _ = FitConfig.from_layers([(source, fit), ("--quick", {"train.epochs": epochs})])
    out = copy.deepcopy(fit)
    out.setdefault("train", {})["epochs"] = epochs
    out.setdefault("loss", {})["anneal_epochs"] = cfg.loss.anneal_epochs
    return out


# The guide's stages on the built-in limbs scene (64x64; docs/latents.md) with the CPU schedule
# of configs/cpu.yaml. The paper's lr 1e-4 and 100 annealing epochs are for hours on a GPU.
DEMO_SCENE = "limbs"
CPU = shipped_config("cpu.yaml")
STAGES: list[dict[str, Any]] = [
    {"name": "alpha", "values": [50, 100, 500, 1000]},
    {"name": "beta", "values": [1, 5, 10, 20]},
    {"name": "seeds", "values": [0, 1, 2]},
]
# An installation check: two epochs are too few for any latent to become active, so its beta
# and seeds stages screen out only latents that are constant (min_active_var 1e-9, not 0.01);
# their decisions say how little the latents vary.
QUICK_SCREEN = {"rule_params": {"min_active_var": 1e-9}}


def screened_lightly(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``stages`` with QUICK_SCREEN on every stage after the first (alpha's rule does not screen)."""
    return [stages[0], *({**stage, **QUICK_SCREEN} for stage in stages[1:])]


DEMO: dict[str, Any] = {"trials": 40, "fit": CPU["fit"], "stages": STAGES}
QUICK: dict[str, Any] = {
    "trials": 10,
    "fit": shortened(CPU["fit"], 2, "configs/cpu.yaml"),
    "stages": screened_lightly(STAGES),
}
# The multi-session model on built-in sessions that differ in their static background: alpha
# (beta = 1, delta = 50), then beta x delta, then seeds. Shorter trials keep it CPU-sized.
MSPS_FIT: dict[str, Any] = {
    "model": {**CPU["fit"].get("model", {}), "model_class": "msps-vae", "n_background": 3},
    "train": {**CPU["fit"]["train"], "n_sessions_per_batch": 2},
    "loss": dict(CPU["fit"].get("loss", {})),
}
MSPS_STAGES: list[dict[str, Any]] = [
    {"name": "alpha", "values": [50, 100, 500, 1000]},
    {"name": "beta_delta", "values": [1, 5, 10, 20], "delta": [50, 100, 500, 1000]},
    {"name": "seeds", "values": [0, 1, 2]},
]
DEMO_MSPS: dict[str, Any] = {
    "sessions": 3,
    "trials": 20,
    "frames": 50,
    "fit": MSPS_FIT,
    "stages": MSPS_STAGES,
}
QUICK_MSPS: dict[str, Any] = {
    "sessions": 3,
    "trials": 10,
    "frames": 20,
    "fit": shortened(MSPS_FIT, 2, "configs/cpu.yaml"),
    "stages": screened_lightly(MSPS_STAGES),
}
PLANS = {
    ("ps-vae", False): DEMO,
    ("ps-vae", True): QUICK,
    ("msps-vae", False): DEMO_MSPS,
    ("msps-vae", True): QUICK_MSPS,
}


def write_inputs(run_dir: Path, model: str = "ps-vae", quick: bool = False) -> Path:
    """Write the demo's built-in data and search config into ``run_dir/inputs``; returns the config."""
    import yaml

    if (model, quick) not in PLANS:
        raise UserError(f"--model {model}: the demo runs ps-vae or msps-vae")
    plan = PLANS[(model, quick)]
    inputs = run_dir / "inputs"  # the demo's own data and config, inside its run directory
    inputs.mkdir(parents=True, exist_ok=True)
    if "sessions" in plan:
        spec = synthetic.SyntheticSpec(n_trials=plan["trials"], n_frames=plan["frames"])
        files = synthetic.write_sessions(inputs / "sessions", plan["sessions"], spec)
        names = [str(p.relative_to(inputs)) for p in files]
        shown = f"{len(files)} sessions in {inputs / 'sessions'}"
    else:
        spec = synthetic.SyntheticSpec(n_trials=plan["trials"], scene=DEMO_SCENE)
        data = synthetic.write(inputs / "synthetic.h5", spec)
        names, shown = [data.name], str(data)
    config = inputs / "search.yaml"
    resources = CPU.get("resources", {})
    search = {"data": names, "fit": plan["fit"], "resources": resources, "stages": plan["stages"]}
    config.write_text(yaml.safe_dump(search))
    print(f"built-in data: {shown}\nsearch config: {config}")
    return config


def run(out: str | None = None, quick: bool = False, model: str = "ps-vae") -> int:

    from search.export import export_run
    from search.session import search_command
    from search.spec import load_spec

    run_dir = Path(out).resolve() if out else (Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")).resolve()
    check_run_id(run_dir.name, f"--out {run_dir}: the folder's name")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(f"{run_dir}: already exists and is not empty; choose another --out")
    config = write_inputs(run_dir, model, quick)
    code = search_command(load_spec(config), run_dir.name, str(run_dir.parent), None, announce=False)
    if code != 0:
        return code
    export = export_run(run_dir, run_dir / "export")
    print(
        f"\nrun directory: {run_dir}\n"
        f"  manifest.json  the stage decisions and their evidence\n"
        f"  results/       Parquet tables trials and epochs (pandas.read_parquet)\n"
        f"  report/        the report: open {run_dir / 'report' / 'index.html'} in a browser\n"
        f"  export/        the selected model: psvae.load_model({str(export)!r})\n"
        f"status: psvae status {run_dir}"
    )
    return 0
