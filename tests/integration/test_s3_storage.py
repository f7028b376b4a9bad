"""readmit.storage and readmit.data against a real S3 store (SeaweedFS on loopback).

Only env vars configure the client (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_ENDPOINT_URL), exactly as a deployment would: botocore honours AWS_ENDPOINT_URL, so s3fs
needs no readmit setting for the endpoint.
"""

from __future__ import annotations

import gzip
import threading
from pathlib import Path

import pytest
import s3fs

from readmit import data, storage

pytestmark = pytest.mark.integration

DATA_FILE = Path(__file__).resolve().parents[2] / "data" / "raw" / "diabetic_data.csv.gz"


def first_lines(n: int) -> bytes:
    """Header plus the first `n` encounters of the shipped data, uncompressed."""
    with gzip.open(DATA_FILE, "rb") as fh:
        return b"".join(fh.readline() for _ in range(n + 1))


def test_bytes_text_json_round_trip(s3_prefix: str) -> None:
    blob = bytes(range(256)) * 100
    assert storage.write_bytes(f"{s3_prefix}/a/blob.bin", blob) == f"{s3_prefix}/a/blob.bin"
    storage.write_text(f"{s3_prefix}/a/note.txt", "réadmission ✓")
    storage.write_json(f"{s3_prefix}/a/scores.json", {"auc": 0.67, "features": ["age"]})

    assert storage.read_bytes(f"{s3_prefix}/a/blob.bin") == blob
    assert storage.read_bytes(f"{s3_prefix}/a/note.txt").decode() == "réadmission ✓"
    assert storage.read_json(f"{s3_prefix}/a/scores.json") == {"auc": 0.67, "features": ["age"]}
    assert storage.exists(f"{s3_prefix}/a/blob.bin")
    assert not storage.exists(f"{s3_prefix}/a/missing.bin")


def test_list_files_filters_sorts_and_keeps_the_scheme(s3_prefix: str) -> None:
    for name in ("b.json", "a.json", "c.txt", "sub/d.json"):
        storage.write_text(f"{s3_prefix}/batches/{name}", name)

    listed = storage.list_files(f"{s3_prefix}/batches", "*.json")

    assert listed == [f"{s3_prefix}/batches/a.json", f"{s3_prefix}/batches/b.json"]
    assert storage.list_files(f"{s3_prefix}/no-such-folder") == []


def test_overwrite_is_all_or_nothing_for_concurrent_readers(s3_prefix: str) -> None:
    """A reader racing a writer sees the old or the new object whole, never a mix or a stub."""
    url = f"{s3_prefix}/model/pointer.bin"
    size = 3 * 1024 * 1024
    versions = [bytes([65 + i]) * size for i in range(4)]
    storage.write_bytes(url, versions[0])
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            storage.write_bytes(url, versions[i % len(versions)])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = set()
        for _ in range(25):
            got = storage.read_bytes(url)
            assert len(got) == size and got == got[:1] * size, "a reader saw a partial object"
            seen.add(got[:1])
    finally:
        stop.set()
        thread.join()
    assert len(seen) >= 2, "the writer never replaced the object while we read it"


def test_append_line_builds_an_audit_log(s3_prefix: str) -> None:
    log = f"{s3_prefix}/audit/log.jsonl"
    storage.append_line(log, '{"event": "drift"}')
    storage.append_line(log, '{"event": "retrain"}\n')

    assert storage.read_bytes(log).decode().splitlines() == [
        '{"event": "drift"}',
        '{"event": "retrain"}',
    ]


def test_copy_between_local_files_and_s3(s3_prefix: str, tmp_path: Path) -> None:
    local = tmp_path / "in.txt"
    local.write_text("batch 7")
    storage.copy(str(local), f"{s3_prefix}/copied.txt")
    storage.copy(f"{s3_prefix}/copied.txt", str(tmp_path / "back" / "out.txt"))

    assert (tmp_path / "back" / "out.txt").read_text() == "batch 7"


def test_read_encounters_from_s3_gzip_with_checksum(s3_prefix: str) -> None:
    content = first_lines(300)
    url = f"{s3_prefix}/inbox/batch-0001.csv.gz"
    storage.write_bytes(url, gzip.compress(content))

    batch = data.read_encounters(url, expected_sha256=data.sha256_hex(content))

    assert batch.uri == url
    assert batch.frame.shape == (300, 50)
    assert str(batch.frame["encounter_id"].dtype) == "Int64"
    assert str(batch.frame["diag_1"].dtype) == "string"
    with pytest.raises(data.ChecksumError, match="does not match"):
        data.read_encounters(url, expected_sha256="0" * 64)


def test_wrong_secret_is_refused(s3_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store enforces credentials: the env's secret really is what lets us in."""
    storage.write_text(f"{s3_prefix}/secret.txt", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    s3fs.S3FileSystem.clear_instance_cache()

    with pytest.raises(PermissionError):
        storage.read_bytes(f"{s3_prefix}/secret.txt")


def test_list_files_sees_what_another_writer_added_since_the_last_listing(s3_prefix: str) -> None:
    """A long-lived reader (monitoring) lists a folder again and again while other processes
    (the service's pods) add files: every listing is the store's, never a cached one."""
    assert storage.list_files(f"{s3_prefix}/logs", "*/*.jsonl.gz") == []  # not there yet
    storage.write_text(f"{s3_prefix}/logs/2026-12-04/a.jsonl.gz", "a")
    assert len(storage.list_files(f"{s3_prefix}/logs", "*/*.jsonl.gz")) == 1
    other = s3fs.S3FileSystem(skip_instance_cache=True, **storage.s3_options())  # another pod
    other.pipe(f"{s3_prefix}/logs/2026-12-04/b.jsonl.gz".removeprefix("s3://"), b"b")
    other.pipe(f"{s3_prefix}/logs/2026-12-05/c.jsonl.gz".removeprefix("s3://"), b"c")

    listed = storage.list_files(f"{s3_prefix}/logs", "*/*.jsonl.gz")

    assert [u.rsplit("/", 1)[-1] for u in listed] == ["a.jsonl.gz", "b.jsonl.gz", "c.jsonl.gz"]
