"""A classifier as bytes that load without unpickling: numpy arrays and JSON in one zip (an ``.npz``).

Entries: ``coefs_<i>.npy`` and ``intercepts_<i>.npy`` per layer, ``classes.npy`` (unicode), and
``meta.json``: the model's version, the featurizer's parameters and version, the calibration temperature,
the MLP's hyper-parameters and the scalars sklearn's `partial_fit` needs to continue training (warm start).
`numpy.load(..., allow_pickle=False)` reads it; nothing in it can run code. The zip is written with fixed
timestamps and order, so equal models give equal bytes (the shipped model's sha256 is reproducible).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import LabelBinarizer

from models.classifier import Classifier
from models.features.featurizer import Featurizer

FORMAT = "nomenclature-mlp-npz/1"
_EPOCH = (1980, 1, 1, 0, 0, 0)
# sklearn attributes `partial_fit` reads when it continues from loaded weights.
_TRAINING_SCALARS = ("n_iter_", "t_", "best_loss_", "_no_improvement_count", "loss_curve_")


def dumps(classifier: Classifier) -> bytes:
    model = classifier.model
    arrays: dict[str, np.ndarray] = {"classes": np.asarray([str(c) for c in model.classes_], dtype=np.str_)}
    for i, (coefs, intercepts) in enumerate(zip(model.coefs_, model.intercepts_, strict=True)):
        arrays[f"coefs_{i}"] = np.ascontiguousarray(coefs)
        arrays[f"intercepts_{i}"] = np.ascontiguousarray(intercepts)
    meta = {
        "format": FORMAT,
        "version": classifier.version,
        "featurizer_version": classifier.featurizer_version,
        "featurizer": classifier.featurizer.params(),
        "temperature": classifier.temperature,
        "mlp_params": _json_params(model.get_params()),
        "out_activation": model.out_activation_,
        "n_features_in": int(model.coefs_[0].shape[0]),
        "training": {name: _scalar(getattr(model, name, None)) for name in _TRAINING_SCALARS},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            payload = io.BytesIO()
            np.lib.format.write_array(payload, array, allow_pickle=False)
            _write(archive, f"{name}.npy", payload.getvalue())
        _write(archive, "meta.json", json.dumps(meta, ensure_ascii=False, sort_keys=True, indent=1).encode())
    return buffer.getvalue()


def loads(payload: bytes) -> Classifier:
    """The classifier `dumps` wrote (ValueError for anything else)."""
    try:
        archive = np.load(io.BytesIO(payload), allow_pickle=False)
        meta = json.loads(archive["meta.json"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"not a model file: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"unknown model file format {meta.get('format')!r}, expected {FORMAT!r}")
    params = dict(meta["mlp_params"])
    params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    model = MLPClassifier(**params)
    layers = len(params["hidden_layer_sizes"]) + 1
    model.coefs_ = [archive[f"coefs_{i}"] for i in range(layers)]
    model.intercepts_ = [archive[f"intercepts_{i}"] for i in range(layers)]
    model.classes_ = archive["classes"].astype(object)
    model._label_binarizer = LabelBinarizer().fit(model.classes_)
    model.n_layers_ = layers + 1
    model.n_outputs_ = int(model.intercepts_[-1].shape[0])
    model.out_activation_ = meta["out_activation"]
    model.n_features_in_ = int(meta["n_features_in"])
    for name, value in meta["training"].items():
        if value is not None:
            setattr(model, name, list(value) if name == "loss_curve_" else value)
    featurizer_params = dict(meta["featurizer"])
    featurizer_params["ngram_range"] = tuple(featurizer_params["ngram_range"])
    return Classifier(
        model,
        Featurizer(**featurizer_params),
        version=meta["version"],
        featurizer_version=meta["featurizer_version"],
        temperature=float(meta["temperature"]),
    )


def _write(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}


def _scalar(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, list):
        return [float(v) for v in value]
    if isinstance(value, (np.integer, int)):
        return int(value)
    return float(value)
