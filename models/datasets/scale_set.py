"""`nomenclature dataset scale`: a synthetic set of any size (10 million rows for the training-throughput
benchmark) made by sampling the training rows of the built dataset and perturbing their names.

Perturbations keep the label: catalogue specs and prices (by label, as in models/datasets/catalogue_style.py),
typing errors, Latin look-alike letters, case changes, a dropped last word. Rows are generated and written
batch by batch (one parquet row group per batch, `shard_rows` rows per file), so memory does not grow with
`n_rows`. Only training rows are sampled: the validation split stays unseen.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from models.datasets import catalogue_style as style
from models.datasets.builder import DEFAULT_SEED, DEFAULT_SOURCE, TRAIN, build_rows, content_sha256
from models.datasets.transforms import SERVICE

SCHEMA = pa.schema(
    [("name", pa.string()), ("label", pa.string()), ("slice", pa.string()), ("perturbation", pa.string())]
)
DEFAULT_SHARD_ROWS = 1_000_000
DEFAULT_BATCH_ROWS = 50_000
_LOOKALIKES = {"а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "х": "x", "у": "y", "к": "k"}


@dataclass(frozen=True)
class BaseRow:
    name: str
    label: str
    slice: str
    family: str


def _spec(name: str, row: BaseRow, rng: random.Random) -> str:
    if row.label == SERVICE:
        return style.join_spec(name, style.service_spec(rng, name))
    return style.join_spec(name, style.goods_spec(rng, row.family, name))


def _price(name: str, row: BaseRow, rng: random.Random) -> str:
    return f"{name} {style.price(rng)}"


def _typo(name: str, row: BaseRow, rng: random.Random) -> str:
    """Delete, double or swap one inner letter of a word of five or more letters."""
    words = name.split(" ")
    long_words = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not long_words:
        return name
    index = rng.choice(long_words)
    word = words[index]
    at = rng.randrange(1, len(word) - 2)
    kind = rng.randrange(3)
    if kind == 0:
        word = word[:at] + word[at + 1 :]
    elif kind == 1:
        word = word[:at] + word[at] + word[at:]
    else:
        word = word[:at] + word[at + 1] + word[at] + word[at + 2 :]
    words[index] = word
    return " ".join(words)


def _lookalike(name: str, row: BaseRow, rng: random.Random) -> str:
    """One Cyrillic letter replaced by its Latin look-alike ("pемонт"), as in pasted or OCR'd names."""
    positions = [i for i, ch in enumerate(name) if ch in _LOOKALIKES]
    if not positions:
        return name
    at = rng.choice(positions)
    return name[:at] + _LOOKALIKES[name[at]] + name[at + 1 :]


def _case(name: str, row: BaseRow, rng: random.Random) -> str:
    return name.upper() if rng.random() < 0.5 else name.lower()


def _drop_last_word(name: str, row: BaseRow, rng: random.Random) -> str:
    words = name.split()
    return " ".join(words[:-1]) if len(words) >= 3 else name


Perturbation = Callable[[str, BaseRow, random.Random], str]
# (name, weight, function); "none" keeps the base name.
PERTURBATIONS: tuple[tuple[str, int, Perturbation | None], ...] = (
    ("none", 3, None),
    ("spec", 3, _spec),
    ("price", 1, _price),
    ("typo", 2, _typo),
    ("lookalike", 1, _lookalike),
    ("case", 1, _case),
    ("drop_last_word", 1, _drop_last_word),
)
_NAMES = [name for name, _, _ in PERTURBATIONS]
_WEIGHTS = [weight for _, weight, _ in PERTURBATIONS]
_FUNCTIONS = {name: function for name, _, function in PERTURBATIONS}


def base_rows(source_path: Path = DEFAULT_SOURCE, seed: int = DEFAULT_SEED) -> tuple[list[BaseRow], str]:
    """The training rows of the dataset built with `seed`, and that dataset's content hash."""
    built = build_rows(source_path, seed)
    rows = [
        BaseRow(r.name, r.label, r.slice, style.family_of(r.origin_code))
        for r in built.rows
        if r.split == TRAIN
    ]
    return rows, content_sha256(built.rows)


def _perturb(row: BaseRow, rng: random.Random) -> tuple[str, str]:
    drawn = rng.choices(_NAMES, _WEIGHTS, k=2 if rng.random() < 0.3 else 1)
    applied = [p for p in drawn if p != "none"] or ["none"]
    name = row.name
    for perturbation in applied:
        function = _FUNCTIONS[perturbation]
        if function is not None:
            name = function(name, row, rng)
    return name, "+".join(applied)


def generate_batch(base: list[BaseRow], rows: int, rng: random.Random) -> pa.Table:
    """`rows` sampled and perturbed rows as one table."""
    names, labels, slices, perturbations = [], [], [], []
    for _ in range(rows):
        row = base[rng.randrange(len(base))]
        name, perturbation = _perturb(row, rng)
        names.append(name)
        labels.append(row.label)
        slices.append(row.slice)
        perturbations.append(perturbation)
    return pa.table([names, labels, slices, perturbations], schema=SCHEMA)


def _batch_sizes(n_rows: int, shard_rows: int, batch_rows: int) -> Iterator[tuple[int, list[int]]]:
    """(shard index, batch sizes of that shard) for every shard."""
    for shard, start in enumerate(range(0, n_rows, shard_rows)):
        size = min(shard_rows, n_rows - start)
        yield shard, [min(batch_rows, size - b) for b in range(0, size, batch_rows)]


def build_scale_set(
    n_rows: int,
    out_dir: Path,
    seed: int = DEFAULT_SEED,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    base: list[BaseRow] | None = None,
    source_path: Path = DEFAULT_SOURCE,
) -> dict[str, Any]:
    """Write `n_rows` perturbed rows to `out_dir/part-NNNNN.parquet` (+ manifest.json); returns the manifest.

    Each batch has its own generator seeded by (seed, shard, batch): the output does not depend on how much
    was generated before, and never more than one batch is held in memory.
    """
    if n_rows < 1 or shard_rows < 1 or batch_rows < 1:
        raise ValueError("n_rows, shard_rows and batch_rows must be positive")
    base_version = None
    if base is None:
        base, base_version = base_rows(source_path, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("part-*.parquet"):
        stale.unlink()
    shards = []
    for shard, batches in _batch_sizes(n_rows, shard_rows, min(batch_rows, shard_rows)):
        path = out_dir / f"part-{shard:05d}.parquet"
        with pq.ParquetWriter(path, SCHEMA) as writer:
            for index, size in enumerate(batches):
                rng = random.Random(f"{seed}\x1f{shard}\x1f{index}")
                writer.write_table(generate_batch(base, size, rng))
        shards.append({"file": path.name, "rows": sum(batches)})
    manifest = {
        "kind": "scale",
        "rows": n_rows,
        "seed": seed,
        "shard_rows": shard_rows,
        "batch_rows": batch_rows,
        "base_rows": len(base),
        "base_dataset_sha256": base_version,
        "perturbations": {name: weight for name, weight, _ in PERTURBATIONS},
        "shards": shards,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
    return manifest | {"path": str(out_dir)}
