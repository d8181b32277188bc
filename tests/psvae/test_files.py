"""The one atomic writer: a file is in place whole or not at all, and no temporary is left."""

from __future__ import annotations

import pytest

from psvae.files import TEMP_MARK, atomic_path, write_json_atomic, write_text_atomic


def test_a_clean_block_puts_the_file_in_place_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "table.parquet"
    with atomic_path(target, suffix=".npz") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and TEMP_MARK in tmp.name
        assert tmp.name.endswith(".npz") and not tmp.exists()  # nothing created for the writer
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["table.parquet"]


def test_an_error_keeps_the_old_file_and_removes_the_part_written(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_two_writers_never_share_a_temporary(tmp_path):
    target = tmp_path / "x"
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b
        a.write_text("a")
        b.write_text("b")
    assert target.read_text() == "a"  # the outer block ends last


def test_text_and_json(tmp_path):
    write_text_atomic(tmp_path / "t.txt", "hello\n")
    write_json_atomic(tmp_path / "j.json", {"b": float("nan"), "a": 1})
    assert (tmp_path / "t.txt").read_text() == "hello\n"
    assert (tmp_path / "j.json").read_text() == '{\n  "a": 1,\n  "b": null\n}\n'
