"""Triton python-backend model ``spellfix`` (copied as ``<repository>/spellfix/<version>/model.py``).

String in (``QUERY``, TYPE_STRING, one query per batch row), string out (``CORRECTION``). The model
owns tokenization, the decoding loop and the engines (TensorRT on GPU, ONNX Runtime on CPU) through
``spellfix.serving.model_core``; one ``execute`` call decodes every valid request of the dynamic
batch together and answers a bad request with INVALID_ARG while the rest are served.

Where ``spellfix`` comes from: the repository writer copies the package next to this file (the
version dir), and that copy is put first on ``sys.path`` — the repository is self-contained and
serves with the exact code it was exported with; without a copy, an installed ``spellfix`` is used.
The runtime files (ONNX graphs or engines, tokenizer.json, spellfix.json) sit in ``export/`` next
to it (parameter ``export_dir``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the python backend's stub

HERE = Path(__file__).resolve().parent
if (HERE / "spellfix" / "__init__.py").is_file() and str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

INPUT, OUTPUT = "QUERY", "CORRECTION"


def _cpu_instances(config: dict[str, Any]) -> int:
    groups = config.get("instance_group") or [{"count": 1, "kind": "KIND_CPU"}]
    return sum(int(g.get("count", 1)) for g in groups if g.get("kind", "KIND_CPU") == "KIND_CPU") or 1


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        from spellfix.serving.model_core import BatchCorrector, ModelParameters, load_corrector

        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in (config.get("parameters") or {}).items()}
        params = ModelParameters.parse(parameters, HERE)
        corrector = load_corrector(
            params,
            max_batch_size=max(1, int(config.get("max_batch_size", 1))),
            instance_kind=args.get("model_instance_kind", "CPU"),
            device_id=int(args.get("model_instance_device_id", 0) or 0),
            cpu_instances=_cpu_instances(config),
        )
        self.core = BatchCorrector(corrector, max_query_bytes=params.max_query_bytes)
        self.logger = pb_utils.Logger
        self.logger.log_info(f"spellfix model {args.get('model_instance_name')}: {corrector!r}, export {params.export_dir}")

    def execute(self, requests: list[Any]) -> list[Any]:
        queries = [pb_utils.get_input_tensor_by_name(r, INPUT).as_numpy().reshape(-1).tolist() for r in requests]
        try:
            results = self.core.correct_requests(queries)
        except Exception as exc:  # an engine failure: answer every request instead of killing the stub
            error = pb_utils.TritonError(f"spellfix: internal error: {type(exc).__name__}: {exc}", pb_utils.TritonError.INTERNAL)
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses = []
        for result in results:
            if isinstance(result, Exception):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"spellfix: {result}", pb_utils.TritonError.INVALID_ARG)))
            else:
                out = np.array([text.encode("utf-8") for text in result], dtype=np.object_).reshape(-1, 1)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT, out)]))
        return responses

    def finalize(self) -> None:
        self.core = None
