"""What the ``spellfix`` python-backend model does with one dynamic batch of requests.

Triton hands ``execute`` every request of a dynamic batch at once. Each request is validated on its
own (UTF-8, not empty, byte and token limits), so one bad request gets a clear error while the
others in the same batch are still answered; the queries of all good requests are then decoded
*together* — one ``SpellCorrector.correct`` call over the whole batch (its full pipeline: dictionary
candidates, copy-verify decoding, the judging pass and the calibrated acceptance rule, sorted by length
and batched), which is what makes dynamic batching pay — and the corrections are split back per request.

Plain Python over ``spellfix.inference`` (no Triton import): the model file
(``spellfix.serving.triton_model``) is thin glue, and this logic is tested in-process as well as
through the real server. The answers are ``SpellCorrector.correct``'s for the same export, the
rule saved by ``spellfix calibrate`` included (tested through tritonserver with the shipped model).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from spellfix.inference import OverlongQueryError, SpellCorrector, check_queries

log = logging.getLogger(__name__)

#: config.pbtxt ``parameters`` the model reads, with their defaults (all strings, as Triton stores them)
PARAMETER_DEFAULTS: dict[str, str] = {
    "export_dir": "export",  # relative to the model version dir, or absolute
    "backend": "onnxruntime",  # onnxruntime | tensorrt
    "precision": "fp32",  # fp32 | int8 (onnxruntime); the engines decide for tensorrt
    "num_beams": "1",
    "on_overlong": "error",  # error | truncate (over max_source_length tokens)
    "max_query_bytes": "1024",  # cheap guard before tokenization
    "intra_op_threads": "0",  # onnxruntime threads per instance; 0 = usable cores / CPU instances
    "thread_spinning": "0",  # onnxruntime intra-op threads busy-wait between ops (1) or sleep (0)
}


class RequestError(ValueError):
    """One request is invalid; the message names the query (index within the request) and the fix."""


@dataclass(frozen=True)
class ModelParameters:
    export_dir: Path
    backend: str
    precision: str
    num_beams: int
    on_overlong: str
    max_query_bytes: int
    intra_op_threads: int
    thread_spinning: bool

    @classmethod
    def parse(cls, parameters: Mapping[str, str], base_dir: Path) -> "ModelParameters":
        unknown = sorted(set(parameters) - set(PARAMETER_DEFAULTS))
        if unknown:
            raise ValueError(f"config.pbtxt: unknown parameter(s) {unknown}; known: {sorted(PARAMETER_DEFAULTS)}")
        values = {**PARAMETER_DEFAULTS, **parameters}

        def integer(key: str, minimum: int) -> int:
            try:
                number = int(values[key])
            except ValueError:
                raise ValueError(f"config.pbtxt: parameter {key} must be an integer, got {values[key]!r}") from None
            if number < minimum:
                raise ValueError(f"config.pbtxt: parameter {key} must be >= {minimum}, got {number}")
            return number

        export_dir = Path(values["export_dir"])
        return cls(
            export_dir=export_dir if export_dir.is_absolute() else base_dir / export_dir,
            backend=values["backend"],
            precision=values["precision"],
            num_beams=integer("num_beams", 1),
            on_overlong=values["on_overlong"],
            max_query_bytes=integer("max_query_bytes", 1),
            intra_op_threads=integer("intra_op_threads", 0),
            thread_spinning=bool(integer("thread_spinning", 0)),
        )


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_corrector(
    params: ModelParameters,
    *,
    max_batch_size: int,
    instance_kind: str = "CPU",
    device_id: int = 0,
    cpu_instances: int = 1,
) -> SpellCorrector:
    """The corrector one model instance owns: its engines (TensorRT on the instance's GPU, ONNX
    Runtime on CPU with the cores shared among the CPU instances) and a batch size that decodes
    a whole dynamic batch in one go."""
    options: dict[str, Any] = {}
    if params.backend == "onnxruntime":
        options["intra_op_num_threads"] = params.intra_op_threads or max(1, usable_cores() // max(1, cpu_instances))
        options["session_options"] = {"config:session.intra_op.allow_spinning": "1" if params.thread_spinning else "0"}
        if instance_kind.upper() == "CPU":
            options["providers"] = ["CPUExecutionProvider"]
    elif params.backend == "tensorrt":
        options["device"] = device_id
    else:
        raise ValueError(f"config.pbtxt: parameter backend must be onnxruntime or tensorrt, got {params.backend!r}")
    return SpellCorrector(
        params.export_dir,
        backend=params.backend,
        precision=params.precision,
        num_beams=params.num_beams,
        batch_size=max_batch_size,
        on_overlong=params.on_overlong,
        backend_options=options,
    )


class BatchCorrector:
    """Validate requests one by one, decode all their queries together, answer each request."""

    def __init__(self, corrector: SpellCorrector, *, max_query_bytes: int = int(PARAMETER_DEFAULTS["max_query_bytes"])):
        self.corrector = corrector
        self.max_query_bytes = max_query_bytes

    def check_request(self, queries: Sequence[str | bytes]) -> list[str]:
        """The request's queries as text, after the checks that reject it as a whole: no query, a
        query over ``max_query_bytes``, not UTF-8, empty, or (``on_overlong="error"``) longer than
        the model's source length. RequestError names the first bad query."""
        if len(queries) == 0:
            raise RequestError("the request holds no query")
        for i, query in enumerate(queries):
            size = len(query) if isinstance(query, (bytes, bytearray)) else len(str(query).encode("utf-8", "surrogatepass"))
            if size > self.max_query_bytes:
                raise RequestError(f"query {i} is {size} bytes long; the limit is {self.max_query_bytes} bytes (max_query_bytes)")
        try:
            texts = check_queries(queries)
            encoder_texts = self.corrector.encoder_texts(texts)
        except (TypeError, ValueError) as exc:
            raise RequestError(str(exc)) from None
        for i, text in enumerate(encoder_texts):
            if not text:
                raise RequestError(f"query {i} is empty (or only whitespace); send at least one character")
        if self.corrector.tokenizer.on_overlong == "error":
            try:
                self.corrector.tokenizer.encode_ids(encoder_texts)
            except OverlongQueryError as exc:
                raise RequestError(str(exc)) from None
        return texts

    def correct_requests(self, requests: Sequence[Sequence[str | bytes]]) -> list[list[str] | RequestError]:
        """One entry per request: its corrections, or the RequestError that rejected it. The
        queries of every valid request go through ``SpellCorrector.correct`` together."""
        results: list[list[str] | RequestError] = []
        texts: list[str] = []
        spans: list[tuple[int, int, int]] = []  # (request index, start, stop) into ``texts``
        for index, queries in enumerate(requests):
            try:
                request_texts = self.check_request(queries)
            except RequestError as exc:
                results.append(exc)
                continue
            results.append([])
            spans.append((index, len(texts), len(texts) + len(request_texts)))
            texts.extend(request_texts)
        if texts:
            corrections = self.corrector.correct(texts)
            for index, start, stop in spans:
                results[index] = corrections[start:stop]
        return results
