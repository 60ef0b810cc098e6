from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from models.features.featurizer import FEATURE_GROUPS, Featurizer
from models.features.language import EMBEDDING_DIMS, language
from models.features.lexical_cues import SERVICE_STEMS, word_cues
from models.features.text_normalization import normalize_text

ITEMS = [
    {"id": "1", "name": "Ремонт кровли"},
    {"id": "2", "name": "Картридж HP CF226X"},
    {"id": "3", "name": "Бумага офисная А4, 500 л."},
    {"id": "4", "name": "Услуги по техническому обслуживанию кондиционеров"},
]


@pytest.fixture(scope="module")
def featurizer() -> Featurizer:
    return Featurizer()


def test_normalisation_case_yo_and_punctuation() -> None:
    assert normalize_text("ЁЛКА Новогодняя") == "елка новогодняя"
    assert normalize_text("Бумага (А4), 500л.; «Снегурочка»") == "бумага а4 500л снегурочка"
    assert normalize_text("  Молоко   3,2%  ") == "молоко 3 2"


def test_latin_lookalikes_mapped_only_inside_cyrillic_words() -> None:
    latin_p = "P" + "емонт"  # Latin P followed by Cyrillic letters
    assert latin_p != "Ремонт"
    assert normalize_text(latin_p) == "ремонт"
    assert normalize_text("Kабель cетевой") == "кабель сетевой"  # Latin K and c
    assert normalize_text("HP") == "hp"
    assert normalize_text("Картридж HP CF226X") == "картридж hp cf226x"
    assert normalize_text("Ноутбук Lenovo") == "ноутбук lenovo"


def test_lexical_cues() -> None:
    assert {"svc", "svc:ремонт"} <= set(word_cues("ремонт"))
    assert "svc:обслуживан" in word_cues("обслуживание")
    assert "unit" in word_cues("кг")
    assert "unit" in word_cues("500мл")
    assert "unit" not in word_cues("в")  # a preposition, not volts
    assert "model" in word_cues("cf226x")
    assert "num" in word_cues("500")
    assert "latin" in word_cues("hp")
    assert word_cues("кровли") == []
    assert all(stem == stem.lower() for stem in SERVICE_STEMS)


def test_transform_shape_dtype_and_normalisation(featurizer: Featurizer) -> None:
    features = featurizer.transform(ITEMS)
    assert isinstance(features, sp.csr_matrix)
    assert features.shape == (len(ITEMS), featurizer.width) == (len(ITEMS), 4096 + 256 + 2 * EMBEDDING_DIMS)
    assert features.dtype == np.float32
    text_block = features[:, : featurizer.n_text_features]
    np.testing.assert_allclose(sp.linalg.norm(text_block, axis=1), 1.0, rtol=1e-5)
    assert features[:, featurizer.n_text_features : featurizer.n_features].nnz == 0  # no structured fields
    head, head_vector, summed = featurizer.block_starts[2:]
    assert (head, summed - head_vector) == (4096, EMBEDDING_DIMS)
    for block in (features[:, head:head_vector], features[:, head_vector:summed], features[:, summed:]):
        np.testing.assert_allclose(sp.linalg.norm(block, axis=1), 1.0, rtol=1e-5)  # each block unit-length


def test_transform_is_deterministic_across_instances(featurizer: Featurizer) -> None:
    first = featurizer.transform(ITEMS)
    again = featurizer.transform(ITEMS)  # warm caches
    fresh = Featurizer().transform(ITEMS)
    for other in (again, fresh):
        assert (first != other).nnz == 0
    assert Featurizer().version == featurizer.version
    assert len(featurizer.version) == 12


def test_version_depends_on_parameters() -> None:
    assert Featurizer(n_features=2048).version != Featurizer().version
    assert Featurizer(ngram_range=(3, 4)).version != Featurizer().version
    assert Featurizer(cache_size=10).version == Featurizer().version


def test_lookalike_spelling_gives_same_vector(featurizer: Featurizer) -> None:
    mixed = {"name": "P" + "емонт кpовли"}  # Latin P and Latin p
    clean = {"name": "Ремонт кровли"}
    assert (featurizer.transform([mixed]) != featurizer.transform([clean])).nnz == 0


