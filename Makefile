# Works from a fresh clone with only python3 (3.11+): `make run` installs, then runs the demo.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# pip install is skipped while this stamp is newer than pyproject.toml
STAMP := $(VENV)/.installed
# Apache Kafka's jars (tools/kafka/pom.xml), fetched again only when the pom changes
KAFKA_LIB := tools/kafka/lib
KAFKA_STAMP := $(KAFKA_LIB)/.copied

.DEFAULT_GOAL := help
.PHONY: help install kafka run test test-kafka lint bench bench-train clean

help:
	@echo "make install  create $(VENV) and install the package with its test extras"
	@echo "make run      demo: embedded broker + worker + sample items, prints the classified results"
	@echo "make test     the test suite (pytest) on the embedded broker"
	@echo "make kafka    Apache Kafka's jars into $(KAFKA_LIB) (needs Java 17+ and Maven) for \`nomenclature broker --flavor kafka\`"
	@echo "make test-kafka  every test that talks to a broker, on Apache Kafka (KRaft) started from those jars"
	@echo "make lint     ruff check"
	@echo "make bench    throughput benchmark (tools.bench)"
	@echo "make bench-train  training throughput and memory on 1M and 10M synthetic rows (tools.bench_train)"
	@echo "make clean    remove .nomenclature/ and build artefacts (keeps $(VENV))"

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test]'
	@# navec's Russian embeddings ship inside the natasha wheel; natasha itself needs pymorphy2, which
	@# does not import on Python >= 3.11, so only its files are installed (models/features/language.py)
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps 'natasha==1.6.0'
	@touch $(STAMP)

kafka: $(KAFKA_STAMP)

$(KAFKA_STAMP): tools/kafka/pom.xml
	@command -v mvn >/dev/null || { echo "make kafka: needs Maven (and a JDK 17+), e.g. apt-get install maven openjdk-17-jdk-headless" >&2; exit 1; }
	rm -rf $(KAFKA_LIB)
	mvn -q -B -f tools/kafka/pom.xml package
	@touch $(KAFKA_STAMP)

run: install
	$(BIN)/nomenclature demo

test: install
	$(BIN)/python -m pytest -q -m "not kafka"

test-kafka: install kafka
	NOMENCLATURE_TEST_BROKER=kafka $(BIN)/python -m pytest -q -m "(broker or kafka) and not surface"

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m tools.bench

bench-train: install
	$(BIN)/python -m tools.bench_train --rows 1000000 10000000

clean:
	rm -rf .nomenclature build dist *.egg-info .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
