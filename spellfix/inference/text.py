"""Query validation and normalisation shared by the runtime and the evaluator.

``normalize_query`` is the project's one normalisation (``spellfix.lexical.normalize``: strip, collapse
whitespace, lower-case), re-exported here so serving code and scoring cannot drift apart.
"""

from __future__ import annotations

from typing import Sequence

from spellfix.lexical.normalize import normalize_query

__all__ = ["check_queries", "normalize_query"]


def check_queries(queries: Sequence[str | bytes]) -> list[str]:
    """Return the queries as ``str``; bytes must be UTF-8. Errors name the offending query index.

    A single string is rejected (it would be iterated character by character), as is a ``str`` that
    holds lone surrogates (what ``surrogateescape`` makes of invalid UTF-8 bytes).
    """
    if isinstance(queries, (str, bytes)):
        raise TypeError("queries must be a list of strings, not a single string; wrap it: [query]")
    out: list[str] = []
    for i, query in enumerate(queries):
        if isinstance(query, (bytes, bytearray)):
            try:
                query = bytes(query).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"query {i} is not valid UTF-8: byte {exc.object[exc.start]:#04x} at position {exc.start}") from None
        elif not isinstance(query, str):
            raise TypeError(f"query {i} must be str or UTF-8 bytes, got {type(query).__name__}")
        else:
            try:
                query.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"query {i} is not valid UTF-8: it holds an unpaired surrogate {query[exc.start]!r} at position {exc.start}"
                ) from None
        out.append(query)
    return out
