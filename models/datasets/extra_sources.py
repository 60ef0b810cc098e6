"""Labelled CSVs trained on beside a built dataset, each with its own validation rows.

`extended_dataset` writes a dataset directory whose manifest lists the base dataset's shards (by absolute
path, not copied) and one shard of the extra rows. Each extra file is split on its own, stratified by label
and seeded, into training and validation rows (slice ``extra:<file stem>``), so the validation split — which
selects the epoch and fits the calibration — holds real rows of every source. An extra name that normalises
to a name of the base dataset's validation split, or to an extra row's kept before it, is left out, so no
validation name is also trained on.

The extra files also widen a rule of the base dataset: its "action on product" training rows ("Ремонт
насосов центробежных", from a short list of actions per ОКПД2 class) are written once more with another
action, the head noun of one of the extra files' training services ("Регулировка насосов центробежных";
slice ``extra_action_on_product``), so that the actions real work lists name are seen with the goods they
apply to. Only training rows are used and made.

The extra files are read where they are (e.g. ``../shared/data/train``) and never copied into the project.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.model_selection import train_test_split

from models.datasets.builder import MANIFEST, TRAIN, VALIDATION, file_sha256
from models.features.text_normalization import normalize_text

FORMAT = 1
LABELS = ("product", "service")
EXTRA_SHARD = "extra-00000.parquet"
_SCHEMA = pa.schema([(c, pa.string()) for c in ("name", "label", "slice", "split")])


def extra_files(paths: Sequence[Path]) -> list[Path]:
    """The CSV files named, a directory standing for the *.csv files in it (sorted); ValueError if none."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.glob("*.csv"))
            if not found:
                raise ValueError(f"{path}: no *.csv file in this directory")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{path}: no such file or directory")
    return files


