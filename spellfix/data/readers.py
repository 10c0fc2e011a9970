"""Read (query, correction) pairs and clean-query corpora, validating every row.

Why this module is strict: a spelling model learns whatever the pairs say, so one shifted column or a
file of mojibake silently teaches it garbage. Every row that cannot be used is reported by file and
line (``<file>:<line>: <what> (field '<name>')``), counted in a :class:`ReadReport`, and either
skipped (``on_error="skip"``, the default, with a logged summary) or turned into a
:class:`DataError` at the first bad row (``on_error="error"``). Nothing is dropped silently; only
blank lines are ignored, because they are not rows.

Formats, chosen by suffix (``.gz`` allowed on the line-based ones):

* ``.jsonl`` / ``.ndjson`` / ``.json`` -- JSON Lines, one object per line.
* ``.csv`` -- comma-separated with a header row (the csv convention; required).
* ``.tsv`` / ``.tab`` -- tab-separated, no quoting. **Header rule:** the first line is a header when
  it names both configured columns (a leading ``#`` is allowed and ignored, as in the qspell-dev
  files). Otherwise the file is read positionally -- column 1 = query, column 2 = correction -- and a
  leading ``#`` line is a comment header whose names label columns 3+; without one they are called
  ``column_3``, ``column_4``, ... Positional reading is only allowed with the default column names:
  if you configured other names, the file must have a header naming them.
* ``.parquet`` / ``.pq`` -- Parquet; locations are reported as ``row N`` (1-based).
* a directory written by ``datasets.Dataset.save_to_disk`` (or a ``DatasetDict``: pick one with
  ``split=``); locations are ``row N``.
* ``.txt`` -- clean corpora only (:func:`read_clean_queries`): one query per line.

Queries and corrections are normalised the way the project scores outputs: surrounding whitespace
stripped, internal whitespace collapsed to one space, and lower-cased unless ``lowercase=False``.
Other columns (``domain``, ``real_word``, ...) are kept, converted to strings, so the evaluator can
break figures down by them.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Sequence, TypeVar

from spellfix.lexical.normalize import normalize_query

logger = logging.getLogger(__name__)

OnError = Literal["skip", "error"]

PAIR_FORMATS = ".jsonl, .ndjson, .json, .csv, .tsv, .tab, .parquet, .pq (optionally .gz for text formats), or a datasets directory"
CLEAN_FORMATS = ".txt (one query per line) or any pair format: " + PAIR_FORMATS

_MAX_LOGGED_PROBLEMS = 10
_BATCH_ROWS = 8192
# csv refuses fields over 128 KiB by default; over-long fields are reported by our own length check.
csv.field_size_limit(2**31 - 1)


class DataError(ValueError):
    """A dataset cannot be used; the message names the file, the line and the field to fix."""


@dataclass
class ReadReport:
    """What reading one file found: counts, and one message per row that was not kept."""

    path: str
    n_rows: int = 0
    n_kept: int = 0
    n_skipped: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs: ``<path>: kept K of N rows, skipped S``."""
        return f"{self.path}: kept {self.n_kept} of {self.n_rows} rows, skipped {self.n_skipped}"


_Row = TypeVar("_Row")


