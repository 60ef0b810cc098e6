"""File-based model registry: root/<version>/model.npz plus root/registry.json (records and aliases).

Aliases: `champion` (what the stream and `predict` load) and `challenger` (a candidate under evaluation).
The index keeps the champion's lineage (`champion_history`, oldest first, the current one last) so that
`rollback` restores the previous champion, and a second rollback the one before; it also keeps an audit
log of every alias change (`alias_events`). Beside the index, ``tuning/<study>.json`` holds the Pareto front
of each `nomenclature tune` study (`tuning`, `update_tuning`).

Every write goes to a temporary file in the same directory followed by `os.replace`, so a reader sees either
the old or the new file, never a partial one. Writers serialise their read-modify-write of registry.json on
an advisory lock file (root/.registry.lock). Artifacts are `models.registry.model_files` zips of arrays and
JSON that load without unpickling (registries from before them may hold joblib pickles, still read): `load`
refuses one whose sha256 differs from the registry's record.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn

from models.classifier import Classifier
from models.drift.baseline import BASELINE_METRIC, Baseline
from models.registry import model_files
from models.registry.atomic_files import atomic_write_bytes, atomic_write_text

CHAMPION = "champion"
CHALLENGER = "challenger"
ALIASES = (CHAMPION, CHALLENGER)
ARTIFACT_NAME = "model.npz"
LEGACY_ARTIFACT_SUFFIX = ".joblib"
BASELINE_NAME = "baseline.json"
TUNING_DIR = "tuning"
_SAFE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ChecksumError(Exception):
    """The artifact on disk is not the one that was registered."""


class FeaturizerMismatchError(Exception):
    """The running featurizer code differs from the one the model was trained with."""


class UnknownModelError(KeyError):
    """No version or alias of that name."""

    def __str__(self) -> str:
        return f"no model version or alias {self.args[0]!r} in the registry"


class NothingToRollBackError(Exception):
    """The champion has no predecessor to return to."""


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
    training_seconds: float | None = None
    # The dataset the model was trained from (version, sha256, rows...), when trained from a built dataset.
    dataset: dict[str, Any] | None = None
    # The drift baseline beside the artifact (models.drift.baseline): file, sha256, version, rebuilt_at.
    baseline: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelRecord:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        metrics = known.get("metrics") or {}
        # Records written before these fields existed: take them from the metrics.
        known.setdefault("training_seconds", metrics.get("train_seconds"))
        known.setdefault("dataset", metrics.get("dataset"))
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
            index = json.loads(self.index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            index = {"versions": {}, "aliases": {}}
        champion = index["aliases"].get(CHAMPION)
        # Registries written before the lineage existed start it at their current champion.
        index.setdefault("champion_history", [champion] if champion else [])
        index.setdefault("alias_events", [])
        return index

    def registry_id(self) -> str:
        """This registry's id, made on first use. Model events on the control topic name it, so that a
        worker follows only the events of the registry it loads its models from."""
        known = self._read().get("registry_id")
        if known:
            return str(known)
        with self._lock():
            index = self._read()
            index.setdefault("registry_id", uuid.uuid4().hex)
            self._write(index)
            return str(index["registry_id"])

    def aliases(self) -> dict[str, str]:
        """Alias -> version."""
        return dict(self._read()["aliases"])

    def aliases_of(self, version: str) -> list[str]:
        return sorted(alias for alias, target in self.aliases().items() if target == version)

    def champion_history(self) -> list[str]:
        """Champions in the order they were promoted, the current one last (rollbacks remove entries)."""
        return list(self._read()["champion_history"])

    def alias_events(self, version: str | None = None) -> list[dict[str, Any]]:
        """The audit log of alias changes (oldest first), optionally only those naming `version`."""
        events = self._read()["alias_events"]
        if version is None:
            return events
        return [e for e in events if version in (e.get("version"), e.get("previous"))]

    def list(self) -> list[ModelRecord]:
        """All records, oldest first."""
        records = [ModelRecord.from_dict(r) for r in self._read()["versions"].values()]
        return sorted(records, key=lambda r: (r.created_at, r.version))

    def get(self, version_or_alias: str) -> ModelRecord:
        index = self._read()
        return ModelRecord.from_dict(index["versions"][_resolve(index, version_or_alias)])

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
        payload = self._verified_payload(record)
        if record.artifact.endswith(LEGACY_ARTIFACT_SUFFIX):
            classifier = joblib.load(io.BytesIO(payload))  # registered before model files (trusted pickle)
        else:
            try:
                classifier = model_files.loads(payload)
            except ValueError as exc:
                raise ChecksumError(f"{record.artifact}: {exc}") from None
        if not isinstance(classifier, Classifier) or classifier.version != record.version:
            raise ChecksumError(f"{record.artifact} does not hold classifier {record.version}")
        if check_featurizer and classifier.featurizer.version != record.featurizer_version:
            raise FeaturizerMismatchError(
                f"{record.version} was trained with featurizer {record.featurizer_version}, "
                f"the running code is {classifier.featurizer.version}; retrain the model"
            )
        return classifier

    def verify(self, version_or_alias: str) -> ModelRecord:
        """The record, after checking that its artifact's sha256 is the registered one (ChecksumError)."""
        record = self.get(version_or_alias)
        self._verified_payload(record)
        return record

    def _verified_payload(self, record: ModelRecord) -> bytes:
        path = self.root / record.artifact
        try:
            payload = path.read_bytes()
        except FileNotFoundError:
            raise ChecksumError(f"{record.artifact}: the artifact of {record.version} is missing") from None
        actual = hashlib.sha256(payload).hexdigest()
        if actual != record.artifact_sha256:
            raise ChecksumError(
                f"{record.artifact}: sha256 {actual} differs from the registered {record.artifact_sha256}"
            )
        return payload

    def load_baseline(self, version_or_alias: str = CHAMPION) -> Baseline | None:
        """The drift baseline of a model (sha256-checked, ChecksumError), or None if it has none."""
        record = self.get(version_or_alias)
        if not record.baseline:
            return None
        path = self.root / record.baseline["file"]
        try:
            payload = path.read_bytes()
        except FileNotFoundError:
            raise ChecksumError(f"{path}: the drift baseline of {record.version} is missing") from None
        if hashlib.sha256(payload).hexdigest() != record.baseline["sha256"]:
            raise ChecksumError(f"{path}: sha256 differs from the registered drift baseline")
        return Baseline.from_json(payload)

    def baseline_by_version(self, baseline_version: str) -> Baseline | None:
        """The drift baseline with this content version, whichever model holds it (None if none does)."""
        for record in reversed(self.list()):
            if record.baseline and record.baseline.get("version") == baseline_version:
                return self.load_baseline(record.version)
        return None

    def tuning_studies(self) -> list[str]:
        """Names of the tuning studies whose Pareto front the registry holds, sorted."""
        return sorted(path.stem for path in (self.root / TUNING_DIR).glob("*.json"))

    def tuning(self, study: str) -> dict[str, Any] | None:
        """A tuning study's document (`nomenclature tune`: its Pareto front), or None."""
        try:
            return json.loads(self._tuning_path(study).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def _tuning_path(self, study: str) -> Path:
        if not _SAFE_VERSION.fullmatch(study):
            raise ValueError(f"study name {study!r} is not usable as a file name (letters, digits, . _ -)")
        return self.root / TUNING_DIR / f"{study}.json"

    # ---- writing -------------------------------------------------------------------------------

    def update_tuning(
        self, study: str, update: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> dict[str, Any]:
        """Replace a tuning study's document by `update(the current one or None)`, under the registry lock
        (a read-modify-write, so two writers do not lose each other's changes); returns the new one."""
        path = self._tuning_path(study)
        with self._lock():
            document = _json_ready(update(self.tuning(study)))
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
        return document

    def set_baseline(self, version_or_alias: str, baseline: Baseline) -> ModelRecord:
        """Store `baseline` as the model's drift baseline (replacing the one it had)."""
        with self._lock():
            index = self._read()
            version = _resolve(index, version_or_alias)
            entry = self._write_baseline(version, baseline)
            index["versions"][version]["baseline"] = entry
            self._write(index)
            return ModelRecord.from_dict(index["versions"][version])

    def _write_baseline(self, version: str, baseline: Baseline) -> dict[str, Any]:
        payload = baseline.to_json()
        relative = Path(version) / BASELINE_NAME
        (self.root / relative).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.root / relative, payload)
        return {
            "file": relative.as_posix(),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "version": baseline.version,
            "source": baseline.source,
            "rows": baseline.rows,
            "created_at": baseline.created_at,
        }

    def register(
        self,
        classifier: Classifier,
        metrics: dict[str, Any],
        data_path: Path,
        notes: str = "",
        *,
        data_sha256: str | None = None,
        data_rows: dict[str, int] | None = None,
    ) -> ModelRecord:
        """Store the artifact and its record; the first model registered becomes champion.

        The training data's hash and row counts come from `data_path`: a CSV is hashed and counted, a
        built dataset directory is described by its manifest.json. `data_sha256` / `data_rows` override
        both (a caller that knows them already, e.g. after training from a dataset directory).
        A drift baseline in ``metrics["drift_baseline"]`` (JSON, as training leaves it) is stored beside the
        artifact instead of in the metrics.
        """
        metrics = dict(metrics)
        baseline_json = metrics.pop(BASELINE_METRIC, None)
        if not _SAFE_VERSION.fullmatch(classifier.version):
            raise ValueError(f"version {classifier.version!r} is not usable as a directory name")
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():
            index = self._read()
            if classifier.version in index["versions"]:
                raise ValueError(f"version {classifier.version} is already registered")
            artifact = Path(classifier.version) / ARTIFACT_NAME
            payload = model_files.dumps(classifier)
            (self.root / artifact).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.root / artifact, payload)
            record = ModelRecord(
                version=classifier.version,
                artifact=artifact.as_posix(),
                artifact_sha256=hashlib.sha256(payload).hexdigest(),
                featurizer_version=classifier.featurizer_version,
                sklearn_version=sklearn.__version__,
                data_sha256=data_sha256 or _data_sha256(Path(data_path)),
                data_rows=data_rows if data_rows is not None else _data_rows(Path(data_path)),
                metrics=_json_ready(metrics),
                created_at=_now(),
                notes=notes,
                training_seconds=metrics.get("train_seconds"),
                dataset=_json_ready(metrics["dataset"]) if metrics.get("dataset") else None,
                baseline=(
                    self._write_baseline(classifier.version, Baseline.from_json(baseline_json))
                    if baseline_json is not None
                    else None
                ),
            )
            index["versions"][record.version] = asdict(record)
            if CHAMPION not in index["aliases"]:
                _assign(index, CHAMPION, record.version, action="register")
            self._write(index)
        return record

    def promote(self, version: str) -> ModelRecord:
        """Make `version` (a version or the `challenger` alias) the champion.

        A promoted challenger stops being the challenger. Promoting the current champion changes nothing.
        """
        return self.set_alias(CHAMPION, version)

    def set_alias(self, alias: str, version: str) -> ModelRecord:
        """Point `alias` (champion or challenger) at `version` (a version or the other alias)."""
        if alias not in ALIASES:
            raise ValueError(f"unknown alias {alias!r}; aliases are {', '.join(ALIASES)}")
        with self._lock():
            index = self._read()
            target = _resolve(index, version)
            if alias == CHALLENGER and index["aliases"].get(CHAMPION) == target:
                raise ValueError(f"{target} is the champion; it cannot also be the challenger")
            if index["aliases"].get(alias) != target:
                _assign(index, alias, target, action="promote" if alias == CHAMPION else "set_alias")
                if alias == CHAMPION and index["aliases"].get(CHALLENGER) == target:
                    _unassign(index, CHALLENGER, action="promoted")
                self._write(index)
            return ModelRecord.from_dict(index["versions"][target])

    def remove_alias(self, alias: str) -> None:
        """Drop the challenger alias (the champion cannot be removed, only replaced or rolled back)."""
        if alias != CHALLENGER:
            raise ValueError(f"only the {CHALLENGER} alias can be removed")
        with self._lock():
            index = self._read()
            if alias in index["aliases"]:
                _unassign(index, alias, action="remove_alias")
                self._write(index)

    def rollback(self) -> ModelRecord:
        """Make the previous champion the champion again; each call goes one champion further back.

        Raises NothingToRollBackError when the current champion has no predecessor.
        """
        with self._lock():
            index = self._read()
            lineage = index["champion_history"]
            if len(lineage) < 2:
                current = index["aliases"].get(CHAMPION)
                raise NothingToRollBackError(
                    "no previous champion to roll back to"
                    + (f": {current} is the first champion" if current else ": the registry has no champion")
                )
            lineage.pop()
            previous = lineage[-1]
            _assign(index, CHAMPION, previous, action="rollback")
            if index["aliases"].get(CHALLENGER) == previous:
                _unassign(index, CHALLENGER, action="rollback")
            self._write(index)
            return ModelRecord.from_dict(index["versions"][previous])

    def _write(self, index: dict[str, Any]) -> None:
        text = json.dumps(index, ensure_ascii=False, indent=2, sort_keys=True)
        atomic_write_text(self.index_path, text)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".registry.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _resolve(index: dict[str, Any], version_or_alias: str) -> str:
    version = index["aliases"].get(version_or_alias, version_or_alias)
    if version not in index["versions"]:
        raise UnknownModelError(version_or_alias)
    return version