def test_structured_fields_change_the_vector_in_the_field_block(featurizer: Featurizer) -> None:
    base = {"name": "Ноутбук Lenovo ThinkPad"}
    plain = featurizer.transform([base])
    text_columns = set(plain.indices.tolist())
    variants = [
        {"unit": "шт"},
        {"kind": "Товар"},
        {"type_hint": "Оборудование"},
        {"okved_code": "46.51"},
        {"hs_code": "8471300000"},
    ]
    rows = featurizer.transform([{**base, **fields} for fields in variants])
    field_sets = []
    for i in range(len(variants)):
        row = rows[i]
        assert (row != plain).nnz > 0
        np.testing.assert_allclose(
            row[:, : featurizer.n_text_features].toarray(), plain[:, : featurizer.n_text_features].toarray()
        )
        field_columns = set(row.indices.tolist()) - text_columns
        assert field_columns and min(field_columns) >= featurizer.n_text_features
        field_sets.append(frozenset(field_columns))
    assert len(set(field_sets)) == len(variants)
    # Different values of one field give different features.
    a, b = featurizer.transform([{**base, "okved_code": "46.51"}, {**base, "okved_code": "62.01"}])
    assert (a != b).nnz > 0


def test_full_name_adds_words(featurizer: Featurizer) -> None:
    name_only = featurizer.transform([{"name": "Ремонт кровли"}])
    same = featurizer.transform([{"name": "Ремонт кровли", "full_name": "ремонт  кровли."}])
    longer = featurizer.transform(
        [{"name": "Ремонт кровли", "full_name": "Ремонт кровли из металлочерепицы"}]
    )
    other = featurizer.transform([{"name": "Ремонт кровли", "full_name": "Кровельные работы"}])
    assert (name_only != same).nnz == 0
    assert longer.nnz > name_only.nnz
    assert other.nnz > name_only.nnz
    segments = [
        tuple((entry.word, role) for entry, role in segment)
        for segment in featurizer._segments({"name": "Ремонт кровли", "full_name": "Кровельные работы"})
    ]
    # (word, role): the first noun of each segment's first part heads it
    assert segments == [(("ремонт", 1), ("кровли", 0)), (("кровельные", 0), ("работы", 1))]


def test_empty_item_gives_zero_row(featurizer: Featurizer) -> None:
    features = featurizer.transform([{"id": "x", "name": None}, {"id": "y", "name": "  ,. "}])
    assert features.shape == (2, featurizer.width)
    assert features.nnz == 0
    occlusions = featurizer.occlusions([{"id": "x", "name": None}])
    assert occlusions.parts == [[]] and occlusions.contributions.shape[0] == 0


def test_a_words_contribution_is_everything_it_adds_to_the_counts(featurizer: Featurizer) -> None:
    item = {"name": "Услуги по ремонту, кровли", "unit": "усл. ед."}
    occlusions = featurizer.occlusions([item])
    assert occlusions.parts == [["услуги", "по", "ремонту", "кровли", "unit=усл. ед."]]
    counts = occlusions.counts.toarray()[0]
    contributions = occlusions.contributions.toarray()
    sparse, fields_end = featurizer.n_sparse, featurizer.n_features
    assert (contributions[:, :sparse] <= counts[:sparse]).all()
    # the words' shares cover the text block (a bigram is in both of its words' shares), the field the rest
    text = featurizer.n_text_features
    assert set(np.flatnonzero(contributions[:4, :text].sum(axis=0))) == set(np.flatnonzero(counts[:text]))
    assert set(np.flatnonzero(contributions[4])) == set(np.flatnonzero(counts[text:fields_end]) + text)
    # the head word "услуги" holds the head block; the words' vectors add up to the summed-embedding block;
    # the field has neither
    head_block = set(np.flatnonzero(counts[fields_end:sparse]) + fields_end)
    assert featurizer._head_column("w:услуги") in head_block
    assert head_block == set(np.flatnonzero(contributions[0, fields_end:sparse]) + fields_end)
    summed = slice(featurizer.block_starts[-1], None)
    np.testing.assert_allclose(contributions[:4, summed].sum(axis=0), counts[summed], atol=1e-5)
    assert not contributions[4, sparse:].any()
    # "услуги" heads the first part, "кровли" the second: each contributes its head-noun features
    assert featurizer._text_column("n1:lemma:услуга") in set(np.flatnonzero(contributions[0]))
    assert featurizer._text_column("n2:lemma:кровля") in set(np.flatnonzero(contributions[3]))
    head_vector = slice(featurizer.block_starts[-2], featurizer.block_starts[-1])
    np.testing.assert_allclose(contributions[0, head_vector], counts[head_vector])
    remont = set(np.flatnonzero(contributions[2]))
    assert {featurizer._text_column("c:svc"), featurizer._text_column("w:ремонту")} <= remont
    assert featurizer._text_column("g: ре") in remont
    assert featurizer._text_column("b:по ремонту") in remont
    assert featurizer._text_column("h:услуги") in set(np.flatnonzero(contributions[0]))


