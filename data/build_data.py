#!/usr/bin/env python
"""Build spellfix's shipped data files (deterministic, offline).

    python data/build_data.py                       # rebuild everything it can
    python data/build_data.py --qspell-dir DIR      # where the qspell-dev files are (developers)
    python data/build_data.py --check               # rebuild in a temp dir, compare with MANIFEST.json

What it writes into data/ (details, sources and licences: data/README.md, data/LICENSES.md):

* copies of the qspell-dev files real_errors_train.tsv, norvig1.tsv, norvig2.tsv,
  codespell_common.tsv (only when --qspell-dir exists; users without it keep the shipped copies);
* dev.jsonl from queries_dev.tsv: per row one misspelled pair and one identity pair (error_type
  "none") so evaluation measures the false-positive rate too. queries_dev never feeds training;
* clean_queries.txt: short search-query-like phrases (1-5 words, some with a number token) built only
  from generic English resources that pip installs -- symspellpy's unigram and bigram frequency
  dictionaries, wordfreq's English word list -- plus the correct words of real_errors_train.tsv and
  made-up pronounceable names, so a model learns to copy words it does not know. No song, artist or
  product lists are used;
* MANIFEST.json: rows, bytes and sha256 of each built file plus the versions of the packages used.

Why the filters: a clean corpus teaches the model what to leave alone, so it must not contain
misspellings. Tokens that are known misspellings (codespell, real_errors_train) and rare tokens one
edit away from a frequent dictionary word (they look like typos) are dropped; explicit terms are
dropped too. Apostrophes are removed ("don't" -> "dont"), the style of the qspell query data.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
DEFAULT_QSPELL_DIR = DATA_DIR.parent.parent / "shared" / "data" / "qspell-dev"
COPIED_FILES = ("real_errors_train.tsv", "norvig1.tsv", "norvig2.tsv", "codespell_common.tsv")
DEV_SOURCE = "queries_dev.tsv"
SEED = 20261123
N_CLEAN_LINES = 200_000

# Share of clean_queries.txt lines per kind (coverage lines come on top, see build_clean_queries).
MIX = {"single": 0.06, "bigram": 0.22, "chain": 0.44, "name": 0.20, "number": 0.08}

# Explicit and slur terms that generic frequency lists (Google Books bigrams, web-derived wordfreq)
# contain; nothing a spelling model needs to learn from a shipped corpus.
BLOCKLIST = frozenset(
    """anal anus bdsm bitch bitches blowjob boob boobs bukkake clit cock cocks cum cumshot cunt cunts dick
    dicks dildo ejaculation erotic faggot fag fetish fuck fucked fucker fucking gangbang handjob hentai
    horny incest jizz masturbate masturbating masturbation milf nigga nigger niggers nude nudes orgasm
    penis porn porno pornography pussy rape raped rapist sex sexual sexy shit slut sluts threesome tits
    titties twat vagina whore whores xxx""".split()
)
# A phrase ending in one of these reads like a cut-off sentence, not a query.
BAD_LAST = frozenset(
    """the a an of and to in for with on at by from or as is are was were be been being that this which
    he she it its his her their they we i my our your them him not will would can could should may might
    has have had do does did than when where while if so but who whom whose into onto upon about""".split()
)
BAD_FIRST = frozenset("of and or is are was were which as by".split())

# Pieces of made-up names: onset + nucleus (+ coda) syllables, e.g. "kintora", "zarvel".
ONSETS = "b br c ch cr d dr f fl g gr h j k kr l m n p pr r s sh st t tr v w z".split()
NUCLEI = "a e i o u a e i o u ai ea ou ei".split()
CODAS = [""] * 6 + "n r l s x k m th nd rt".split()
ROMAN = "ii iii iv vi vii viii ix xi xii".split()


# ---------------------------------------------------------------------------------------------
# Small helpers


def write_atomic(path: Path, text: str) -> None:
    """Write via a temp file in the same directory and os.replace: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_tsv(path: Path) -> list[list[str]]:
    """Rows of a qspell-dev TSV (its '#' header line skipped)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


def clean_token(token: str) -> str | None:
    """Lower-case ASCII letters/digits with apostrophes removed, or None when it is anything else."""
    token = token.lower().replace("'", "")
    if not token or not token.isascii() or not token.isalnum() or token in BLOCKLIST:
        return None
    return token


class WeightedChoice:
    """Draw items with given weights in O(log n) per draw (precomputed cumulative weights)."""

    def __init__(self, items: Sequence, weights: Iterable[float]):
        self.items = list(items)
        self.cum: list[float] = []
        total = 0.0
        for w in weights:
            total += w
            self.cum.append(total)
        if not self.items or total <= 0:
            raise ValueError("WeightedChoice needs at least one item with a positive weight")

    def __call__(self, rng: random.Random):  # type: ignore[no-untyped-def]
        return self.items[bisect.bisect_right(self.cum, rng.random() * self.cum[-1])]


# ---------------------------------------------------------------------------------------------
# Copies and dev.jsonl


def copy_qspell_files(qspell_dir: Path, data_dir: Path) -> list[str]:
    copied = []
    for name in COPIED_FILES:
        write_atomic(data_dir / name, (qspell_dir / name).read_text(encoding="utf-8"))
        copied.append(name)
    return copied


def build_dev_rows(queries_dev: Path) -> list[dict[str, str]]:
    """One misspelled and one identity row per queries_dev row, in a seeded shuffled order.

    Shuffled so that any contiguous or strided subset (a quick eval on the first N rows) holds both
    kinds; ``id`` links the two rows of one source row.
    """
    rows: list[dict[str, str]] = []
    for n, fields in enumerate(read_tsv(queries_dev), start=1):
        misspelled, correct, domain, word, misspelling, real_word = fields
        common = {"id": f"dev-{n:04d}", "domain": domain}
        rows.append(
            {"query": misspelled, "correction": correct, **common, "error_type": "misspelled",
             "real_word": real_word, "word": word, "misspelling": misspelling}
        )
        rows.append(
            {"query": correct, "correction": correct, **common, "error_type": "none",
             "real_word": "", "word": "", "misspelling": ""}
        )
    random.Random(SEED).shuffle(rows)
    return rows


# ---------------------------------------------------------------------------------------------
# Sources for the clean corpus


def symspell_unigrams() -> dict[str, int]:
    text = (importlib.resources.files("symspellpy") / "frequency_dictionary_en_82_765.txt").read_text(encoding="utf-8")
    counts: dict[str, int] = {}
    for line in text.splitlines():
        word, count = line.split(" ")
        token = clean_token(word)
        if token and token.isalpha():
            counts[token] = max(counts.get(token, 0), int(count))
    return counts


def symspell_bigrams(vocabulary: dict[str, int]) -> list[tuple[str, str, int]]:
    text = (importlib.resources.files("symspellpy") / "frequency_bigramdictionary_en_243_342.txt").read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) != 3:
            continue
        a, b = clean_token(parts[0]), clean_token(parts[1])
        if a in vocabulary and b in vocabulary:
            out.append((a, b, int(parts[2])))  # type: ignore[arg-type]
    return out


def known_misspellings(data_dir: Path, vocabulary: Iterable[str]) -> set[str]:
    """Every misspelling codespell or real_errors_train knows, minus real dictionary words.

    codespell fixes that only add an apostrophe ("dont->don't") are not misspellings in the
    apostrophe-free style of this corpus.
    """
    bad: set[str] = set()
    root = importlib.resources.files("codespell_lib") / "data"
    for name in ("dictionary.txt", "dictionary_rare.txt"):
        for line in (root / name).read_text(encoding="utf-8").splitlines():
            typo, sep, fixes = line.partition("->")
            if not sep:
                continue
            typo = typo.strip().lower()
            if any(f.strip().lower().replace("'", "") == typo for f in fixes.split(",")):
                continue
            bad.add(typo)
    for fields in read_tsv(data_dir / "real_errors_train.tsv"):
        bad.add(fields[0].strip().lower())
    return bad - set(vocabulary)


def wordfreq_tokens(n: int) -> list[tuple[str, float]]:
    """(token, zipf frequency) of wordfreq's n most frequent English words, cleaned."""
    import wordfreq

    out, seen = [], set()
    for word in wordfreq.top_n_list("en", n):
        token = clean_token(word)
        if token and token.isalpha() and token not in seen:
            seen.add(token)
            out.append((token, wordfreq.zipf_frequency(word, "en")))
    return out


