"""Offline and online features are the same by construction: the feature store's rows for N items equal
the stream's (same vectors, by digest of indices and values, and the same predictions)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.registry.model_registry import ModelRegistry
from models.training.feature_store import materialise
from tests.support import Broker, make_item, new_worker, produce_items, read_records, wait_for_ids
from tests.test_e2e import labelled_rows

FIELDS = ("name", "full_name", "unit", "kind", "type_hint", "okved_code", "hs_code")


def _write_dataset(items: list[dict], directory: Path) -> Path:
    rows = {field: [item.get(field) for item in items] for field in FIELDS}
    rows.update(label=[item["label"] for item in items], slice=["parity"] * len(items))
    rows.update(split=["validation"] * len(items), id=[item["id"] for item in items])
    directory.mkdir(parents=True)
    pq.write_table(pa.table(rows), directory / "part-00000.parquet")
    manifest = {"kind": "parity", "version": f"parity-{uuid.uuid4().hex[:8]}", "rows": len(items)}
    manifest["shards"] = [{"file": "part-00000.parquet", "rows": len(items)}]
    (directory / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return directory


async def _table_values(bootstrap: str, topic: str) -> dict[str, dict]:
    """A changelog topic folded into its table: each key's last value."""
    records = await read_records(bootstrap, topic)
    return {r.key.decode(): json.loads(r.value) for r in records if r.value}


def test_stream_features_equal_the_offline_feature_store(
    broker: Broker, tmp_path: Path, models_dir: Path
) -> None:
    p = f"parity{uuid.uuid4().hex[:6]}"
    units = ["шт", "кг", "усл. ед.", None]
    items = [
        make_item(
            f"{p}-{i}",
            row["name"],
            full_name=f"{row['name']} {['', 'ГОСТ 123', 'арт. A-17'][i % 3]}".strip(),
            unit=units[i % 4],
            okved_code="62.01" if i % 5 == 0 else None,
            hs_code="8471300000" if i % 7 == 0 else None,
            label=row["label"],
        )
        for i, row in enumerate(labelled_rows(300, offset=3))
    ]
    worker = new_worker(broker, tmp_path, models_dir).start()
    try:
        worker.wait_ready()
        produce_items(broker.bootstrap, items)
        classified, rejected = wait_for_ids(broker.bootstrap, p, {i["id"] for i in items}, worker)
    finally:
        worker.stop()
    assert not rejected, rejected[:2]
    stream_values = asyncio.run(_table_values(broker.bootstrap, f"{worker.app_id}-items-changelog"))

    classifier = ModelRegistry(models_dir).load("champion")
    store = materialise(
        _write_dataset(items, tmp_path / "dataset"), tmp_path / "features", classifier.featurizer
    )
    assert store.featurizer_version == classifier.featurizer.version
    offline = store.read()
    ids = [items[row]["id"] for row in offline.row_ids]
    digests = classifier.featurizer.row_digests(offline.features)
    assert len(ids) == len(items)
    assert {i: stream_values[i]["feature_digest"] for i in ids} == dict(zip(ids, digests, strict=True))

    proba = np.round(classifier.predict_proba(offline.features), 9)
    by_id = {c["id"]: c for c in classified}
    for item_id, row in zip(ids, proba, strict=True):
        assert by_id[item_id]["probabilities"] == dict(zip(classifier.labels, row.tolist(), strict=True))
        assert stream_values[item_id]["featurizer_version"] == classifier.featurizer.version
