"""Artifact store I/O over fsspec: one code path for local folders and s3:// (s3fs)."""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any

import fsspec
from fsspec.core import url_to_fs


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and in-filesystem path of a URL or local path.

    S3 requests retry transient failures (5xx, SlowDown, throttling, dropped connections) in
    botocore's standard mode, `settings.s3_max_attempts` attempts each, and s3fs retries
    connection errors and SlowDown on top (5 times): a busy or restarting store delays a flow,
    it does not fail it. Credentials and endpoint still come only from the AWS_* env vars.
    """
    if url.startswith(("s3://", "s3a://")):
        return url_to_fs(url, **s3_options())
    return url_to_fs(url)


def s3_options() -> dict[str, Any]:
    """s3fs constructor options: botocore's retry policy."""
    from readmit.settings import get_settings

    attempts = get_settings().s3_max_attempts
    return {"config_kwargs": {"retries": {"total_max_attempts": attempts, "mode": "standard"}}}


def exists(url: str) -> bool:
    """True if the file or folder exists."""
    fs, path = filesystem(url)
    return bool(fs.exists(path))


def read_bytes(url: str) -> bytes:
    """Whole content of a file."""
    fs, path = filesystem(url)
    return fs.cat_file(path)


def write_bytes(url: str, data: bytes) -> str:
    """Write a file so that readers never see half of it; returns the URL.

    Local files are written to a temporary sibling and renamed (atomic on POSIX); object stores
    publish an object only when its upload completes, so a direct put is already all-or-nothing.
    """
    fs, path = filesystem(url)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if fs.protocol in ("file", ("file", "local")) or "file" in fs.protocol:
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            with fs.open(tmp, "wb") as fh:
                fh.write(data)
            fs.mv(tmp, path)
        except BaseException:
            # A full disk must not fill up further with half-written temporaries (one per
            # retried flush of every service worker).
            with contextlib.suppress(OSError):
                fs.rm(tmp)
            raise
    else:
        fs.pipe_file(path, data)
    return url


def write_text(url: str, text: str) -> str:
    """Write UTF-8 text atomically."""
    return write_bytes(url, text.encode("utf-8"))


def write_json(url: str, obj: Any) -> str:
    """Write JSON (indented, keys sorted, non-JSON types stringified) atomically."""
    return write_text(url, json.dumps(obj, indent=2, sort_keys=True, default=str))


def read_json(url: str) -> Any:
    """Parse a JSON file."""
    return json.loads(read_bytes(url))


def copy(src: str, dst: str) -> str:
    """Copy a file between any two fsspec URLs (streams through memory for small artifacts)."""
    return write_bytes(dst, read_bytes(src))


def forget_listings(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Drop the filesystem's cached listings of `path`, its parents and everything below it.

    Why: s3fs caches directory listings per process for good, and other processes (every pod
    and worker of the service, the flows) keep adding files: a long-lived reader would list the
    same folder from its cache again and again and never see new prediction-log chunks.
    """
    root = path.rstrip("/")
    fs.invalidate_cache(root)  # the folder and its parents
    cache = getattr(fs, "dircache", None)
    if cache:
        for key in [k for k in list(cache) if k.startswith(root + "/")]:
            cache.pop(key, None)


def list_files(url: str, pattern: str = "*") -> list[str]:
    """Sorted URLs of files matching a glob below a folder (empty if the folder is absent), as
    the store has them now (never a cached listing: `forget_listings`)."""
    fs, path = filesystem(url)
    forget_listings(fs, path)
    if not fs.exists(path):
        return []
    matches = fs.glob(f"{path.rstrip('/')}/{pattern}")
    prefix = url.split("://", 1)[0] + "://" if "://" in url else ""
    return sorted(prefix + m if prefix and not m.startswith(prefix) else m for m in matches)


def append_line(url: str, line: str) -> None:
    """Append one line to a log file (read-modify-write: object stores have no append)."""
    old = read_bytes(url) if exists(url) else b""
    write_bytes(url, old + line.rstrip("\n").encode("utf-8") + b"\n")


def remove(url: str) -> None:
    """Delete a file (no error if it is already gone)."""
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path)