def test_leaving_a_middle_word_out_keeps_its_neighbours_apart(featurizer: Featurizer) -> None:
    occlusions = featurizer.occlusions([{"name": "Ремонт кровли здания"}])
    remaining = occlusions.counts - occlusions.contributions[1]
    assert remaining[0, featurizer._text_column("b:ремонт здания")] == 0
    assert remaining[:, : featurizer.n_features].min() >= 0


def test_occlusion_parts_are_name_words_then_fields(featurizer: Featurizer) -> None:
    item = {"name": "Кабель", "full_name": "Кабель силовой медный", "okved_code": "27.32", "hs_code": "8544"}
    assert featurizer.occlusions([item]).parts == [["кабель", "okved_code=27.32", "hs_code=8544"]]
    assert featurizer.occlusions([{"full_name": "Кабель силовой"}]).parts == [["кабель", "силовой"]]
    many = {"name": " ".join(f"слово{i}" for i in range(20)), "unit": "шт"}
    assert len(featurizer.occlusions([many], max_parts=12).parts[0]) == 12


def test_feature_groups_add_up_to_the_features(featurizer: Featurizer) -> None:
    items = [*ITEMS, {"name": "Ремонт ремонт", "unit": "усл. ед.", "okved_code": "95.11", "hs_code": "8471"}]
    groups = featurizer.group_counts(items)
    assert set(groups) == set(FEATURE_GROUPS)
    rebuilt = featurizer.normalize_counts(sum(groups.values()))
    assert (rebuilt != featurizer.transform(items)).nnz == 0
    assert groups["okved_code"][-1].nnz == 2  # division and section
    assert groups["char_ngrams"].nnz > groups["words"].nnz


def test_digest_is_stable_and_discriminates(featurizer: Featurizer) -> None:
    digests = featurizer.feature_digest(ITEMS)
    assert digests == Featurizer().feature_digest(ITEMS)
    assert len(set(digests)) == len(ITEMS)
    assert all(len(d) == 16 and int(d, 16) >= 0 for d in digests)
    features = featurizer.transform(ITEMS)
    assert [Featurizer.digest(features[i]) for i in range(len(ITEMS))] == digests
    assert featurizer.feature_digest([{**ITEMS[0], "unit": "м2"}]) != digests[:1]


def test_bounded_caches_do_not_change_output(featurizer: Featurizer) -> None:
    tiny = Featurizer(cache_size=3)
    for _ in range(2):
        assert (tiny.transform(ITEMS) != featurizer.transform(ITEMS)).nnz == 0
    assert len(tiny._words) <= 3 and len(tiny._bigrams) <= 3


def test_pickle_round_trip(featurizer: Featurizer) -> None:
    featurizer.transform(ITEMS)
    restored = pickle.loads(pickle.dumps(featurizer))
    assert restored.version == featurizer.version
    assert restored._words == {}  # caches are not persisted
    assert (restored.transform(ITEMS) != featurizer.transform(ITEMS)).nnz == 0


def test_inflected_forms_share_their_lemma(featurizer: Featurizer) -> None:
    one, other = featurizer.transform([{"name": "Замена колодки"}, {"name": "Замена колодок"}])
    lemma = featurizer._text_column("l:колодка")
    assert one[0, lemma] > 0 and other[0, lemma] > 0
    assert (
        featurizer._text_column("w:колодки") in one.indices
        and featurizer._text_column("w:колодки") not in other.indices
    )


