"""The shipped, calibrated corrector through the real tritonserver: the answers of `spellfix correct`.

The tiny model of test_serving.py has no calibrated rule, so it cannot tell a server that runs the
raw decoder from one that runs the whole corrector. Here the shipped ``spell-small-cpu`` (dictionary
candidates, acceptance model, candidate answers) is exported with a Triton repository and asked 300
dev queries — misspelled and correct, sent concurrently so dynamic batches mix them — and every
answer must equal ``SpellCorrector(export, backend="onnxruntime").correct`` on the same export.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_serving_fixtures import REPO, ensure_triton_env, running_server

httpclient = pytest.importorskip("tritonclient.http")

from spellfix.export.triton import write_repository  # noqa: E402
from spellfix.inference import SpellCorrector  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "spellfix"
MAX_BATCH = 16
QUERIES = 300


def dev_queries(n: int) -> list[str]:
    rows = [json.loads(line) for line in (REPO / "data" / "dev.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    misspelled = [r["query"] for r in rows if r["query"] != r["correction"]]
    correct = [r["query"] for r in rows if r["query"] == r["correction"]]
    return [q for pair in zip(misspelled[: n // 2], correct[: n // 2]) for q in pair]


def test_triton_answers_the_shipped_corrector_exactly(shipped_export, tmp_path):
    ensure_triton_env()
    queries = dev_queries(QUERIES)
    reference = SpellCorrector(shipped_export, backend="onnxruntime", backend_options={"intra_op_num_threads": 1})
    assert reference.acceptance is not None and reference.candidate_answers > 0, "the shipped model carries its calibrated rule"
    expected = reference.correct(queries)
    raw = SpellCorrector(shipped_export, backend="onnxruntime", backend_options={"intra_op_num_threads": 1}, acceptance=None, copy_margin=None)
    raw_answers = raw.correct(queries)
    differing = sum(a != b for a, b in zip(raw_answers, expected))
    assert differing >= 20, f"the rule must matter on these queries for the test to mean something (it changed {differing})"
    repository = write_repository(
        shipped_export, tmp_path / "triton", {"max_batch_size": MAX_BATCH, "max_queue_delay_us": 20_000, "intra_op_threads": 1}
    )
    with running_server(repository, tmp_path / "tritonserver.log") as server:
        client = httpclient.InferenceServerClient(server.http_url, concurrency=MAX_BATCH, network_timeout=120)
        try:

            def request(query: str):
                value = httpclient.InferInput("QUERY", [1, 1], "BYTES")
                value.set_data_from_numpy(np.array([query.encode("utf-8")], dtype=np.object_).reshape(-1, 1))
                return [value]

            futures = [client.async_infer(MODEL, request(q)) for q in queries]  # all in flight at once
            got = [f.get_result().as_numpy("CORRECTION").reshape(-1)[0].decode("utf-8") for f in futures]
            stats = next(s for s in client.get_inference_statistics(MODEL)["model_stats"] if s["name"] == MODEL)
        finally:
            client.close()
    mismatches = [(q, g, e) for q, g, e in zip(queries, got, expected) if g != e]
    assert not mismatches, f"{len(mismatches)} of {len(queries)} answers differ from SpellCorrector, e.g. {mismatches[:5]}"
    assert int(stats["execution_count"]) < len(queries), "concurrent requests should have been batched together"