def spread_rows(rows: Sequence[_Row], limit: int | None) -> list[_Row]:
    """``limit`` rows spread evenly over ``rows`` (all of them when ``limit`` is None or larger):
    a quick run keeps the file's mix (dev.jsonl lists its misspelled rows before the correct ones)."""
    if limit is None or len(rows) <= limit:
        return list(rows)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return [rows[i * len(rows) // limit] for i in range(limit)]


# --------------------------------------------------------------------------------------------
# Public readers


def read_pairs(
    path: str | os.PathLike[str],
    *,
    query_column: str = "query",
    correction_column: str = "correction",
    on_error: OnError = "skip",
    max_query_chars: int = 256,
    lowercase: bool = True,
    split: str | None = None,
) -> tuple[list[dict[str, str]], ReadReport]:
    """Read a pair dataset into rows ``{"query", "correction", <other columns as strings>}``.

    ``max_query_chars`` applies to both the query and the correction (after normalisation): a
    target longer than any sensible query is as broken as an over-long input. ``split`` selects a
    split of a saved ``DatasetDict`` (needed only when it has more than one).

    Raises :class:`DataError` when the path is missing, the format unknown, a required column
    absent from the header, no row is usable, or (``on_error="error"``) at the first bad row.
    """
    _check_on_error(on_error)
    path = Path(path)
    report = ReadReport(path=str(path))
    source = _open_source(path, required=(query_column, correction_column), allow_txt=False, split=split)
    renamed = {query_column: "query", correction_column: "correction"}
    rows: list[dict[str, str]] = []
    for location, values, problem in source:
        report.n_rows += 1
        if problem is None:
            row, problem = _validate_pair(values, renamed, max_query_chars, lowercase)
        if problem is not None:
            _record_problem(report, location, problem, on_error)
            continue
        rows.append(row)
        report.n_kept += 1
    _finish(report, kind="pairs")
    return rows, report


def read_clean_queries(
    path: str | os.PathLike[str],
    *,
    column: str | None = None,
    on_error: OnError = "skip",
    max_query_chars: int = 256,
    lowercase: bool = True,
    split: str | None = None,
) -> tuple[list[str], ReadReport]:
    """Read a corpus of correct queries: ``.txt`` (one per line) or one column of a tabular file.

    ``column`` names the column for tabular formats (default ``"query"``; a headerless TSV uses
    its first column). It is ignored for ``.txt``. Queries are normalised like :func:`read_pairs`.
    """
    _check_on_error(on_error)
    path = Path(path)
    column = column or "query"
    report = ReadReport(path=str(path))
    source = _open_source(path, required=(column,), allow_txt=True, split=split)
    queries: list[str] = []
    for location, values, problem in source:
        report.n_rows += 1
        if problem is None:
            text, problem = _validate_text(values, column, max_query_chars, lowercase)
        if problem is not None:
            _record_problem(report, location, problem, on_error)
            continue
        queries.append(text)
        report.n_kept += 1
    _finish(report, kind="queries")
    return queries, report


# --------------------------------------------------------------------------------------------
# Row validation

# A problem is (what, field-or-None); a row source yields (location, values, problem).
Problem = tuple[str, str | None]
RawRow = tuple[str, Mapping[str, Any], Problem | None]


def _validate_pair(
    values: Mapping[str, Any], renamed: Mapping[str, str], max_chars: int, lowercase: bool
) -> tuple[dict[str, str], Problem | None]:
    row: dict[str, str] = {}
    for column, key in renamed.items():
        text, problem = _validate_text(values, column, max_chars, lowercase)
        if problem is not None:
            return row, problem
        row[key] = text
    for column, value in values.items():
        if column in renamed or column in ("query", "correction"):
            continue  # the configured columns win over same-named extras
        row[str(column)] = _as_string(value)
    return row, None


def _validate_text(
    values: Mapping[str, Any], column: str, max_chars: int, lowercase: bool
) -> tuple[str, Problem | None]:
    if column not in values:
        return "", ("missing field", column)
    value = values[column]
    if value is None:
        return "", ("missing value (null)", column)
    if not isinstance(value, str):
        return "", (f"wrong type: expected a string, got {type(value).__name__} {value!r:.40}", column)
    if _has_undecodable(value):
        return "", ("undecodable bytes (not valid UTF-8)", column)
    text = normalize_query(value, lowercase=lowercase)
    if not text:
        return "", ("empty value", column)
    if len(text) > max_chars:
        return "", (f"too long: {len(text)} characters > max_query_chars={max_chars}", column)
    return text, None


def _as_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)  # true/false, 1, 0.5: the same spelling whatever the file format
    return json.dumps(value, ensure_ascii=False, default=str)


def _has_undecodable(text: str) -> bool:
    # Text decoded with errors="surrogateescape" carries undecodable bytes as lone surrogates.
    return any("\udc80" <= ch <= "\udcff" for ch in text) if not text.isascii() else False


def _record_problem(report: ReadReport, location: str, problem: Problem, on_error: OnError) -> None:
    what, column = problem
    message = f"{report.path}:{location}: {what}" + (f" (field '{column}')" if column else "")
    if on_error == "error":
        raise DataError(message)
    report.problems.append(message)
    report.n_skipped += 1


def _finish(report: ReadReport, *, kind: str) -> None:
    if report.n_skipped:
        shown = "\n  ".join(report.problems[:_MAX_LOGGED_PROBLEMS])
        more = report.n_skipped - min(report.n_skipped, _MAX_LOGGED_PROBLEMS)
        logger.warning(
            "%s (bad rows skipped)\n  %s%s", report.summary(), shown, f"\n  ... and {more} more" if more else ""
        )
    else:
        logger.info("%s", report.summary())
    if report.n_kept == 0:
        detail = f"; first problem: {report.problems[0]}" if report.problems else ""
        raise DataError(f"{report.path}: no usable {kind} ({report.n_rows} rows read{detail})")


def _check_on_error(on_error: str) -> None:
    if on_error not in ("skip", "error"):
        raise ValueError(f"on_error must be 'skip' or 'error', got {on_error!r}")


# --------------------------------------------------------------------------------------------
# Row sources: each yields (location, values, problem) with values keyed by column name.


def _open_source(
    path: Path, *, required: tuple[str, ...], allow_txt: bool, split: str | None
) -> Iterator[RawRow]:
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        return _dataset_dir_rows(path, required, split)
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    suffix = suffixes[-2] if compressed and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _jsonl_rows(path, compressed)
    if suffix == ".csv":
        return _csv_rows(path, compressed, required)
    if suffix in (".tsv", ".tab"):
        return _tsv_rows(path, compressed, required)
    if suffix in (".parquet", ".pq") and not compressed:
        return _parquet_rows(path, required)
    if suffix == ".txt" and allow_txt:
        return _txt_rows(path, compressed, required[0])
    allowed = CLEAN_FORMATS if allow_txt else PAIR_FORMATS
    raise DataError(f"{path}: unsupported format {suffix or '(no suffix)'!r}; allowed: {allowed}")


def _open_binary(path: Path, compressed: bool) -> IO[bytes]:
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def _decode_lines(path: Path, compressed: bool) -> Iterator[tuple[int, str | None]]:
    """Yield (line number, text) per non-blank line; text is None when the bytes are not UTF-8."""
    with _open_binary(path, compressed) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                yield number, None
                continue
            text = text.rstrip("\r\n")
            if text.strip():
                yield number, text


_UNDECODABLE: Problem = ("undecodable bytes (not valid UTF-8)", None)


def _jsonl_rows(path: Path, compressed: bool) -> Iterator[RawRow]:
    for number, text in _decode_lines(path, compressed):
        location = str(number)
        if text is None:
            yield location, {}, _UNDECODABLE
            continue
        if number == 1 and text.lstrip().startswith("["):
            raise DataError(f"{path}:1: a JSON array is not supported; write one JSON object per line (JSON Lines)")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield location, {}, (f"malformed JSON ({exc.msg} at column {exc.colno})", None)
            continue
        if not isinstance(value, dict):
            yield location, {}, (f"wrong type: expected a JSON object, got {type(value).__name__}", None)
            continue
        yield location, value, None


def _txt_rows(path: Path, compressed: bool, column: str) -> Iterator[RawRow]:
    for number, text in _decode_lines(path, compressed):
        if text is None:
            yield str(number), {}, _UNDECODABLE
        else:
            yield str(number), {column: text}, None


def _missing_columns_error(path: Path, missing: list[str], header: list[str]) -> DataError:
    names = ", ".join(repr(m) for m in missing)
    return DataError(
        f"{path}:1: header has no column {names} (columns: {', '.join(header) or 'none'}); "
        "set data.query_column / data.correction_column to the names your file uses"
    )


def _csv_rows(path: Path, compressed: bool, required: tuple[str, ...]) -> Iterator[RawRow]:
    with _open_binary(path, compressed) as binary:
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(text)
        header: list[str] | None = None
        previous_end = 0
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                yield str(previous_end + 1), {}, (f"malformed CSV row ({exc})", None)
                previous_end = reader.line_num
                continue
            start, previous_end = previous_end + 1, reader.line_num
            if not record or not any(cell.strip() for cell in record):
                continue  # blank line
            if header is None:
                header = [cell.strip() for cell in record]
                missing = [c for c in required if c not in header]
                if missing:
                    raise _missing_columns_error(path, missing, header)
                continue
            if any(_has_undecodable(cell) for cell in record):
                yield str(start), {}, _UNDECODABLE
            elif len(record) != len(header):
                yield str(start), {}, (f"malformed CSV row: expected {len(header)} fields, got {len(record)}", None)
            else:
                yield str(start), dict(zip(header, record)), None
    if header is None:
        raise DataError(f"{path}: file has no rows")


def _tsv_rows(path: Path, compressed: bool, required: tuple[str, ...]) -> Iterator[RawRow]:
    lines = _decode_lines(path, compressed)
    header: list[str] | None = None
    positional = False
    for number, text in lines:
        location = str(number)
        if text is None:
            yield location, {}, _UNDECODABLE
            continue
        if header is None:  # the first decodable line decides header vs positional
            header, positional, is_header_line = _tsv_header(path, text, required)
            if is_header_line:
                continue
        cells = text.split("\t")
        if positional:
            if len(cells) < len(required):
                yield location, {}, (
                    f"malformed TSV row: expected at least {len(required)} tab-separated fields, got {len(cells)}",
                    None,
                )
                continue
            names = header + [f"column_{i + 1}" for i in range(len(header), len(cells))]
            yield location, dict(zip(names, cells)), None
        elif len(cells) != len(header):
            yield location, {}, (f"malformed TSV row: expected {len(header)} fields, got {len(cells)}", None)
        else:
            yield location, dict(zip(header, cells)), None
    if header is None:
        raise DataError(f"{path}: file has no rows")


def _tsv_header(path: Path, first: str, required: tuple[str, ...]) -> tuple[list[str], bool, bool]:
    """Apply the TSV header rule to the first line: (column names, positional?, is it a header line?)."""
    is_comment = first.startswith("#")
    names = [cell.strip() for cell in (first[1:] if is_comment else first).split("\t")]
    if all(column in names for column in required):
        return names, False, True
    if required not in (("query", "correction"), ("query",)):  # custom names demand a header
        missing = [c for c in required if c not in names]
        raise _missing_columns_error(path, missing, names if is_comment or len(names) > 1 else [])
    logger.info(
        "%s: no header naming %s; reading columns positionally (1 = %s%s)",
        path,
        " and ".join(repr(c) for c in required),
        required[0],
        f", 2 = {required[1]}" if len(required) > 1 else "",
    )
    positional_names = list(required)
    if is_comment:
        positional_names += names[len(required) :]
    return positional_names, True, is_comment


def _columnar_rows(
    path: Path, batches: Iterator[Mapping[str, list[Any]]], columns: list[str], required: tuple[str, ...]
) -> Iterator[RawRow]:
    missing = [c for c in required if c not in columns]
    if missing:
        raise _missing_columns_error(path, missing, columns)
    index = 0
    for batch in batches:
        n = len(batch[columns[0]]) if columns else 0
        for i in range(n):
            index += 1
            yield f"row {index}", {name: batch[name][i] for name in columns}, None


def _parquet_rows(path: Path, required: tuple[str, ...]) -> Iterator[RawRow]:
    import pyarrow.parquet as pq  # imported here: readers must stay cheap to import

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read Parquet file ({exc})") from exc
    columns = list(parquet.schema_arrow.names)
    batches = (batch.to_pydict() for batch in parquet.iter_batches(batch_size=_BATCH_ROWS))
    return _columnar_rows(path, batches, columns, required)


def _dataset_dir_rows(path: Path, required: tuple[str, ...], split: str | None) -> Iterator[RawRow]:
    if not ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        raise DataError(
            f"{path}: directory is not a saved `datasets` dataset (no state.json or dataset_dict.json); "
            f"allowed: {PAIR_FORMATS}"
        )
    import datasets  # heavy: only when a dataset directory is actually read

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise DataError(f"{path}: cannot load saved dataset ({exc})") from exc
    if isinstance(loaded, datasets.DatasetDict):
        names = sorted(loaded.keys())
        if split is None and len(names) == 1:
            split = names[0]
        if split not in loaded:
            raise DataError(f"{path}: choose a split with split=...; allowed: {', '.join(names)} (got {split!r})")
        loaded = loaded[split]
    batches = loaded.iter(batch_size=_BATCH_ROWS)
    return _columnar_rows(path, batches, list(loaded.column_names), required)
