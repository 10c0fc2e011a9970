"""Dictionary candidates for the encoder input: format, determinism, which words, recall."""

from __future__ import annotations

import subprocess
from pathlib import Path
import sys

import pytest

from spellfix.lexical.candidates import CandidateAnnotator, CandidatesConfig, candidate_recall


@pytest.fixture(scope="module")
def annotator() -> CandidateAnnotator:
    return CandidateAnnotator(CandidatesConfig(enabled=True))


def test_unknown_word_gets_candidates_after_the_query(annotator):
    text = annotator.annotate("recieve the package")
    query, rest = text.split(" | ", 1)
    assert query == "recieve the package"
    word, candidates = rest.split(": ")
    assert word == "recieve"
    assert candidates.split()[0] == "receive"
    assert len(candidates.split()) == annotator.config.max_per_word


def test_correct_query_of_known_words_is_left_without_candidates(annotator):
    assert annotator.annotate("hello world") == "hello world"


def test_tokens_with_digits_or_hyphens_get_no_candidates(annotator):
    assert annotator.annotate("ps4 55in t-shirt") == "ps4 55in t-shirt"


def test_real_word_error_gets_candidates_from_context(annotator):
    items = {i.word: i for i in annotator.word_candidates("ballad of john and yoko they beatles")}
    assert items["they"].reason == "suspicious"
    assert items["they"].candidates[0] == "the"
    assert "ballad" not in items and "beatles" not in items
    unknown_only = CandidateAnnotator(CandidatesConfig(enabled=True, words="unknown"))
    assert unknown_only.word_candidates("ballad of john and yoko they beatles") == []


def test_several_words_are_annotated_in_query_order(annotator):
    text = annotator.annotate("recieve teh package")
    assert text.startswith("recieve teh package | recieve: receive")
    assert " | teh: " in text and text.index("| recieve:") < text.index("| teh:")


def test_annotation_is_deterministic_across_instances_and_cache_states():
    queries = ["recieve teh package", "kickstart my hart", "lae your hands on me", "beyonse halo"]
    first = CandidateAnnotator(CandidatesConfig(enabled=True, cache_size=1))
    second = CandidateAnnotator(CandidatesConfig(enabled=True))
    assert [first.annotate(q) for q in queries] == [second.annotate(q) for q in reversed(queries)][::-1]
    assert [first.annotate(q) for q in queries] == [first.annotate(q) for q in queries]


def test_custom_separators_are_used():
    a = CandidateAnnotator(CandidatesConfig(enabled=True, separator=" || ", word_separator=" => ", max_per_word=2))
    assert a.annotate("recieve it").startswith("recieve it || recieve => receive ")


def test_recall_on_a_small_list():
    a = CandidateAnnotator(CandidatesConfig(enabled=True, words="unknown"))
    queries = ["recieve it", "helo world", "xyzzyq street", "acess denied", "blue sky"]
    refs = ["receive it", "hello world", "house street", "access denied", "blue sky"]
    r = candidate_recall(a, queries, refs, ks=(1, 5))
    assert r["n_misspelled_words"] == 4
    assert r["recall@5"] == pytest.approx(3 / 4)  # "xyzzyq" is nowhere near "house"
    assert r["annotated"] == pytest.approx(3 / 4)
    assert r["query_recall"] == pytest.approx(3 / 4)
    assert r["noise_rate"] == 0.0  # no word of the correct queries got candidates


def test_recall_rejects_mismatched_inputs(annotator):
    with pytest.raises(ValueError, match="differ in length"):
        candidate_recall(annotator, ["a"], [])


@pytest.mark.parametrize(
    "field, value, message",
    [("max_per_word", 0, "max_per_word"), ("words", "some", "words must be one of"), ("separator", "  ", "visible")],
)
def test_config_rejects_bad_values_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        CandidatesConfig(**{field: value})


def test_missing_dictionary_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="candidates dictionary not found"):
        CandidateAnnotator(CandidatesConfig(dictionary=str(tmp_path / "nope.txt")))


def test_custom_dictionary_file_is_used(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("zebra 100\nzebras 5\ncat 50\n", encoding="utf-8")
    a = CandidateAnnotator(CandidatesConfig(enabled=True, dictionary=str(words), bigram_dictionary=""))
    assert a.annotate("zebar cat") == "zebar cat | zebar: zebra zebras"


def test_candidates_module_imports_without_torch():
    code = "import sys, spellfix.lexical.candidates, spellfix.peers; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_one_edit_dictionary_caps_the_suspicious_search():
    a = CandidateAnnotator(CandidatesConfig(enabled=True, max_edit_distance=1))
    assert a.annotate("kickstart my hart").startswith("kickstart my hart | hart: heart")


def test_parallel_annotation_equals_serial_and_keeps_order(monkeypatch):
    import json

    from spellfix.config import DataConfig
    from spellfix.data import pipeline

    dev = Path(__file__).resolve().parents[1] / "data" / "dev.jsonl"
    queries = [json.loads(line)["query"] for line in dev.read_text(encoding="utf-8").splitlines()[:80]]
    formatter = pipeline.SourceFormatter(DataConfig(candidates=CandidatesConfig(enabled=True)))
    serial = formatter(queries)
    monkeypatch.setattr(pipeline, "PARALLEL_MIN_QUERIES", 0)
    assert formatter(queries, workers=2) == serial
    assert any(" | " in text for text in serial)


def test_fast_lookup_returns_symspells_words_for_dictionary_words_and_their_typos():
    """spellfix.lexical.symdelete replaces symspellpy's lookup: the same words and distances, for
    known words (the suspicious-word lookups), typos of them and short words (symspellpy's path)."""
    import random

    from symspellpy import Verbosity

    from spellfix.lexical.candidates import load_symspell
    from spellfix.lexical.symdelete import lookup_all

    sym = load_symspell(max_edit_distance=2)
    rng = random.Random(7)
    words = {"ac", "xz", "hedphones", "metalica", "recieve", "i'd", *"abcdefghijklmnopqrstuvwxyz"}
    for word in rng.sample(sorted(sym.words), 400):
        words.add(word)
        if len(word) > 2:
            i = rng.randrange(len(word))
            words.add(word[:i] + word[i + 1 :])
            words.add(word[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz") + word[i:])
    for max_distance in (1, 2):
        for word in sorted(words):
            expected = sorted((s.term, s.distance) for s in sym.lookup(word, Verbosity.ALL, max_distance))
            assert sorted(lookup_all(sym, word, max_distance)) == expected, (word, max_distance)
