"""The local engine: one model copy per worker process (``--workers N``), or in this process for 1.

Why processes, not threads: the decoding loop holds the GIL between small matrix products, so one
process per core with its own model copy and ``threads`` intra-op threads is what scales (the seed's
batch job ran one model copy per accelerator core). Processes are spawned (not forked) so a worker
never inherits a half-initialised OpenMP or tokenizer state; at most two parts per worker are in
flight, which bounds memory whatever the file's size.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Sequence

from spellfix.batch.formats import Layout, PartSpec
from spellfix.batch.worker import ModelSpec, PartResult, correct_part, exit_with_parent, load_corrector

_corrector: Any = None  # the worker process's model copy
_layout: Layout | None = None


def _init(model: ModelSpec, layout: Layout, parent_pid: int) -> None:
    global _corrector, _layout
    exit_with_parent(parent_pid)
    _corrector, _layout = load_corrector(model), layout


def _run(spec: PartSpec) -> PartResult:
    assert _layout is not None
    return correct_part(_corrector, _layout, spec)


def run_local(
    layout: Layout, model: ModelSpec, todo: Sequence[PartSpec], workers: int, on_result: Callable[[PartResult], None]
) -> None:
    """Correct the ``todo`` parts, calling ``on_result`` in this process as each one finishes."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if not todo:
        return
    if workers == 1:
        corrector = load_corrector(model)
        for spec in todo:
            on_result(correct_part(corrector, layout, spec))
        return
    context = multiprocessing.get_context("spawn")
    pending: set[Future[PartResult]] = set()
    queue = list(reversed(todo))
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init, initargs=(model, layout, os.getpid())) as pool:
        try:
            while queue or pending:
                while queue and len(pending) < 2 * workers:
                    pending.add(pool.submit(_run, queue.pop()))
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    on_result(future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise
