"""Start a real ``tritonserver`` on 127.0.0.1 for a model repository, wait for it, stop it.

    with TritonServer(resolve_install(), "exp/triton", http_port=8000) as server:
        server.wait_ready(timeout=120)
        ...  # tritonclient against server.http_url / server.grpc_url

The server runs in its own session (process group), so stopping it reaches its python-backend stub
processes too: SIGTERM to the group (Triton drains in-flight requests and unloads models), then,
if it has not exited after ``stop_timeout`` seconds, SIGKILL to the group — by PID, never by name.
Readiness is polled on ``/v2/health/ready`` (strict readiness: every model loaded); when the process
exits or the timeout passes first, the error carries the tail of the server log. A stub that cannot
start makes model loading hang rather than fail (STACK.md), hence the timeout.

``spellfix serve`` is ``run(args)``: start, print the endpoints, serve until Ctrl-C / SIGTERM, stop.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any, Sequence

from spellfix.serving.env import TritonEnvError, TritonInstall, resolve_install

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_READY_TIMEOUT_S = 180.0
DEFAULT_STOP_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 25
EXTRA_ARGS_VARIABLE = "SPELLFIX_TRITON_ARGS"  # extra tritonserver arguments for `spellfix serve`


class ServerError(RuntimeError):
    """tritonserver did not become ready (or could not start); the message holds its log tail."""


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct ports free on ``host`` right now (bound to port 0, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class TritonServer:
    """One ``tritonserver`` process serving ``model_repository`` on ``host`` (loopback by default).

    Ports: ``http_port`` (default 8000), ``grpc_port`` (default HTTP + 1), ``metrics_port`` (default
    HTTP + 2). Its output goes to ``log_path`` (default: a temp file, kept after stop for reading).
    ``exit_timeout_s`` is Triton's own drain time after SIGTERM; ``stop_timeout_s`` how long ``stop``
    waits for the exit before SIGKILL.
    """

    def __init__(
        self,
        install: TritonInstall,
        model_repository: str | Path,
        *,
        host: str = LOOPBACK,
        http_port: int = 8000,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        log_path: str | Path | None = None,
        log_verbose: int = 0,
        exit_timeout_s: int = 10,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
        extra_args: Sequence[str] = (),
    ):
        self.install = install
        self.model_repository = Path(model_repository).absolute()
        if not self.model_repository.is_dir():
            raise FileNotFoundError(f"{model_repository}: model repository not found; write one with `spellfix export --format triton`")
        explicit = any(a.startswith("--model-control-mode") for a in extra_args)  # models loaded later via the API
        if not explicit and not any((p / "config.pbtxt").is_file() for p in self.model_repository.iterdir()):
            raise FileNotFoundError(f"{model_repository}: no <model>/config.pbtxt inside; is this a Triton model repository?")
        self.host = host
        self.http_port = http_port
        self.grpc_port = grpc_port if grpc_port is not None else http_port + 1
        self.metrics_port = metrics_port if metrics_port is not None else http_port + 2
        if log_path is None:
            handle, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(handle)
            log_path = name
        self.log_path = Path(log_path)
        self.log_verbose = log_verbose
        self.exit_timeout_s = exit_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ endpoints

    @property
    def http_url(self) -> str:
        """``host:port`` as tritonclient.http wants it."""
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        return [
            str(self.install.server),
            "--model-repository", str(self.model_repository),
            "--backend-directory", str(self.install.backend_dir),
            "--http-address", self.host, "--http-port", str(self.http_port),
            "--grpc-address", self.host, "--grpc-port", str(self.grpc_port),
            "--metrics-address", self.host, "--metrics-port", str(self.metrics_port),
            "--allow-gpu-metrics", "false",
            "--strict-readiness", "true",
            "--exit-on-error", "true",
            "--exit-timeout-secs", str(self.exit_timeout_s),
            "--log-verbose", str(self.log_verbose),
            *self.extra_args,
        ]  # fmt: skip

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "TritonServer":
        if self.process is not None:
            raise RuntimeError("server already started")
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.install.environment(),
                start_new_session=True,  # own process group: stop() reaches the stub processes too
            )
        log.debug("started tritonserver pid %d (log %s)", self.process.pid, self.log_path)
        return self

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT_S) -> None:
        """Return when every model is loaded; raise ServerError (server killed) otherwise."""
        if self.process is None:
            raise RuntimeError("start() the server first")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.process.returncode} before it was ready:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.2)
        self.stop()
        raise ServerError(f"tritonserver was not ready within {timeout:.0f} s (stopped it):\n{self.log_tail()}")

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM the server's process group, SIGKILL it after ``timeout`` s (default: the
        constructor's ``stop_timeout_s``); return the exit code."""
        timeout = self.stop_timeout_s if timeout is None else timeout
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            self._signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver pid %d did not exit %.0f s after SIGTERM; killing it", process.pid, timeout)
                self._signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        self._signal_group(process.pid, signal.SIGKILL)  # stub processes that outlived the server
        return process.returncode

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ------------------------------------------------------------------------------ spellfix serve


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def run(args: argparse.Namespace) -> int:
    """``spellfix serve --model-repository D [--port P] [--host H]``: serve until Ctrl-C or SIGTERM.

    Optional attributes (``--triton-env``, ``--tritonserver``, ``--ready-timeout``, ``--log-file``,
    ``--triton-args``) fall back to ``$SPELLFIX_TRITON_ENV`` / ``$SPELLFIX_TRITONSERVER`` /
    ``$SPELLFIX_TRITON_ARGS`` and the defaults.
    Returns 0 after a clean stop, 1 when the server died on its own, 2 on a start-up error.
    """
    host = getattr(args, "host", None) or LOOPBACK
    if host not in (LOOPBACK, "localhost", "::1"):
        log.warning("binding Triton to %s: reachable from other machines (the default is %s)", host, LOOPBACK)
    try:
        install = resolve_install(env_dir=getattr(args, "triton_env", None), server=getattr(args, "tritonserver", None))
        server = TritonServer(
            install,
            args.model_repository,
            host=host,
            http_port=int(getattr(args, "port", None) or 8000),
            log_path=getattr(args, "log_file", None),
            extra_args=shlex.split(getattr(args, "triton_args", None) or os.environ.get(EXTRA_ARGS_VARIABLE, "")),
        )
    except (TritonEnvError, FileNotFoundError) as exc:
        print(f"spellfix: error: {exc}", file=sys.stderr)
        return 2
    # Our own handlers for both: a shell starts background jobs with SIGINT ignored, and Python keeps
    # an inherited "ignore" — `kill -INT` must still stop the server cleanly.
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print(f"starting tritonserver (pid {server.pid}, log {server.log_path}) ...", file=sys.stderr, flush=True)
        server.wait_ready(float(getattr(args, "ready_timeout", None) or DEFAULT_READY_TIMEOUT_S))
        print(json.dumps({"http": f"http://{server.http_url}", "grpc": server.grpc_url, "metrics": f"http://{host}:{server.metrics_port}/metrics", "pid": server.pid, "log": str(server.log_path)}), flush=True)
        print("serving; Ctrl-C to stop", file=sys.stderr, flush=True)
        assert server.process is not None
        while server.process.poll() is None:
            time.sleep(0.5)
        print(f"spellfix: error: tritonserver exited on its own (code {server.process.returncode}):\n{server.log_tail()}", file=sys.stderr)
        return 1
    except ServerError as exc:
        print(f"spellfix: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Stop):
        print("stopping tritonserver ...", file=sys.stderr, flush=True)
        return 0
    finally:
        for sig in previous:  # a second Ctrl-C must not interrupt the shutdown half-way
            signal.signal(sig, signal.SIG_IGN)
        try:
            server.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
