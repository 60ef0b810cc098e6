# Works from a fresh clone with only python3 (3.11+): `make run` installs, then runs the demo.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# pip install is skipped while this stamp is newer than pyproject.toml
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint bench bench-train clean

help:
	@echo "make install  create $(VENV) and install the package with its test extras"
	@echo "make run      demo: embedded broker + worker + sample items, prints the classified results"
	@echo "make test     the test suite (pytest)"
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

run: install
	$(BIN)/nomenclature demo

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m tools.bench

bench-train: install
	$(BIN)/python -m tools.bench_train --rows 1000000 10000000

clean:
	rm -rf .nomenclature build dist *.egg-info .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
