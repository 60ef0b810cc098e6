"""The settings, the README, docker-compose.yml and the Dockerfile agree, and bad values are refused.

``Settings.env_names()`` is the one list of environment variables. docker-compose.yml is read with
PyYAML when it is installed and by plain line matching otherwise (the project does not depend on PyYAML);
when both are available they must give the same environment.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import fields
from pathlib import Path

import pytest

from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

ENV_NAMES = Settings.env_names()
# read by the tests themselves, not by the service (tests/conftest.py)
TEST_HARNESS_NAMES = {"NOMENCLATURE_TEST_BROKER"}
# the variables this service reads: anything else in an environment block belongs to another program
OURS = re.compile(r"^(NOMENCLATURE_[A-Z0-9_]+|KAFKA_[A-Z0-9_]+|SCHEMA_REGISTRY_URL)$")


def mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text) is not None


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting from the environment the tests run in."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ---------------------------------------------------------------- docker-compose.yml


def compose_environment_by_lines(text: str, service: str) -> dict[str, str]:
    """The ``environment`` of one service, found by indentation: map form (``KEY: value``)
    or list form (``- KEY=value``). Enough for this project's compose file, not a YAML parser."""
    env: dict[str, str] = {}
    in_services = False
    service_indent: int | None = None
    env_indent: int | None = None
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        content = line.strip()
        if indent == 0:
            in_services = content == "services:"
            service_indent = env_indent = None
            continue
        if not in_services:
            continue
        if service_indent is None:
            if content == f"{service}:":
                service_indent = indent
            continue
        if indent <= service_indent:  # the next service
            break
        if env_indent is None:
            if content == "environment:":
                env_indent = indent
            continue
        if indent <= env_indent:  # the next key of this service
            env_indent = None
            if content == "environment:":
                env_indent = indent
            continue
        if content.startswith("- "):
            key, _, value = content[2:].strip().strip("'\"").partition("=")
        else:
            key, _, value = content.partition(":")
        env[key.strip()] = value.strip().strip("'\"")
    return env


def compose_worker_environment() -> dict[str, str]:
    text = COMPOSE.read_text(encoding="utf-8")
    by_lines = compose_environment_by_lines(text, "worker")
    try:
        import yaml
    except ImportError:
        return by_lines
    environment = yaml.safe_load(text)["services"]["worker"].get("environment") or {}
    if isinstance(environment, list):
        environment = dict(entry.partition("=")[::2] for entry in environment)
    by_yaml = {key: "" if value is None else str(value) for key, value in environment.items()}
    assert by_lines == by_yaml, "the line-matching reader of docker-compose.yml disagrees with PyYAML"
    return by_yaml


def test_compose_line_reader_reads_both_forms() -> None:
    text = (
        "services:\n"
        "  kafka:\n"
        "    environment:\n"
        "      KAFKA_NODE_ID: 1\n"
        "  worker:\n"
        "    build: .\n"
        "    environment:   # a comment\n"
        "      KAFKA_BOOTSTRAP_SERVERS: kafka:9092\n"
        '      NOMENCLATURE_WEB_HOST: "0.0.0.0"  # all interfaces\n'
        "    ports:\n"
        '      - "6066"\n'
        "  other:\n"
        "    environment:\n"
        "      - NOMENCLATURE_PARTITIONS=4\n"
        "volumes:\n"
        "  data:\n"
    )
    assert compose_environment_by_lines(text, "worker") == {
        "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
        "NOMENCLATURE_WEB_HOST": "0.0.0.0",
    }
    assert compose_environment_by_lines(text, "other") == {"NOMENCLATURE_PARTITIONS": "4"}


def test_compose_worker_sets_only_real_settings() -> None:
    env = compose_worker_environment()
    ours = {name for name in env if OURS.match(name)}
    assert ours, "docker-compose.yml's worker has no environment"
    unknown = sorted(ours - set(ENV_NAMES))
    assert not unknown, f"docker-compose.yml sets variables the service does not read: {unknown}"
    # a worker in compose must reach the Kafka service, not start the embedded broker
    assert env.get("KAFKA_BOOTSTRAP_SERVERS"), "the worker needs KAFKA_BOOTSTRAP_SERVERS"


def test_compose_worker_environment_parses(clean_env: pytest.MonkeyPatch) -> None:
    env = compose_worker_environment()
    for name, value in env.items():
        if name in ENV_NAMES:
            clean_env.setenv(name, value)
    settings = Settings.from_env()
    assert not settings.embedded_broker
    assert settings.web_host == "0.0.0.0", "inside a container the web server must listen beyond loopback"
    assert f'"{settings.web_port}"' in COMPOSE.read_text(encoding="utf-8"), (
        "docker-compose.yml's worker must publish the web port it configures"
    )


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):  # also inside a continued instruction, as Docker does
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = pending + stripped
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in dockerfile_instructions():
        if keyword != "ENV":
            continue
        words = shlex.split(args)
        if words and "=" not in words[0]:  # legacy form: ENV NAME value with spaces
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            name, _, value = word.partition("=")
            env[name] = value
    return env


def test_dockerfile_env_names_are_real_settings() -> None:
    env = dockerfile_env()
    ours = {name for name in env if OURS.match(name)}
    unknown = sorted(ours - set(ENV_NAMES))
    assert not unknown, f"the Dockerfile sets variables the service does not read: {unknown}"
    assert env.get("NOMENCLATURE_DATA_DIR") == "/data"
    assert env.get("NOMENCLATURE_WEB_HOST") == "0.0.0.0"


