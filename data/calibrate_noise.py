#!/usr/bin/env python
"""Measure how people misspell, to set the defaults of spellfix.data.noise.NoiseConfig.

For every (misspelling, correct) pair of a real-error source, the Levenshtein edit script from the
correct word to the misspelling (``rapidfuzz.distance.Levenshtein.editops``) is classified into the
synthesizer's edit types:

* transpose            -- two adjacent letters swapped (found as replace+replace, insert+delete or
                          delete+insert on neighbouring positions; checked against Levenshtein - OSA)
* double / undouble    -- a letter inserted next to the same letter / one of a double letter dropped
* insert / delete      -- any other insertion / deletion
* substitute_keyboard  -- replaced by a QWERTY neighbour (same map as the synthesizer)
* substitute_vowel     -- a vowel replaced by another vowel
* substitute_other     -- any other replacement

and we count edits per word, where in the word each edit falls (first letter; per-letter rate in
five relative-position bins), and which letters insertions add. Sources: data/real_errors_train.tsv
(Birkbeck, Aspell, Wikipedia) and codespell's dictionary, filtered exactly like the confusion list
(single words, edit distance <= 3 and <= half the word: Birkbeck's very poor spellers -- "a" for
"above" -- are not typos). The two sources are pooled with equal weight: one is mostly handwriting by
weak spellers, the other typing errors found in code and Wikipedia; queries are typed by everyone.

    python data/calibrate_noise.py                 # table of findings + suggested defaults
    python data/calibrate_noise.py --json out.json # also write the figures
    python data/calibrate_noise.py --compare-dev   # add the dev set's misspellings as a check
                                                   # (shown for comparison, never used for the defaults)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from rapidfuzz.distance import Levenshtein

from spellfix.data.noise import (
    EDIT_TYPES,
    KEYBOARD_NEIGHBORS,
    POSITION_BINS,
    VOWELS,
    ConfusionList,
    codespell_pairs,
)
from spellfix.data.readers import read_pairs

DATA_DIR = Path(__file__).resolve().parent
MAX_EDITS = 3


def classify(correct: str, misspelling: str) -> list[tuple[str, int, str]]:
    """Edit script correct -> misspelling as (edit type, position in the correct word, detail)."""
    ops = Levenshtein.editops(correct, misspelling)
    out: list[tuple[str, int, str]] = []
    i = 0
    while i < len(ops):
        tag, s, d = ops[i].tag, ops[i].src_pos, ops[i].dest_pos
        nxt = ops[i + 1] if i + 1 < len(ops) else None
        if nxt is not None and _is_transposition(correct, misspelling, (tag, s, d), (nxt.tag, nxt.src_pos, nxt.dest_pos)):
            out.append(("transpose", s, ""))
            i += 2
            continue
        if tag == "insert":
            ch = misspelling[d]
            around = correct[max(s - 1, 0) : s + 1]
            if ch in around:
                out.append(("double", s, ""))
            else:
                near = any(ch in KEYBOARD_NEIGHBORS.get(a, "") for a in around)
                out.append(("insert", s, "keyboard" if near else ("vowel" if ch in VOWELS else "other")))
        elif tag == "delete":
            ch = correct[s]
            doubled = (s > 0 and correct[s - 1] == ch) or (s + 1 < len(correct) and correct[s + 1] == ch)
            out.append(("undouble" if doubled else "delete", s, ""))
        else:
            a, b = correct[s], misspelling[d]
            if b in KEYBOARD_NEIGHBORS.get(a, ""):
                out.append(("substitute_keyboard", s, ""))
            elif a in VOWELS and b in VOWELS:
                out.append(("substitute_vowel", s, ""))
            else:
                out.append(("substitute_other", s, ""))
        i += 1
    return out


def _is_transposition(c: str, m: str, op: tuple[str, int, int], nxt: tuple[str, int, int]) -> bool:
    (t1, s1, d1), (t2, s2, d2) = op, nxt
    if t1 == "replace" and t2 == "replace" and s2 == s1 + 1 and d2 == d1 + 1:
        return c[s1] == m[d2] and c[s2] == m[d1]
    if t1 == "insert" and t2 == "delete" and s2 == s1 + 1:
        return c[s2] == m[d1]  # "ab" -> "ba": insert b before a, delete the old b
    if t1 == "delete" and t2 == "insert" and s2 == s1 + 2:
        return m[d2] == c[s1]  # "ab" -> "ba": delete a, insert a after b
    return False


def measure(pairs: Iterable[tuple[str, str]]) -> dict[str, object]:
    """Figures for one source of (misspelling, correct) pairs (already filtered)."""
    n_pairs = 0
    edits_per_word: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    inserted: Counter[str] = Counter()
    first = 0
    bin_edits = [0] * POSITION_BINS
    bin_letters = [0] * POSITION_BINS
    short_words = 0
    for misspelling, correct in pairs:
        edits = classify(correct, misspelling)
        if not edits:
            continue
        n_pairs += 1
        n = len(correct)
        short_words += n <= 2
        edits_per_word[min(len(edits), MAX_EDITS)] += 1
        for i in range(1, n):
            bin_letters[_bin(i, n)] += 1
        for kind, pos, detail in edits:
            kinds[kind] += 1
            if kind == "insert":
                inserted[detail] += 1
            if pos == 0:
                first += 1
            else:
                bin_edits[_bin(pos, n)] += 1
    n_edits = sum(kinds.values())
    density = [bin_edits[b] / bin_letters[b] if bin_letters[b] else 0.0 for b in range(POSITION_BINS)]
    mean_density = sum(density) / POSITION_BINS or 1.0
    n_inserted = sum(inserted.values()) or 1
    return {
        "pairs": n_pairs,
        "edits": n_edits,
        "edits_per_word": [edits_per_word[k] / n_pairs for k in range(1, MAX_EDITS + 1)],
        "edit_types": {k: kinds[k] / n_edits for k in EDIT_TYPES},
        "first_char_rate": first / n_edits,
        "position_weights": [d / mean_density for d in density],
        "insert_keyboard_share": inserted["keyboard"] / n_inserted,
        "insert_vowel_share": inserted["vowel"] / n_inserted,
        "short_word_share": short_words / n_pairs,
    }


def _bin(pos: int, length: int) -> int:
    return min(POSITION_BINS * pos // length, POSITION_BINS - 1)


def pool(results: Sequence[dict[str, object]]) -> dict[str, object]:
    """Equal-weight mean of several sources' figures (lists and dicts element-wise)."""

    def mean(values: list[object]) -> object:
        first = values[0]
        if isinstance(first, dict):
            return {k: mean([v[k] for v in values]) for k in first}  # type: ignore[index]
        if isinstance(first, list):
            return [mean([v[i] for v in values]) for i in range(len(first))]  # type: ignore[index]
        return sum(values) / len(values)  # type: ignore[arg-type]

    keys = [k for k in results[0] if k not in ("pairs", "edits")]
    out: dict[str, object] = {k: mean([r[k] for r in results]) for k in keys}
    out["pairs"] = sum(int(r["pairs"]) for r in results)  # type: ignore[call-overload]
    out["edits"] = sum(int(r["edits"]) for r in results)  # type: ignore[call-overload]
    return out


