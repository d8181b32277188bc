"""The layout is the architecture: psvae/ is plain PyTorch and never pulls in Ray, Plotly or
pyarrow (checked in a fresh interpreter, so an indirect import is caught too)."""

import subprocess
import sys


def test_psvae_imports_no_service_dependencies():
    code = (
        "import sys, psvae, psvae.synthetic, psvae.fit\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'ray', 'plotly', 'pyarrow', 'optuna'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
