"""The layout is the architecture: psvae/ is plain PyTorch and never pulls in Ray, Plotly or
pyarrow (checked in a fresh interpreter, so an indirect import is caught too)."""

import subprocess
import sys


def test_psvae_imports_no_service_dependencies():
    code = (
        "import sys, psvae, psvae.synthetic, psvae.fit\n"
        "[getattr(psvae, name) for name in psvae.__all__]\n"  # its names are imported on first use
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'ray', 'plotly', 'pyarrow', 'optuna'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports, anywhere in it (inside functions too)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    modules = {}
    for package in ("psvae", "search", "results_schema", "cluster"):
        for file in (root / package).rglob("*.py"):
            name = ".".join(file.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = file

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, file in modules.items():
        for node in ast.walk(ast.parse(file.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [resolve(f"{node.module}.{a.name}") or resolve(node.module) for a in node.names]
            graph[name] |= {t for t in targets if t is not None and t != name}
    return graph


def test_no_import_cycles():
    graph = _import_graph()
    assert {"search.driver", "search.scheduler", "search.rundir"} <= set(graph)  # it saw the project
    cycles = []
    for start in graph:  # a depth-first walk from every module: a path back to it is a cycle
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not cycles, cycles[:5]


def test_export_status_and_the_run_directory_need_no_ray():
    code = (
        "import sys, search.export, search.status, search.rundir, search.scheduler\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] == 'ray')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_public_names_of_psvae_are_there_and_imported_on_first_use():
    code = (
        "import sys, psvae\n"
        "print('torch' in sys.modules)\n"
        "from psvae import FitConfig, Trainer, load_model, run_fit\n"
        "print('torch' in sys.modules, all(getattr(psvae, n) is not None for n in psvae.__all__))\n"
        "print(psvae.Trainer is Trainer and psvae.PSVAE.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:3] == ["False", "True True", "psvae.model"]
    missing = subprocess.run(
        [sys.executable, "-c", "import psvae; psvae.nothing"], capture_output=True, text=True
    )
    assert missing.returncode == 1 and "module 'psvae' has no attribute 'nothing'" in missing.stderr


def test_commands_that_only_read_a_run_do_not_import_torch(tmp_path):
    """``psvae --help``, an argument error and a damaged run under ``status`` and ``resume``
    answer without importing PyTorch (about 2 s of the 2.5 s such a command took). A finished
    run's ``status`` and ``resume``: tests/search/test_damaged_runs.py."""
    from tests.conftest import imports_torch

    run = tmp_path / "r1"
    run.mkdir()
    (run / "manifest.json").write_text("{")  # a damaged manifest: status and resume refuse it
    assert imports_torch("--help") == (0, False)
    assert imports_torch("status") == (2, False)
    assert imports_torch("status", str(run)) == (2, False)
    assert imports_torch("resume", str(run)) == (2, False)


def test_a_search_refused_before_it_starts_does_not_import_torch(tmp_path, synthetic_file):
    """The spec's checks read the session files through psvae.datafiles, without PyTorch: a
    search refused before it starts answers in a fraction of a second (it took about 4 s)."""
    from tests.conftest import imports_torch

    config = tmp_path / "search.yaml"
    config.write_text(f"data: [{synthetic_file}]\nfit: {{train.epochs: 2, loss.anneal_epochs: 1}}\n")
    mine = tmp_path / "runs" / "thesis"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("a folder of the user's")
    search = ("search", "--config", str(config), "--storage", str(tmp_path / "runs"))
    assert imports_torch(*search, "--run-id", "thesis") == (2, False)  # not a search run
    config.write_text("data: [missing.h5]\n")
    assert imports_torch(*search, "--run-id", "r2") == (2, False)  # no such file
    assert not (tmp_path / "runs" / "r2").exists()
