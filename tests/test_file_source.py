"""The file source connector (connectors/files/source.py and the modules it reads with): every format and
encoding round-trips through a real broker topic to exactly the expected items; delimiter and encoding
detection, header mapping and its override file, skipped rows; `nomenclature produce` from the CLI entry
point."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from connectors.files.column_mapping import MappingError, header_key, load_overrides, resolve_columns
from connectors.files.file_formats import detect_delimiter, file_format
from connectors.files.items import stable_id
from connectors.files.source import LISTED_ROWS, SourceOptions, open_source, read_items
from connectors.files.spreadsheet import cell_value
from connectors.files.tables import FileFormatError
from connectors.files.text_encoding import detect_encoding, resolve_encoding
from schemas import LocalCatalogue
from streams.runtime.topic_reader import read_topic
from streams.topics import CORRECTIONS, RAW
from tests.export_files import write_delimited, write_jsonl, write_parquet, write_xlsx
from tests.support import Broker
from tools.cli import main
from tools.common import run_sync
from tools.produce_commands import produce_files, source_options

RUN = uuid.uuid4().hex[:8]
HEADERS = [
    "Код", "Наименование", "Полное наименование", "Ед. изм.", "ОКВЭД2", "ТН ВЭД", "Страна", "Признак", "Дата",
    "Источник", "Цена",
]  # fmt: skip
FIELDS = ["id", "name", "full_name", "unit", "okved_code", "hs_code", "country", "label", "created_at"]


def text_rows(tag: str) -> list[list[Any]]:
    """The export's rows as a text file holds them (None: an empty cell); the source column is the tag."""
    rows = [
        ["001", '  Бумага "Снегурочка"; А4  ', "Бумага офисная А4, 80 г/м2, 500 листов", "пач", None, "4802",
         "RU", "Товар", "2024-01-15", "350,00"],
        [None, "Ремонт кровли\nадминистративного здания", None, "усл. ед.", "43.91", None, "RU", "услуги",
         "15.01.2024 10:30", None],
        ["003", "Болт М8 | оцинк.", None, "шт", None, "7318150000", "CN", "0", None, "12"],
        [None] * (len(HEADERS) - 1),
        ["005", None, "Без краткого имени", "шт", None, None, None, None, None, None],
        ["006", "Кабель ВВГнг 3х2,5", None, "м", None, "8544", "RU", "товар", "вчера", None],
        ["007", "Услуги\u00a0связи ", None, "мес", "61.10", None, "RU", "Service", "2024-03-01T10:00:00Z",
         None],
        ["008", "Семена пшеницы", None, "кг", "01.11", "1001190000", "RU", "продукция", None, None],
    ]  # fmt: skip
    out = []
    for code, *cells, price in rows:
        if code is None and not any(cells):
            out.append([None] * len(HEADERS))
        else:
            out.append([code and f"{tag}-{code}", *cells, tag, price])
    return out


def expected_items(tag: str) -> list[dict[str, Any]]:
    """What every format of `text_rows` must turn into (rows 4-6 are skipped)."""
    roof = "Ремонт кровли\nадминистративного здания"
    paper, bolt, phone, seeds = (
        'Бумага "Снегурочка"; А4',
        "Болт М8 | оцинк.",
        "Услуги связи",
        "Семена пшеницы",
    )
    rows = [
        ("001", paper, "Бумага офисная А4, 80 г/м2, 500 листов", "пач", None, "4802", "RU", "product",
         datetime(2024, 1, 15, tzinfo=UTC)),
        (None, roof, roof, "усл. ед.", "43.91", None, "RU", "service",
         datetime(2024, 1, 15, 10, 30, tzinfo=UTC)),
        ("003", bolt, bolt, "шт", None, "7318150000", "CN", "product", None),
        ("007", phone, phone, "мес", "61.10", None, "RU", "service", datetime(2024, 3, 1, 10, tzinfo=UTC)),
        ("008", seeds, seeds, "кг", "01.11", "1001190000", "RU", "product", None),
    ]  # fmt: skip
    items = []
    for code, *values in rows:
        item = dict(zip(FIELDS, [code and f"{tag}-{code}", *values], strict=True))
        item.update(kind=None, type_hint=None, region=None, source=tag)
        if item["id"] is None:
            item["id"] = stable_id(item)
        items.append(item)
    return items


