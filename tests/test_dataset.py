"""The training-data builder (models/datasets/builder.py, models/datasets/transforms.py,
models/datasets/inflection.py) and the synthetic scale set (models/datasets/scale_set.py). No broker needed;
the whole file runs in about ten seconds."""

from __future__ import annotations

import csv
import json
import re
import tracemalloc
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from models.datasets.builder import (
    DEFAULT_SOURCE,
    TRAIN,
    VALIDATION,
    BuiltRows,
    build_dataset,
    build_rows,
    content_sha256,
    read_dataset,
)
from models.datasets.inflection import Vocabulary, build_vocabulary, genitive_phrase, head_segment
from models.datasets.scale_set import BaseRow, build_scale_set
from models.datasets.transforms import (
    PRODUCT,
    RULES,
    SERVICE,
    Context,
    SourceRow,
    action_on_product,
    activity_form,
    catalogue_product,
    label_of,
    prefix_stripped,
    price_list_service,
    procurement_product,
    procurement_service,
    short_name,
    variants_of,
)
from models.features.text_normalization import normalize_text
from tools.cli import main

PROVENANCE = DEFAULT_SOURCE.parent / "PROVENANCE.md"


@pytest.fixture(scope="module")
def built() -> BuiltRows:
    return build_rows()


@pytest.fixture(scope="module")
def ctx() -> Context:
    with DEFAULT_SOURCE.open(encoding="utf-8") as handle:
        names = [row["name"] for row in csv.DictReader(handle)]
    return Context(seed=42, vocabulary=build_vocabulary(names))


