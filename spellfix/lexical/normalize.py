"""The project's one query normalisation: training targets, model inputs, served queries and scored
references all go through it, so they cannot drift apart."""

from __future__ import annotations


def normalize_query(text: str, *, lowercase: bool = True) -> str:
    """Strip, collapse internal whitespace to single spaces and (by default) lower-case.

    This is the normalisation the project scores with, so training targets, model inputs and
    references all agree on it.
    """
    text = " ".join(text.split())
    return text.lower() if lowercase else text
