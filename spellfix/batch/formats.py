"""Query-log formats for ``spellfix correct --input``: split a file into parts, read a part's rows,
write each row back with its correction.

Why parts are planned by byte offset (row index for Parquet): a worker anywhere (another process,
a Ray actor on another machine) reads exactly its slice of the file, so nothing but small part
descriptions travels from the driver, memory stays bounded, and a resumed run skips finished parts
without re-reading them. Every record is a row, blank ones included: the output has one row per
input row, in order. A bad row (undecodable bytes, empty, over-long, malformed) is described as
``FILE:LINE: what`` (``FILE:row N`` for Parquet, as ``spellfix.data.readers`` reports) and written
back unchanged, with no correction.

Formats by suffix: ``.txt``/``.log`` (one query per line; the output line is the correction),
``.jsonl``/``.ndjson`` (an object per line; the correction is added as a key), ``.csv`` (header row,
RFC 4180 quoting) and ``.tsv``/``.tab`` (header row, no quoting) (a column is appended), ``.parquet``
(a column is appended).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

from spellfix.data.readers import normalize_query

FORMATS = ("text", "jsonl", "csv", "tsv", "parquet")
SUFFIXES = {
    ".txt": "text", ".log": "text", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
    ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
}
csv.field_size_limit(2**31 - 1)  # over-long fields are reported by our own length check


def detect_format(path: Path, given: str | None = None) -> str:
    """The format named by ``given`` or by the file's suffix; a clear error otherwise."""
    if given:
        if given not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {given!r}")
        return given
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown format {path.suffix or '(no suffix)'!r}; use one of {', '.join(SUFFIXES)} or --format")
    return fmt


@dataclass(frozen=True)
class PartSpec:
    """One slice of the input: rows ``[start, stop)`` as byte offsets (row indices for Parquet)."""

    index: int
    first_line: int  # line (row for Parquet) number of the first record, 1-based
    start: int
    stop: int
    n_rows: int


@dataclass(frozen=True)
class Layout:
    """What every worker must know about the input besides its part."""

    path: str
    fmt: str
    column: str
    output_column: str
    max_chars: int
    header: tuple[str, ...] = ()  # csv/tsv column names; parquet: the schema's names
    keep_bad: bool = True  # False: bad rows go to the rejects file, not the output


@dataclass
class Row:
    line: int
    raw: bytes  # the record as read, line ending removed (b"" for Parquet)
    query: str | None  # decoded text of the query column; None when the row is bad
    problem: str | None = None
    kind: str | None = None  # undecodable | empty | too-long | malformed
    fields: Any = None  # the parsed record (dict for jsonl, list for csv/tsv, dict for parquet)
    correction: str | None = None

    def location(self, layout: Layout) -> str:
        return f"{layout.path}:{'row ' if layout.fmt == 'parquet' else ''}{self.line}"


@dataclass
class Plan:
    header: tuple[str, ...]
    parts: list[PartSpec] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return sum(p.n_rows for p in self.parts)


# ------------------------------------------------------------------------------ planning


def _records(handle: IO[bytes], quoted: bool) -> Iterator[bytes]:
    """Raw records: lines, or for CSV lines joined while a quoted field is open (odd quote count)."""
    pending = b""
    for line in handle:
        pending += line
        if quoted and pending.count(b'"') % 2:
            continue
        yield pending
        pending = b""
    if pending:
        yield pending


def _strip_eol(record: bytes) -> bytes:
    return record[:-2] if record.endswith(b"\r\n") else record[:-1] if record.endswith(b"\n") else record


