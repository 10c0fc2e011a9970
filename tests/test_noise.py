"""Specifications of the noise synthesizer: realistic, reproducible, never empty."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from spellfix.data import ConfusionList, NoiseConfig, load_confusions, make_noisy_pairs
from spellfix.data.noise import EDIT_TYPES, KEYBOARD_NEIGHBORS, VOWELS, codespell_pairs
from spellfix.lexical.dictionary import dictionary_words

REPO = Path(__file__).resolve().parent.parent
NO_CONFUSIONS = ConfusionList.empty()

# Plain dictionary words with vowels and double letters, so every edit type has something to act on.
WORDS = [
    "coffee", "office", "balloon", "letter", "summer", "little", "between", "planet", "garden", "window",
    "music", "player", "camera", "cable", "phone", "laptop", "travel", "yellow", "bottle", "kitchen",
]


def queries(n: int, seed: int = 1, max_words: int = 4) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, max_words))) for _ in range(n)]


def only(edit_type: str, **overrides: object) -> NoiseConfig:
    """A config that applies exactly one character edit of one type to one word per query."""
    weights = {f"weight_{t}": (1.0 if t == edit_type else 0.0) for t in EDIT_TYPES}
    base = dict(
        identity_rate=0.0, two_errors_rate=0.0, split_rate=0.0, merge_rate=0.0, confusion_rate=0.0,
        edits_per_word=[1.0, 0.0, 0.0],
    )
    return NoiseConfig(**{**base, **weights, **overrides})  # type: ignore[arg-type]


def changed_word(noisy: str, clean: str) -> tuple[str, str]:
    pairs = [(n, c) for n, c in zip(noisy.split(" "), clean.split(" ")) if n != c]
    assert len(pairs) == 1, (noisy, clean)
    return pairs[0]


def load_calibration_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("calibrate_noise", REPO / "data" / "calibrate_noise.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- reproducibility


def test_same_seed_gives_identical_pairs_and_another_seed_differs() -> None:
    clean = queries(500)
    first = make_noisy_pairs(clean, seed=7, confusions=NO_CONFUSIONS)
    assert first == make_noisy_pairs(clean, seed=7, confusions=NO_CONFUSIONS)
    other = make_noisy_pairs(clean, seed=8, confusions=NO_CONFUSIONS)
    assert sum(a != b for a, b in zip(first, other)) > 200


def test_pairs_do_not_depend_on_hash_seed_with_default_confusions() -> None:
    code = (
        "import json, sys; from spellfix.data import make_noisy_pairs; "
        "qs = ['receive the letter', 'definitely separate', 'coffee beans', 'the beatles'] * 50; "
        "print(json.dumps(make_noisy_pairs(qs, seed=3)))"
    )
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]
    assert any(noisy != clean for noisy, clean in outputs[0])


# ---------------------------------------------------------------- edit types


def test_delete_removes_one_letter() -> None:
    for noisy, clean in make_noisy_pairs(queries(300), seed=0, config=only("delete")):
        n, c = changed_word(noisy, clean)
        assert len(n) == len(c) - 1 and any(c[:i] + c[i + 1 :] == n for i in range(len(c)))


def test_insert_adds_one_letter() -> None:
    for noisy, clean in make_noisy_pairs(queries(300), seed=0, config=only("insert")):
        n, c = changed_word(noisy, clean)
        assert len(n) == len(c) + 1 and any(n[:i] + n[i + 1 :] == c for i in range(len(n)))


def test_double_repeats_a_letter_of_the_word() -> None:
    for noisy, clean in make_noisy_pairs(queries(300), seed=0, config=only("double")):
        n, c = changed_word(noisy, clean)
        assert any(c[: i + 1] + c[i] + c[i + 1 :] == n for i in range(len(c)))


def test_undouble_drops_one_of_a_double_letter() -> None:
    doubled = [w for w in WORDS if any(a == b for a, b in zip(w, w[1:]))]
    clean = [f"{w} {v}" for w in doubled for v in doubled]
    for noisy, clean_q in make_noisy_pairs(clean, seed=0, config=only("undouble")):
        n, c = changed_word(noisy, clean_q)
        assert any(c[i] == c[i + 1] and c[:i] + c[i + 1 :] == n for i in range(len(c) - 1))


def test_transpose_swaps_two_adjacent_letters() -> None:
    for noisy, clean in make_noisy_pairs(queries(300), seed=0, config=only("transpose")):
        n, c = changed_word(noisy, clean)
        assert any(c[:i] + c[i + 1] + c[i] + c[i + 2 :] == n for i in range(len(c) - 1))


@pytest.mark.parametrize("edit_type", ["substitute_keyboard", "substitute_vowel", "substitute_other"])
def test_substitutions_replace_one_letter_by_the_right_kind(edit_type: str) -> None:
    for noisy, clean in make_noisy_pairs(queries(300), seed=0, config=only(edit_type)):
        n, c = changed_word(noisy, clean)
        diffs = [(a, b) for a, b in zip(c, n) if a != b]
        assert len(n) == len(c) and len(diffs) == 1
        old, new = diffs[0]
        if edit_type == "substitute_keyboard":
            assert new in KEYBOARD_NEIGHBORS[old]
        if edit_type == "substitute_vowel":
            assert old in VOWELS and new in VOWELS


def test_keyboard_neighbours_are_the_qwerty_ones() -> None:
    assert sorted(KEYBOARD_NEIGHBORS["s"]) == sorted("weadzx")
    assert sorted(KEYBOARD_NEIGHBORS["g"]) == sorted("tyfhvb")
    assert sorted(KEYBOARD_NEIGHBORS["q"]) == sorted("wa")


def test_default_mix_reproduces_the_calibrated_edit_distribution() -> None:
    """Round trip: measuring the synthesizer's output with the calibration script gives back
    (within a tolerance for ambiguous edit scripts) the mix it was configured with."""
    calibration = load_calibration_script()
    config = NoiseConfig(identity_rate=0.0, two_errors_rate=0.0, split_rate=0.0, merge_rate=0.0, confusion_rate=0.0)
    words = sorted(w for w in dictionary_words() if 6 <= len(w) <= 10)[::20]
    pairs = make_noisy_pairs(words, seed=0, config=config, confusions=NO_CONFUSIONS)
    measured = calibration.measure((noisy, clean) for noisy, clean in pairs if noisy != clean)
    weights = config.edit_weights()
    total = sum(weights.values())
    for edit_type in EDIT_TYPES:
        share = measured["edit_types"][edit_type]
        assert share > 0.01, f"{edit_type} never occurs"
        assert abs(share - weights[edit_type] / total) < 0.04, (edit_type, share)
    assert abs(measured["first_char_rate"] - config.first_char_rate) < 0.02
    assert measured["edits_per_word"][0] > 0.6


def test_noise_config_defaults_are_the_calibrated_figures() -> None:
    calibration = load_calibration_script()
    suggested = calibration.calibrate()["suggested_defaults"]
    defaults = dataclasses.asdict(NoiseConfig())
    for name, value in suggested.items():
        if isinstance(value, list):
            assert defaults[name] == pytest.approx(value, abs=0.011), name
        else:
            assert defaults[name] == pytest.approx(value, abs=0.011), name


# ---------------------------------------------------------------- query-level behaviour


def test_identity_share_is_respected_within_tolerance() -> None:
    clean = queries(20000)
    pairs = make_noisy_pairs(clean, seed=0, config=NoiseConfig(identity_rate=0.3), confusions=NO_CONFUSIONS)
    share = sum(noisy == c for noisy, c in pairs) / len(pairs)
    assert 0.28 <= share <= 0.32, share  # ~6 standard deviations of a binomial at n=20000


def test_mostly_one_misspelled_word_and_two_at_the_configured_rate() -> None:
    config = NoiseConfig(identity_rate=0.0, two_errors_rate=0.1, split_rate=0.0, merge_rate=0.0)
    clean = [q for q in queries(6000, max_words=5) if len(q.split()) >= 3]
    counts = Counter(
        sum(a != b for a, b in zip(noisy.split(" "), c.split(" ")))
        for noisy, c in make_noisy_pairs(clean, seed=0, config=config, confusions=NO_CONFUSIONS)
    )
    total = sum(counts.values())
    assert counts[1] / total > 0.85
    assert 0.07 <= counts[2] / total <= 0.13


def test_confusion_list_substitution_uses_real_pairs() -> None:
    confusions = ConfusionList.from_pairs([("recieve", "receive"), ("recive", "receive"), ("teh", "the")])
    config = NoiseConfig(identity_rate=0.0, confusion_rate=1.0, two_errors_rate=0.0, split_rate=0.0, merge_rate=0.0)
    pairs = make_noisy_pairs(["receive"] * 200, seed=0, config=config, confusions=confusions)
    assert {noisy for noisy, _ in pairs} == {"recieve", "recive"}


def test_default_confusions_come_from_shipped_file_and_codespell() -> None:
    confusions = load_confusions()
    real = ("recieve", "receive")
    assert real in codespell_pairs()
    assert real[0] in confusions["receive"]
    only_file = load_confusions(use_codespell=False)
    assert 0 < len(only_file) < len(confusions)
    config = NoiseConfig(identity_rate=0.0, confusion_rate=1.0, two_errors_rate=0.0, split_rate=0.0, merge_rate=0.0)
    words = [w for w in sorted(confusions.by_word) if len(w) >= config.min_word_chars][::50]
    for noisy, clean in make_noisy_pairs(words, seed=0, config=config):
        assert noisy in confusions[clean]


def test_confusion_list_drops_far_pairs_and_multiword_entries() -> None:
    confusions = ConfusionList.from_pairs(
        [("a", "above"), ("teh", "the"), ("alot", "a lot"), ("the", "the"), ("xqzvw", "house"), ("hous", "house")]
    )
    assert confusions.pairs() == [("hous", "house"), ("teh", "the")]


def test_split_inserts_one_space_inside_a_word() -> None:
    config = NoiseConfig(identity_rate=0.0, split_rate=1.0, merge_rate=0.0, two_errors_rate=0.0)
    for noisy, clean in make_noisy_pairs(queries(300), seed=0, config=config, confusions=NO_CONFUSIONS):
        assert noisy.count(" ") == clean.count(" ") + 1
        assert noisy.replace(" ", "") == clean.replace(" ", "")
        assert all(len(piece) >= 2 for piece in noisy.split(" "))


def test_merge_removes_one_space_between_words() -> None:
    config = NoiseConfig(identity_rate=0.0, split_rate=0.0, merge_rate=1.0, two_errors_rate=0.0)
    clean = [q for q in queries(300) if " " in q]
    for noisy, c in make_noisy_pairs(clean, seed=0, config=config, confusions=NO_CONFUSIONS):
        assert noisy.count(" ") == c.count(" ") - 1
        assert noisy.replace(" ", "") == c.replace(" ", "")


def test_outputs_are_never_empty_and_always_normalised() -> None:
    harsh = NoiseConfig(
        identity_rate=0.0, two_errors_rate=1.0, split_rate=0.2, merge_rate=0.2, min_word_chars=1,
        only_known_words=False, edits_per_word=[0.0, 0.0, 1.0], weight_delete=1.0, weight_undouble=1.0,
    )
    tiny = ["a", "ab", "of", "x y", "i o u", "to be", "  spaced   out  ", "a1", "ii", "vol 3"] * 100
    for noisy, clean in make_noisy_pairs(tiny, seed=0, config=harsh, confusions=NO_CONFUSIONS):
        assert noisy and clean
        assert noisy == " ".join(noisy.split())
        assert clean == " ".join(clean.split())


def test_unknown_words_and_digits_are_left_alone_by_default() -> None:
    config = NoiseConfig(identity_rate=0.0)
    unknown = ["zarvel kintora", "2 4", "qxbrt", "kintora 3"] * 50
    assert all(n == c for n, c in make_noisy_pairs(unknown, seed=0, config=config))
    anything = dataclasses.replace(config, only_known_words=False)
    assert any(n != c for n, c in make_noisy_pairs(unknown, seed=0, config=anything, confusions=NO_CONFUSIONS))


def test_empty_clean_query_is_rejected_with_its_index() -> None:
    with pytest.raises(ValueError, match=r"clean_queries\[1\] is empty"):
        make_noisy_pairs(["fine", "   "], confusions=NO_CONFUSIONS)


# ---------------------------------------------------------------- configuration


def test_every_noise_config_field_has_a_default_and_help() -> None:
    config = NoiseConfig()
    for f in dataclasses.fields(NoiseConfig):
        assert f.metadata.get("help"), f"{f.name} has no help text"
        assert getattr(config, f.name) is not None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"identity_rate": 1.5}, "identity_rate must be between 0 and 1"),
        ({"position_weights": [1.0, 1.0]}, "position_weights must be 5 non-negative weights"),
        ({"edits_per_word": [0.0, 0.0]}, "edits_per_word must be non-negative weights"),
        ({"weight_delete": -1.0}, r"weight_\*"),
        ({"min_word_chars": 0}, "min_word_chars must be >= 1"),
    ],
)
def test_invalid_noise_config_names_the_field(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NoiseConfig(**overrides)  # type: ignore[arg-type]


def test_top_dictionary_words_are_the_most_frequent_real_words_in_order() -> None:
    from spellfix.lexical.dictionary import top_dictionary_words

    words = top_dictionary_words(2000)
    assert words[:3] == ["the", "and", "for"]  # "of", "to", "a" are shorter than 3 letters
    assert len(words) == len(set(words)) == 2000
    assert all(len(w) >= 3 and w in dictionary_words() for w in words)
    assert "accommodation" in words and "accommodation" not in top_dictionary_words(1000)
    assert top_dictionary_words(0) == []


def test_real_word_rate_turns_misspellings_into_other_dictionary_words() -> None:
    """Real-word errors ("hart" for "heart") are a fifth of dev's misspellings; random edits make
    few of them. ``real_word_rate`` redraws a misspelling until it is a dictionary word."""
    vocabulary = dictionary_words()

    def real_word_share(rate: float, clean: list[str]) -> float:
        config = NoiseConfig(identity_rate=0.0, two_errors_rate=0.0, split_rate=0.0, merge_rate=0.0, real_word_rate=rate)
        changed = [
            next(a for a, b in zip(noisy.split(" "), clean.split(" ")) if a != b)
            for noisy, clean in make_noisy_pairs(clean, seed=0, config=config, confusions=NO_CONFUSIONS)
            if noisy != clean
        ]
        return sum(word in vocabulary for word in changed) / len(changed)

    multi = [q for q in queries(3000) if len(q.split()) >= 2]
    assert real_word_share(0.0, multi) < 0.12
    assert real_word_share(1.0, multi) > 0.3 + real_word_share(0.0, multi)
    # a one-word query never gets one: nothing would tell it from a correct query
    single = sorted(w for w in vocabulary if 4 <= len(w) <= 8)[::40]
    assert real_word_share(1.0, single) == real_word_share(0.0, single)
    with pytest.raises(ValueError, match="real_word_rate"):
        NoiseConfig(real_word_rate=1.5)
