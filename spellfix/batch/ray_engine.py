"""The Ray engine (``--engine ray``): the same parts as a ``ray.data`` pipeline across a cluster.

Why Ray Data: it is what teams already run batch inference on; ``map_batches`` with a callable class
loads the model once per actor and streams parts through a pool of ``workers`` actors with
backpressure. Each actor reads its part of the input itself (the file must be at the same path on
every node: a shared volume), corrects it with ``spellfix.batch.worker.correct_part`` exactly as the
local engine does, and hands back the formatted bytes; the driver writes the parts, so resume and the
final file are the same as with ``--engine local``.

On an existing cluster: ``pip install 'spellfix[ray]'`` on every node, then run the command with
``--ray-address auto`` on a node of the cluster (or ``RAY_ADDRESS=ray://HEAD:10001``). Without an
address a local Ray instance is started on 127.0.0.1 and stopped at the end.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from spellfix.batch.formats import Layout, PartSpec
from spellfix.batch.worker import ModelSpec, PartResult, correct_part, load_corrector


class _PartCorrector:
    """A Ray Data actor: one model copy correcting a batch of part descriptions."""

    def __init__(self, model: ModelSpec, layout: Layout):
        self.corrector = load_corrector(model)
        self.layout = layout

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"index": [], "data": [], "meta": []}
        for i in range(len(batch["index"])):
            spec = PartSpec(*(int(batch[k][i]) for k in ("index", "first_line", "start", "stop", "n_rows")))
            result = correct_part(self.corrector, self.layout, spec)
            out["index"].append(result.index)
            out["data"].append(result.data)
            out["meta"].append(json.dumps(result.meta))
        return out


def run_ray(
    layout: Layout, model: ModelSpec, todo: Sequence[PartSpec], workers: int,
    on_result: Callable[[PartResult], None], address: str | None = None,
) -> None:
    """Correct the ``todo`` parts with ``workers`` Ray actors (``model.threads`` CPUs each)."""
    try:
        import ray
    except ImportError:
        raise ImportError("--engine ray needs Ray Data: pip install 'spellfix[ray]'") from None
    if not todo:
        return
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers * model.threads, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts queries
        items = [{"index": s.index, "first_line": s.first_line, "start": s.start, "stop": s.stop, "n_rows": s.n_rows} for s in todo]
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _PartCorrector, fn_constructor_kwargs={"model": model, "layout": layout},
            batch_size=1, concurrency=workers, num_cpus=model.threads,
        )
        for row in dataset.iter_rows():
            on_result(PartResult(int(row["index"]), bytes(row["data"]), json.loads(row["meta"])))
    finally:
        if started:
            ray.shutdown()
