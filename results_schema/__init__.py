"""Every result column the project writes is spelled out here, once.

Each table has a versioned pyarrow schema and a short human-readable description (see
README.md beside this file), so the Parquet files can be read with ``pandas.read_parquet`` by
someone who has never seen the code.
"""

from results_schema.latents import LATENTS_VERSION, latents_schema
from results_schema.tables import (
    EPOCH_METRICS,
    EPOCHS_VERSION,
    READABLE_VERSIONS,
    TRIALS_VERSION,
    describe,
    epochs_schema,
    trial_columns_from_metrics,
    trials_schema,
)

__all__ = [
    "EPOCHS_VERSION",
    "EPOCH_METRICS",
    "LATENTS_VERSION",
    "READABLE_VERSIONS",
    "TRIALS_VERSION",
    "describe",
    "epochs_schema",
    "latents_schema",
    "trial_columns_from_metrics",
    "trials_schema",
]
