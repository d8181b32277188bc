"""``psvae demo``: the built-in dataset through the whole staged search on a local Ray."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from psvae import synthetic
from psvae.errors import UserError

# The guide's stages on the built-in 64x64 data with a CPU-sized schedule; the default
# network is kept. The paper's lr 1e-4 and 100 annealing epochs are for hours on a GPU.
DEMO: dict[str, Any] = {
    "trials": 40,
    "fit": {"train": {"epochs": 8, "lr": 1e-3, "batch_size": 128}, "loss": {"anneal_epochs": 2}},
    "stages": [
        {"name": "alpha", "values": [50, 100, 500, 1000]},
        {"name": "beta", "values": [1, 5, 10, 20]},
        {"name": "seeds", "values": [0, 1, 2]},
    ],
}
QUICK: dict[str, Any] = {
    "trials": 10,
    "fit": {"train": {"epochs": 2, "lr": 1e-3, "batch_size": 128}, "loss": {"anneal_epochs": 1}},
    "stages": DEMO["stages"],
}


def run(out: str | None = None, quick: bool = False) -> int:
    import yaml

    from search.cli import search_command
    from search.export import export_run
    from search.spec import load_spec

    run_dir = Path(out).resolve() if out else (Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")).resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(f"{run_dir}: already exists and is not empty; choose another --out")
    plan = QUICK if quick else DEMO
    inputs = run_dir / "inputs"  # the demo's own data and config, inside its run directory
    inputs.mkdir(parents=True, exist_ok=True)
    data = synthetic.write(inputs / "synthetic.h5", synthetic.SyntheticSpec(n_trials=plan["trials"]))
    config = inputs / "search.yaml"
    config.write_text(yaml.safe_dump({"data": [data.name], "fit": plan["fit"], "stages": plan["stages"]}))
    print(f"built-in data: {data}\nsearch config: {config}")
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
