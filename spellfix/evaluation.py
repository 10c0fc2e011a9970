"""Metrics and the ``evaluate`` command: one scoring rule for spellfix, its peers and training.

Why one module: the figures that decide whether spellfix beats SymSpell must be computed the same
way for every system (benchmarks/accuracy.py calls these functions for the peers too) and during
training (spellfix.training.loop uses :func:`compute_metrics`). Pure Python + rapidfuzz: no torch
at import, so the serving side and the benchmarks stay light.

Scoring rule (the project's): outputs and references are compared after :func:`normalize`
(lower-case, whitespace collapsed, stripped). A row is *misspelled* when its normalized query
differs from its normalized reference, *correct* otherwise; a correct row whose prediction differs
from the reference is a false positive (the corrector broke a query that was fine).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from spellfix.fsutil import write_json_atomic

# Columns of a pair file that make a useful breakdown when present (few distinct values each).
GROUP_COLUMNS = ("domain", "error_type", "source")
MAX_GROUP_VALUES = 20  # a column with more distinct values is not a grouping (e.g. free text)


class Corrector(Protocol):
    def correct(self, queries: list[str]) -> list[str]: ...


def normalize(text: str) -> str:
    """The project's scoring normalization: lower-case, collapse whitespace runs to one space, strip."""
    return " ".join(text.lower().split())


# --------------------------------------------------------------------------------------------
# Metrics


