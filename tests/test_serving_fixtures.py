"""Helpers (no tests) for test_serving*.py: the Triton env, one tiny trained export, running servers.

The export (train a 1+1-layer model a few seconds, export ONNX + the pipeline's default Triton
repository) is the slow part, so it is made once per session and shared by the serving test modules
through ``tiny_export``'s cache. The Triton env (numpy<2, nvidia-pytriton — STACK.md) is created
by ``make triton-env`` when missing: about a minute with PyPI, once per checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from test_inference_fixtures import dev_pairs, train_tiny_model

REPO = Path(__file__).resolve().parents[1]
ENV_CREATE_TIMEOUT_S = 900
READY_TIMEOUT_S = 120

_exports: dict[Path, Path] = {}


def ensure_triton_env() -> Path:
    """``$SPELLFIX_TRITON_ENV`` or ``.venv-triton`` in the checkout, created by ``make triton-env`` if absent."""
    from spellfix.serving.env import ENV_VARIABLE, env_is_current

    if os.environ.get(ENV_VARIABLE):
        return Path(os.environ[ENV_VARIABLE])
    env_dir = REPO / ".venv-triton"
    if not env_is_current(env_dir):
        started = time.monotonic()
        result = subprocess.run(
            ["make", "--no-print-directory", "triton-env", f"PYTHON={sys.executable}"],
            cwd=REPO, capture_output=True, text=True, timeout=ENV_CREATE_TIMEOUT_S,
        )  # fmt: skip
        assert result.returncode == 0, f"`make triton-env` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        print(f"\ncreated {env_dir} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return env_dir


def tiny_export(base: Path) -> Path:
    """A tiny trained model exported with formats onnx + triton (once per session)."""
    if base not in _exports:
        import torch

        from spellfix.export import export

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny matmuls on a shared 2-core machine (STACK.md)
        try:
            model_dir = train_tiny_model(base / "model")
            export(model_dir, base / "exp", formats=["onnx", "triton"])
        finally:
            torch.set_num_threads(threads)
        _exports[base] = base / "exp"
    return _exports[base]


def serving_queries(n: int = 24) -> list[str]:
    """Queries the tiny model was trained on: its outputs differ in length and content."""
    return [q for q, _ in dev_pairs(n)]


@contextmanager
def running_server(repository: Path, log_path: Path) -> Iterator["object"]:
    """A real tritonserver on free loopback ports, always stopped (and its process group killed)."""
    from spellfix.serving.env import pytriton_install
    from spellfix.serving.server import TritonServer, free_ports

    http, grpc, metrics = free_ports(3)
    server = TritonServer(
        pytriton_install(ensure_triton_env()), repository,
        http_port=http, grpc_port=grpc, metrics_port=metrics, log_path=log_path, exit_timeout_s=3,
    )  # fmt: skip
    server.start()
    try:
        server.wait_ready(READY_TIMEOUT_S)
        yield server
    finally:
        server.stop(timeout=15)


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