def plan_parts(path: Path, fmt: str, column: str, part_rows: int) -> Plan:
    """Scan the input once (streamed) into parts of ``part_rows`` rows and read its header."""
    if part_rows < 1:
        raise ValueError(f"--part-rows must be >= 1, got {part_rows}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if fmt == "parquet":
        return _plan_parquet(path, column, part_rows)
    plan = Plan(header=())
    with open(path, "rb") as handle:
        offset, line = 0, 1
        if fmt in ("csv", "tsv"):
            first = next(_records(handle, fmt == "csv"), b"")
            plan.header = _parse_header(path, first, fmt, column)
            offset, line = len(first), 1 + first.count(b"\n")
        start, first_line, n = offset, line, 0
        for record in _records(handle, fmt == "csv"):
            if n == 0:
                start, first_line = offset, line
            offset += len(record)
            line += max(1, record.count(b"\n"))
            n += 1
            if n == part_rows:
                plan.parts.append(PartSpec(len(plan.parts), first_line, start, offset, n))
                n = 0
        if n:
            plan.parts.append(PartSpec(len(plan.parts), first_line, start, offset, n))
    return plan


def _parse_header(path: Path, first: bytes, fmt: str, column: str) -> tuple[str, ...]:
    try:
        text = _strip_eol(first).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path}:1: the header is not valid UTF-8") from None
    names = next(csv.reader([text])) if fmt == "csv" else text.split("\t")
    names = [n.strip() for n in names]
    if column not in names:
        raise ValueError(f"{path}:1: header has no column {column!r} (columns: {', '.join(names) or 'none'}); set --column")
    return tuple(names)


def _plan_parquet(path: Path, column: str, part_rows: int) -> Plan:
    import pyarrow.parquet as pq

    names = tuple(pq.ParquetFile(path).schema_arrow.names)
    if column not in names:
        raise ValueError(f"{path}: no column {column!r} (columns: {', '.join(names)}); set --column")
    total = pq.ParquetFile(path).metadata.num_rows
    parts = [PartSpec(i, s + 1, s, min(s + part_rows, total), min(part_rows, total - s)) for i, s in enumerate(range(0, total, part_rows))]
    return Plan(header=names, parts=parts)


# ------------------------------------------------------------------------------- reading


def read_part(layout: Layout, spec: PartSpec) -> list[Row]:
    """The rows of one part, each validated (``Row.problem`` says why a row is bad)."""
    if layout.fmt == "parquet":
        return _read_parquet(layout, spec)
    with open(layout.path, "rb") as handle:
        handle.seek(spec.start)
        chunk = handle.read(spec.stop - spec.start)
    return parse_lines(layout, chunk, spec.first_line)


def parse_lines(layout: Layout, data: bytes, first_line: int = 1) -> list[Row]:
    """Rows from the bytes of line-based records (a part, or all of stdin)."""
    rows, line = [], first_line
    for record in _records(io.BytesIO(data), layout.fmt == "csv"):
        rows.append(_parse_record(layout, line, _strip_eol(record)))
        line += max(1, record.count(b"\n"))
    return rows


def _parse_record(layout: Layout, line: int, raw: bytes) -> Row:
    row = Row(line=line, raw=raw, query=None)
    try:
        text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        return _bad(row, "undecodable", f"undecodable bytes (not valid UTF-8): byte {raw[exc.start]:#04x} at position {exc.start}")
    if layout.fmt == "text":
        return _check_query(layout, row, text)
    if layout.fmt == "jsonl":
        if not text.strip():
            return _bad(row, "empty", "empty line")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return _bad(row, "malformed", f"malformed JSON ({exc.msg} at column {exc.colno})")
        if not isinstance(value, dict):
            return _bad(row, "malformed", f"wrong type: expected a JSON object, got {type(value).__name__}")
        row.fields = value
        return _check_value(layout, row, value.get(layout.column, None), layout.column in value)
    cells = next(csv.reader([text]), []) if layout.fmt == "csv" else text.split("\t")
    if not any(c.strip() for c in cells):
        return _bad(row, "empty", "empty line")
    if len(cells) != len(layout.header):
        return _bad(row, "malformed", f"malformed {layout.fmt.upper()} row: expected {len(layout.header)} fields, got {len(cells)}")
    row.fields = cells
    return _check_query(layout, row, cells[layout.header.index(layout.column)])


