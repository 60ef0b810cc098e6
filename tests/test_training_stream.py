"""The offline feature store (models/training/feature_store.py), the chunked epoch loop
(models/training/epoch_loop.py) and training from dataset directories (models/training/train.py). No broker
needed; runs in about half a minute."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

import models.training.feature_store as feature_store
import models.training.train as training
from models.datasets.augmentation import strip_service_prefix
from models.datasets.builder import DEFAULT_SOURCE, TRAIN, VALIDATION, read_source
from models.datasets.scale_set import BaseRow, build_scale_set
from models.features.featurizer import Featurizer
from models.registry.model_registry import ModelRegistry
from models.training.epoch_loop import fit_chunks_keeping_best, whole_batches
from models.training.feature_store import FeatureStore, dataset_column, dataset_ref, materialise, store_path
from models.training.train import build_model, bundled_dataset, registry_data, train_dataset, weights_digest
from tools.cli import main

ROWS = 2400


def _write_dataset(out: Path, rows: list[dict[str, str]], shard_rows: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for index, start in enumerate(range(0, len(rows), shard_rows)):
        part = rows[start : start + shard_rows]
        table = pa.table({c: [r[c] for r in part] for c in ("name", "label", "slice", "split")})
        pq.write_table(table, out / f"part-{index:05d}.parquet")
        shards.append({"file": f"part-{index:05d}.parquet", "rows": len(part)})
    manifest = {"version": f"ds-test{len(rows)}", "content_sha256": f"sha{len(rows)}", "rows": len(rows)}
    (out / "manifest.json").write_text(json.dumps(manifest | {"shards": shards}), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def source_rows() -> list[dict[str, str]]:
    """A seeded sample of the bundled names, every third service prefix-stripped when the rule applies; every
    7th row to validation; slices by first letter."""
    source = read_source(DEFAULT_SOURCE)
    picked = np.random.default_rng(5).choice(len(source), ROWS, replace=False)
    return [
        {
            "name": (strip_service_prefix(source[i].name) if n % 3 == 0 else None) or source[i].name,
            "label": source[i].label,
            "slice": "a_to_o" if source[i].name[:1].lower() <= "о" else "p_to_ya",
            "split": VALIDATION if n % 7 == 0 else TRAIN,
        }
        for n, i in enumerate(picked.tolist())
    ]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory, source_rows: list[dict[str, str]]) -> Path:
    return _write_dataset(tmp_path_factory.mktemp("dataset"), source_rows, shard_rows=1000)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, dataset_dir: Path) -> FeatureStore:
    return materialise(dataset_dir, tmp_path_factory.mktemp("features"), chunk_rows=300)


def _assert_same_csr(left: sp.csr_matrix, right: sp.csr_matrix) -> None:
    assert left.shape == right.shape and left.dtype == right.dtype == np.float32
    np.testing.assert_array_equal(left.indptr, right.indptr)
    np.testing.assert_array_equal(left.indices, right.indices)
    np.testing.assert_array_equal(left.data, right.data)


# ---- feature store ------------------------------------------------------------------------------


def test_stored_rows_equal_the_featurizer_rows(
    store: FeatureStore, source_rows: list[dict[str, str]]
) -> None:
    featurizer = Featurizer()
    assert store.path == store_path(store.path.parents[1], featurizer.version, f"ds-test{ROWS}")
    assert store.path.parent.name == f"featurizer={featurizer.version}"
    every = store.read()
    np.testing.assert_array_equal(every.row_ids, np.arange(ROWS))
    _assert_same_csr(every.features, featurizer.transform([{"name": r["name"]} for r in source_rows]))
    assert every.labels.tolist() == [r["label"] for r in source_rows]
    assert every.slices.tolist() == [r["slice"] for r in source_rows]

    validation = store.read(VALIDATION)
    expected = [i for i, r in enumerate(source_rows) if r["split"] == VALIDATION]
    assert validation.row_ids.tolist() == expected
    _assert_same_csr(validation.features, every.features[expected])
    assert store.rows(TRAIN) + store.rows(VALIDATION) == ROWS == store.manifest["rows"]
    assert store.manifest["splits"][VALIDATION]["rows"] == len(expected)

    looked_up = store.lookup([7, 0, 2399])
    assert looked_up.row_ids.tolist() == [7, 0, 2399]
    _assert_same_csr(looked_up.features, every.features[[7, 0, 2399]])
    with pytest.raises(KeyError):
        store.lookup([ROWS])
    assert dataset_column(Path(store.manifest["dataset"]["path"]), "name", [5, 1]) == [
        source_rows[5]["name"],
        source_rows[1]["name"],
    ]


def test_row_groups_hold_one_split_and_column_counts_match(store: FeatureStore) -> None:
    groups = store.row_groups()
    assert len(groups) > 8  # 2 shards, 300-row batches, one row group per split per batch
    for group in groups:
        table = pq.ParquetFile(store.path / group["file"]).read_row_group(group["index"], columns=["split"])
        assert set(table.column("split").to_pylist()) == {group["split"]}
        assert table.num_rows == group["rows"]
    train = store.read(TRAIN)
    np.testing.assert_array_equal(store.column_nnz(TRAIN), train.features.getnnz(axis=0))
    assert store.labels(TRAIN) == ["product", "service"]


def test_shuffled_chunks_cover_the_split_once_in_a_seeded_order(store: FeatureStore) -> None:
    def epoch(seed: int) -> list[int]:
        rng = np.random.default_rng(seed)
        return [i for chunk in store.iter_chunks(TRAIN, rng=rng) for i in chunk.row_ids.tolist()]

    in_file_order = store.read(TRAIN).row_ids.tolist()
    first = epoch(1)
    assert sorted(first) == in_file_order and first != in_file_order
    assert epoch(1) == first and epoch(2) != first
    chunk = next(store.iter_chunks(TRAIN, rng=np.random.default_rng(3)))
    reference = store.lookup(chunk.row_ids)  # shuffled rows keep their own features and labels
    _assert_same_csr(chunk.features, reference.features)
    assert chunk.labels.tolist() == reference.labels.tolist()


def test_a_complete_store_is_reused_and_a_partial_one_rebuilt(
    tmp_path: Path, dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = materialise(dataset_dir, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()}
    built: list[Path] = []
    original = feature_store._build

    def counting_build(*args: Any, **kwargs: Any) -> None:
        built.append(args[1])
        original(*args, **kwargs)

    monkeypatch.setattr(feature_store, "_build", counting_build)
    again = materialise(dataset_dir, tmp_path)
    assert built == [] and again.path == first.path
    assert {p.name: p.stat().st_mtime_ns for p in again.path.iterdir()} == before

    (first.path / "_SUCCESS").unlink()  # as if the build had been interrupted
    (first.path / "part-00001.parquet").write_bytes(b"partial")
    rebuilt = materialise(dataset_dir, tmp_path)
    assert built == [first.path]
    _assert_same_csr(rebuilt.read().features, FeatureStore(first.path).read().features)
    with pytest.raises(FileNotFoundError):
        FeatureStore(tmp_path / "missing")

    narrow = Featurizer(n_features=2048, n_field_features=128)
    other = materialise(dataset_dir, tmp_path, narrow)
    assert other.path.parent != first.path.parent and other.n_features == narrow.width == 2048 + 256 + 64


def test_a_scale_set_is_versioned_by_its_manifest(tmp_path: Path) -> None:
    base = [
        BaseRow("Ремонт насосов", "service", "s", "machinery"),
        BaseRow("Насос", "product", "p", "machinery"),
    ]
    one = build_scale_set(50, tmp_path / "one", seed=1, shard_rows=20, base=base)
    two = build_scale_set(50, tmp_path / "two", seed=2, shard_rows=20, base=base)
    ref_one, ref_two = dataset_ref(Path(one["path"])), dataset_ref(Path(two["path"]))
    assert ref_one.version.startswith("scale-") and ref_one.version != ref_two.version
    assert ref_one.rows == 50 and len(ref_one.shards) == 3
    store = materialise(Path(one["path"]), tmp_path / "features")
    assert store.rows(TRAIN) == 50 and store.rows(VALIDATION) == 0


# ---- epoch loop ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[700, 100, 500, 1000], [700, 30, 500, 1000, 256], [100], [256, 512]])
def test_whole_batches_recut_chunks_without_losing_or_reordering_rows(sizes: list[int]) -> None:
    chunks = []
    start = 0
    for size in sizes:
        ids = np.arange(start, start + size)
        chunks.append((sp.csr_matrix(ids.reshape(-1, 1).astype(np.float32)), ids))
        start += size
    out = list(whole_batches(chunks, 256))
    lengths = [len(t) for _, t in out]
    assert all(n % 256 == 0 for n in lengths[:-1]) and sum(lengths) == sum(sizes)
    np.testing.assert_array_equal(np.concatenate([t for _, t in out]), np.arange(sum(sizes)))
    np.testing.assert_array_equal(sp.vstack([f for f, _ in out]).toarray().ravel(), np.arange(sum(sizes)))


def _chunks_of(store: FeatureStore, cuts: list[int]) -> list[tuple[sp.csr_matrix, np.ndarray]]:
    train = store.read(TRAIN).take(np.arange(1200))
    bounds = [0, *cuts, len(train)]
    return [(train.features[a:b], train.labels[a:b]) for a, b in itertools.pairwise(bounds)]


def test_the_streaming_loop_restores_the_best_epoch(store: FeatureStore) -> None:
    scripted = iter([0.50, 0.90, 0.70, 0.60, 0.95])
    snapshots: list[list[np.ndarray]] = []

    def evaluate(model: Any) -> float:
        snapshots.append([c.copy() for c in model.coefs_ + model.intercepts_])
        return next(scripted)

    chunks = _chunks_of(store, [333, 700])
    rows_seen: list[int] = []
    model = build_model(seed=0).set_params(batch_size=128)
    history = fit_chunks_keeping_best(
        model,
        lambda epoch: iter(chunks),
        np.asarray(["product", "service"]),
        evaluate,
        max_epochs=10,
        patience=2,
        on_chunk=rows_seen.append,
    )
    assert history.best_epoch == 2
    assert len(history.epochs) == 4  # epochs 3 and 4 did not improve: stop before the scripted 0.95
    # 333 rows → 256 (77 carried); 77 + 51 → 128, 316 → 256 (60 carried); 60 + 68 → 128, 432 → 384, 48 left
    assert rows_seen[:6] == [256, 128, 256, 128, 384, 48]
    assert sum(rows_seen) == 4 * 1200 and all(e.rows == 1200 for e in history.epochs)
    restored = model.coefs_ + model.intercepts_
    for current, best in zip(restored, snapshots[1], strict=True):
        np.testing.assert_array_equal(current, best)
    assert not np.array_equal(restored[0], snapshots[-1][0])


def test_cutting_the_data_into_chunks_does_not_change_the_weights(store: FeatureStore) -> None:
    def weights(cuts: list[int]) -> list[np.ndarray]:
        model = build_model(seed=4).set_params(batch_size=128)
        chunks = _chunks_of(store, cuts)
        fit_chunks_keeping_best(
            model, lambda epoch: iter(chunks), np.asarray(["product", "service"]), lambda m: 0.0,
            max_epochs=1, patience=1,
        )  # fmt: skip
        return model.coefs_ + model.intercepts_

    for whole, cut in zip(weights([]), weights([100, 700, 1100]), strict=True):
        np.testing.assert_array_equal(whole, cut)


# ---- training -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(dataset_dir: Path, store: FeatureStore) -> tuple[Any, dict[str, Any]]:
    root = store.path.parents[1]
    return train_dataset(dataset_dir, seed=11, max_epochs=10, patience=10, feature_root=root, progress=False)


def test_training_from_a_dataset_reports_slices_speed_and_memory(trained: tuple[Any, dict[str, Any]]) -> None:
    classifier, metrics = trained
    assert metrics["macro_f1"] > 0.8
    assert set(metrics["slices"]) >= {"a_to_o", "p_to_ya", "services_without_prefix"}
    assert metrics["slices"]["a_to_o"]["n"] + metrics["slices"]["p_to_ya"]["n"] == metrics["validation_size"]
    assert metrics["train_size"] + metrics["validation_size"] == ROWS
    assert metrics["rows_per_s_per_epoch"] > 0 and metrics["peak_rss_mb"] > 0
    assert metrics["dataset"]["version"] == f"ds-test{ROWS}"
    assert metrics["dataset"]["featurizer_version"] == classifier.featurizer_version
    sha, rows = registry_data(metrics)
    assert sha == f"sha{ROWS}" and rows["total"] == ROWS == rows["product"] + rows["service"]
    featurizer = classifier.featurizer
    assert not classifier.model.coefs_[0][featurizer.n_text_features : featurizer.n_features].any()  # fields
    assert not hasattr(classifier.model, "_optimizer")


def test_seeded_training_is_reproducible(
    dataset_dir: Path, store: FeatureStore, trained: tuple[Any, dict[str, Any]]
) -> None:
    classifier, metrics = trained
    root = store.path.parents[1]
    again, again_metrics = train_dataset(
        dataset_dir, seed=11, max_epochs=10, patience=10, feature_root=root, progress=False
    )
    assert again.version.rsplit("-", 1)[1] == classifier.version.rsplit("-", 1)[1]
    assert weights_digest(again.model, again.featurizer) == weights_digest(
        classifier.model, classifier.featurizer
    )
    assert [h["val_macro_f1"] for h in again_metrics["history"]] == [
        h["val_macro_f1"] for h in metrics["history"]
    ]
    other, _ = train_dataset(
        dataset_dir, seed=12, max_epochs=1, patience=1, feature_root=root, progress=False
    )
    assert weights_digest(other.model, other.featurizer) != weights_digest(
        classifier.model, classifier.featurizer
    )


def test_a_scale_set_validates_on_another_dataset(tmp_path: Path, dataset_dir: Path) -> None:
    base = [
        BaseRow("Ремонт насосов центробежных", "service", "s", "machinery"),
        BaseRow("Насосы центробежные", "product", "p", "machinery"),
    ]
    scale = build_scale_set(3000, tmp_path / "scale", seed=3, shard_rows=1000, base=base)
    with pytest.raises(ValueError, match="no validation rows"):
        train_dataset(Path(scale["path"]), seed=1, max_epochs=1, patience=1, progress=False)
    _, metrics = train_dataset(
        Path(scale["path"]), seed=1, max_epochs=1, patience=1, progress=False, validation_dir=dataset_dir
    )
    assert metrics["train_size"] == 3000
    assert metrics["dataset"]["validation_dataset"]["version"] == f"ds-test{ROWS}"
    _, rows = registry_data(metrics)
    assert rows["train_rows"] == 3000 and rows["validation_rows"] == metrics["validation_size"]


def test_the_bundled_dataset_is_built_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = bundled_dataset(tmp_path)
    assert dataset_ref(first).version.startswith("ds-") and first.parent == tmp_path.resolve()

    def no_rebuild(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("rebuilt")

    monkeypatch.setattr(training, "build_dataset", no_rebuild)
    assert bundled_dataset(tmp_path) == first


def test_cli_train_on_a_dataset_registers_it(
    tmp_path: Path, dataset_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NOMENCLATURE_DATA_DIR", str(tmp_path))
    main(["train", "--dataset", str(dataset_dir), "--max-epochs", "1", "--seed", "3", "--notes", "cli"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["dataset"] == f"ds-test{ROWS}" and printed["peak_rss_mb"] > 0
    record = ModelRegistry(tmp_path / "models").get(printed["version"])
    assert record.data_sha256 == f"sha{ROWS}" and record.data_rows["total"] == ROWS
    assert record.metrics["dataset"]["version"] == f"ds-test{ROWS}"
    assert list((tmp_path / "features").glob(f"featurizer=*/dataset=ds-test{ROWS}/_SUCCESS"))