@pytest.fixture(scope="module")
def subset_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every 8th row of the bundled file: enough for every rule, fast to build."""
    with DEFAULT_SOURCE.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    path = tmp_path_factory.mktemp("subset") / "subset.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([rows[0], *rows[1::8]])
    return path


def service(name: str, code: str = "95.11.10") -> SourceRow:
    return SourceRow(name, SERVICE, code)


def product(name: str, code: str) -> SourceRow:
    return SourceRow(name, PRODUCT, code)


# --- single rules on concrete names ---------------------------------------------------------------------


def test_prefix_stripping_gives_the_nominative_activity(ctx: Context) -> None:
    assert prefix_stripped(service("Услуги по ремонту компьютеров"), ctx) == ["Ремонт компьютеров"]
    assert prefix_stripped(service("Работы по монтажу лифтов"), ctx) == ["Монтаж лифтов"]
    # "Поставка …" is what procurement calls a goods purchase: no service row starts with it
    assert prefix_stripped(service("Услуги по поставке продукции общественного питания"), ctx) == []


def test_every_variant_of_a_service_is_labelled_service(ctx: Context) -> None:
    row = service("Услуги по ремонту компьютеров")
    variants = variants_of(row, ctx)
    slices = {rule.slice for rule, _ in variants}
    assert {"service_prefix_stripped", "service_activity_form", "service_procurement_phrase"} <= slices
    assert {label_of(rule, row) for rule, _ in variants} == {SERVICE}


def test_activity_form(ctx: Context) -> None:
    assert activity_form(service("Услуги по ремонту компьютеров"), ctx) == [
        "Деятельность по ремонту компьютеров"
    ]
    assert activity_form(service("Услуги в области архитектуры"), ctx) == [
        "Деятельность в области архитектуры"
    ]
    assert activity_form(service("Услуги почтовой связи"), ctx) == ["Деятельность почтовой связи"]
    trade = activity_form(service("Услуги по оптовой торговле часами"), ctx)
    assert "Торговля оптовая часами" in trade


def test_procurement_phrase_for_services(ctx: Context) -> None:
    (works,) = procurement_service(service("Работы по монтажу лифтов"), ctx)
    assert works.startswith("Выполнение работ по монтажу лифтов")
    (building,) = procurement_service(service("Работы строительные по строительству мостов"), ctx)
    assert building.startswith("Выполнение строительных работ по строительству мостов")
    (services,) = procurement_service(service("Услуги по уборке помещений"), ctx)
    assert re.match(r"(Оказание|Предоставление) услуг по уборке помещений", services)


def test_price_list_lines_take_one_object_of_an_enumeration(ctx: Context) -> None:
    lines = price_list_service(service("Услуги по ремонту часов, портсигаров, пудрениц и др."), ctx)
    assert lines
    assert all(re.match(r"Ремонт (часов|портсигаров|пудрениц)\b", line) for line in lines), lines
    # an adjective split from its noun ("легковых и грузовых автомобилей") is not an object
    lines = price_list_service(service("Услуги по ремонту легковых и грузовых автомобилей"), ctx)
    assert all(line.startswith("Ремонт грузовых автомобилей") for line in lines), lines
    # activities price lists do not list by themselves give nothing
    assert price_list_service(service("Услуги по страхованию жизни"), ctx) == []


def test_an_activity_before_goods_makes_a_service(ctx: Context) -> None:
    row = product("Машины стиральные", "28.94.21.110")
    lines = action_on_product(row, ctx)
    assert lines
    assert all(re.match(r"[А-Я][а-я ]+ машин стиральных", line) for line in lines), lines
    assert {label_of(rule, row) for rule, name in variants_of(row, ctx) if name in lines} == {SERVICE}
    # no activity is made up for goods outside the listed divisions (food is not repaired)
    assert action_on_product(product("Молоко питьевое", "10.51.11.110"), ctx) == []


def test_procurement_phrase_for_goods(ctx: Context) -> None:
    row = product("Машины стиральные", "28.94.21.110")
    (line,) = procurement_product(row, ctx)
    assert re.match(r"(Поставка|Закупка|Приобретение) машин стиральных", line), line
    rule = next(rule for rule in RULES if rule.transform == "procurement_product")
    assert label_of(rule, row) == PRODUCT


def test_catalogue_lines_add_brand_model_and_units(ctx: Context) -> None:
    lines = catalogue_product(
        product("Молоко питьевое прочее, не включенное в другие группировки", "10.51"), ctx
    )
    assert lines and all(line.startswith("Молоко питьевое ") for line in lines), lines
    assert all(re.search(r"\d|«", line) for line in lines), lines
    printers = catalogue_product(product("Принтеры лазерные", "26.20.16.120"), ctx)
    assert printers and all(line.startswith("Принтеры лазерные") for line in printers)
    assert short_name("Термоугли из бурого угля (лигнита)") == "Термоугли из бурого угля"
    assert short_name("Масло подсолнечное и его фракции рафинированные") == "Масло подсолнечное"


def test_genitive_phrase(ctx: Context) -> None:
    vocabulary = ctx.vocabulary
    assert genitive_phrase("Машины стиральные", vocabulary) == "машин стиральных"
    assert genitive_phrase("Мясо птицы механической обвалки", vocabulary) == "мяса птицы механической обвалки"
    assert genitive_phrase("Тракторы для сельского хозяйства прочие", vocabulary) == (
        "тракторов для сельского хозяйства прочих"
    )
    assert (
        head_segment("Ускорители электронов (позитронов) линейные, прочие")
        == "Ускорители электронов линейные"
    )


def test_genitive_needs_attested_forms() -> None:
    # "компас" is attested, but only as a nominative singular: "Компасы" must not become "компас"
    vocabulary = Vocabulary(frozenset({"компас", "компаса", "магнитных"}), frozenset())
    assert genitive_phrase("Компасы магнитные", vocabulary) is None
    assert genitive_phrase("Пшеница", Vocabulary(frozenset(), frozenset())) is None


# --- the built dataset ----------------------------------------------------------------------------------


def test_same_seed_same_version_other_seed_other_split(subset_csv: Path) -> None:
    first = build_rows(subset_csv, seed=42)
    again = build_rows(subset_csv, seed=42)
    other = build_rows(subset_csv, seed=7)
    assert content_sha256(first.rows) == content_sha256(again.rows)
    assert content_sha256(first.rows) != content_sha256(other.rows)
    validation = {r.group for r in first.rows if r.split == VALIDATION}
    assert validation != {r.group for r in other.rows if r.split == VALIDATION}


def test_no_group_or_name_is_in_both_splits(built: BuiltRows) -> None:
    by_split: dict[str, list] = {TRAIN: [], VALIDATION: []}
    for row in built.rows:
        by_split[row.split].append(row)
    for key in ("group", "origin_code", "origin_name"):
        train = {getattr(r, key) for r in by_split[TRAIN]}
        assert not train & {getattr(r, key) for r in by_split[VALIDATION]}, key
    train_names = {normalize_text(r.name) for r in by_split[TRAIN]}
    assert not train_names & {normalize_text(r.name) for r in by_split[VALIDATION]}
    assert 0.1 < len(by_split[VALIDATION]) / len(built.rows) < 0.25


def test_every_slice_is_present_in_both_splits_with_its_rule_label(built: BuiltRows) -> None:
    for rule in RULES:
        rows = [r for r in built.rows if r.slice == rule.slice]
        assert len(rows) >= 500, rule.slice
        assert sum(r.split == VALIDATION for r in rows) >= 50, rule.slice
        expected = {rule.label} if rule.label else {PRODUCT, SERVICE}
        assert {r.label for r in rows} == expected, rule.slice
    originals = [r for r in built.rows if r.slice == "okpd2_original"]
    assert len(originals) == 16_351  # every bundled row is kept (none conflicts with a variant)


def test_services_without_the_prefix_are_in_validation(built: BuiltRows) -> None:
    unprefixed = [
        r
        for r in built.rows
        if r.split == VALIDATION
        and r.label == SERVICE
        and not re.match(r"(прочие )?(услуг|работ)", r.name.lower())
    ]
    assert len(unprefixed) > 1000
    assert {"service_prefix_stripped", "service_price_list", "service_action_on_product"} <= {
        r.slice for r in unprefixed
    }


def test_build_writes_shards_and_a_manifest(tmp_path: Path, subset_csv: Path) -> None:
    manifest = build_dataset(tmp_path / "a", source_path=subset_csv, shard_rows=1000)
    again = build_dataset(None, datasets_root=tmp_path / "root", source_path=subset_csv, shard_rows=1000)
    assert manifest["version"] == again["version"]
    assert Path(again["path"]) == tmp_path / "root" / manifest["version"]
    on_disk = json.loads((tmp_path / "a" / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk["content_sha256"].startswith(manifest["version"].removeprefix("ds-"))
    table = read_dataset(tmp_path / "a")
    assert table.num_rows == manifest["rows"] == sum(s["rows"] for s in manifest["shards"])
    assert len(manifest["shards"]) > 1 and all(s["rows"] <= 1000 for s in manifest["shards"])
    assert {"name", "label", "slice", "split", "origin_code", "transform"} <= set(table.column_names)
    for split in (TRAIN, VALIDATION):
        expected = sum(1 for s in table.column("split").to_pylist() if s == split)
        assert manifest["splits"][split]["rows"] == expected
        assert sum(counts[split] for counts in manifest["slices"].values()) == expected
    assert [r["transform"] for r in manifest["rules"]] == [r.transform for r in RULES]


def test_manifest_names_the_source_file_hash(tmp_path: Path) -> None:
    """The full build via the CLI: its source hash is the one PROVENANCE.md records."""
    main(["dataset", "build", "--out", str(tmp_path / "full")])
    manifest = json.loads((tmp_path / "full" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["source"]["sha256"] in PROVENANCE.read_text(encoding="utf-8")
    assert manifest["seed"] == 42


# --- the synthetic scale set ----------------------------------------------------------------------------

BASE = [
    BaseRow("Ремонт компьютеров", SERVICE, "service_prefix_stripped", "general"),
    BaseRow("Молоко питьевое «Агродом» 1 л", PRODUCT, "product_with_brand_model_unit", "food"),
    BaseRow("Поставка машин стиральных", PRODUCT, "product_procurement_phrase", "machinery"),
    BaseRow("Оказание услуг по уборке помещений", SERVICE, "service_procurement_phrase", "general"),
]


def test_scale_set_rows_shards_and_labels(tmp_path: Path) -> None:
    manifest = build_scale_set(2500, tmp_path / "a", seed=3, shard_rows=1000, batch_rows=300, base=BASE)
    files = sorted((tmp_path / "a").glob("part-*.parquet"))
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [1000, 1000, 500]
    assert [pq.ParquetFile(f).metadata.num_row_groups for f in files] == [4, 4, 2]  # written batch by batch
    assert manifest["rows"] == 2500
    table = pq.read_table(files[0])
    labels = dict(zip(table.column("slice").to_pylist(), table.column("label").to_pylist(), strict=True))
    assert labels == {row.slice: row.label for row in BASE}
    assert len(set(table.column("name").to_pylist())) > 100  # perturbed, not 4 names repeated
    build_scale_set(2500, tmp_path / "b", seed=3, shard_rows=1000, batch_rows=300, base=BASE)
    assert pq.read_table(files[2]).equals(pq.read_table(tmp_path / "b" / files[2].name))


def _peak_bytes(n_rows: int, out_dir: Path) -> int:
    tracemalloc.start()
    try:
        build_scale_set(n_rows, out_dir, seed=1, shard_rows=10_000, batch_rows=2_000, base=BASE)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_scale_set_memory_does_not_grow_with_rows(tmp_path: Path) -> None:
    small = _peak_bytes(4_000, tmp_path / "small")
    large = _peak_bytes(40_000, tmp_path / "large")
    assert large < 1.5 * small, (small, large)
