"""``SpellCorrector``: queries in, corrections out, over any backend.

The pipeline per query is the one training used: validate (str or UTF-8 bytes) -> normalise (the
scorer's rule: strip, collapse whitespace, lower-case) -> optional candidate annotation (when the
model was trained with it, ``spellfix.json: candidates.enabled``) -> ``<s> tokens </s>`` -> decode.
Queries are sorted by length and decoded in batches of ``batch_size`` (less padding), then put back
in the caller's order. An empty query gives an empty output without running the model.

With ``backend="onnxruntime"`` or ``"tensorrt"`` nothing here imports torch or transformers, so the
class works inside a lean serving environment (Triton's python backend) from an export dir alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence


from spellfix.inference import layout
from spellfix.inference.backends import BACKENDS, Backend
from spellfix.inference.decoding import DecodingOptions, generate
from spellfix.inference.tokenization import QueryTokenizer
from spellfix.inference.text import check_queries, normalize_query

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8", "fp16")


class SpellCorrector:
    """Correct search queries with a spellfix model.

    ``model``: a training output dir, checkpoint dir, export dir or hub id (torch backend); an export
    dir (``spellfix export``) for the onnxruntime and tensorrt backends.
    ``precision``: which exported graphs the onnxruntime backend loads — ``fp32`` (``onnx/``) or
    ``int8`` (``onnx-int8/``); the tensorrt backend uses the engines in ``tensorrt/``.
    ``backend_options``: passed to the backend (onnxruntime: ``providers``, ``intra_op_num_threads``,
    ``session_options``; torch: ``device``, ``dtype``; tensorrt: ``engine_dir``, ``device``).
    """

    def __init__(
        self,
        model: str | Path,
        backend: str = "torch",
        *,
        num_beams: int = 1,
        max_new_tokens: int | None = None,
        min_new_tokens: int = 0,
        batch_size: int = 32,
        on_overlong: str = "truncate",
        precision: str = "fp32",
        backend_options: Mapping[str, Any] | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backend_name = backend
        self.batch_size = batch_size
        options = dict(backend_options or {})
        if backend == "torch":
            self.backend, tokenizer, self.settings, self.model_dir = _load_torch(model, options)
        else:
            export_dir = Path(model)
            if not layout.is_export_dir(export_dir):
                raise FileNotFoundError(
                    f"{model}: the {backend} backend needs an export dir (with {layout.MANIFEST_FILE}); "
                    f"create one with `spellfix export --model {model} --output EXPORT_DIR`"
                )
            self.model_dir = export_dir
            self.settings = layout.read_input_settings(export_dir)
            tokenizer_file = layout.find_file(export_dir, layout.TOKENIZER_FILE)
            if tokenizer_file is None:
                raise FileNotFoundError(f"{export_dir}: no {layout.TOKENIZER_FILE} (in it or in {layout.HF_DIR}/); re-run `spellfix export`")
            tokenizer = tokenizer_file
            self.backend = _load_exported(export_dir, backend, precision, options)
        self.tokenizer = QueryTokenizer(
            tokenizer,
            max_source_length=self.settings.max_source_length,
            bos_token_id=self.settings.bos_token_id,
            eos_token_id=self.settings.eos_token_id,
            pad_token_id=self.settings.pad_token_id,
            on_overlong=on_overlong,
        )
        self.options = DecodingOptions(
            decoder_start_token_id=self.settings.decoder_start_token_id,
            eos_token_id=self.settings.eos_token_id,
            pad_token_id=self.settings.pad_token_id,
            max_new_tokens=max_new_tokens or self.settings.max_new_tokens,
            min_new_tokens=min_new_tokens,
            num_beams=num_beams,
        )
        self._annotator: Any = None
        if self.settings.candidates_enabled:
            from spellfix.data.candidates import CandidateAnnotator, CandidatesConfig  # only models trained with it

            self._annotator = CandidateAnnotator(CandidatesConfig(**self.settings.candidates))

    def encoder_texts(self, queries: Sequence[str | bytes]) -> list[str]:
        """The exact encoder input text per query (normalised, annotated when the model expects it)."""
        texts = [normalize_query(q) for q in check_queries(queries)]
        if self._annotator is not None:
            texts = [self._annotator.annotate(t) if t else t for t in texts]
        return texts

    def generate_ids(self, queries: Sequence[str | bytes]) -> list[list[int]]:
        """Generated token ids per query (ending with eos when finished); [] for an empty query."""
        texts = self.encoder_texts(queries)
        results: list[list[int]] = [[] for _ in texts]
        todo = [i for i, t in enumerate(texts) if t]
        if not todo:
            return results
        encoded = self.tokenizer.encode_ids([texts[i] for i in todo])
        order = sorted(range(len(todo)), key=lambda j: len(encoded[j]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = self.tokenizer.pad([encoded[j] for j in chunk])
            outputs = generate(self.backend, batch.input_ids, batch.attention_mask, self.options)
            for j, ids in zip(chunk, outputs):
                results[todo[j]] = ids
        return results

    def correct(self, queries: Sequence[str | bytes]) -> list[str]:
        """One correction per query, in order. Raises TypeError/ValueError naming the bad query."""
        return self.tokenizer.decode(self.generate_ids(queries))

    def __repr__(self) -> str:
        return f"SpellCorrector({str(self.model_dir)!r}, backend={self.backend_name!r}, num_beams={self.options.num_beams})"


def _load_torch(model: str | Path, options: dict[str, Any]) -> tuple[Backend, Any, layout.InputSettings, Path | str]:
    from spellfix.inference.backends.torch_backend import TorchBackend
    from spellfix.modeling import load_pretrained, resolve_model_dir

    model_dir = resolve_model_dir(model)
    hf_model, hf_tokenizer = load_pretrained(model_dir)
    if Path(model_dir).is_dir():
        settings = layout.read_input_settings(model_dir)
    else:  # hub id: no spellfix.json; token ids and output bound from the model's generation config
        gen = hf_model.generation_config
        keys = ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id", "max_new_tokens")
        settings = layout.InputSettings(**{k: getattr(gen, k) for k in keys if type(getattr(gen, k, None)) is int})
    tokenizer = hf_tokenizer.backend_tokenizer
    return TorchBackend(hf_model, **options), tokenizer, settings, model_dir


def _load_exported(export_dir: Path, backend: str, precision: str, options: dict[str, Any]) -> Backend:
    if backend == "onnxruntime":
        from spellfix.inference.backends.onnxruntime_backend import OnnxRuntimeBackend

        if precision == "fp16":
            raise ValueError("precision 'fp16' is for TensorRT (onnx-fp16/); onnxruntime runs 'fp32' or 'int8'")
        onnx_dir = export_dir / layout.ONNX_DIRS[precision]
        if not onnx_dir.is_dir():
            formats = "onnx" if precision == "fp32" else "onnx,onnx-int8"
            raise FileNotFoundError(f"{onnx_dir}: not found; export it with `spellfix export --format {formats}`")
        return OnnxRuntimeBackend(onnx_dir, **options)
    from spellfix.inference.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(export_dir / options.pop("engine_dir", layout.TENSORRT_DIR), **options)
