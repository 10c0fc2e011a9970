"""The real Triton server on CPU serving a tiny trained export: HTTP and gRPC, batching, bad requests.

Starts the ``tritonserver`` of the nvidia-pytriton wheel from the Triton env (``make triton-env``)
on free 127.0.0.1 ports; every server is stopped in a fixture teardown / finally, and its process
group is checked to be gone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from test_serving_fixtures import REPO, ensure_triton_env, process_group_alive, running_server, serving_queries, tiny_export

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

from spellfix.export.triton import write_repository  # noqa: E402
from spellfix.inference import SpellCorrector  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MODEL = "spellfix"
MAX_BATCH = 8
#: a queue delay long enough that concurrent requests always meet in one batch on a loaded machine
QUEUE_DELAY_US = 50_000


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    ensure_triton_env()
    return tiny_export(tmp_path_factory.getbasetemp() / "serving-export")


@pytest.fixture(scope="module")
def reference(export_dir) -> SpellCorrector:
    return SpellCorrector(export_dir, backend="onnxruntime", backend_options={"intra_op_num_threads": 1})


@pytest.fixture(scope="module")
def server(export_dir, tmp_path_factory):
    repository = write_repository(
        export_dir,
        tmp_path_factory.mktemp("repo") / "triton",
        {"max_batch_size": MAX_BATCH, "max_queue_delay_us": QUEUE_DELAY_US, "preferred_batch_sizes": [MAX_BATCH], "intra_op_threads": 1},
    )
    with running_server(repository, tmp_path_factory.getbasetemp() / "tritonserver.log") as running:
        yield running
    assert not process_group_alive_after(running.pid), "tritonserver's process group outlived stop()"


def process_group_alive_after(pgid: int, wait_s: float = 5.0) -> bool:
    deadline = time.monotonic() + wait_s
    while process_group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return process_group_alive(pgid)


def _http_input(rows: list[bytes], datatype: str = "BYTES"):
    value = httpclient.InferInput("QUERY", [len(rows), 1], datatype)
    value.set_data_from_numpy(np.array(rows, dtype=np.object_).reshape(-1, 1))
    return value


def _grpc_input(rows: list[bytes]):
    value = grpcclient.InferInput("QUERY", [len(rows), 1], "BYTES")
    value.set_data_from_numpy(np.array(rows, dtype=np.object_).reshape(-1, 1))
    return value


def _texts(result) -> list[str]:
    return [v.decode("utf-8") for v in result.as_numpy("CORRECTION").reshape(-1)]


@pytest.fixture
def http(server):
    client = httpclient.InferenceServerClient(server.http_url, concurrency=MAX_BATCH * 2, network_timeout=60)
    yield client
    client.close()


@pytest.fixture
def grpc(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


def test_http_answers_one_query_per_request_exactly_like_spellcorrector(http, reference):
    queries = serving_queries(24)
    expected = reference.correct(queries)
    assert len(set(expected)) > 5, "the tiny model's outputs must be non-trivial for this test to mean something"
    got = [_texts(http.infer(MODEL, [_http_input([q.encode()])]))[0] for q in queries]
    assert got == expected


def test_grpc_answers_multi_row_requests_exactly_like_spellcorrector(grpc, reference):
    queries = serving_queries(24)
    got: list[str] = []
    for start in range(0, len(queries), MAX_BATCH):
        got += _texts(grpc.infer(MODEL, [_grpc_input([q.encode() for q in queries[start : start + MAX_BATCH]])]))
    assert got == reference.correct(queries)


def _model_stats(client) -> dict:
    stats = client.get_inference_statistics(MODEL)["model_stats"]
    return next(s for s in stats if s["name"] == MODEL)


def test_concurrent_requests_are_decoded_in_fewer_batch_executions(http, reference):
    queries = serving_queries(16)
    before = _model_stats(http)
    futures = [http.async_infer(MODEL, [_http_input([q.encode()])]) for q in queries]
    got = [_texts(f.get_result())[0] for f in futures]
    after = _model_stats(http)
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert got == reference.correct(queries)
    assert inferences == len(queries)
    assert executions < inferences, f"{inferences} requests ran in {executions} executions: no dynamic batching"


LONG_QUERY = " ".join(["rock"] * 200)  # far over the tiny model's max_source_length (32 tokens)


@pytest.mark.parametrize(
    ("rows", "datatype", "message"),
    [
        ([b""], "BYTES", "is empty"),
        ([b"   "], "BYTES", "is empty"),
        ([b"hello", b"caf\xc3"], "BYTES", "query 1 is not valid UTF-8"),
        ([b"\xff\xfe"], "BYTES", "not valid UTF-8"),
        ([LONG_QUERY.encode()], "BYTES", "more than max_source_length"),
        ([b"x" * 2000], "BYTES", "limit is 1024 bytes"),
        ([b"hello"] * (MAX_BATCH + 1), "BYTES", f"must be <= {MAX_BATCH}"),
    ],
    ids=["empty", "whitespace", "bad-utf8-second-row", "bad-utf8", "over-long-tokens", "over-long-bytes", "batch-over-max"],
)
def test_bad_request_gets_a_clear_error_and_the_next_request_is_served(http, grpc, reference, rows, datatype, message):
    with pytest.raises(InferenceServerException, match=message):
        http.infer(MODEL, [_http_input(rows, datatype)])
    with pytest.raises(InferenceServerException, match=message):
        grpc.infer(MODEL, [_grpc_input(rows)])
    assert _texts(http.infer(MODEL, [_http_input([b"helo world"])])) == reference.correct(["helo world"])


def test_wrong_datatype_is_rejected_by_the_server_and_serving_goes_on(http, grpc, reference):
    for client, module in ((http, httpclient), (grpc, grpcclient)):
        value = module.InferInput("QUERY", [1, 1], "INT32")
        value.set_data_from_numpy(np.array([[7]], dtype=np.int32))
        with pytest.raises(InferenceServerException, match="data-type is 'INT32', but model 'spellfix' expects 'BYTES'"):
            client.infer(MODEL, [value])
    assert _texts(http.infer(MODEL, [_http_input([b"musik"])])) == reference.correct(["musik"])


def test_a_bad_request_in_a_dynamic_batch_does_not_fail_its_neighbours(http, reference):
    rows = [b"helo world", b"\xff", b"musik", b"", b"rok song"]
    futures = [http.async_infer(MODEL, [_http_input([row])]) for row in rows]
    outcomes: list[str | None] = []
    for future in futures:
        try:
            outcomes.append(_texts(future.get_result())[0])
        except InferenceServerException:
            outcomes.append(None)
    good = reference.correct(["helo world", "musik", "rok song"])
    assert outcomes == [good[0], None, good[1], None, good[2]]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # how a shell starts a background job (`spellfix serve &`)


def _free_port_run(count: int) -> int:
    """A port P with P .. P+count-1 all free right now: `spellfix serve --port P` puts gRPC on P+1
    and metrics on P+2, and a free P alone once let gRPC collide with a port in use."""
    from spellfix.serving.server import LOOPBACK, free_ports

    for _ in range(50):
        (base,) = free_ports(1)
        try:
            for port in range(base + 1, base + count):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((LOOPBACK, port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no run of {count} free ports found")


def test_spellfix_serve_starts_on_loopback_and_stops_cleanly_on_ctrl_c(export_dir, tmp_path):
    env_dir = ensure_triton_env()
    port = _free_port_run(3)
    command = [sys.executable, "-m", "spellfix.cli", "serve", "--model-repository", str(export_dir / "triton"), "--port", str(port)]
    env = {**os.environ, "SPELLFIX_TRITON_ENV": str(env_dir)}
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_ignore_sigint
    )
    server_pid = None
    try:
        line = _read_line(proc, timeout=120)
        info = json.loads(line)
        server_pid = info["pid"]
        assert info["http"] == f"http://127.0.0.1:{port}"
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_model_ready(MODEL)
        client.close()
        proc.send_signal(signal.SIGINT)  # what Ctrl-C (or `kill -INT` on a background job) sends
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        assert not process_group_alive_after(server_pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        if server_pid is not None and process_group_alive(server_pid):
            os.killpg(server_pid, signal.SIGKILL)


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first stdout line of ``proc`` (the endpoints JSON), or fail with its stderr."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(proc.stdout.readline)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGINT)
                pytest.fail("spellfix serve printed no endpoints line in time")
            time.sleep(0.1)
        line = future.result()
    if not line:
        pytest.fail(f"spellfix serve exited early: {proc.stderr.read()}")
    return line


def test_wait_ready_gives_up_after_the_timeout_and_kills_a_server_that_hangs(tmp_path):
    from spellfix.serving.env import pytriton_install
    from spellfix.serving.server import ServerError, TritonServer, free_ports

    model = tmp_path / "repo" / "hangs"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 0\n'
        'input [ { name: "X" data_type: TYPE_STRING dims: [ 1 ] } ]\noutput [ { name: "Y" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
    )
    (model / "1" / "model.py").write_text(
        "import time\n\nclass TritonPythonModel:\n    def initialize(self, args):\n        time.sleep(3600)\n\n"
        "    def execute(self, requests):\n        return []\n"
    )
    http, grpc, metrics = free_ports(3)
    server = TritonServer(pytriton_install(ensure_triton_env()), tmp_path / "repo", http_port=http, grpc_port=grpc, metrics_port=metrics, log_path=tmp_path / "log", stop_timeout_s=5)
    server.start()
    try:
        with pytest.raises(ServerError, match="not ready within 5 s"):
            server.wait_ready(timeout=5)
        assert not server.is_running()
        assert not process_group_alive_after(server.pid)
    finally:
        server.stop(timeout=5)
