"""`nomenclature dataset build`: the training/validation set built from the bundled ОКПД2 file by the rules in
models/datasets/transforms.py, written as parquet shards plus a manifest (models/datasets/data/DATASET.md
describes both).

The split is by ОКПД2 group (the first five characters of the code, e.g. "01.11", with every subgroup, type
and category under it): an original name and every variant made from it land in the same split, and so do
the near-duplicate names of one branch of the hierarchy. Names that normalise to the same text are kept
once; one in validation is never also in training.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from models.datasets.inflection import build_vocabulary
from models.datasets.transforms import RULES, Context, SourceRow, label_of, variants_of
from models.features.text_normalization import normalize_text

DEFAULT_SOURCE = Path(__file__).resolve().parent / "data" / "okpd2_labeled.csv"
FORMAT = 1
DEFAULT_SEED = 42
VALIDATION_FRACTION = 0.15
GROUP_CODE_CHARS = 5  # "01.11": an ОКПД2 group
DEFAULT_SHARD_ROWS = 50_000
TRAIN, VALIDATION = "train", "validation"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DatasetRow:
    name: str
    label: str
    slice: str
    split: str
    transform: str
    origin_code: str
    origin_name: str
    group: str


SCHEMA = pa.schema([(f.name, pa.string()) for f in fields(DatasetRow)])


@dataclass
class BuiltRows:
    rows: list[DatasetRow]
    dropped: dict[str, int]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_source(path: Path) -> list[SourceRow]:
    """Rows of a name,label,code CSV with non-blank name and label."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [
            SourceRow(r["name"].strip(), r["label"].strip(), (r.get("code") or "").strip())
            for r in csv.DictReader(handle)
        ]
    return [r for r in rows if r.name and r.label]


def group_of(code: str) -> str:
    return code[:GROUP_CODE_CHARS] if code else "?"


def _rank(seed: int, group: str) -> str:
    return hashlib.sha256(f"{seed}\x1f{group}".encode()).hexdigest()


def assign_splits(rows: list[SourceRow], seed: int, fraction: float = VALIDATION_FRACTION) -> dict[str, str]:
    """group → split. Groups are ranked by a seeded hash, separately for product- and service-majority groups,
    and taken into validation until they hold `fraction` of that kind's rows."""
    sizes: Counter[str] = Counter(group_of(r.code) for r in rows)
    labels: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        labels[group_of(row.code)][row.label] += 1
    by_majority: dict[str, list[str]] = defaultdict(list)
    for group, counts in labels.items():
        by_majority[max(sorted(counts), key=counts.__getitem__)].append(group)
    splits = {}
    for groups in by_majority.values():
        target = fraction * sum(sizes[g] for g in groups)
        taken = 0
        for group in sorted(groups, key=lambda g: _rank(seed, g)):
            if taken < target:
                splits[group] = VALIDATION
                taken += sizes[group]
            else:
                splits[group] = TRAIN
    return splits


def generate_rows(source: list[SourceRow], seed: int) -> Iterator[DatasetRow]:
    """Every original and variant row, before de-duplication, in source order."""
    ctx = Context(seed, build_vocabulary(r.name for r in source))
    splits = assign_splits(source, seed)
    for row in source:
        group = group_of(row.code)
        for rule, name in variants_of(row, ctx):
            yield DatasetRow(
                name=" ".join(name.split()),
                label=label_of(rule, row),
                slice=rule.slice,
                split=splits[group],
                transform=rule.transform,
                origin_code=row.code,
                origin_name=row.name,
                group=group,
            )