# Where the skipped rows are, by how the format numbers rows: CSV lines (row 2 spans two), sheet rows (the
# header is on row 3 after two blank ones), JSON lines and Parquet rows.
SKIPPED = {"csv": (6, 7, 8), "xlsx": (7, 8, 9), "rows": (4, 5, 6)}
REASONS = ("empty_row", "no_name", "bad_created_at")


def xlsx_rows(tag: str) -> list[list[Any]]:
    """The same rows as a spreadsheet stores them: codes, prices and a label as numbers, a date as a date."""
    rows = [list(row) for row in text_rows(tag)]
    rows[0][5], rows[0][8], rows[0][10] = 4802, datetime(2024, 1, 15), 350.0
    rows[1][4] = 43.91
    rows[2][5], rows[2][7], rows[2][10] = 7318150000.0, 0, 12
    rows[6][4] = 61.1  # shown as 61.10 by its number format
    return rows


def write_variant(directory: Path, tag: str, kind: str) -> Path:
    fmt, _, encoding = kind.partition("-")
    if fmt in ("csv", "tsv"):
        delimiter = {"csv": {"utf-8": ",", "cp866": "|", "utf-16-le": "\t"}.get(encoding, ";"), "tsv": "\t"}[
            fmt
        ]
        return write_delimited(directory / f"{tag}.{fmt}", HEADERS, text_rows(tag), encoding, delimiter)
    if fmt == "xlsx":
        return write_xlsx(
            directory / f"{tag}.xlsx",
            HEADERS,
            xlsx_rows(tag),
            formats={(6, 4): "00.00"},
            leading_rows=[[], []],
            other_sheets=["Справочник"],
        )
    if fmt == "parquet":
        columns = {h: [row[i] for row in text_rows(tag)] for i, h in enumerate(HEADERS)}
        columns["ТН ВЭД"] = [None if v is None else int(v) for v in columns["ТН ВЭД"]]
        columns["Цена"] = [None if v is None else float(v.replace(",", ".")) for v in columns["Цена"]]
        return write_parquet(
            directory / f"{tag}.parquet", columns, {"ТН ВЭД": pa.int64(), "Цена": pa.float64()}
        )
    rows = []
    for row in text_rows(tag):
        if all(cell is None for cell in row):
            rows.append(None)
            continue
        values = dict(zip(HEADERS, row, strict=True))
        values["ТН ВЭД"] = None if values["ТН ВЭД"] is None else int(values["ТН ВЭД"])
        rows.append(values)
    return write_jsonl(directory / f"{tag}.jsonl", rows, encoding or "utf-8")


VARIANTS = {
    # kind: (format, encoding, delimiter) the report must show
    "csv-utf-8": ("csv", "utf-8", ","),
    "csv-utf-8-sig": ("csv", "utf-8 (BOM)", ";"),
    "csv-cp1251": ("csv", "cp1251", ";"),
    "csv-cp866": ("csv", "cp866", "|"),
    "csv-utf-16-le": ("csv", "utf-16-le (BOM)", "tab"),
    "csv-utf-16-be": ("csv", "utf-16-be (BOM)", ";"),
    "tsv-cp1251": ("tsv", "cp1251", "tab"),
    "xlsx": ("xlsx", None, None),
    "parquet": ("parquet", None, None),
    "jsonl": ("jsonl", "utf-8", None),
    "jsonl-cp1251": ("jsonl", "cp1251", None),
}


