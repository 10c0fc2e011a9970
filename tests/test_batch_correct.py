"""``spellfix correct --input/--output``: every row kept in order, bad rows reported by file:line,
kill -9 + re-run gives the same bytes, worker processes and Ray give the same output.

A tiny trained model (test_inference_fixtures) keeps it fast; the CLI runs as a real subprocess where
the behaviour under test is the process's (kill -9, stdin, exit code).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spellfix.batch import ModelSpec, correct_file
from test_inference_fixtures import dev_pairs, train_tiny_model

N_LINES = 6000


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return train_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _log(path: Path) -> tuple[Path, dict[int, str]]:
    """A 6,000-line log, 1 % bad: 20 undecodable, 20 empty, 20 of 5,000 characters (line -> kind)."""
    queries = [q for q, _ in dev_pairs(400)]
    lines, bad = [], {}
    for i in range(N_LINES):
        line = queries[i % len(queries)].encode()
        if i % 100 == 7:
            kind = ("undecodable", "empty", "too-long")[(i // 100) % 3]
            line = {"undecodable": b"caf\xe9 \xff\xfe", "empty": b"   ", "too-long": b"a" * 5000}[kind]
            bad[i + 1] = kind
        lines.append(line)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, bad


def _cli(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    env = {**(env or os.environ), "PYTHONPATH": str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "spellfix.cli", "correct", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_text_log_keeps_every_row_in_order_reports_bad_rows_and_resumes_after_kill_9(tiny_model, tmp_path):
    log, bad = _log(tmp_path / "log.txt")
    common = ["--model", str(tiny_model), "--input", str(log), "--part-rows", "200", "--threads", "1", "--no-progress"]

    reference = tmp_path / "reference.txt"
    proc = _cli(*common, "--output", str(reference))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()
    out_lines = reference.read_bytes().split(b"\n")
    assert out_lines[-1] == b"" and len(out_lines) - 1 == N_LINES
    in_lines = log.read_bytes().split(b"\n")
    for line, kind in bad.items():  # passed through unchanged, and reported as FILE:LINE
        assert out_lines[line - 1] == in_lines[line - 1]
        assert f"{log}:{line}: " in err.decode()
    reported = [l for l in err.decode().splitlines() if re.match(rf"{re.escape(str(log))}:\d+: ", l)]
    assert len(reported) == len(bad) == 60
    assert f"{N_LINES} rows" in err.decode() and "60 bad (20 empty, 20 too-long, 20 undecodable" in err.decode()
    assert f"{N_LINES - 60} corrected" in err.decode()  # every good line went through the model

    # kill -9 once some parts exist (two worker processes), then re-run the same command
    resumed = tmp_path / "resumed.txt"
    parts = tmp_path / "resumed.txt.parts"
    proc = _cli(*common, "--output", str(resumed), "--workers", "2", start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list(parts.glob("part-*.json"))) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no part written in 300 s"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    proc.stdout.close(), proc.stderr.close()
    n_done = len(list(parts.glob("part-*.json")))
    assert not resumed.exists() and 3 <= n_done < N_LINES // 200
    _wait_for_workers_to_exit(proc.pid)
    proc = _cli(*common, "--output", str(resumed), "--workers", "2")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()
    assert "resumed:" in err.decode() and f"of {N_LINES // 200} parts were done" in err.decode()
    assert resumed.read_bytes() == reference.read_bytes()
    assert not parts.exists()


def _wait_for_workers_to_exit(session: int) -> None:
    """The killed driver's worker processes notice and exit (none is left busy)."""
    import psutil

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = [p for p in psutil.process_iter(["pid"]) if _session(p) == session]
        if not alive:
            return
        time.sleep(0.2)
    for p in alive:
        os.kill(p.pid, signal.SIGKILL)
    raise AssertionError(f"worker processes outlived the killed driver: {[p.pid for p in alive]}")


def _session(process) -> int | None:
    try:
        return os.getsid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


def test_stdin_mode_corrects_good_lines_and_reports_bad_ones(tiny_model):
    proc = _cli("--model", str(tiny_model), stdin=subprocess.PIPE)
    out, err = proc.communicate(b"beyonse halo\n\n\xff\xfeabc\nwireles hedphones\n", timeout=300)
    assert proc.returncode == 0, err.decode()
    lines = out.split(b"\n")
    assert len(lines) == 5 and lines[4] == b""
    assert lines[1] == b"" and lines[2] == b"\xff\xfeabc" and lines[0] and lines[3]
    assert "<stdin>:2: empty query" in err.decode()
    assert "<stdin>:3: undecodable bytes" in err.decode()


def _model(path: Path) -> ModelSpec:
    return ModelSpec(str(path), threads=1)