def read_labelled(path: Path) -> pd.DataFrame:
    """A CSV's name,label rows (blank names dropped); ValueError naming the file for a bad one."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: not a readable UTF-8 CSV ({exc})") from None
    missing = [c for c in ("name", "label") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: column(s) {missing} required, found {list(frame.columns)}")
    frame = frame[["name", "label"]].apply(lambda column: column.str.strip())
    frame = frame[frame["name"] != ""]
    unknown = sorted(set(frame["label"]) - set(LABELS))
    if unknown:
        raise ValueError(f"{path}: labels must be {' or '.join(LABELS)}, found {unknown[:5]}")
    return frame.reset_index(drop=True)


def extended_dataset(
    base_dir: Path,
    extra: Sequence[Path],
    datasets_root: Path,
    *,
    seed: int = 42,
    validation_fraction: float = 0.15,
) -> Path:
    """The dataset `base_dir` plus the rows of the `extra` CSVs (see the module's docstring), built under
    `datasets_root` unless an identical one is there."""
    base_dir = Path(base_dir).resolve()
    base = json.loads((base_dir / MANIFEST).read_text(encoding="utf-8"))
    files = extra_files(extra)
    key = hashlib.sha256(
        json.dumps(
            [FORMAT, base["content_sha256"], seed, validation_fraction, [file_sha256(f) for f in files]]
        ).encode()
    ).hexdigest()
    out = Path(datasets_root) / f"ext-{key[:12]}"
    if (out / MANIFEST).is_file():
        return out
    rows, sources = _extra_rows(base_dir, base, files, seed, validation_fraction)
    actions = service_actions(rows)
    varied = _actions_on_products(base_dir, base, actions)
    rows += varied
    out.mkdir(parents=True, exist_ok=True)
    columns = list(map(list, zip(*rows, strict=True))) if rows else [[], [], [], []]
    pq.write_table(pa.table(columns, schema=_SCHEMA), out / EXTRA_SHARD)
    content = hashlib.sha256(
        f"{base['content_sha256']}\x1f{file_sha256(out / EXTRA_SHARD)}".encode()
    ).hexdigest()
    shards = [{"file": str(base_dir / s["file"]), "rows": int(s["rows"])} for s in base["shards"]]
    shards.append({"file": EXTRA_SHARD, "rows": len(rows)})
    manifest = {
        "format": FORMAT,
        "kind": "extended",
        "version": f"ext-{content[:12]}",
        "content_sha256": content,
        "base": {"version": base["version"], "path": str(base_dir), "content_sha256": base["content_sha256"]},
        "seed": seed,
        "validation_fraction": validation_fraction,
        "extra": sources,
        "extra_action_on_product": {"actions": len(actions), "rows": len(varied)},
        "rows": sum(s["rows"] for s in shards),
        "shards": shards,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return out


def _extra_rows(
    base_dir: Path, base: dict, files: list[Path], seed: int, validation_fraction: float
) -> tuple[list[tuple[str, str, str, str]], list[dict]]:
    validation_names = _validation_names(base_dir, base)
    seen: set[str] = set()  # normalised names kept so far
    rows: list[tuple[str, str, str, str]] = []
    sources = []
    for path in files:
        frame = read_labelled(path)
        split = _split(frame["label"].tolist(), seed, validation_fraction)
        source_slice = f"extra:{path.stem}"
        counts = {TRAIN: 0, VALIDATION: 0, "duplicates": 0}
        for name, label, part in zip(frame["name"], frame["label"], split, strict=True):
            key = normalize_text(name)
            if key in validation_names or key in seen:
                counts["duplicates"] += 1
                continue
            seen.add(key)
            rows.append((name, label, source_slice, part))
            counts[part] += 1
        sources.append({"file": path.name, "sha256": file_sha256(path), "slice": source_slice, **counts})
    return rows, sources


def _split(labels: list[str], seed: int, validation_fraction: float) -> list[str]:
    split = np.full(len(labels), TRAIN, dtype=object)
    if len(labels) >= 2 and validation_fraction > 0:
        stratify = labels if min(labels.count(label) for label in set(labels)) >= 2 else None
        _, validation = train_test_split(
            np.arange(len(labels)), test_size=validation_fraction, stratify=stratify, random_state=seed
        )
        split[validation] = VALIDATION
    return split.tolist()


def _validation_names(base_dir: Path, base: dict) -> set[str]:
    names: set[str] = set()
    for shard in base["shards"]:
        table = pq.read_table(base_dir / shard["file"], columns=["name", "split"])
        for name, split in zip(
            table.column("name").to_pylist(), table.column("split").to_pylist(), strict=True
        ):
            if split == VALIDATION:
                names.add(normalize_text(name))
    return names


ACTION_SLICE = "extra_action_on_product"
_BASE_ACTION_SLICE = "service_action_on_product"


def service_actions(rows: list[tuple[str, str, str, str]]) -> list[str]:
    """The distinct head nouns (first word, a noun in the nominative, as written) of the training services."""
    from models.features.language import language

    analyse = language().analyse
    actions = set()
    for name, label, _, split in rows:
        first = name.split(maxsplit=1)[0].strip(",.:;") if name.strip() else ""
        if label == "service" and split == TRAIN and first[:1].isupper() and first.isalpha():
            analysis = analyse(first.lower().replace("ё", "е"))
            if analysis.pos == "NOUN" and analysis.case == "nomn":
                actions.add(first[0] + first[1:].lower())
    return sorted(actions)


def _actions_on_products(base_dir: Path, base: dict, actions: list[str]) -> list[tuple[str, str, str, str]]:
    from models.datasets.transforms import PRODUCT_ACTIONS

    if not actions:
        return []
    known = sorted({a for group in PRODUCT_ACTIONS.values() for a in group}, key=len, reverse=True)
    made = []
    for shard in base["shards"]:
        table = pq.read_table(base_dir / shard["file"], columns=["name", "slice", "split"])
        for name, slice_, split in zip(
            *(table.column(c).to_pylist() for c in ("name", "slice", "split")), strict=True
        ):
            if slice_ != _BASE_ACTION_SLICE or split != TRAIN:
                continue
            old = next((a for a in known if name.startswith(a + " ")), None)
            if old is None:
                continue
            pick = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % len(actions)
            new = actions[pick] if actions[pick] != old else actions[(pick + 1) % len(actions)]
            made.append((f"{new} {name[len(old) + 1 :]}", "service", ACTION_SLICE, TRAIN))
    return made