def suggested_defaults(pooled: dict[str, object]) -> dict[str, object]:
    """NoiseConfig field values implied by the pooled figures (rounded for readability)."""
    kinds = pooled["edit_types"]
    out: dict[str, object] = {f"weight_{k}": round(v, 3) for k, v in kinds.items()}  # type: ignore[union-attr]
    out["edits_per_word"] = [round(v, 3) for v in pooled["edits_per_word"]]  # type: ignore[union-attr]
    out["first_char_rate"] = round(pooled["first_char_rate"], 3)  # type: ignore[call-overload]
    out["position_weights"] = [round(v, 2) for v in pooled["position_weights"]]  # type: ignore[union-attr]
    out["insert_keyboard_share"] = round(pooled["insert_keyboard_share"], 2)  # type: ignore[call-overload]
    out["insert_vowel_share"] = round(pooled["insert_vowel_share"], 2)  # type: ignore[call-overload]
    return out


def load_sources(data_dir: Path = DATA_DIR) -> dict[str, list[tuple[str, str]]]:
    """(misspelling, correct) pairs per source, filtered like the synthesizer's confusion list."""
    rows, _ = read_pairs(data_dir / "real_errors_train.tsv")
    real = ConfusionList.from_pairs((r["query"], r["correction"]) for r in rows).pairs()
    codespell = ConfusionList.from_pairs(codespell_pairs()).pairs()
    return {"real_errors_train": real, "codespell": codespell}


def calibrate(data_dir: Path = DATA_DIR) -> dict[str, object]:
    """All figures: per source, pooled, and the suggested NoiseConfig defaults."""
    per_source = {name: measure(pairs) for name, pairs in load_sources(data_dir).items()}
    pooled = pool(list(per_source.values()))
    return {"sources": per_source, "pooled": pooled, "suggested_defaults": suggested_defaults(pooled)}


def dev_misspellings(data_dir: Path = DATA_DIR) -> list[tuple[str, str]]:
    rows, _ = read_pairs(data_dir / "dev.jsonl")
    return sorted({(r["misspelling"], r["word"]) for r in rows if r.get("error_type") != "none"})


def format_table(columns: dict[str, dict[str, object]]) -> str:
    names = list(columns)
    lines = ["| figure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]

    def row(label: str, get) -> None:  # type: ignore[no-untyped-def]
        lines.append(f"| {label} | " + " | ".join(get(columns[n]) for n in names) + " |")

    row("pairs", lambda r: f"{r['pairs']:,}")
    for k in range(MAX_EDITS):
        row(f"words with {k + 1}{'+' if k + 1 == MAX_EDITS else ''} edit(s)", lambda r, k=k: f"{r['edits_per_word'][k]:.1%}")
    for kind in EDIT_TYPES:
        row(f"edit: {kind}", lambda r, kind=kind: f"{r['edit_types'][kind]:.1%}")
    row("edits on the first letter", lambda r: f"{r['first_char_rate']:.1%}")
    row(
        "per-letter edit rate by position (5 bins, mean 1)",
        lambda r: " ".join(f"{v:.2f}" for v in r["position_weights"]),
    )
    row("inserted letter is a keyboard neighbour", lambda r: f"{r['insert_keyboard_share']:.1%}")
    row("inserted letter is a vowel", lambda r: f"{r['insert_vowel_share']:.1%}")
    row("correct word has <= 2 letters", lambda r: f"{r['short_word_share']:.1%}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--json", type=Path, help="write all figures to this JSON file")
    parser.add_argument("--compare-dev", action="store_true", help="add a column for data/dev.jsonl (not used)")
    args = parser.parse_args(argv)
    result = calibrate(args.data_dir)
    columns: dict[str, dict[str, object]] = dict(result["sources"])  # type: ignore[arg-type]
    columns["pooled (defaults)"] = result["pooled"]  # type: ignore[assignment]
    if args.compare_dev:
        columns["dev (check only)"] = measure(dev_misspellings(args.data_dir))
        result["dev_check"] = columns["dev (check only)"]
    print(format_table(columns))
    print("\nSuggested NoiseConfig defaults:")
    print(json.dumps(result["suggested_defaults"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
