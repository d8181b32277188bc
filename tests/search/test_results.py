"""The trials/epochs schemas and their Parquet writer, on real files in tmp_path."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from results_schema import (
    EPOCH_METRICS,
    EPOCHS_VERSION,
    TRIALS_VERSION,
    describe,
    epochs_schema,
    trial_columns_from_metrics,
    trials_schema,
)
from results_schema.tables import LATENT_COLUMNS
from search.results import read_table, stages_written, write_stage

README = Path(__file__).resolve().parents[2] / "results_schema" / "README.md"
SCHEMAS = {"trials": trials_schema, "epochs": epochs_schema}


def trial_row(stage: str, trial_id: str, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": "run-1",
        "stage": stage,
        "trial_id": trial_id,
        "status": "completed",
        "error": None,
        "alpha": 50.0,
        "beta": 5.0,
        "n_unsupervised": 2,
        "seed_model": 7,
        "epochs_run": 12,
        "best_epoch": 9,
        "precision": "float32",
        "wall_seconds": 81.5,
        "val_loss": 1.25,
        "val_pixel_mse": 0.01,
        "val_label_mse": 0.2,
        "val_label_r2": 0.8,
        "val_mi": 0.3,
        "val_tc": -0.1,
        "val_dwkl": 0.4,
        "test_loss": 1.5,
        "test_pixel_mse": 0.02,
        "test_label_mse": 0.25,
        "test_label_r2": 0.75,
        "train_mean_abs_corr_u": 0.12,
        "test_abs_corr_u01": 0.05,
        "label_names": ["paw_x", "paw_y"],
        "val_label_r2_per_label": [0.9, 0.7],
        "test_label_r2_per_label": [0.85, 0.65],
        "config_json": '{"loss.alpha": 50.0, "loss.beta": 5.0}',
        "checkpoint": f"/ckpt/{stage}/{trial_id}",
    }
    row.update(overrides)
    return row


def epoch_row(stage: str, trial_id: str, epoch: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": "run-1",
        "stage": stage,
        "trial_id": trial_id,
        "epoch": epoch,
        "status": "running",
        "alpha": 50.0,
        "beta_e": 5.0 * min(1.0, epoch / 2),
        "k_e": min(1.0, epoch / 2),
        "is_best": epoch == 1,
        "seconds": 3.0 + epoch,
    }
    for i, name in enumerate(EPOCH_METRICS):
        row[f"train_{name}"] = 10.0 * epoch + i
        row[f"val_{name}"] = 100.0 * epoch + i
    row.update(overrides)
    return row


def stage_keys(df: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(df["stage"], df["trial_id"], strict=True))


# -- the schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "version"), [("trials", TRIALS_VERSION), ("epochs", EPOCHS_VERSION)])
def test_schema_metadata_and_descriptions(name: str, version: int) -> None:
    schema = SCHEMAS[name]()
    assert schema.metadata == {b"table": name.encode(), b"version": str(version).encode()}
    assert version == {"trials": 4, "epochs": 3}[name]
    assert len(set(schema.names)) == len(schema.names)
    for field in schema:
        assert field.metadata and field.metadata[b"description"].strip(), field.name
    assert schema.names[:3] == ["run_id", "stage", "trial_id"]
    not_null = {f.name for f in schema if not f.nullable}
    expected = {"run_id", "stage", "trial_id"} | ({"status"} if name == "trials" else {"epoch"})
    assert not_null == expected


def test_epochs_has_train_and_val_column_per_metric() -> None:
    schema = epochs_schema()
    assert len(EPOCH_METRICS) == 13
    for prefix in ("train", "val"):
        for metric in EPOCH_METRICS:
            assert str(schema.field(f"{prefix}_{metric}").type) == "double"


def test_describe_is_a_markdown_row_per_column() -> None:
    schema = trials_schema()
    text = describe(schema)
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [re.match(r"\| `([^`]+)`", r).group(1) for r in rows] == schema.names  # type: ignore[union-attr]
    # every row has exactly 4 cells, so "|" inside a description is escaped
    assert all(len(re.split(r"(?<!\\)\|", r)) == 6 for r in rows)
    assert "| `label_names` | list<string> | yes |" in text
    assert "| `stage` | string | no |" in text


@pytest.mark.parametrize("name", ["trials", "epochs"])
def test_readme_mentions_every_column(name: str) -> None:
    text = README.read_text()
    assert "## `latents`" in text
    start = text.index(f"## `{name}`")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else len(text)]
    missing = [c for c in SCHEMAS[name]().names if f"`{c}`" not in section]
    assert not missing
    assert describe(SCHEMAS[name]()) in section  # the table is current with the schema


def test_readme_documents_plain_pandas_read() -> None:
    text = README.read_text()
    assert 'pd.read_parquet("results/trials")' in text
    assert "stage-<stage>" in text


# -- round trips ------------------------------------------------------------------------------


def test_trials_round_trip(tmp_path: Path) -> None:
    beta_rows = [trial_row("beta", "t2", beta=1.0), trial_row("beta", "t0", status="failed", error="OOM")]
    alpha_rows = [trial_row("alpha", "t1", alpha=100.0)]
    path_b = write_stage(tmp_path, "trials", "beta", beta_rows)
    path_a = write_stage(tmp_path, "trials", "alpha", alpha_rows)

    assert path_a == tmp_path / "trials" / "stage-alpha" / "part-0.parquet"
    for path in (path_a, path_b):
        file_schema = pq.read_schema(path)
        assert file_schema.equals(trials_schema(), check_metadata=False)
        assert file_schema.metadata[b"version"] == str(TRIALS_VERSION).encode()
        assert file_schema.metadata[b"table"] == b"trials"
        assert file_schema.field("val_loss").metadata[b"description"]

    df = read_table(tmp_path, "trials")
    assert list(df.columns) == trials_schema().names
    assert stage_keys(df) == [("alpha", "t1"), ("beta", "t0"), ("beta", "t2")]
    assert pd.api.types.is_string_dtype(df["stage"])
    assert not isinstance(df["stage"].dtype, pd.CategoricalDtype)

    by_id = df.set_index("trial_id")
    assert by_id.loc["t1", "alpha"] == 100.0
    assert by_id.loc["t2", "beta"] == 1.0
    assert by_id.loc["t0", "status"] == "failed"
    assert by_id.loc["t0", "error"] == "OOM"
    assert pd.isna(by_id.loc["t1", "error"])
    assert by_id.loc["t1", "n_unsupervised"] == 2
    assert str(df["n_unsupervised"].dtype) == "int32"
    assert list(by_id.loc["t1", "label_names"]) == ["paw_x", "paw_y"]
    assert list(by_id.loc["t1", "test_label_r2_per_label"]) == [0.85, 0.65]
    assert by_id.loc["t2", "checkpoint"] == "/ckpt/beta/t2"
    assert stages_written(tmp_path, "trials") == ["alpha", "beta"]


def test_epochs_round_trip_sorted_by_stage_trial_epoch(tmp_path: Path) -> None:
    rows = [epoch_row("alpha", tid, e) for tid in ("b", "a") for e in (2, 0, 1)]
    rows.append(epoch_row("alpha", "c", 0, status="diverged", val_loss=math.inf))
    path = write_stage(tmp_path, "epochs", "alpha", rows)
    write_stage(tmp_path, "epochs", "seeds", [epoch_row("seeds", "a", 0)])

    assert pq.read_schema(path).equals(epochs_schema(), check_metadata=False)
    assert pq.read_schema(path).metadata[b"version"] == str(EPOCHS_VERSION).encode()
    df = read_table(tmp_path, "epochs")
    assert list(df.columns) == epochs_schema().names
    assert list(zip(df["stage"], df["trial_id"], df["epoch"], strict=True)) == [
        ("alpha", "a", 0),
        ("alpha", "a", 1),
        ("alpha", "a", 2),
        ("alpha", "b", 0),
        ("alpha", "b", 1),
        ("alpha", "b", 2),
        ("alpha", "c", 0),
        ("seeds", "a", 0),
    ]
    row = df[(df["trial_id"] == "b") & (df["epoch"] == 2)].iloc[0]
    assert row["train_label_r2"] == 20.0 + EPOCH_METRICS.index("label_r2")
    assert row["val_kl_s"] == 200.0 + EPOCH_METRICS.index("kl_s")
    assert row["k_e"] == 1.0
    assert df["is_best"].tolist() == [e == 1 for e in df["epoch"]]
    assert df.loc[df["trial_id"] == "c", "status"].item() == "diverged"
    assert df.loc[df["trial_id"] == "c", "val_loss"].item() == math.inf


def test_plain_pandas_read_gives_one_row_per_trial(tmp_path: Path) -> None:
    write_stage(tmp_path, "trials", "alpha", [trial_row("alpha", f"t{i}") for i in range(3)])
    write_stage(tmp_path, "trials", "beta", [trial_row("beta", f"t{i}") for i in range(2)])
    write_stage(tmp_path, "trials", "seeds", [])

    df = pd.read_parquet(tmp_path / "trials")
    assert len(df) == 5
    assert sorted(df.columns) == sorted(trials_schema().names)  # `stage` once, from the files
    assert sorted(stage_keys(df)) == [
        ("alpha", "t0"),
        ("alpha", "t1"),
        ("alpha", "t2"),
        ("beta", "t0"),
        ("beta", "t1"),
    ]
    assert pd.api.types.is_string_dtype(df["stage"])

    epochs = pd.read_parquet(tmp_path / "trials" / "stage-beta" / "part-0.parquet")
    assert set(epochs["stage"]) == {"beta"}


# -- rewriting, NaN and null ------------------------------------------------------------------


def test_rewriting_a_stage_replaces_only_its_rows(tmp_path: Path) -> None:
    write_stage(tmp_path, "trials", "alpha", [trial_row("alpha", f"t{i}", val_loss=1.0) for i in range(3)])
    write_stage(tmp_path, "trials", "beta", [trial_row("beta", "t0"), trial_row("beta", "t1")])
    write_stage(tmp_path, "trials", "alpha", [trial_row("alpha", f"t{i}", val_loss=2.0) for i in (1, 3)])

    df = read_table(tmp_path, "trials")
    assert stage_keys(df) == [("alpha", "t1"), ("alpha", "t3"), ("beta", "t0"), ("beta", "t1")]
    assert df.loc[df["stage"] == "alpha", "val_loss"].tolist() == [2.0, 2.0]
    assert len(pd.read_parquet(tmp_path / "trials")) == 4
    assert os.listdir(tmp_path / "trials" / "stage-alpha") == ["part-0.parquet"]


def test_nan_stays_nan_and_none_becomes_null(tmp_path: Path) -> None:
    row = trial_row(
        "alpha",
        "t0",
        val_loss=math.nan,
        test_loss=None,
        val_label_r2_per_label=[math.nan, None],
        error=None,
    )
    del row["checkpoint"]  # missing nullable key -> null
    path = write_stage(tmp_path, "trials", "alpha", [row])

    table = pq.read_table(path)
    val_loss, test_loss = table.column("val_loss"), table.column("test_loss")
    assert val_loss.null_count == 0 and math.isnan(val_loss[0].as_py())
    assert test_loss.null_count == 1
    assert table.column("checkpoint").null_count == 1
    assert table.column("error").null_count == 1
    per_label = table.column("val_label_r2_per_label")[0].as_py()
    assert math.isnan(per_label[0]) and per_label[1] is None

    df = read_table(tmp_path, "trials")
    assert math.isnan(df.loc[0, "val_loss"])
    assert pd.isna(df.loc[0, "checkpoint"])


# -- rejected input ---------------------------------------------------------------------------


def test_unknown_column_is_rejected_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="val_los5"):
        write_stage(
            tmp_path, "trials", "alpha", [trial_row("alpha", "t0"), trial_row("alpha", "t1", val_los5=1.0)]
        )
    assert stages_written(tmp_path, "trials") == []
    assert not (tmp_path / "trials" / "stage-alpha" / "part-0.parquet").exists()


@pytest.mark.parametrize(
    ("table", "column"),
    [("trials", c) for c in ("run_id", "stage", "trial_id", "status")]
    + [("epochs", c) for c in ("run_id", "stage", "trial_id", "epoch")],
)
@pytest.mark.parametrize("how", ["missing", "none"])
def test_missing_or_null_required_column_is_rejected_by_name(
    tmp_path: Path, table: str, column: str, how: str
) -> None:
    row = trial_row("alpha", "t0") if table == "trials" else epoch_row("alpha", "t0", 0)
    if how == "missing":
        del row[column]
    else:
        row[column] = None
    with pytest.raises(ValueError, match=f"'{column}'"):
        write_stage(tmp_path, table, "alpha", [row])
    assert stages_written(tmp_path, table) == []


def test_wrong_value_type_is_rejected_by_column(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'n_unsupervised'"):
        write_stage(tmp_path, "trials", "alpha", [trial_row("alpha", "t0", n_unsupervised="two")])
    with pytest.raises(ValueError, match="'seed_model'"):
        write_stage(tmp_path, "trials", "alpha", [trial_row("alpha", "t0", seed_model=2**40)])


def test_row_of_another_stage_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'stage'"):
        write_stage(tmp_path, "trials", "alpha", [trial_row("beta", "t0")])


@pytest.mark.parametrize("stage", ["", "../up", "a/b", "stage=x", ".hidden", "_meta"])
def test_bad_stage_names_are_rejected(tmp_path: Path, stage: str) -> None:
    with pytest.raises(ValueError, match="stage name"):
        write_stage(tmp_path, "trials", stage, [])
    assert not (tmp_path / "trials").exists() or not any((tmp_path / "trials").rglob("*.parquet"))


def test_unknown_table_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'latents'"):
        write_stage(tmp_path, "latents", "alpha", [])
    with pytest.raises(ValueError, match="'trial'"):
        read_table(tmp_path, "trial")
    with pytest.raises(ValueError, match="'epoch'"):
        stages_written(tmp_path, "epoch")


# -- atomicity and empty stages ---------------------------------------------------------------


def test_interrupted_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_stage(tmp_path, "trials", "alpha", [trial_row("alpha", "t0", val_loss=1.0)])
    before = path.read_bytes()

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="simulated crash"):
        write_stage(
            tmp_path, "trials", "alpha", [trial_row("alpha", f"t{i}", val_loss=9.0) for i in range(5)]
        )
    with pytest.raises(OSError, match="simulated crash"):  # a first write of a stage fails cleanly too
        write_stage(tmp_path, "trials", "beta", [trial_row("beta", "t0")])
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["part-0.parquet"]
    assert os.listdir(tmp_path / "trials" / "stage-beta") == []
    assert stages_written(tmp_path, "trials") == ["alpha"]
    df = read_table(tmp_path, "trials")
    assert stage_keys(df) == [("alpha", "t0")]
    assert df["val_loss"].tolist() == [1.0]
    assert len(pd.read_parquet(tmp_path / "trials")) == 1


def test_empty_stage_writes_a_readable_empty_partition(tmp_path: Path) -> None:
    path = write_stage(tmp_path, "epochs", "seeds", [])
    assert path.is_file()
    assert pq.read_schema(path).equals(epochs_schema(), check_metadata=False)
    assert pq.read_table(path).num_rows == 0
    assert stages_written(tmp_path, "epochs") == ["seeds"]

    df = read_table(tmp_path, "epochs")
    assert df.empty and list(df.columns) == epochs_schema().names

    write_stage(tmp_path, "epochs", "alpha", [epoch_row("alpha", "t0", 0), epoch_row("alpha", "t0", 1)])
    assert len(read_table(tmp_path, "epochs")) == 2
    assert len(pd.read_parquet(tmp_path / "epochs")) == 2


def test_nothing_written_reads_as_empty_table(tmp_path: Path) -> None:
    assert stages_written(tmp_path, "trials") == []
    df = read_table(tmp_path / "nowhere", "trials")
    assert df.empty
    assert list(df.columns) == trials_schema().names


def test_a_version_2_trials_file_reads_with_its_newer_columns_null(tmp_path: Path) -> None:
    """Runs written before reused_from and note existed stay readable."""
    import pyarrow as pa

    rows = [trial_row("alpha", "t1", alpha=100.0)]
    path = write_stage(tmp_path, "trials", "alpha", rows)
    table = pq.read_table(path).drop_columns(["reused_from", "note"])
    old = table.replace_schema_metadata({b"table": b"trials", b"version": b"2"})
    pq.write_table(old, path)
    df = read_table(tmp_path, "trials")
    assert list(df.columns) == trials_schema().names and df["alpha"].tolist() == [100.0]
    assert df["reused_from"].isna().all() and df["note"].isna().all()
    pq.write_table(old.replace_schema_metadata({b"table": b"trials", b"version": b"99"}), path)
    with pytest.raises(ValueError, match="schema version 99"):
        read_table(tmp_path, "trials")
    assert pa is not None


# -- version 4: the unsupervised latents' columns, and older files --------------------------


def test_latent_columns_from_flat_metrics_round_trip(tmp_path: Path) -> None:
    metrics = {
        "val_loss": 1.0,
        "sigma_x": 0.031,
        "val_mu_var_u_1": 0.4,
        "val_mu_var_u_0": 0.002,  # out of order: the list follows the index, not the dict
        "val_kl_u_per_dim_0": 0.01,
        "val_kl_u_per_dim_1": 1.3,
        "n_active_u": 1.0,
        "label_leakage_u": 0.03,
        "val_mi_net": 0.5,
        "val_tc_net": 0.1,
        "val_dwkl_net": 0.2,
    }
    columns = trial_columns_from_metrics(metrics)
    assert set(columns) == {name for name, *_ in LATENT_COLUMNS}
    assert columns["val_mu_var_u"] == [0.002, 0.4] and columns["val_kl_u_per_dim"] == [0.01, 1.3]
    assert columns["n_active_u"] == 1 and type(columns["n_active_u"]) is int
    # a failed trial reports nothing: null lists and counts, NaN numbers
    empty = trial_columns_from_metrics({})
    assert empty["val_mu_var_u"] is None and empty["n_active_u"] is None and math.isnan(empty["sigma_x"])
    write_stage(
        tmp_path, "trials", "beta", [trial_row("beta", "t1", **columns), trial_row("beta", "t2", **empty)]
    )
    df = read_table(tmp_path, "trials").set_index("trial_id")
    assert list(df.loc["t1", "val_mu_var_u"]) == [0.002, 0.4]
    assert df.loc["t1", "n_active_u"] == 1 and df.loc["t1", "sigma_x"] == 0.031
    assert df.loc["t2", "val_mu_var_u"] is None


def _write_version_2(path: Path, name: str, rows: list[dict[str, Any]]) -> None:
    """A file as version 2 wrote it: the schema without the columns of versions 3 and 4."""
    import pyarrow as pa

    new = {n for n, *_ in LATENT_COLUMNS} | {"reused_from", "note"} if name == "trials" else {"sigma_x"}
    schema = SCHEMAS[name]()
    fields = [f for f in schema if f.name not in new]
    old = pa.schema(fields, metadata={"table": name, "version": "2"})
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k not in new} for r in rows], schema=old)
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)


def test_version_2_files_are_read_with_the_new_columns_null(tmp_path: Path) -> None:
    _write_version_2(
        tmp_path / "trials" / "stage-alpha" / "part-0.parquet", "trials", [trial_row("alpha", "old")]
    )
    write_stage(tmp_path, "trials", "beta", [trial_row("beta", "new", sigma_x=0.03, n_active_u=2)])
    read = read_table(tmp_path, "trials")
    assert list(read.columns) == trials_schema().names
    df = read.set_index("trial_id")
    assert df.loc["old", "alpha"] == 50.0 and df.loc["new", "sigma_x"] == 0.03
    assert math.isnan(df.loc["old", "sigma_x"]) and df.loc["old", "val_mu_var_u"] is None
    assert pd.isna(df.loc["old", "n_active_u"])
    _write_version_2(
        tmp_path / "epochs" / "stage-alpha" / "part-0.parquet", "epochs", [epoch_row("alpha", "old", 0)]
    )
    epochs = read_table(tmp_path, "epochs")
    assert math.isnan(epochs["sigma_x"].iloc[0]) and epochs["val_loss"].iloc[0] == 0.0 + EPOCH_METRICS.index(
        "loss"
    )


@pytest.mark.parametrize("version", ["1", "5", None])
def test_unknown_schema_versions_are_refused_in_one_line(tmp_path: Path, version: str | None) -> None:
    import pyarrow as pa

    path = tmp_path / "trials" / "stage-alpha" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    metadata = {"table": "trials"} | ({"version": version} if version else {})
    pq.write_table(pa.table({"run_id": ["r"]}).replace_schema_metadata(metadata), path)
    with pytest.raises(ValueError, match=r"schema version") as err:
        read_table(tmp_path, "trials")
    assert "\n" not in str(err.value) and str(path) in str(err.value) and "reads 2, 3, 4" in str(err.value)


# -- one spelling of every column, and the trainer, the loss and the schemas agree -----------------
SEARCH = Path(__file__).resolve().parents[2] / "search"
ALSO_NOT_A_COLUMN: dict[str, set[str]] = {
    # words that name something else there too: the spelling is that thing's, not a column's
    "cli.py": {"status"},  # the psvae status subcommand
    "demo.py": {"alpha", "beta", "delta", "model_class", "n_background"},  # stage names, config keys
    "driver.py": {"stage"},  # the trial's Tune config key
    "export.py": {"run_id", "status"},  # selection.json's run and its stages' manifest records
    # the manifest (its stage records, selected trial and run), Tune's config key, HTML classes
    "report/build.py": {"checkpoint", "error", "run_id", "seconds", "stage", "status", "trial_id"},
    "report/evidence.py": {"checkpoint", "error", "status"},  # the manifest; the HTML class "error"
    "report/page.py": {"note"},  # the HTML class
    "report/parts.py": {"alpha", "beta"},  # STAGE_TITLES: stage names
    "report/worker.py": {"error"},  # the worker's answer to a rebuild that failed
    "rundir.py": {"checkpoint", "error", "run_id", "seconds", "stage", "status", "trial_id"},  # manifest
    "scheduler.py": {"alpha", "beta", "msp_alpha", "stage", "trial_id", "checkpoint"},  # stages, decision
    "spec.py": {"alpha", "beta", "delta", "msp_alpha", "n_unsupervised", "sigma_x"},  # stage names
    "trainable.py": {"best_epoch", "epochs_run", "label_names", "precision", "stage", "status"},  # summary
}


def _table_columns() -> set[str]:
    return set(trials_schema().names) | set(epochs_schema().names)


def test_no_column_is_spelled_outside_results_schema() -> None:
    names = _table_columns()
    spelled = []
    unused = {relative: set(words) for relative, words in ALSO_NOT_A_COLUMN.items()}
    for file in sorted(SEARCH.rglob("*.py")):
        relative = file.relative_to(SEARCH).as_posix()
        allowed = ALSO_NOT_A_COLUMN.get(relative, set())
        for lineno, line in enumerate(file.read_text().splitlines(), 1):
            # a quoted name, unless it is a header padded for display: f"{'stage':<10}"
            for match in re.finditer(r"""(["'])([a-z0-9_]+)\1(?!:[<>^])""", line):
                if match.group(2) in names and match.group(2) not in allowed:
                    spelled.append(f"search/{relative}:{lineno}: {match.group(0)}")
                unused.get(relative, set()).discard(match.group(2))
    assert not spelled, "use results_schema.columns:\n" + "\n".join(spelled)
    # an allowance outlives its word's last use only to let a column through unseen later
    stale = {relative: sorted(words) for relative, words in unused.items() if words}
    assert not stale, f"ALSO_NOT_A_COLUMN allows words no longer spelled there: {stale}"


def test_every_column_has_one_constant_and_every_constant_a_column() -> None:
    from results_schema import columns

    constants = {k: v for k, v in vars(columns).items() if k.isupper()}
    values = list(constants.values())
    assert len(values) == len(set(values)), "two constants name one column"
    epoch_metrics = {columns.epoch_metric(s, m) for s in ("train", "val") for m in EPOCH_METRICS}
    assert set(values) <= _table_columns()
    assert _table_columns() - epoch_metrics <= set(values)  # the rest are spelled by epoch_metric()
    assert all(k == v.upper() for k, v in constants.items())


@pytest.fixture(scope="module")
def one_fit(synthetic_file):
    from psvae.data import load_data
    from psvae.trainer import Trainer
    from tests.conftest import small_config

    cfg = small_config(**{"train.epochs": 1, "loss.anneal_epochs": 0})
    trainer = Trainer(cfg, load_data([str(synthetic_file)], cfg.data.split, cfg.data.split_seed))
    results = list(trainer.epochs())
    return results[-1], trainer.finish()


def test_the_losses_terms_are_the_epoch_metrics() -> None:
    from psvae.losses import TERMS

    assert set(TERMS) <= set(EPOCH_METRICS)
    assert set(EPOCH_METRICS) - set(TERMS) == {"pixel_mse", "label_mse", "label_r2"}  # not loss terms


def test_every_epoch_metric_of_the_trainer_has_a_column_and_every_column_a_metric(one_fit) -> None:
    from results_schema import columns as col

    epoch, _ = one_fit
    keys = {col.RUN_ID, col.STAGE, col.TRIAL_ID}  # the scheduler adds the row's keys
    assert set(epoch.flat()) == set(epochs_schema().names) - keys


def test_the_trials_columns_filled_from_metrics_are_the_trainers_metrics(one_fit) -> None:
    from results_schema import columns as col
    from search.scheduler import SUMMARY_COLUMNS

    _, summary = one_fit
    from_metrics = set(SUMMARY_COLUMNS) | {name for name, *_ in LATENT_COLUMNS}
    assert from_metrics <= set(trials_schema().names)
    several_sessions = {col.VAL_SESSION_ACC, col.SESSION_CHANCE}  # this fit has one session
    per_dim = {col.VAL_MU_VAR_U, col.VAL_KL_U_PER_DIM, col.N_ACTIVE_U}  # from <column>_<i>, or counted
    assert from_metrics - several_sessions - per_dim <= set(summary.metrics)
    stored = from_metrics | {f"{c}_{i}" for c in (col.VAL_MU_VAR_U, col.VAL_KL_U_PER_DIM) for i in range(8)}
    stored |= {f"{split}_label_r2_{n}" for split in ("val", "test") for n in summary.label_names}
    assert set(summary.metrics) - stored == set(), "metrics of the fit no trials column stores"
