"""The dataset builder for labelled exports (connectors/files/export_dataset.py, `nomenclature dataset build
--input`): a folder of heterogeneous files becomes one labelled parquet (and CSV) whose summary matches what
was written; label normalisation, deduplication and label conflicts; determinism; `train --data` and
`evaluate --input` read its CSV. No broker needed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.files.export_dataset import COLUMNS, build_export_dataset, dedup_key, summary_path
from connectors.files.labels import LabelMapError, label_table, load_label_map, normalize_label
from tests.export_files import write_delimited, write_jsonl, write_parquet, write_xlsx
from tools.cli import main


def write_exports(root: Path) -> Path:
    """Five files of five formats, encodings and header conventions (see EXPECTED_ROWS for the outcome)."""
    exports = root / "exports"
    (exports / "erp").mkdir(parents=True)
    write_delimited(
        exports / "erp" / "items.csv",
        ["Код", "Наименование", "Ед. изм.", "Признак", "Цена"],
        [
            ["E-1", "Болт М8", "шт", "Товар", "1,5"],
            ["E-2", "Ремонт кровли", "усл. ед.", "услуга", ""],  # duplicate of catalogue row 5
            ["E-3", "Бумага офисная А4", "пач", "ТМЦ", ""],
            ["E-4", "Монтаж вентиляции", "усл. ед.", " Работы ", ""],
            ["E-5", "болт  м8.", "шт", "товары", ""],  # duplicate of row 2
            ["E-6", "Клей ПВА", "шт", "", ""],
            ["E-7", "Кисть малярная", "шт", "хз", ""],
            ["E-8", "", "шт", "Товар", ""],
            ["E-9", "Доставка", "", "услуга", ""],  # conflicts with catalogue row 2
        ],
        "cp1251",
        ";",
    )
    write_xlsx(
        exports / "catalogue.xlsx",
        ["Наименование номенклатуры", "ЕИ", "Тип (товар/услуга)", "ТН ВЭД", "Дата"],
        [
            ["Доставка", None, "товар", None, None],
            ["Кабель ВВГнг 3х2,5", "м", 0, 8544, datetime(2024, 5, 1)],
            ["Уборка помещений", "усл. ед.", 1, None, "01.02.2024"],
            ["РЕМОНТ КРОВЛИ", "усл. ед.", "Услуги", None, None],
            ["Сверло по металлу", "шт", "товар", None, "не дата"],
        ],
    )
    write_delimited(
        exports / "plan.tsv",
        ["Наименование", "Полное наименование", "ОКВЭД2", "label"],
        [
            ["Услуги связи", "Услуги мобильной связи", "61.10", "service"],
            ["", "", "", ""],
            ["Картридж HP", "", "", "Product"],
        ],
        "utf-16-le",
        "\t",
    )
    path = write_jsonl(
        exports / "procurement.jsonl",
        [
            {"name": "Поставка бензина АИ-95", "label": "goods", "okved_code": "47.30"},
            {"name": "Охрана объекта", "label": "services"},
        ],
    )
    path.write_text(path.read_text() + "{not json\n")
    write_parquet(
        exports / "x.parquet",
        {"name": ["Щебень гранитный", "Вывоз мусора", "Песок"], "label": [0, 1, 2]},
        {"label": pa.int64()},
    )
    return exports


# (source_file, source_row, name, full_name, unit, hs_code, okved_code, created_at, label), in input order
EXPECTED_ROWS = [
    ("catalogue.xlsx", 3, "Кабель ВВГнг 3х2,5", "Кабель ВВГнг 3х2,5", "м", "8544", None,
     datetime(2024, 5, 1, tzinfo=UTC), "product"),
    ("catalogue.xlsx", 4, "Уборка помещений", "Уборка помещений", "усл. ед.", None, None,
     datetime(2024, 2, 1, tzinfo=UTC), "service"),
    ("catalogue.xlsx", 5, "РЕМОНТ КРОВЛИ", "РЕМОНТ КРОВЛИ", "усл. ед.", None, None, None, "service"),
    ("erp/items.csv", 2, "Болт М8", "Болт М8", "шт", None, None, None, "product"),
    ("erp/items.csv", 4, "Бумага офисная А4", "Бумага офисная А4", "пач", None, None, None, "product"),
    ("erp/items.csv", 5, "Монтаж вентиляции", "Монтаж вентиляции", "усл. ед.", None, None, None, "service"),
    ("plan.tsv", 2, "Услуги связи", "Услуги мобильной связи", None, None, "61.10", None, "service"),
    ("plan.tsv", 4, "Картридж HP", "Картридж HP", None, None, None, None, "product"),
    ("procurement.jsonl", 1, "Поставка бензина АИ-95", "Поставка бензина АИ-95", None, None, "47.30", None,
     "product"),
    ("procurement.jsonl", 2, "Охрана объекта", "Охрана объекта", None, None, None, None, "service"),
    ("x.parquet", 1, "Щебень гранитный", "Щебень гранитный", None, None, None, None, "product"),
    ("x.parquet", 2, "Вывоз мусора", "Вывоз мусора", None, None, None, None, "service"),
]  # fmt: skip
EXPECTED_FILES = {
    # file: (rows_read, rows_taken, skipped_by_reason)
    "catalogue.xlsx": (5, 3, {"bad_created_at": 1, "label_conflict": 1}),
    "erp/items.csv": (
        9,
        3,
        {"duplicate": 2, "label_conflict": 1, "label_missing": 1, "label_unknown:хз": 1, "no_name": 1},
    ),
    "plan.tsv": (3, 2, {"empty_row": 1}),
    "procurement.jsonl": (3, 2, {"bad_json": 1}),
    "x.parquet": (3, 2, {"label_unknown:2": 1}),
}


@pytest.fixture
def built(tmp_path: Path) -> dict[str, Any]:
    exports = write_exports(tmp_path)
    output, csv_path = tmp_path / "out" / "dataset.parquet", tmp_path / "out" / "dataset.csv"
    summary = build_export_dataset([exports], output, csv_path=csv_path)
    return {"summary": summary, "output": output, "csv": csv_path, "exports": exports}


def test_a_folder_of_exports_becomes_one_labelled_dataset(built: dict[str, Any]) -> None:
    table = pq.read_table(built["output"])
    assert table.column_names == list(COLUMNS)
    rows = table.to_pylist()
    keys = ("source_file", "source_row", "name", "full_name", "unit", "hs_code", "okved_code", "created_at")
    assert [tuple(row[k] for k in (*keys, "label")) for row in rows] == EXPECTED_ROWS
    erp_ids = [row["id"] for row in rows if row["source_file"] == "erp/items.csv"]
    assert erp_ids == ["E-1", "E-3", "E-4"]
    derived = [row["id"] for row in rows if row["source_file"] != "erp/items.csv"]
    assert all(i.startswith("h-") for i in derived) and len(set(derived)) == len(derived)


def test_the_summary_counts_what_was_written(built: dict[str, Any]) -> None:
    summary = built["summary"]
    rows = pq.read_table(built["output"]).to_pylist()
    assert summary["rows"] == len(rows) == summary["totals"]["rows_taken"]
    assert summary["labels"] == dict(sorted(pd.Series([r["label"] for r in rows]).value_counts().items()))
    per_file = {f["file"]: f for f in summary["files"]}
    assert {
        name: (f["rows_read"], f["rows_taken"], f["skipped_by_reason"]) for name, f in per_file.items()
    } == EXPECTED_FILES
    for name, entry in per_file.items():
        assert entry["rows_read"] == entry["rows_taken"] + entry["skipped"]
        assert entry["rows_taken"] == sum(1 for r in rows if r["source_file"] == name)
        assert len(entry["skipped_rows"]) == entry["skipped"]
    totals = summary["totals"]
    assert totals["rows_read"] == sum(f["rows_read"] for f in per_file.values()) == 23
    assert totals["skipped"] == sum(totals["skipped_by_reason"].values()) == 23 - len(rows)
    assert json.loads(summary_path(built["output"]).read_text(encoding="utf-8")) == summary
    assert (per_file["erp/items.csv"]["encoding"], per_file["erp/items.csv"]["delimiter"]) == ("cp1251", ";")
    assert (per_file["plan.tsv"]["encoding"], per_file["plan.tsv"]["delimiter"]) == ("utf-16-le (BOM)", "tab")


def test_duplicates_keep_the_first_row_and_conflicts_drop_every_row(built: dict[str, Any]) -> None:
    per_file = {f["file"]: f for f in built["summary"]["files"]}
    erp = {(s["row"], s["reason"]) for s in per_file["erp/items.csv"]["skipped_rows"]}
    assert {(3, "duplicate"), (6, "duplicate"), (10, "label_conflict")} <= erp
    assert built["summary"]["label_conflicts"] == {
        "items": 1,
        "listed": [
            {
                "name": "Доставка",
                "full_name": "Доставка",
                "labels": {"product": 1, "service": 1},
                "rows": [
                    {"file": "catalogue.xlsx", "row": 2, "label": "product"},
                    {"file": "erp/items.csv", "row": 10, "label": "service"},
                ],
            }
        ],
    }
    item = {f: None for f in ("kind", "type_hint", "okved_code", "hs_code", "country", "region")}
    same = dedup_key({**item, "name": "Болт М8", "full_name": "Болт М8", "unit": "шт"})
    assert same == dedup_key({**item, "name": "болт  м8.", "full_name": "БОЛТ М8", "unit": "ШТ"})
    assert same != dedup_key({**item, "name": "Болт М8", "full_name": "Болт М8", "unit": "кг"})


def test_the_csv_has_the_same_rows_and_train_and_evaluate_read_it(
    built: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = pd.read_csv(built["csv"], dtype=str, keep_default_na=False)
    parquet = pq.read_table(built["output"]).to_pandas()
    assert list(frame.columns) == list(COLUMNS)
    assert frame["name"].tolist() == parquet["name"].tolist()
    assert frame["label"].tolist() == parquet["label"].tolist()
    assert frame["source_row"].astype(int).tolist() == parquet["source_row"].tolist()
    assert frame["created_at"].tolist()[:2] == [
        "2024-05-01T00:00:00.000+00:00",
        "2024-02-01T00:00:00.000+00:00",
    ]

    monkeypatch.setenv("NOMENCLATURE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NOMENCLATURE_MODELS_DIR", str(tmp_path / "models"))
    main(["train", "--data", str(built["csv"]), "--max-epochs", "1", "--patience", "1"])
    trained = json.loads(capsys.readouterr().out)
    assert trained["dataset"] == str(built["csv"])
    main(["evaluate", "--input", str(built["csv"]), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == built["summary"]["rows"] and report["skipped_rows"] == 0
    assert report["per_class"]["product"]["support"] == built["summary"]["labels"]["product"]


def test_building_twice_gives_byte_identical_files(built: dict[str, Any], tmp_path: Path) -> None:
    again = tmp_path / "again"
    summary = build_export_dataset(
        [built["exports"]], again / "dataset.parquet", csv_path=again / "dataset.csv"
    )
    assert (again / "dataset.parquet").read_bytes() == built["output"].read_bytes()
    assert (again / "dataset.csv").read_bytes() == built["csv"].read_bytes()
    assert summary["files"] == built["summary"]["files"]


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("товар", "product"),
        (" ТОВАРЫ ", "product"),
        ("Продукция", "product"),
        ("материал", "product"),
        ("ТМЦ", "product"),
        ("product", "product"),
        ("Goods", "product"),
        ("0", "product"),
        ("услуга", "service"),
        ("Услуги", "service"),
        ("работа", "service"),
        ("РАБОТЫ", "service"),
        ("service", "service"),
        ("Services", "service"),
        ("1", "service"),
        ("хз", None),
        ("2", None),
        ("", None),
        (None, None),
    ],
)
def test_label_values_normalise_to_product_or_service(value: str | None, label: str | None) -> None:
    assert normalize_label(value) == label


def test_a_label_map_adds_and_overrides_values(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"Да": "service", "Нет": "product", "0": "service"}), encoding="utf-8")
    table = label_table(load_label_map(path))
    assert [normalize_label(v, table) for v in ("да", "НЕТ", "0", "товар")] == [
        "service",
        "product",
        "service",
        "product",
    ]
    path.write_text(json.dumps({"Да": "servis"}), encoding="utf-8")
    with pytest.raises(LabelMapError, match="'Да' maps to 'servis'; use 'product' or 'service'"):
        load_label_map(path)


def test_dataset_build_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NOMENCLATURE_DATA_DIR", str(tmp_path / "data"))
    exports = write_exports(tmp_path)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"хз": "product", "2": "product"}), encoding="utf-8")
    output = tmp_path / "ds.parquet"
    main(["dataset", "build", "--input", str(exports), "--output", str(output), "--label-map", str(labels)])
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == pq.read_metadata(output).num_rows == len(EXPECTED_ROWS) + 2
    assert "label_unknown:хз" not in summary["totals"]["skipped_by_reason"]
    assert summary["label_map"] == {"хз": "product", "2": "product"}

    with pytest.raises(SystemExit, match="--input needs --output"):
        main(["dataset", "build", "--input", str(exports)])
    with pytest.raises(SystemExit, match="--output goes with --input"):
        main(["dataset", "build", "--output", str(output)])
    with pytest.raises(SystemExit, match=r"give --output FILE\.parquet"):
        main(["dataset", "build", "--input", str(exports), "--out", str(tmp_path / "dir")])
    with pytest.raises(SystemExit, match="no such file or directory"):
        main(["dataset", "build", "--input", str(tmp_path / "missing"), "--output", str(output)])
