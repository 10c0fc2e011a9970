"""Serving load: Triton (HTTP and gRPC, dynamic batching on vs off) against in-process SpellCorrector.

    python benchmarks/serve_load.py                 # the shipped spell-small-cpu (exported once to runs/serve_load/)
    python benchmarks/serve_load.py --model EXP     # any spellfix export dir (or model dir: exported)
    python benchmarks/serve_load.py --quick         # fewer requests and repeats (smoke run)

What runs, side by side in one process:
- two real ``tritonserver`` processes on 127.0.0.1 (the Triton env, ``make triton-env``), one
  repository with dynamic batching (max queue delay 0, max_batch_size 32) and one without, both one
  CPU instance of the ``spellfix`` python-backend model (ONNX Runtime, fp32, 2 threads);
- a bounded closed-loop client: ``concurrency`` threads, each with its own tritonclient, send one
  query per request and wait for the answer, until a fixed number of requests is done; per cell
  throughput (queries/s) and client-side p50/p99 latency, plus the server's own statistics
  (requests per execution = mean batch size, queue and compute time per request);
- the floor: ``SpellCorrector`` in this process on the same export and threads — batch 1 for
  latency, ``correct(32 queries)`` for throughput;
- an ``echo`` python-backend model (string in, string out, no work) on the batching server: the
  cost of one python-backend hop, the price an ensemble (tokenize -> model -> detokenize) would pay
  twice more per request, next to what tokenization costs in-process.

Cells are interleaved within each repeat and figures are medians over repeats (the machine is
shared: the load average is recorded). Writes benchmarks/results/serve_load.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spellfix.export.triton import write_repository  # noqa: E402
from spellfix.inference import SpellCorrector  # noqa: E402
from spellfix.serving.env import resolve_install  # noqa: E402
from spellfix.serving.server import TritonServer, free_ports  # noqa: E402

MODEL = "spellfix"
ECHO = "echo"
CONCURRENCY = (1, 8, 32)
PROTOCOLS = ("http", "grpc")
THREADS = 2
#: the server model's engine settings (TritonOptions defaults: no thread spinning), used for the floor too
ENGINE_OPTIONS = {"intra_op_num_threads": THREADS, "session_options": {"config:session.intra_op.allow_spinning": "0"}}
WORK = REPO / "runs" / "serve_load"
RESULTS = REPO / "benchmarks" / "results"

ECHO_CONFIG = """name: "echo"
backend: "python"
max_batch_size: 32
input [ { name: "QUERY" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "CORRECTION" data_type: TYPE_STRING dims: [ 1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 0 }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""
ECHO_MODEL = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("CORRECTION", pb_utils.get_input_tensor_by_name(r, "QUERY").as_numpy())]) for r in requests]
"""


# ------------------------------------------------------------------------------ model


def prepare_export(model: str) -> Path:
    """An export dir: ``model`` as given, or exported first (cached in runs/serve_load/) when it
    is a model dir or a shipped model's name (default: the shipped, calibrated spell-small-cpu)."""
    from spellfix.inference import layout
    from spellfix.modeling import resolve_model_dir

    if layout.is_export_dir(model):
        return Path(model)
    import hashlib

    model_dir = Path(resolve_model_dir(model))
    settings = hashlib.sha256((model_dir / "spellfix.json").read_bytes()).hexdigest()[:12]  # a re-calibrated rule: a new export
    export_dir = WORK / f"exp-{model_dir.name}-{settings}"
    if layout.is_export_dir(export_dir):
        return export_dir
    from spellfix.export import export

    print(f"exporting {model_dir} -> {export_dir}", file=sys.stderr, flush=True)
    export(model_dir, export_dir, formats=["onnx"])
    return export_dir


