"""File-based model registry: root/<version>/model.joblib plus root/registry.json (records and aliases).

Every write goes to a temporary file in the same directory followed by `os.replace`, so a reader sees either
the old or the new file, never a partial one. Writers serialise their read-modify-write of registry.json on
an advisory lock file (root/.registry.lock). Artifacts are pickles (joblib): `load` refuses one whose sha256
differs from the registry's record.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn

from models.classifier import Classifier

CHAMPION = "champion"
ARTIFACT_NAME = "model.joblib"
_SAFE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ChecksumError(Exception):
    """The artifact on disk is not the one that was registered."""


class FeaturizerMismatchError(Exception):
    """The running featurizer code differs from the one the model was trained with."""


class UnknownModelError(KeyError):
    pass


@dataclass(frozen=True)
class ModelRecord:
    version: str
    artifact: str  # relative to the registry root
    artifact_sha256: str
    featurizer_version: str
    sklearn_version: str
    data_sha256: str
    data_rows: dict[str, int]
    metrics: dict[str, Any]
    created_at: str
    notes: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelRecord:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def index_path(self) -> Path:
        return self.root / "registry.json"

    # ---- reading -------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"versions": {}, "aliases": {}}

    def list(self) -> list[ModelRecord]:
        """All records, oldest first."""
        records = [ModelRecord.from_dict(r) for r in self._read()["versions"].values()]
        return sorted(records, key=lambda r: (r.created_at, r.version))

    def get(self, version_or_alias: str) -> ModelRecord:
        index = self._read()
        version = index["aliases"].get(version_or_alias, version_or_alias)
        if version not in index["versions"]:
            raise UnknownModelError(version_or_alias)
        return ModelRecord.from_dict(index["versions"][version])

    def champion(self) -> ModelRecord | None:
        try:
            return self.get(CHAMPION)
        except UnknownModelError:
            return None

    def load(self, version_or_alias: str = CHAMPION, *, check_featurizer: bool = True) -> Classifier:
        """The classifier of a version or alias, after verifying the artifact's sha256.

        With `check_featurizer`, also refuses a model whose featurizer version differs from the running
        featurizer code (its features would silently mean something else).
        """
        record = self.get(version_or_alias)
        payload = (self.root / record.artifact).read_bytes()
        actual = hashlib.sha256(payload).hexdigest()
        if actual != record.artifact_sha256:
            raise ChecksumError(
                f"{record.artifact}: sha256 {actual} differs from the registered {record.artifact_sha256}"
            )
        classifier = joblib.load(io.BytesIO(payload))
        if not isinstance(classifier, Classifier) or classifier.version != record.version:
            raise ChecksumError(f"{record.artifact} does not hold classifier {record.version}")
        if check_featurizer and classifier.featurizer.version != record.featurizer_version:
            raise FeaturizerMismatchError(
                f"{record.version} was trained with featurizer {record.featurizer_version}, "
                f"the running code is {classifier.featurizer.version}; retrain the model"
            )
        return classifier

    # ---- writing -------------------------------------------------------------------------------

    def register(
        self, classifier: Classifier, metrics: dict[str, Any], data_path: Path, notes: str = ""
    ) -> ModelRecord:
        """Store the artifact and its record; the first model registered becomes champion."""
        if not _SAFE_VERSION.fullmatch(classifier.version):
            raise ValueError(f"version {classifier.version!r} is not usable as a directory name")
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():
            index = self._read()
            if classifier.version in index["versions"]:
                raise ValueError(f"version {classifier.version} is already registered")
            artifact = Path(classifier.version) / ARTIFACT_NAME
            buffer = io.BytesIO()
            joblib.dump(classifier, buffer)
            payload = buffer.getvalue()
            (self.root / artifact).parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.root / artifact, payload)
            record = ModelRecord(
                version=classifier.version,
                artifact=artifact.as_posix(),
                artifact_sha256=hashlib.sha256(payload).hexdigest(),
                featurizer_version=classifier.featurizer_version,
                sklearn_version=sklearn.__version__,
                data_sha256=_file_sha256(Path(data_path)),
                data_rows=_row_counts(Path(data_path)),
                metrics=_json_ready(metrics),
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                notes=notes,
            )
            index["versions"][record.version] = asdict(record)
            index["aliases"].setdefault(CHAMPION, record.version)
            self._write(index)
        return record

    def promote(self, version: str) -> ModelRecord:
        """Make `version` the champion."""
        with self._lock():
            index = self._read()
            if version not in index["versions"]:
                raise UnknownModelError(version)
            index["aliases"][CHAMPION] = version
            self._write(index)
            return ModelRecord.from_dict(index["versions"][version])

    def _write(self, index: dict[str, Any]) -> None:
        text = json.dumps(index, ensure_ascii=False, indent=2, sort_keys=True)
        _atomic_write(self.index_path, text.encode("utf-8"))

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".registry.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _atomic_write(path: Path, payload: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _row_counts(path: Path) -> dict[str, int]:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    counts = {"total": len(frame)}
    if "label" in frame.columns:
        counts.update({str(k): int(v) for k, v in frame["label"].value_counts().sort_index().items()})
    return counts


def _json_ready(value: Any) -> Any:
    """Metrics as plain JSON types (numpy scalars and arrays converted)."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
