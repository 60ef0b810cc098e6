"""Offline feature store: the featurizer's output for every row of a dataset directory, as parquet.

Layout: ``<root>/featurizer=<featurizer version>/dataset=<dataset version>/`` holding

- ``part-NNNNN.parquet``: one file per source shard (same NNNNN), columns ``row_id`` (the row's position in
  the dataset, shards in manifest order: the index into `models.datasets.builder.read_dataset(dir)`),
  ``label``, ``slice``, ``split`` and the sparse feature row as ``indices`` (list<int32>, ascending column
  indices) and ``values`` (list<float32>), exactly as `Featurizer.transform` returns them. Every row group
  holds one split.
- ``manifest.json``: store format, featurizer version and width, dataset path/version/sha256/kind, rows and
  labels and slices per split, the row groups (file, index, split, rows) and per split the number of rows
  in which each column is non-zero (`column_nnz`).
- ``_SUCCESS``: written last. A store with it (and a manifest matching the featurizer and dataset) is reused;
  one without it is a partial build and is rebuilt from scratch.

A dataset directory is anything with a ``manifest.json`` listing parquet ``shards`` whose rows have a
``name`` (and optionally the other item fields, ``label``, ``slice``, ``split``): `nomenclature dataset
build` output (version from its manifest), a scale set (``scale-`` + the manifest's sha256) or a CSV turned
into a dataset by `models.training.train`. Rows are featurised batch by batch (`chunk_rows` rows, transformed
in sub-batches of `FEATURIZE_BATCH_ROWS`) and written as they go, so memory does not grow with the dataset.

`FeatureStore.iter_chunks` streams a split as CSR chunks (`GROUPS_PER_CHUNK` row groups each), in a
shuffled order of row groups and with the rows of each chunk shuffled when given a random generator;
`read` loads a whole split; `lookup` fetches given row ids; `dataset_column` reads a source column (e.g. the
names) for given row ids.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from models.datasets.builder import TRAIN
from models.features.featurizer import Featurizer
from models.registry.atomic_files import atomic_write_text
from models.training.progress import ProgressBar

FORMAT = 1
SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"
# Rows featurised and written per row group. Decoding a row group of list columns briefly takes several
# times its size, so row groups are kept small and `iter_chunks` joins GROUPS_PER_CHUNK of them per chunk.
DEFAULT_CHUNK_ROWS = 16_384
GROUPS_PER_CHUNK = 4
FEATURIZE_BATCH_ROWS = 8_192
ITEM_FIELDS = ("name", "full_name", "unit", "kind", "type_hint", "okved_code", "hs_code")
META_COLUMNS = ("row_id", "label", "slice", "split")
SCHEMA = pa.schema(
    [
        ("row_id", pa.int64()),
        ("label", pa.string()),
        ("slice", pa.string()),
        ("split", pa.string()),
        ("indices", pa.list_(pa.int32())),
        ("values", pa.list_(pa.float32())),
    ]
)


@dataclass(frozen=True)
class DatasetRef:
    """What the store needs to know of a dataset directory."""

    path: Path
    version: str
    sha256: str
    kind: str
    shards: tuple[str, ...]
    rows: int


@dataclass
class FeatureChunk:
    """Feature rows (CSR, float32) with their labels, slices and row ids, aligned by position."""

    features: sp.csr_matrix
    labels: np.ndarray
    slices: np.ndarray
    row_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def take(self, order: np.ndarray) -> FeatureChunk:
        return FeatureChunk(self.features[order], self.labels[order], self.slices[order], self.row_ids[order])


def dataset_ref(dataset_dir: Path) -> DatasetRef:
    """Version and hash of a dataset directory from its manifest (a scale set: the manifest's sha256)."""
    dataset_dir = Path(dataset_dir).resolve()
    raw = (dataset_dir / MANIFEST).read_bytes()
    manifest = json.loads(raw)
    manifest_sha = hashlib.sha256(raw).hexdigest()
    kind = str(manifest.get("kind", "dataset"))
    return DatasetRef(
        path=dataset_dir,
        version=str(manifest.get("version") or f"{kind}-{manifest_sha[:12]}"),
        sha256=str(manifest.get("content_sha256") or manifest_sha),
        kind=kind,
        shards=tuple(str(s["file"]) for s in manifest["shards"]),
        rows=int(manifest["rows"]),
    )


def store_path(root: Path, featurizer_version: str, dataset_version: str) -> Path:
    return Path(root) / f"featurizer={featurizer_version}" / f"dataset={dataset_version}"


# ---- writing ------------------------------------------------------------------------------------


def materialise(
    dataset_dir: Path,
    root: Path,
    featurizer: Featurizer | None = None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: bool = False,
) -> FeatureStore:
    """The store of `dataset_dir`'s features under `root`: reused when complete, (re)built otherwise."""
    featurizer = featurizer or Featurizer()
    ref = dataset_ref(dataset_dir)
    path = store_path(root, featurizer.version, ref.version)
    with locked(path):
        if not is_complete(path, featurizer, ref):
            _build(ref, path, featurizer, chunk_rows, progress)
    return FeatureStore(path)


def is_complete(path: Path, featurizer: Featurizer, ref: DatasetRef) -> bool:
    """A finished store of this featurizer and dataset content, with all its part files."""
    if not (path / SUCCESS).is_file():
        return False
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        manifest.get("format") == FORMAT
        and manifest.get("featurizer", {}).get("version") == featurizer.version
        and manifest.get("dataset", {}).get("sha256") == ref.sha256
        and all((path / f).is_file() for f in {g["file"] for g in manifest["row_groups"]})
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `.<name>.lock` next to `path`: serialises builders of one directory
    (two trainings started together build it once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Tally:
    """Counts per split gathered while writing: rows, labels, slices, column non-zeros."""

    def __init__(self, n_features: int) -> None:
        self.n_features = n_features
        self.labels: dict[str, Counter[str]] = defaultdict(Counter)
        self.slices: dict[str, Counter[str]] = defaultdict(Counter)
        self.column_nnz: dict[str, np.ndarray] = {}
        self.row_groups: list[dict[str, Any]] = []
        self._groups_per_file: Counter[str] = Counter()

    def add(
        self, file: str, split: str, labels: Sequence[str], slices: Sequence[str], X: sp.csr_matrix
    ) -> None:
        index = self._groups_per_file[file]
        self._groups_per_file[file] += 1
        self.row_groups.append({"file": file, "index": index, "split": split, "rows": X.shape[0]})
        self.labels[split].update(labels)
        self.slices[split].update(slices)
        counts = np.bincount(X.indices, minlength=self.n_features)
        self.column_nnz[split] = self.column_nnz.get(split, np.zeros(self.n_features, np.int64)) + counts

    def splits(self) -> dict[str, Any]:
        return {
            split: {
                "rows": sum(self.labels[split].values()),
                "labels": dict(sorted(self.labels[split].items())),
                "slices": dict(sorted(self.slices[split].items())),
            }
            for split in sorted(self.labels, key=lambda s: (s != TRAIN, s))
        }


def _build(ref: DatasetRef, path: Path, featurizer: Featurizer, chunk_rows: int, progress: bool) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    tally = _Tally(featurizer.width)
    bar = ProgressBar(ref.rows, f"features {ref.version}", enabled=progress)
    row_id = 0
    for index, shard in enumerate(ref.shards):
        file = f"part-{index:05d}.parquet"
        with pq.ParquetWriter(path / file, SCHEMA, compression="zstd") as writer:
            for batch in _source_batches(ref.path / shard, chunk_rows):
                _write_batch(writer, file, batch, row_id, featurizer, tally)
                row_id += batch.num_rows
                bar.update(batch.num_rows)
    bar.close()
    manifest = {
        "format": FORMAT,
        "featurizer": {"version": featurizer.version, "n_features": featurizer.width},
        "dataset": {
            "version": ref.version,
            "sha256": ref.sha256,
            "kind": ref.kind,
            "path": str(ref.path),
            "rows": ref.rows,
        },
        "rows": row_id,
        "splits": tally.splits(),
        "row_groups": tally.row_groups,
        "column_nnz": {split: counts.tolist() for split, counts in sorted(tally.column_nnz.items())},
    }
    atomic_write_text(path / MANIFEST, json.dumps(manifest, ensure_ascii=False) + "\n")
    atomic_write_text(path / SUCCESS, "")


def _source_batches(shard: Path, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    source = pq.ParquetFile(shard)
    wanted = [c for c in (*ITEM_FIELDS, "label", "slice", "split") if c in source.schema_arrow.names]
    yield from source.iter_batches(batch_size=chunk_rows, columns=wanted)


def _items(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    fields = [f for f in ITEM_FIELDS if f in batch.schema.names]
    columns = [batch.column(f).to_pylist() for f in fields]
    return [dict(zip(fields, values, strict=True)) for values in zip(*columns, strict=True)]


def featurize(featurizer: Featurizer, items: Sequence[Mapping[str, Any]]) -> sp.csr_matrix:
    """`featurizer.transform(items)` in sub-batches (bounded memory); the same matrix."""
    parts = [
        featurizer.transform(items[start : start + FEATURIZE_BATCH_ROWS])
        for start in range(0, len(items), FEATURIZE_BATCH_ROWS)
    ]
    if len(parts) == 1:
        return parts[0]
    return sp.vstack(parts, format="csr") if parts else featurizer.transform([])


def _column_or(batch: pa.RecordBatch, name: str, default: str) -> np.ndarray:
    if name in batch.schema.names:
        return np.asarray(batch.column(name).to_pylist(), dtype=object)
    return np.full(batch.num_rows, default, dtype=object)


def _write_batch(
    writer: pq.ParquetWriter,
    file: str,
    batch: pa.RecordBatch,
    first_row_id: int,
    featurizer: Featurizer,
    tally: _Tally,
) -> None:
    """Featurise one source batch and write it as one row group per split present."""
    features = featurize(featurizer, _items(batch))
    labels = _column_or(batch, "label", "")
    slices = _column_or(batch, "slice", "")
    splits = _column_or(batch, "split", TRAIN)
    for split in sorted(set(splits.tolist())):
        rows = np.flatnonzero(splits == split)
        X = features if len(rows) == len(splits) else features[rows]
        table = _table(first_row_id + rows, labels[rows], slices[rows], split, X)
        writer.write_table(table, row_group_size=max(len(rows), 1))
        tally.add(file, split, labels[rows].tolist(), slices[rows].tolist(), X)


def _table(
    row_ids: np.ndarray, labels: np.ndarray, slices: np.ndarray, split: str, X: sp.csr_matrix
) -> pa.Table:
    offsets = pa.array(np.asarray(X.indptr, dtype=np.int32))
    return pa.table(
        [
            pa.array(np.asarray(row_ids, dtype=np.int64)),
            pa.array(labels.tolist(), pa.string()),
            pa.array(slices.tolist(), pa.string()),
            pa.array([split] * X.shape[0], pa.string()),
            pa.ListArray.from_arrays(offsets, pa.array(np.asarray(X.indices, dtype=np.int32))),
            pa.ListArray.from_arrays(offsets, pa.array(np.asarray(X.data, dtype=np.float32))),
        ],
        schema=SCHEMA,
    )


# ---- reading ------------------------------------------------------------------------------------


class FeatureStore:
    """A complete store directory (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not (self.path / SUCCESS).is_file():
            raise FileNotFoundError(f"{self.path} is not a complete feature store (no {SUCCESS})")
        self.manifest: dict[str, Any] = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r})"

    @property
    def featurizer_version(self) -> str:
        return str(self.manifest["featurizer"]["version"])

    @property
    def n_features(self) -> int:
        return int(self.manifest["featurizer"]["n_features"])

    @property
    def dataset_version(self) -> str:
        return str(self.manifest["dataset"]["version"])

    def rows(self, split: str | None = None) -> int:
        return sum(g["rows"] for g in self.row_groups(split))

    def row_groups(self, split: str | None = None) -> list[dict[str, Any]]:
        return [g for g in self.manifest["row_groups"] if split is None or g["split"] == split]

    def labels(self, split: str | None = None) -> list[str]:
        """The sorted labels present in `split` (all splits by default)."""
        splits = self.manifest["splits"]
        found = {label for s, info in splits.items() if split in (None, s) for label in info["labels"]}
        return sorted(found)

    def column_nnz(self, split: str) -> np.ndarray:
        """Per column, the number of rows of `split` in which it is non-zero."""
        counts = self.manifest["column_nnz"].get(split)
        return np.asarray(counts, dtype=np.int64) if counts else np.zeros(self.n_features, np.int64)

    def iter_chunks(
        self,
        split: str | None = None,
        *,
        rng: np.random.Generator | None = None,
        groups_per_chunk: int = GROUPS_PER_CHUNK,
        columns: Sequence[str] = ("row_id", "label", "slice", "indices", "values"),
    ) -> Iterator[FeatureChunk]:
        """The rows of `split` in chunks of `groups_per_chunk` row groups: in file order, or with `rng` in a
        random order of row groups and with the rows of each chunk permuted (rows of different row groups
        mix, while only one row group at a time is being decoded)."""
        groups = self.row_groups(split)
        if rng is not None:
            groups = [groups[i] for i in rng.permutation(len(groups))]
        files: dict[str, pq.ParquetFile] = {}
        for start in range(0, len(groups), max(groups_per_chunk, 1)):
            parts = [self._read_group(g, columns, files) for g in groups[start : start + groups_per_chunk]]
            chunk = concat_chunks(parts, self.n_features)
            del parts
            if rng is not None:
                chunk = chunk.take(rng.permutation(len(chunk)))  # the unshuffled copy is freed here
            yield chunk
            del chunk

    def _read_group(
        self, group: dict[str, Any], columns: Sequence[str], files: dict[str, pq.ParquetFile]
    ) -> FeatureChunk:
        source = files.get(group["file"])
        if source is None:
            source = files[group["file"]] = pq.ParquetFile(self.path / group["file"])
        # One decoding thread: parallel column decoding doubles the transient memory for little gain here.
        table = source.read_row_group(group["index"], columns=list(columns), use_threads=False)
        return chunk_from_table(table, self.n_features)

    def read(self, split: str | None = None) -> FeatureChunk:
        """All rows of `split` (every split by default) in one chunk, in row-id order."""
        return _ordered(concat_chunks(list(self.iter_chunks(split)), self.n_features))

    def lookup(self, row_ids: Iterable[int]) -> FeatureChunk:
        """The rows with these ids, in the order asked; KeyError for an id the store does not hold."""
        wanted = np.asarray(list(row_ids), dtype=np.int64)
        unique = np.unique(wanted)
        found: list[FeatureChunk] = []
        for group in self.row_groups():
            source = pq.ParquetFile(self.path / group["file"])
            ids = source.read_row_group(group["index"], columns=["row_id"]).column(0).to_numpy()
            hit = np.flatnonzero(np.isin(ids, unique))
            if len(hit):
                table = source.read_row_group(
                    group["index"], columns=["row_id", "label", "slice", "indices", "values"]
                )
                found.append(chunk_from_table(table.take(pa.array(hit)), self.n_features))
        every = _ordered(concat_chunks(found, self.n_features))
        positions = np.searchsorted(every.row_ids, wanted)
        held = np.append(every.row_ids, -1)[positions] == wanted
        if not held.all():
            raise KeyError(f"row ids not in the store: {wanted[~held][:10].tolist()}")
        return every.take(positions)


def chunk_from_table(table: pa.Table, n_features: int) -> FeatureChunk:
    """A feature-store table (row_id, label, slice, indices, values) as a FeatureChunk with a CSR matrix."""
    indices = table.column("indices").combine_chunks()
    values = table.column("values").combine_chunks()
    offsets = indices.offsets.to_numpy()
    indptr = (offsets - offsets[0]).astype(np.int64)
    features = sp.csr_matrix(
        (values.flatten().to_numpy(), indices.flatten().to_numpy(), indptr),
        shape=(table.num_rows, n_features),
    )
    n = table.num_rows
    return FeatureChunk(
        features=features,
        labels=_strings(table, "label", n),
        slices=_strings(table, "slice", n),
        row_ids=table.column("row_id").to_numpy() if "row_id" in table.column_names else np.arange(n),
    )


def _strings(table: pa.Table, name: str, n: int) -> np.ndarray:
    if name not in table.column_names:
        return np.full(n, "", dtype=object)
    return np.asarray(table.column(name).to_pylist(), dtype=object)


def concat_chunks(chunks: Sequence[FeatureChunk], n_features: int) -> FeatureChunk:
    if not chunks:
        empty = np.asarray([], dtype=object)
        return FeatureChunk(
            sp.csr_matrix((0, n_features), dtype=np.float32), empty, empty, np.asarray([], np.int64)
        )
    if len(chunks) == 1:
        return chunks[0]
    return FeatureChunk(
        sp.vstack([c.features for c in chunks], format="csr"),
        np.concatenate([c.labels for c in chunks]),
        np.concatenate([c.slices for c in chunks]),
        np.concatenate([c.row_ids for c in chunks]),
    )


def _ordered(chunk: FeatureChunk) -> FeatureChunk:
    if len(chunk) < 2 or bool(np.all(chunk.row_ids[1:] > chunk.row_ids[:-1])):
        return chunk
    return chunk.take(np.argsort(chunk.row_ids, kind="stable"))


def dataset_column(dataset_dir: Path, column: str, row_ids: Sequence[int]) -> list[Any]:
    """Values of one source column (e.g. ``name``) of a dataset directory for the given row ids, in order.

    Row ids are as in the store: positions in the dataset, shards in manifest order.
    """
    ref = dataset_ref(dataset_dir)
    wanted = np.asarray(row_ids, dtype=np.int64)
    order = np.argsort(wanted, kind="stable")
    values: list[Any] = [None] * len(wanted)
    position, offset = 0, 0
    for shard in ref.shards:
        for batch in pq.ParquetFile(ref.path / shard).iter_batches(columns=[column]):
            end = offset + batch.num_rows
            stop = int(np.searchsorted(wanted[order], end, side="left"))
            if stop > position:
                local = wanted[order[position:stop]] - offset
                for target, value in zip(
                    order[position:stop], batch.column(0).take(pa.array(local)).to_pylist(), strict=True
                ):
                    values[target] = value
                position = stop
            offset = end
    if position < len(wanted):
        raise KeyError(f"row ids beyond the dataset's {offset} rows")
    return values
