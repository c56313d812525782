"""Run-folder files are written whole (via a rename) and readable as plain files would be."""

from __future__ import annotations

import os
import stat

import pytest

from seqlab.reporting import atomic_write


def test_atomic_write_gives_the_mode_a_plain_open_would(tmp_path) -> None:
    (tmp_path / "plain.txt").write_text("x")
    atomic_write(tmp_path / "metrics.json", "{}\n")
    assert (tmp_path / "metrics.json").read_text() == "{}\n"
    mode = stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert {p.name for p in tmp_path.iterdir()} == {"plain.txt", "metrics.json"}


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch) -> None:
    atomic_write(tmp_path / "metrics.json", "old\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "metrics.json", "new\n")
    assert (tmp_path / "metrics.json").read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