def deduplicate(rows: Iterable[DatasetRow]) -> BuiltRows:
    """One row per normalised name: names with both labels are dropped; a validation name leaves training."""
    rows = list(rows)
    labels: dict[str, set[str]] = defaultdict(set)
    in_validation: set[str] = set()
    keys = [normalize_text(r.name) for r in rows]
    for key, row in zip(keys, rows, strict=True):
        labels[key].add(row.label)
        if row.split == VALIDATION:
            in_validation.add(key)
    kept, seen = [], set()
    dropped: Counter[str] = Counter()
    for key, row in zip(keys, rows, strict=True):
        if not key or len(labels[key]) > 1:
            dropped["label_conflict"] += 1
        elif row.split == TRAIN and key in in_validation:
            dropped["also_in_validation"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(key)
            kept.append(row)
    return BuiltRows(kept, {k: dropped[k] for k in ("label_conflict", "also_in_validation", "duplicate")})


def build_rows(source_path: Path = DEFAULT_SOURCE, seed: int = DEFAULT_SEED) -> BuiltRows:
    return deduplicate(generate_rows(read_source(source_path), seed))


def content_sha256(rows: Iterable[DatasetRow]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(astuple(row), ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _counts(rows: list[DatasetRow]) -> dict[str, Any]:
    splits: dict[str, Counter[str]] = defaultdict(Counter)
    slices: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        splits[row.split][row.label] += 1
        slices[row.slice][row.split] += 1
    return {
        "splits": {
            split: {"rows": sum(c.values()), **dict(sorted(c.items()))}
            for split, c in sorted(splits.items(), key=lambda item: item[0] != TRAIN)
        },
        "slices": {
            rule.slice: {
                "label": rule.label or "as source",
                **{s: slices[rule.slice][s] for s in (TRAIN, VALIDATION)},
            }
            for rule in RULES
        },
    }


def _rules() -> list[dict[str, str | None]]:
    return [
        {
            "transform": r.transform,
            "slice": r.slice,
            "reads": r.source_label or "all",
            "label": r.label or "as source",
            "description": r.description,
            "example": r.example,
        }
        for r in RULES
    ]


def write_shards(rows: list[DatasetRow], out_dir: Path, shard_rows: int) -> list[dict[str, Any]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("part-*.parquet"):
        stale.unlink()
    shards = []
    for index, start in enumerate(range(0, len(rows), shard_rows)):
        chunk = rows[start : start + shard_rows]
        columns = {f.name: [getattr(r, f.name) for r in chunk] for f in fields(DatasetRow)}
        path = out_dir / f"part-{index:05d}.parquet"
        pq.write_table(pa.table(columns, schema=SCHEMA), path)
        shards.append({"file": path.name, "rows": len(chunk)})
    return shards


def build_dataset(
    out_dir: Path | None = None,
    *,
    datasets_root: Path | None = None,
    source_path: Path = DEFAULT_SOURCE,
    seed: int = DEFAULT_SEED,
    shard_rows: int = DEFAULT_SHARD_ROWS,
) -> dict[str, Any]:
    """Build the dataset into `out_dir` (default `<datasets_root>/<version>`); returns the manifest."""
    built = build_rows(source_path, seed)
    sha = content_sha256(built.rows)
    version = f"ds-{sha[:12]}"
    if out_dir is None:
        if datasets_root is None:
            raise ValueError("either out_dir or datasets_root is needed")
        out_dir = datasets_root / version
    manifest = {
        "format": FORMAT,
        "version": version,
        "content_sha256": sha,
        "seed": seed,
        "source": {"file": source_path.name, "sha256": file_sha256(source_path)},
        "split": {
            "by": f"ОКПД2 group: first {GROUP_CODE_CHARS} characters of the code (e.g. 01.11)",
            "validation_fraction": VALIDATION_FRACTION,
        },
        "rows": len(built.rows),
        **_counts(built.rows),
        "dropped": built.dropped,
        "rules": _rules(),
        "columns": [f.name for f in fields(DatasetRow)],
    }
    manifest["shards"] = write_shards(built.rows, out_dir, shard_rows)
    (out_dir / MANIFEST).write_text(
        json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    manifest["path"] = str(out_dir)
    return manifest


def load_manifest(dataset_dir: Path) -> dict[str, Any]:
    return json.loads((dataset_dir / MANIFEST).read_text(encoding="utf-8"))


def read_dataset(dataset_dir: Path) -> pa.Table:
    """All rows of a built dataset, in shard order."""
    manifest = load_manifest(dataset_dir)
    return pa.concat_tables(pq.read_table(dataset_dir / s["file"]) for s in manifest["shards"])


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """What `nomenclature dataset build` prints."""
    keys = ("version", "path", "seed", "rows", "splits", "slices", "dropped")
    return {k: manifest[k] for k in keys if k in manifest} | {"source_sha256": manifest["source"]["sha256"]}