@pytest.fixture(scope="module")
def produced(module_broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every variant written, published with one `produce_files` call, and the topic read back once."""
    directory = tmp_path_factory.mktemp("exports")
    topic = f"{RAW}.files{RUN}"
    tags = {kind: f"{RUN}-{kind}" for kind in VARIANTS}
    paths = [write_variant(directory, tags[kind], kind) for kind in VARIANTS]
    report = produce_files(
        module_broker.bootstrap,
        topic,
        paths,
        LocalCatalogue(),
        source_options(topic, None, None, None),
        progress=None,
    )
    values = run_sync(_values(module_broker.bootstrap, topic))
    return {"tags": tags, "report": {Path(r["file"]).stem: r for r in report["files"]}, "values": values}


async def _values(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [record["value"] async for record in read_topic(bootstrap, topic, LocalCatalogue())]


@pytest.mark.parametrize("kind", list(VARIANTS))
def test_every_format_and_encoding_round_trips_through_the_broker(
    produced: dict[str, Any], kind: str
) -> None:
    tag = produced["tags"][kind]
    got = sorted((v for v in produced["values"] if v["source"] == tag), key=lambda v: v["id"])
    assert got == sorted(expected_items(tag), key=lambda v: v["id"])

    fmt, encoding, delimiter = VARIANTS[kind]
    report = produced["report"][tag]
    assert (report["format"], report["encoding"], report["delimiter"]) == (fmt, encoding, delimiter)
    numbers = SKIPPED["csv" if fmt in ("csv", "tsv") else "xlsx" if fmt == "xlsx" else "rows"]
    assert [(s["row"], s["reason"]) for s in report["skipped_rows"]] == list(
        zip(numbers, REASONS, strict=True)
    )
    assert (report["rows_read"], report["records"], report["sent"], report["skipped"]) == (8, 5, 5, 3)
    assert report["unknown_columns"] == ["Цена"]
    assert report["columns"]["Ед. изм."] == "unit" and report["columns"]["Признак"] == "label"


def test_the_first_sheet_is_read_unless_another_is_named(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "book.xlsx", HEADERS, xlsx_rows("s"), other_sheets=["Справочник", "Прочее"])
    first = open_source(path)
    assert [i["name"] for i in first.records()][:1] == ['Бумага "Снегурочка"; А4']
    assert first.report.sheet == "Номенклатура"
    for sheet in ("Справочник", "справочник", "2"):
        [item] = read_items(path, SourceOptions(sheet=sheet))
        assert (item["name"], item["label"]) == ("Строка листа Справочник", "service")
    with pytest.raises(
        FileFormatError, match="no sheet 'Итоги'; sheets: 'Номенклатура', 'Справочник', 'Прочее'"
    ):
        open_source(path, SourceOptions(sheet="Итоги"))


@pytest.mark.parametrize(
    ("value", "number_format", "text"),
    [
        (8471300000, "General", "8471300000"),
        (8471300000.0, "General", "8471300000"),
        (62.01, "General", "62.01"),
        (1.11, "00.00", "01.11"),
        (1234, "00000", "01234"),
        (62.1, "0.00", "62.10"),
        ("00123", "@", "00123"),
        (0, "General", "0"),
    ],
)
def test_spreadsheet_numbers_come_through_as_the_text_the_cell_shows(
    value: Any, number_format: str, text: str
) -> None:
    assert cell_value(value, number_format) == text


@pytest.mark.parametrize(
    ("sample", "delimiter"),
    [
        ('name,unit\n"Болт; М8",шт\n"Гайка | М8",шт\n', ","),
        ("Наименование;Ед. изм.\nБумага офисная А4, 80 г/м2;пач\nКлей, ПВА;шт\n", ";"),
        ('Наименование\tЕИ\n"Ремонт,\nпокраска"\tусл\nКлей;ПВА\tшт\n', "\t"),
        ("Наименование|ЕИ|ОКВЭД\nУслуги связи, мобильной|мес|61.10\nКлей; ПВА|шт|\n", "|"),
        ("Наименование\nБолт\nГайка\n", None),
    ],
)
def test_delimiter_detection_respects_quotes_and_prefers_a_consistent_split(
    sample: str, delimiter: str | None
) -> None:
    assert detect_delimiter(sample, truncated=False) == delimiter


@pytest.mark.parametrize("word", ["мед", "Ремонт", "ЁЛКА новогодняя", "щётка", "Услуги по уборке помещений"])
@pytest.mark.parametrize("encoding", ["cp1251", "cp866"])
def test_cp1251_and_cp866_are_told_apart_by_their_letters(word: str, encoding: str) -> None:
    assert detect_encoding(word.encode(encoding)).name == encoding


def test_utf8_without_bom_and_utf16_without_bom_are_recognised() -> None:
    assert detect_encoding("Наименование;ЕИ\nБолт;шт\n".encode()).name == "utf-8"
    assert detect_encoding("Наименование;ЕИ\nБолт;шт\n".encode("utf-16-le")).name == "utf-16-le"
    assert detect_encoding("Наименование;ЕИ\nБолт;шт\n".encode("utf-16-be")).name == "utf-16-be"


def test_a_corrupt_byte_skips_its_row_as_undecodable_and_the_rest_is_read(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_bytes(
        "Наименование;ЕИ\nБолт;шт\n".encode() + "Гай".encode() + b"\xff;\n" + "Шайба;шт\n".encode()
    )
    source = open_source(path)
    assert [i["name"] for i in source.records()] == ["Болт", "Шайба"]
    assert source.report.encoding == "utf-8"
    assert source.report.skipped_rows == [{"row": 3, "reason": "undecodable"}]


def test_the_encoding_can_be_given(tmp_path: Path) -> None:
    path = write_delimited(tmp_path / "a.csv", ["name"], [["Щётка"]], "cp1251")
    assert [i["name"] for i in read_items(path)] == ["Щётка"]
    misread = "Щётка".encode("cp1251").decode("cp866")
    assert [i["name"] for i in read_items(path, SourceOptions(encoding="cp866"))] == [misread]
    assert resolve_encoding(path, "windows-1251").name == "cp1251"
    with pytest.raises(ValueError, match="unknown encoding 'win-1251'"):
        resolve_encoding(path, "win-1251")


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("Наименование", "name"),
        ("НАИМЕНОВАНИЕ НОМЕНКЛАТУРЫ", "name"),
        ("Название", "name"),
        ("name", "name"),
        ("Полное наименование", "full_name"),
        ("Наименование (полное)", "full_name"),
        ("Full name", "full_name"),
        ("full_name", "full_name"),
        ("Ед. изм.", "unit"),
        ("единица измерения", "unit"),
        ("ЕИ", "unit"),
        ("UoM", "unit"),
        ("ОКВЭД", "okved_code"),
        ("ОКВЭД 2", "okved_code"),
        ("Код ОКВЭД", "okved_code"),
        ("ТН ВЭД", "hs_code"),
        ("ТНВЭД", "hs_code"),
        ("Код ТН ВЭД", "hs_code"),
        ("HS code", "hs_code"),
        ("Страна происхождения", "country"),
        ("country", "country"),
        ("Регион", "region"),
        ("Вид", "kind"),
        ("Вид номенклатуры", "kind"),
        ("Тип", "type_hint"),
        ("type_hint", "type_hint"),
        ("Код", "id"),
        ("Артикул", "id"),
        ("ID", "id"),
        ("Источник", "source"),
        ("Дата", "created_at"),
        ("created_at", "created_at"),
        ("Признак", "label"),
        ("Тип (товар/услуга)", "label"),
        ("label", "label"),
    ],
)
def test_common_headers_map_onto_the_item_schema(header: str, field: str) -> None:
    from connectors.files.column_mapping import ITEM_FIELDS

    assert resolve_columns([header], ITEM_FIELDS).columns == {header: field}


def test_a_mapping_file_renames_and_ignores_columns(tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"Позиция": "name", "Наименование": None, "описание позиции": "full_name"}))
    path = write_delimited(
        tmp_path / "a.csv",
        ["Позиция", "Наименование", "Описание  позиции", "Склад"],
        [["Болт М8", "Не то", "Болт М8 оцинкованный", "Основной"]],
    )
    source = open_source(path, SourceOptions(overrides=load_overrides(mapping)))
    [item] = source.records()
    assert (item["name"], item["full_name"]) == ("Болт М8", "Болт М8 оцинкованный")
    assert source.report.columns == {"Позиция": "name", "Описание  позиции": "full_name"}
    assert (source.report.ignored_columns, source.report.unknown_columns) == (["Наименование"], ["Склад"])


def test_a_mapping_file_must_name_fields(tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"Позиция": "nmae"}))
    with pytest.raises(MappingError, match="'Позиция' maps to 'nmae', which is not a field"):
        load_overrides(mapping)
    mapping.write_text("[1, 2]")
    with pytest.raises(MappingError, match="expected a JSON object"):
        load_overrides(mapping)


def test_two_columns_for_one_field_is_an_error_before_anything_is_read(tmp_path: Path) -> None:
    path = write_delimited(
        tmp_path / "a.csv", ["Наименование", "Ед. изм.", "Название"], [["Болт", "шт", "Болт"]]
    )
    with pytest.raises(MappingError, match="columns 'Наименование' and 'Название' both map to name"):
        open_source(path)
    assert header_key(" Ед. Изм. ") == header_key("ЕДИЗМ") == "едизм"


def test_a_file_without_a_name_column_is_an_error(tmp_path: Path) -> None:
    path = write_delimited(tmp_path / "a.csv", ["Позиция", "Ед. изм."], [["Болт", "шт"]], "utf-8", ";")
    expected = "no column is the item's name (headers: 'Позиция', 'Ед. изм.')"
    with pytest.raises(MappingError, match=re.escape(expected)):
        open_source(path)
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(MappingError, match="no header row"):
        open_source(tmp_path / "empty.csv")


def test_skipped_rows_are_all_counted_and_the_first_ones_listed(tmp_path: Path) -> None:
    rows = [[f"x-{i}", "", "шт"] for i in range(LISTED_ROWS + 5)] + [["x-ok", "Болт", "шт"]]
    source = open_source(write_delimited(tmp_path / "a.csv", ["Код", "Наименование", "ЕИ"], rows))
    assert [i["id"] for i in source.records()] == ["x-ok"]
    report = source.report.as_dict()
    assert (report["rows_read"], report["records"], report["skipped"]) == (
        LISTED_ROWS + 6,
        1,
        LISTED_ROWS + 5,
    )
    assert report["skipped_by_reason"] == {"no_name": LISTED_ROWS + 5}
    assert [s["row"] for s in report["skipped_rows"]] == list(range(2, LISTED_ROWS + 2))
    assert report["skipped_rows_not_listed"] == 5


def test_blank_rows_count_only_between_rows_with_something_in_them(tmp_path: Path) -> None:
    rows = [["Болт", "шт"], ["", ""], ["Гайка", "шт"], ["", ""], [" ", ""]]
    csv_source = open_source(write_delimited(tmp_path / "a.csv", ["Наименование", "ЕИ"], rows, "utf-8", ";"))
    # A sheet whose formatting reaches far below its data: styled, empty cells on rows 5 to 40.
    formats = {(r, 0): "0.00" for r in range(3, 39)}
    xlsx_source = open_source(
        write_xlsx(tmp_path / "a.xlsx", ["Наименование", "ЕИ"], rows[:3], formats=formats)
    )
    for source in (csv_source, xlsx_source):
        assert [i["name"] for i in source.records()] == ["Болт", "Гайка"]
        assert (source.report.rows_read, source.report.skipped_rows) == (
            3,
            [{"row": 3, "reason": "empty_row"}],
        )


def test_rows_longer_than_the_header_are_read_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("Наименование;ЕИ\nБолт;шт;;\nГайка;шт;лишнее\n", encoding="utf-8")
    source = open_source(path)
    assert [(i["name"], i["unit"]) for i in source.records()] == [("Болт", "шт"), ("Гайка", "шт")]
    assert source.report.rows_with_extra_cells == 1


def test_json_lines_that_are_not_objects_are_skipped_with_their_reason(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"name": "Болт", "hs_code": 7318150000}\n[1, 2]\n{"name": \n{"Наименование": "Гайка"}\n')
    source = open_source(path)
    assert [(i["name"], i["hs_code"]) for i in source.records()] == [("Болт", "7318150000"), ("Гайка", None)]
    assert [(s["row"], s["reason"]) for s in source.report.skipped_rows] == [
        (2, "not_an_object"),
        (3, "bad_json"),
    ]


def test_file_formats_are_checked_against_the_content(tmp_path: Path) -> None:
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(FileFormatError, match=r"old binary \.xls"):
        file_format(tmp_path / "old.xls")
    (tmp_path / "renamed.xlsx").write_text("Наименование\nБолт\n")
    with pytest.raises(FileFormatError, match="not an XLSX workbook"):
        file_format(tmp_path / "renamed.xlsx")
    (tmp_path / "notes.md").write_text("# notes")
    with pytest.raises(FileFormatError, match="unknown format"):
        file_format(tmp_path / "notes.md")


def test_stable_ids_are_what_they_were() -> None:
    # The value the connector derived before it read more than CSV and JSONL: ids already sent stay valid.
    item = {"name": "Ремонт кровли", "full_name": "Ремонт кровли", "unit": "усл. ед.", "source": "erp"}
    assert stable_id(item) == "h-87c0a40a83d83a24"


def test_produce_from_the_command_line_sends_items_and_corrections(
    module_broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", module_broker.bootstrap)
    monkeypatch.setenv("NOMENCLATURE_BROKER_FLAVOR", module_broker.flavor)
    monkeypatch.setenv("NOMENCLATURE_DATA_DIR", str(tmp_path / "data"))
    tag = f"{RUN}-cli"
    exports = tmp_path / "exports"
    (exports / "erp").mkdir(parents=True)
    write_delimited(
        exports / "erp" / "a.csv",
        ["Артикул", "Номенклатура", "Склад"],
        [[f"{tag}-1", "Болт М8", "Основной"], [f"{tag}-2", "", "Основной"]],
        "cp1251",
        ";",
    )
    write_jsonl(
        exports / "b.jsonl", [{"id": f"{tag}-3", "name": "Доставка груза", "Тип (товар/услуга)": "услуга"}]
    )
    (exports / "readme.md").write_text("not an export")
    topic = f"{RAW}.cli{RUN}"

    main(["produce", "--input", str(exports), "--topic", topic])
    report = json.loads(capsys.readouterr().out)
    assert [f["file"] for f in report["files"]] == ["b.jsonl", "erp/a.csv"]
    assert report["totals"] == {
        "files": 2,
        "rows_read": 3,
        "records": 2,
        "sent": 2,
        "skipped": 1,
        "skipped_by_reason": {"no_name": 1},
    }
    sent = {v["id"]: v for v in run_sync(_values(module_broker.bootstrap, topic))}
    assert {k: (v["name"], v["label"]) for k, v in sent.items()} == {
        f"{tag}-1": ("Болт М8", None),
        f"{tag}-3": ("Доставка груза", "service"),
    }

    corrections = write_delimited(
        tmp_path / "corrections.csv",
        ["Код", "Наименование", "Признак", "Ед. изм.", "Пользователь", "Комментарий"],
        [[f"{tag}-1", "Болт М8", "Товар", "шт", "ivanov", "был услугой"]],
    )
    main(["produce", "--input", str(corrections), "--topic", CORRECTIONS])
    assert json.loads(capsys.readouterr().out)["totals"]["sent"] == 1
    found = [r["value"] for r in run_sync(_corrections(module_broker.bootstrap)) if r["key"] == f"{tag}-1"]
    assert found == [
        {
            "id": f"{tag}-1",
            "name": "Болт М8",
            "full_name": "Болт М8",
            "label": "product",
            "corrected_fields": {
                "kind": None,
                "unit": "шт",
                "type_hint": None,
                "okved_code": None,
                "hs_code": None,
                "country": None,
                "region": None,
                "source": None,
            },
            "user": "ivanov",
            "comment": "был услугой",
            "model_version": None,
            "corrected_at": None,
        }
    ]


async def _corrections(bootstrap: str) -> list[dict[str, Any]]:
    return [record async for record in read_topic(bootstrap, CORRECTIONS, LocalCatalogue())]


def test_produce_refuses_an_ambiguous_file_before_sending_anything(
    module_broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", module_broker.bootstrap)
    monkeypatch.setenv("NOMENCLATURE_DATA_DIR", str(tmp_path / "data"))
    good = write_delimited(tmp_path / "a.csv", ["Наименование"], [["Болт"]])
    bad = write_delimited(tmp_path / "b.csv", ["Наименование", "Название"], [["Болт", "Болт"]])
    topic = f"{RAW}.ambiguous{RUN}"
    with pytest.raises(SystemExit, match="both map to name"):
        main(["produce", "--input", str(good), str(bad), "--topic", topic])
    with pytest.raises(LookupError):  # never created: nothing was sent to it
        run_sync(_values(module_broker.bootstrap, topic))
    with pytest.raises(SystemExit, match=r"not to 'nomenclature\.classified'"):
        main(["produce", "--input", str(good), "--topic", "nomenclature.classified"])
