"""The search's result tables on disk: one Parquet file per table and stage.

Layout (see ``results_schema/README.md``)::

    <results_dir>/trials/stage-<stage>/part-0.parquet
    <results_dir>/epochs/stage-<stage>/part-0.parquet

Each file holds every row of its stage, ``stage`` column included, with the exact schema from
``results_schema``. A stage is always written whole, so rewriting it replaces its rows and
leaves the other stages alone. The partition folders are deliberately *not* named
``stage=<stage>``: pyarrow would then infer a dictionary-typed ``stage`` partition column that
clashes with the string column in the files, and a plain ``pandas.read_parquet(<table dir>)``
would fail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from psvae.files import atomic_path
from results_schema import columns as col
from results_schema import epochs_schema, trials_schema
from results_schema.tables import READABLE_VERSIONS

TABLES: dict[str, Callable[[], pa.Schema]] = {"trials": trials_schema, "epochs": epochs_schema}
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "trials": (col.STAGE, col.TRIAL_ID),
    "epochs": (col.STAGE, col.TRIAL_ID, col.EPOCH),
}
STAGE_DIR_PREFIX = "stage-"
PART_FILE = "part-0.parquet"
# Stage names become folder names; a leading "." or "_" would make Parquet readers skip the folder.
STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

PathLike = str | os.PathLike[str]


def _schema(table_name: str) -> pa.Schema:
    if table_name not in TABLES:
        raise ValueError(f"unknown table {table_name!r}; expected one of {sorted(TABLES)}")
    return TABLES[table_name]()


def _stage_file(results_dir: PathLike, table_name: str, stage: str) -> Path:
    if not isinstance(stage, str) or not STAGE_NAME.fullmatch(stage):
        raise ValueError(
            f"invalid stage name {stage!r}: letters, digits, '_', '.', '-', starting with a letter or digit"
        )
    return Path(results_dir) / table_name / f"{STAGE_DIR_PREFIX}{stage}" / PART_FILE


def _to_arrow(schema: pa.Schema, stage: str, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts keyed by column name) as a table with exactly ``schema``."""
    known = set(schema.names)
    table_name = schema.metadata[b"table"].decode()
    required = [f.name for f in schema if not f.nullable]
    for i, row in enumerate(rows):
        unknown = [key for key in row if key not in known]
        if unknown:
            raise ValueError(f"row {i}: unknown column {unknown[0]!r} (not in the {table_name} schema)")
        for name in required:
            if row.get(name) is None:
                raise ValueError(f"row {i}: column {name!r} is missing or null but may not be null")
        if row[col.STAGE] != stage:
            raise ValueError(
                f"row {i}: column {col.STAGE!r} is {row[col.STAGE]!r} but this is stage {stage!r}"
            )
    arrays = []
    for field in schema:
        values = [row.get(field.name) for row in rows]
        try:
            # from_pandas=False (the default): NaN stays NaN, only None becomes null.
            arrays.append(pa.array(values, type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as err:
            raise ValueError(
                f"column {field.name!r}: cannot store the values as {field.type}: {err}"
            ) from err
    return pa.Table.from_arrays(arrays, schema=schema)


def _write_file_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` so that readers see the old file or the new one, never a part.

    The temporary file lives in the same folder (so the rename is atomic) and starts with ".",
    which Parquet dataset readers skip. This is the only function that writes files.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_stage(
    results_dir: PathLike, table_name: str, stage: str, rows: Sequence[Mapping[str, Any]]
) -> Path:
    """Write all rows of ``stage`` to ``table_name``, replacing what the stage had; returns the file.

    Missing nullable columns become null; unknown columns, missing or null not-null columns, a
    ``stage`` value other than ``stage`` and values of the wrong type raise ``ValueError``.
    An empty ``rows`` writes an empty file with the schema.
    """
    schema = _schema(table_name)
    path = _stage_file(results_dir, table_name, stage)
    table = _to_arrow(schema, stage, rows)
    table = table.sort_by([(key, "ascending") for key in SORT_KEYS[table_name]])
    _write_file_atomic(table, path)
    return path


def stages_written(results_dir: PathLike, table_name: str) -> list[str]:
    """The stages of ``table_name`` that have a file, sorted."""
    _schema(table_name)
    base = Path(results_dir) / table_name
    if not base.is_dir():
        return []
    stages = [
        p.parent.name.removeprefix(STAGE_DIR_PREFIX)
        for p in base.glob(f"{STAGE_DIR_PREFIX}*/{PART_FILE}")
        if p.is_file()
    ]
    return sorted(stages)


def read_table(results_dir: PathLike, table_name: str) -> pd.DataFrame:
    """Every stage of ``table_name`` as one DataFrame, ordered by stage, trial_id (and epoch).

    Nothing written gives an empty DataFrame with the schema's columns.
    """
    return _read_arrow(results_dir, table_name).to_pandas()


def read_rows(results_dir: PathLike, table_name: str) -> list[dict[str, Any]]:
    """Every row of ``table_name`` as a dict of Python values (null as None, lists as lists): the
    form :func:`write_stage` takes back."""
    return list(_read_arrow(results_dir, table_name).to_pylist())


def _read_arrow(results_dir: PathLike, table_name: str) -> pa.Table:
    schema = _schema(table_name)
    files = [_stage_file(results_dir, table_name, s) for s in stages_written(results_dir, table_name)]
    if not files:
        return schema.empty_table()
    readable = {str(v).encode() for v in READABLE_VERSIONS[table_name]}
    tables = []
    for file in files:
        found = (pq.read_schema(file).metadata or {}).get(b"version", b"(none)")
        if found not in readable:
            raise ValueError(
                f"{file}: {table_name} schema version {found.decode()}, this psvae-tune reads "
                f"{', '.join(sorted(v.decode() for v in readable))}; rewrite the stage"
            )
        part = pq.read_table(file)
        # an older file lacks the newer columns: they read as null
        columns = [
            part.column(f.name).cast(f.type) if f.name in part.column_names else pa.nulls(len(part), f.type)
            for f in schema
        ]
        tables.append(pa.Table.from_arrays(columns, schema=schema))
    table = pa.concat_tables(tables)
    return table.sort_by([(key, "ascending") for key in SORT_KEYS[table_name]])