@pytest.mark.parametrize(
    ("noun", "suffix"),
    [("промывка", "ка"), ("окрашивание", "ание"), ("составление", "ение"), ("снятие", "тие"),
     ("консультация", "ация"), ("монтаж", "аж"), ("замена", "а"), ("ремонт", "")],
)  # fmt: skip
def test_verbal_nouns_come_from_the_dictionary(noun: str, suffix: str) -> None:
    analysis = language().analyse(noun)
    assert analysis.pos == "NOUN" and analysis.verbal_suffix == suffix


@pytest.mark.parametrize("noun", ["кабель", "телевизор", "молоко", "стол", "колодка", "холодильник"])
def test_nouns_of_things_are_not_verbal(noun: str) -> None:
    assert language().analyse(noun).verbal_suffix is None


def test_verbal_head_noun_is_a_feature(featurizer: Featurizer) -> None:
    features = featurizer.transform([{"name": "Промывка инжектора"}, {"name": "Инжектор дизельный"}])
    verbal = featurizer._text_column("n1:verbal:True")
    assert features[0, verbal] > 0 and features[1, verbal] == 0
    assert features[1, featurizer._text_column("n1:verbal:False")] > 0


def test_unseen_words_get_embeddings_near_their_kind(featurizer: Featurizer) -> None:
    """The head-word block of two action nouns is closer than of an action noun and a thing."""
    rows = featurizer.transform([{"name": "Покраска"}, {"name": "Стрижка"}, {"name": "Телевизор"}])
    head = rows[:, featurizer.block_starts[-2] : featurizer.block_starts[-1]].toarray()
    assert head[0] @ head[1] > head[0] @ head[2]


def test_without_language_knowledge_the_blocks_are_gone() -> None:
    plain = Featurizer(morphology=False, embeddings=False)
    assert plain.width == plain.n_features == plain.n_sparse and plain.version != Featurizer().version
    assert plain.transform(ITEMS).shape == (len(ITEMS), 4096)


def test_the_head_word_keeps_its_weight_in_a_long_name(featurizer: Featurizer) -> None:
    short, long = featurizer.transform(
        [{"name": "Монтаж багета"}, {"name": "Монтаж полиуретанового потолочного багета шириной до 100мм"}]
    )
    column = featurizer._head_column("w:монтаж")
    assert short[0, column] == pytest.approx(long[0, column])
    assert short[0, featurizer._text_column("w:монтаж")] > long[0, featurizer._text_column("w:монтаж")]


def test_word_analyses_hold_plain_strings() -> None:
    """pymorphy's grammemes are a str subclass, which the garbage collector tracks; the analyses the
    featurizer caches by the hundred thousand hold plain strs (`streams.pipeline.gc_pauses`)."""
    from models.features.language import language

    analysis = language().analyse("насосы")
    assert analysis.pos == "NOUN" and analysis.number == "plur"
    assert all(type(value) is str for value in analysis[:4])


def test_morphology_runs_on_the_dawg_c_extension() -> None:
    """pymorphy3[fast]: its dictionary is read with DAWG2's C extension (4× faster analyses than the
    pure-Python reader it falls back to, with the same results)."""
    import pymorphy3.dawg

    assert pymorphy3.dawg.DAWG.__module__ == "dawg"


def test_a_name_is_placed_once_whatever_full_name_it_comes_with() -> None:
    """Names and full names are cached as texts: an item made of texts seen in other items gets their
    placed words, and features equal to a fresh featurizer's."""
    featurizer = Featurizer()
    items = [
        {"name": "Насос центробежный", "full_name": "Насос центробежный консольный К 80-50-200"},
        {"name": "Ремонт насоса", "full_name": "Ремонт и обслуживание насосного оборудования"},
        {"name": "Насос центробежный", "full_name": "Ремонт и обслуживание насосного оборудования"},
        {"name": "", "full_name": "Насос центробежный"},
    ]
    seen = featurizer.transform(items[:2])
    mixed = featurizer.transform(items[2:])
    first, second, third, fourth = (featurizer._analysed(item) for item in items)
    assert len(first.segments) == 1 and len(second.segments) == 2  # the first full_name has its name
    assert third.segments[1] is second.segments[1] and fourth.segments[0] is third.segments[0]
    assert fourth.name_words is third.name_words
    fresh = Featurizer()
    for got, items_ in ((seen, items[:2]), (mixed, items[2:])):
        assert (got != fresh.transform(items_)).nnz == 0
    featurizer.forget_items()
    assert featurizer._analysed(items[2]).segments[1] is not second.segments[1]
