"""Word-pair context (spellfix.lexical.context): the arithmetic on hand-made counts, then what
symspellpy's real lists say about queries from dev's misses."""

from __future__ import annotations

import math

import pytest

from spellfix.lexical.context import BigramContext


def test_link_is_pointwise_mutual_information_with_backoff_for_unlisted_pairs():
    unigrams = {"rock": 9, "roll": 3, "role": 5}
    bigrams = {"rock roll": 2, "role model": 6}
    context = BigramContext(unigrams, bigrams, backoff=-2.5)
    expected = math.log(2) - math.log(8) - (math.log(9 + 1) - math.log(17)) - (math.log(3 + 1) - math.log(17))
    assert context.link("rock", "roll") == pytest.approx(expected)
    assert context.link("rock", "role") == -2.5  # not in the bigram list
    # one word either side of the edit; words further away do not count
    words = "rock role and".split()
    gain = context.edit_gain(words, 1, 2, ["roll"])
    assert gain == pytest.approx(context.link("rock", "roll") + context.link("roll", "and") - context.link("rock", "role") - context.link("role", "and"))
    assert math.isnan(context.edit_gain(["role"], 0, 1, ["roll"]))  # a one-word query: no evidence either way
    assert context.edit_gain(["rockroll"], 0, 1, ["rock", "roll"]) == pytest.approx(context.link("rock", "roll"))  # a split has a pair
    assert context.edit_gain(words, 1, 1, ["n"]) == pytest.approx(2 * -2.5 - context.link("rock", "role"))  # an insertion
    with pytest.raises(ValueError, match="non-empty"):
        BigramContext({}, bigrams)


def test_symspell_lists_prefer_the_words_that_go_with_their_neighbours():
    context = BigramContext.builtin()
    assert context.link("new", "york") > 3.0 > context.backoff
    # real-word errors from dev's misses: the typed word is a word, its neighbours argue for another
    assert context.edit_gain("the old man down an road".split(), 4, 5, ["the"]) > 3.0
    assert context.edit_gain("kickstart my hart".split(), 2, 3, ["heart"]) > 3.0
    assert context.edit_gain("stay was me".split(), 1, 2, ["with"]) > 3.0
    # and the other way round: breaking a query that fits costs the same evidence
    assert context.edit_gain("kickstart my heart".split(), 2, 3, ["hart"]) == -context.edit_gain("kickstart my hart".split(), 2, 3, ["heart"])
