"""``latents.parquet``: one row per encoded frame (written by ``psvae encode``)."""

from __future__ import annotations

import pyarrow as pa

LATENTS_VERSION = 1


def latents_columns(
    label_names: list[str], n_background: int, n_unsupervised: int
) -> list[tuple[str, pa.DataType, str]]:
    """(name, type, description) of every column, in order."""
    cols: list[tuple[str, pa.DataType, str]] = [
        ("session_file", pa.string(), "the HDF5 file the frame came from"),
        ("trial", pa.string(), "trial name in that file (e.g. trial_0003)"),
        ("frame", pa.int32(), "frame index within the trial, from 0"),
    ]
    cols += [
        (f"z_s_{n}", pa.float32(), f"supervised latent (posterior mean) tied to label {n}")
        for n in label_names
    ]
    cols += [
        (f"z_b_{i}", pa.float32(), f"background latent {i} (multi-session models)")
        for i in range(n_background)
    ]
    cols += [
        (f"z_u_{i}", pa.float32(), f"unsupervised latent {i} (posterior mean)") for i in range(n_unsupervised)
    ]
    cols += [(f"label_{n}", pa.float32(), f"predicted label {n}, in the original units") for n in label_names]
    cols += [
        (f"label_z_{n}", pa.float32(), f"predicted label {n}, z-scored with the training statistics")
        for n in label_names
    ]
    return cols


def latents_schema(label_names: list[str], n_background: int, n_unsupervised: int) -> pa.Schema:
    fields = [
        pa.field(name, dtype, nullable=False, metadata={"description": text})
        for name, dtype, text in latents_columns(label_names, n_background, n_unsupervised)
    ]
    return pa.schema(fields, metadata={"table": "latents", "version": str(LATENTS_VERSION)})
