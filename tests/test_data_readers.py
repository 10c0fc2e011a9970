"""Specifications of the pair / clean-corpus readers: every bad row is reported by file and line."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from spellfix.data import DataError, read_clean_queries, read_pairs
from spellfix.lexical.normalize import normalize_query


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def jsonl(rows: list[object]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


# ---------------------------------------------------------------- JSON Lines


def test_jsonl_good_rows_are_normalised_and_keep_extra_columns_as_strings(tmp_path: Path) -> None:
    path = write_bytes(
        tmp_path / "pairs.jsonl",
        jsonl(
            [
                {"query": "  Beyonse   HALO ", "correction": "beyonce halo", "domain": "music", "real_word": 0},
                {"query": "metalica", "correction": "metallica", "real_word": True},
            ]
        ),
    )
    rows, report = read_pairs(path)
    assert rows == [
        {"query": "beyonse halo", "correction": "beyonce halo", "domain": "music", "real_word": "0"},
        {"query": "metalica", "correction": "metallica", "real_word": "true"},
    ]
    assert (report.n_rows, report.n_kept, report.n_skipped, report.problems) == (2, 2, 0, [])


def test_jsonl_lowercase_false_keeps_case_but_still_collapses_spaces(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.jsonl", jsonl([{"query": " New  York ", "correction": "New York"}]))
    rows, _ = read_pairs(path, lowercase=False)
    assert rows[0]["query"] == "New York"


def test_jsonl_every_bad_row_is_reported_with_its_line_and_field(tmp_path: Path) -> None:
    data = (
        b'{"query": "ok", "correction": "ok"}\n'  # 1 good
        b"\n"  # 2 blank: not a row
        b'{"query": "", "correction": "x"}\n'  # 3 empty
        b'{"query": 5, "correction": "x"}\n'  # 4 wrong type
        b'{"query": "a", "correction": "\xff\xfe"}\n'  # 5 undecodable
        b'{"query": "a"\n'  # 6 malformed JSON
        b'{"correction": "a"}\n'  # 7 missing field
        b'["query", "a"]\n'  # 8 not an object
        b'{"query": null, "correction": "a"}\n'  # 9 null
        b'{"query": "' + b"x" * 40 + b'", "correction": "a"}\n'  # 10 too long
        b'{"query": "good", "correction": "good"}\n'  # 11 good
    )
    path = write_bytes(tmp_path / "bad.jsonl", data)
    rows, report = read_pairs(path, max_query_chars=30)
    assert [r["query"] for r in rows] == ["ok", "good"]
    assert (report.n_rows, report.n_kept, report.n_skipped) == (10, 2, 8)
    p = str(path)
    assert report.problems == [
        f"{p}:3: empty value (field 'query')",
        f"{p}:4: wrong type: expected a string, got int 5 (field 'query')",
        f"{p}:5: undecodable bytes (not valid UTF-8)",
        f"{p}:6: malformed JSON (Expecting ',' delimiter at column 14)",
        f"{p}:7: missing field (field 'query')",
        f"{p}:8: wrong type: expected a JSON object, got list",
        f"{p}:9: missing value (null) (field 'query')",
        f"{p}:10: too long: 40 characters > max_query_chars=30 (field 'query')",
    ]


def test_on_error_error_raises_at_first_bad_row_naming_file_line_and_field(tmp_path: Path) -> None:
    path = write_bytes(
        tmp_path / "bad.jsonl",
        jsonl([{"query": "a", "correction": "a"}, {"query": "b", "correction": "  "}, {"query": ""}]),
    )
    with pytest.raises(DataError) as info:
        read_pairs(path, on_error="error")
    assert str(info.value) == f"{path}:2: empty value (field 'correction')"
    assert isinstance(info.value, ValueError)


def test_skipped_rows_are_logged_as_a_summary_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_bytes(tmp_path / "p.jsonl", jsonl([{"query": "a", "correction": "a"}, {"query": ""}]))
    with caplog.at_level(logging.WARNING, logger="spellfix.data.readers"):
        read_pairs(path)
    assert f"{path}: kept 1 of 2 rows, skipped 1" in caplog.text


def test_configured_columns_are_renamed_to_query_and_correction(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.jsonl", jsonl([{"typed": "teh", "fixed": "the", "query": "ignored"}]))
    rows, _ = read_pairs(path, query_column="typed", correction_column="fixed")
    assert rows == [{"query": "teh", "correction": "the"}]


def test_gzipped_jsonl_is_read(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl([{"query": "teh", "correction": "the"}])))
    rows, _ = read_pairs(path)
    assert rows == [{"query": "teh", "correction": "the"}]


def test_json_array_file_is_rejected_with_a_json_lines_hint(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "pairs.json", b'[{"query": "teh", "correction": "the"}]\n')
    with pytest.raises(DataError, match=r"pairs.json:1: a JSON array is not supported; write one JSON object per line"):
        read_pairs(path)


# ---------------------------------------------------------------- empty / missing / unknown


def test_missing_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(DataError, match="nowhere.jsonl: no such file"):
        read_pairs(missing)


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.csv", "empty.tsv", "empty.txt"])
def test_empty_file_is_an_error_naming_the_path(tmp_path: Path, name: str) -> None:
    path = write_bytes(tmp_path / name, b"")
    reader = read_clean_queries if name.endswith(".txt") else read_pairs
    with pytest.raises(DataError, match=name):
        reader(path)


def test_file_with_only_bad_rows_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "allbad.jsonl", jsonl([{"query": ""}, {"query": "", "correction": ""}]))
    with pytest.raises(DataError, match=r"allbad.jsonl: no usable pairs \(2 rows read; first problem: .*:1: "):
        read_pairs(path)


def test_blank_lines_only_is_an_empty_dataset(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "blank.jsonl", b"\n  \n\n")
    with pytest.raises(DataError, match="blank.jsonl: no usable pairs"):
        read_pairs(path)


def test_unknown_suffix_lists_allowed_formats(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "pairs.xlsx", b"x")
    with pytest.raises(DataError, match=r"pairs.xlsx: unsupported format '.xlsx'; allowed: .jsonl"):
        read_pairs(path)


def test_txt_is_not_a_pair_format(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "pairs.txt", b"a b\n")
    with pytest.raises(DataError, match="unsupported format '.txt'"):
        read_pairs(path)


def test_invalid_on_error_value_names_allowed_values(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.jsonl", jsonl([{"query": "a", "correction": "a"}]))
    with pytest.raises(ValueError, match="'skip' or 'error'"):
        read_pairs(path, on_error="ignore")  # type: ignore[arg-type]


# ---------------------------------------------------------------- CSV


def test_csv_with_header_and_quoted_multiline_field_reports_start_line(tmp_path: Path) -> None:
    data = (
        "query,correction,domain\n"  # 1
        'teh,the,music\n'  # 2
        '"two\nlines",fine,product\n'  # 3-4
        "short,row\n"  # 5: too few fields
        ',empty,music\n'  # 6: empty query
        "caf\xe9,cafe,music\n"  # 7 (latin-1 byte after encoding below)
        "ok,ok,music\n"  # 8
    )
    path = write_bytes(tmp_path / "p.csv", data.encode("latin-1"))
    rows, report = read_pairs(path)
    assert [r["query"] for r in rows] == ["teh", "two lines", "ok"]
    assert rows[0]["domain"] == "music"
    assert report.problems == [
        f"{path}:5: malformed CSV row: expected 3 fields, got 2",
        f"{path}:6: empty value (field 'query')",
        f"{path}:7: undecodable bytes (not valid UTF-8)",
    ]
    assert (report.n_rows, report.n_kept, report.n_skipped) == (6, 3, 3)


def test_csv_without_the_configured_columns_is_an_error_naming_them(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.csv", b"text,label\nteh,the\n")
    with pytest.raises(DataError, match=r"p.csv:1: header has no column 'query', 'correction' \(columns: text, label\)"):
        read_pairs(path)


def test_csv_with_utf8_bom_reads_the_first_column_name(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.csv", "\ufeffquery,correction\nteh,the\n".encode("utf-8"))
    rows, _ = read_pairs(path)
    assert rows == [{"query": "teh", "correction": "the"}]


# ---------------------------------------------------------------- TSV


def test_tsv_with_header_naming_columns_reads_by_name(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.tsv", b"domain\tcorrection\tquery\nmusic\tthe\tteh\n")
    rows, _ = read_pairs(path)
    assert rows == [{"query": "teh", "correction": "the", "domain": "music"}]


def test_headerless_tsv_reads_first_two_columns_as_query_and_correction(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.tsv", b"teh\tthe\nrecieve\treceive\tbirkbeck\nlonely\n")
    rows, report = read_pairs(path)
    assert rows == [
        {"query": "teh", "correction": "the"},
        {"query": "recieve", "correction": "receive", "column_3": "birkbeck"},
    ]
    assert report.problems == [f"{path}:3: malformed TSV row: expected at least 2 tab-separated fields, got 1"]


def test_tsv_comment_header_names_extra_columns_and_is_not_a_row(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.tsv", b"# misspelled\tcorrect\tdomain\nthw\tthe\tmusic\n")
    rows, report = read_pairs(path)
    assert rows == [{"query": "thw", "correction": "the", "domain": "music"}]
    assert report.n_rows == 1


def test_tsv_comment_header_can_name_the_configured_columns(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.tsv", b"# misspelled\tcorrect\tdomain\nthw\tthe\tmusic\n")
    rows, _ = read_pairs(path, query_column="misspelled", correction_column="correct")
    assert rows == [{"query": "thw", "correction": "the", "domain": "music"}]


def test_tsv_with_custom_column_names_but_no_header_is_an_error(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.tsv", b"teh\tthe\n")
    with pytest.raises(DataError, match=r"p.tsv:1: header has no column 'typed', 'fixed'"):
        read_pairs(path, query_column="typed", correction_column="fixed")


def test_tsv_with_header_reports_rows_with_wrong_field_count(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.tsv", b"query\tcorrection\nteh\tthe\nx\ty\tz\n")
    rows, report = read_pairs(path)
    assert len(rows) == 1
    assert report.problems == [f"{path}:3: malformed TSV row: expected 2 fields, got 3"]


def test_tsv_undecodable_line_is_reported_and_the_rest_read(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.tsv", b"caf\xe9\tcafe\nteh\tthe\n")
    rows, report = read_pairs(path)
    assert rows == [{"query": "teh", "correction": "the"}]
    assert report.problems == [f"{path}:1: undecodable bytes (not valid UTF-8)"]


def test_tsv_on_error_error_stops_at_first_bad_row(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.tsv", b"teh\tthe\n\tempty\n")
    with pytest.raises(DataError, match=r"p.tsv:2: empty value \(field 'query'\)$"):
        read_pairs(path, on_error="error")


# ---------------------------------------------------------------- Parquet and datasets


def test_parquet_reports_rows_by_index_and_converts_extras(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "p.parquet"
    table = pa.table(
        {
            "query": ["teh", None, "ok", "x"],
            "correction": ["the", "a", "", "y"],
            "real_word": [0, 1, 0, 1],
        }
    )
    pq.write_table(table, path)
    rows, report = read_pairs(path)
    assert rows == [{"query": "teh", "correction": "the", "real_word": "0"}, {"query": "x", "correction": "y", "real_word": "1"}]
    assert report.problems == [
        f"{path}:row 2: missing value (null) (field 'query')",
        f"{path}:row 3: empty value (field 'correction')",
    ]


def test_parquet_with_non_string_query_column_is_reported_as_wrong_type(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"query": [1, 2], "correction": ["a", "b"]}), path)
    with pytest.raises(DataError, match=r"p.parquet:row 1: wrong type: expected a string, got int 1 \(field 'query'\)"):
        read_pairs(path, on_error="error")


def test_parquet_without_configured_column_is_an_error(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": ["a"], "correction": ["a"]}), path)
    with pytest.raises(DataError, match="header has no column 'query'"):
        read_pairs(path)


def test_corrupt_parquet_is_an_error_naming_the_path(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "broken.parquet", b"not parquet at all")
    with pytest.raises(DataError, match="broken.parquet: cannot read Parquet file"):
        read_pairs(path)


def test_saved_datasets_directory_is_read(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    target = tmp_path / "ds"
    datasets.Dataset.from_dict({"query": ["teh", ""], "correction": ["the", "x"]}).save_to_disk(str(target))
    rows, report = read_pairs(target)
    assert rows == [{"query": "teh", "correction": "the"}]
    assert report.problems == [f"{target}:row 2: empty value (field 'query')"]


def test_saved_dataset_dict_needs_a_split_when_it_has_several(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    target = tmp_path / "dd"
    part = datasets.Dataset.from_dict({"query": ["teh"], "correction": ["the"]})
    datasets.DatasetDict({"train": part, "validation": part}).save_to_disk(str(target))
    with pytest.raises(DataError, match="allowed: train, validation"):
        read_pairs(target)
    rows, _ = read_pairs(target, split="validation")
    assert rows == [{"query": "teh", "correction": "the"}]


def test_directory_that_is_not_a_dataset_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a saved `datasets` dataset"):
        read_pairs(tmp_path)


# ---------------------------------------------------------------- clean corpora


def test_clean_txt_one_query_per_line_reports_bad_lines(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "clean.txt", b"Hello  World\n\ncaf\xe9\n" + b"y" * 300 + b"\nthe end\n")
    queries, report = read_clean_queries(path)
    assert queries == ["hello world", "the end"]
    assert report.problems == [
        f"{path}:3: undecodable bytes (not valid UTF-8)",
        f"{path}:4: too long: 300 characters > max_query_chars=256 (field 'query')",
    ]


def test_clean_queries_from_a_named_column_of_a_tabular_file(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "c.jsonl", jsonl([{"text": "a b"}, {"text": ""}, {"other": "x"}]))
    queries, report = read_clean_queries(path, column="text")
    assert queries == ["a b"]
    assert report.problems == [f"{path}:2: empty value (field 'text')", f"{path}:3: missing field (field 'text')"]


def test_clean_queries_from_headerless_tsv_use_the_first_column(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "c.tsv", b"the beatles\t12\nled zeppelin\t9\n")
    queries, _ = read_clean_queries(path)
    assert queries == ["the beatles", "led zeppelin"]


def test_normalize_query_matches_project_scoring() -> None:
    assert normalize_query("  Foo\t\u00a0BAR  baz\n") == "foo bar baz"
    assert normalize_query("  Foo  Bar ", lowercase=False) == "Foo Bar"


def test_data_package_imports_without_torch() -> None:
    code = (
        "import sys, spellfix.data as d; d.read_pairs; d.read_clean_queries; d.make_noisy_pairs; d.NoiseConfig; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- shipped data (data/)

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"


def test_shipped_dev_set_has_one_misspelled_and_one_identity_row_per_query() -> None:
    rows, report = read_pairs(DATA / "dev.jsonl", on_error="error")
    assert report.n_kept == len(rows) > 0
    misspelled = [r for r in rows if r["error_type"] == "misspelled"]
    identity = [r for r in rows if r["error_type"] == "none"]
    assert len(misspelled) == len(identity) == len(rows) // 2
    assert all(r["query"] == r["correction"] for r in identity)
    assert all(r["query"] != r["correction"] and r["misspelling"] in r["query"].split() for r in misspelled)
    assert {r["id"] for r in misspelled} == {r["id"] for r in identity}
    assert {r["correction"] for r in misspelled} == {r["query"] for r in identity}
    assert {r["real_word"] for r in misspelled} == {"0", "1"} and {r["domain"] for r in rows} == {"music", "product"}


def test_shipped_clean_queries_are_valid_short_and_do_not_leak_dev_queries() -> None:
    path = DATA / "clean_queries.txt"
    assert path.stat().st_size < 10_000_000
    queries, report = read_clean_queries(path, on_error="error")
    assert 100_000 <= len(queries) <= 300_000 and report.n_skipped == 0
    assert all(1 <= len(q.split()) <= 5 for q in queries)
    dev_rows, _ = read_pairs(DATA / "dev.jsonl")
    leaked = {r["correction"] for r in dev_rows} & set(queries)
    assert not leaked, f"dev queries found verbatim in clean_queries.txt: {sorted(leaked)[:5]}"


def test_shipped_files_match_the_build_manifest() -> None:
    import hashlib

    manifest = json.loads((DATA / "MANIFEST.json").read_text(encoding="utf-8"))
    for name, entry in manifest["files"].items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == entry["sha256"], f"data/{name} changed; rerun data/build_data.py"


def test_shipped_confusion_tsv_reads_positionally_with_source_column() -> None:
    rows, report = read_pairs(DATA / "real_errors_train.tsv", on_error="error")
    assert report.n_rows == 19085 and rows[0].keys() == {"query", "correction", "source"}


@pytest.mark.slow
def test_build_data_rebuilds_clean_queries_bit_for_bit() -> None:
    done = subprocess.run(
        [sys.executable, str(DATA / "build_data.py"), "--check"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
