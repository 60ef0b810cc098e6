"""What `nomenclature models …` and `nomenclature evaluate` print (tools/cli.py parses the arguments).

Each function returns the text to print; registry and input errors become `SystemExit` with a one-line
message (exit code 1, no traceback) through `tools.common.operator_errors`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sklearn

from models.registry.model_registry import ChecksumError, ModelRecord, ModelRegistry
from models.training.evaluation import format_per_class, table

DEFAULT_TOP = 20
# Metrics printed in their own sections of `models show`; the remaining scalars are listed as "other".
_SECTIONED = {"n", "accuracy", "macro_f1", "avg_confidence", "per_class", "slices", "history", "dataset"}
_SECTIONED |= {"global_importance", "train_seconds", "ece", "confident_accuracy", "calibration"}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


# ---- models list ---------------------------------------------------------------------------------


def list_models(registry: ModelRegistry, as_json: bool) -> str:
    aliases = registry.aliases()
    records = registry.list()
    if as_json:
        return _dumps({"aliases": aliases, "models": [_summary(r, aliases) for r in records]})
    if not records:
        return f"no models in {registry.root}; `nomenclature train` makes one"
    rows = [
        [
            r.version,
            ",".join(_aliases_of(r.version, aliases)) or "-",
            r.created_at,
            r.featurizer_version,
            _fmt(r.metrics.get("macro_f1")),
            str(r.data_rows.get("total", "-")),
            r.notes or "-",
        ]
        for r in records
    ]
    return table(["version", "aliases", "created_at", "featurizer", "macro-F1", "rows", "notes"], rows)


def _aliases_of(version: str, aliases: dict[str, str]) -> list[str]:
    return sorted(alias for alias, target in aliases.items() if target == version)


def _summary(record: ModelRecord, aliases: dict[str, str]) -> dict[str, Any]:
    return {
        "version": record.version,
        "aliases": _aliases_of(record.version, aliases),
        "created_at": record.created_at,
        "featurizer_version": record.featurizer_version,
        "sklearn_version": record.sklearn_version,
        "artifact_sha256": record.artifact_sha256,
        "data_sha256": record.data_sha256,
        "data_rows": record.data_rows,
        "accuracy": record.metrics.get("accuracy"),
        "macro_f1": record.metrics.get("macro_f1"),
        "training_seconds": record.training_seconds,
        "notes": record.notes,
    }


# ---- models show ---------------------------------------------------------------------------------


def show_model(registry: ModelRegistry, name: str, as_json: bool, top: int = DEFAULT_TOP) -> str:
    record = registry.get(name)
    aliases = registry.aliases_of(record.version)
    events = registry.alias_events(record.version)
    check = _artifact_check(registry, record)
    if as_json:
        return _dumps({**asdict(record), "aliases": aliases, "artifact_check": check, "alias_events": events})
    metrics = record.metrics
    parts = [
        _identity(record, aliases, check),
        _overall(metrics),
        format_per_class(metrics["per_class"]) if metrics.get("per_class") else "",
        _slices(metrics.get("slices")),
        _dataset_section(record.dataset),
        _history(metrics),
        _other_metrics(metrics),
        _importance(metrics.get("global_importance"), top),
        _events(events),
    ]
    return "\n\n".join(part for part in parts if part)


def _artifact_check(registry: ModelRegistry, record: ModelRecord) -> str:
    """'ok', or why `load` would refuse the artifact."""
    try:
        registry.verify(record.version)
    except ChecksumError as exc:
        return f"FAILED: {exc}"
    return "ok"


def _identity(record: ModelRecord, aliases: list[str], check: str) -> str:
    sklearn_note = (
        "" if record.sklearn_version == sklearn.__version__ else f" (running {sklearn.__version__})"
    )
    rows = [
        ["version", record.version],
        ["aliases", ", ".join(aliases) or "-"],
        ["created_at", record.created_at],
        ["artifact", f"{record.artifact} sha256 {record.artifact_sha256}"],
        ["artifact check", check],
        ["featurizer", record.featurizer_version],
        ["sklearn", record.sklearn_version + sklearn_note],
        ["training data", f"sha256 {record.data_sha256}"],
        ["rows", ", ".join(f"{k} {v}" for k, v in record.data_rows.items())],
        ["training seconds", _fmt(record.training_seconds, 1)],
        ["notes", record.notes or "-"],
    ]
    if record.dataset:
        summary = f"{record.dataset.get('version', '?')}, {record.dataset.get('rows', '?')} rows (see below)"
        rows.insert(9, ["dataset", summary])
    return "\n".join(f"{key:<17} {value}" for key, value in rows)


def _dataset_section(dataset: dict[str, Any] | None) -> str:
    if not dataset:
        return ""
    ordered = sorted(dataset.items(), key=lambda kv: kv[0] != "version")  # the version first
    return "dataset\n" + "\n".join(f"  {key:<24} {_compact(value)}" for key, value in ordered)


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _overall(metrics: dict[str, Any]) -> str:
    keys = [
        ("n", "n"),
        ("accuracy", "accuracy"),
        ("macro_f1", "macro-F1"),
        ("avg_confidence", "avg confidence"),
        ("ece", "ECE"),
        ("confident_accuracy", "accuracy at confidence ≥ 0.95"),
    ]
    present = [f"{label} {_fmt(metrics[key])}" for key, label in keys if key in metrics]
    if not present:
        return "no metrics recorded"
    lines = ["validation: " + "   ".join(present)]
    calibration = metrics.get("calibration")
    if calibration:
        lines.append(
            f"calibration: temperature {_fmt(calibration['temperature'])} fitted on the "
            f"{calibration['fitted_on']}, ECE {_fmt(calibration['ece_before'])} → "
            f"{_fmt(calibration['ece_after'])}"
        )
    return "\n".join(lines)


def _slices(slices: dict[str, Any] | None) -> str:
    if not slices:
        return ""
    rows = [
        [name, _fmt(m.get("n")), _fmt(m.get("accuracy")), _fmt(m.get("avg_confidence"))]
        for name, m in slices.items()
    ]
    return "slices\n" + table(["slice", "n", "accuracy", "avg conf"], rows)


def _history(metrics: dict[str, Any]) -> str:
    history = metrics.get("history") or []
    if not history:
        return ""
    best = max(history, key=lambda e: e.get("val_macro_f1", float("-inf")))
    seconds = sum(e.get("seconds", 0.0) for e in history)
    return (
        f"training: {len(history)} epochs, best epoch {metrics.get('best_epoch', best.get('epoch'))} "
        f"(val macro-F1 {_fmt(best.get('val_macro_f1'))}), first loss {_fmt(history[0].get('loss'))}, "
        f"last loss {_fmt(history[-1].get('loss'))}, {seconds:.1f}s in epochs"
    )


def _other_metrics(metrics: dict[str, Any]) -> str:
    rest = {k: v for k, v in metrics.items() if k not in _SECTIONED and not isinstance(v, dict | list)}
    if not rest:
        return ""
    return "other metrics\n" + "\n".join(f"{k:<26} {_fmt(v)}" for k, v in sorted(rest.items()))


def _importance(importance: dict[str, Any] | None, top: int) -> str:
    """Permutation importance per feature group (`models.training.importance`), strongest first."""
    if not importance:
        return ""
    entries = sorted(importance.items(), key=lambda kv: -kv[1]["macro_f1_drop"])
    shown = entries[:top] if top > 0 else entries
    rows = [
        [
            group,
            f"{stats['macro_f1_drop']:+.4f} ± {stats['macro_f1_drop_std']:.4f}",
            f"{stats['accuracy_drop']:+.4f}",
            "yes" if stats["present"] else "no (absent from the evaluation data)",
        ]
        for group, stats in shown
    ]
    more = f" (top {len(shown)} of {len(entries)})" if len(shown) < len(entries) else ""
    title = f"global importance: macro-F1 drop when the group is permuted across items{more}"
    return title + "\n" + table(["feature group", "macro-F1 drop", "accuracy drop", "present"], rows)


def _events(events: list[dict[str, Any]]) -> str:
    if not events:
        return ""
    rows = [
        [e["at"], e["action"], e["alias"], e.get("version") or "-", e.get("previous") or "-"] for e in events
    ]
    return "alias changes\n" + table(["at", "action", "alias", "version", "previous"], rows)


# ---- models promote / rollback -------------------------------------------------------------------


def promote(registry: ModelRegistry, version: str, alias: str) -> str:
    before = registry.aliases().get(alias)
    registry.verify(version)  # never make a model with a bad artifact the one the stream loads
    record = registry.set_alias(alias, version)
    if before == record.version:
        return f"{record.version} is already {alias}"
    return f"{alias}: {before or '-'} -> {record.version}"


def rollback(registry: ModelRegistry) -> str:
    before = registry.aliases().get("champion")
    history = registry.champion_history()
    if len(history) >= 2:
        registry.verify(history[-2])
    record = registry.rollback()
    return f"champion: {before} -> {record.version} (rolled back)"


# ---- evaluate ------------------------------------------------------------------------------------


def evaluate(registry: ModelRegistry, input_csv: Path, model: str, as_json: bool, worst: int) -> str:
    from models.training.evaluation import evaluate_csv, format_report

    report = evaluate_csv(input_csv, registry.load(model), worst=worst)
    return _dumps(report) if as_json else format_report(report)