def compute_metrics(
    queries: Sequence[str],
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Score predictions against references; every figure is computed after :func:`normalize`.

    * ``exact_match`` -- share of all rows whose prediction equals the reference.
    * ``exact_match_misspelled`` -- the same over misspelled rows (query != reference): the fix rate.
    * ``false_positive_rate`` -- share of correct rows (query == reference) whose prediction differs.
    * ``word_correction_rate`` -- share of misspelled *words* that come back right. Query words are
      aligned to reference words (Levenshtein alignment over word sequences); each non-matching
      block is one error, covering reference words ``[j1, j2)`` (empty for an extra query word).
      The prediction is aligned to the reference the same way; an error counts as corrected when no
      non-matching block of that second alignment touches its reference words (for an extra query
      word: when the prediction has no unmatched word at that place). With one misspelled word per
      query and equal word counts, this is simply "the wrong word was replaced by the right one",
      whatever happened elsewhere in the query. ``n_misspelled_words`` counts the errors.
    * ``cer`` / ``wer`` -- corpus-level character / word error rate of the predictions: total
      Levenshtein distance over total reference length (characters / words), all rows.

    Shares over an empty subset (e.g. no correct rows) are ``None``, not 0: there is nothing to
    measure. ``groups`` maps a group name to one label per row (e.g. ``{"domain": [...]}``) and adds
    ``breakdown[name][label]`` with the same figures for each label's rows.
    """
    n = len(queries)
    if n == 0:
        raise ValueError("compute_metrics: no rows to score (empty queries)")
    if not (len(predictions) == n and len(references) == n):
        raise ValueError(
            f"compute_metrics: queries ({n}), predictions ({len(predictions)}) and references "
            f"({len(references)}) must have the same length"
        )
    for name, labels in (groups or {}).items():
        if len(labels) != n:
            raise ValueError(f"compute_metrics: group {name!r} has {len(labels)} labels for {n} rows")

    qs = [normalize(q) for q in queries]
    ps = [normalize(p) for p in predictions]
    rs = [normalize(r) for r in references]
    metrics = _score(range(n), qs, ps, rs)
    if groups:
        breakdown: dict[str, dict[str, Any]] = {}
        for name, labels in groups.items():
            by_value: dict[str, list[int]] = {}
            for i, label in enumerate(labels):
                by_value.setdefault(str(label), []).append(i)
            breakdown[name] = {value: _score(idx, qs, ps, rs) for value, idx in sorted(by_value.items())}
        metrics["breakdown"] = breakdown
    return metrics


def _score(indices: Sequence[int] | range, qs: list[str], ps: list[str], rs: list[str]) -> dict[str, Any]:
    from rapidfuzz.distance import Levenshtein

    n = exact = n_mis = exact_mis = n_ok = false_pos = 0
    errors = fixed = 0
    char_dist = char_len = word_dist = word_len = 0
    for i in indices:
        q, p, r = qs[i], ps[i], rs[i]
        n += 1
        hit = p == r
        exact += hit
        if q == r:
            n_ok += 1
            false_pos += not hit
        else:
            n_mis += 1
            exact_mis += hit
            e, f = _word_errors_fixed(q.split(), p.split(), r.split())
            errors += e
            fixed += f
        char_dist += Levenshtein.distance(p, r)
        char_len += len(r)
        rw = r.split()
        word_dist += Levenshtein.distance(p.split(), rw)
        word_len += len(rw)
    return {
        "n": n,
        "n_misspelled": n_mis,
        "n_correct": n_ok,
        "exact_match": exact / n,
        "exact_match_misspelled": _share(exact_mis, n_mis),
        "false_positive_rate": _share(false_pos, n_ok),
        "word_correction_rate": _share(fixed, errors),
        "n_misspelled_words": errors,
        "cer": char_dist / max(char_len, 1),
        "wer": word_dist / max(word_len, 1),
    }


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def _word_errors_fixed(query: list[str], pred: list[str], ref: list[str]) -> tuple[int, int]:
    """(errors in query vs ref, how many of them the prediction fixed) -- see compute_metrics."""
    from rapidfuzz.distance import Levenshtein

    spans: list[tuple[int, int]] = []  # reference spans of the errors; adjacent edits are one error
    previous_equal = True
    for op in Levenshtein.opcodes(query, ref):
        if op.tag == "equal":
            previous_equal = True
        elif previous_equal:
            spans.append((op.dest_start, op.dest_end))
            previous_equal = False
        else:
            spans[-1] = (spans[-1][0], op.dest_end)
    if not spans:
        return 0, 0
    wrong = [op for op in Levenshtein.opcodes(pred, ref) if op.tag != "equal"]
    fixed = 0
    for j1, j2 in spans:
        if j1 < j2:  # reference words j1..j2-1 must be matched in the prediction
            broken = any(
                max(op.dest_start, j1) < min(op.dest_end, j2)  # overlaps the words
                or (op.dest_start == op.dest_end and j1 < op.dest_start < j2)  # extra word inside
                for op in wrong
            )
        else:  # the query had an extra word before reference position j1
            broken = any(op.src_start < op.src_end and op.dest_start <= j1 <= op.dest_end for op in wrong)
        fixed += not broken
    return len(spans), fixed


# --------------------------------------------------------------------------------------------
# Running a corrector


def run_corrector(corrector: Corrector, queries: Sequence[str], *, batch_size: int = 32) -> tuple[list[str], float]:
    """Correct ``queries`` in batches; return (predictions, queries per second)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    predictions: list[str] = []
    start = time.perf_counter()
    for s in range(0, len(queries), batch_size):
        batch = list(queries[s : s + batch_size])
        out = corrector.correct(batch)
        if len(out) != len(batch):
            raise RuntimeError(f"corrector returned {len(out)} outputs for a batch of {len(batch)} queries")
        predictions.extend(out)
    elapsed = max(time.perf_counter() - start, 1e-9)  # never divide by zero (or write Infinity to JSON)
    return predictions, len(queries) / elapsed


def measure_latency(corrector: Corrector, queries: Sequence[str], *, sample: int = 200, warmup: int = 3) -> dict[str, float]:
    """p50/p99 latency in ms of one query at a time (batch 1) over an evenly spread sample.

    The first ``warmup`` calls are not timed (lazy initialisation, caches, allocator)."""
    if not queries:
        raise ValueError("measure_latency: no queries")
    k = min(sample, len(queries))
    picked = [queries[int(i * len(queries) / k)] for i in range(k)]
    for q in picked[:warmup]:
        corrector.correct([q])
    times = []
    for q in picked:
        start = time.perf_counter()
        corrector.correct([q])
        times.append((time.perf_counter() - start) * 1000.0)
    return {"p50": _percentile(times, 50), "p99": _percentile(times, 99), "n": k}


def _percentile(values: Sequence[float], pct: float) -> float:
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]) if pct < 100 else max(values)


def row_groups(rows: Sequence[Mapping[str, str]]) -> dict[str, list[str]]:
    """Breakdown labels from a pair file's extra columns.

    ``error_type`` is derived whenever a ``real_word`` column exists (as in data/dev.jsonl):
    ``none`` for identity rows, ``real-word`` when real_word is 1/true (the misspelling is itself a
    dictionary word: only context can fix it), else ``non-word``. Otherwise the known columns
    (domain, error_type, source) are used when every row has them with few distinct values."""
    groups: dict[str, list[str]] = {}
    if not rows:
        return groups
    for column in GROUP_COLUMNS:
        if all(column in r for r in rows):
            labels = [str(r[column]) for r in rows]
            if len(set(labels)) <= MAX_GROUP_VALUES:
                groups[column] = labels
    if all("real_word" in r for r in rows):
        groups["error_type"] = [
            "none"
            if normalize(r["query"]) == normalize(r["correction"])
            else ("real-word" if str(r["real_word"]).strip().lower() in ("1", "true", "yes") else "non-word")
            for r in rows
        ]
    return groups


