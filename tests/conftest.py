"""The broker for tests: KAFKA_BOOTSTRAP_SERVERS if set, Kafka in testcontainers if a Docker engine
answers, the embedded Tansu broker otherwise. Never a mock."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Broker


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # no client, no socket, no engine: all mean "no Docker here"
        return False


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield Broker(external, os.environ.get("NOMENCLATURE_BROKER_FLAVOR", "kafka"))
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.7.1").with_kraft() as kafka:
            yield Broker(kafka.get_bootstrap_server(), "kafka")
        return
    from tools.broker import EmbeddedBroker

    with EmbeddedBroker() as embedded:
        yield Broker(embedded.bootstrap, "tansu")


def _own_broker(broker: Broker) -> Iterator[Broker]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("needs a broker of its own; KAFKA_BOOTSTRAP_SERVERS names a shared one")
    if broker.flavor == "kafka":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.7.1").with_kraft() as kafka:
            yield Broker(kafka.get_bootstrap_server(), "kafka")
        return
    from tools.broker import EmbeddedBroker

    with EmbeddedBroker() as embedded:
        yield Broker(embedded.bootstrap, "tansu")


@pytest.fixture
def fresh_broker(broker: Broker) -> Iterator[Broker]:
    """A broker of its own, for tests that must not see the records other tests left on the shared one
    (a new consumer group reads every raw item from the start, and drift counts them all)."""
    yield from _own_broker(broker)


@pytest.fixture(scope="module")
def module_broker(broker: Broker) -> Iterator[Broker]:
    """A broker for one test module, for records that other tests' workers must not read (raw topics of
    its own, corrections); the shared one when KAFKA_BOOTSTRAP_SERVERS names it (unique names keep the
    module's records apart)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield broker
        return
    yield from _own_broker(broker)


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with a champion trained once per session on the bundled data (≈15 s)."""
    from models.registry.model_registry import ModelRegistry
    from models.training.train import train
    from tools.common import BUNDLED_DATA

    root = tmp_path_factory.mktemp("models")
    classifier, metrics = train(BUNDLED_DATA, seed=7, progress=False)
    ModelRegistry(root).register(classifier, metrics, BUNDLED_DATA, notes="test session")
    return root


@pytest.fixture(scope="session")
def reference_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled dataset (train + validation splits), built once per session: retraining's reference."""
    from models.training.train import bundled_dataset

    return bundled_dataset(tmp_path_factory.mktemp("datasets"))


@pytest.fixture
def models_dir(trained_models: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "models-src"
    shutil.copytree(trained_models, copy)
    return copy
