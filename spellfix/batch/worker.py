"""One model copy correcting whole parts: the unit of work both engines (processes, Ray actors) run.

Why a part is corrected in one ``SpellCorrector.correct`` call: the corrector sorts a call's queries by
length into batches, so a part's batches, and therefore its outputs, are the same whichever engine,
worker or run handles it; a resumed or distributed job writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from spellfix.batch.formats import Layout, PartSpec, Row, format_rows, read_part


@dataclass(frozen=True)
class ModelSpec:
    """How each worker builds its corrector (picklable: sent to processes and Ray actors)."""

    model: str
    backend: str = "torch"
    precision: str = "fp32"
    batch_size: int = 32
    threads: int = 1
    corrector_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PartResult:
    index: int
    data: bytes
    meta: dict[str, Any]


def load_corrector(spec: ModelSpec) -> Any:
    """A ``SpellCorrector`` using ``spec.threads`` threads (over-long queries raise, to be reported)."""
    from spellfix.inference import SpellCorrector

    options: dict[str, Any] = {}
    if spec.backend == "torch":
        import torch

        torch.set_num_threads(spec.threads)
    elif spec.backend == "onnxruntime":
        options["intra_op_num_threads"] = spec.threads
    return SpellCorrector(
        spec.model, backend=spec.backend, precision=spec.precision, batch_size=spec.batch_size, backend_options=options,
        on_overlong="error", **spec.corrector_options,
    )


def correct_part(corrector: Any, layout: Layout, spec: PartSpec) -> PartResult:
    """Read, validate, correct and format one part; the meta records its counts and bad rows."""
    from spellfix.inference import OverlongQueryError
    from spellfix.inference.text import normalize_query

    rows = read_part(layout, spec)
    if len(rows) != spec.n_rows:
        raise RuntimeError(f"{layout.path}: part {spec.index} has {len(rows)} rows, planned {spec.n_rows}: the file changed during the job")
    good = [r for r in rows if r.problem is None]
    try:
        fixes = corrector.correct([r.query for r in good])
    except OverlongQueryError:  # rare: find the rows the model cannot take, one by one
        fixes = [_one(corrector, r, OverlongQueryError) for r in good]
    for row, fix in zip(good, fixes):
        row.correction = fix
    bad = [r for r in rows if r.problem is not None]
    changed = sum(1 for r in good if r.correction is not None and r.correction != normalize_query(r.query or ""))
    meta = {
        "index": spec.index, "rows": len(rows), "corrected": sum(r.correction is not None for r in good), "changed": changed,
        "bad": [_bad_entry(layout, r) for r in bad],
    }
    return PartResult(spec.index, format_rows(layout, rows), meta)


def _one(corrector: Any, row: Row, overlong: type[Exception]) -> str | None:
    try:
        return corrector.correct([row.query])[0]
    except overlong as exc:
        row.kind, row.problem = "too-long", f"too long for the model: {exc}"
        return None


def _bad_entry(layout: Layout, row: Row) -> dict[str, Any]:
    return {
        "line": row.line, "kind": row.kind, "where": row.location(layout), "error": row.problem,
        "raw": row.raw.decode("utf-8", "backslashreplace") if row.raw else json_safe(row.fields),
    }


def json_safe(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def exit_with_parent(parent_pid: int, interval_s: float = 1.0) -> None:
    """Exit this worker when the driver dies (e.g. ``kill -9``): no orphan keeps a core busy."""
    import threading
    import time

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(interval_s)

    threading.Thread(target=watch, name="spellfix-parent-watch", daemon=True).start()
