"""``correct_file``: a whole query log corrected into an output file, resumable, every row kept.

Why this shape: the driver only plans parts (one streamed scan), hands part descriptions to an
engine (local processes or Ray actors), writes each finished part atomically and shows a progress bar
in queries/s; re-running the same call after a crash skips the parts already written. Bad rows are
passed through unchanged (or, with ``rejects``, written there instead) and every one is reported as
``FILE:LINE: what`` in the summary.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spellfix.batch.formats import Layout, detect_format, plan_parts
from spellfix.batch.parts import JobDir
from spellfix.batch.worker import ModelSpec, PartResult

ENGINES = ("local", "ray")


@dataclass
class Summary:
    input: str
    output: str
    rows: int
    corrected: int
    changed: int
    bad: list[dict[str, Any]] = field(default_factory=list)
    resumed_parts: int = 0
    parts: int = 0
    rejects: str | None = None

    def lines(self) -> list[str]:
        """Each bad row as ``FILE:LINE: what``, then one summary line."""
        kinds = Counter(b["kind"] for b in self.bad)
        detail = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        where = f"written to {self.rejects}" if self.rejects else "passed through unchanged"
        resumed = f"; resumed: {self.resumed_parts} of {self.parts} parts were done" if self.resumed_parts else ""
        return [f"{b['where']}: {b['error']}" for b in self.bad] + [
            f"{self.input}: {self.rows} rows -> {self.output}: {self.corrected} corrected ({self.changed} changed), "
            f"{len(self.bad)} bad" + (f" ({detail}; {where})" if self.bad else "") + resumed
        ]


def correct_file(
    input: str | Path,
    output: str | Path,
    model: ModelSpec,
    *,
    fmt: str | None = None,
    column: str = "query",
    output_column: str = "correction",
    part_rows: int = 1000,
    max_chars: int = 256,
    rejects: str | Path | None = None,
    workers: int = 1,
    engine: str = "local",
    ray_address: str | None = None,
    progress: bool = True,
) -> Summary:
    """Correct every row of ``input`` into ``output`` (same format, correction added); resumable."""
    from tqdm import tqdm

    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    src, out = Path(input), Path(output)
    if src.resolve() == out.resolve():
        raise ValueError(f"--output must differ from --input ({src})")
    fmt = detect_format(src, fmt)
    if out.suffix.lower() != src.suffix.lower():
        raise ValueError(f"--output {out} must have the input's suffix {src.suffix!r}: the output is in the input's format")
    plan = plan_parts(src, fmt, column, part_rows)
    layout = Layout(str(src), fmt, column, output_column, max_chars, plan.header, keep_bad=rejects is None)
    stat = src.stat()
    fingerprint = {
        "input": str(src.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "layout": dataclasses.asdict(layout),
        "part_rows": part_rows, "model": dataclasses.asdict(model) | {"threads": None},
        "rejects": str(rejects) if rejects else None,
    }
    job = JobDir(out)
    done = job.open(fingerprint)
    todo = [p for p in plan.parts if p.index not in done]
    bar = tqdm(total=plan.n_rows, initial=sum(p.n_rows for p in plan.parts if p.index in done), unit="q", disable=not progress, desc="correct", dynamic_ncols=True)

    def write(result: PartResult) -> None:
        job.write(result.index, result.data, result.meta)
        bar.update(result.meta["rows"])

    try:
        if engine == "local":
            from spellfix.batch.local import run_local

            run_local(layout, model, todo, workers, write)
        else:
            from spellfix.batch.ray_engine import run_ray

            run_ray(layout, model, todo, workers, write, address=ray_address)
    finally:
        bar.close()
    metas = list(job.metas(len(plan.parts)))
    job.assemble(layout, len(plan.parts), Path(rejects) if rejects else None)
    return Summary(
        input=str(src), output=str(out), rows=sum(m["rows"] for m in metas), corrected=sum(m["corrected"] for m in metas),
        changed=sum(m["changed"] for m in metas), bad=[b for m in metas for b in m["bad"]],
        resumed_parts=len(done), parts=len(plan.parts), rejects=str(rejects) if rejects else None,
    )
