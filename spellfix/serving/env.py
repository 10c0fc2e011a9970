"""The Triton side's own Python environment, and where a ``tritonserver`` install lives.

Why a separate environment: the ``tritonserver`` 2.51 bundled in the ``nvidia-pytriton`` wheel runs
python-backend models in a stub process that embeds the Python it finds first on ``PATH``; with
numpy >= 2 there, every string (BYTES) request kills the stub (STACK.md). The training side needs
numpy 2, so the serving side gets a venv of its own — as in production, where Triton runs in its own
container — holding only the lean runtime: numpy < 2, tokenizers, onnxruntime, symspellpy, rapidfuzz, and the
``nvidia-pytriton`` wheel for its server binary, python backend and stubs (installed without its
dependencies: its client-side Python API is not used). No torch.

    python -m spellfix.serving.env create .venv-triton     # `make triton-env`; idempotent
    python -m spellfix.serving.env check .venv-triton

A stamp file inside the env records the requirements it was built from; ``create`` rebuilds the env
when they change and does nothing when they did not. The env is built in a temporary sibling dir and
renamed into place, under a lock, so an interrupted or concurrent build never leaves a half env.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

log = logging.getLogger(__name__)

#: what the python-backend model imports (spellfix.inference's lean runtime), numpy < 2 for the stub
RUNTIME_REQUIREMENTS = ("numpy>=1.24,<2", "tokenizers>=0.20", "onnxruntime>=1.18", "symspellpy>=6.7", "rapidfuzz>=3")
#: the wheel that carries tritonserver 2.51 + python backend + stubs; installed with --no-deps
PYTRITON_REQUIREMENT = "nvidia-pytriton==0.7.0"
DEFAULT_ENV_DIR = ".venv-triton"
ENV_VARIABLE = "SPELLFIX_TRITON_ENV"  # a Triton env dir
SERVER_VARIABLE = "SPELLFIX_TRITONSERVER"  # a user's own tritonserver binary
STAMP_FILE = "spellfix-triton-env.json"
BACKENDS_DIR = "spellfix-backends"  # the --backend-directory we assemble inside the env
STAMP_VERSION = 1


class TritonEnvError(RuntimeError):
    """The Triton environment or server install is missing or unusable; the message says what to run."""


@dataclass(frozen=True)
class TritonInstall:
    """Everything needed to start one ``tritonserver``: binary, backend dir and extra environment."""

    server: Path
    backend_dir: Path
    env: Mapping[str, str | None] = field(default_factory=dict)  # over os.environ; None removes a variable
    description: str = ""

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        merged = dict(os.environ if base is None else base)
        for key, value in self.env.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged


# ------------------------------------------------------------------------------ requirements


def requirements() -> dict[str, object]:
    """What a current env was built from (compared with the stamp to decide on a rebuild)."""
    return {
        "stamp_version": STAMP_VERSION,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "runtime": list(RUNTIME_REQUIREMENTS),
        "pytriton": PYTRITON_REQUIREMENT,
    }


def read_stamp(env_dir: Path) -> dict[str, object] | None:
    try:
        return json.loads((env_dir / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def env_is_current(env_dir: str | Path) -> bool:
    stamp = read_stamp(Path(env_dir))
    return stamp is not None and stamp.get("requirements") == requirements() and (Path(env_dir) / "bin" / "python").exists()


# ------------------------------------------------------------------------------ creation


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_path(env_dir: Path) -> Path:
    """A lock file outside the work tree (the env dir itself is replaced while building)."""
    key = hashlib.sha256(str(env_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"spellfix-triton-env-{key}.lock"


def _pip(python: Path, args: Sequence[str], timeout: float) -> None:
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", *args]
    log.info("running %s", " ".join(command))
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TritonEnvError(f"`{' '.join(command)}` did not finish within {timeout:.0f} s") from None
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise TritonEnvError(f"`{' '.join(command)}` failed (exit {result.returncode}):\n{tail}")


def _probe(python: Path) -> dict[str, str]:
    """Version and library dir of the env's Python: the stub needs that libpython on LD_LIBRARY_PATH."""
    code = (
        "import json, sys, sysconfig, numpy; print(json.dumps({'python': '%d.%d' % sys.version_info[:2], "
        "'libdir': sysconfig.get_config_var('LIBDIR') or '', 'numpy': numpy.__version__}))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(out)


def create_env(env_dir: str | Path = DEFAULT_ENV_DIR, *, python: str | Path = sys.executable, force: bool = False, timeout: float = 1200.0) -> Path:
    """Create (or keep, when current) the Triton environment at ``env_dir``; return its path.

    Needs PyPI (about a minute here). ``python`` is the interpreter the venv is made from: its
    version picks the python-backend stub (nvidia-pytriton 0.7 ships stubs for 3.8-3.13).
    """
    env_dir = Path(env_dir).absolute()
    with _lock(_lock_path(env_dir)):
        if not force and env_is_current(env_dir):
            log.info("%s is current", env_dir)
            return env_dir
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(dir=env_dir.parent, prefix=f"{env_dir.name}.tmp-"))
        try:
            subprocess.run([str(python), "-m", "venv", str(tmp)], check=True, timeout=300, capture_output=True)
            venv_python = tmp / "bin" / "python"
            _pip(venv_python, list(RUNTIME_REQUIREMENTS), timeout)
            _pip(venv_python, ["--no-deps", PYTRITON_REQUIREMENT], timeout)
            probe = _probe(venv_python)
            if not probe["numpy"].startswith("1."):
                raise TritonEnvError(f"{tmp}: got numpy {probe['numpy']}; the bundled python backend needs numpy < 2")
            _assemble_backends(_site_packages(tmp), tmp / BACKENDS_DIR, probe["python"])
            stamp = {"requirements": requirements(), "probe": probe, "seconds": round(time.monotonic() - started, 1)}
            (tmp / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
            if env_dir.exists():
                shutil.rmtree(env_dir)
            os.replace(tmp, env_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("created %s in %.0f s", env_dir, time.monotonic() - started)
    return env_dir


# ------------------------------------------------------------------------------ discovery


def _site_packages(env_dir: Path) -> Path:
    found = sorted((env_dir / "lib").glob("python3.*/site-packages"))
    if not found:
        raise TritonEnvError(f"{env_dir}: no lib/python3.*/site-packages; is it a venv? Recreate it with `make triton-env`")
    return found[-1]


def _assemble_backends(site_packages: Path, target: Path, python_version: str) -> None:
    """``target/python/`` = the wheel's python backend + the stub built for ``python_version``.

    tritonserver looks for ``triton_python_backend_stub`` next to ``libtriton_python.so``; the wheel
    keeps one stub per Python version elsewhere, so we assemble the backend dir once.
    """
    root = site_packages / "pytriton" / "tritonserver"
    stub = root / "python_backend_stubs" / python_version / "triton_python_backend_stub"
    if not stub.is_file():
        versions = sorted(p.name for p in (root / "python_backend_stubs").glob("*"))
        raise TritonEnvError(f"{root}: no python-backend stub for Python {python_version} (has {', '.join(versions) or 'none'})")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(root / "backends", tmp, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, tmp / "python" / stub.name)
    os.chmod(tmp / "python" / stub.name, 0o755)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def find_env(explicit: str | Path | None = None) -> Path | None:
    """The Triton env to use: ``explicit``, else ``$SPELLFIX_TRITON_ENV``, else ``./.venv-triton``,
    else ``.venv-triton`` at the root of the spellfix source checkout (editable installs)."""
    if explicit:
        return Path(explicit).absolute()
    if os.environ.get(ENV_VARIABLE):
        return Path(os.environ[ENV_VARIABLE]).absolute()
    for candidate in (Path.cwd() / DEFAULT_ENV_DIR, Path(__file__).resolve().parents[2] / DEFAULT_ENV_DIR):
        if (candidate / STAMP_FILE).is_file():
            return candidate
    return None


def pytriton_install(env_dir: str | Path) -> TritonInstall:
    """The ``tritonserver`` of the nvidia-pytriton wheel in the Triton env ``env_dir``."""
    env_dir = Path(env_dir).absolute()
    stamp = read_stamp(env_dir)
    if stamp is None:
        raise TritonEnvError(f"{env_dir}: not a Triton env made by spellfix (no {STAMP_FILE}); create it with `make triton-env`")
    site_packages = _site_packages(env_dir)
    server = site_packages / "pytriton" / "tritonserver" / "bin" / "tritonserver"
    if not server.is_file():
        raise TritonEnvError(f"{env_dir}: {server} is missing (nvidia-pytriton not installed); recreate it with `make triton-env`")
    probe = stamp.get("probe") or {}
    backend_dir = env_dir / BACKENDS_DIR
    if not (backend_dir / "python" / "triton_python_backend_stub").is_file():
        _assemble_backends(site_packages, backend_dir, str(probe.get("python", f"{sys.version_info.major}.{sys.version_info.minor}")))
    libs = [str(site_packages / "nvidia_pytriton.libs")]
    if probe.get("libdir"):
        libs.append(str(probe["libdir"]))  # pyenv's libpython first, or the stub fails (STACK.md)
    if os.environ.get("LD_LIBRARY_PATH"):
        libs.append(os.environ["LD_LIBRARY_PATH"])
    path = os.pathsep.join([str(env_dir / "bin"), os.environ.get("PATH", "/usr/bin:/bin")])
    env: dict[str, str | None] = {
        "LD_LIBRARY_PATH": os.pathsep.join(libs),
        "PATH": path,  # the stub's embedded Python finds the venv's python first -> the venv's packages
        "VIRTUAL_ENV": str(env_dir),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # leave the model repository (and the export's sha256s) untouched
        "TOKENIZERS_PARALLELISM": "false",
    }
    for variable in ("PYTHONPATH", "PYTHONHOME"):  # the main env's paths must not leak into the stub
        env[variable] = None
    return TritonInstall(server, backend_dir, env, f"nvidia-pytriton tritonserver in {env_dir}")


def own_install(server: str | Path, backend_dir: str | Path | None = None) -> TritonInstall:
    """A user's own ``tritonserver`` (e.g. /opt/tritonserver/bin/tritonserver in an NGC container);
    its backends default to ``<prefix>/backends``. Its Python must have the lean runtime installed."""
    server = Path(server)
    if not server.is_file() or not os.access(server, os.X_OK):
        raise TritonEnvError(f"{server}: not an executable tritonserver")
    backends = Path(backend_dir) if backend_dir else server.resolve().parent.parent / "backends"
    if not (backends / "python").is_dir():
        raise TritonEnvError(f"{backends}: no python backend there; pass the backend directory of {server}")
    return TritonInstall(server, backends, {}, f"tritonserver at {server}")


def resolve_install(*, env_dir: str | Path | None = None, server: str | Path | None = None) -> TritonInstall:
    """``server`` (or ``$SPELLFIX_TRITONSERVER``) wins; else the Triton env (see ``find_env``)."""
    server = server or os.environ.get(SERVER_VARIABLE)
    if server:
        return own_install(server)
    found = find_env(env_dir)
    if found is None:
        raise TritonEnvError(
            f"no Triton environment found (looked for ${ENV_VARIABLE}, ./{DEFAULT_ENV_DIR}); create one with "
            f"`make triton-env` (or `python -m spellfix.serving.env create {DEFAULT_ENV_DIR}`), or point "
            f"${SERVER_VARIABLE} at your own tritonserver"
        )
    return pytriton_install(found)


# ------------------------------------------------------------------------------ command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spellfix.serving.env", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("create", help="create the Triton env (no-op when current)")
    p.add_argument("env_dir", nargs="?", default=DEFAULT_ENV_DIR)
    p.add_argument("--force", action="store_true", help="rebuild even when current")
    p = sub.add_parser("check", help="exit 0 when the env is current")
    p.add_argument("env_dir", nargs="?", default=DEFAULT_ENV_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "check":
        current = env_is_current(args.env_dir)
        print(f"{args.env_dir}: {'current' if current else 'missing or stale; run `make triton-env`'}")
        return 0 if current else 1
    try:
        env_dir = create_env(args.env_dir, force=args.force)
    except (TritonEnvError, subprocess.SubprocessError) as exc:
        print(f"spellfix: error: {exc}", file=sys.stderr)
        return 2
    stamp = read_stamp(env_dir) or {}
    print(json.dumps({"env": str(env_dir), "build_seconds": stamp.get("seconds"), "probe": stamp.get("probe")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
