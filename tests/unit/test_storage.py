"""Artifact store I/O on the local filesystem (s3:// is covered by integration tests)."""

from __future__ import annotations

import pytest

from readmit import storage


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    url = str(tmp_path / "a" / "b" / "report.json")
    storage.write_json(url, {"x": 1})
    storage.write_json(url, {"x": 2})
    assert storage.read_json(url) == {"x": 2}
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["report.json"]


def test_list_append_and_copy(tmp_path):
    root = str(tmp_path / "inbox")
    for name in ("b.csv", "a.csv", "c.txt"):
        storage.write_text(f"{root}/{name}", name)
    assert [u.rsplit("/", 1)[1] for u in storage.list_files(root, "*.csv")] == ["a.csv", "b.csv"]
    assert storage.list_files(str(tmp_path / "absent")) == []
    log = f"{root}/audit.jsonl"
    storage.append_line(log, '{"a": 1}')
    storage.append_line(log, '{"b": 2}')
    assert storage.read_bytes(log).decode().splitlines() == ['{"a": 1}', '{"b": 2}']
    storage.copy(f"{root}/a.csv", f"{root}/copy/a.csv")
    assert storage.read_bytes(f"{root}/copy/a.csv") == b"a.csv"


def test_file_urls_work_like_paths(tmp_path):
    url = f"file://{tmp_path}/x.txt"
    storage.write_text(url, "hello")
    assert storage.exists(url)
    assert storage.read_bytes(str(tmp_path / "x.txt")) == b"hello"


def test_a_refused_write_leaves_no_temporary_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import errno

    from fsspec.implementations.local import LocalFileSystem

    target = tmp_path / "chunk.json"
    storage.write_bytes(str(target), b"whole")

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalFileSystem, "mv", disk_full)
    with pytest.raises(OSError, match="No space left"):
        storage.write_bytes(str(target), b"new content")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunk.json"]
    assert target.read_bytes() == b"whole"
