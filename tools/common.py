"""What the commands, the demo and the benchmarks share; it imports no command module.

`run_sync` runs a coroutine from synchronous code, `ensure_model` makes sure the registry has a champion,
`train_model` is `nomenclature train`, and `operator_errors` turns the errors an operator can cause or fix
into a one-line message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from streams.settings import Settings

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
# = models.datasets.builder.DEFAULT_SOURCE, without importing pyarrow into every command's start-up
BUNDLED_DATA = ROOT / "models" / "datasets" / "data" / "okpd2_labeled.csv"
SAMPLE_ITEMS = ROOT / "connectors" / "samples" / "sample_items.csv"


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion in a private thread, leaving the main thread's event loop alone."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="nomenclature-sync")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


@contextlib.contextmanager
def operator_errors() -> Iterator[None]:
    """Turn the errors an operator can cause or fix into a one-line message and exit code 1."""
    from models.registry.model_registry import (
        ChecksumError,
        FeaturizerMismatchError,
        NothingToRollBackError,
        UnknownModelError,
    )

    try:
        yield
    except UnknownModelError as exc:
        raise SystemExit(f"nomenclature: {exc}; `nomenclature models list` shows the models") from None
    except ChecksumError as exc:
        raise SystemExit(f"nomenclature: refusing to load the model, checksum mismatch: {exc}") from None
    except (FeaturizerMismatchError, NothingToRollBackError, ValueError, OSError) as exc:
        raise SystemExit(f"nomenclature: {exc}") from None


def ensure_model(settings: Settings, data: Path | None = None) -> str:
    """The champion's version. A registry without one gets the shipped default model (models/default/),
    or, with the labelled CSV `data` or when the featurizer code changed since the shipped model was built,
    a model trained now (on `data` or the bundled dataset). A champion the running featurizer code cannot
    serve (trained before a featurizer change) is replaced the same way, and stays in the registry. Workers
    sharing a models directory that start together install or train once: the others wait on the lock and
    find the champion."""
    import logging

    from models.registry import default_model
    from models.registry.model_registry import FeaturizerMismatchError, ModelRegistry
    from models.training.feature_store import locked

    log = logging.getLogger(__name__)
    registry = ModelRegistry(settings.models_dir)
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    with locked(settings.models_dir / "first-model"):
        champion = registry.champion()
        if champion is not None:
            try:
                registry.load(champion.version)
                return champion.version
            except FeaturizerMismatchError as exc:
                log.warning("the champion cannot serve, replacing it: %s", exc)
        if data is None:
            shipped = default_model.shipped()
            if shipped is not None and shipped.matches_code:
                version = shipped.record["version"]
                known = {record.version for record in registry.list()}
                if version not in known:
                    default_model.install(registry)
                if champion is not None:
                    registry.promote(version)
                return version
            log.warning(
                "no shipped default model matches the running featurizer code (models/default/ is missing, "
                "or the featurizer changed since it was built: python -m tools.build_default_model rebuilds "
                "it); training one on the bundled dataset"
            )
        version = train_model(settings, data=data, seed=42, notes="trained at first start")
        if champion is not None:
            registry.promote(version)
        return version


def train_model(
    settings: Settings,
    *,
    data: Path | None = None,
    dataset: Path | None = None,
    validation_dataset: Path | None = None,
    extra: Sequence[Path] = (),
    features: Path | None = None,
    seed: int = 42,
    max_epochs: int | None = None,
    patience: int | None = None,
    notes: str | None = None,
) -> str:
    """`nomenclature train`: train on the CSV `data` or on a dataset directory (default: the bundled
    dataset) with the `extra` labelled CSVs beside it, register the model, print a JSON summary and return
    the version."""
    from models.registry.model_registry import ModelRegistry
    from models.training.train import (
        DEFAULT_MAX_EPOCHS,
        DEFAULT_PATIENCE,
        registry_data,
        train,
        train_dataset,
    )

    options = {
        "seed": seed,
        "max_epochs": DEFAULT_MAX_EPOCHS if max_epochs is None else max_epochs,
        "patience": DEFAULT_PATIENCE if patience is None else patience,
    }
    registry = ModelRegistry(settings.models_dir)
    if data is not None and extra:
        raise ValueError("--extra goes with a dataset (the bundled one by default), not with --data")
    if data is not None:
        classifier, metrics = train(Path(data), **options)
        record = registry.register(classifier, metrics, Path(data), notes=notes)
    else:
        dataset, validation = _training_datasets(settings, dataset, validation_dataset)
        if extra:
            from models.datasets.extra_sources import extended_dataset

            dataset = extended_dataset(dataset, extra, settings.data_dir / "datasets", seed=seed)
        feature_root = Path(features) if features else settings.data_dir / "features"
        classifier, metrics = train_dataset(
            dataset, feature_root=feature_root, validation_dir=validation, **options
        )
        data_sha256, data_rows = registry_data(metrics)
        record = registry.register(
            classifier, metrics, dataset, notes=notes, data_sha256=data_sha256, data_rows=data_rows
        )
    keys = ("accuracy", "macro_f1", "best_epoch", "epochs_run", "rows_per_s_per_epoch", "featurize_seconds")
    summary = {k: metrics.get(k) for k in (*keys, "train_seconds", "peak_rss_mb")}
    summary["dataset"] = metrics.get("dataset", {}).get("version") if data is None else str(data)
    print(
        json.dumps(
            {"version": record.version, "sha256": record.artifact_sha256, **summary}, ensure_ascii=False
        )
    )
    return record.version


def _training_datasets(
    settings: Settings, dataset: Path | None, validation_dataset: Path | None
) -> tuple[Path, Path | None]:
    """(dataset to train on, dataset to validate on when it has no validation split)."""
    from models.training.train import bundled_dataset, default_validation_dir

    datasets_root = settings.data_dir / "datasets"
    dataset = Path(dataset) if dataset else bundled_dataset(datasets_root)
    if validation_dataset:
        return dataset, Path(validation_dataset)
    return dataset, default_validation_dir(dataset, datasets_root)