def _read_parquet(layout: Layout, spec: PartSpec) -> list[Row]:
    import pyarrow.parquet as pq

    table = _parquet_slice(pq.ParquetFile(layout.path), spec.start, spec.stop)
    rows = []
    for i, record in enumerate(table.to_pylist()):
        row = Row(line=spec.first_line + i, raw=b"", query=None, fields=record)
        rows.append(_check_value(layout, row, record.get(layout.column), True))
    return rows


def _parquet_slice(parquet: Any, start: int, stop: int) -> Any:
    """Rows [start, stop) reading only the row groups that hold them."""
    import pyarrow as pa

    tables, offset = [], 0
    for g in range(parquet.metadata.num_row_groups):
        n = parquet.metadata.row_group(g).num_rows
        if offset < stop and offset + n > start:
            table = parquet.read_row_group(g)
            tables.append(table.slice(max(0, start - offset), min(stop, offset + n) - max(start, offset)))
        offset += n
    return pa.concat_tables(tables) if tables else parquet.schema_arrow.empty_table()


def _check_value(layout: Layout, row: Row, value: Any, present: bool) -> Row:
    if not present:
        return _bad(row, "malformed", f"missing field (field '{layout.column}')")
    if value is None:
        return _bad(row, "empty", f"missing value (null) (field '{layout.column}')")
    if not isinstance(value, str):
        return _bad(row, "malformed", f"wrong type: expected a string, got {type(value).__name__} (field '{layout.column}')")
    return _check_query(layout, row, value)


def _check_query(layout: Layout, row: Row, text: str) -> Row:
    normalized = normalize_query(text)
    if not normalized:
        return _bad(row, "empty", "empty query")
    if len(normalized) > layout.max_chars:
        return _bad(row, "too-long", f"too long: {len(normalized)} characters > --max-chars={layout.max_chars}")
    row.query = text
    return row


def _bad(row: Row, kind: str, problem: str) -> Row:
    row.kind, row.problem = kind, problem
    return row


# ------------------------------------------------------------------------------- writing


def output_header(layout: Layout) -> bytes:
    """The bytes the output starts with (the csv/tsv header with the added column)."""
    names = [*layout.header, layout.output_column]
    if layout.fmt == "csv":
        return _csv_line(names)
    if layout.fmt == "tsv":
        return ("\t".join(names) + "\n").encode("utf-8")
    return b""


def _csv_line(cells: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue().encode("utf-8")


def format_rows(layout: Layout, rows: list[Row]) -> bytes:
    """One part of the output file (a Parquet file's bytes for Parquet) from corrected rows."""
    kept = [r for r in rows if layout.keep_bad or r.problem is None]
    if layout.fmt == "parquet":
        return _parquet_bytes(layout, kept)
    return b"".join(_format_row(layout, r) for r in kept)


def _format_row(layout: Layout, row: Row) -> bytes:
    fix = row.correction
    if layout.fmt == "text":
        return (fix.encode("utf-8") if fix is not None else row.raw) + b"\n"
    if row.fields is None:  # could not be parsed: the record unchanged (csv/tsv: an empty correction cell)
        sep = {"csv": b",", "tsv": b"\t"}.get(layout.fmt, b"")
        return row.raw + sep + b"\n"
    if layout.fmt == "jsonl":
        return (json.dumps({**row.fields, layout.output_column: fix}, ensure_ascii=False) + "\n").encode("utf-8")
    if layout.fmt == "csv":
        return _csv_line([*row.fields, fix or ""])
    return ("\t".join([*row.fields, fix or ""]) + "\n").encode("utf-8")


def _parquet_bytes(layout: Layout, rows: list[Row]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.ParquetFile(layout.path).schema_arrow
    table = pa.Table.from_pylist([r.fields for r in rows], schema=schema)
    table = table.append_column(layout.output_column, pa.array([r.correction for r in rows], type=pa.string()))
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()
