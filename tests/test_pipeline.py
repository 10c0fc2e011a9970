"""From a recipe's data section to training pairs: pair files, clean corpora and dictionary words."""

from __future__ import annotations

from pathlib import Path

from spellfix.config import DataConfig
from spellfix.lexical.dictionary import top_dictionary_words
from spellfix.data.pipeline import load_training_pairs


def test_dictionary_words_add_noised_one_word_queries(tmp_path: Path) -> None:
    corpus = tmp_path / "clean.txt"
    corpus.write_text("hotel california\nstairway to heaven\n", encoding="utf-8")
    base = DataConfig(clean=[str(corpus)], noisy_copies=2)
    queries, corrections = load_training_pairs(base, seed=0)
    assert sorted(set(corrections)) == ["hotel california", "stairway to heaven"]

    with_words = DataConfig(clean=[str(corpus)], noisy_copies=2, dictionary_words=300)
    queries, corrections = load_training_pairs(with_words, seed=0)
    assert len(queries) == len(corrections) == 2 * (2 + 300)
    one_word = [(q, c) for q, c in zip(queries, corrections) if " " not in c]
    assert {c for _, c in one_word} == set(top_dictionary_words(300))
    changed = sum(q != c for q, c in one_word)
    assert 0.5 * len(one_word) < changed < len(one_word)  # noised, with identity pairs kept
