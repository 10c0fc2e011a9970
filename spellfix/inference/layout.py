"""Where things live in a model dir or an export dir, and how a runtime reads its input settings.

Torch-free on purpose: the serving runtime (onnxruntime / TensorRT, Triton's python backend) reads
the same files as the exporter writes, through the names defined here.

Export layout (DESIGN.md)::

    EXP/hf/                     safetensors + tokenizer + generation config + spellfix.json
    EXP/onnx/                   encoder.onnx, decoder.onnx, decoder_with_past.onnx, kv_reorder.onnx,
                                decoder_with_past_shortlist.onnx (exact greedy head, ONNX Runtime)
    EXP/onnx-int8/              the same graphs, dynamically quantized (weights int8)
    EXP/onnx-fp16/              fp16 graphs for TensorRT (LayerNorm / softmax math in fp32)
    EXP/tensorrt/               engines built on the target GPU + build log
    EXP/tokenizer.json          copied here so a runtime needs nothing but EXP/
    EXP/spellfix.json           input settings (max_source_length, candidates, ...)
    EXP/manifest.json           versions, I/O, dynamic axes, parity figures, sha256 of every file
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
SETTINGS_FILE = "spellfix.json"  # same name as spellfix.modeling.MODEL_CARD_FILE
TOKENIZER_FILE = "tokenizer.json"
GENERATION_CONFIG_FILE = "generation_config.json"

HF_DIR = "hf"
ONNX_DIRS = {"fp32": "onnx", "int8": "onnx-int8", "fp16": "onnx-fp16"}
TENSORRT_DIR = "tensorrt"

ENCODER = "encoder"
DECODER = "decoder"
DECODER_WITH_PAST = "decoder_with_past"
KV_REORDER = "kv_reorder"
GRAPHS = (ENCODER, DECODER, DECODER_WITH_PAST, KV_REORDER)
#: optional, fp32 ONNX only: decoder_with_past with the exact int8-shortlist greedy head
#: (spellfix.export.shortlist); outputs shortlist_ids / shortlist_logits / shortlist_threshold
DECODER_WITH_PAST_SHORTLIST = "decoder_with_past_shortlist"

#: Used when a model dir has no spellfix.json (e.g. a hub checkpoint): search queries are short.
DEFAULT_MAX_SOURCE_LENGTH = 64
#: Used when neither spellfix.json nor the generation config bounds the output length.
DEFAULT_MAX_NEW_TOKENS = 48

BOS_ID, PAD_ID, EOS_ID = 0, 1, 2
#: generation-config settings the runtime does not implement (spellfix models never set them;
#: facebook/bart-base's hub config does)
IGNORED_GENERATION_KEYS = {  # key -> its no-op values
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "no_repeat_ngram_size": (None, 0),
    "repetition_penalty": (None, 1.0),
    "min_length": (None, 0),
}


@dataclass(frozen=True)
class InputSettings:
    """What a runtime must know to turn a query into encoder input exactly as in training."""

    max_source_length: int = DEFAULT_MAX_SOURCE_LENGTH
    decoder_start_token_id: int = EOS_ID
    bos_token_id: int = BOS_ID
    eos_token_id: int = EOS_ID
    pad_token_id: int = PAD_ID
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    candidates: dict[str, Any] = field(default_factory=lambda: {"enabled": False})
    #: keep the query unless logP(correction) - logP(query) exceeds this (``spellfix calibrate``); None: off
    copy_margin: float | None = None
    #: the margin for answers that only replace dictionary words (None: ``copy_margin`` applies)
    real_word_margin: float | None = None
    #: words at least this frequent in wordfreq count as known (``spellfix.lexical.lexicon``; None: symspellpy's alone)
    known_word_zipf: float | None = None
    #: the learned rule that replaces the margins when set (``spellfix.inference.acceptance``), as
    #: (its ``decoding.acceptance`` object, the file it came from)
    acceptance: tuple[Any, str] | None = None
    #: judge the query with one word replaced by each of its first k dictionary candidates too
    candidate_answers: int = 0

    @property
    def candidates_enabled(self) -> bool:
        return bool(self.candidates.get("enabled", False))


def is_export_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST_FILE).is_file()


def find_file(model_dir: str | Path, name: str) -> Path | None:
    """``name`` in ``model_dir`` itself, else in its ``hf/`` sub-dir (export dirs keep both)."""
    for candidate in (Path(model_dir) / name, Path(model_dir) / HF_DIR / name):
        if candidate.is_file():
            return candidate
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: expected a positive integer, got {value!r}")
    return value


def read_input_settings(model_dir: str | Path) -> InputSettings:
    """Read ``spellfix.json`` (+ ``generation_config.json`` for the output bound) of a model/export dir.

    A model dir without ``spellfix.json`` (a hub checkpoint) gets BART's defaults and a log line.
    """
    settings_path = find_file(model_dir, SETTINGS_FILE)
    values: dict[str, Any] = {}
    if settings_path is None:
        log.info("%s: no %s, using defaults (max_source_length=%d, no candidates)", model_dir, SETTINGS_FILE, DEFAULT_MAX_SOURCE_LENGTH)
    else:
        card = _read_json(settings_path)
        version = card.get("format_version", 1)
        if version != 1:
            raise ValueError(f"{settings_path}: format_version {version!r} is not supported (expected 1)")
        if "max_source_length" in card:
            values["max_source_length"] = _positive_int(card["max_source_length"], f"{settings_path}: max_source_length")
        if "decoder_start_token_id" in card:
            values["decoder_start_token_id"] = int(card["decoder_start_token_id"])
        candidates = card.get("candidates") or {"enabled": False}
        if not isinstance(candidates, dict):
            raise ValueError(f"{settings_path}: candidates must be an object, got {type(candidates).__name__}")
        values["candidates"] = candidates
        decoding = card.get("decoding") or {}
        if not isinstance(decoding, dict):
            raise ValueError(f"{settings_path}: decoding must be an object, got {type(decoding).__name__}")
        for key in ("copy_margin", "real_word_margin", "known_word_zipf"):
            margin = decoding.get(key)
            if margin is not None:
                if isinstance(margin, bool) or not isinstance(margin, (int, float)):
                    raise ValueError(f"{settings_path}: decoding.{key}: expected a number or null, got {margin!r}")
                values[key] = float(margin)
        if values.get("known_word_zipf") is not None:
            from spellfix.lexical.lexicon import check_known_word_zipf

            try:
                check_known_word_zipf(values["known_word_zipf"])
            except ValueError as exc:
                raise ValueError(f"{settings_path}: decoding.{exc}") from None
        if decoding.get("candidate_answers") is not None:
            count = decoding["candidate_answers"]
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"{settings_path}: decoding.candidate_answers: expected an integer >= 0, got {count!r}")
            values["candidate_answers"] = count
        if decoding.get("acceptance") is not None:  # parsed by SpellCorrector when it uses it, so a
            # stale model can still be re-calibrated: kept with the file name for its errors
            values["acceptance"] = (decoding["acceptance"], str(settings_path))
    gen_path = find_file(model_dir, GENERATION_CONFIG_FILE)
    if gen_path is not None:
        gen = _read_json(gen_path)
        for key in ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id"):
            if isinstance(gen.get(key), int) and not (key == "decoder_start_token_id" and "decoder_start_token_id" in values):
                values[key] = gen[key]
        if isinstance(gen.get("max_new_tokens"), int) and gen["max_new_tokens"] > 0:
            values["max_new_tokens"] = gen["max_new_tokens"]
        ignored = {k: gen[k] for k, no_op in IGNORED_GENERATION_KEYS.items() if k in gen and gen[k] not in no_op}
        if ignored:
            log.warning(
                "%s sets %s: the spellfix runtime decodes plain greedy/beam search and ignores these, so its "
                "outputs can differ from model.generate with this config",
                gen_path,
                ", ".join(f"{k}={v!r}" for k, v in ignored.items()),
            )
    return InputSettings(**values)


def read_manifest(export_dir: str | Path) -> dict[str, Any]:
    path = Path(export_dir) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{export_dir}: not a spellfix export dir (no {MANIFEST_FILE}); create one with "
            f"`spellfix export --model MODEL --output {export_dir}`"
        )
    return _read_json(path)