def test_jsonl_csv_tsv_keep_rows_and_add_the_correction(tiny_model, tmp_path):
    queries = [q for q, _ in dev_pairs(30)]
    jsonl = tmp_path / "log.jsonl"
    records = [{"id": i, "q": q} for i, q in enumerate(queries)] + [{"id": 30, "q": ""}, {"id": 31}]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n", encoding="utf-8")
    summary = correct_file(jsonl, tmp_path / "out.jsonl", _model(tiny_model), column="q", part_rows=7, progress=False)
    out = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(out) == 33 and out[-1] == "not json"
    parsed = [json.loads(line) for line in out[:-1]]
    assert [r["id"] for r in parsed] == list(range(32))
    assert all(isinstance(r["correction"], str) for r in parsed[:30])
    assert parsed[30]["correction"] is None and parsed[31]["correction"] is None
    assert [b["where"] for b in summary.bad] == [f"{jsonl}:31", f"{jsonl}:32", f"{jsonl}:33"]

    csv_in = tmp_path / "log.csv"
    csv_in.write_text('id,query\n0,"a, quoted\nquery"\n' + "".join(f"{i},{q}\n" for i, q in enumerate(queries, 1)), encoding="utf-8")
    summary = correct_file(csv_in, tmp_path / "out.csv", _model(tiny_model), part_rows=4, progress=False)
    import csv

    rows = list(csv.reader((tmp_path / "out.csv").open(encoding="utf-8", newline="")))
    assert rows[0] == ["id", "query", "correction"] and len(rows) == 32 and summary.rows == 31
    assert rows[1][1] == "a, quoted\nquery" and [r[0] for r in rows[1:]] == [str(i) for i in range(31)]

    tsv_in = tmp_path / "log.tsv"
    tsv_in.write_text("query\tn\n" + "".join(f"{q}\t{i}\n" for i, q in enumerate(queries)), encoding="utf-8")
    correct_file(tsv_in, tmp_path / "out.tsv", _model(tiny_model), part_rows=8, rejects=tmp_path / "rej.jsonl", progress=False)
    out = (tmp_path / "out.tsv").read_text(encoding="utf-8").splitlines()
    assert out[0] == "query\tn\tcorrection" and [l.split("\t")[1] for l in out[1:]] == [str(i) for i in range(30)]
    assert (tmp_path / "rej.jsonl").read_text() == ""


def test_parquet_and_rejects_file(tiny_model, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    queries = [q for q, _ in dev_pairs(25)] + ["", None, "x" * 300]
    pq.write_table(pa.table({"query": queries, "n": list(range(28))}), tmp_path / "log.parquet", row_group_size=6)
    summary = correct_file(tmp_path / "log.parquet", tmp_path / "out.parquet", _model(tiny_model), part_rows=5,
                           rejects=tmp_path / "rejects.jsonl", progress=False)
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("n").to_pylist() == list(range(25)) and table.schema.names == ["query", "n", "correction"]
    rejects = [json.loads(l) for l in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["where"] for r in rejects] == [f"{tmp_path / 'log.parquet'}:row {i}" for i in (26, 27, 28)]
    assert [r["kind"] for r in rejects] == ["empty", "empty", "too-long"] and summary.rows == 28


def test_a_different_job_in_the_parts_directory_is_refused(tiny_model, tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("hello world\n" * 10, encoding="utf-8")
    (tmp_path / "out.txt.parts").mkdir()
    (tmp_path / "out.txt.parts" / "job.json").write_text(json.dumps({"input": "elsewhere"}))
    with pytest.raises(ValueError, match="holds parts of a different job"):
        correct_file(log, tmp_path / "out.txt", _model(tiny_model), progress=False)


@pytest.mark.slow
def test_ray_engine_gives_the_same_output_as_the_local_engine(tiny_model, tmp_path):
    pytest.importorskip("ray.data")
    log, _ = _log(tmp_path / "log.txt")
    local = correct_file(log, tmp_path / "local.txt", _model(tiny_model), part_rows=500, progress=False)
    ray_summary = correct_file(log, tmp_path / "ray.txt", _model(tiny_model), part_rows=500, workers=2, engine="ray", progress=False)
    assert (tmp_path / "ray.txt").read_bytes() == (tmp_path / "local.txt").read_bytes()
    assert ray_summary.bad == local.bad and len(local.bad) == 60


def test_fast_corrector_on_the_shipped_model_is_exported_once_and_answers_as_in_process(shipped_export, tmp_path):
    """The path a user correcting a log takes: the shipped, calibrated model by name with the fast
    runtime, 2 worker processes. The export is made once into $SPELLFIX_CACHE, and the job's answers
    are the in-process corrector's on an export of the same weights."""
    from spellfix.inference import SpellCorrector

    queries = [json.loads(line)["query"] for line in (Path(__file__).resolve().parents[1] / "data" / "dev.jsonl").open()][::11][:300]
    log = tmp_path / "log.txt"
    log.write_text("\n".join(queries) + "\n", encoding="utf-8")
    env = {**os.environ, "SPELLFIX_CACHE": str(tmp_path / "cache")}
    common = ["--model", "spell-small-cpu", "--backend", "onnxruntime"]
    proc = _cli(*common, "--input", str(log), "--output", str(tmp_path / "out.txt"), "--workers", "2", "--threads", "1", "--part-rows", "50", "--no-progress", env=env)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()
    assert b"exporting" in err
    assert [p.name.split("-")[0] for p in (tmp_path / "cache" / "exports").iterdir()] == ["spell"]
    expected = SpellCorrector(shipped_export, backend="onnxruntime").correct(queries)
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines() == expected
    assert sum(q != e for q, e in zip(queries, expected)) > 30  # the rule corrects: the comparison is not copy == copy

    proc = _cli(*common, "--precision", "int8", "wireles hedphones", env=env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert b"exporting" not in err  # the cached export, int8 graphs included
    assert out.decode().split() == ["wireless", "headphones"]