def load_queries(n: int) -> list[str]:
    rows = [json.loads(line) for line in (REPO / "data" / "dev.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["query"] for r in rows[:n]]


# ------------------------------------------------------------------------------ clients


@dataclass
class Cell:
    name: str
    kind: str  # in-process | triton | echo
    protocol: str | None
    dynamic_batching: bool | None
    concurrency: int


def _client_factory(protocol: str, url: str) -> Callable[[], Any]:
    if protocol == "http":
        import tritonclient.http as module

        return lambda: module.InferenceServerClient(url, concurrency=1, network_timeout=120)
    import tritonclient.grpc as module

    return lambda: module.InferenceServerClient(url)


def _infer_fn(protocol: str, client: Any, model: str) -> Callable[[str], str]:
    module = __import__(f"tritonclient.{protocol}", fromlist=["InferInput"])

    def infer(query: str) -> str:
        value = module.InferInput("QUERY", [1, 1], "BYTES")
        value.set_data_from_numpy(np.array([[query.encode("utf-8")]], dtype=np.object_))
        return client.infer(model, [value]).as_numpy("CORRECTION")[0, 0].decode("utf-8")

    infer.close = client.close  # type: ignore[attr-defined]
    return infer


def closed_loop(make_infer: Callable[[], Callable[[str], str]], queries: list[str], concurrency: int, requests: int) -> dict[str, Any]:
    """``concurrency`` workers send ``requests`` single-query requests in total, each waiting for
    its answer before the next; returns throughput and latency percentiles."""
    infers = [make_infer() for _ in range(concurrency)]
    lock = threading.Lock()
    next_ticket = [0]
    latencies: list[float] = []
    errors: list[BaseException] = []
    start_barrier = threading.Barrier(concurrency + 1)

    def worker(infer: Callable[[str], str]) -> None:
        start_barrier.wait()
        while True:
            with lock:
                ticket = next_ticket[0]
                next_ticket[0] += 1
            if ticket >= requests:
                return
            t0 = time.perf_counter()
            try:
                infer(queries[ticket % len(queries)])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=worker, args=(infer,), daemon=True) for infer in infers]
    for thread in threads:
        thread.start()
    start_barrier.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join(timeout=600)
    wall = time.perf_counter() - t0
    for infer in infers:
        getattr(infer, "close", lambda: None)()
    if errors:
        raise RuntimeError(f"{len(errors)} request(s) failed: {errors[0]!r}")
    if len(latencies) != requests:
        raise RuntimeError(f"only {len(latencies)} of {requests} requests finished within the time limit")
    ms = np.array(latencies) * 1000
    return {"queries_per_s": requests / wall, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "wall_s": wall}


def in_process(corrector: SpellCorrector, queries: list[str], concurrency: int, requests: int) -> dict[str, Any]:
    """The floor: batch-1 calls (concurrency 1) or ``correct`` on ``concurrency`` queries at a time."""
    latencies = []
    t0 = time.perf_counter()
    for start in range(0, requests, concurrency):
        batch = [queries[(start + k) % len(queries)] for k in range(min(concurrency, requests - start))]
        t1 = time.perf_counter()
        corrector.correct(batch)
        latencies += [time.perf_counter() - t1] * len(batch)
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {"queries_per_s": requests / wall, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "wall_s": wall}


def paired_latency(corrector: SpellCorrector, servers: dict[str, TritonServer], queries: list[str], count: int) -> dict[str, list[float]]:
    """Concurrency 1, side by side per query: in-process, then HTTP, then gRPC (batching server).

    On a shared machine the load drifts by the second; taking the three calls back to back per
    query and comparing medians (and the median of paired differences) cancels most of that drift.
    """
    server = servers["on"]
    http = _infer_fn("http", _client_factory("http", server.http_url)(), MODEL)
    grpc = _infer_fn("grpc", _client_factory("grpc", server.grpc_url)(), MODEL)
    times: dict[str, list[float]] = {"in-process": [], "http": [], "grpc": []}
    try:
        for i in range(count):
            query = queries[i % len(queries)]
            for name, call in (("in-process", lambda: corrector.correct([query])), ("http", lambda: http(query)), ("grpc", lambda: grpc(query))):
                t0 = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - t0) * 1000)
    finally:
        http.close()  # type: ignore[attr-defined]
        grpc.close()  # type: ignore[attr-defined]
    return times


