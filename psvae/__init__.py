"""psvae: the Partitioned Subspace VAE in plain PyTorch.

Data (BehaveNet-layout HDF5), the network, the six-term loss, a trainer that yields one
result per epoch, metrics, the built-in synthetic dataset and the exportable model bundle.
This package never imports Ray, Plotly or pyarrow; the search service builds on it.
"""

from psvae.config import DataConfig, FitConfig, LossConfig, ModelConfig, TrainConfig
from psvae.data import FrameData, LabelStats, load_data
from psvae.errors import ConfigError, DataError, UserError
from psvae.export import Encoded, FittedModel, load_model, save_bundle
from psvae.fit import run_fit
from psvae.model import PSVAE
from psvae.provenance import package_version
from psvae.trainer import EpochResult, FitSummary, Trainer

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
