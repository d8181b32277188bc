"""psvae: the Partitioned Subspace VAE in plain PyTorch.

Data (BehaveNet-layout HDF5), the network, the six-term loss, a trainer that yields one
result per epoch, metrics, the built-in synthetic dataset and the exportable model bundle.
This package never imports Ray, Plotly or pyarrow; the search service builds on it.
"""

from typing import TYPE_CHECKING, Any

from psvae.errors import ConfigError, DataError, UserError
from psvae.provenance import package_version

if TYPE_CHECKING:
    from psvae.config import DataConfig, FitConfig, LossConfig, ModelConfig, TrainConfig
    from psvae.data import FrameData, LabelStats, load_data
    from psvae.export import Encoded, FittedModel, load_model, save_bundle
    from psvae.fit import run_fit
    from psvae.model import PSVAE
    from psvae.trainer import EpochResult, FitSummary, Trainer

# Where each public name lives. They are imported on first use, so a command that only reads a
# run (``psvae status``, an argument error) does not pay for importing PyTorch (about 2 s here).
_LAZY = {
    **dict.fromkeys(["DataConfig", "FitConfig", "LossConfig", "ModelConfig", "TrainConfig"], "psvae.config"),
    **dict.fromkeys(["FrameData", "LabelStats", "load_data"], "psvae.data"),
    **dict.fromkeys(["Encoded", "FittedModel", "load_model", "save_bundle"], "psvae.export"),
    "run_fit": "psvae.fit",
    "PSVAE": "psvae.model",
    **dict.fromkeys(["EpochResult", "FitSummary", "Trainer"], "psvae.trainer"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once: later lookups are plain attribute reads
        return value
    raise AttributeError(f"module 'psvae' has no attribute {name!r}")


__version__ = package_version()  # one source: the distribution's metadata (pyproject.toml)

__all__ = [
    "PSVAE",
    "ConfigError",
    "DataConfig",
    "DataError",
    "Encoded",
    "EpochResult",
    "FitConfig",
    "FitSummary",
    "FittedModel",
    "FrameData",
    "LabelStats",
    "LossConfig",
    "ModelConfig",
    "TrainConfig",
    "Trainer",
    "UserError",
    "load_data",
    "load_model",
    "run_fit",
    "save_bundle",
]