def server_stats(server: TritonServer, model: str) -> dict[str, float]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url)
    try:
        stats = next(s for s in client.get_inference_statistics(model)["model_stats"] if s["name"] == model)
    finally:
        client.close()
    inference = stats["inference_stats"]
    return {
        "inferences": float(stats["inference_count"]),
        "executions": float(stats["execution_count"]),
        "queue_ns": float(inference["queue"]["ns"]),
        "compute_ns": float(inference["compute_input"]["ns"] + inference["compute_infer"]["ns"] + inference["compute_output"]["ns"]),
    }


# ------------------------------------------------------------------------------ the run


def tokenization_cost_ms(corrector: SpellCorrector, queries: list[str], repeats: int = 5) -> float:
    """In-process cost per query of what an ensemble would move out: normalise+tokenize and detokenize."""
    ids = corrector.generate_ids(queries)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for query, generated in zip(queries, ids):
            corrector.tokenizer.encode_ids(corrector.encoder_texts([query]))
            corrector.tokenizer.decode([generated])
        best = min(best, (time.perf_counter() - t0) / len(queries))
    return best * 1000


def write_repositories(export_dir: Path) -> dict[str, Path]:
    common = {"max_batch_size": 32, "intra_op_threads": THREADS, "instance_count": 1, "kind": "KIND_CPU"}
    repos = {
        "on": write_repository(export_dir, WORK / "repos" / "batching-on", {**common, "dynamic_batching": True, "max_queue_delay_us": 0}),
        "off": write_repository(export_dir, WORK / "repos" / "batching-off", {**common, "dynamic_batching": False}),
    }
    echo = repos["on"] / ECHO
    (echo / "1").mkdir(parents=True, exist_ok=True)
    (echo / "config.pbtxt").write_text(ECHO_CONFIG, encoding="utf-8")
    (echo / "1" / "model.py").write_text(ECHO_MODEL, encoding="utf-8")
    return repos


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("queries_per_s", "p50_ms", "p99_ms")
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 3) for k in keys}
    out["queries_per_s_runs"] = [round(r["queries_per_s"], 2) for r in runs]
    out["p50_ms_runs"] = [round(r["p50_ms"], 3) for r in runs]
    for key in ("requests_per_execution", "server_queue_ms", "server_compute_ms"):
        if key in runs[0]:
            out[key] = round(statistics.median(r[key] for r in runs), 3)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    export_dir = prepare_export(args.model)
    queries = load_queries(256)
    corrector = SpellCorrector(export_dir, backend="onnxruntime", batch_size=32, backend_options=ENGINE_OPTIONS)
    repos = write_repositories(export_dir)
    install = resolve_install()
    servers: dict[str, TritonServer] = {}
    load_before = os.getloadavg()
    cells = [Cell(f"in-process SpellCorrector c={c}", "in-process", None, None, c) for c in CONCURRENCY]
    cells += [Cell(f"triton {p} batching={b} c={c}", "triton", p, b == "on", c) for b in ("on", "off") for p in PROTOCOLS for c in CONCURRENCY]
    cells += [Cell(f"echo hop {p} c=1", "echo", p, True, 1) for p in PROTOCOLS]
    results: dict[str, list[dict[str, Any]]] = {cell.name: [] for cell in cells}
    try:
        for mode, repository in repos.items():
            http, grpc, metrics = free_ports(3)
            servers[mode] = TritonServer(install, repository, http_port=http, grpc_port=grpc, metrics_port=metrics, log_path=WORK / f"tritonserver-{mode}.log", exit_timeout_s=3)
            servers[mode].start()
        for server in servers.values():
            server.wait_ready(180)
        for server in servers.values():  # warm-up: sessions, allocator, connections
            closed_loop(lambda s=server: _infer_fn("http", _client_factory("http", s.http_url)(), MODEL), queries, 8, 64)
        in_process(corrector, queries, 1, 16)
        paired: dict[str, list[float]] = {"in-process": [], "http": [], "grpc": []}
        for repeat in range(args.repeats):
            for name, values in paired_latency(corrector, servers, queries, args.requests).items():
                paired[name] += values
            print(f"[{repeat + 1}/{args.repeats}] paired c=1 p50 ms: " + ", ".join(f"{k} {np.median(v):.2f}" for k, v in paired.items()), file=sys.stderr, flush=True)
            order = cells if repeat % 2 == 0 else list(reversed(cells))
            for cell in order:
                count = args.requests
                if cell.kind == "in-process":
                    figures = in_process(corrector, queries, cell.concurrency, count)
                else:
                    server = servers["on" if cell.dynamic_batching else "off"]
                    model = ECHO if cell.kind == "echo" else MODEL
                    url = server.http_url if cell.protocol == "http" else server.grpc_url
                    factory = _client_factory(cell.protocol, url)
                    before = server_stats(server, model)
                    figures = closed_loop(lambda: _infer_fn(cell.protocol, factory(), model), queries, cell.concurrency, count)
                    after = server_stats(server, model)
                    done = after["inferences"] - before["inferences"]
                    figures["requests_per_execution"] = done / max(1.0, after["executions"] - before["executions"])
                    figures["server_queue_ms"] = (after["queue_ns"] - before["queue_ns"]) / max(1.0, done) / 1e6
                    figures["server_compute_ms"] = (after["compute_ns"] - before["compute_ns"]) / max(1.0, done) / 1e6
                results[cell.name].append(figures)
                print(f"[{repeat + 1}/{args.repeats}] {cell.name}: {figures['queries_per_s']:.1f} q/s, p50 {figures['p50_ms']:.2f} ms", file=sys.stderr, flush=True)
    finally:
        for server in servers.values():
            server.stop()
    load_after = os.getloadavg()

    entries = []
    for cell in cells:
        entry = {"name": cell.name, "kind": cell.kind, "protocol": cell.protocol, "dynamic_batching": cell.dynamic_batching, "concurrency": cell.concurrency, "requests": args.requests}
        entry.update(summarize(results[cell.name]))
        entries.append(entry)
    by_name = {e["name"]: e for e in entries}
    floor = np.array(paired["in-process"])
    paired_summary = {name: {"p50_ms": round(float(np.median(v)), 3), "p99_ms": round(float(np.percentile(v, 99)), 3), "n": len(v)} for name, v in paired.items()}
    acceptance: dict[str, Any] = {}
    for protocol in PROTOCOLS:
        c1, c32 = by_name[f"triton {protocol} batching=on c=1"], by_name[f"triton {protocol} batching=on c=32"]
        ratio = c32["queries_per_s"] / c1["queries_per_s"]
        overhead = paired_summary[protocol]["p50_ms"] - paired_summary["in-process"]["p50_ms"]
        acceptance[protocol] = {
            "throughput_c32_over_c1": round(ratio, 2),
            "p50_overhead_ms_c1": round(overhead, 3),
            "median_paired_difference_ms_c1": round(float(np.median(np.array(paired[protocol]) - floor)), 3),
            "pass": ratio >= 3.0 and overhead <= 2.0,
        }
    manifest = json.loads((export_dir / "manifest.json").read_text())
    return {
        "benchmark": "serve_load",
        "entries": entries,
        "acceptance": {"criteria": "batching on: queries/s at c=32 >= 3x c=1 (closed loop); server p50 at c=1 <= in-process p50 + 2 ms (paired)", **acceptance},
        "paired_c1": paired_summary,
        "ensemble_evidence": {
            "tokenize_detokenize_ms_per_query": round(tokenization_cost_ms(corrector, queries[:64]), 4),
            "echo_hop_p50_ms": {p: by_name[f"echo hop {p} c=1"]["p50_ms"] for p in PROTOCOLS},
        },
        "model": {**manifest.get("model", {}), "export": str(export_dir), "source": manifest.get("source")},
        "setup": {"instances": 1, "kind": "KIND_CPU", "onnxruntime_threads": THREADS, "max_batch_size": 32, "max_queue_delay_us": 0, "repeats": args.repeats, "requests_per_cell": args.requests},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(), "load_avg_before": [round(x, 2) for x in load_before], "load_avg_after": [round(x, 2) for x in load_after]},
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    import importlib.metadata

    out = {"python": platform.python_version()}
    for dist in ("spellfix", "onnxruntime", "tokenizers", "numpy", "tritonclient"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    out["tritonserver"] = "2.51 (nvidia-pytriton 0.7.0)"
    return out


def markdown(report: dict[str, Any]) -> str:
    model = report["model"]
    setup = report["setup"]
    machine = report["machine"]
    lines = [
        "# Serving load: Triton (python backend) vs in-process SpellCorrector",
        "",
        f"Model: {model.get('architecture')} d_model {model.get('d_model')}, {model.get('encoder_layers')}+{model.get('decoder_layers')} layers, "
        f"vocab {model.get('vocab_size')} ({model.get('parameters', 0) / 1e6:.1f} M params), ONNX Runtime fp32, greedy. "
        f"One CPU instance, {setup['onnxruntime_threads']} ORT threads (no spinning, in-process the same), max_batch_size {setup['max_batch_size']}, max queue delay {setup['max_queue_delay_us']} µs. "
        f"Closed loop: {setup['requests_per_cell']} single-query requests per cell, medians over {setup['repeats']} interleaved repeats; "
        f"client and server share the machine's {machine['cpus']} cores. Load average before/after: "
        f"{machine['load_avg_before'][0]} / {machine['load_avg_after'][0]}.",
        "",
        "| condition | queries/s | p50 ms | p99 ms | requests / execution | server queue ms | server compute ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in report["entries"]:
        def fmt(key: str, digits: int = 2) -> str:
            return f"{e[key]:.{digits}f}" if key in e else "–"

        lines.append(f"| {e['name']} | {fmt('queries_per_s', 1)} | {fmt('p50_ms')} | {fmt('p99_ms')} | {fmt('requests_per_execution', 1)} | {fmt('server_queue_ms')} | {fmt('server_compute_ms')} |")
    lines += ["", "Concurrency 1, paired (in-process, HTTP, gRPC back to back per query, same queries):", "",
              "| path | p50 ms | p99 ms | n |", "|---|---|---|---|"]
    for name, figures in report["paired_c1"].items():
        lines.append(f"| {name} | {figures['p50_ms']:.2f} | {figures['p99_ms']:.2f} | {figures['n']} |")
    lines += ["", "**Acceptance** (" + report["acceptance"]["criteria"] + "):", ""]
    for protocol in PROTOCOLS:
        a = report["acceptance"][protocol]
        lines.append(
            f"- {protocol}: c=32 / c=1 throughput {a['throughput_c32_over_c1']:.2f}x, p50 overhead at c=1 {a['p50_overhead_ms_c1']:+.2f} ms "
            f"(median paired difference {a['median_paired_difference_ms_c1']:+.2f} ms) -> **{'PASS' if a['pass'] else 'FAIL'}**"
        )
    ev = report["ensemble_evidence"]
    lines += [
        "",
        f"Ensemble (tokenize / model / detokenize as separate models): tokenization + detokenization cost "
        f"{ev['tokenize_detokenize_ms_per_query']:.3f} ms per query in-process, while one python-backend hop costs "
        f"{ev['echo_hop_p50_ms']['http']:.2f} ms (HTTP) / {ev['echo_hop_p50_ms']['grpc']:.2f} ms (gRPC) p50 end to end. An ensemble adds "
        "two hops per request to move work that is a small fraction of one hop, so it is not shipped.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="spell-small-cpu", help="export dir, or model dir / shipped model name (exported first, cached in runs/serve_load/); default: the shipped spell-small-cpu with its calibrated rule")
    parser.add_argument("--requests", type=int, default=192, help="requests per cell")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="64 requests, 1 repeat")
    parser.add_argument("--out", default=str(RESULTS), help="directory for serve_load.json/.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.repeats = 64, 1

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):  # the finally in run() stops the servers
        signal.signal(sig, interrupt)
    report = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("serve_load.json", json.dumps(report, indent=2) + "\n"), ("serve_load.md", markdown(report))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)
    print(markdown(report))
    return 0 if all(report["acceptance"][p]["pass"] for p in PROTOCOLS) else 1


if __name__ == "__main__":
    sys.exit(main())
