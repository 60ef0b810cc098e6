"""The broker for tests: KAFKA_BOOTSTRAP_SERVERS if set; else NOMENCLATURE_TEST_BROKER: ``tansu`` (the
embedded broker), ``kafka`` (Apache Kafka in KRaft mode from `make kafka`'s jars) or ``testcontainers``
(Kafka in a container); unset, testcontainers where a Docker engine answers, tansu otherwise. Tests that
need a broker of their own start one of the same flavour. Never a mock."""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Broker

FLAVORS = ("tansu", "kafka", "testcontainers")
# Confluent Platform 8.1 is Apache Kafka 4.1, the version of tools/kafka/pom.xml and docker-compose.yml
TESTCONTAINERS_IMAGE = "confluentinc/cp-kafka:8.1.0"
BROKER_FIXTURES = {"broker", "fresh_broker", "module_broker"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that talks to a broker, so that one run can take just those (`-m broker`)."""
    for item in items:
        if BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.broker)


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # no client, no socket, no engine: all mean "no Docker here"
        return False


@functools.cache
def broker_flavor() -> str:
    flavor = os.environ.get("NOMENCLATURE_TEST_BROKER") or (
        "testcontainers" if _docker_answers() else "tansu"
    )
    if flavor not in FLAVORS:
        raise pytest.UsageError(
            f"NOMENCLATURE_TEST_BROKER must be one of {', '.join(FLAVORS)}, not {flavor!r}"
        )
    return flavor


def _started(flavor: str) -> Iterator[Broker]:
    """A broker of the flavour, started for the caller and stopped after it."""
    if flavor == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer(TESTCONTAINERS_IMAGE).with_kraft() as kafka:
            yield Broker(kafka.get_bootstrap_server(), "kafka")
        return
    from tools.broker import EmbeddedBroker, KafkaBroker

    with KafkaBroker() if flavor == "kafka" else EmbeddedBroker() as started:
        yield Broker(started.bootstrap, started.flavor)


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield Broker(external, os.environ.get("NOMENCLATURE_BROKER_FLAVOR", "kafka"))
        return
    yield from _started(broker_flavor())


def _own_broker(broker: Broker) -> Iterator[Broker]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("needs a broker of its own; KAFKA_BOOTSTRAP_SERVERS names a shared one")
    yield from _started(broker_flavor())


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