def test_dockerfile_volume_and_port_match_its_settings(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in dockerfile_env().items():
        if name in ENV_NAMES:
            clean_env.setenv(name, value)
    settings = Settings.from_env()
    instructions = dockerfile_instructions()
    exposed = {port for keyword, args in instructions if keyword == "EXPOSE" for port in args.split()}
    assert str(settings.web_port) in exposed
    volumes = " ".join(args for keyword, args in instructions if keyword == "VOLUME")
    assert str(settings.data_dir) in volumes, "the data dir must be a volume"


# ---------------------------------------------------------------- README


def test_every_setting_is_in_the_readme() -> None:
    assert README.exists(), "README.md is missing"
    text = README.read_text(encoding="utf-8")
    missing = [name for name in ENV_NAMES if not mentions(text, name)]
    assert not missing, f"settings missing from README.md: {missing}"


def test_readme_names_no_unknown_setting() -> None:
    assert README.exists(), "README.md is missing"
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![A-Za-z0-9_])NOMENCLATURE_[A-Z0-9][A-Z0-9_]*", text))
    unknown = sorted(named - set(ENV_NAMES) - TEST_HARNESS_NAMES)
    assert not unknown, f"README.md names settings that do not exist: {unknown}"


# ---------------------------------------------------------------- Settings itself


def test_every_setting_is_documented() -> None:
    undocumented = [f.name for f in fields(Settings) if not str(f.metadata.get("doc", "")).strip()]
    assert not undocumented
    assert len(ENV_NAMES) == len(fields(Settings)), "two fields share an environment variable"
    assert {"KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL"} <= set(ENV_NAMES)
    assert all(OURS.match(name) for name in ENV_NAMES)


def test_defaults_without_environment(clean_env: pytest.MonkeyPatch) -> None:
    assert Settings.from_env() == Settings()
    clean_env.setenv("NOMENCLATURE_PARTITIONS", "")  # empty means unset
    assert Settings.from_env().partitions == Settings().partitions


def test_from_env_parses_ints_paths_and_strings(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("NOMENCLATURE_PARTITIONS", "3")
    clean_env.setenv("NOMENCLATURE_WEB_PORT", "7077")
    clean_env.setenv("NOMENCLATURE_DATA_DIR", str(tmp_path / "state"))
    clean_env.setenv("NOMENCLATURE_BROKER_FLAVOR", "kafka")
    clean_env.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    clean_env.setenv("SCHEMA_REGISTRY_URL", "http://schema-registry:8081")
    settings = Settings.from_env()
    assert settings.partitions == 3 and isinstance(settings.partitions, int)
    assert settings.web_port == 7077
    assert settings.data_dir == tmp_path / "state" and isinstance(settings.data_dir, Path)
    assert settings.tables_dir == tmp_path / "state" / "tables"
    assert settings.models_dir == tmp_path / "state" / "models"
    assert settings.bootstrap_servers == "kafka:9092" and not settings.embedded_broker
    assert not settings.is_tansu
    assert settings.schema_registry_url == "http://schema-registry:8081"


def test_overrides_win_over_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NOMENCLATURE_PARTITIONS", "3")
    assert Settings.from_env(partitions=5).partitions == 5


def test_embedded_broker_when_no_bootstrap_servers(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NOMENCLATURE_BROKER_PORT", "29092")
    settings = Settings.from_env()
    assert settings.embedded_broker and settings.is_tansu
    assert settings.bootstrap_servers == "127.0.0.1:29092"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NOMENCLATURE_PARTITIONS", "eight"),
        ("NOMENCLATURE_WEB_PORT", "60.66"),
        ("NOMENCLATURE_BATCH_SIZE", "1e3"),
    ],
)
def test_a_bad_int_is_refused_naming_the_variable(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        Settings.from_env()


def test_a_bad_broker_flavor_is_refused_naming_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NOMENCLATURE_BROKER_FLAVOR", "redpanda")
    with pytest.raises(ValueError, match="NOMENCLATURE_BROKER_FLAVOR") as caught:
        Settings.from_env()
    assert "redpanda" in str(caught.value)


def test_the_session_timeout_sets_the_groups_timing(clean_env: pytest.MonkeyPatch) -> None:
    from streams.runtime.broker_quirks import faust_settings

    def timing() -> dict[str, float]:
        settings = Settings.from_env()
        return faust_settings(settings.is_tansu, settings.session_timeout_seconds)

    clean_env.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    assert timing() == {}  # Faust's own on Kafka
    clean_env.setenv("NOMENCLATURE_SESSION_TIMEOUT_SECONDS", "12")
    assert timing() == {"broker_session_timeout": 12.0, "broker_heartbeat_interval": 3.0}
    clean_env.delenv("KAFKA_BOOTSTRAP_SERVERS")
    clean_env.delenv("NOMENCLATURE_SESSION_TIMEOUT_SECONDS")
    assert timing() == {"broker_session_timeout": 6.0, "broker_heartbeat_interval": 2.0}  # on Tansu
    clean_env.setenv("NOMENCLATURE_SESSION_TIMEOUT_SECONDS", "0")
    with pytest.raises(ValueError, match="NOMENCLATURE_SESSION_TIMEOUT_SECONDS"):
        Settings.from_env()


def test_the_cli_reports_a_bad_setting(clean_env: pytest.MonkeyPatch) -> None:
    from tools.cli import main

    clean_env.setenv("NOMENCLATURE_TOP_K", "two")
    with pytest.raises(SystemExit) as caught:
        main(["train", "--max-epochs", "1"])
    assert "NOMENCLATURE_TOP_K" in str(caught.value.code)
