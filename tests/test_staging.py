"""Staging folders: work written beside its target and renamed into place; a killed process's
leftovers removed by the next run of the same kind, a live one's left alone."""

from __future__ import annotations

import json
import os
import socket

import pytest
from stale_staging import dead_pid, plant_stale

from ecg_edge.staging import OWNER_FILE, move_into, new_stage, remove_stale, rename_into_place, staged


def _owned(parent, name, owner):
    folder = parent / name
    folder.mkdir()
    (folder / OWNER_FILE).write_text(json.dumps(owner))
    return folder


def test_stale_removed_live_and_other_hosts_kept(tmp_path):
    host = socket.gethostname()
    plant_stale(tmp_path, "export")
    _owned(tmp_path, ".export-live", {"host": host, "pid": os.getpid()})
    _owned(tmp_path, ".export-other-host", {"host": host + "-elsewhere", "pid": dead_pid()})
    _owned(tmp_path, ".export-garbled", {"host": host, "pid": "not a pid"})
    old = tmp_path / ".export-ownerless-old"
    old.mkdir()
    os.utime(old, (0, 0))
    (tmp_path / ".export-ownerless-young").mkdir()  # its process may be about to write its owner
    removed = remove_stale(tmp_path, "export")
    assert sorted(p.name for p in removed) == [".export-garbled", ".export-killed", ".export-ownerless-old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".export-live", ".export-other-host",
                                                          ".export-ownerless-young"]


def test_a_reused_pid_does_not_keep_a_dead_owners_folder(tmp_path):
    """The pid is alive, but it is another process than the one that made the folder."""
    started = _owned(tmp_path, ".fetch-reused", {"host": socket.gethostname(), "pid": os.getpid(),
                                                 "started": "1"})
    if not os.path.exists(f"/proc/{os.getpid()}/stat"):
        pytest.skip("no /proc: the pid alone decides here")
    remove_stale(tmp_path, "fetch")
    assert not started.exists()


def test_only_its_own_kind_is_removed(tmp_path):
    fetch = plant_stale(tmp_path, "fetch")
    with staged(tmp_path, "export"):
        assert fetch.exists()
    with staged(tmp_path, "fetch") as stage:
        assert not fetch.exists() and stage.exists()


def test_a_new_stage_names_its_owner_and_goes_however_the_block_ends(tmp_path):
    with pytest.raises(RuntimeError), staged(tmp_path, "triton") as stage:
        owner = json.loads((stage / OWNER_FILE).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        assert stage.name.startswith(".triton-")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_move_into_replaces_files_and_folders_whole(tmp_path):
    dest = tmp_path / "home"
    (dest / "data").mkdir(parents=True)
    (dest / "data" / "old.txt").write_text("old")
    (dest / "model.keras").write_text("old")
    (dest / "kept.txt").write_text("kept")
    with staged(dest, "fetch") as stage:
        (stage / "data").mkdir()
        (stage / "data" / "new.txt").write_text("new")
        (stage / "model.keras").write_text("new")
        move_into(stage, ["data", "model.keras"], dest)
    assert sorted(p.name for p in dest.iterdir()) == ["data", "kept.txt", "model.keras"]
    assert [p.name for p in (dest / "data").iterdir()] == ["new.txt"] and (dest / "model.keras").read_text() == "new"


def test_rename_into_place_leaves_no_owner_mark(tmp_path):
    target = tmp_path / "repo"
    target.mkdir()  # an empty folder is taken over
    stage = new_stage(tmp_path, "triton")
    (stage / "ecg_fp32").mkdir()
    rename_into_place(stage, target)
    assert [p.name for p in target.iterdir()] == ["ecg_fp32"] and not stage.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