class TypoLookalikes:
    """Is a token one edit away from a frequent dictionary word? (SymSpell, distance 1)."""

    def __init__(self, min_count: int = 1_000_000):
        from symspellpy import SymSpell, Verbosity

        self._verbosity = Verbosity.ALL
        self._symspell = SymSpell(max_dictionary_edit_distance=1, prefix_length=7)
        path = importlib.resources.files("symspellpy") / "frequency_dictionary_en_82_765.txt"
        self._symspell.load_dictionary(str(path), term_index=0, count_index=1)
        self.min_count = min_count

    def __call__(self, token: str) -> bool:
        hits = self._symspell.lookup(token, self._verbosity, max_edit_distance=1, include_unknown=False)
        return any(h.distance == 1 and h.count >= self.min_count for h in hits)


# ---------------------------------------------------------------------------------------------
# Phrase generation


class PhraseMaker:
    """Query-like phrases from frequency dictionaries; every method draws from ``rng`` only."""

    def __init__(
        self,
        unigrams: dict[str, int],
        bigrams: list[tuple[str, str, int]],
        name_tokens: list[str],
        typo_lookalike: TypoLookalikes,
        misspellings: set[str],
        rng: random.Random,
    ):
        self.rng = rng
        self.unigrams = unigrams
        words = sorted(w for w in unigrams if len(w) >= 3)
        self.single = WeightedChoice(words, (unigrams[w] ** 0.3 for w in words))
        self.bigram = WeightedChoice([(a, b) for a, b, _ in bigrams], (c**0.35 for _, _, c in bigrams))
        successors: dict[str, list[tuple[str, int]]] = {}
        for a, b, c in bigrams:
            successors.setdefault(a, []).append((b, c))
        self.successors = {a: WeightedChoice([b for b, _ in s], (c**0.35 for _, c in s)) for a, s in successors.items()}
        self.name_tokens = WeightedChoice(name_tokens, [1.0] * len(name_tokens))
        self.typo_lookalike = typo_lookalike
        self.misspellings = misspellings
        self.bigram_by_word: dict[str, list[tuple[str, str]]] = {}
        for a, b, _ in bigrams:
            self.bigram_by_word.setdefault(a, []).append((a, b))
            self.bigram_by_word.setdefault(b, []).append((a, b))

    # ---- building blocks

    def pseudo_word(self) -> str:
        """A pronounceable made-up word that is neither a dictionary word nor one edit from a common one."""
        rng = self.rng
        while True:
            syllables = rng.choice((2, 2, 3))
            word = "".join(rng.choice(ONSETS) + rng.choice(NUCLEI) for _ in range(syllables)) + rng.choice(CODAS)
            if 4 <= len(word) <= 10 and word not in self.unigrams and word not in self.misspellings:
                if not self.typo_lookalike(word):
                    return word

    def name(self) -> str:
        """One or two name-like tokens: made-up words and rarer real tokens (wordfreq)."""
        rng = self.rng
        parts = [self.pseudo_word() if rng.random() < 0.5 else self.name_tokens(rng) for _ in range(rng.choice((1, 1, 2)))]
        return " ".join(parts)

    def number(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.35:
            return str(rng.choice(range(1, 13)))
        if r < 0.5:
            return str(rng.randint(1950, 2026))
        if r < 0.65:
            return rng.choice(ROMAN)
        if r < 0.75:
            n = rng.randint(1, 20)
            return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
        return f"{rng.choice(('vol', 'part', 'no', 'pt', 'season', 'episode', 'chapter'))} {rng.randint(1, 12)}"

    def chain(self, length: int) -> str | None:
        """A walk along the bigram graph: 'the best of times', 'cold water fish tank'."""
        a, b = self.bigram(self.rng)
        words = [a, b]
        while len(words) < length:
            nxt = self.successors.get(words[-1])
            if nxt is None:
                break
            words.append(nxt(self.rng))
        return self.tidy(words)

    def short_phrase(self, max_words: int) -> str | None:
        n = self.rng.randint(1, max_words)
        if n == 1:
            return self.single(self.rng)
        if n == 2:
            return self.tidy(list(self.bigram(self.rng)))
        return self.chain(n)

    def tidy(self, words: list[str]) -> str | None:
        if words[-1] in BAD_LAST or words[0] in BAD_FIRST or len(set(words)) < len(words):
            return None
        return " ".join(words)

    # ---- line kinds

    def line(self, kind: str) -> str | None:
        rng = self.rng
        if kind == "single":
            return self.single(rng)
        if kind == "bigram":
            return self.tidy(list(self.bigram(rng)))
        if kind == "chain":
            return self.chain(rng.choice((3, 4, 4, 5, 5)))
        if kind == "name":
            r = rng.random()
            if r < 0.15:
                return self.name()
            phrase = self.short_phrase(3)
            if phrase is None:
                return None
            return f"{phrase} {self.name()}" if r < 0.7 else f"{self.name()} {phrase}"
        if kind == "number":
            phrase = self.short_phrase(3)
            if phrase is None:
                return None
            return f"{phrase} {self.number()}" if rng.random() < 0.8 else f"{self.number()} {phrase}"
        raise ValueError(kind)

    def covering(self, word: str) -> str:
        """A line that contains ``word``: one of its bigrams when there is one, else the word alone."""
        options = [p for p in self.bigram_by_word.get(word, []) if self.tidy(list(p))]
        return " ".join(self.rng.choice(options)) if options else word


def build_clean_queries(
    data_dir: Path, n_lines: int = N_CLEAN_LINES, seed: int = SEED, exclude: Iterable[str] = ()
) -> tuple[list[str], dict[str, int]]:
    """The clean corpus (sorted lines are NOT used: order is the generation order) and its stats."""
    rng = random.Random(seed)
    unigrams = symspell_unigrams()
    bigrams = symspell_bigrams(unigrams)
    misspellings = known_misspellings(data_dir, unigrams)
    typo_lookalike = TypoLookalikes()
    # Name-like real tokens: wordfreq words the dictionary lacks, of 4+ letters, neither known
    # misspellings nor (unless common: zipf >= 3.5) one edit away from a frequent word.
    name_tokens = [
        t
        for t, zipf in wordfreq_tokens(60_000)
        if t not in unigrams and len(t) >= 4 and t not in misspellings and (zipf >= 3.5 or not typo_lookalike(t))
    ]
    maker = PhraseMaker(unigrams, bigrams, name_tokens, typo_lookalike, misspellings, rng)
    excluded = set(exclude)
    lines: dict[str, None] = {}
    stats = {"excluded_dev_lines": 0}

    def add(line: str | None) -> None:
        if not line or line in lines:
            return
        if line in excluded:
            stats["excluded_dev_lines"] += 1
            return
        if any(t in misspellings or t in BLOCKLIST for t in line.split(" ")):
            return
        lines[line] = None

    # Every correct word of real_errors_train appears at least once, so the confusion list's
    # targets are words the model has seen spelled right.
    targets = sorted({clean_token(f[1]) for f in read_tsv(data_dir / "real_errors_train.tsv")} - {None})
    for word in targets:
        if word in unigrams or word.isalpha():
            add(maker.covering(word))  # type: ignore[arg-type]
    stats["coverage_lines"] = len(lines)
    kinds = WeightedChoice(list(MIX), list(MIX.values()))
    while len(lines) < n_lines:
        add(maker.line(kinds(rng)))
    out = list(lines)
    rng.shuffle(out)
    stats["lines"] = len(out)
    stats["name_tokens"] = len(name_tokens)
    stats["distinct_words"] = len({w for line in out for w in line.split(" ")})
    return out, stats


# ---------------------------------------------------------------------------------------------
# Main


def package_versions() -> dict[str, str]:
    return {p: importlib.metadata.version(p) for p in ("symspellpy", "codespell", "wordfreq", "rapidfuzz")}


def build(data_dir: Path, qspell_dir: Path | None, n_lines: int, seed: int) -> dict[str, object]:
    manifest: dict[str, object] = {"seed": seed, "n_clean_lines": n_lines, "versions": package_versions(), "files": {}}
    if qspell_dir is not None and qspell_dir.is_dir():
        copy_qspell_files(qspell_dir, data_dir)
        dev_rows = build_dev_rows(qspell_dir / DEV_SOURCE)
        write_atomic(data_dir / "dev.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in dev_rows))
    elif qspell_dir is not None:
        print(f"qspell-dev not found at {qspell_dir}: keeping the shipped copies and dev.jsonl", file=sys.stderr)
    dev_lines = [json.loads(line) for line in (data_dir / "dev.jsonl").read_text(encoding="utf-8").splitlines()]
    exclude = {r["correction"] for r in dev_lines} | {r["query"] for r in dev_lines}
    lines, stats = build_clean_queries(data_dir, n_lines, seed, exclude)
    write_atomic(data_dir / "clean_queries.txt", "".join(line + "\n" for line in lines))
    manifest["clean_queries_stats"] = stats
    files: dict[str, object] = {}
    for name in (*COPIED_FILES, "dev.jsonl", "clean_queries.txt"):
        path = data_dir / name
        text = path.read_text(encoding="utf-8")
        files[name] = {"rows": sum(1 for line in text.splitlines() if line and not line.startswith("#")),
                       "bytes": path.stat().st_size, "sha256": sha256(path)}
    manifest["files"] = files
    write_atomic(data_dir / "MANIFEST.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def check(data_dir: Path, seed: int, n_lines: int) -> int:
    """Rebuild clean_queries.txt in a temp dir from the shipped inputs and compare sha256s."""
    manifest = json.loads((data_dir / "MANIFEST.json").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        for name in (*COPIED_FILES, "dev.jsonl"):
            shutil.copy(data_dir / name, tmp_dir / name)
        rebuilt = build(tmp_dir, None, n_lines, seed)
    bad = [n for n, f in rebuilt["files"].items() if f["sha256"] != manifest["files"][n]["sha256"]]  # type: ignore[index,union-attr]
    if bad:
        print(f"differs from MANIFEST.json: {', '.join(bad)} (package versions now: {package_versions()}, "
              f"at build: {manifest['versions']})", file=sys.stderr)
        return 1
    print("rebuilt files match MANIFEST.json")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build spellfix's shipped data files in data/.")
    parser.add_argument("--qspell-dir", type=Path, default=DEFAULT_QSPELL_DIR, help="qspell-dev files (developers only)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--lines", type=int, default=N_CLEAN_LINES, help="lines of clean_queries.txt")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare with MANIFEST.json")
    args = parser.parse_args(argv)
    if args.check:
        return check(args.data_dir, args.seed, args.lines)
    manifest = build(args.data_dir, args.qspell_dir, args.lines, args.seed)
    print(json.dumps({k: manifest[k] for k in ("files", "clean_queries_stats")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
