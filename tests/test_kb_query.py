"""The pure query-text functions and reciprocal-rank fusion of ``kb/query.py`` (no model, no index)."""

from __future__ import annotations

import pytest

from internlocal.kb.query import RRF_K, bigram_query, cjk_bigrams, fuse, identifier_query, word_query


def test_word_query_drops_question_words_unless_nothing_else_is_left():
    assert word_query("What does the error mean?") == '"error" OR "mean"'
    assert word_query("Where is it?") == '"where" OR "is" OR "it"'  # only stop words: keep them all
    assert word_query("a 7 b cd cd") == '"7" OR "cd"'  # one-letter words go, digits stay, repeats once
    assert word_query("?!") == ""


def test_cjk_text_becomes_overlapping_bigrams_and_a_bigram_query():
    assert cjk_bigrams("故宫每周一闭馆") == "故宫 宫每 每周 周一 一闭 闭馆"
    assert cjk_bigrams("Paris 是 the capital 法国") == "是 法国"  # a lone character as itself
    assert cjk_bigrams("no CJK here") == ""
    assert bigram_query("故宫哪天故宫") == '"故宫" OR "宫哪" OR "哪天" OR "天故"'  # each bigram once
    assert bigram_query("English only") == ""


def test_identifier_query_keeps_codes_and_numbers_as_phrases():
    assert identifier_query("What does error E-4127 mean?") == '"e 4127"'
    assert identifier_query("Is 192.168.50.1 the router, or KX-55-0192?") == '"192 168 50 1" AND "kx 55 0192"'
    assert identifier_query("room 104") == '"104"'
    assert identifier_query("the Eiffel Tower in 89") == ""  # no code-like token, short numbers are words


def test_reciprocal_rank_fusion_by_hand():
    fused = fuse([["a", "b", "c"], ["b", "d"]])
    assert list(fused) == ["b", "a", "d", "c"]
    assert fused["b"] == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1))
    assert fused["a"] == pytest.approx(1 / (RRF_K + 1))
    assert fused["d"] == pytest.approx(1 / (RRF_K + 2)) and fused["c"] == pytest.approx(1 / (RRF_K + 3))
    # equal scores keep the order in which the lists first named them
    assert list(fuse([["x", "y"], ["y", "x"]])) == ["x", "y"]
    assert list(fuse([["p"], ["q"]], k=1)) == ["p", "q"] and fuse([["p"]], k=1)["p"] == 0.5
    assert fuse([]) == {} and fuse([[], []]) == {}
