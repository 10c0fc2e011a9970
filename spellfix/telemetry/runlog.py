"""Reading a run's logs back: ``metrics.jsonl`` rows and ``device.jsonl`` samples.

Used by the report. Reading is forgiving about the one thing that happens in real life — a run
killed mid-write leaves a torn last line — and strict about everything else (a clear error
naming the file and line).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .logger import DEVICE_FILE, METRICS_FILE

log = logging.getLogger(__name__)


@dataclass
class RunLog:
    """The logs of one run. ``samples`` are raw device readings (may be empty for old runs)."""

    label: str
    logdir: Path
    rows: list[dict[str, Any]]
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def start_time(self) -> float:
        times = [r["time"] for r in self.rows if isinstance(r.get("time"), (int, float))]
        times += [s["time"] for s in self.samples if isinstance(s.get("time"), (int, float))]
        return min(times) if times else 0.0

    def series(self, key: str) -> tuple[list[float], list[float], list[int]]:
        """(times, values, steps) of rows that have a numeric *key*."""
        times, values, steps = [], [], []
        for row in self.rows:
            value = row.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                times.append(float(row.get("time", 0.0)))
                values.append(float(value))
                steps.append(int(row.get("step", 0)))
        return times, values, steps

    def process_cpu_series(self) -> tuple[list[float], list[float]]:
        """This process's CPU use over time (``proc_util``), when the CPU sampler logged it."""
        if self.samples:
            pairs = [(float(s["time"]), float(s["proc_util"])) for s in self.samples
                     if s.get("device") == "cpu" and isinstance(s.get("proc_util"), (int, float))]
            return [t for t, _ in pairs], [v for _, v in pairs]
        times, values, _ = self.series("cpu/proc_util")
        return times, values

    def device_series(self) -> dict[str, tuple[list[float], list[float]]]:
        """Utilization over time per device label (``gpu 0``, ``gpu 1``, ``cpu``).

        From raw samples when ``device.jsonl`` exists, else from the per-log-step means in the
        metrics rows (coarser, but present in every run).
        """
        out: dict[str, tuple[list[float], list[float]]] = {}
        if self.samples:
            for sample in self.samples:
                util = sample.get("util")
                if not isinstance(util, (int, float)):
                    continue
                name = "cpu" if sample.get("device") == "cpu" else f"gpu {sample.get('index', 0)}"
                times, values = out.setdefault(name, ([], []))
                times.append(float(sample["time"]))
                values.append(float(util))
            return out
        for key in sorted({k for row in self.rows for k in row if k == "cpu/util" or _is_gpu_util(k)},
                          key=_device_sort_key):
            times, values, _ = self.series(key)
            out["cpu" if key == "cpu/util" else f"gpu {key.split('/')[1]}"] = (times, values)
        return out

    @property
    def device_kind(self) -> str:
        """"gpu" when any GPU was sampled, "cpu" when only the CPU twin was, "" when nothing."""
        names = self.device_series().keys()
        if any(n.startswith("gpu") for n in names):
            return "gpu"
        return "cpu" if names else ""


def _is_gpu_util(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 3 and parts[0] == "gpu" and parts[2] == "util" and parts[1].isdigit()


def _device_sort_key(key: str) -> tuple[int, int]:
    return (1, 0) if key == "cpu/util" else (0, int(key.split("/")[1]))


def resolve_logdir(path: Path) -> Path:
    """A training output dir (``OUT/logs/metrics.jsonl``) or the logs dir itself."""
    path = Path(path)
    for candidate in (path / "logs", path):
        if (candidate / METRICS_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"no {METRICS_FILE} in {path} or {path / 'logs'}: pass a training output dir or its logs dir"
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file. A torn last line is skipped with a warning; bad lines elsewhere
    raise ValueError naming file and line."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                log.warning("%s:%d: skipping torn last line (run interrupted while writing?)", path, number)
                continue
            raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def load_run(path: Path, label: str | None = None) -> RunLog:
    """Load one run's logs; the label defaults to the run directory's name."""
    logdir = resolve_logdir(path)
    rows = read_jsonl(logdir / METRICS_FILE)
    if not rows:
        raise ValueError(f"{logdir / METRICS_FILE} has no rows: did the run reach its first log step?")
    device_file = logdir / DEVICE_FILE
    samples = read_jsonl(device_file) if device_file.is_file() else []
    if label is None:
        run_dir = logdir.parent if logdir.name == "logs" else logdir
        label = run_dir.resolve().name
    return RunLog(label=label, logdir=logdir, rows=rows, samples=samples)
