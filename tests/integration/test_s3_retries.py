"""Transient S3 failures are retried; a refused write leaves nothing behind.

A small fault-injecting HTTP proxy sits between s3fs and the real SeaweedFS store: it answers the
first attempt of every distinct request with an S3 error (500 InternalError, or 503 SlowDown, what
S3 says when it sheds load) and forwards everything else unchanged, so signatures, bodies and the
store are all real.
"""

from __future__ import annotations

import http.client
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import s3fs

from readmit import storage
from readmit.settings import get_settings

pytestmark = pytest.mark.integration

FAULTS = {
    "SlowDown": (503, b"Please reduce your request rate."),
    "InternalError": (500, b"We encountered an internal error. Please try again."),
}
HOP_BY_HOP = {"connection", "transfer-encoding", "keep-alive"}


class FlakyProxy(ThreadingHTTPServer):
    """Refuses the first attempt of each (method, path, query) with `fault`; forwards the rest."""

    daemon_threads = True

    def __init__(self, upstream: str, fault: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = urlsplit(upstream)
        status, message = FAULTS[fault]
        self.fault = (
            status,
            (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{fault}</Code>'
                f"<Message>{message.decode()}</Message></Error>"
            ).encode(),
        )
        self.seen: Counter[str] = Counter()
        self.refused = 0
        self.forwarded = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def first_attempt(self, key: str) -> bool:
        with self.lock:
            self.seen[key] += 1
            first = self.seen[key] == 1
            self.refused += first
            self.forwarded += not first
            return first


class _Handler(BaseHTTPRequestHandler):
    server: FlakyProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        assert "chunked" not in self.headers.get("Transfer-Encoding", ""), "unexpected chunking"
        body = self.rfile.read(length) if length else None
        if self.server.first_attempt(f"{self.command} {self.path}"):
            status, payload = self.server.fault
            self._answer(status, {"Content-Type": "application/xml"}, payload)
            return
        upstream = self.server.upstream
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
        try:  # the Host header is passed on as signed: SigV4 checks what the client signed
            conn.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
            resp = conn.getresponse()
            payload = resp.read()
            headers = {k: v for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP}
            self._answer(resp.status, headers, payload)
        finally:
            conn.close()

    def _answer(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay


@contextmanager
def flaky_endpoint(
    upstream: str, monkeypatch: pytest.MonkeyPatch, fault: str
) -> Iterator[FlakyProxy]:
    """Point s3fs (through AWS_ENDPOINT_URL, as a deployment would) at a FlakyProxy."""
    proxy = FlakyProxy(upstream, fault)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_every_request_refused_once_still_succeeds(
    s3_server, s3_prefix: str, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    blob = os.urandom(1 << 20)
    url = f"{s3_prefix}/flaky/model.bin"
    with flaky_endpoint(s3_server.endpoint, monkeypatch, fault) as proxy:
        storage.write_bytes(url, blob)
        assert storage.read_bytes(url) == blob
        assert storage.exists(url)
        storage.append_line(f"{s3_prefix}/flaky/audit.jsonl", '{"event": "promoted"}')
        assert storage.list_files(f"{s3_prefix}/flaky", "*.jsonl") == [
            f"{s3_prefix}/flaky/audit.jsonl"
        ]
    assert proxy.refused >= 5, proxy.seen  # each operation met an error first...
    assert proxy.forwarded >= proxy.refused  # ...and its retry went through
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    assert storage.read_bytes(url) == blob  # straight from the store: whole, unchanged


def test_without_retries_the_write_fails_and_leaves_nothing(
    s3_server, s3_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: one attempt only, the 500 surfaces as an error and no object exists
    (SlowDown would still be retried by s3fs itself, whatever the setting)."""
    monkeypatch.setenv("READMIT_S3_MAX_ATTEMPTS", "1")
    get_settings.cache_clear()
    url = f"{s3_prefix}/no-retry/model.bin"
    try:
        with flaky_endpoint(s3_server.endpoint, monkeypatch, "InternalError") as proxy:
            with pytest.raises(OSError, match=r"InternalError|internal error"):
                storage.write_bytes(url, b"x" * 1024)
                raise AssertionError(f"no error; requests seen: {dict(proxy.seen)}")
            assert proxy.refused >= 1
    finally:
        get_settings.cache_clear()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    assert not storage.exists(url)
