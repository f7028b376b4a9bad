"""The one process helper: a PID is signalled only while it is the process that was started."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

from readmit.ops import processes


def test_stop_group_stops_its_own_group_and_spares_a_recycled_pid() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    started = processes.start_time(child.pid)
    assert started is not None and processes.alive(child.pid, started)
    # Another start time: as if the PID had been recycled by an unrelated process.
    assert not processes.alive(child.pid, started + 1)
    assert processes.stop_group(child.pid, started + 1, timeout_s=1) is False
    assert child.poll() is None, "a process that is not ours was signalled"
    assert processes.stop_group(child.pid, started, timeout_s=5) is True
    assert child.wait(timeout=5) is not None
    assert not processes.alive(child.pid, started)


def test_ports_on_loopback() -> None:
    port = processes.free_port()
    assert processes.port_free(port)
    assert processes.free_port(taken=[port]) != port
    assert processes.http_get(f"http://{processes.HOST}:{port}/", timeout=1) == (0, b"")


def test_free_ports_are_never_ephemeral_so_a_probe_cannot_connect_to_itself() -> None:
    """A probe of a port in the ephemeral range, sent before the server listens, can be given
    that port as its source and read its own request back (CI: BadStatusLine: GET /readyz)."""
    low, _ = processes.ephemeral_port_range()
    ports = {processes.free_port() for _ in range(200)}
    assert len(ports) > 100 and all(port >= 1024 and port + 1 < low for port in ports)


def test_http_get_reports_an_answer_that_is_not_http_as_no_answer() -> None:
    """What a self-connected probe reads: its own request line echoed back."""
    with socket.socket() as listener:
        listener.bind((processes.HOST, 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def echo() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(conn.recv(4096))

        thread = threading.Thread(target=echo, daemon=True)
        thread.start()
        assert processes.http_get(f"http://{processes.HOST}:{port}/readyz", timeout=3) == (0, b"")
        thread.join(timeout=5)


def test_a_deployed_service_ships_its_log_to_the_deployers_artifact_store(
    tmp_path, monkeypatch
) -> None:
    """The served bento runs its own copy of the code, whose default artifact store is inside
    the bento: `make run` once logged there and monitoring read nothing."""
    from readmit import serving
    from readmit.ops import deploy
    from readmit.settings import Settings

    monkeypatch.delenv("READMIT_ARTIFACTS_URI", raising=False)
    deployer = Settings(_env_file=None, artifacts_uri=str(tmp_path / "store"))
    env = deploy._env(deployer)
    assert env["READMIT_ARTIFACTS_URI"] == deployer.artifacts_uri
    as_served = Settings(_env_file=None, artifacts_uri=env["READMIT_ARTIFACTS_URI"])
    assert serving.prediction_log_uri(as_served) == deployer.layout.prediction_logs()