def evaluate(
    model: str | os.PathLike[str] | Corrector,
    data_path: str | os.PathLike[str],
    *,
    backend: str = "torch",
    batch_size: int = 32,
    limit: int | None = None,
    json_out: str | os.PathLike[str] | None = None,
    latency_sample: int = 200,
    **corrector_kwargs: Any,
) -> dict[str, Any]:
    """Score a model on a pair file; the dict ``spellfix evaluate --json`` writes (DESIGN.md).

    ``model`` is anything :class:`spellfix.inference.SpellCorrector` loads (training output,
    checkpoint, export dir, hub id) or an object with ``correct(list[str]) -> list[str]`` (a peer,
    an already-loaded corrector). ``corrector_kwargs`` (e.g. ``num_beams``) go to SpellCorrector.
    Latency is measured one query at a time on ``latency_sample`` queries spread over the file;
    ``queries_per_second`` is the throughput at ``batch_size``.
    """
    from spellfix.data.readers import read_pairs

    rows, report = read_pairs(data_path)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        rows = rows[:limit]
    if isinstance(model, (str, os.PathLike)):
        from spellfix.inference import SpellCorrector

        corrector: Corrector = SpellCorrector(model, backend=backend, **corrector_kwargs)
        model_name = str(model)
    else:
        if corrector_kwargs:
            raise TypeError(f"corrector options {sorted(corrector_kwargs)} need a model path, not a corrector object")
        corrector, model_name = model, type(model).__name__
    queries = [r["query"] for r in rows]
    references = [r["correction"] for r in rows]

    latency = measure_latency(corrector, queries, sample=latency_sample)
    predictions, qps = run_corrector(corrector, queries, batch_size=batch_size)
    metrics = compute_metrics(queries, predictions, references, groups=row_groups(rows) or None)
    result: dict[str, Any] = {
        **metrics,
        "latency_ms": {"p50": latency["p50"], "p99": latency["p99"]},
        "latency_sample": latency["n"],
        "queries_per_second": qps,
        "batch_size": batch_size,
        "model": model_name,
        "backend": backend,
        "data": str(data_path),
        "rows_skipped": report.n_skipped,
        "copy_margin": getattr(corrector, "copy_margin", None),
        "real_word_margin": getattr(corrector, "real_word_margin", None),
        "known_word_zipf": getattr(corrector, "known_word_zipf", None),
        "acceptance": _acceptance_record(getattr(corrector, "acceptance", None)),
    }
    if json_out is not None:
        write_json_atomic(json_out, result)
    return result



def _acceptance_record(acceptance: Any) -> dict[str, Any] | None:
    """The acceptance model a result was measured with (``spellfix.inference.acceptance``), or None."""
    return None if acceptance is None else acceptance.to_dict()


# --------------------------------------------------------------------------------------------
# Presentation


def _fmt(value: Any, pct: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if pct else f"{value:.3f}"


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """A short table of the headline figures (and the breakdown, one line per group value)."""
    lines = [
        f"rows                    {metrics['n']}  ({metrics['n_misspelled']} misspelled, {metrics['n_correct']} correct)",
        f"exact match             {_fmt(metrics['exact_match'])}",
        f"exact match misspelled  {_fmt(metrics['exact_match_misspelled'])}",
        f"false-positive rate     {_fmt(metrics['false_positive_rate'])}",
        f"word correction rate    {_fmt(metrics['word_correction_rate'])}",
        f"CER / WER               {_fmt(metrics['cer'], False)} / {_fmt(metrics['wer'], False)}",
    ]
    if "latency_ms" in metrics:
        lat = metrics["latency_ms"]
        lines.append(f"latency p50 / p99       {lat['p50']:.2f} / {lat['p99']:.2f} ms (batch 1)")
    if "queries_per_second" in metrics:
        lines.append(f"throughput              {metrics['queries_per_second']:.1f} queries/s (batch {metrics.get('batch_size', '?')})")
    for group, values in (metrics.get("breakdown") or {}).items():
        for value, m in values.items():
            lines.append(
                f"  {group}={value:<12} n={m['n']:<5} exact {_fmt(m['exact_match'])}"
                f"  fix {_fmt(m['exact_match_misspelled'])}  false-pos {_fmt(m['false_positive_rate'])}"
            )
    return "\n".join(lines)