def _assign(index: dict[str, Any], alias: str, version: str, *, action: str) -> None:
    """Point `alias` at `version` in `index`, logging the change (and the champion's lineage)."""
    previous = index["aliases"].get(alias)
    index["aliases"][alias] = version
    if alias == CHAMPION and action != "rollback":  # a rollback has already popped the lineage
        index["champion_history"].append(version)
    index["alias_events"].append(
        {"at": _now(), "action": action, "alias": alias, "version": version, "previous": previous}
    )


def _unassign(index: dict[str, Any], alias: str, *, action: str) -> None:
    previous = index["aliases"].pop(alias)
    index["alias_events"].append(
        {"at": _now(), "action": action, "alias": alias, "version": None, "previous": previous}
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _data_sha256(path: Path) -> str:
    """A CSV's sha256, or a built dataset directory's content sha256 (from its manifest)."""
    if path.is_dir():
        return str(_manifest(path)["content_sha256"])
    return _file_sha256(path)


def _data_rows(path: Path) -> dict[str, int]:
    """Row counts (total and per label) of a CSV or of a built dataset directory (all splits)."""
    if not path.is_dir():
        return _row_counts(path)
    manifest = _manifest(path)
    counts = {"total": int(manifest["rows"])}
    for split, split_counts in manifest.get("splits", {}).items():
        counts[f"{split}_rows"] = int(split_counts.get("rows", 0))
        for label, count in split_counts.items():
            if label != "rows":
                counts[label] = counts.get(label, 0) + int(count)
    return counts


def _manifest(dataset_dir: Path) -> dict[str, Any]:
    path = dataset_dir / "manifest.json"
    if not path.is_file():
        raise ValueError(f"{dataset_dir} is a directory without a manifest.json: not a built dataset")
    return json.loads(path.read_text(encoding="utf-8"))


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
